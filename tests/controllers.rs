//! End-to-end tests of the housekeeping controllers: every namespace gets
//! the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap, and
//! they come back when deleted.

mod common;

use common::Server;

#[test]
fn namespaces_get_the_default_service_account_and_the_root_ca() {
    let server = Server::start();
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["create", "namespace", "housekept"]);
    kubectl.wait_for(
        &[
            "get",
            "serviceaccount",
            "default",
            "-n",
            "housekept",
            "-o",
            "name",
        ],
        30,
        |o| o.trim() == "serviceaccount/default",
    );
    let ca = kubectl.wait_for(
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "housekept",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        30,
        |o| o.contains("BEGIN CERTIFICATE"),
    );
    let (cluster_ca, _, _) = server.admin_credentials();
    assert_eq!(ca.trim(), String::from_utf8_lossy(&cluster_ca).trim());
    kubectl.ok(&["delete", "serviceaccount", "default", "-n", "housekept"]);
    kubectl.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "housekept"]);
    kubectl.wait_for(
        &[
            "get",
            "serviceaccount",
            "default",
            "-n",
            "housekept",
            "-o",
            "name",
        ],
        30,
        |o| o.trim() == "serviceaccount/default",
    );
    kubectl.wait_for(
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "housekept",
            "-o",
            "name",
        ],
        30,
        |o| o.trim() == "configmap/kube-root-ca.crt",
    );
}

#[test]
fn deleting_a_namespace_deletes_its_contents_and_then_the_namespace() {
    let server = Server::start();
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["create", "namespace", "doomed"]);
    kubectl.ok(&[
        "-n",
        "doomed",
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
    ]);
    kubectl.ok(&[
        "-n",
        "doomed",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
    ]);
    kubectl.ok(&[
        "-n",
        "doomed",
        "create",
        "deployment",
        "d1",
        "--image=kelp.test/busybox:1",
    ]);
    // kubectl waits until the namespace is gone.
    kubectl.ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    let missing = kubectl.fails(&["get", "namespace", "doomed"]);
    assert!(missing.contains("NotFound"), "{missing}");
    assert_eq!(
        kubectl.ok(&[
            "get",
            "configmaps,secrets,deployments",
            "-n",
            "doomed",
            "-o",
            "name"
        ]),
        ""
    );
}

#[test]
fn deleting_an_owner_cascades_as_its_propagation_policy_says() {
    let server = Server::start();
    let kubectl = server.kubectl("kubectl");
    let manifest = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: c, image: kelp.test/busybox:1}\n";
    let path = common::write(&server.path("manifests"), "rs.yaml", manifest);
    let path = path.to_str().expect("path");
    let pods = |kubectl: &common::Kubectl| {
        kubectl
            .ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count()
    };

    // Background (the default): the pods go after the ReplicaSet.
    kubectl.ok(&["apply", "-f", path]);
    kubectl.wait_for(&["get", "pods", "-l", "app=web", "-o", "name"], 30, |o| {
        o.lines().count() == 2
    });
    kubectl.ok(&["delete", "rs", "web"]);
    kubectl.wait_for(&["get", "pods", "-l", "app=web", "-o", "name"], 30, |o| {
        o.is_empty()
    });

    // Orphan: the pods stay, without their owner.
    kubectl.ok(&["apply", "-f", path]);
    kubectl.wait_for(&["get", "pods", "-l", "app=web", "-o", "name"], 30, |o| {
        o.lines().count() == 2
    });
    kubectl.ok(&["delete", "rs", "web", "--cascade=orphan"]);
    kubectl.wait_for(&["get", "rs", "-o", "name"], 30, |o| o.is_empty());
    let owners = kubectl.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ],
        30,
        |o| !o.contains("ReplicaSet"),
    );
    assert!(!owners.contains("web"), "{owners}");
    assert_eq!(pods(&kubectl), 2);

    // A new ReplicaSet adopts the orphans; Foreground deletes them before itself.
    kubectl.ok(&["apply", "-f", path]);
    kubectl.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].name}",
        ],
        30,
        |o| o == "web web",
    );
    kubectl.ok(&["delete", "rs", "web", "--cascade=foreground"]);
    kubectl.wait_for(
        &["get", "rs,pods", "-l", "app=web", "-o", "name"],
        30,
        |o| o.is_empty(),
    );
    kubectl.wait_for(&["get", "rs", "-o", "name"], 30, |o| o.is_empty());
}

#[test]
fn a_silent_node_becomes_unknown_is_tainted_and_loses_its_pods() {
    let server = Server::start();
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    // A node that posted Ready once, long ago, and has no Lease. The
    // controller judges silence by its own clock (upstream's
    // probeTimestamp): Unknown once it has seen no heartbeat for 40 s.
    kubectl.apply(
        &dir,
        "ghost.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: ghost}\n",
    );
    kubectl.ok(&[
        "patch",
        "node",
        "ghost",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"2020-01-01T00:00:00Z","lastTransitionTime":"2020-01-01T00:00:00Z"}]}}"#,
    ]);
    // Pods bound there: one tolerating unreachability for a second, one for ever.
    let pod = |name: &str, toleration: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: ghost\n  tolerations: [{toleration}]\n  containers: [{{name: c, image: {}}}]\n---\n",
            common::BUSYBOX
        )
    };
    kubectl.apply(
        &dir,
        "pods.yaml",
        &format!(
            "{}{}",
            pod(
                "brief",
                "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}"
            ),
            pod("loyal", "{operator: Exists}"),
        ),
    );
    kubectl.wait_for(
        &[
            "get",
            "node",
            "ghost",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}",
        ],
        75,
        |o| o == "Unknown node.kubernetes.io/unreachable node.kubernetes.io/unreachable",
    );
    assert!(
        kubectl.ok(&["get", "node", "ghost"]).contains("NotReady"),
        "kubectl shows the node NotReady"
    );
    // The pod that tolerated for a second is evicted (it stays Terminating:
    // no kubelet confirms); the other stays.
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "brief",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
        30,
        |o| !o.is_empty(),
    );
    assert_eq!(
        kubectl.ok(&[
            "get",
            "pod",
            "loyal",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ]),
        ""
    );
}
