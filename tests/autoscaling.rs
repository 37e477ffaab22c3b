//! End-to-end test of resource metrics and autoscaling on a real node
//! (root): the kubelet's `/stats/summary` and `/metrics/resource`, `kubectl
//! top` through the API server's own `metrics.k8s.io`, and a
//! HorizontalPodAutoscaler made by `kubectl autoscale` scaling a busy
//! Deployment up, then, once the load stops, back down.

mod common;

use std::process::Command;

use common::{BUSYBOX, Kubectl, NODE, Server};

/// A Deployment whose pods spin (capped at 200m by their limit, requesting
/// 100m) until `/tmp/stop` exists, then sleep.
fn busy_deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: busy}}
spec:
  selector: {{matchLabels: {{app: busy}}}}
  template:
    metadata: {{labels: {{app: busy}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: loop
        image: {BUSYBOX}
        command: ["sh", "-c", "trap 'exit 0' TERM; while [ ! -f /tmp/stop ]; do :; done; exec sleep 3600"]
        resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 200m}}}}
"#
    )
}

/// The millicores in a `kubectl top` CPU cell (`123m`, or whole cores).
fn millicores(cell: &str) -> Option<u64> {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => cell.parse::<u64>().ok().map(|c| c * 1000),
    }
}

/// The rows of `kubectl top` output (header dropped), split on whitespace.
fn rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// GET on the kubelet API with the admin client certificate (or none).
fn kubelet_get(server: &Server, path: &str, authenticated: bool) -> String {
    let (_, cert, key) = server.admin_credentials();
    let cert_path = server.path("admin.crt");
    let key_path = server.path("admin.key");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let mut curl = Command::new("curl");
    curl.args(["-sk", "--max-time", "5"]);
    if authenticated {
        curl.arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path);
    }
    let out = curl
        .arg(format!("https://127.0.0.1:10250{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replicas(kubectl: &Kubectl) -> String {
    kubectl
        .ok(&[
            "get",
            "deployment",
            "busy",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .trim()
        .to_string()
}

#[test]
fn kubectl_top_and_an_hpa_scaling_a_busy_deployment_up_and_down() {
    let server = Server::start_node(&["--horizontal-pod-autoscaler-sync-period", "2s"]);
    let kubectl = server.kubectl("kubectl");
    kubectl.apply(server.dir.path(), "busy.yaml", &busy_deployment());
    kubectl.ok(&[
        "autoscale",
        "deployment/busy",
        "--min=1",
        "--max=3",
        "--cpu-percent=50",
    ]);
    // Scale down as soon as the load is gone (the default waits 5 minutes).
    kubectl.ok(&[
        "patch",
        "hpa",
        "busy",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#,
    ]);

    // The kubelet measures the spinning pod: a CPU rate needs two samples.
    let top = kubectl.wait_for(&["top", "pods", "-l", "app=busy"], 60, |out| {
        rows(out).iter().any(|r| {
            r.get(1)
                .and_then(|c| millicores(c))
                .is_some_and(|m| m >= 50)
        })
    });
    assert!(top.starts_with("NAME"), "{top}");
    let all = kubectl.ok(&["top", "pods", "-A", "--containers"]);
    assert!(
        rows(&all)
            .iter()
            .any(|r| r.first().map(String::as_str) == Some("default")
                && r.get(2).map(String::as_str) == Some("loop")),
        "{all}"
    );
    let nodes = kubectl.ok(&["top", "nodes"]);
    let node_row = rows(&nodes)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(NODE))
        .unwrap_or_else(|| panic!("no row for the node:\n{nodes}"));
    assert!(
        node_row
            .get(1)
            .and_then(|c| millicores(c))
            .is_some_and(|m| m >= 50),
        "{nodes}"
    );
    assert!(
        node_row.get(3).is_some_and(|m| m.ends_with("Mi")),
        "{nodes}"
    );
    let missing = kubectl.fails(&["top", "pod", "nonexistent"]);
    assert!(
        missing.contains(r#"podmetrics.metrics.k8s.io "default/nonexistent" not found"#),
        "{missing}"
    );

    // The kubelet's own endpoints, as metrics-server would read them.
    let summary: serde_json::Value =
        serde_json::from_str(&kubelet_get(&server, "/stats/summary", true)).expect("summary json");
    assert_eq!(summary["node"]["nodeName"], NODE);
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    let pod = summary["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["containers"][0]["name"] == "loop"))
        .unwrap_or_else(|| panic!("no busy pod in {summary}"));
    assert!(
        pod["cpu"]["usageNanoCores"]
            .as_u64()
            .is_some_and(|n| n > 50_000_000)
    );
    let resource = kubelet_get(&server, "/metrics/resource", true);
    for name in [
        "node_cpu_usage_seconds_total ",
        "node_memory_working_set_bytes ",
        "container_cpu_usage_seconds_total{container=\"loop\",namespace=\"default\",pod=\"busy-",
        "container_memory_working_set_bytes{container=\"loop\"",
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"busy-",
        "pod_memory_working_set_bytes{namespace=\"default\"",
    ] {
        assert!(resource.contains(name), "no {name} in:\n{resource}");
    }
    assert_eq!(
        kubelet_get(&server, "/stats/summary", false).trim(),
        "Unauthorized"
    );
    // cAdvisor's counter moves while the pod spins (read as a scraper would).
    let burnt = || {
        let families = common::metrics::parse(&kubelet_get(&server, "/metrics/cadvisor", true));
        common::metrics::sum(
            &families,
            "container_cpu_usage_seconds",
            "container_cpu_usage_seconds_total",
            &[("container", "loop"), ("pod", "busy-*")],
        )
    };
    // The collector reads the cgroups every few seconds, as cAdvisor's housekeeping.
    let before = burnt();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut after = before;
    while after <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_secs(1));
        after = burnt();
    }
    assert!(after > before && before > 0.0, "{before} -> {after}");

    // 200% of the request against a 50% target: up to the maximum.
    kubectl.wait_for(
        &[
            "get",
            "deployment",
            "busy",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        60,
        |r| r == "3",
    );
    let hpa = kubectl.ok(&["get", "hpa", "busy"]);
    assert!(
        hpa.lines()
            .nth(1)
            .is_some_and(|l| l.contains("%/50%") && !l.contains("<unknown>")),
        "{hpa}"
    );
    kubectl.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=busy",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ],
        60,
        |out| out.lines().count() == 3,
    );

    // Stop the load in every pod; with a 5 s window it scales back down.
    let pods = kubectl.ok(&["get", "pods", "-l", "app=busy", "-o", "name"]);
    for pod in pods.lines() {
        kubectl.wait_for(&["exec", pod, "--", "touch", "/tmp/stop"], 30, |_| true);
    }
    kubectl.wait_for(
        &[
            "get",
            "deployment",
            "busy",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        90,
        |r| r == "1",
    );
    assert_eq!(replicas(&kubectl), "1");

    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    // The status reports the new size from the next sync on.
    let status = kubectl.wait_for(
        &[
            "get",
            "hpa",
            "busy",
            "-o",
            "jsonpath={.status.currentReplicas} {.status.desiredReplicas} {.status.conditions[?(@.type==\"ScalingActive\")].reason} {.status.lastScaleTime}",
        ],
        30,
        |out| out.starts_with("1 1 ValidMetricFound "),
    );
    assert!(status.trim_end().ends_with('Z'), "{status}");
}
