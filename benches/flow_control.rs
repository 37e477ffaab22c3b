//! API Priority and Fairness benchmark. Prints:
//! - the cost of APF's admission of one request (classify against the 13
//!   bootstrap FlowSchemas, estimate, take and give back seats) in process;
//! - per mode (APF off, APF on with the bootstrap configuration, APF on
//!   with the noisy client's service account sent to a small level by a
//!   FlowSchema): a non-exempt user's GET p50/p99 alone, then the admin's
//!   GET p50/p99 while 32 connections of a noisy service account LIST 1,000
//!   ConfigMaps as fast as they can (1 s pause after a 429, the shortest
//!   `Retry-After`), with the flood's throughput and 429s.
//!
//! `kelp server --disable-agent` on loopback; figures go to
//! docs/PERFORMANCE.md by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::Server;
use kelp::apiserver::authn::User;
use kelp::apiserver::flowcontrol::{PriorityAndFairness, classify::Digest};
use kelp::apiserver::request::RequestInfo;
use kelp::store::Store;
use support::{Client, ms, percentile, tls_connector, tls_connector_without_certificate};

const OBJECTS: usize = 1000;
const FLOODERS: usize = 32;
const SAMPLES: usize = 1000;

const SMALL_LEVEL: &str = "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: noisy}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    borrowingLimitPercent: 0
    limitResponse:
      type: Queue
      queuing: {queues: 1, handSize: 1, queueLengthLimit: 16}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: noisy}
spec:
  priorityLevelConfiguration: {name: noisy}
  matchingPrecedence: 500
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount: {namespace: default, name: noisy}
    resourceRules:
    - {verbs: [\"*\"], apiGroups: [\"*\"], resources: [\"*\"], namespaces: [\"*\"], clusterScope: true}
";

/// Admission cost in process: `admit` and drop of a ticket, per request.
async fn admission_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        kelp::store::sqlite::SqliteStore::open(&dir.path().join("state.db")).expect("store"),
    );
    use kelp::api::registry::strategy::flowcontrol as boot;
    for (resource, objects) in [
        (
            "prioritylevelconfigurations",
            boot::suggested_priority_levels(),
        ),
        (
            "prioritylevelconfigurations",
            boot::mandatory_priority_levels(),
        ),
        ("flowschemas", boot::suggested_flow_schemas()),
        ("flowschemas", boot::mandatory_flow_schemas()),
    ] {
        for obj in objects {
            let key = format!(
                "/registry/flowcontrol.apiserver.k8s.io/{resource}/{}",
                obj["metadata"]["name"].as_str().expect("name")
            );
            store
                .create(&key, serde_json::to_vec(&obj).expect("json"))
                .await
                .expect("create");
        }
    }
    let metrics = kelp::telemetry::Metrics::new();
    let apf = PriorityAndFairness::start(store, 600, &metrics)
        .await
        .expect("apf");
    for (label, user, uri) in [
        (
            "service account GET (service-accounts, 9000th)",
            User::service_account("default", "app"),
            "/api/v1/namespaces/default/configmaps/x",
        ),
        (
            "admin GET (exempt, 1st)",
            User {
                name: "admin".into(),
                groups: vec!["system:masters".into()],
            },
            "/api/v1/namespaces/default/configmaps/x",
        ),
    ] {
        let info = Arc::new(RequestInfo::new(
            &axum::http::Method::GET,
            &uri.parse().expect("uri"),
        ));
        let rounds = 200_000;
        let started = Instant::now();
        for _ in 0..rounds {
            let ticket = apf
                .admit(Digest {
                    user: &user,
                    info: &info,
                })
                .await
                .expect("admitted");
            drop(ticket);
        }
        let each = started.elapsed() / rounds;
        println!(
            "APF admission, {label:<46} {:>6} ns/request",
            each.as_nanos()
        );
    }
}

/// GET latencies of `samples` serial requests on one connection.
async fn gets(client: &mut Client, token: Option<&str>, samples: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        let (status, _) = client
            .request_with(
                "GET",
                &format!("/api/v1/namespaces/default/configmaps/cm-{}", i % OBJECTS),
                None,
                token,
            )
            .await;
        times.push(t.elapsed());
        assert_eq!(status, 200);
    }
    times.sort();
    times
}

async fn mode(label: &str, args: &[&str], small_level: bool) {
    let server = Server::start_with(args);
    let kubectl = server.kubectl("kubectl");
    let tls = tls_connector(&server);
    let mut admin = Client::connect(&tls, server.port()).await;
    for i in 0..OBJECTS {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},"data":{{"k":"v"}}}}"#
        );
        let (status, _) = admin
            .request("POST", "/api/v1/namespaces/default/configmaps", Some(body))
            .await;
        assert_eq!(status, 201);
    }
    for name in ["noisy", "calm"] {
        kubectl.ok(&["create", "serviceaccount", name]);
        kubectl.ok(&[
            "create",
            "rolebinding",
            name,
            "--clusterrole=view",
            &format!("--serviceaccount=default:{name}"),
        ]);
    }
    if small_level {
        kubectl.apply(server.dir.path(), "noisy.yaml", SMALL_LEVEL);
    }
    kubectl.wait_for(
        &[
            "auth",
            "can-i",
            "list",
            "configmaps",
            "--as=system:serviceaccount:default:noisy",
        ],
        30,
        |out| out.trim() == "yes",
    );
    let noisy = kubectl.ok(&["create", "token", "noisy"]).trim().to_string();
    let calm = kubectl.ok(&["create", "token", "calm"]).trim().to_string();
    // LIST widths come from the object counts taken each minute (as
    // upstream's): wait until the ConfigMaps are counted.
    kubectl.wait_for(&["get", "--raw", "/metrics"], 90, |out| {
        out.lines().any(|l| {
            l.starts_with("apiserver_storage_objects{resource=\"configmaps\"}")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(OBJECTS as f64)
        })
    });
    let plain = tls_connector_without_certificate(&server);
    let mut calm_client = Client::connect(&plain, server.port()).await;
    gets(&mut calm_client, Some(&calm), 200).await;
    let quiet = gets(&mut calm_client, Some(&calm), SAMPLES).await;
    let alone = gets(&mut admin, None, SAMPLES).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (served, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for _ in 0..FLOODERS {
        let mut client = Client::connect(&plain, server.port()).await;
        let (stop, served, refused, noisy) =
            (stop.clone(), served.clone(), refused.clone(), noisy.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = client
                    .request_with(
                        "GET",
                        "/api/v1/namespaces/default/configmaps",
                        None,
                        Some(&noisy),
                    )
                    .await;
                match status {
                    200 => served.fetch_add(1, Ordering::Relaxed),
                    // Backs off as client-go does, for the shortest advice (1 s).
                    429 => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("flood LIST answered {other}"),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (served_before, refused_before) = (
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let flooded = gets(&mut admin, None, SAMPLES).await;
    let seconds = started.elapsed().as_secs_f64();
    let lists = served.load(Ordering::Relaxed) - served_before;
    let rejections = refused.load(Ordering::Relaxed) - refused_before;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    println!("{label}");
    println!(
        "  service account GET, no flood   p50 {:>10}  p99 {:>10}",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99))
    );
    println!(
        "  admin GET, no flood             p50 {:>10}  p99 {:>10}",
        ms(percentile(&alone, 0.5)),
        ms(percentile(&alone, 0.99))
    );
    println!(
        "  admin GET, {FLOODERS} connections flood  p50 {:>10}  p99 {:>10}  ({:.1}× the p99 alone)  flood: {:.0} LIST/s served, {:.0}/s refused with 429",
        ms(percentile(&flooded, 0.5)),
        ms(percentile(&flooded, 0.99)),
        percentile(&flooded, 0.99).as_secs_f64() / percentile(&alone, 0.99).as_secs_f64(),
        lists as f64 / seconds,
        rejections as f64 / seconds,
    );
}

#[tokio::main]
async fn main() {
    admission_cost().await;
    // A first run settles the machine; not reported.
    mode(
        "(warm-up, not a figure)",
        &["--enable-priority-and-fairness=false"],
        false,
    )
    .await;
    mode(
        "APF off (--enable-priority-and-fairness=false, max-in-flight 400/200)",
        &["--enable-priority-and-fairness=false"],
        false,
    )
    .await;
    mode("APF on, bootstrap configuration", &[], false).await;
    mode(
        "APF on, the noisy service account's FlowSchema sends it to a 1-share level (3 seats)",
        &[],
        true,
    )
    .await;
}
