//! Tests for the core-group printers, with expectations taken from upstream's printers.

use serde_json::{Value, json};

use super::super::testutil::{ago, cells, names};

fn pod(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "p", "creationTimestamp": ago(3600)}, "spec": spec, "status": status})
}

/// READY, STATUS, RESTARTS of a pod.
fn summary(p: &Value) -> (Value, Value, Value) {
    let row = cells("", "Pod", p);
    (row[1].clone(), row[2].clone(), row[3].clone())
}

fn two_containers() -> Value {
    json!({"containers": [{"name": "a"}, {"name": "b"}]})
}

#[test]
fn pod_columns() {
    assert_eq!(
        names("", "Pod"),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
}

#[test]
fn running_pod_with_wide_cells() {
    let p = json!({
        "metadata": {"name": "web-1", "creationTimestamp": ago(3 * 3600 + 12 * 60)},
        "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}],
                 "readinessGates": [{"conditionType": "example.com/lb"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/lb", "status": "True"}],
                   "containerStatuses": [
                       {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                       {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
    });
    assert_eq!(
        cells("", "Pod", &p),
        [
            json!("web-1"),
            json!("2/2"),
            json!("Running"),
            json!("0"),
            json!("3h12m"),
            json!("10.0.0.5"),
            json!("node-a"),
            json!("<none>"),
            json!("1/1")
        ]
    );
}

#[test]
fn pending_and_container_creating() {
    let pending = pod(two_containers(), json!({"phase": "Pending"}));
    assert_eq!(
        summary(&pending),
        (json!("0/2"), json!("Pending"), json!("0"))
    );
    let row = cells("", "Pod", &pending);
    assert_eq!(
        row[5..],
        [
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );

    let creating = pod(
        two_containers(),
        json!({"phase": "Pending", "containerStatuses": [
        {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
        {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
    );
    assert_eq!(
        summary(&creating),
        (json!("0/2"), json!("ContainerCreating"), json!("0"))
    );

    let gated = pod(
        two_containers(),
        json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(summary(&gated).1, json!("SchedulingGated"));
}

#[test]
fn crash_loop_shows_restarts_and_when() {
    let p = pod(
        json!({"containers": [{"name": "app"}]}),
        json!({"phase": "Running", "containerStatuses": [{
        "name": "app", "ready": false, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}}]}),
    );
    assert_eq!(
        summary(&p),
        (json!("0/1"), json!("CrashLoopBackOff"), json!("5 (5m ago)"))
    );

    let no_time = pod(
        json!({"containers": [{"name": "app"}]}),
        json!({"phase": "Running",
        "containerStatuses": [{"name": "app", "restartCount": 2, "state": {"running": {}}}]}),
    );
    assert_eq!(summary(&no_time).2, json!("2"));
}

#[test]
fn terminated_containers_without_reason() {
    let signal = pod(
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Running",
        "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
    );
    assert_eq!(summary(&signal).1, json!("Signal:9"));
    let exit = pod(
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Running",
        "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 2}}}]}),
    );
    assert_eq!(summary(&exit).1, json!("ExitCode:2"));
}

#[test]
fn init_containers() {
    let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "app"}]});
    let first = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "state": {"running": {}}}, {"name": "i2", "state": {"waiting": {"reason": "PodInitializing"}}}],
        "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
    );
    assert_eq!(
        summary(&first),
        (json!("0/1"), json!("Init:0/2"), json!("0"))
    );

    let second = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "i2", "state": {"running": {}}}]}),
    );
    assert_eq!(summary(&second).1, json!("Init:1/2"));

    let crashing = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(90)}}}]}),
    );
    assert_eq!(
        summary(&crashing),
        (
            json!("0/1"),
            json!("Init:CrashLoopBackOff"),
            json!("3 (90s ago)")
        )
    );

    let failed = pod(
        spec.clone(),
        json!({"phase": "Failed", "initContainerStatuses": [
        {"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}),
    );
    assert_eq!(summary(&failed).1, json!("Init:ExitCode:3"));
    let failed = pod(
        spec,
        json!({"phase": "Failed", "initContainerStatuses": [
        {"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
    );
    assert_eq!(summary(&failed).1, json!("Init:Error"));
}

#[test]
fn sidecar_init_containers_count_towards_ready() {
    let spec = json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                      "containers": [{"name": "app"}]});
    let p = pod(
        spec,
        json!({"phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                                   "state": {"running": {}},
                                   "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(600)}}}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
    );
    assert_eq!(
        summary(&p),
        (json!("2/2"), json!("Running"), json!("1 (10m ago)"))
    );
}

#[test]
fn completed_and_terminating() {
    let done = pod(
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Succeeded", "containerStatuses": [
        {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    assert_eq!(
        summary(&done),
        (json!("0/1"), json!("Completed"), json!("0"))
    );

    let mut deleting = pod(
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Running", "containerStatuses": [
        {"name": "a", "ready": true, "state": {"running": {}}}]}),
    );
    deleting["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(
        summary(&deleting),
        (json!("1/1"), json!("Terminating"), json!("0"))
    );

    let mut lost = deleting.clone();
    lost["status"]["reason"] = json!("NodeLost");
    assert_eq!(summary(&lost).1, json!("Unknown"));

    let mut finished = done.clone();
    finished["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(summary(&finished).1, json!("Completed"));

    let partly = pod(
        two_containers(),
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "state": {"running": {}}}]}),
    );
    assert_eq!(
        summary(&partly),
        (json!("1/2"), json!("NotReady"), json!("0"))
    );
}

#[test]
fn services() {
    let cluster_ip = json!({"metadata": {"name": "web", "creationTimestamp": ago(86400 * 2)},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                 "selector": {"app": "web", "tier": "fe"}}});
    assert_eq!(
        cells("", "Service", &cluster_ip),
        [
            json!("web"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP,53/UDP"),
            json!("2d"),
            json!("app=web,tier=fe")
        ]
    );
    let node_port = json!({"spec": {"type": "NodePort", "clusterIPs": ["10.96.1.1"], "externalIPs": ["1.2.3.4"],
                                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
    let row = cells("", "Service", &node_port);
    assert_eq!(row[3..5], [json!("1.2.3.4"), json!("80:30080/TCP")]);
    assert_eq!(row[6], json!("<none>"));

    let pending_lb =
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 443, "nodePort": 31443}]}});
    assert_eq!(
        cells("", "Service", &pending_lb)[2..5],
        [json!("<none>"), json!("<pending>"), json!("443:31443/TCP")]
    );
    let lb = json!({"spec": {"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "a-very-long-hostname.example.com"}]}}});
    assert_eq!(
        cells("", "Service", &lb)[3],
        json!("203.0.113.7,a-very-long-hostname.example.com,9.9.9.9")
    );
    let ext = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    assert_eq!(
        cells("", "Service", &ext)[2..5],
        [json!("<none>"), json!("db.example.com"), json!("<none>")]
    );
}

#[test]
fn endpoints() {
    let e = json!({"metadata": {"name": "web"}, "subsets": [
        {"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}], "ports": [{"port": 8080}, {"port": 9090}]},
        {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
    assert_eq!(
        cells("", "Endpoints", &e)[1],
        json!("10.1.0.1:8080,10.1.0.2:8080,10.1.0.1:9090 + 2 more...")
    );
    let small = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]},
                                   {"addresses": [{"ip": "10.0.0.9"}]}]});
    assert_eq!(
        cells("", "Endpoints", &small)[1],
        json!("[fd00::1]:80,10.0.0.9")
    );
    assert_eq!(cells("", "Endpoints", &json!({}))[1], json!("<none>"));
}

#[test]
fn nodes() {
    let n = json!({"metadata": {"name": "cp-1", "creationTimestamp": ago(86400 * 30),
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "",
                       "kubernetes.io/role": "master", "kubernetes.io/os": "linux"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "cp-1"}],
                   "nodeInfo": {"kubeletVersion": "v1.31.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"}}});
    assert_eq!(
        cells("", "Node", &n),
        [
            json!("cp-1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,etcd,master"),
            json!("30d"),
            json!("v1.31.0"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("containerd://1.7.0")
        ]
    );
    let bare = cells(
        "",
        "Node",
        &json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
    );
    assert_eq!(bare[1..3], [json!("NotReady"), json!("<none>")]);
    assert_eq!(
        bare[7..],
        [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
    );
    assert_eq!(cells("", "Node", &json!({}))[1], json!("Unknown"));
}

#[test]
fn namespaces_config_maps_secrets_service_accounts() {
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(100)}, "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "Namespace", &ns),
        [json!("default"), json!("Active"), json!("100s")]
    );
    let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells("", "ConfigMap", &cm)[1], json!(3));
    let s = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells("", "Secret", &s)[1..3],
        [json!("kubernetes.io/tls"), json!(2)]
    );
    assert_eq!(
        cells("", "Secret", &json!({}))[1..3],
        [json!("Opaque"), json!(0)]
    );
    let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "t"}]});
    assert_eq!(cells("", "ServiceAccount", &sa)[1], json!(1));
}

#[test]
fn replication_controllers_and_quotas() {
    let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 3, "selector": {"app": "x"},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2}});
    let row = cells("", "ReplicationController", &rc);
    assert_eq!(row[1..4], [json!(3), json!(3), json!(2)]);
    assert_eq!(row[5..], [json!("c"), json!("i"), json!("app=x")]);

    let rq = json!({"metadata": {"name": "q"}, "status": {
        "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "2Gi", "limits.cpu": "4"},
        "used": {"pods": "3", "requests.cpu": "500m", "limits.cpu": "1"}}});
    assert_eq!(
        cells("", "ResourceQuota", &rq)[1..3],
        [
            json!("pods: 3/10, requests.cpu: 500m/2"),
            json!("limits.cpu: 1/4, limits.memory: 0/2Gi")
        ]
    );
}

#[test]
fn pod_templates() {
    let t = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "img"}]}}});
    assert_eq!(
        cells("", "PodTemplate", &t),
        [json!("t"), json!("c"), json!("img"), json!("app=x")]
    );
}

/// Cases mirroring upstream's TestPrintPod table: (pod, [name, ready, status, restarts, age]).
#[test]
fn upstream_pod_table_cases() {
    let two = json!({"containers": [{}, {}]});
    let one_init = json!({"initContainers": [{}], "containers": [{}]});
    let two_init = json!({"initContainers": [{}, {}], "containers": [{}]});
    let running = |ready: bool, restarts: i64| json!({"ready": ready, "restartCount": restarts, "state": {"running": {}}});
    let restarted = |ready: bool, restarts: i64, state: serde_json::Value, secs: i64| {
        json!({"ready": ready,
        "restartCount": restarts, "state": state, "lastState": {"terminated": {"finishedAt": ago(secs)}}})
    };
    let waiting = json!({"ready": false, "state": {"waiting": {}}});
    let cases = [
        (
            two.clone(),
            json!({"phase": "podPhase", "containerStatuses": [running(true, 3), {"restartCount": 3}]}),
            ["1/2", "podPhase", "6"],
        ),
        (
            two.clone(),
            json!({"phase": "podPhase", "containerStatuses": [running(true, 3),
            {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3}]}),
            ["1/2", "ContainerWaitingReason", "6"],
        ),
        (
            two.clone(),
            json!({"phase": "podPhase", "containerStatuses": [
            {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3},
            {"state": {"terminated": {"reason": "ContainerTerminatedReason"}}, "restartCount": 3}]}),
            ["0/2", "ContainerWaitingReason", "6"],
        ),
        (
            two.clone(),
            json!({"phase": "podPhase", "reason": "podReason", "containerStatuses": [running(true, 3),
            {"ready": true, "restartCount": 3}]}),
            ["1/2", "podReason", "6"],
        ),
        (
            two.clone(),
            json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
            running(true, 3)], "conditions": [{"type": "Ready", "status": "True"}]}),
            ["1/2", "Running", "6"],
        ),
        (
            one_init.clone(),
            json!({"phase": "podPhase", "initContainerStatuses": [
            restarted(false, 3, json!({"running": {}}), 10)], "containerStatuses": [waiting.clone()]}),
            ["0/1", "Init:0/1", "3 (10s ago)"],
        ),
        (
            two_init.clone(),
            json!({"phase": "podPhase", "initContainerStatuses": [
            restarted(false, 3, json!({"running": {}}), 10), waiting.clone()], "containerStatuses": [waiting.clone()]}),
            ["0/1", "Init:0/2", "3 (10s ago)"],
        ),
        (
            two_init.clone(),
            json!({"phase": "podPhase", "initContainerStatuses": [
            {"ready": false, "state": {"terminated": {}}}, restarted(false, 3, json!({"running": {}}), 10)],
            "containerStatuses": [waiting.clone()]}),
            ["0/1", "Init:1/2", "3 (10s ago)"],
        ),
        (
            two_init,
            json!({"phase": "podPhase", "initContainerStatuses": [
            restarted(false, 2, json!({"terminated": {}}), 120), restarted(false, 3, json!({"running": {}}), 10)],
            "containerStatuses": [waiting]}),
            ["0/1", "Init:1/2", "5 (10s ago)"],
        ),
        (
            one_init,
            json!({"phase": "Running", "initContainerStatuses": [restarted(false, 2, json!({"terminated": {}}), 120)],
            "containerStatuses": [restarted(false, 4, json!({"running": {}}), 20)]}),
            ["0/1", "Running", "4 (20s ago)"],
        ),
        (
            json!({"containers": [{}]}),
            json!({"phase": "Running", "containerStatuses": [
            restarted(true, 3, json!({"running": {}}), 5 * 86400)]}),
            ["1/1", "Running", "3 (5d ago)"],
        ),
        (
            two.clone(),
            json!({"phase": "Running", "containerStatuses": [running(true, 0),
            restarted(true, 3, json!({"running": {}}), 10 * 86400)]}),
            ["2/2", "Running", "3 (10d ago)"],
        ),
        (
            two,
            json!({"phase": "Running", "containerStatuses": [
            restarted(true, 6, json!({"running": {}}), 5 * 86400), restarted(true, 3, json!({"running": {}}), 20 * 86400)]}),
            ["2/2", "Running", "9 (5d ago)"],
        ),
    ];
    for (i, (spec, status, expected)) in cases.into_iter().enumerate() {
        let p = json!({"metadata": {"name": "test"}, "spec": spec, "status": status});
        let row = cells("", "Pod", &p);
        assert_eq!(
            row[1..5],
            [
                json!(expected[0]),
                json!(expected[1]),
                json!(expected[2]),
                json!("<unknown>")
            ],
            "case {i}"
        );
    }
}

/// Cases mirroring upstream's TestPrintPodWithRestartableInitContainer.
#[test]
fn upstream_sidecar_cases() {
    let spec = json!({"initContainers": [{"name": "r1", "restartPolicy": "Always"}, {"name": "r2", "restartPolicy": "Always"}],
                      "containers": [{}]});
    let r1 = |started: bool, state: serde_json::Value| {
        json!({"name": "r1", "ready": false, "restartCount": 3,
        "state": state, "started": started, "lastState": {"terminated": {"finishedAt": ago(10)}}})
    };
    let r2 = |started: bool, state: serde_json::Value| json!({"name": "r2", "ready": false, "state": state, "started": started});
    let initialized =
        |ok: bool| json!([{"type": "Initialized", "status": if ok { "True" } else { "False" }}]);
    let waiting = json!({"ready": false, "restartCount": 0, "state": {"waiting": {}}});
    let error = json!({"terminated": {"reason": "Error", "exitCode": 137}});
    let cases = [
        (
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [r1(false, json!({"running": {}})),
            r2(false, json!({"waiting": {}}))], "containerStatuses": [waiting.clone()], "conditions": initialized(false)}),
            ["0/3", "Init:0/2", "3 (10s ago)"],
        ),
        (
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [r1(true, json!({"running": {}})),
            r2(false, json!({"running": {}}))], "containerStatuses": [waiting], "conditions": initialized(false)}),
            ["0/3", "Init:1/2", "3 (10s ago)"],
        ),
        (
            spec.clone(),
            json!({"phase": "Running", "initContainerStatuses": [r1(true, json!({"running": {}})),
            r2(true, json!({"running": {}}))], "conditions": initialized(true), "containerStatuses": [{"ready": true,
            "restartCount": 4, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": ago(20)}}}]}),
            ["1/3", "Running", "7 (10s ago)"],
        ),
        (
            spec,
            json!({"phase": "Succeeded", "initContainerStatuses": [r1(false, error.clone()), r2(false, error)],
            "conditions": initialized(true), "containerStatuses": [{"ready": false, "restartCount": 4,
            "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
            "lastState": {"terminated": {"finishedAt": ago(20)}}}]}),
            ["0/3", "Completed", "7 (10s ago)"],
        ),
        (
            json!({"initContainers": [{"name": "init1"}, {"name": "sidecar1", "restartPolicy": "Always"}],
                "containers": [{"name": "container1"}]}),
            json!({"phase": "Running", "initContainerStatuses": [{"name": "initinvalid"}, {"name": "init1"}, {"name": "sidecar1"}],
                "containerStatuses": [{"name": "containerinvalid"}, {"name": "container1"}]}),
            ["0/2", "Init:0/2", "0"],
        ),
    ];
    for (i, (spec, status, expected)) in cases.into_iter().enumerate() {
        let p = json!({"metadata": {"name": "test"}, "spec": spec, "status": status});
        let row = cells("", "Pod", &p);
        assert_eq!(
            row[1..4],
            [json!(expected[0]), json!(expected[1]), json!(expected[2])],
            "case {i}"
        );
    }
}

#[test]
fn finished_pods_carry_a_completed_row_condition() {
    let done = json!({"status": {"phase": "Succeeded"}});
    assert_eq!(
        super::super::row_conditions("", "Pod", &done),
        [
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
        ]
    );
    let failed = json!({"status": {"phase": "Failed"}});
    assert_eq!(
        super::super::row_conditions("", "Pod", &failed)[0]["message"],
        json!("The pod failed.")
    );
    assert!(
        super::super::row_conditions("", "Pod", &json!({"status": {"phase": "Running"}}))
            .is_empty()
    );
    assert!(super::super::row_conditions("apps", "Deployment", &done).is_empty());
}
