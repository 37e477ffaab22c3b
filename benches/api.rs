//! API server benchmark: starts `kelp server --disable-agent` (the release
//! binary when run by `cargo bench`) through the tests' `common::Server` and prints
//! creates/s (sequential and 16 clients), GET and LIST latency with 10,000
//! ConfigMaps stored, watch delivery latency with 100 watchers, idle RSS and
//! time to /readyz. Figures go to docs/PERFORMANCE.md by hand.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::Server;
use support::{Client, ms, percentile, rss_kib, tls_connector};

const OBJECTS: usize = 10_000;
const CLIENTS: usize = 16;
const WATCHERS: usize = 100;

fn configmap(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"bench":"yes"}}}},"data":{{"key":"value-{name}"}}}}"#
    )
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let server = Server::start();
    let ready = started.elapsed();
    println!("time from start to /readyz ok: {}", ms(ready));
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "idle RSS of kelp server --disable-agent: {:.1} MiB",
        rss_kib(server.pid()) as f64 / 1024.0
    );
    let tls = tls_connector(&server);

    // Sequential creates.
    let mut client = Client::connect(&tls, server.port).await;
    let sequential = 1000;
    let t = Instant::now();
    for i in 0..sequential {
        let (status, _) = client
            .request("POST", CMS, Some(configmap(&format!("seq-{i}"))))
            .await;
        assert_eq!(status, 201);
    }
    let rate = sequential as f64 / t.elapsed().as_secs_f64();
    println!("creates/s, 1 client: {rate:.0}");

    // 16 concurrent clients up to OBJECTS stored.
    let per_client = (OBJECTS - sequential) / CLIENTS;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let tls = tls.clone();
        let port = server.port;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&tls, port).await;
            for i in 0..per_client {
                let (status, _) = client
                    .request("POST", CMS, Some(configmap(&format!("par-{c}-{i}"))))
                    .await;
                assert_eq!(status, 201);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let rate = (per_client * CLIENTS) as f64 / t.elapsed().as_secs_f64();
    println!("creates/s, {CLIENTS} clients: {rate:.0}");
    println!(
        "RSS with {OBJECTS} ConfigMaps stored: {:.1} MiB",
        rss_kib(server.pid()) as f64 / 1024.0
    );

    // GET latency with OBJECTS stored.
    let mut samples = Vec::new();
    for i in 0..2000 {
        let path = format!("{CMS}/par-{}-{}", i % CLIENTS, i % per_client);
        let t = Instant::now();
        let (status, _) = client.request("GET", &path, None).await;
        samples.push(t.elapsed());
        assert_eq!(status, 200);
    }
    samples.sort();
    println!(
        "GET latency ({OBJECTS} ConfigMaps stored): p50 {} p99 {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );

    // LIST latency: a kubectl-sized page (limit=500), and the whole namespace.
    for (label, path, rounds) in [
        ("LIST limit=500", format!("{CMS}?limit=500"), 200),
        ("LIST all", CMS.to_string(), 20),
    ] {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, body) = client.request("GET", &path, None).await;
            samples.push(t.elapsed());
            assert!(status == 200 && body.len() > 1000);
        }
        samples.sort();
        println!(
            "{label} latency ({OBJECTS} stored): p50 {} p99 {}",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99))
        );
        println!(
            "RSS after {label}: {:.1} MiB",
            rss_kib(server.pid()) as f64 / 1024.0
        );
    }

    // mimalloc gives memory back after a short delay; report the settled figure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "RSS 5 s after the LISTs: {:.1} MiB",
        rss_kib(server.pid()) as f64 / 1024.0
    );

    // Watch delivery latency: WATCHERS watches, then creates; time from the
    // create's acknowledgement to each watcher reading the event.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (_, body) = client.request("GET", &format!("{CMS}?limit=1"), None).await;
    let list: serde_json::Value = serde_json::from_slice(&body).expect("list");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    for _ in 0..WATCHERS {
        let tls = tls.clone();
        let port = server.port;
        let tx = tx.clone();
        let rv = rv.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(&tls, port).await;
            let req = hyper::Request::builder()
                .uri(format!(
                    "{CMS}?watch=true&resourceVersion={rv}&labelSelector=watch%3Dyes"
                ))
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .expect("watch request");
            let mut body = client
                .sender
                .send_request(req)
                .await
                .expect("watch")
                .into_body();
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                // The server going away at the end of the run ends the watch.
                let Ok(frame) = frame else { return };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = Instant::now();
                pending.extend_from_slice(&data);
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let event: serde_json::Value = serde_json::from_slice(&line).expect("event");
                    let name = event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send((name, now));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut samples = Vec::new();
    println!(
        "RSS with {WATCHERS} watches open: {:.1} MiB",
        rss_kib(server.pid()) as f64 / 1024.0
    );
    for i in 0..50 {
        let name = format!("watched-{i}");
        let body = configmap(&name).replace(r#""bench":"yes""#, r#""watch":"yes""#);
        let sent = Instant::now();
        let (status, _) = client.request("POST", CMS, Some(body)).await;
        assert_eq!(status, 201);
        let mut seen = 0;
        while seen < WATCHERS {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("event in time")
                .expect("event");
            if got == name {
                samples.push(at.saturating_duration_since(sent));
                seen += 1;
            }
        }
    }
    samples.sort();
    println!(
        "watch delivery latency ({WATCHERS} watchers, from sending the create): p50 {} p99 {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
    println!(
        "RSS after the run: {:.1} MiB",
        rss_kib(server.pid()) as f64 / 1024.0
    );
}
