//! Join benchmark (root; real containerd + runc, network namespaces): a
//! server and one agent in its own namespace (`tests/common/join.rs`),
//! release binary under `cargo bench`. Prints
//! - join time: agent start to its Node Ready (first join, certificates
//!   issued through CSRs, image import included);
//! - the agent's resident memory idle and with 10 pods, per pod;
//! - pod-to-pod round trip (ICMP, 100 pings) on the same node and across
//!   nodes, with host-gw and with vxlan.
//!
//! Figures go to docs/PERFORMANCE.md by hand.

use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;

use common::join::{Agent, JoinNetwork, rss_kib, start_server, wait_ready};

const PODS: usize = 10;

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: kelp.test/busybox:1\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n    securityContext: {{capabilities: {{add: [NET_RAW]}}}}\n"
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Average round trip in ms from `from` to `ip` (busybox ping's summary).
fn rtt(kubectl: &common::Kubectl, from: &str, ip: &str) -> f64 {
    let out = kubectl.ok(&[
        "exec", from, "--", "ping", "-c", "100", "-i", "0.05", "-q", ip,
    ]);
    out.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|avg| avg.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let network = JoinNetwork::new(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_server("jb-server", "host-gw");
    let kubectl = server.kubectl("kubectl");
    let token = std::fs::read_to_string(server.path("data/server/token")).expect("token");
    let mut agent = Agent::new(dir.path(), 1, "jb-a1", &server, token.trim(), "host-gw");
    let started = agent.start();
    wait_ready(&kubectl, "jb-a1", &agent, 90);
    println!(
        "join time (agent start -> Node Ready): {} ms",
        started.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(10));
    let idle = rss_kib(agent.pid());
    println!("agent RSS idle (no pods): {}", mib(idle));

    let manifests = dir.path().join("pods");
    std::fs::create_dir_all(&manifests).expect("dir");
    for i in 0..PODS {
        kubectl.apply(
            &manifests,
            &format!("p{i}.yaml"),
            &pod(&format!("p{i}"), "jb-a1"),
        );
    }
    for (name, node) in [("s0", "jb-server"), ("s1", "jb-server")] {
        kubectl.apply(&manifests, &format!("{name}.yaml"), &pod(name, node));
    }
    kubectl.wait_for(
        &[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ],
        180,
        |o| o.lines().count() == PODS + 2,
    );
    std::thread::sleep(Duration::from_secs(10));
    let loaded = rss_kib(agent.pid());
    println!(
        "agent RSS with {PODS} pods: {} ({} per pod)",
        mib(loaded),
        mib(loaded.saturating_sub(idle) / PODS as u64)
    );

    let ip = |name: &str| kubectl.ok(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"]);
    for backend in ["host-gw", "vxlan"] {
        if backend == "vxlan" {
            agent.stop();
            server.stop();
            server.set_flag("--pod-network-backend", "vxlan");
            server.spawn();
            agent.set("--pod-network-backend", "vxlan");
            agent.start();
            wait_ready(&kubectl, "jb-a1", &agent, 90);
            std::thread::sleep(Duration::from_secs(5));
        }
        let same = rtt(&kubectl, "s0", &ip("s1"));
        let cross = rtt(&kubectl, "s0", &ip("p0"));
        println!(
            "{backend}: pod-to-pod round trip same node {same:.3} ms, across nodes {cross:.3} ms"
        );
    }
    drop(agent);
    drop(server);
    drop(network);
}
