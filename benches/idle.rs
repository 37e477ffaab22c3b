//! Idle budget benchmark (root; real containerd + runc): `kelp server` with
//! its node and 20 idle pods (a Deployment of `sleep`), settled
//! (`KELP_BENCH_IDLE_SETTLE_SECONDS`, default 660: past the store's first
//! idle checkpoint, which copies the start-up's and the rollout's WAL into
//! the database once, reported apart), then over a window
//! (`KELP_BENCH_IDLE_SECONDS`, default 600 as issue 19 asks) prints, for
//! kelp and for its containerd:
//! - bytes written to disk per second (`/proc/PID/io` `write_bytes`);
//! - CPU as a share of one core (`/proc/PID/stat` utime + stime), and the
//!   CPU of the commands kelp ran and waited for (cutime + cstime);
//! - kelp's disk writes split by cause: the store writer's bytes by the
//!   resource its commits wrote, checkpoints and freed space (from
//!   `kelp_store_disk_written_bytes_total`), and the rest of the process;
//! - the store writes per second by operation and resource (from
//!   `etcd_requests_total`), which say what the writes are for;
//!
//! then a cold start: stop, start on the same data dir, time until the API
//! answers and the kubelet has adopted the 20 running pods (none replaced),
//! and the binary's size.
//!
//! Figures go to docs/PERFORMANCE.md by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{BUSYBOX, Server};
use support::{children_cpu_seconds, cpu_seconds};

const PODS: usize = 20;

/// Bytes a process has caused to be written to storage.
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `kelp_store_disk_written_bytes_total` by cause.
fn disk_writes(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("kelp_store_disk_written_bytes_total{cause=\""))
        .filter_map(|rest| {
            let (cause, value) = rest.split_once("\"} ")?;
            Some((cause.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `etcd_requests_total` by (operation, type) for writes.
fn store_writes(text: &str) -> BTreeMap<(String, String), f64> {
    let mut writes = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("etcd_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let operation = label("operation");
        if matches!(operation.as_str(), "create" | "update" | "delete") {
            *writes.entry((operation, label("type"))).or_default() +=
                value.parse::<f64>().unwrap_or(0.0);
        }
    }
    writes
}

struct Sample {
    at: Instant,
    kelp: (u64, f64),
    containerd: (u64, f64),
    /// CPU of the commands kelp ran (iptables, …) and waited for.
    commands: f64,
    writes: BTreeMap<(String, String), f64>,
    /// The store writer's bytes by cause.
    disk: BTreeMap<String, f64>,
}

fn sample(kelp: u32, containerd: u32, kubectl: &common::Kubectl) -> Sample {
    let metrics = kubectl.ok(&["get", "--raw", "/metrics"]);
    Sample {
        at: Instant::now(),
        kelp: (write_bytes(kelp), cpu_seconds(kelp)),
        containerd: (write_bytes(containerd), cpu_seconds(containerd)),
        commands: children_cpu_seconds(kelp),
        writes: store_writes(&metrics),
        disk: disk_writes(&metrics),
    }
}

fn main() {
    let window: u64 = std::env::var("KELP_BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&[
        "create",
        "deployment",
        "idle",
        &format!("--image={BUSYBOX}"),
        &format!("--replicas={PODS}"),
        "--",
        "sleep",
        "86400",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/idle", "--timeout=300s"]);
    let containerd: u32 = std::fs::read_to_string(
        server
            .path("data")
            .join("agent")
            .join("containerd")
            .join("containerd.pid"),
    )
    .ok()
    .and_then(|p| p.trim().parse().ok())
    .expect("containerd pid");
    let settle: u64 = std::env::var("KELP_BENCH_IDLE_SETTLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(660);
    let settling = sample(server.pid(), containerd, &kubectl);
    std::thread::sleep(Duration::from_secs(settle));
    let before = sample(server.pid(), containerd, &kubectl);
    println!(
        "settling, {settle} s from the rollout's end: kelp wrote {:.1} MB (the rollout's tail and the store's first idle checkpoint)",
        (before.kelp.0 - settling.kelp.0) as f64 / 1e6
    );
    std::thread::sleep(Duration::from_secs(window));
    let after = sample(server.pid(), containerd, &kubectl);
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    println!(
        "idle node, {PODS} pods, {:.0} s window (after {settle} s settling):",
        seconds
    );
    for (name, (b0, c0), (b1, c1)) in [
        ("kelp", before.kelp, after.kelp),
        ("containerd", before.containerd, after.containerd),
    ] {
        println!(
            "  {name:<11} writes {:>8.2} kB/s   CPU {:>6.2} % of a core",
            (b1 - b0) as f64 / 1000.0 / seconds,
            (c1 - c0) / seconds * 100.0
        );
    }
    println!(
        "  kelp's commands (iptables, …)      CPU {:>6.2} % of a core",
        (after.commands - before.commands) / seconds * 100.0
    );
    let mut store_bytes = 0.0;
    println!("  kelp's disk writes by cause:");
    for (cause, bytes) in &after.disk {
        let bytes = bytes - before.disk.get(cause).copied().unwrap_or(0.0);
        if bytes > 0.0 {
            store_bytes += bytes;
            println!("    {:>8.3} kB/s  store: {cause}", bytes / 1000.0 / seconds);
        }
    }
    let rest = (after.kelp.0 - before.kelp.0) as f64 - store_bytes;
    println!(
        "    {:>8.3} kB/s  the rest of the process (not the store's writer thread)",
        rest / 1000.0 / seconds
    );
    // The samples' own /metrics reads are GETs, not writes.
    let mut causes: Vec<(f64, String)> = after
        .writes
        .iter()
        .map(|(key, n)| {
            let was = before.writes.get(key).copied().unwrap_or(0.0);
            ((n - was) / seconds, format!("{} {}", key.0, key.1))
        })
        .filter(|(rate, _)| *rate > 0.0)
        .collect();
    causes.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("  store writes per second by cause:");
    for (rate, cause) in causes {
        println!("    {rate:>8.4}/s  {cause}");
    }
    cold_start(&mut server, &kubectl);
}

/// A stop (SIGTERM) and a start on the same data dir with the 20 pods
/// running: how long until the API answers, the node's kubelet is back
/// with all pods adopted (`kubelet_running_pods` through the API's node
/// proxy), and that no pod was replaced; then the binary's size.
fn cold_start(server: &mut Server, kubectl: &common::Kubectl) {
    let pods = || {
        kubectl.ok(&[
            "get",
            "pods",
            "-l",
            "app=idle",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID}{\"\\n\"}{end}",
        ])
    };
    let before = pods();
    server.stop();
    let started = Instant::now();
    server.spawn();
    let api = started.elapsed();
    let metrics = format!("/api/v1/nodes/{}/proxy/metrics", common::NODE);
    let adopted = loop {
        let out = kubectl.run(&["get", "--raw", &metrics]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text
            .lines()
            .any(|l| l.starts_with("kubelet_running_pods ") && l.ends_with(&format!(" {PODS}")))
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pods not adopted"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_secs(10));
    let after = pods();
    println!("cold start with {PODS} running pods to adopt (SIGTERM, then start):");
    println!("  API ready        {:>7.2} s", api.as_secs_f64());
    println!(
        "  all pods adopted {:>7.2} s (the kubelet reports {PODS} running pods)",
        adopted.as_secs_f64()
    );
    println!(
        "  pods replaced    {}",
        if before == after {
            "none (same names and container IDs 10 s later)"
        } else {
            "SOME"
        }
    );
    let binary = std::fs::metadata(common::kelp_bin())
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  kelp binary      {:.1} MB ({})",
        binary as f64 / 1e6,
        common::kelp_bin().display()
    );
}
