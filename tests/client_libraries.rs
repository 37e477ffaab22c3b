//! The official client libraries against kelp, unchanged: kube-rs (over
//! the network, with kelp's HTTPS transport) and the Kubernetes Python client (PyPI `kubernetes`, installed once into the target
//! directory; skipped with a message without pip or the registry) runs
//! tests/fixtures/python_client.py — list/watch/create/patch/delete of core
//! and apps objects, server-side apply with dryRun, a metadata-only list,
//! a watch from a list's resourceVersion, exec and port-forward over its
//! WebSocket, upstream's 409 body.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

/// The `kubernetes` package installed into the target directory, or None
/// (with the reason printed).
fn python_client() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-kubernetes");
    if dir.join("kubernetes").is_dir() {
        return Some(dir);
    }
    let out = Command::new("timeout")
        .args(["300", "python3", "-m", "pip", "install", "-q", "--target"])
        .arg(&dir)
        .arg("kubernetes")
        .output();
    match out {
        Ok(out) if out.status.success() => Some(dir),
        Ok(out) => {
            eprintln!(
                "skipping the Python client: pip install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("skipping the Python client: no python3 ({e})");
            None
        }
    }
}

#[test]
fn client_libraries_work_unchanged() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["create", "namespace", "clients"]);
    kubectl.ok(&[
        "run",
        "web",
        "-n",
        "clients",
        "--image",
        "kelp.test/nginx:1.14.2",
    ]);
    kubectl.ok(&[
        "wait",
        "-n",
        "clients",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=90s",
    ]);
    kube_rs_checks(&server, "clients", "web");
    let Some(site) = python_client() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_client.py");
    let out = Command::new("timeout")
        .args(["120", "python3"])
        .arg(&script)
        .args(["clients", "web"])
        .env("PYTHONPATH", &site)
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.path("python-home"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kube-rs (the crate kelp's own components use) over the network, with
/// kelp's HTTPS transport: the same checks as the Python client's, plus a
/// streaming list (WatchList) that must end its initial events.
fn kube_rs_checks(server: &Server, namespace: &str, pod: &str) {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::{
        Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    };
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let kubeconfig: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(server.kubeconfig()).expect("kubeconfig"))
            .expect("yaml");
    let b64 = |pointer: &str| {
        use base64::Engine;
        let text = kubeconfig
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .expect(pointer);
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let ca = b64("/clusters/0/cluster/certificate-authority-data");
    let cert = b64("/users/0/user/client-certificate-data");
    let key = b64("/users/0/user/client-key-data");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let identity = kelp::http::client::Identity::Certificate(
            kelp::pki::reloadable::ReloadableCert::from_pem(&cert, &key).expect("cert"),
        );
        let client = kelp::http::client::remote(
            &format!("https://127.0.0.1:{}", server.port()),
            &ca,
            identity,
        )
        .expect("client");
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);

        // A watch from the list's resourceVersion.
        let listed = maps.list(&ListParams::default()).await.expect("list");
        let rv = listed.metadata.resource_version.clone().expect("rv");
        let mut stream = maps
            .watch(&WatchParams::default().timeout(30), &rv)
            .await
            .expect("watch")
            .boxed();
        let collector = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Ok(event)) = stream.next().await {
                let (kind, name) = match &event {
                    WatchEvent::Added(o) => ("ADDED", o.metadata.name.clone()),
                    WatchEvent::Modified(o) => ("MODIFIED", o.metadata.name.clone()),
                    WatchEvent::Deleted(o) => ("DELETED", o.metadata.name.clone()),
                    _ => continue,
                };
                if name.as_deref() == Some("kube-cm") {
                    seen.push(kind);
                    if kind == "DELETED" {
                        break;
                    }
                }
            }
            seen
        });

        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kube-cm"}, "data": {"k": "v"}})).expect("cm");
        maps.create(&PostParams::default(), &cm).await.expect("create");
        match maps.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 409);
                assert_eq!(status.reason, "AlreadyExists");
                assert_eq!(status.message, "configmaps \"kube-cm\" already exists");
            }
            other => panic!("a second create: {other:?}"),
        }
        maps.patch("kube-cm", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "w"}})))
            .await
            .expect("merge patch");
        let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-cm"}, "data": {"k": "w", "applied": "yes"}});
        let dry = maps
            .patch("kube-cm", &PatchParams::apply("kube-rs").force().dry_run(), &Patch::Apply(&apply))
            .await
            .expect("dry-run apply");
        assert_eq!(dry.data.as_ref().and_then(|d| d.get("applied")).map(String::as_str), Some("yes"));
        let stored = maps.get("kube-cm").await.expect("get");
        assert!(stored.data.as_ref().is_some_and(|d| !d.contains_key("applied")));
        maps.patch("kube-cm", &PatchParams::apply("kube-rs").force(), &Patch::Apply(&apply))
            .await
            .expect("apply");
        let metadata = maps.list_metadata(&ListParams::default()).await.expect("metadata list");
        assert!(metadata.items.iter().any(|m| m.metadata.name.as_deref() == Some("kube-cm")));

        // A streaming list (client-go's WatchList): initial events, then the end bookmark.
        let mut initial = kube::runtime::watcher(
            maps.clone(),
            kube::runtime::watcher::Config::default().streaming_lists(),
        )
        .boxed();
        let init_done = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut names = Vec::new();
            while let Some(event) = initial.try_next().await.expect("watcher") {
                match event {
                    kube::runtime::watcher::Event::InitApply(o) => names.push(o.metadata.name.unwrap_or_default()),
                    kube::runtime::watcher::Event::InitDone => return names,
                    _ => {}
                }
            }
            names
        })
        .await
        .expect("the initial events end with a bookmark");
        assert!(init_done.contains(&"kube-cm".to_string()), "{init_done:?}");

        maps.delete("kube-cm", &DeleteParams::default()).await.expect("delete");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(20), collector)
            .await
            .expect("watch events")
            .expect("collector");
        assert_eq!(seen, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);

        // exec and port-forward over kube-rs's WebSocket.
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut attached = pods
            .exec(pod, ["echo", "hello from kube-rs"], &AttachParams::default())
            .await
            .expect("exec");
        let mut out = String::new();
        let mut stdout = attached.stdout().expect("stdout");
        let mut stderr = attached.stderr().expect("stderr");
        let mut err = String::new();
        let status = attached.take_status().expect("status");
        stdout.read_to_string(&mut out).await.expect("stdout");
        stderr.read_to_string(&mut err).await.expect("stderr");
        let status = status.await;
        attached.join().await.expect("exec ends");
        assert_eq!(out.trim(), "hello from kube-rs", "stderr {err:?}, status {status:?}");
        let mut forward = pods.portforward(pod, &[80]).await.expect("port-forward");
        let mut stream = forward.take_stream(80).expect("stream");
        stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("send");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read");
        assert!(reply.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&reply));
        drop(stream);
        let _ = forward.join().await;
    });
}
