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
//! etcd is measured twice: raw, and as the server uses it, through
//! kube-apiserver's layout (upstream keys, each 1 KB ConfigMap encoded to
//! protobuf on the way in and decoded to JSON on the way out).
//!
//! Also the layout's codec alone (JSON to protobuf and back, per object).
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

/// What is stored: opaque bytes under kelp's keys, or ConfigMaps.
#[derive(Clone, Copy)]
enum Values {
    Opaque,
    ConfigMaps,
}

impl Values {
    /// The key of object `name` in range `range`.
    fn key(self, range: &str, name: &str) -> String {
        match self {
            Values::Opaque => format!("/registry/bench/{range}/{name}"),
            Values::ConfigMaps => format!("/registry/core/configmaps/{range}/{name}"),
        }
    }

    /// A 1 KB value, different for each `i`.
    fn value(self, i: usize) -> Vec<u8> {
        let padding = "x".repeat(900);
        match self {
            Values::Opaque => format!("{i:08}{padding}").into_bytes(),
            Values::ConfigMaps => serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("o{i}"), "namespace": "bench",
                    "uid": "6c1b2e1e-0b7c-4a39-9d0e-3d1c1f1a2b3c",
                    "creationTimestamp": "2026-12-06T12:00:00Z", "labels": {"app": "bench"}},
                "data": {"i": i.to_string(), "padding": padding}
            }))
            .expect("json"),
        }
    }
}

async fn measure(name: &str, store: Arc<dyn Store>, values: Values) {
    let creates: usize = std::env::var("KELP_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // 1. creates with 16 clients.
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        clients.spawn(async move {
            for i in (c..creates).step_by(CLIENTS) {
                store
                    .create(&values.key("objects", &format!("o{i:06}")), values.value(i))
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
            .create(&values.key("list", &format!("l{i:04}")), values.value(i))
            .await
            .expect("create");
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        clients.spawn(async move {
            let mut samples = Vec::new();
            for i in 0..(2_000 / CLIENTS) {
                let key = values.key(
                    "objects",
                    &format!("o{:06}", (i * 7919 + c * 104_729) % creates),
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
                    .list(&values.key("list", ""), None, 0)
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
    let key = values.key("watched", "w");
    let mut rev = store.create(&key, values.value(0)).await.expect("create");
    let mut watch = store
        .watch(&values.key("watched", ""), rev)
        .await
        .expect("watch");
    let mut latencies = Vec::new();
    for i in 1..=1_000 {
        // Each value differs: etcd writes nothing for the bytes it holds.
        rev = store
            .update(&key, values.value(i), rev)
            .await
            .expect("update");
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

/// What the upstream layout adds per object: encoding a 1 KB ConfigMap to
/// protobuf, and decoding it back to JSON bytes, in µs.
fn codec() {
    use kelp::api::codec::protobuf;
    const N: u32 = 20_000;
    let json = Values::ConfigMaps.value(7);
    let started = Instant::now();
    let mut encoded = Vec::new();
    for _ in 0..N {
        let object: serde_json::Value = serde_json::from_slice(&json).expect("json");
        encoded = protobuf::encode(&object).expect("encode");
    }
    let encode = started.elapsed() / N;
    let started = Instant::now();
    for _ in 0..N {
        let object = protobuf::decode(&encoded).expect("decode");
        std::hint::black_box(serde_json::to_vec(&object).expect("json"));
    }
    let decode = started.elapsed() / N;
    println!(
        "upstream layout codec: JSON to protobuf {:.1} µs, protobuf to JSON {:.1} µs per 1 KB ConfigMap",
        encode.as_secs_f64() * 1e6,
        decode.as_secs_f64() * 1e6
    );
}

#[tokio::main]
async fn main() {
    codec();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        kelp::store::sqlite::SqliteStore::open(&dir.path().join("state.db")).expect("open");
    measure("sqlite", Arc::new(sqlite), Values::Opaque).await;

    let postgres = common::datastores::Postgres::start_with_fsync(true);
    let store = kelp::store::postgres::PostgresStore::connect(&postgres.url("kelp"), None)
        .await
        .expect("connect");
    measure("postgres", Arc::new(store), Values::Opaque).await;

    let etcd = common::datastores::Etcd::start(1);
    measure("etcd", Arc::new(etcd_store(&etcd).await), Values::Opaque).await;

    let etcd = common::datastores::Etcd::start(1);
    let layout = kelp::apiserver::etcd_layout::EtcdLayout::new(
        Arc::new(etcd_store(&etcd).await),
        &kelp::api::registry::resources::Registry::new(),
    );
    measure(
        "etcd, upstream layout",
        Arc::new(layout),
        Values::ConfigMaps,
    )
    .await;
}

async fn etcd_store(etcd: &common::datastores::Etcd) -> kelp::store::etcd::EtcdStore {
    kelp::store::etcd::EtcdStore::connect(&[etcd.client_url(0)], &kelp::store::TlsFiles::default())
        .await
        .expect("connect")
}
