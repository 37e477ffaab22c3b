//! Durability under `kill -9`, shared by the e2e test (a few kills) and
//! the benchmark (a hundred): one writer makes a mixed load of creates,
//! updates and deletes of ConfigMaps while the server is killed at random
//! moments and restarted; after each restart every acknowledged write must
//! be there. The one write in flight at a kill may land or not; either is
//! accepted, and what the server holds then becomes the ledger's truth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::Server;
use super::rng::Rng as Random;

/// What the loop saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// kill -9s survived.
    pub kills: usize,
    /// Writes the server acknowledged.
    pub acknowledged: u64,
    /// Writes in flight at a kill (outcome unknown, either accepted).
    pub in_doubt: u64,
    /// Objects checked after restarts, in all.
    pub checked: u64,
    /// Restart times (kill to ready), seconds.
    pub restarts: Vec<f64>,
}

/// An object's state: its value, or None when deleted.
type State = Option<String>;

#[derive(Default)]
struct Entry {
    acked: State,
    /// The state an unacknowledged write would have left.
    doubt: Option<State>,
}

#[derive(Default)]
struct Ledger {
    objects: BTreeMap<String, Entry>,
    next: u64,
}

/// An admin client of the server on `port` (inside a tokio runtime).
fn client(port: u16, (ca, cert, key): (Vec<u8>, Vec<u8>, Vec<u8>)) -> kube::Client {
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 PEM");
    super::client(port, &text(ca), &text(cert), &text(key))
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "data": {"v": value}
    }))
    .expect("configmap")
}

/// One write chosen from the ledger: (name, the state it leads to).
fn choose(ledger: &mut Ledger, random: &mut Random) -> (String, State) {
    let live: Vec<String> = ledger
        .objects
        .iter()
        .filter(|(_, e)| e.doubt.is_none() && e.acked.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    let pick = random.below(10);
    if live.len() < 20 || pick < 4 {
        ledger.next += 1;
        return (format!("durable-{}", ledger.next), Some("0".into()));
    }
    let name = live[random.below(live.len())].clone();
    if pick < 8 {
        let value = format!("{}", random.next() % 1_000_000);
        (name, Some(value))
    } else {
        (name, None)
    }
}

async fn write(maps: &Api<ConfigMap>, name: &str, before: &State, after: &State) -> bool {
    let timeout = Duration::from_secs(10);
    let done = match (before, after) {
        (None, Some(value)) => tokio::time::timeout(
            timeout,
            maps.create(&PostParams::default(), &config_map(name, value)),
        )
        .await
        .map(|r| r.is_ok()),
        (Some(_), Some(value)) => tokio::time::timeout(
            timeout,
            maps.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"v": value}})),
            ),
        )
        .await
        .map(|r| r.is_ok()),
        (_, None) => tokio::time::timeout(timeout, maps.delete(name, &DeleteParams::default()))
            .await
            .map(|r| r.is_ok()),
    };
    done.unwrap_or(false)
}

/// Runs the load and kills the server `kills` times; panics on the first
/// acknowledged write that is missing after a restart.
pub fn kill_loop(server: &mut Server, kills: usize, seed: u64) -> Report {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    // Counts the writer's finished writes: the pause waits for one.
    let finished = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let in_doubt = Arc::new(AtomicU64::new(0));
    let writer = {
        let (ledger, stop, paused, finished) = (
            ledger.clone(),
            stop.clone(),
            paused.clone(),
            finished.clone(),
        );
        let (acknowledged, in_doubt) = (acknowledged.clone(), in_doubt.clone());
        let make_client = {
            let (port, credentials) = (server.port(), server.admin_credentials());
            move || client(port, credentials)
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let maps: Api<ConfigMap> = Api::namespaced(make_client(), "default");
                let mut random = Random(seed | 1);
                while !stop.load(Ordering::SeqCst) {
                    if paused.load(Ordering::SeqCst) {
                        finished.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let (name, after) = {
                        let mut ledger = ledger.lock().expect("ledger");
                        choose(&mut ledger, &mut random)
                    };
                    let before = ledger
                        .lock()
                        .expect("ledger")
                        .objects
                        .get(&name)
                        .and_then(|e| e.acked.clone());
                    let ok = write(&maps, &name, &before, &after).await;
                    let mut ledger = ledger.lock().expect("ledger");
                    let entry = ledger.objects.entry(name).or_default();
                    if ok {
                        entry.acked = after;
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    } else {
                        entry.doubt = Some(after);
                        in_doubt.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(ledger);
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            });
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let checker = {
        let _inside = runtime.enter();
        client(server.port(), server.admin_credentials())
    };
    let mut random = Random(seed.rotate_left(17) | 1);
    let mut report = Report::default();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(200 + random.below(1000) as u64));
        let killed = Instant::now();
        server.kill9();
        // Let the writer finish the write the kill cut, then hold it.
        paused.store(true, Ordering::SeqCst);
        let seen = finished.load(Ordering::SeqCst);
        while finished.load(Ordering::SeqCst) < seen + 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.spawn();
        report.restarts.push(killed.elapsed().as_secs_f64());
        let actual: BTreeMap<String, String> = runtime.block_on(async {
            let maps: Api<ConfigMap> = Api::namespaced(checker.clone(), "default");
            maps.list(&ListParams::default())
                .await
                .expect("list after restart")
                .items
                .into_iter()
                .filter_map(|m| {
                    let name = m.metadata.name?;
                    let value = m.data?.get("v")?.clone();
                    Some((name, value))
                })
                .collect()
        });
        let mut ledger = ledger.lock().expect("ledger");
        for (name, entry) in ledger.objects.iter_mut() {
            let now = actual.get(name).cloned();
            let allowed = now == entry.acked || entry.doubt.as_ref() == Some(&now);
            assert!(
                allowed,
                "after kill {}: {name} is {now:?}, acknowledged {:?} (in doubt {:?})",
                report.kills + 1,
                entry.acked,
                entry.doubt
            );
            entry.acked = now;
            entry.doubt = None;
            report.checked += 1;
        }
        drop(ledger);
        report.kills += 1;
        paused.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    report.acknowledged = acknowledged.load(Ordering::SeqCst);
    report.in_doubt = in_doubt.load(Ordering::SeqCst);
    report
}
