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
