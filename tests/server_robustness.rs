//! End-to-end: authentication, durability across SIGKILL, a full disk, a
//! damaged datastore and its snapshots, and bad input.

mod common;

use std::process::{Command, Stdio};

use common::Server;

fn curl(server: &Server, args: &[&str], path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn requests_without_credentials_get_401() {
    let server = Server::start();
    let (body, code) = curl(&server, &[], "/api/v1/pods");
    assert_eq!(code, "401");
    assert!(
        body.contains("\"reason\":\"Unauthorized\"") && body.contains("\"kind\":\"Status\""),
        "{body}"
    );
    let (_, code) = curl(
        &server,
        &["-H", "Authorization: Bearer not-a-token"],
        "/api/v1/pods",
    );
    assert_eq!(code, "401");
    // Health is public, as upstream's system:public-info-viewer.
    assert_eq!(
        curl(&server, &[], "/readyz"),
        ("ok".to_string(), "200".to_string())
    );
}

/// kill -9 at random moments of a mixed write load (creates, updates,
/// deletes), a few times here (`cargo bench --bench durability` does a
/// hundred): every acknowledged write is there after each restart.
#[test]
fn acknowledged_writes_survive_repeated_sigkill() {
    let mut server = Server::start();
    let report = common::durability::kill_loop(&mut server, 4, 0x6b656c70);
    assert_eq!(report.kills, 4);
    assert!(report.acknowledged > 50, "{report:?}");
    // The server still takes writes afterwards.
    server.kubectl("kubectl").ok(&[
        "create",
        "configmap",
        "after-restarts",
        "--from-literal=a=b",
    ]);
}

#[test]
fn malformed_requests_get_status_errors() {
    let server = Server::start();
    let (_, cert, key) = server.admin_credentials();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("c.pem"), cert).expect("cert");
    std::fs::write(dir.path().join("k.pem"), key).expect("key");
    let c = dir.path().join("c.pem").display().to_string();
    let kk = dir.path().join("k.pem").display().to_string();
    let auth = ["--cert", c.as_str(), "--key", kk.as_str()];
    let post = |body: &str, ct: &str, path: &str| {
        let mut args: Vec<&str> = auth.to_vec();
        args.extend(["-X", "POST", "-H"]);
        let header = format!("Content-Type: {ct}");
        args.push(&header);
        args.extend(["--data-binary", body]);
        curl(&server, &args, path)
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let (body, code) = post("{not json", "application/json", cms);
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("\"reason\":\"BadRequest\""), "{body}");
    let (body, code) = post("{}", "text/plain", cms);
    assert_eq!(code, "415", "{body}");
    let (body, code) = post(
        r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        "application/json",
        cms,
    );
    assert_eq!(code, "400", "{body}");
    let (body, code) = post(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        "application/json",
        "/api/v1/namespaces/default/nosuchthings",
    );
    assert_eq!(code, "404", "{body}");
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let big_file = dir.path().join("big.json");
    std::fs::write(&big_file, big).expect("big");
    let at = format!("@{}", big_file.display());
    let (_, code) = post(&at, "application/json", cms);
    assert_eq!(code, "413");
    // Nothing half-written remains, and the server is still serving.
    let mut args: Vec<&str> = auth.to_vec();
    args.push("-s");
    let (body, code) = curl(&server, &args, cms);
    assert_eq!(code, "200");
    assert!(
        !body.contains("\"name\":\"big\"") && !body.contains("\"name\":\"x\""),
        "{body}"
    );
}

#[test]
fn service_account_tokens_authenticate() {
    let server = Server::start();
    let k = server.kubectl("kubectl");
    assert!(
        k.ok(&["create", "serviceaccount", "builder"])
            .contains("serviceaccount/builder created")
    );
    let token = k
        .ok(&["create", "token", "builder", "--duration=15m"])
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let bearer = format!("Authorization: Bearer {token}");
    // Authenticated, but RBAC grants a new service account nothing.
    let (body, code) = curl(
        &server,
        &["-H", &bearer],
        "/api/v1/namespaces/default/serviceaccounts/builder",
    );
    assert_eq!(code, "403", "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        "serviceaccounts \"builder\" is forbidden: User \"system:serviceaccount:default:builder\" cannot get resource \"serviceaccounts\" in API group \"\" in the namespace \"default\""
    );
    let (body, code) = curl(
        &server,
        &[
            "-H",
            &bearer,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        ],
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    );
    assert_eq!(code, "201", "{body}");
    assert!(
        body.contains("system:serviceaccount:default:builder"),
        "{body}"
    );
    let stderr = k.fails(&["create", "token", "nosuch"]);
    assert!(
        stderr.contains("serviceaccounts \"nosuch\" not found"),
        "{stderr}"
    );
}

#[test]
fn json_logs_and_request_metrics() {
    let server = Server::start_with(&["--log-format", "json", "-v", "4"]);
    let k = server.kubectl("kubectl");
    k.ok(&["get", "configmaps"]);
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    let listed = metrics.lines().any(|l| {
        l.starts_with("apiserver_request_total{")
            && l.contains("verb=\"LIST\"")
            && l.contains("resource=\"configmaps\"")
            && l.contains("code=\"200\"")
    });
    assert!(listed, "no LIST configmaps counter in:\n{metrics}");
    assert!(
        metrics.contains("apiserver_request_duration_seconds_bucket{"),
        "no latency histogram"
    );
    assert!(metrics.contains("process_resident_memory_bytes"));
    let log = server.log();
    // Every line, libraries' included, is one JSON object.
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value["ts"].is_f64() && value["msg"].is_string(), "{line}");
    }
    let ready = log
        .lines()
        .find(|l| l.contains("kelp server is ready"))
        .expect("ready line");
    let line: serde_json::Value = serde_json::from_str(ready).expect("a JSON log line");
    assert!(
        line["ts"].is_f64() && line["v"] == 0 && line["msg"] == "kelp server is ready",
        "{ready}"
    );
    // -v 4 shows per-request debug lines.
    assert!(
        log.lines()
            .any(|l| l.contains("\"msg\":\"request\"") && l.contains("\"v\":4")),
        "{log}"
    );
}

/// History is compacted every `--etcd-compaction-interval` (upstream's
/// semantics: what is older than the previous pass goes, here within 12
/// passes when few revisions are to go); a watch from
/// before answers 410 Gone with upstream's message, and a fresh list works.
#[test]
fn compacted_history_gives_410_gone() {
    let server = Server::start_with(&["--etcd-compaction-interval", "1s"]);
    let k = server.kubectl("kubectl");
    let rv = |json: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
        value["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string()
    };
    let old = rv(&k.ok(&["create", "configmap", "compacted", "-o", "json"]));
    for step in 0..3 {
        k.ok(&[
            "label",
            "configmap",
            "compacted",
            &format!("step={step}"),
            "--overwrite",
        ]);
    }
    // A pass compacts to the revision the pass before saw; with so few
    // revisions to forget, passes wait (at most 11 in a row) for more.
    let list = "/api/v1/namespaces/default/configmaps";
    let first_event = |stream: &str| -> serde_json::Value {
        serde_json::from_str(stream.lines().next().expect("an event")).expect("JSON")
    };
    let stream = k.wait_for(
        &[
            "get",
            "--raw",
            &format!("{list}?watch=true&resourceVersion={old}&timeoutSeconds=1"),
        ],
        30,
        |stream| first_event(stream)["type"] == "ERROR",
    );
    let event = first_event(&stream);
    assert_eq!(event["type"], "ERROR", "{stream}");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    let message = event["object"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("too old resource version: {old} (")),
        "{message}"
    );
    // A list (and a watch from it) still works.
    let now = rv(&k.ok(&["get", "--raw", list]));
    let fresh = k.ok(&[
        "get",
        "--raw",
        &format!("{list}?watch=true&resourceVersion={now}&timeoutSeconds=1"),
    ]);
    assert!(!fresh.contains("ERROR"), "{fresh}");
}

/// `/openapi/v2` in JSON and in the protobuf form kubectl asks for, with
/// an ETag that a repeated request answers 304 to.
#[test]
fn openapi_v2_is_served_in_both_forms_with_etags() {
    let server = Server::start();
    let (_, cert, key) = server.admin_credentials();
    let cert_file = common::write(
        server.dir.path(),
        "admin.crt",
        &String::from_utf8_lossy(&cert),
    );
    let key_file = common::write(
        server.dir.path(),
        "admin.key",
        &String::from_utf8_lossy(&key),
    );
    let creds = [
        "--cert",
        cert_file.to_str().expect("path"),
        "--key",
        key_file.to_str().expect("path"),
    ];
    let headers = server.path("headers.txt");
    let mut args = creds.to_vec();
    args.extend(["-D", headers.to_str().expect("path")]);
    let (json, code) = curl(&server, &args, "/openapi/v2");
    assert_eq!(code, "200");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(doc["swagger"], "2.0");
    let etag_of = |headers: &std::path::Path| {
        let head = std::fs::read_to_string(headers).expect("headers");
        head.lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .expect("an ETag")
            .trim()
            .to_string()
    };
    // The document changes while the add-ons' CRDs register after start:
    // a 200 then carries the new ETag, which the next try sends.
    let mut etag = etag_of(&headers);
    let mut code = String::new();
    for _ in 0..20 {
        let matched = format!("If-None-Match: {etag}");
        let mut again = creds.to_vec();
        again.extend(["-H", &matched, "-D", headers.to_str().expect("path")]);
        code = curl(&server, &again, "/openapi/v2").1;
        if code == "304" {
            break;
        }
        assert_eq!(code, "200");
        etag = etag_of(&headers);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(code, "304");
    let mut proto = creds.to_vec();
    proto.extend([
        "-H",
        "Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        "-o",
    ]);
    let file = server.path("v2.pb");
    proto.push(file.to_str().expect("path"));
    let (_, code) = curl(&server, &proto, "/openapi/v2");
    assert_eq!(code, "200");
    let bytes = std::fs::read(&file).expect("protobuf");
    // gnostic's Document: field 1 (swagger) "2.0" first.
    assert_eq!(&bytes[..5], b"\x0a\x032.0");
    assert!(bytes.len() > 100_000);
}

/// A small tmpfs the test mounts, unmounted however the test ends.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, megabytes: u32) -> Self {
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m"),
                "kelp-e2e-small-disk",
            ])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs at {}", dir.display());
        SmallDisk(dir)
    }

    /// Fills the disk but for `keep` bytes.
    fn fill(&self, keep: u64) -> std::path::PathBuf {
        let filler = self.0.join("filler");
        let free = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        let available = free.blocks_available() as u64 * free.fragment_size() as u64;
        let file = std::fs::File::create(&filler).expect("filler");
        file.set_len(0).expect("filler");
        let status = Command::new("fallocate")
            .args(["-l", &available.saturating_sub(keep).to_string()])
            .arg(&filler)
            .status()
            .expect("fallocate");
        assert!(status.success(), "fallocate");
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        // The mount point is the test's too.
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_recovers() {
    let mount = std::env::temp_dir().join(format!("kelp-e2e-small-disk-{}", std::process::id()));
    let disk = SmallDisk::mount(mount.clone(), 48);
    let endpoint = format!("sqlite://{}", mount.join("state.db").display());
    let server = Server::start_with(&["--datastore-endpoint", &endpoint]);
    let k = server.kubectl("kubectl");
    k.ok(&["create", "configmap", "before", "--from-literal=a=b"]);
    let filler = disk.fill(1 << 20);
    // Writes of ~256 KiB until the disk refuses one: a 500 Status that says so.
    let data = server.path("data.txt");
    std::fs::write(&data, "x".repeat(256 << 10)).expect("data");
    let mut refused = None;
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        let name = format!("big-{n}");
        let out = k.run(&[
            "create",
            "configmap",
            &name,
            &format!("--from-file=data={}", data.display()),
        ]);
        if out.status.success() {
            acknowledged.push(name);
        } else {
            refused = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let refused = refused.expect("the full disk never refused a write");
    assert!(
        refused.contains("Internal error occurred")
            && refused.contains("the datastore's disk is full"),
        "{refused}"
    );
    // Reads still work, and so does the server.
    assert_eq!(
        k.ok(&["get", "configmap", "before", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    k.ok(&["get", "--raw", "/readyz"]);
    // Space back: writes succeed again, nothing acknowledged is lost.
    std::fs::remove_file(&filler).expect("free the disk");
    k.ok(&["create", "configmap", "after", "--from-literal=a=b"]);
    let listed = k.ok(&["get", "configmaps", "-o", "name"]);
    for name in acknowledged
        .iter()
        .chain(["before".to_string(), "after".to_string()].iter())
    {
        assert!(
            listed.contains(&format!("configmap/{name}\n")),
            "{name} lost:\n{listed}"
        );
    }
    drop(server);
}

/// The revision a LIST of ConfigMaps is read at.
fn list_revision(k: &common::Kubectl) -> i64 {
    let list: serde_json::Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=1",
    ]))
    .expect("json");
    list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list revision")
}

/// `kelp store snapshot …` as a user runs it against a data dir.
fn store_snapshot(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(common::kelp_bin())
        .args(["store", "snapshot"])
        .args(args)
        .arg("--data-dir")
        .arg(server.path("data"))
        .output()
        .expect("kelp store snapshot")
}

/// A second `kelp server` on the test server's data dir (another port),
/// expected to stop at once; returns what it said.
fn start_fails(server: &Server) -> String {
    let mut child = Command::new(common::kelp_bin())
        .args(["server", "--config", "/dev/null", "--disable-agent"])
        .args(["--bind-address", "127.0.0.1", "--https-listen-port"])
        .arg(common::free_port().to_string())
        .arg("--data-dir")
        .arg(server.path("data"))
        .arg("--write-kubeconfig")
        .arg(server.path("second.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kelp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a kelp server that should refuse to start kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_datastore_is_refused_and_restored_from_a_snapshot() {
    let mut server = Server::start();
    let k = server.kubectl("kubectl");
    let data = server.path("payload.txt");
    std::fs::write(&data, "x".repeat(8 << 10)).expect("payload");
    for n in 0..40 {
        k.ok(&[
            "create",
            "configmap",
            &format!("kept-{n}"),
            &format!("--from-file=data={}", data.display()),
        ]);
    }
    // A snapshot taken while the server runs.
    let saved = store_snapshot(&server, &["save"]);
    assert!(saved.status.success(), "{saved:?}");
    let saved = String::from_utf8_lossy(&saved.stdout).into_owned();
    assert!(saved.contains("on-demand-"), "{saved}");
    k.ok(&[
        "create",
        "configmap",
        "after-snapshot",
        "--from-literal=a=b",
    ]);
    let seen = list_revision(&k);
    // One kelp per database: a second one is refused while this one runs.
    let refused = start_fails(&server);
    assert!(refused.contains("in use by another kelp"), "{refused}");
    // Damage the database while kelp is stopped: it refuses to start and
    // says how to recover.
    server.stop();
    let db = server.path("data/server/db/state.db");
    let mut bytes = std::fs::read(&db).expect("database");
    let len = bytes.len();
    assert!(len > 64 << 10, "database of {len} bytes");
    for b in &mut bytes[8192..len / 2] {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).expect("damage");
    let refused = start_fails(&server);
    assert!(
        refused.contains("the datastore is damaged")
            && refused.contains("kelp store snapshot restore"),
        "{refused}"
    );
    // The documented recovery.
    let listed = store_snapshot(&server, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let name = listed
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|n| n.starts_with("on-demand-"))
        })
        .expect("the snapshot is listed")
        .to_string();
    let restored = store_snapshot(&server, &["restore", &name]);
    assert!(restored.status.success(), "{restored:?}");
    server.spawn();
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "kept-39",
            "-o",
            "jsonpath={.metadata.name}"
        ]),
        "kept-39"
    );
    k.fails(&["get", "configmap", "after-snapshot"]);
    // Revisions go on above anything a client saw; older ones are gone.
    let now = list_revision(&k);
    assert!(now > seen, "{now} <= {seen}");
    let old = k.run(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={seen}&timeoutSeconds=1"
        ),
    ]);
    let answer = String::from_utf8_lossy(&old.stdout);
    assert!(
        answer.contains("\"code\":410") || answer.contains("Expired"),
        "{answer}"
    );
    k.ok(&["create", "configmap", "after-restore", "--from-literal=a=b"]);
}
