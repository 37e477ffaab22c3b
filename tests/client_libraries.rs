//! The official client libraries against kelp, unchanged: the Kubernetes
//! Python client (PyPI `kubernetes`, installed once into the target
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
fn the_python_client_works_unchanged() {
    let Some(site) = python_client() else {
        return;
    };
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["create", "namespace", "py"]);
    kubectl.ok(&[
        "run",
        "web",
        "-n",
        "py",
        "--image",
        "kelp.test/nginx:1.14.2",
    ]);
    kubectl.ok(&[
        "wait",
        "-n",
        "py",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=90s",
    ]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_client.py");
    let out = Command::new("timeout")
        .args(["120", "python3"])
        .arg(&script)
        .args(["py", "web"])
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
