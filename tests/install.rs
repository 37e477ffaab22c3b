//! The appliance on this machine: `install.sh` installs the test binary with
//! its unit and env file, a re-run changes nothing, a missing prerequisite is
//! reported with its fix, kelp runs from the installed unit as systemd would
//! start it (a node with a pod), and `kelp-uninstall.sh` leaves nothing behind.
//! Then the same for an agent: `KELP_URL` + `KELP_TOKEN` (or `KELP_TOKEN_FILE`)
//! install `kelp-agent.service` with the token in its env file (mode 0600),
//! the unit's `kelp agent` joins a kelp server the test runs (API only, its
//! own temporary data dir, on 127.0.0.1) and its Node becomes Ready with a
//! pod, and the uninstall removes the agent and leaves nothing behind.
//!
//! It installs into the real places (/usr/local/bin, /etc/systemd/system,
//! /etc/kelp, /var/lib/kelp), so it runs as root on a throw-away machine (CI)
//! and refuses to run where kelp is already installed; what `scripts/run.sh`
//! leaves (/etc/kelp, /var/lib/kelp, kelp stopped) is set aside and put back
//! afterwards. It holds
//! /tmp/kelp-node.lock itself (or runs under `flock /tmp/kelp-node.lock`):
//! only one kelp node may run on a machine.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BIN_DIR: &str = "/usr/local/bin";
const UNIT: &str = "/etc/systemd/system/kelp.service";
const ENV_FILE: &str = "/etc/systemd/system/kelp.service.env";
const AGENT_UNIT: &str = "/etc/systemd/system/kelp-agent.service";
const AGENT_ENV_FILE: &str = "/etc/systemd/system/kelp-agent.service.env";
/// The installed agent's node name.
const AGENT_NODE: &str = "kelp-installed-agent";
const DATA_DIR: &str = "/var/lib/kelp";
/// Files or dirs an install owns; none may exist before the test.
const INSTALLED: &[&str] = &[
    "/usr/local/bin/kelp",
    "/usr/local/bin/kelp-killall.sh",
    "/usr/local/bin/kelp-uninstall.sh",
    UNIT,
    ENV_FILE,
    AGENT_UNIT,
    AGENT_ENV_FILE,
    "/etc/systemd/system/multi-user.target.wants/kelp.service",
    "/etc/systemd/system/multi-user.target.wants/kelp-agent.service",
    "/etc/kelp",
    DATA_DIR,
    "/run/kelp",
];
/// What `scripts/run.sh` leaves behind (admin kubeconfig, data dir) without an
/// install: set aside for the test and put back afterwards, so running kelp
/// and then the tests works on one machine.
const SET_ASIDE: &[&str] = &["/etc/kelp", DATA_DIR];
/// Conveniences kelp does not provide, so install.sh must not link them.
const NOT_LINKED: &[&str] = &[
    "/usr/local/bin/kubectl",
    "/usr/local/bin/crictl",
    "/usr/local/bin/ctr",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Holds /tmp/kelp-node.lock unless this process already inherited it from
/// `flock /tmp/kelp-node.lock cargo test …` (locking it again would wait forever).
fn node_lock() -> Option<nix::fcntl::Flock<File>> {
    const LOCK: &str = "/tmp/kelp-node.lock";
    let inherited = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == Path::new(LOCK)));
    if inherited {
        return None;
    }
    let file = File::options()
        .create(true)
        .append(true)
        .open(LOCK)
        .expect("open the node lock");
    Some(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock /tmp/kelp-node.lock"),
    )
}

/// Runs install.sh (the packaging/ copy, as a device gets it) with `env`.
fn install(env: &[(&str, &str)]) -> Output {
    install_in(None, env)
}

/// Runs install.sh with `env`, in the directory `cwd` if given. KELP_*
/// variables of the test's own environment (cargo passes the build script's
/// KELP_GIT_COMMIT and KELP_BUILD_DATE) are not passed on: install.sh writes
/// every KELP_* it sees to the env file.
fn install_in(cwd: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(repo("packaging/install.sh"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KELP_") {
            cmd.env_remove(name);
        }
    }
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run install.sh")
}

/// Lines of both units' template that an install keeps as they are.
const UNIT_LINES: &[&str] = &[
    "Type=notify",
    "KillMode=process",
    "Delegate=yes",
    "Restart=always",
    "RestartSec=5s",
    "LimitNOFILE=1048576",
    "LimitNPROC=infinity",
    "LimitCORE=infinity",
    "TasksMax=infinity",
    "TimeoutStartSec=0",
    "ExecStartPre=-/sbin/modprobe br_netfilter",
    "ExecStartPre=-/sbin/modprobe overlay",
    "After=network-online.target",
    "Wants=network-online.target",
    "WantedBy=multi-user.target",
];

/// The installed `unit` holds the template's lines, its env file and `exec_start`.
fn assert_unit(unit: &str, env_file: &str, exec_start: &str) {
    let text = std::fs::read_to_string(unit).unwrap();
    let environment_file = format!("EnvironmentFile=-{env_file}");
    let exec_start = format!("ExecStart={exec_start}");
    for line in UNIT_LINES
        .iter()
        .copied()
        .chain([environment_file.as_str(), exec_start.as_str()])
    {
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in {unit}:\n{text}"
        );
    }
}

/// The installed binary and scripts: mode 0755, the binary the test's.
fn assert_binaries() {
    for path in ["kelp", "kelp-killall.sh", "kelp-uninstall.sh"] {
        let meta = std::fs::metadata(Path::new(BIN_DIR).join(path)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{path}");
    }
    assert_eq!(
        std::fs::metadata("/usr/local/bin/kelp").unwrap().len(),
        std::fs::metadata(common::kelp_bin()).unwrap().len()
    );
    for path in NOT_LINKED {
        assert!(!exists(path), "{path}: kelp provides no such command");
    }
}

/// An env file holds secrets (the join token): a file of root's, mode 0600.
fn assert_root_only(path: &str) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "{path}: not a plain file");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{path}");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}: owner");
}

/// `systemd-analyze verify` accepts the unit, without a warning.
fn assert_unit_verifies(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}: {}",
        unit.display(),
        text(&out)
    );
}

/// Bytes (as a digest), mode and mtime of every installed file.
fn snapshot() -> BTreeMap<String, (String, u32, SystemTime)> {
    use sha2::Digest;
    let mut files = BTreeMap::new();
    for path in INSTALLED {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if meta.is_file() {
            let digest = hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()));
            let mtime = meta.modified().unwrap();
            files.insert(path.to_string(), (digest, meta.mode() & 0o7777, mtime));
        }
    }
    files
}

/// Splits a unit's ExecStart the way systemd does for what install.sh writes:
/// words, double-quoted words with \\ and \" escapes, %% and $$.
fn unit_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word.replace("%%", "%").replace("$$", "$"));
    }
    words
}

/// The KEY="VALUE" lines of an env file.
fn env_file_vars(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v
                .trim_matches('"')
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            (k.to_string(), v)
        })
        .collect()
}

/// Cleans up whatever the test installed or started, even when it fails.
struct Guard {
    kelp_pid: Option<i32>,
    /// Scratch files (resolv.conf, PATH shims, kelp's log), removed last.
    dir: tempfile::TempDir,
    /// Paths of [`SET_ASIDE`] moved away (from, to), put back last.
    saved: Vec<(PathBuf, PathBuf)>,
}

/// The saved name of a path set aside.
fn saved_name(path: &str) -> PathBuf {
    PathBuf::from(format!("{path}.saved-by-kelp-install-test"))
}

/// Whether anything is mounted at or below `path`.
fn mounted_below(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == path || m.starts_with(&format!("{path}/")))
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.kelp_pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let installed = Path::new("/usr/local/bin/kelp-uninstall.sh");
        let script = if installed.exists() {
            installed.to_path_buf()
        } else {
            repo("scripts/kelp-uninstall.sh")
        };
        if exists(UNIT) || exists(AGENT_UNIT) || exists(DATA_DIR) || exists("/run/kelp") {
            let _ = Command::new("sh").arg(&script).status();
        }
        for path in INSTALLED {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(path);
        }
        for (from, to) in self.saved.drain(..) {
            if let Err(e) = std::fs::rename(&to, &from) {
                eprintln!(
                    "putting back {}: {e} (it is at {})",
                    from.display(),
                    to.display()
                );
            }
        }
    }
}

fn kelp_kubectl(home: &Path, args: &[&str]) -> Output {
    Command::new("/usr/local/bin/kelp")
        .arg("kubectl")
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kelp kubectl")
}

/// Pids whose command line mentions one of `needles`.
fn pids_mentioning(needles: &[&str]) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if needles.iter().any(|n| cmdline.contains(n)) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn iptables_kelp_lines() -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("KUBE-") || l.contains("KELP"))
        .map(str::to_string)
        .collect()
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn cmd_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Puts the test image where a node imports it at start.
fn seed_images() {
    let images = Path::new(DATA_DIR).join("agent/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(common::test_image_tarball(), images.join("busybox.tar")).unwrap();
}

/// Starts an installed unit as systemd would (systemd is not PID 1 on the
/// test machines, so install.sh starts nothing): the ExecStartPre commands,
/// then ExecStart with the env file's settings in a clean environment (no
/// NOTIFY_SOCKET), its stderr to `log`. Returns the pid; the process is reaped
/// in a thread when kelp-uninstall.sh stops it (a zombie would look alive).
fn start_unit(unit: &str, env_file: &str, log: &Path) -> i32 {
    let unit = std::fs::read_to_string(unit).unwrap();
    for pre in unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStartPre=-"))
    {
        let words = unit_words(pre);
        let _ = Command::new(&words[0]).args(&words[1..]).status();
    }
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let words = unit_words(exec_start);
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(env_file_vars(env_file))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("start kelp from the unit's ExecStart");
    let pid = child.id() as i32;
    std::thread::spawn(move || child.wait());
    pid
}

/// Waits until `kubectl` reports `node` Ready; `log` explains a timeout.
fn wait_node_ready(kubectl: &dyn Fn(&[&str]) -> Output, node: &str, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    // `kubectl wait` fails at once while the Node does not exist yet.
    while !kubectl(&["get", "node", node]).status.success() {
        assert!(
            Instant::now() < deadline,
            "node {node} never registered; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("node/{node}"),
        "--timeout=90s",
    ]);
    assert!(
        out.status.success(),
        "node {node} not Ready: {}\nlog:\n{}",
        text(&out),
        log()
    );
}

/// Runs the busybox pod `name` (image imported by the node at start), waits
/// until it is Ready and returns its log directory under /var/log/pods.
fn run_pod(kubectl: &dyn Fn(&[&str]) -> Output, name: &str, log: &dyn Fn() -> String) -> String {
    let out = kubectl(&[
        "run",
        name,
        &format!("--image={}", common::BUSYBOX),
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let pod = format!("pod/{name}");
    let out = kubectl(&["wait", "--for=condition=Ready", &pod, "--timeout=90s"]);
    assert!(out.status.success(), "{}\nlog:\n{}", text(&out), log());
    let uid = kubectl(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let dir = format!(
        "/var/log/pods/default_{name}_{}",
        String::from_utf8_lossy(&uid.stdout)
    );
    assert!(Path::new(&dir).is_dir(), "{dir}");
    dir
}

/// What a kelp node running from an install made on this host, looked for
/// again after the uninstall.
struct NodeTrace {
    /// kelp, its containerd, the shims and the pods' processes.
    pids: Vec<i32>,
    veths: Vec<String>,
    /// Containers of the node's containerd (their cgroups).
    container_ids: Vec<String>,
    pod_log_dir: String,
}

/// Checks what the node (kelp at `kelp_pid`, a pod logging to
/// `pod_log_dir`) made on the host while it runs, and records it.
fn node_trace(kelp_pid: i32, pod_log_dir: String) -> NodeTrace {
    cmd_ok("ip", &["link", "show", "cni0"]);
    let veths: Vec<String> = cmd_ok("ip", &["-o", "link", "show", "master", "cni0"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    assert!(!veths.is_empty(), "no veth on cni0");
    let chains = iptables_kelp_lines();
    assert!(
        chains.iter().any(|l| l.starts_with(":KUBE-SERVICES")),
        "{chains:?}"
    );
    assert!(
        chains.iter().any(|l| l.starts_with(":KELP-POSTROUTING")),
        "{chains:?}"
    );
    let ours = pids_mentioning(&[DATA_DIR, "/run/kelp/containerd"]);
    assert!(
        ours.iter().any(|(_, c)| c.contains("containerd-shim")),
        "no shim: {ours:?}"
    );
    let mut pids: Vec<i32> = ours.iter().map(|(p, _)| *p).collect();
    pids.push(kelp_pid);
    for (pid, _) in &ours {
        // the shims' children: pause and the pod's sleep
        for child in cmd_ok("sh", &["-c", &format!("pgrep -P {pid} || true")]).lines() {
            pids.push(child.parse().unwrap());
        }
    }
    let task_dir =
        Path::new(DATA_DIR).join("agent/containerd/state/io.containerd.runtime.v2.task/k8s.io");
    let container_ids: Vec<String> = std::fs::read_dir(&task_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!container_ids.is_empty());
    NodeTrace {
        pids,
        veths,
        container_ids,
        pod_log_dir,
    }
}

/// Runs the installed kelp-uninstall.sh and checks that it leaves nothing:
/// no installed file, nothing of `trace`, no new iptables rule or network
/// namespace (against the state before the test), no mount.
fn uninstall_leaves_nothing(
    guard: &mut Guard,
    trace: &NodeTrace,
    iptables_before: &[String],
    netns_before: &[String],
) {
    let out = Command::new("/usr/local/bin/kelp-uninstall.sh")
        .output()
        .expect("kelp-uninstall.sh");
    assert!(out.status.success(), "{}", text(&out));
    guard.kelp_pid = None;
    let report = text(&out);
    for path in INSTALLED.iter().chain(NOT_LINKED) {
        assert!(!exists(path), "{path} left behind:\n{report}");
    }
    assert!(
        !Path::new(&trace.pod_log_dir).exists(),
        "{} left behind",
        trace.pod_log_dir
    );
    for link in ["cni0", "kelp.vxlan"] {
        let out = Command::new("ip")
            .args(["link", "show", link])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{link} left behind");
    }
    for veth in &trace.veths {
        let out = Command::new("ip")
            .args(["link", "show", veth])
            .output()
            .unwrap();
        assert!(!out.status.success(), "veth {veth} left behind");
    }
    let left: Vec<String> = iptables_kelp_lines()
        .into_iter()
        .filter(|l| !iptables_before.contains(l))
        .collect();
    assert!(left.is_empty(), "iptables left behind: {left:?}");
    std::thread::sleep(Duration::from_millis(200));
    for pid in &trace.pids {
        let alive = std::fs::read(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !String::from_utf8_lossy(&s).contains(") Z "));
        assert!(!alive, "process {pid} left behind");
    }
    let left = pids_mentioning(&[DATA_DIR, "/run/kelp"]);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(" /var/lib/kelp") || l.contains(" /run/kelp"))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    let netns: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| !netns_before.contains(n))
        .collect();
    assert!(
        netns.is_empty(),
        "network namespaces left behind: {netns:?}"
    );
    for id in &trace.container_ids {
        let cgroups = cmd_ok(
            "sh",
            &[
                "-c",
                &format!(
                    "find /sys/fs/cgroup -mindepth 1 -maxdepth 8 -type d -name {id} 2>/dev/null || true"
                ),
            ],
        );
        assert!(cgroups.trim().is_empty(), "cgroups left behind: {cgroups}");
    }
}

/// The KELP_* settings of an env file (others, such as proxies the machine
/// sets, may be there too).
fn kelp_vars(path: &str) -> Vec<(String, String)> {
    env_file_vars(path)
        .into_iter()
        .filter(|(k, _)| k.starts_with("KELP_"))
        .collect()
}

#[test]
fn install_rerun_run_from_unit_and_uninstall_leave_no_trace() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/install.rs installs kelp into /usr/local/bin and /etc: it must run as root"
    );
    // (/run/kelp belongs to whichever kelp node ran last; it is checked below.)
    for path in INSTALLED
        .iter()
        .chain(NOT_LINKED)
        .filter(|p| **p != "/run/kelp" && !SET_ASIDE.contains(p))
    {
        assert!(
            !exists(path),
            "{path} exists: kelp (or something in its place) is installed on this machine; \
             tests/install.rs installs into the real paths and runs only where nothing is \
             installed (a throw-away machine), so it will not clobber {path}"
        );
    }
    let _lock = node_lock();
    let iptables_before = iptables_kelp_lines();
    let netns_before = netns_list();
    // Set aside before the guard exists: the guard removes those paths.
    let running = pids_mentioning(&["kelp server", "kelp agent"]);
    for path in SET_ASIDE.iter().filter(|p| exists(p)) {
        assert!(
            running.is_empty() && !mounted_below(path),
            "{path} is in use (kelp running: {running:?}, or pods' mounts below it): \
             stop kelp and run scripts/kelp-killall.sh before the tests"
        );
        let to = saved_name(path);
        assert!(
            !exists(to.to_str().unwrap()),
            "{} exists: put it back first",
            to.display()
        );
    }
    let mut saved = Vec::new();
    for path in SET_ASIDE.iter().filter(|p| exists(p)) {
        let to = saved_name(path);
        if let Err(e) = std::fs::rename(path, &to) {
            for (from, to) in saved {
                let _ = std::fs::rename(to, from);
            }
            panic!("setting {path} aside: {e}");
        }
        saved.push((PathBuf::from(path), to));
    }
    let mut guard = Guard {
        kelp_pid: None,
        dir: tempfile::tempdir().unwrap(),
        saved,
    };
    let tmp = guard.dir.path().to_path_buf();
    let resolv_conf = tmp.join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.154\n").unwrap();
    let port = common::free_port().to_string();
    let exec = format!(
        "--resolv-conf {} --node-name {} --node-ip 127.0.0.1 --bind-address 127.0.0.1 \
         --https-listen-port {port}",
        resolv_conf.display(),
        common::NODE
    );
    let binary = common::kelp_bin().display().to_string();
    let inputs = [
        ("INSTALL_KELP_BINARY", binary.as_str()),
        ("INSTALL_KELP_EXEC", exec.as_str()),
        ("KELP_NODE_LABEL", "kelp.test/installed=yes"),
        ("NO_PROXY", "127.0.0.1,localhost"),
    ];

    // 1. A missing prerequisite stops the install before anything is written,
    //    with its fix: here runc is not on PATH.
    let shims = tmp.join("path-without-runc");
    std::fs::create_dir(&shims).unwrap();
    for tool in [
        "containerd",
        "iptables",
        "iptables-restore",
        "id",
        "grep",
        "awk",
        "tr",
        "xargs",
        "printf",
        "dirname",
        "cat",
        "mktemp",
        "rm",
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        std::os::unix::fs::symlink(found, shims.join(tool)).unwrap();
    }
    let mut without_runc = inputs.to_vec();
    let shim_path = shims.display().to_string();
    without_runc.push(("PATH", &shim_path));
    let out = install(&without_runc);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("runc not found")
            && report.contains("fix: apt-get install containerd runc"),
        "{report}"
    );
    for path in INSTALLED.iter().filter(|p| **p != "/run/kelp") {
        assert!(!exists(path), "{path} written despite a failed preflight");
    }

    // 2. The install: binary, scripts, unit, env file; systemd is not PID 1
    //    here, so nothing is enabled or started.
    let out = install(&inputs);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let systemd = Path::new("/run/systemd/system").is_dir();
    if !systemd {
        assert!(report.contains("systemd is not running"), "{report}");
    }
    assert_binaries();
    assert_unit(
        UNIT,
        ENV_FILE,
        &format!("/usr/local/bin/kelp server {exec}"),
    );
    assert!(!exists(AGENT_UNIT), "a server install wrote {AGENT_UNIT}");
    assert_root_only(ENV_FILE);
    let vars = env_file_vars(ENV_FILE);
    assert!(vars.contains(&("KELP_NODE_LABEL".into(), "kelp.test/installed=yes".into())));
    assert!(vars.contains(&("NO_PROXY".into(), "127.0.0.1,localhost".into())));
    assert!(
        !vars.iter().any(|(k, _)| k.starts_with("INSTALL_KELP")),
        "{vars:?}"
    );

    // 3. systemd-analyze accepts both units, without a warning.
    let agent_unit = tmp.join("kelp-agent.service");
    let template = std::fs::read_to_string(repo("systemd/kelp-agent.service")).unwrap();
    assert!(template.contains("\nExecStart=/usr/local/bin/kelp agent\n"));
    std::fs::write(&agent_unit, &template).unwrap();
    assert_unit_verifies(Path::new(UNIT));
    assert_unit_verifies(&agent_unit);

    // 4. An agent install with incomplete or wrong inputs is refused before
    //    anything is written, saying what to fix.
    let before = snapshot();
    let no_token_file = tmp.join("no-such-token").display().to_string();
    let refused: [(&[(&str, &str)], &str); 4] = [
        (
            &[("KELP_URL", "https://127.0.0.1:1")],
            "an agent also needs KELP_TOKEN or KELP_TOKEN_FILE",
        ),
        (
            &[("KELP_URL", "http://127.0.0.1:1"), ("KELP_TOKEN", "t")],
            "the server's URL is https://HOST:PORT",
        ),
        (
            &[
                ("KELP_URL", "https://127.0.0.1:1"),
                ("KELP_TOKEN_FILE", &no_token_file),
            ],
            "no such file (it holds the join token)",
        ),
        (
            &[
                ("KELP_URL", "https://127.0.0.1:1"),
                ("KELP_TOKEN", "t"),
                ("INSTALL_KELP_EXEC", "server --node-ip 127.0.0.1"),
            ],
            "INSTALL_KELP_EXEC starts with 'server'",
        ),
    ];
    for (extra, expected) in refused {
        let mut agent = inputs.to_vec();
        agent.extend_from_slice(extra);
        let out = install(&agent);
        let report = text(&out);
        assert!(!out.status.success(), "{extra:?}: {report}");
        assert!(report.contains(expected), "{extra:?}: {report}");
        assert!(!exists(AGENT_UNIT) && !exists(AGENT_ENV_FILE), "{extra:?}");
    }

    // 5. A re-run with the same inputs writes nothing (bytes, modes, mtimes).
    let out = install(&inputs);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("wrote"), "{report}");
    assert_eq!(snapshot(), before, "a re-run changed files:\n{report}");

    // ... and a changed input rewrites only what it changes (here the env file).
    let mut changed = inputs.to_vec();
    changed.push(("KELP_V", "0"));
    let out = install(&changed);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let after = snapshot();
    for (path, state) in &before {
        if path == ENV_FILE {
            assert_ne!(after.get(path), Some(state), "{report}");
        } else {
            assert_eq!(after.get(path), Some(state), "{path} rewritten:\n{report}");
        }
    }
    assert!(env_file_vars(ENV_FILE).contains(&("KELP_V".into(), "0".into())));

    // 6. Start kelp as systemd would: ExecStartPre, then ExecStart with the
    //    env file's settings in a clean environment (no NOTIFY_SOCKET here).
    seed_images();
    let kelp_pid = start_unit(UNIT, ENV_FILE, &tmp.join("kelp.log"));
    guard.kelp_pid = Some(kelp_pid);
    let kelp_log = || std::fs::read_to_string(tmp.join("kelp.log")).unwrap_or_default();
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let kubectl = |args: &[&str]| kelp_kubectl(&home, args);
    wait_node_ready(&kubectl, common::NODE, &kelp_log);
    let mode = std::fs::metadata("/etc/kelp/kelp.yaml")
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the admin kubeconfig");
    let labels = kubectl(&[
        "get",
        "node",
        common::NODE,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        String::from_utf8_lossy(&labels.stdout).contains("\"kelp.test/installed\":\"yes\""),
        "the env file's KELP_NODE_LABEL: {}",
        text(&labels)
    );
    let pod_log_dir = run_pod(&kubectl, "installed", &kelp_log);
    // What kelp made on the host while it runs.
    let trace = node_trace(kelp_pid, pod_log_dir);

    // 7. Uninstall, as installed, and look for anything left.
    uninstall_leaves_nothing(&mut guard, &trace, &iptables_before, &netns_before);

    // 8. An agent install: KELP_URL and the join token go to the agent unit's
    //    env file (root's only), whose `kelp agent` reads them. It joins a
    //    kelp server with the API only (no node of its own, so no port is
    //    taken twice), on 127.0.0.1 in a temporary data dir: the agent's is
    //    the install's default, /var/lib/kelp. First with KELP_TOKEN_FILE,
    //    given relative to the directory install.sh runs in.
    let mut server = common::Server::start();
    let token = std::fs::read_to_string(server.path("data/server/token"))
        .expect("the server's token")
        .trim()
        .to_string();
    let url = format!("https://127.0.0.1:{}", server.port());
    let token_file = tmp.join("join-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent_exec = format!(
        "--resolv-conf {} --node-name {AGENT_NODE} --node-ip 127.0.0.1",
        resolv_conf.display()
    );
    let agent_inputs = [
        ("INSTALL_KELP_BINARY", binary.as_str()),
        ("INSTALL_KELP_EXEC", agent_exec.as_str()),
        ("KELP_URL", url.as_str()),
        ("KELP_NODE_LABEL", "kelp.test/installed=agent"),
    ];
    let mut with_file = agent_inputs.to_vec();
    with_file.push(("KELP_TOKEN_FILE", "join-token"));
    let out = install_in(Some(&tmp), &with_file);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    if !systemd {
        assert!(report.contains("systemd is not running"), "{report}");
    }
    assert!(
        !exists(UNIT) && !exists(ENV_FILE),
        "an agent install wrote the server's unit"
    );
    assert_binaries();
    assert_unit(
        AGENT_UNIT,
        AGENT_ENV_FILE,
        &format!("/usr/local/bin/kelp agent {agent_exec}"),
    );
    assert_unit_verifies(Path::new(AGENT_UNIT));
    assert!(
        !std::fs::read_to_string(AGENT_UNIT)
            .unwrap()
            .contains(&token),
        "the token belongs in the env file only"
    );
    assert_root_only(AGENT_ENV_FILE);
    let token_file_text = token_file.display().to_string();
    assert_eq!(
        kelp_vars(AGENT_ENV_FILE),
        [
            ("KELP_NODE_LABEL", "kelp.test/installed=agent"),
            ("KELP_TOKEN_FILE", token_file_text.as_str()),
            ("KELP_URL", url.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
        "{}",
        std::fs::read_to_string(AGENT_ENV_FILE).unwrap()
    );

    // ... then with KELP_TOKEN: only the env file changes, and it holds the
    // token now (and no stale KELP_TOKEN_FILE), still root's only.
    let before = snapshot();
    let mut with_token = agent_inputs.to_vec();
    with_token.push(("KELP_TOKEN", token.as_str()));
    let out = install(&with_token);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let after = snapshot();
    for (path, state) in &before {
        if path == AGENT_ENV_FILE {
            assert_ne!(after.get(path), Some(state), "{report}");
        } else {
            assert_eq!(after.get(path), Some(state), "{path} rewritten:\n{report}");
        }
    }
    assert_root_only(AGENT_ENV_FILE);
    assert_eq!(
        kelp_vars(AGENT_ENV_FILE),
        [
            ("KELP_NODE_LABEL", "kelp.test/installed=agent"),
            ("KELP_TOKEN", token.as_str()),
            ("KELP_URL", url.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );

    // 9. Start the agent unit as systemd would: it joins the server, its Node
    //    becomes Ready and runs a pod, with its state in /var/lib/kelp.
    seed_images();
    let agent_log_path = tmp.join("kelp-agent.log");
    let started = Instant::now();
    let agent_pid = start_unit(AGENT_UNIT, AGENT_ENV_FILE, &agent_log_path);
    guard.kelp_pid = Some(agent_pid);
    let agent_log = || {
        format!(
            "{}\nserver log:\n{}",
            std::fs::read_to_string(&agent_log_path).unwrap_or_default(),
            server.log()
        )
    };
    let server_kubectl = server.kubectl("kubectl");
    let kubectl = |args: &[&str]| server_kubectl.run(args);
    wait_node_ready(&kubectl, AGENT_NODE, &agent_log);
    println!(
        "installed agent: unit started -> Node Ready in {} ms",
        started.elapsed().as_millis()
    );
    let labels = kubectl(&[
        "get",
        "node",
        AGENT_NODE,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        String::from_utf8_lossy(&labels.stdout).contains("\"kelp.test/installed\":\"agent\""),
        "the env file's KELP_NODE_LABEL: {}",
        text(&labels)
    );
    let pod_log_dir = run_pod(&kubectl, "installed-agent", &agent_log);
    let node = kubectl(&[
        "get",
        "pod",
        "installed-agent",
        "-o",
        "jsonpath={.spec.nodeName}",
    ]);
    assert_eq!(String::from_utf8_lossy(&node.stdout), AGENT_NODE);
    assert!(
        Path::new(DATA_DIR)
            .join("agent/containerd/config.toml")
            .is_file()
    );
    assert!(
        !server.path("data/agent").exists(),
        "the agent used the server's data dir"
    );
    let trace = node_trace(agent_pid, pod_log_dir);

    // 10. The uninstall removes the agent install and leaves nothing; the
    //     server (another data dir) keeps running.
    uninstall_leaves_nothing(&mut guard, &trace, &iptables_before, &netns_before);
    assert!(
        server
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
        "the uninstall stopped a kelp of another data dir"
    );
    drop(server);
}
