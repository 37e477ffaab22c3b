//! End-to-end tests of the scheduler (root: it binds pods that then run on
//! the real node): pods without a node are placed, pods that fit nowhere
//! wait with PodScheduled=False and a FailedScheduling event, and are placed
//! once the cluster changes.

mod common;

use common::{BUSYBOX, NODE, Server};

fn node_of(kubectl: &common::Kubectl, pod: &str) -> String {
    kubectl.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

#[test]
fn pods_are_scheduled_and_unschedulable_pods_wait_for_a_fitting_node() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");

    // kubectl run, no node named: scheduled, then running.
    kubectl.ok(&[
        "run",
        "hello",
        "--image",
        BUSYBOX,
        "--",
        "sh",
        "-c",
        "echo hello; sleep 3600",
    ]);
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/hello",
        "--timeout=60s",
    ]);
    assert_eq!(node_of(&kubectl, "hello"), NODE);
    assert_eq!(kubectl.ok(&["logs", "hello"]), "hello\n");
    let scheduled = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello,reason=Scheduled",
        "-o",
        "jsonpath={.items[0].message}",
    ]);
    assert_eq!(
        scheduled,
        format!("Successfully assigned default/hello to {NODE}")
    );

    // No node matches the selector: Pending, PodScheduled=False, FailedScheduling.
    kubectl.ok(&[
        "run",
        "picky",
        "--image",
        BUSYBOX,
        "--overrides",
        r#"{"spec":{"nodeSelector":{"disk":"ssd"}}}"#,
        "--",
        "sleep",
        "3600",
    ]);
    let condition = kubectl.wait_for(
        &[
            "get",
            "pod",
            "picky",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        30,
        |m| !m.is_empty(),
    );
    assert_eq!(
        condition,
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    );
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=picky",
    ]);
    assert!(events.contains("FailedScheduling"), "{events}");
    assert_eq!(node_of(&kubectl, "picky"), "");

    // The node changes to fit: the pod is placed.
    kubectl.ok(&["label", "node", NODE, "disk=ssd"]);
    kubectl.wait_for(
        &["get", "pod", "picky", "-o", "jsonpath={.spec.nodeName}"],
        30,
        |n| n == NODE,
    );

    // A NoSchedule taint keeps new pods off, unless they tolerate it.
    kubectl.ok(&["taint", "node", NODE, "dedicated=db:NoSchedule"]);
    kubectl.ok(&[
        "run",
        "untolerated",
        "--image",
        BUSYBOX,
        "--",
        "sleep",
        "3600",
    ]);
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "untolerated",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        30,
        |m| m.contains("untolerated taint {dedicated: db}"),
    );
    let tolerant = r#"{"spec":{"tolerations":[{"key":"dedicated","operator":"Equal","value":"db","effect":"NoSchedule"}]}}"#;
    kubectl.ok(&[
        "run",
        "tolerant",
        "--image",
        BUSYBOX,
        "--overrides",
        tolerant,
        "--",
        "sleep",
        "3600",
    ]);
    kubectl.wait_for(
        &["get", "pod", "tolerant", "-o", "jsonpath={.spec.nodeName}"],
        30,
        |n| n == NODE,
    );
    kubectl.ok(&["taint", "node", NODE, "dedicated=db:NoSchedule-"]);
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "untolerated",
            "-o",
            "jsonpath={.spec.nodeName}",
        ],
        30,
        |n| n == NODE,
    );

    // The scheduler's and controller-manager's secure ports: /healthz for
    // anyone, /metrics and /metrics/resources for authenticated callers.
    let on = |port: u16, path: &str| {
        kubectl.run(&[
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "get",
            "--raw",
            path,
        ])
    };
    let metrics = String::from_utf8_lossy(&on(10259, "/metrics").stdout).to_string();
    for series in [
        "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}",
        "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"unschedulable\"}",
        "scheduler_scheduling_attempt_duration_seconds_bucket{",
        "scheduler_pending_pods{queue=\"unschedulable\"} 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    let resources = String::from_utf8_lossy(&on(10259, "/metrics/resources").stdout).to_string();
    assert!(
        resources.contains("# TYPE kube_pod_resource_request gauge"),
        "{resources}"
    );
    let manager = String::from_utf8_lossy(&on(10257, "/metrics").stdout).to_string();
    assert!(manager.contains("process_start_time_seconds"), "{manager}");
    // The controllers' work queues, read as a scraper would.
    let families = common::metrics::parse(&manager);
    for (family, sample, name) in [
        ("workqueue_adds", "workqueue_adds_total", "serviceaccount"),
        (
            "workqueue_work_duration_seconds",
            "workqueue_work_duration_seconds_count",
            "root_ca_cert_publisher",
        ),
        (
            "leader_election_master_status",
            "leader_election_master_status",
            "kube-controller-manager",
        ),
    ] {
        assert!(
            common::metrics::sum(&families, family, sample, &[("name", name)]) >= 1.0,
            "{sample}{{name={name}}} in {manager}"
        );
    }
    common::metrics::parse(&metrics);
    common::metrics::parse(&resources);
    let health = common::https_get_anonymous(10257, "/healthz");
    assert_eq!(health, (200, "ok".to_string()));
    assert_eq!(common::https_get_anonymous(10259, "/metrics").0, 401);
}

#[test]
fn replicasets_keep_their_pods_running() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {BUSYBOX}\n        command: [sleep, '3600']\n"
    );
    let path = common::write(&server.path("manifests"), "rs.yaml", &manifest);
    kubectl.ok(&["apply", "-f", path.to_str().expect("path")]);
    kubectl.wait_for(
        &["get", "rs", "web", "-o", "jsonpath={.status.readyReplicas}"],
        60,
        |r| r == "3",
    );
    let pods = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(pods, "web web web");
    kubectl.ok(&["scale", "rs", "web", "--replicas=1"]);
    kubectl.wait_for(&["get", "pods", "-l", "app=web", "-o", "name"], 60, |p| {
        p.lines().count() == 1
    });
    let survivor = kubectl.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    kubectl.ok(&["delete", survivor.trim(), "--wait=false"]);
    kubectl.wait_for(&["get", "pods", "-l", "app=web", "-o", "name"], 60, |p| {
        p.lines().count() == 1 && p.trim() != survivor.trim()
    });
    kubectl.wait_for(
        &["get", "rs", "web", "-o", "jsonpath={.status.readyReplicas}"],
        60,
        |r| r == "1",
    );
}
