//! End-to-end tests of the guide's API Priority and Fairness chapter: a
//! flood from a service account that a custom FlowSchema sends to a small
//! priority level is queued and refused with 429 while others are served,
//! the debug dumps, headers and metrics show it; and with
//! `--enable-priority-and-fairness=false` the max-in-flight limits refuse
//! a request over `--max-mutating-requests-inflight` at once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use common::webhook::{Answer, Webhook};

/// An answer read by curl: status code, headers (lower-case names), body.
struct Reply {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `method` on `path` with a bearer token (and a JSON body for POST).
fn call_as(port: u16, token: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut curl = Command::new("curl");
    curl.args(["-sk", "-i", "--max-time", "30", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
    if let Some(body) = body {
        curl.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = curl
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    Reply {
        code,
        headers,
        body: body.to_string(),
    }
}

/// A POST of a ConfigMap named `name` in `default`.
fn create_as(port: u16, token: &str, name: &str) -> Reply {
    let body =
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
    call_as(
        port,
        token,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&body),
    )
}

/// A service account in `default` that may edit, and a token for it.
fn editor(admin: &common::Kubectl, name: &str) -> String {
    admin.ok(&["create", "serviceaccount", name]);
    admin.ok(&[
        "create",
        "rolebinding",
        name,
        "--clusterrole=edit",
        &format!("--serviceaccount=default:{name}"),
    ]);
    admin.wait_for(
        &[
            "auth",
            "can-i",
            "create",
            "configmaps",
            &format!("--as=system:serviceaccount:default:{name}"),
        ],
        30,
        |out| out.trim() == "yes",
    );
    admin.ok(&["create", "token", name])
}

/// A webhook that holds creates of ConfigMaps named `flood-*` for `hold`.
fn slow_webhook(hold: Duration) -> Webhook {
    Webhook::start(move |_, review| {
        if review["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("flood-"))
        {
            std::thread::sleep(hold);
        }
        Answer::Allow {
            patch: None,
            warnings: vec![],
        }
    })
}

const FLOOD_LEVEL: &str = "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: flood-level}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    borrowingLimitPercent: 0
    limitResponse:
      type: Queue
      queuing: {queues: 1, handSize: 1, queueLengthLimit: 2}
";

const FLOOD_SCHEMA: &str = "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: flood}
spec:
  priorityLevelConfiguration: {name: flood-level}
  matchingPrecedence: 500
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount: {namespace: default, name: flood}
    resourceRules:
    - verbs: [\"*\"]
      apiGroups: [\"*\"]
      resources: [\"*\"]
      namespaces: [\"*\"]
      clusterScope: true
";

#[test]
fn a_flood_from_a_small_priority_level_is_queued_and_refused_while_others_are_served() {
    let webhook = slow_webhook(Duration::from_secs(4));
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    let port = server.port();
    admin.apply(
        server.dir.path(),
        "slow-webhook.yaml",
        &webhook.validating_configmap_creates("slow"),
    );
    let flood = editor(&admin, "flood");
    let calm = editor(&admin, "calm");

    // The bootstrap configuration, as upstream's.
    let levels = admin.ok(&["get", "prioritylevelconfigurations"]);
    for name in ["exempt", "catch-all", "workload-low", "global-default"] {
        assert!(levels.contains(name), "{levels}");
    }
    // A FlowSchema whose level does not exist yet is dangling ...
    admin.apply(server.dir.path(), "flood-schema.yaml", FLOOD_SCHEMA);
    admin.wait_for(&["get", "flowschema", "flood"], 20, |out| {
        out.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("True"))
    });
    // ... and with it, it takes effect.
    admin.apply(server.dir.path(), "flood-level.yaml", FLOOD_LEVEL);
    admin.wait_for(&["get", "flowschema", "flood"], 20, |out| {
        out.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("False"))
    });
    let schema_uid = admin.ok(&[
        "get",
        "flowschema",
        "flood",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let level_uid = admin.ok(&[
        "get",
        "prioritylevelconfiguration",
        "flood-level",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    // The level has 3 seats (1 of the 246 shares of 600, ceiled; no
    // borrowing) and one queue of 2.
    let reply = call_as(
        port,
        &flood,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
    );
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(
        reply.header("x-kubernetes-pf-flowschema-uid"),
        Some(schema_uid.as_str())
    );
    assert_eq!(
        reply.header("x-kubernetes-pf-prioritylevel-uid"),
        Some(level_uid.as_str())
    );

    // Ten creates at once: three run (held 4 s by the webhook), two wait
    // in the queue, the rest are refused.
    let flooders: Vec<_> = (0..10)
        .map(|i| {
            let flood = flood.clone();
            std::thread::spawn(move || create_as(port, &flood, &format!("flood-{i}")))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // Meanwhile another service account and the admin are served at once.
    let started = Instant::now();
    let reply = call_as(
        port,
        &calm,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
    );
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_ne!(
        reply.header("x-kubernetes-pf-flowschema-uid"),
        Some(schema_uid.as_str())
    );
    admin.ok(&["get", "configmaps"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The dumps show the flood: three running, two waiting, in its level.
    let levels = admin.ok(&[
        "get",
        "--raw",
        "/debug/api_priority_and_fairness/dump_priority_levels",
    ]);
    let row: Vec<String> = levels
        .lines()
        .find(|l| l.starts_with("flood-level,"))
        .expect("flood-level row")
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    assert_eq!((row[4].as_str(), row[5].as_str()), ("2", "3"), "{levels}");
    let queues = admin.ok(&[
        "get",
        "--raw",
        "/debug/api_priority_and_fairness/dump_queues",
    ]);
    assert!(
        queues
            .lines()
            .any(|l| l.starts_with("flood-level,")
                && l.split(',').nth(2).map(str::trim) == Some("2")),
        "{queues}"
    );
    let requests = admin.ok(&[
        "get",
        "--raw",
        "/debug/api_priority_and_fairness/dump_requests?includeRequestDetails=1",
    ]);
    let flood_rows: Vec<&str> = requests
        .lines()
        .filter(|l| l.starts_with("flood-level,"))
        .collect();
    assert_eq!(flood_rows.len(), 5, "{requests}");
    for row in flood_rows {
        let cells: Vec<&str> = row.split(',').map(str::trim).collect();
        assert_eq!(cells[1], "flood");
        // One queue: no flow distinguisher is computed (as upstream).
        assert_eq!(cells[4], "");
        assert_eq!(cells[10], "system:serviceaccount:default:flood");
        assert_eq!(cells[11], "create");
    }

    let during = common::metrics::parse(&admin.ok(&["get", "--raw", "/metrics"]));
    assert_eq!(
        common::metrics::sum(
            &during,
            "apiserver_flowcontrol_current_inqueue_requests",
            "apiserver_flowcontrol_current_inqueue_requests",
            &[("priority_level", "flood-level"), ("flow_schema", "flood")]
        ),
        2.0
    );

    let replies: Vec<Reply> = flooders
        .into_iter()
        .map(|t| t.join().expect("flooder"))
        .collect();
    let created = replies.iter().filter(|r| r.code == 201).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.code == 429).collect();
    assert_eq!(
        (created, refused.len()),
        (5, 5),
        "{:?}",
        replies.iter().map(|r| r.code).collect::<Vec<_>>()
    );
    for r in &refused {
        assert!(
            r.header("retry-after")
                .is_some_and(|s| s.parse::<u32>().is_ok_and(|n| (1..=32).contains(&n)))
        );
        assert_eq!(
            r.header("x-kubernetes-pf-flowschema-uid"),
            Some(schema_uid.as_str())
        );
        assert_eq!(
            r.header("x-kubernetes-pf-prioritylevel-uid"),
            Some(level_uid.as_str())
        );
        let status: serde_json::Value = serde_json::from_str(&r.body).expect("a Status");
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(
            status["message"],
            "Too many requests, please try again later."
        );
    }

    // The metrics moved.
    let families = common::metrics::parse(&admin.ok(&["get", "--raw", "/metrics"]));
    let flow = [("priority_level", "flood-level"), ("flow_schema", "flood")];
    let sum = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        common::metrics::sum(&families, family, sample, labels)
    };
    assert_eq!(
        sum(
            "apiserver_flowcontrol_rejected_requests",
            "apiserver_flowcontrol_rejected_requests_total",
            &[flow[0], flow[1], ("reason", "queue-full")]
        ),
        5.0
    );
    assert!(
        sum(
            "apiserver_flowcontrol_dispatched_requests",
            "apiserver_flowcontrol_dispatched_requests_total",
            &flow
        ) >= 4.0
    );
    assert!(
        sum(
            "apiserver_flowcontrol_request_wait_duration_seconds",
            "apiserver_flowcontrol_request_wait_duration_seconds_sum",
            &flow
        ) >= 3.0,
        "the queued creates waited for the running one"
    );
    assert_eq!(
        sum(
            "apiserver_flowcontrol_current_inqueue_requests",
            "apiserver_flowcontrol_current_inqueue_requests",
            &flow
        ),
        0.0
    );
    assert_eq!(
        sum(
            "apiserver_flowcontrol_nominal_limit_seats",
            "apiserver_flowcontrol_nominal_limit_seats",
            &[flow[0]]
        ),
        3.0
    );
    assert!(
        sum(
            "apiserver_flowcontrol_request_execution_seconds",
            "apiserver_flowcontrol_request_execution_seconds_count",
            &flow
        ) >= 4.0
    );
    for family in [
        "apiserver_flowcontrol_current_executing_requests",
        "apiserver_flowcontrol_current_executing_seats",
        "apiserver_flowcontrol_current_limit_seats",
        "apiserver_flowcontrol_priority_level_seat_utilization",
        "apiserver_flowcontrol_demand_seats",
    ] {
        assert!(families.contains_key(family), "{family} missing");
    }
}

#[test]
fn without_priority_and_fairness_requests_over_the_in_flight_limit_get_429() {
    // A webhook that takes 3 s keeps a create in flight, and says when.
    let holding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let webhook = {
        let holding = holding.clone();
        Webhook::start(move |_, review| {
            if review["name"] == "flood-first" {
                holding.store(true, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(3));
            }
            Answer::Allow {
                patch: None,
                warnings: vec![],
            }
        })
    };
    let server = Server::start_with(&[
        "--enable-priority-and-fairness=false",
        "--max-mutating-requests-inflight",
        "1",
    ]);
    let admin = server.kubectl("kubectl");
    admin.apply(
        server.dir.path(),
        "slow-webhook.yaml",
        &webhook.validating_configmap_creates("slow"),
    );
    let token = editor(&admin, "flood");
    let port = server.port();

    // One create holds the only mutating slot in the webhook (retried, as
    // client-go would, while a controller's write holds it) ...
    let holder = {
        let token = token.clone();
        std::thread::spawn(move || {
            let mut reply = create_as(port, &token, "flood-first");
            for _ in 0..10 {
                if reply.code != 429 {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
                reply = create_as(port, &token, "flood-first");
            }
            reply
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !holding.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the webhook never saw the create"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... so the next one is refused at once, as upstream's filter does.
    let second = create_as(port, &token, "second");
    assert_eq!(second.code, 429, "{}", second.body);
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(second.header("x-kubernetes-pf-flowschema-uid"), None);
    let status: serde_json::Value = serde_json::from_str(&second.body).expect("a Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(
        status["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // Without APF there is nothing to dump.
    let dump = admin.fails(&[
        "get",
        "--raw",
        "/debug/api_priority_and_fairness/dump_priority_levels",
    ]);
    assert!(dump.contains("NotFound"), "{dump}");
    // Reads have their own slots; the admin (system:masters) is never limited.
    admin.ok(&["get", "configmaps"]);
    admin.ok(&["create", "configmap", "by-admin"]);
    assert_eq!(holder.join().expect("holder").code, 201);
    // With the slot free again the service account's create goes through,
    // retried after `Retry-After` as client-go does (the controllers' own
    // writes share the single slot).
    let mut third = 0;
    for _ in 0..10 {
        third = create_as(port, &token, "third").code;
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
