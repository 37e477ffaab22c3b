//! End-to-end tests of the guide's observability chapters on a server
//! (no node): OTLP traces to a real gRPC receiver, the metric stability
//! flags, and every metrics page parsed by Prometheus' own Python parser.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use common::metrics::{Families, parse};
use common::otlp::Receiver;

/// An HTTPS GET as the admin with extra headers; the status code.
fn admin_get(server: &Server, path: &str, headers: &[&str]) -> u16 {
    admin_request(server, "GET", path, None, headers)
}

/// An HTTPS request as the admin with a JSON body and extra headers; the
/// status code.
fn admin_request(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> u16 {
    let (cert_file, key_file) = server.admin_cert_files();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sk",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .args(["-X", method])
    .arg("--cert")
    .arg(&cert_file)
    .arg("--key")
    .arg(&key_file);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", server.port()))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn traces_reach_an_otlp_receiver_and_continue_the_callers_trace() {
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    // Rate 0: only what a caller asks to be sampled is traced.
    let config = common::write(
        dir.path(),
        "tracing.yaml",
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: TracingConfiguration\n\
             endpoint: 127.0.0.1:{port}\nsamplingRatePerMillion: 0\n"
        ),
    );
    // A malformed endpoint turns traces off; kelp runs.
    let bad = common::write(
        dir.path(),
        "bad.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: \"not a host\"\n",
    );
    let untraced = Server::start_with(&["--tracing-config-file", bad.to_str().unwrap()]);
    assert!(
        untraced.log().contains("Traces are off"),
        "{}",
        untraced.log()
    );
    drop(untraced);
    // The collector is down at first: kelp starts and serves anyway.
    let server = Server::start_with(&["--tracing-config-file", config.to_str().unwrap()]);
    let parent_span = "00f067aa0ba902b7";
    let lost_trace = "11111111111111111111111111111111";
    assert_eq!(
        admin_get(
            &server,
            "/api/v1/namespaces/default/configmaps",
            &[&format!("traceparent: 00-{lost_trace}-{parent_span}-01")]
        ),
        200
    );
    assert!(
        server.log().contains("Exporting traces"),
        "{}",
        server.log()
    );

    let receiver = Receiver::default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.spawn(receiver.clone().serve(port));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let deadline = Instant::now() + Duration::from_secs(40);
    let spans = loop {
        // Resent until the exporter's channel has reconnected.
        assert_eq!(
            admin_get(
                &server,
                "/api/v1/namespaces/default/configmaps?limit=1",
                &[&format!("traceparent: 00-{trace}-{parent_span}-01")]
            ),
            200
        );
        let spans = receiver.wait_for(trace, "KubernetesAPI");
        if spans.iter().any(|s| s.name == "KubernetesAPI") || Instant::now() > deadline {
            break spans;
        }
    };
    let request = spans
        .iter()
        .find(|s| s.name == "KubernetesAPI")
        .unwrap_or_else(|| panic!("no KubernetesAPI span in {spans:?}\n{}", server.log()));
    assert_eq!(request.parent, parent_span, "{spans:?}");
    // The store's spans are children of the request's.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "List sqlite" && s.parent == request.id),
        "{spans:?}"
    );
    // An admission webhook's call is a span of the request's; the webhook
    // gets its traceparent.
    let webhook = common::webhook::Webhook::start(|_, _| common::webhook::Answer::Allow {
        patch: None,
        warnings: vec![],
    });
    server.kubectl("kubectl").apply(
        dir.path(),
        "webhook.yaml",
        &webhook.validating_configmap_creates("traced"),
    );
    let hooked = "33333333333333333333333333333333";
    assert_eq!(
        admin_request(
            &server,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced"}}"#),
            &[&format!("traceparent: 00-{hooked}-{parent_span}-01")]
        ),
        201
    );
    let spans = receiver.wait_for(hooked, "Call validating webhook");
    let request = spans
        .iter()
        .find(|s| s.name == "KubernetesAPI")
        .unwrap_or_else(|| panic!("no request span in {spans:?}"));
    assert!(
        spans
            .iter()
            .any(|s| s.name == "Call validating webhook" && s.parent == request.id),
        "{spans:?}"
    );
    assert_eq!(
        webhook.operations("/validate", "traced"),
        ["CREATE"],
        "the webhook was not called"
    );

    // Unsampled callers are not traced at rate 0.
    let unsampled = "22222222222222222222222222222222";
    admin_get(
        &server,
        "/api/v1/namespaces",
        &[&format!("traceparent: 00-{unsampled}-{parent_span}-00")],
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        receiver.spans().iter().all(|s| s.trace != unsampled),
        "an unsampled request was traced"
    );
}

/// The HELP of a family (the parser's name drops `_total`).
fn help<'a>(families: &'a Families, name: &str) -> Option<&'a str> {
    families.get(name).map(|f| f.1.as_str())
}

#[test]
fn metric_stability_flags_change_what_is_exposed() {
    // Defaults: levels in HELP, the 1.30 deprecations hidden, the 1.33 one shown.
    // At -v 6, to see that no token or secret value is ever logged.
    let plain = Server::start_with(&["--secrets-encryption", "-v", "6"]);
    let k = plain.kubectl("kubectl");
    let families = parse(&k.ok(&["get", "--raw", "/metrics"]));
    assert_eq!(
        help(&families, "apiserver_request"),
        Some(
            "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, \
             group, version, resource, scope, component, and HTTP response code."
        )
    );
    assert!(
        help(&families, "etcd_request_duration_seconds").is_some_and(|h| h.starts_with("[ALPHA] ")),
        "{families:?}"
    );
    assert!(
        help(&families, "registered_metrics").is_some_and(|h| h.starts_with("[BETA] ")),
        "{families:?}"
    );
    assert!(
        !families.contains_key("apiserver_encryption_config_controller_automatic_reload_success"),
        "a metric deprecated in 1.30 is exposed in 1.33"
    );
    assert!(
        help(&families, "scheduler_scheduler_cache_size")
            .is_some_and(|h| h.starts_with("[ALPHA] (Deprecated since 1.33.0) ")),
        "{families:?}"
    );
    // Objects stored, requests in flight (this scrape), watches open.
    let sum = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        common::metrics::sum(&families, family, sample, labels)
    };
    assert!(
        sum(
            "apiserver_storage_objects",
            "apiserver_storage_objects",
            &[("resource", "namespaces")]
        ) >= 4.0,
        "{:?}",
        families.get("apiserver_storage_objects")
    );
    assert!(
        sum(
            "apiserver_current_inflight_requests",
            "apiserver_current_inflight_requests",
            &[("request_kind", "readOnly")]
        ) >= 1.0
    );
    assert!(
        sum(
            "apiserver_longrunning_requests",
            "apiserver_longrunning_requests",
            &[("verb", "WATCH"), ("resource", "pods")]
        ) >= 1.0,
        "{:?}",
        families.get("apiserver_longrunning_requests")
    );
    // The process registry counts what it registered.
    let registered = &families["registered_metrics"].2;
    assert!(
        registered
            .iter()
            .any(
                |(_, l, v)| l.get("stability_level").map(String::as_str) == Some("STABLE")
                    && *v >= 5.0
            ),
        "{registered:?}"
    );
    assert!(
        families["hidden_metrics"]
            .2
            .iter()
            .any(|(_, _, v)| *v >= 2.0)
    );

    // /metrics is for those allowed `get` on it (system:monitoring), 403 otherwise.
    k.ok(&["create", "serviceaccount", "monitor"]);
    k.ok(&["create", "serviceaccount", "nobody"]);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "monitor",
        "--clusterrole=system:monitoring",
        "--serviceaccount=default:monitor",
    ]);
    let token = |name: &str| k.ok(&["create", "token", name]);
    let (monitor, nobody) = (token("monitor"), token("nobody"));
    let (code, _) = common::https_get(plain.port(), "/metrics", Some(&monitor));
    assert_eq!(code, 200);
    let (code, body) = common::https_get(plain.port(), "/metrics", Some(&nobody));
    assert_eq!(code, 403, "{body}");
    let (code, _) = common::https_get(plain.port(), "/metrics", Some("not-a-valid-token"));
    assert_eq!(code, 401);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sensitive",
        "--from-literal=password=hunter2-kelp-secret",
    ]);
    k.ok(&["get", "secret", "sensitive", "-o", "yaml"]);
    let log = plain.log();
    for sensitive in [
        monitor.trim(),
        nobody.trim(),
        "not-a-valid-token",
        "hunter2-kelp-secret",
        "aHVudGVyMi1rZWxwLXNlY3JldA",
    ] {
        assert!(!log.contains(sensitive), "{sensitive} was logged");
    }
    assert!(body.contains(r#"cannot get path \"/metrics\""#), "{body}");

    // A bad version is refused as upstream refuses it.
    let out = Command::new(common::kelp_bin())
        .args(["server", "--show-hidden-metrics-for-version", "1.31"])
        .output()
        .expect("kelp");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--show-hidden-metrics-for-version must be omitted or have the value '1.32'. \
             Only the previous minor version is allowed"
        ),
        "{stderr}"
    );

    // The flags: hidden shown again, one metric off, one label bounded.
    let flagged = Server::start_with(&[
        "--secrets-encryption",
        "--show-hidden-metrics-for-version=1.32",
        "--disabled-metrics=scheduler_pending_pods,etcd_requests_total",
        "--allow-metric-labels=apiserver_request_total,code='200,201'",
    ]);
    let k = flagged.kubectl("kubectl");
    k.ok(&["get", "configmaps"]);
    k.fails(&["get", "configmap", "nosuch"]);
    common::secrets_encrypt(&flagged, "rotate-keys");
    let families = parse(&k.ok(&["get", "--raw", "/metrics"]));
    assert!(!families.contains_key("scheduler_pending_pods"));
    assert!(!families.contains_key("etcd_requests"));
    assert!(families.contains_key("etcd_request_duration_seconds"));
    assert_eq!(families["disabled_metrics"].2[0].2, 2.0);
    let reloads = help(
        &families,
        "apiserver_encryption_config_controller_automatic_reload_success",
    );
    assert!(
        reloads.is_some_and(|h| h.starts_with("[ALPHA] (Deprecated since 1.30.0) ")),
        "{families:?}"
    );
    // A rotation puts the configuration in force twice.
    assert!(families.contains_key("apiserver_encryption_config_controller_automatic_reloads"));
    assert!(
        families["apiserver_encryption_config_controller_automatic_reload_success"]
            .2
            .iter()
            .any(|(_, _, v)| *v >= 2.0),
        "{families:?}"
    );
    let codes: Vec<&str> = families["apiserver_request"]
        .2
        .iter()
        .filter_map(|(_, l, _)| l.get("code").map(String::as_str))
        .collect();
    assert!(
        codes.contains(&"200") && codes.contains(&"unexpected"),
        "{codes:?}"
    );
    assert!(!codes.contains(&"404"), "{codes:?}");
    let categorized = &families["cardinality_enforcement_unexpected_categorizations"];
    assert!(categorized.2[0].2 >= 1.0, "{categorized:?}");
}

/// Debian's Prometheus server, unpacked (not installed: no service, no
/// user) into the target directory; None, with the reason printed, when
/// the package can't be fetched.
fn prometheus_binary() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("prometheus");
    let binary = dir.join("root/usr/bin/prometheus");
    if binary.exists() {
        return Some(binary);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let download = Command::new("timeout")
        .args(["120", "apt-get", "download", "prometheus"])
        .current_dir(&dir)
        .output();
    let deb = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb else {
        eprintln!("skipping the Prometheus scrape: apt-get download failed: {download:?}");
        return None;
    };
    let unpacked = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root"))
        .status();
    if !unpacked.is_ok_and(|s| s.success()) || !binary.exists() {
        eprintln!(
            "skipping the Prometheus scrape: could not unpack {}",
            deb.display()
        );
        return None;
    }
    Some(binary)
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_control_plane() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = server.admin_cert_files();
    let job = |name: &str, port: u16| {
        format!(
            "- job_name: {name}\n  scheme: https\n  tls_config: {{insecure_skip_verify: true, cert_file: {}, key_file: {}}}\n  static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            cert_file.display(),
            key_file.display()
        )
    };
    let config = common::write(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n{}{}{}",
            job("apiserver", server.port()),
            job("kube-controller-manager", 10257),
            job("kube-scheduler", 10259),
        ),
    );
    let port = common::free_port();
    let _prometheus = Prometheus(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus"),
    );
    let query = |q: &str| -> serde_json::Value {
        let body = common::http_get(&format!(
            "http://127.0.0.1:{port}/api/v1/query?query={}",
            percent_encode(q)
        ));
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    };
    // Every target up, kelp's series stored as Prometheus read them.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut up = serde_json::Value::Null;
    while Instant::now() < deadline {
        up = query("sum(up)");
        if up["data"]["result"][0]["value"][1] == "3" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = common::http_get(&format!("http://127.0.0.1:{port}/api/v1/targets"));
    assert_eq!(
        up["data"]["result"][0]["value"][1],
        "3",
        "targets: {targets}\nlog: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    for series in [
        "apiserver_request_total{job=\"apiserver\",verb=\"LIST\"}",
        "etcd_request_duration_seconds_count{job=\"apiserver\"}",
        "workqueue_adds_total{job=\"kube-controller-manager\"}",
        "scheduler_cache_size{job=\"kube-scheduler\",type=\"nodes\"}",
        "registered_metrics_total{stability_level=\"STABLE\"}",
    ] {
        let result = query(series);
        assert!(
            result["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{series}: {result}"
        );
    }
}

fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
