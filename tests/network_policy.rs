//! End-to-end tests of NetworkPolicy enforcement (root: real containerd +
//! runc, real bridge and iptables): a default-deny policy cuts pod-to-pod
//! TCP and UDP, an allow policy opens them again for the pods and ports it
//! names only, egress policies isolate the sending pod, and removing the
//! policies restores everything; the rules live in kelp's own chains.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, busybox_pod};

/// The filter table as iptables-save prints it.
fn filter_rules() -> String {
    let saved = Command::new("iptables-save")
        .args(["-t", "filter"])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&saved.stdout).to_string()
}

/// Whether `from` reaches the server over TCP (httpd) and UDP (udp-echo).
fn reaches(kubectl: &common::Kubectl, from: &str, ip: &str) -> (bool, bool) {
    let tcp = kubectl
        .run(&[
            "exec",
            from,
            "--",
            "timeout",
            "2",
            "wget",
            "-qO-",
            &format!("http://{ip}:8080/"),
        ])
        .stdout;
    let udp = kubectl
        .run(&["exec", from, "--", "udp-echo", "send", ip, "9000", "ping"])
        .stdout;
    (
        String::from_utf8_lossy(&tcp).contains("served"),
        String::from_utf8_lossy(&udp).trim() == "echo: ping",
    )
}

/// Polls until `from` reaching the server is `wanted`; returns how long it took.
fn until(kubectl: &common::Kubectl, from: &str, ip: &str, wanted: (bool, bool)) -> Duration {
    let started = Instant::now();
    loop {
        let got = reaches(kubectl, from, ip);
        if got == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{from} → server: {got:?}, wanted {wanted:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn policies_cut_and_restore_pod_traffic_for_tcp_and_udp() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    kubectl.apply(
        &dir,
        "pods.yaml",
        &[
            busybox_pod(
                "server",
                "app: server",
                "mkdir -p /www; echo served > /www/index.html; httpd -p 8080 -h /www; exec udp-echo serve 9000",
                "{name: http, containerPort: 8080}, {name: echo, containerPort: 9000, protocol: UDP}",
            ),
            busybox_pod("client", "role: client", "exec sleep 3600", ""),
            busybox_pod("other", "role: other", "exec sleep 3600", ""),
        ]
        .join("---\n"),
    );
    for name in ["server", "client", "other"] {
        kubectl.ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=90s",
        ]);
    }
    let ip = kubectl.ok(&["get", "pod", "server", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(
        reaches(&kubectl, "client", &ip),
        (true, true),
        "before any policy"
    );

    // Default deny for the namespace's ingress: nothing new reaches the server.
    kubectl.apply(
        &dir,
        "deny.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    let applied = Instant::now();
    while !filter_rules().contains(":KELP-NPI-") {
        assert!(
            applied.elapsed() < Duration::from_secs(5),
            "no rules 5 s after the policy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "default deny's rules written {:?} after kubectl apply returned",
        applied.elapsed()
    );
    let denied_in = until(&kubectl, "client", &ip, (false, false));
    eprintln!("default deny observed after {denied_in:?}");

    // Allow the client, on the named TCP port and the UDP port only.
    kubectl.apply(
        &dir,
        "allow.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-client\nspec:\n  podSelector:\n    matchLabels: {app: server}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {role: client}\n    ports:\n    - port: http\n    - protocol: UDP\n      port: 9000\n",
    );
    let allowed_in = until(&kubectl, "client", &ip, (true, true));
    eprintln!("allow policy in effect after {allowed_in:?}");
    assert_eq!(
        reaches(&kubectl, "other", &ip),
        (false, false),
        "other is not allowed"
    );

    // The rules are kelp's: its chain first in FORWARD, a chain per isolated pod.
    let forward = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .expect("iptables");
    let forward = String::from_utf8_lossy(&forward.stdout).to_string();
    let first = forward
        .lines()
        .find(|l| l.starts_with("-A "))
        .unwrap_or_default();
    assert!(
        first.contains("KELP-NETPOL"),
        "FORWARD starts with: {first}"
    );
    let saved = filter_rules();
    assert!(saved.contains(":KELP-NPI-"), "no per-pod chain:\n{saved}");

    // Egress: a policy isolating the client's egress cuts it off too.
    kubectl.apply(
        &dir,
        "egress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: client-egress\nspec:\n  podSelector:\n    matchLabels: {role: client}\n  policyTypes: [Egress]\n",
    );
    until(&kubectl, "client", &ip, (false, false));
    kubectl.ok(&["delete", "networkpolicy", "client-egress"]);
    until(&kubectl, "client", &ip, (true, true));

    // No policies: everyone again, and no per-pod chains left.
    kubectl.ok(&["delete", "networkpolicy", "default-deny", "allow-client"]);
    until(&kubectl, "other", &ip, (true, true));
    let saved = filter_rules();
    assert!(
        !saved.contains(":KELP-NPI-") && !saved.contains(":KELP-NPE-"),
        "chains left:\n{saved}"
    );
}
