//! The binary's other names: `pause` (pod sandbox) and `kelp-cni` (CNI plugin).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn link(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::os::unix::fs::symlink(common::kelp_bin(), &path).expect("symlink");
    path
}

#[test]
fn pause_runs_until_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(link(dir.path(), "pause"))
        .spawn()
        .expect("pause");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "pause exited on its own"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            return;
        }
        assert!(Instant::now() < deadline, "pause ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cni_version_and_errors_follow_the_spec() {
    let dir = tempfile::tempdir().expect("tmp");
    let cni = link(dir.path(), "kelp-cni");
    let out = Command::new(&cni)
        .env("CNI_COMMAND", "VERSION")
        .output()
        .expect("version");
    assert!(out.status.success());
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        version["supportedVersions"].as_array().map(Vec::len),
        Some(4)
    );
    let out = Command::new(&cni)
        .env("CNI_COMMAND", "ADD")
        .stdin(Stdio::null())
        .output()
        .expect("add");
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(
        (error["code"].as_u64(), error["cniVersion"].as_str()),
        (Some(4), Some("1.0.0"))
    );
}
