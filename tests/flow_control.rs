//! End-to-end test of the API server's in-flight limits (the part of the
//! guide's API Priority and Fairness chapter kelp has so far): a request
//! over `--max-mutating-requests-inflight` is refused with 429 and
//! `Retry-After`, while `system:masters` is never limited.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Server;
use common::webhook::{Answer, Webhook};

/// A POST of a ConfigMap named `name` with a bearer token; the status code,
/// the `Retry-After` header and the body.
fn create_as(port: u16, token: &str, name: &str) -> (u16, Option<String>, String) {
    let body =
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
    let out = Command::new("curl")
        .args(["-sk", "-i", "--max-time", "20", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!(
            "https://127.0.0.1:{port}/api/v1/namespaces/default/configmaps"
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry_after = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after: ")
            .map(str::to_string)
    });
    (code, retry_after, body.to_string())
}

#[test]
fn requests_over_the_in_flight_limit_get_429_and_admins_are_not_limited() {
    // A webhook that takes 3 s keeps a create in flight.
    let webhook = Webhook::start(|_, _| {
        std::thread::sleep(Duration::from_secs(3));
        Answer::Allow {
            patch: None,
            warnings: vec![],
        }
    });
    let server = Server::start_with(&["--max-mutating-requests-inflight", "1"]);
    let admin = server.kubectl("kubectl");
    admin.apply(
        server.dir.path(),
        "slow-webhook.yaml",
        &webhook.validating_configmap_creates("slow"),
    );
    admin.ok(&["create", "serviceaccount", "flood"]);
    admin.ok(&[
        "create",
        "rolebinding",
        "flood",
        "--clusterrole=edit",
        "--serviceaccount=default:flood",
    ]);
    admin.wait_for(
        &[
            "auth",
            "can-i",
            "create",
            "configmaps",
            "--as=system:serviceaccount:default:flood",
        ],
        30,
        |out| out.trim() == "yes",
    );
    let token = admin.ok(&["create", "token", "flood"]);
    let port = server.port();

    // One create holds the only mutating slot in the webhook ...
    let holder = {
        let token = token.clone();
        std::thread::spawn(move || create_as(port, &token, "first"))
    };
    std::thread::sleep(Duration::from_millis(1500));
    // ... so the next one is refused at once, as upstream's filter does.
    let (code, retry_after, body) = create_as(port, &token, "second");
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(
        status["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // Reads have their own slots; the admin (system:masters) is never limited.
    admin.ok(&["get", "configmaps"]);
    admin.ok(&["create", "configmap", "by-admin"]);
    assert_eq!(holder.join().expect("holder").0, 201);
    // With the slot free again the service account's create goes through,
    // retried after `Retry-After` as client-go does (the controllers' own
    // writes share the single slot).
    let mut third = 0;
    for _ in 0..10 {
        third = create_as(port, &token, "third").0;
        if third != 429 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(third, 201);
    let metrics = admin.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("apiserver_request_total{code=\"429\"")
                && l.contains("resource=\"configmaps\"")),
        "no 429 counted"
    );
    let families = common::metrics::parse(&metrics);
    assert!(
        common::metrics::sum(
            &families,
            "apiserver_request_terminations",
            "apiserver_request_terminations_total",
            &[
                ("code", "429"),
                ("verb", "POST"),
                ("resource", "configmaps")
            ]
        ) >= 1.0,
        "{:?}",
        families.get("apiserver_request_terminations")
    );
}
