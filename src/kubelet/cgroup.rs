//! Resource usage read from the kernel: the cgroup files of a process (v1:
//! `cpuacct.usage`, `memory.usage_in_bytes`, `memory.stat`; v2: `cpu.stat`,
//! `memory.current`, `memory.stat`), and the node's from the root cgroup,
//! `/proc/stat` and `/proc/meminfo`. CRI's container stats come first; these
//! readings are the node's and the fallback for a container CRI gives no
//! figures for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `/proc/stat` counts CPU time in USER_HZ ticks, 100 per second on every
/// Linux architecture kelp targets.
const NANOS_PER_TICK: u64 = 10_000_000;

/// One reading of a cgroup (or the node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory figures.
    pub memory: Option<Memory>,
}

/// Memory figures of a cgroup, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// All memory charged, page cache included.
    pub usage: u64,
    /// Usage minus inactive file pages: what the kernel cannot easily
    /// reclaim, the figure eviction and `kubectl top` use.
    pub working_set: u64,
    /// Anonymous memory (and swap cache).
    pub rss: u64,
}

impl Memory {
    /// Figures from usage, inactive file pages and rss.
    pub fn new(usage: u64, inactive_file: u64, rss: u64) -> Self {
        Memory {
            usage,
            working_set: usage.saturating_sub(inactive_file),
            rss,
        }
    }
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// v1 controller (`cpuacct`, `memory`) → (mount point, cgroup path of the mount's root).
    v1: HashMap<String, (PathBuf, String)>,
    /// The v2 (unified) mount point and its root's cgroup path.
    unified: Option<(PathBuf, String)>,
}

impl Mounts {
    /// This process's view, from `/proc/self/mountinfo`.
    pub fn discover() -> Self {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses mountinfo: `id parent dev root mountpoint opts [tags] - fstype source superopts`.
    pub fn parse(mountinfo: &str) -> Self {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
            else {
                continue;
            };
            let entry = (PathBuf::from(unescape(point)), unescape(root));
            match *fstype {
                "cgroup2" => {
                    mounts.unified.get_or_insert(entry);
                }
                "cgroup" => {
                    for option in right.get(2).unwrap_or(&"").split(',') {
                        if matches!(option, "cpuacct" | "memory") {
                            mounts
                                .v1
                                .entry(option.to_string())
                                .or_insert_with(|| entry.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The directory of cgroup `path` in v1 `controller`'s hierarchy.
    fn v1_dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let (point, root) = self.v1.get(controller)?;
        Some(join(point, root, path))
    }

    /// The directory of cgroup `path` in the unified hierarchy.
    fn unified_dir(&self, path: &str) -> Option<PathBuf> {
        let (point, root) = self.unified.as_ref()?;
        Some(join(point, root, path))
    }

    /// The usage of the cgroups process `pid` is in (v1 controllers when
    /// mounted, else v2), or None when the process is gone.
    pub fn process_usage(&self, pid: u32) -> Option<Usage> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let paths = ProcessCgroups::parse(&text);
        let v1 = |controller: &str| {
            let path = paths.v1.get(controller)?;
            self.v1_dir(controller, path)
        };
        let v2 = || paths.unified.as_deref().and_then(|p| self.unified_dir(p));
        let cpu_ns = match v1("cpuacct") {
            Some(dir) => read_v1_cpu(&dir),
            None => v2().and_then(|dir| read_v2_cpu(&dir)),
        };
        let memory = match v1("memory") {
            Some(dir) => read_v1_memory(&dir),
            None => v2().and_then(|dir| read_v2_memory(&dir)),
        };
        Some(Usage { cpu_ns, memory })
    }

    /// The node's usage: the root cgroup's, as upstream's kubelet reports
    /// it; where the root cgroup lacks a figure (v2 has no root
    /// `memory.current`), `/proc/stat` and `/proc/meminfo`.
    pub fn node_usage(&self) -> Usage {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let cpu_ns = match (self.v1_dir("cpuacct", "/"), self.unified_dir("/")) {
            (Some(dir), _) => read_v1_cpu(&dir),
            (None, Some(dir)) => read_v2_cpu(&dir),
            (None, None) => None,
        }
        .or_else(|| read("/proc/stat").and_then(|s| proc_stat_cpu_ns(&s)));
        let meminfo = read("/proc/meminfo").map(|s| parse_meminfo(&s));
        let memory = match (self.v1_dir("memory", "/"), self.unified_dir("/")) {
            (Some(dir), _) => read_v1_memory(&dir),
            (None, Some(dir)) => meminfo.as_ref().and_then(|info| {
                let stat = std::fs::read_to_string(dir.join("memory.stat")).ok();
                node_memory_v2(info, stat.as_deref())
            }),
            (None, None) => None,
        }
        .or_else(|| meminfo.as_ref().and_then(|info| node_memory_v2(info, None)));
        Usage { cpu_ns, memory }
    }
}

/// The cgroup a pod's sandbox and containers go under (upstream's
/// `kubepods/pod<uid>`, under kubelet's `--cgroup-root`).
pub fn pod_parent(cgroup_root: &str, uid: &str) -> String {
    format!("{}/kubepods/pod{uid}", cgroup_root.trim_end_matches('/'))
}

/// Removes a pod's cgroup (and `kubepods` and the root under it, once empty)
/// from every mounted hierarchy, when runc has removed its containers'.
pub fn remove_pod(cgroup_root: &str, uid: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = cgroup_root.trim_end_matches('/');
    let mut paths = vec![pod_parent(cgroup_root, uid), format!("{root}/kubepods")];
    if !root.is_empty() {
        paths.push(root.to_string());
    }
    for (point, mount_root) in hierarchies(&mountinfo) {
        for path in &paths {
            if std::fs::remove_dir(join(&point, &mount_root, path)).is_err() {
                break;
            }
        }
    }
}

/// Where the kubelet records its `--cgroup-root` in the data dir, so that
/// `kelp-killall.sh` can sweep what is left under this node's own root
/// (and only this node's) after it killed the pods.
pub fn root_record(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("cgroup-root")
}

/// Records the node's cgroup root (see [`root_record`]).
pub fn record_root(data_dir: &Path, cgroup_root: &str) -> std::io::Result<()> {
    std::fs::write(root_record(data_dir), format!("{cgroup_root}\n"))
}

/// Every mounted cgroup hierarchy (v1 controllers and the unified one): mount point and root.
fn hierarchies(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            if !matches!(fstype, "cgroup" | "cgroup2") {
                return None;
            }
            Some((
                PathBuf::from(unescape(left.get(4)?)),
                unescape(left.get(3)?),
            ))
        })
        .collect()
}

/// `mountpoint` + (`path` relative to the mount's `root`).
fn join(point: &Path, root: &str, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(root)
        .filter(|_| root != "/")
        .unwrap_or(path);
    point.join(relative.trim_start_matches('/'))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The cgroup paths of a process (`/proc/<pid>/cgroup`).
#[derive(Debug, Default, PartialEq, Eq)]
struct ProcessCgroups {
    /// v1 controller → path.
    v1: HashMap<String, String>,
    /// The v2 path (`0::/…`).
    unified: Option<String>,
}

impl ProcessCgroups {
    /// Parses `hierarchy-id:controllers:path` lines.
    fn parse(text: &str) -> Self {
        let mut out = ProcessCgroups::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                out.unified = Some(path.to_string());
                continue;
            }
            for controller in controllers.split(',') {
                out.v1.insert(controller.to_string(), path.to_string());
            }
        }
        out
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v1: `cpuacct.usage` is nanoseconds.
fn read_v1_cpu(dir: &Path) -> Option<u64> {
    read_u64(&dir.join("cpuacct.usage"))
}

/// v1: usage less `total_inactive_file` (the hierarchy's, as the usage is).
fn read_v1_memory(dir: &Path) -> Option<Memory> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    Some(v1_memory(usage, &stat))
}

/// v1 memory figures from `memory.usage_in_bytes` and `memory.stat`.
pub fn v1_memory(usage: u64, stat: &str) -> Memory {
    let total_or_own = |key: &str| {
        keyed(stat, &format!("total_{key}"))
            .or_else(|| keyed(stat, key))
            .unwrap_or(0)
    };
    Memory::new(usage, total_or_own("inactive_file"), total_or_own("rss"))
}

/// v2: `usage_usec` in `cpu.stat` is microseconds.
fn read_v2_cpu(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    v2_cpu_ns(&stat)
}

/// v2 CPU time from `cpu.stat`, nanoseconds.
pub fn v2_cpu_ns(stat: &str) -> Option<u64> {
    keyed(stat, "usage_usec").map(|us| us * 1000)
}

/// v2: `memory.current` less `inactive_file`.
fn read_v2_memory(dir: &Path) -> Option<Memory> {
    let usage = read_u64(&dir.join("memory.current"))?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    Some(v2_memory(usage, &stat))
}

/// v2 memory figures from `memory.current` and `memory.stat`.
pub fn v2_memory(usage: u64, stat: &str) -> Memory {
    Memory::new(
        usage,
        keyed(stat, "inactive_file").unwrap_or(0),
        keyed(stat, "anon").unwrap_or(0),
    )
}

/// The node's memory without a root `memory.current` (as runc reads it):
/// usage is MemTotal − MemFree, the inactive file pages come from the root
/// `memory.stat` when there is one, else from meminfo.
fn node_memory_v2(meminfo: &HashMap<String, u64>, root_stat: Option<&str>) -> Option<Memory> {
    let usage = meminfo
        .get("MemTotal")?
        .saturating_sub(*meminfo.get("MemFree")?);
    let inactive_file = root_stat
        .and_then(|s| keyed(s, "inactive_file"))
        .or_else(|| meminfo.get("Inactive(file)").copied())
        .unwrap_or(0);
    let rss = root_stat
        .and_then(|s| keyed(s, "anon"))
        .or_else(|| meminfo.get("AnonPages").copied())
        .unwrap_or(0);
    Some(Memory::new(usage, inactive_file, rss))
}

/// `/proc/meminfo` as bytes per key.
pub fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let value: u64 = words.next()?.parse().ok()?;
            let factor = if words.next() == Some("kB") { 1024 } else { 1 };
            Some((key.to_string(), value * factor))
        })
        .collect()
}

/// Busy CPU time of all CPUs from `/proc/stat`'s `cpu` line (user, nice,
/// system, irq, softirq, steal; idle and iowait left out), nanoseconds.
pub fn proc_stat_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| fields.get(*i))
        .sum();
    Some(busy * NANOS_PER_TICK)
}

/// The boot time (`btime` in `/proc/stat`), seconds since the epoch.
pub fn boot_time(proc_stat: &str) -> Option<i64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_gives_v1_controllers_and_the_unified_mount() {
        let mounts = Mounts::parse(HYBRID);
        assert_eq!(
            mounts.v1_dir("cpuacct", "/k8s.io/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/cpuacct/k8s.io/abc"))
        );
        assert_eq!(
            mounts.v1_dir("memory", "/"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/"))
        );
        assert_eq!(
            mounts.unified_dir("/x"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/x"))
        );
        // A combined cpu,cpuacct mount serves cpuacct.
        let combined = Mounts::parse(
            "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(
            combined.v1_dir("cpuacct", "/a"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"))
        );
        assert_eq!(combined.v1_dir("memory", "/a"), None);
    }

    #[test]
    fn pure_v2_and_namespaced_roots() {
        let mounts = Mounts::parse(
            "30 23 0:26 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            mounts.unified_dir("/kubepods/pod1/c1"),
            Some(PathBuf::from("/sys/fs/cgroup/pod1/c1"))
        );
        assert_eq!(mounts.v1_dir("cpuacct", "/"), None);
    }

    #[test]
    fn process_cgroups_by_controller() {
        let paths = ProcessCgroups::parse(
            "4:memory:/k8s.io/abc\n2:cpuacct:/k8s.io/abc\n1:cpu:/k8s.io/abc\n9:name=systemd:/\n0::/k8s.io/abc\n",
        );
        assert_eq!(paths.v1["memory"], "/k8s.io/abc");
        assert_eq!(paths.v1["cpuacct"], "/k8s.io/abc");
        assert_eq!(paths.unified.as_deref(), Some("/k8s.io/abc"));
        let combined = ProcessCgroups::parse("3:cpu,cpuacct:/a\n");
        assert_eq!(combined.v1["cpuacct"], "/a");
    }

    #[test]
    fn v1_working_set_is_usage_less_inactive_file() {
        let stat =
            "cache 100\nrss 50\ninactive_file 10\ntotal_rss 4096\ntotal_inactive_file 1000\n";
        assert_eq!(
            v1_memory(5000, stat),
            Memory {
                usage: 5000,
                working_set: 4000,
                rss: 4096
            }
        );
        // Without hierarchy totals the cgroup's own figures serve.
        assert_eq!(v1_memory(100, "inactive_file 30\nrss 20\n").working_set, 70);
        // Never below zero.
        assert_eq!(v1_memory(100, "total_inactive_file 300\n").working_set, 0);
    }

    #[test]
    fn v2_figures() {
        assert_eq!(
            v2_cpu_ns("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Some(1_500_000)
        );
        assert_eq!(v2_cpu_ns("user_usec 1\n"), None);
        let stat = "anon 2048\nfile 8192\ninactive_file 4096\nactive_file 4096\n";
        assert_eq!(
            v2_memory(10240, stat),
            Memory {
                usage: 10240,
                working_set: 6144,
                rss: 2048
            }
        );
    }

    #[test]
    fn node_figures_from_proc() {
        let stat =
            "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 0 10 500 3 0 1 1 0 0\nbtime 1700000000\n";
        // user + nice + system + irq + softirq + steal = 131 ticks.
        assert_eq!(proc_stat_cpu_ns(stat), Some(1_310_000_000));
        assert_eq!(boot_time(stat), Some(1_700_000_000));
        let meminfo = parse_meminfo(
            "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\nAnonPages:        50 kB\n",
        );
        assert_eq!(meminfo["MemTotal"], 1_024_000);
        assert_eq!(
            node_memory_v2(&meminfo, None),
            Some(Memory {
                usage: 819_200,
                working_set: 716_800,
                rss: 51_200
            })
        );
        assert_eq!(
            node_memory_v2(&meminfo, Some("anon 1\ninactive_file 819200\n")).map(|m| m.working_set),
            Some(0)
        );
    }

    #[test]
    fn this_machine_reads_something_for_the_node() {
        let usage = Mounts::discover().node_usage();
        assert!(usage.cpu_ns.is_some_and(|ns| ns > 0));
        assert!(usage.memory.is_some_and(|m| m.usage > 0));
    }
}
