//! The three datastores side by side (issue 18), straight on kelp's store
//! (no HTTP), each fresh: the embedded SQLite (a file in a temp dir), a
//! real PostgreSQL and a real single-member etcd on loopback (Debian's
//! packages, as the tests run them). For each:
//! 1. creates/s with 16 concurrent clients (`KELP_BENCH_CREATES`, 20,000
//!    1 KB values);
//! 2. GET p50/p99 (2,000 random keys, 16 concurrent) and LIST p50/p99 of a
//!    500-object prefix (200 lists, 4 concurrent);
//! 3. watch latency: from a write's acknowledgement to its event on a
//!    watch opened before (1,000 sequential updates), p50/p99.
//!
//! Run: `cargo bench --bench datastores`. Figures go to docs/PERFORMANCE.md by hand.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kelp::store::Store;

const CLIENTS: usize = 16;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    )
}

async fn measure(name: &str, store: Arc<dyn Store>) {
    let creates: usize = std::env::var("KELP_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let value = vec![b'x'; 1024];
    // 1. creates with 16 clients.
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (store, value) = (store.clone(), value.clone());
        clients.spawn(async move {
            for i in (c..creates).step_by(CLIENTS) {
                store
                    .create(&format!("/registry/bench/objects/o{i:06}"), value.clone())
                    .await
                    .expect("create");
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let rate = creates as f64 / started.elapsed().as_secs_f64();

    // 2. GETs (16 concurrent) and LISTs of a 500-object prefix (4 concurrent).
    for i in 0..500 {
        store
            .create(&format!("/registry/bench/list/l{i:04}"), value.clone())
            .await
            .expect("create");
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        clients.spawn(async move {
            let mut samples = Vec::new();
            for i in 0..(2_000 / CLIENTS) {
                let key = format!(
                    "/registry/bench/objects/o{:06}",
                    (i * 7919 + c * 104_729) % creates
                );
                let t = Instant::now();
                store.get(&key).await.expect("get").expect("present");
                samples.push(t.elapsed());
            }
            samples
        });
    }
    let mut gets = Vec::new();
    while let Some(done) = clients.join_next().await {
        gets.extend(done.expect("client"));
    }
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        clients.spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..50 {
                let t = Instant::now();
                let page = store
                    .list("/registry/bench/list/", None, 0)
                    .await
                    .expect("list");
                assert_eq!(page.items.len(), 500);
                samples.push(t.elapsed());
            }
            samples
        });
    }
    let mut lists = Vec::new();
    while let Some(done) = clients.join_next().await {
        lists.extend(done.expect("client"));
    }

    // 3. Watch latency.
    let key = "/registry/bench/watched/w";
    let mut rev = store.create(key, value.clone()).await.expect("create");
    let mut watch = store
        .watch("/registry/bench/watched/", rev)
        .await
        .expect("watch");
    let mut latencies = Vec::new();
    for _ in 0..1_000 {
        rev = store.update(key, value.clone(), rev).await.expect("update");
        let acknowledged = Instant::now();
        loop {
            let event = watch.next().await.expect("watching").expect("event");
            if event.kv.mod_revision == rev {
                break;
            }
        }
        latencies.push(acknowledged.elapsed());
    }
    println!(
        "{name}: {rate:.0} creates/s with {CLIENTS} clients; GET {}; LIST of 500 {}; watch {}",
        summary(gets),
        summary(lists),
        summary(latencies)
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        kelp::store::sqlite::SqliteStore::open(&dir.path().join("state.db")).expect("open");
    measure("sqlite", Arc::new(sqlite)).await;

    let postgres = common::datastores::Postgres::start_with_fsync(true);
    let store = kelp::store::postgres::PostgresStore::connect(&postgres.url("kelp"), None)
        .await
        .expect("connect");
    measure("postgres", Arc::new(store)).await;

    let etcd = common::datastores::Etcd::start(1);
    let store = kelp::store::etcd::EtcdStore::connect(
        &[etcd.client_url(0)],
        &kelp::store::TlsFiles::default(),
    )
    .await
    .expect("connect");
    measure("etcd", Arc::new(store)).await;
}
