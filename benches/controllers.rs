//! Control-loop benchmark (`cargo bench --bench controllers`; root for the
//! second part), printing:
//! - scheduler throughput: 1,000 pending pods against 100 Ready Node objects
//!   with no kubelet behind them (API-only server). Nodes and pods are made
//!   with `--disable scheduler`; the clock runs from restarting the server
//!   with its scheduler until the last pod is bound (start-up included).
//! - scale-up on the real node: a Deployment of 1 scaled to 50 through the
//!   scale subresource, time until 50 pods are Running.
//!
//! Figures go to docs/PERFORMANCE.md by hand.

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{BUSYBOX, Server};
use support::{Client, tls_connector};

const NODES: usize = 100;
const PODS: usize = 1000;
const SCALE_TO: usize = 50;

fn node(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"fake-{i}","labels":{{"kubernetes.io/hostname":"fake-{i}"}}}}}}"#
    )
}

/// Ready, with a heartbeat now (the node lifecycle controller marks nodes
/// silent for 40 s as unreachable).
fn node_status() -> String {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("now")
        .to_string();
    format!(
        r#"{{"status":{{"capacity":{{"cpu":"8","memory":"16Gi","pods":"110"}},"allocatable":{{"cpu":"8","memory":"16Gi","pods":"110"}},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"fake","lastHeartbeatTime":"{now}","lastTransitionTime":"{now}"}}]}}}}"#
    )
}

fn pending_pod(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{i}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"c","image":"{BUSYBOX}","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}"#
    )
}

async fn patch(client: &mut Client, path: &str, body: String) {
    let req = hyper::Request::builder()
        .method("PATCH")
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/merge-patch+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    client.sender.ready().await.expect("ready");
    let response = client.sender.send_request(req).await.expect("send");
    assert!(
        response.status().is_success(),
        "PATCH {path}: {}",
        response.status()
    );
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
}

/// Items of a list.
async fn items(client: &mut Client, path: &str) -> Vec<serde_json::Value> {
    let (status, body) = client.request("GET", path, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list");
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn scheduler_throughput() {
    let mut server = Server::start_with(&["--disable", "scheduler"]);
    let tls = tls_connector(&server);
    let mut client = Client::connect(&tls, server.port).await;
    for i in 0..NODES {
        let (status, body) = client.request("POST", "/api/v1/nodes", Some(node(i))).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        patch(
            &mut client,
            &format!("/api/v1/nodes/fake-{i}/status"),
            node_status(),
        )
        .await;
    }
    for i in 0..PODS {
        let (status, body) = client
            .request(
                "POST",
                "/api/v1/namespaces/default/pods",
                Some(pending_pod(i)),
            )
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
    let unbound = "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D";
    assert_eq!(items(&mut client, unbound).await.len(), PODS);
    server.stop();
    server.args.clear();
    let started = Instant::now();
    server.spawn();
    let up = started.elapsed();
    let mut client = Client::connect(&tls, server.port).await;
    loop {
        let left = items(&mut client, unbound).await.len();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{left} pods still unbound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let spread = items(&mut client, "/api/v1/namespaces/default/pods").await;
    let mut per_node = std::collections::HashMap::new();
    for p in &spread {
        *per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    let (min, max) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    println!(
        "scheduler: {PODS} pods bound to {NODES} nodes {:.2} s after the server started ({:.0} bindings/s; API ready after {:.2} s); {min}-{max} pods per node",
        took.as_secs_f64(),
        PODS as f64 / took.as_secs_f64(),
        up.as_secs_f64(),
    );
}

async fn scale_up() {
    let server = Server::start_node(&[]);
    let tls = tls_connector(&server);
    let mut client = Client::connect(&tls, server.port).await;
    let deployment = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"scale"}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"scale"}}}},"template":{{"metadata":{{"labels":{{"app":"scale"}}}},"spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"{BUSYBOX}","command":["sleep","3600"]}}]}}}}}}}}"#
    );
    let (status, body) = client
        .request(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(deployment),
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let running = |pods: &[serde_json::Value]| {
        pods.iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count()
    };
    let list = "/api/v1/namespaces/default/pods?labelSelector=app%3Dscale";
    while running(&items(&mut client, list).await) < 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    patch(
        &mut client,
        "/apis/apps/v1/namespaces/default/deployments/scale/scale",
        format!(r#"{{"spec":{{"replicas":{SCALE_TO}}}}}"#),
    )
    .await;
    loop {
        if running(&items(&mut client, list).await) >= SCALE_TO {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "scale-up did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "scale-up: deployment 1 -> {SCALE_TO} replicas, {SCALE_TO} pods Running after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    scheduler_throughput().await;
    if nix::unistd::Uid::effective().is_root() {
        scale_up().await;
    } else {
        println!("scale-up: skipped (needs root for the node)");
    }
}
