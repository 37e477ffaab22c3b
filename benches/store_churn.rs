//! Store churn (issue 19): does the SQLite file stay bounded, and does
//! compaction stall requests? Straight on kelp's store (no HTTP), with 16
//! concurrent writers as an API server's requests would be:
//! 1. objects: `KELP_BENCH_OBJECTS` (100,000) 1 KB values created, each
//!    updated once, each deleted;
//! 2. events: `KELP_BENCH_EVENTS` (1,000,000) 500-byte Events created over
//!    simulated days, each deleted an "hour" (`KELP_BENCH_EVENT_WINDOW`,
//!    10,000 events) after it was made, as the API server's event TTL does;
//!
//! meanwhile the history is compacted as `kelp server` does under load (to 10,000
//! revisions behind, here every 20,000 writes). Prints the file's size
//! (database + WAL) against the live data, write latency percentiles overall
//! and for writes that overlapped a compaction, the compactions' lengths,
//! and the file once the store has closed (freed space given back).
//!
//! Run: `cargo bench --bench store_churn`. Figures go to docs/PERFORMANCE.md by hand.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kelp::store::Store;
use kelp::store::sqlite::SqliteStore;

const WRITERS: usize = 16;
/// As `kelp server` keeps them under load.
const RETAINED: i64 = kelp::store::compaction::RETAINED_REVISIONS;
const COMPACT_EVERY: u64 = 20_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn file_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

/// Latencies of writes, and whether each overlapped a compaction.
#[derive(Default)]
struct Latencies {
    all: Vec<Duration>,
    during_compaction: Vec<Duration>,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

struct Churn {
    store: Arc<SqliteStore>,
    writes: AtomicU64,
    compacting: AtomicBool,
    compactions: std::sync::Mutex<Vec<Duration>>,
}

impl Churn {
    /// One write, timed; compacts when its turn comes.
    async fn write(&self, op: impl std::future::Future<Output = ()>, lat: &mut Latencies) {
        let overlapped = self.compacting.load(Ordering::SeqCst);
        let started = Instant::now();
        op.await;
        let took = started.elapsed();
        lat.all.push(took);
        if overlapped || self.compacting.load(Ordering::SeqCst) {
            lat.during_compaction.push(took);
        }
        if self.writes.fetch_add(1, Ordering::SeqCst) % COMPACT_EVERY == COMPACT_EVERY - 1 {
            let current = self.store.current_revision().await.expect("revision");
            self.compacting.store(true, Ordering::SeqCst);
            let started = Instant::now();
            self.store
                .compact(current - RETAINED)
                .await
                .expect("compact");
            self.compactions
                .lock()
                .expect("lock")
                .push(started.elapsed());
            self.compacting.store(false, Ordering::SeqCst);
        }
    }
}

/// Runs `count` items split over the writers; `f(churn, index, latencies)`.
async fn parallel<F, Fut>(churn: &Arc<Churn>, count: u64, f: F) -> Latencies
where
    F: Fn(Arc<Churn>, u64, Latencies) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Latencies> + Send,
{
    let mut tasks = Vec::new();
    for w in 0..WRITERS as u64 {
        let churn = churn.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut i = w;
            while i < count {
                lat = f(churn.clone(), i, lat).await;
                i += WRITERS as u64;
            }
            lat
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        let lat = t.await.expect("writer");
        all.all.extend(lat.all);
        all.during_compaction.extend(lat.during_compaction);
    }
    all
}

async fn live_bytes(store: &SqliteStore) -> (usize, u64) {
    let page = store.list("/registry/", None, 0).await.expect("list");
    let bytes = page
        .items
        .iter()
        .map(|kv| (kv.key.len() + kv.value.len()) as u64)
        .sum();
    (page.items.len(), bytes)
}

fn report(phase: &str, db: &Path, live: (usize, u64), mut lat: Latencies, seconds: f64) {
    lat.all.sort();
    lat.during_compaction.sort();
    println!(
        "{phase}: {} writes in {seconds:.0} s ({:.0}/s)",
        lat.all.len(),
        lat.all.len() as f64 / seconds
    );
    println!(
        "  file {:.1} MB (database + WAL) for {} live keys of {:.1} MB",
        file_size(db) as f64 / 1e6,
        live.0,
        live.1 as f64 / 1e6
    );
    println!(
        "  write latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; during compactions ({} writes) p99 {:.2} ms, max {:.1} ms",
        percentile(&lat.all, 0.5),
        percentile(&lat.all, 0.99),
        percentile(&lat.all, 1.0),
        lat.during_compaction.len(),
        percentile(&lat.during_compaction, 0.99),
        percentile(&lat.during_compaction, 1.0),
    );
}

#[tokio::main]
async fn main() {
    let objects = env("KELP_BENCH_OBJECTS", 100_000);
    let events = env("KELP_BENCH_EVENTS", 1_000_000);
    let window = env("KELP_BENCH_EVENT_WINDOW", 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let churn = Arc::new(Churn {
        store: Arc::new(SqliteStore::open(&db).expect("open")),
        writes: AtomicU64::new(0),
        compacting: AtomicBool::new(false),
        compactions: Default::default(),
    });
    let object = vec![b'o'; 1000];
    let event = vec![b'e'; 500];

    // 1. objects: create, update, delete.
    let started = Instant::now();
    let mut lat = Latencies::default();
    for step in ["create", "update", "delete"] {
        let value = object.clone();
        let more = parallel(&churn, objects, move |c, i, mut lat| {
            let value = value.clone();
            async move {
                let key = format!("/registry/configmaps/churn/o{i}");
                let store = c.store.clone();
                let op = async move {
                    match step {
                        "create" => {
                            store.create(&key, value).await.expect("create");
                        }
                        "update" => {
                            let kv = store.get(&key).await.expect("get").expect("exists");
                            store
                                .update(&key, value, kv.mod_revision)
                                .await
                                .expect("update");
                        }
                        _ => {
                            store.delete(&key, None).await.expect("delete");
                        }
                    }
                };
                c.write(op, &mut lat).await;
                lat
            }
        })
        .await;
        if step == "create" {
            report(
                "objects created",
                &db,
                live_bytes(&churn.store).await,
                Latencies::default(),
                started.elapsed().as_secs_f64(),
            );
        }
        lat.all.extend(more.all);
        lat.during_compaction.extend(more.during_compaction);
    }
    report(
        &format!("objects: {objects} created, updated, deleted"),
        &db,
        live_bytes(&churn.store).await,
        lat,
        started.elapsed().as_secs_f64(),
    );

    // 2. events with a TTL: event i is deleted when event i + window is made.
    let started = Instant::now();
    let lat = parallel(&churn, events + window, move |c, i, mut lat| {
        let value = event.clone();
        async move {
            let store = c.store.clone();
            if i < events {
                let key = format!("/registry/events/churn/e{i}");
                let store = store.clone();
                c.write(
                    async move {
                        store.create(&key, value).await.expect("create event");
                    },
                    &mut lat,
                )
                .await;
            }
            if i >= window {
                let key = format!("/registry/events/churn/e{}", i - window);
                c.write(
                    async move {
                        // The writer that made it may not have yet: retry.
                        while store.delete(&key, None).await.is_err() {
                            tokio::task::yield_now().await;
                        }
                    },
                    &mut lat,
                )
                .await;
            }
            lat
        }
    })
    .await;
    report(
        &format!("events: {events} made and expired (window {window})"),
        &db,
        live_bytes(&churn.store).await,
        lat,
        started.elapsed().as_secs_f64(),
    );
    // Freed space goes back when the store is quiet (10 minutes) or closes.
    let live = live_bytes(&churn.store).await;
    let compactions_taken = churn.compactions.lock().expect("lock").clone();
    let store = Arc::try_unwrap(churn)
        .ok()
        .and_then(|churn| Arc::try_unwrap(churn.store).ok())
        .expect("the writers are done: the store is the bench's alone");
    store.close();
    let size = file_size(&db);
    println!(
        "closed: file {:.1} MB for {} live keys of {:.1} MB",
        size as f64 / 1e6,
        live.0,
        live.1 as f64 / 1e6
    );
    let mut compactions = compactions_taken;
    compactions.sort();
    println!(
        "compactions: {} (to {RETAINED} revisions behind, every {COMPACT_EVERY} writes): p50 {:.1} ms, max {:.1} ms",
        compactions.len(),
        percentile(&compactions, 0.5),
        percentile(&compactions, 1.0)
    );
}
