//! The store conformance tests: one list of behaviours, run against every
//! datastore kelp keeps its state in: the embedded SQLite, a real
//! PostgreSQL and a real etcd, both on loopback.
//!
//! Each case gets its own key prefix and uses only revisions it saw
//! itself, so the cases share one store (and one etcd). Each gets two
//! handles on that store, as two kelp servers would hold (for SQLite, which
//! one process owns, the same one twice): what one writes the other reads
//! and watches.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kelp::store::TlsFiles;
use kelp::store::etcd::EtcdStore;
use kelp::store::postgres::PostgresStore;
use kelp::store::sqlite::SqliteStore;
use kelp::store::{Error, Event, EventKind, Store, WatchStream};

type Handles = (Arc<dyn Store>, Arc<dyn Store>);
type Case = fn(Handles, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |h, p| Box::pin($name(h, p)))),*]
    };
}

const CASES: &[(&str, Case)] = cases![
    create_get_update_delete,
    list_pages_in_key_order,
    lists_at_an_earlier_revision,
    a_list_revision_is_where_a_watch_resumes,
    watch_replays_then_follows,
    updates_carry_the_previous_value,
    deletes_carry_the_last_value,
    compacted_revision_is_refused,
    one_of_concurrent_conflicting_writers_wins,
    concurrent_creates_get_distinct_revisions,
    a_future_revision_reads_the_latest,
    counts_keys_under_a_prefix,
    one_handle_sees_the_other_s_writes,
];

async fn run(handles: Handles) {
    for (name, case) in CASES {
        eprintln!("case {name}");
        tokio::time::timeout(
            Duration::from_secs(60),
            case(handles.clone(), format!("/{name}/")),
        )
        .await
        .unwrap_or_else(|_| panic!("case {name} timed out"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).expect("open"));
    run((store.clone(), store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres() {
    let server = common::datastores::Postgres::start();
    let url = server.url("kelp");
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, None).await.expect("connect"));
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, None).await.expect("connect"));
    run((a, b)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd() {
    let etcd = common::datastores::Etcd::start(1);
    let endpoints = vec![etcd.client_url(0)];
    let tls = TlsFiles::default();
    let a: Arc<dyn Store> = Arc::new(EtcdStore::connect(&endpoints, &tls).await.expect("connect"));
    let b: Arc<dyn Store> = Arc::new(EtcdStore::connect(&endpoints, &tls).await.expect("connect"));
    run((a.clone(), b)).await;
    // An update to the bytes stored writes nothing, as kube-apiserver's
    // storage skips it: the revision stays, and no watcher hears of it.
    let r1 = a.create("/same/x", b"v".to_vec()).await.expect("create");
    assert_eq!(
        a.update("/same/x", b"v".to_vec(), r1)
            .await
            .expect("update"),
        r1
    );
    assert_eq!(a.current_revision().await.expect("revision"), r1);
    assert!(matches!(
        a.update("/same/x", b"v".to_vec(), r1 - 1).await,
        Err(Error::Conflict { .. })
    ));
}

/// etcd serving over TLS and asking for client certificates
/// (`--datastore-cafile/certfile/keyfile`); without the certificate kelp
/// is refused at connect.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_over_tls() {
    let etcd = common::datastores::Etcd::start_tls();
    let files = etcd.tls().expect("tls");
    let endpoints = vec![etcd.client_url(0)];
    let tls = TlsFiles {
        ca: Some(files.ca.clone()),
        cert: Some(files.client.0.clone()),
        key: Some(files.client.1.clone()),
    };
    let a: Arc<dyn Store> = Arc::new(EtcdStore::connect(&endpoints, &tls).await.expect("connect"));
    let b: Arc<dyn Store> = Arc::new(EtcdStore::connect(&endpoints, &tls).await.expect("connect"));
    create_get_update_delete((a.clone(), b.clone()), "/tls/".into()).await;
    one_handle_sees_the_other_s_writes((a, b), "/tls-watch/".into()).await;
    let anonymous = TlsFiles {
        ca: Some(files.ca.clone()),
        ..Default::default()
    };
    assert!(EtcdStore::connect(&endpoints, &anonymous).await.is_err());
}

/// PostgreSQL taking TLS connections only: kelp verifies it against the
/// CA it is given; `sslmode=require` without one is refused.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls() {
    let server = common::datastores::Postgres::start_tls();
    let files = server.tls.as_ref().expect("tls");
    let ca = std::fs::read_to_string(&files.ca).expect("CA");
    let tls = kelp::pki::tls::client_config(&ca, None).expect("client config");
    let url = format!("{}?sslmode=require", server.url("kelp"));
    let a: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&url, Some(tls.clone()))
            .await
            .expect("connect over TLS"),
    );
    let b: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&url, Some(tls))
            .await
            .expect("connect over TLS"),
    );
    create_get_update_delete((a.clone(), b.clone()), "/tls/".into()).await;
    one_handle_sees_the_other_s_writes((a, b), "/tls-watch/".into()).await;
    assert!(PostgresStore::connect(&url, None).await.is_err());
    assert!(
        PostgresStore::connect(&server.url("kelp"), None)
            .await
            .is_err(),
        "in the clear"
    );
}

/// A PostgreSQL restart ends every connection: kelp connects again, and
/// its watches end (their clients watch again from where they were).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart() {
    let mut server = common::datastores::Postgres::start();
    let url = server.url("kelp");
    let store = PostgresStore::connect(&url, None).await.expect("connect");
    let before = store
        .create("/restart/a", b"1".to_vec())
        .await
        .expect("create");
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match store.create("/restart/b", b"2".to_vec()).await {
            Ok(revision) => break revision,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no write after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(after > before);
    assert!(store.get("/restart/a").await.expect("get").is_some());
    let mut watch = store.watch("/restart/", after).await.expect("watch");
    let r3 = store
        .update("/restart/b", b"3".to_vec(), after)
        .await
        .expect("update");
    assert_eq!(next(&mut watch).await.kv.mod_revision, r3);
}

/// etcd with three members: with one down every request still succeeds
/// once a leader is elected (sent again to a live member when it went to
/// the dead one); with two down (no quorum) a write fails
/// at once with an error and loses nothing acknowledged; with them back,
/// writes go on.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_quorum_loss() {
    let mut etcd = common::datastores::Etcd::start(3);
    let endpoints: Vec<String> = (0..3).map(|i| etcd.client_url(i)).collect();
    let store = EtcdStore::connect(&endpoints, &TlsFiles::default())
        .await
        .expect("connect");
    etcd.kill(2);
    // If it led, the others elect a leader first (a write meanwhile fails:
    // whether it took effect is not known, so it is not sent again).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.create("/quorum/elected", vec![1]).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no leader after one member died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let key = format!("/quorum/k{i}");
        store
            .create(&key, vec![1])
            .await
            .expect("create with one member down");
        assert!(store.get(&key).await.expect("get").is_some());
        acknowledged.push(key);
    }
    etcd.kill(1);
    let started = std::time::Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        store.create("/quorum/lost", vec![1]),
    )
    .await
    .expect("a write without quorum answers within 30 s");
    assert!(
        matches!(refused, Err(Error::Database(_))),
        "without quorum: {refused:?}"
    );
    eprintln!(
        "without quorum a write failed after {:?}",
        started.elapsed()
    );
    etcd.respawn(1);
    etcd.restart(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.create("/quorum/after", vec![1]).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no write after the quorum returned: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for key in &acknowledged {
        assert!(
            store.get(key).await.expect("get").is_some(),
            "{key} is lost"
        );
    }
}

async fn next(watch: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("an event, not an error")
}

async fn create_get_update_delete((store, _): Handles, p: String) {
    let key = format!("{p}x");
    let r1 = store.create(&key, b"1".to_vec()).await.expect("create");
    assert!(matches!(
        store.create(&key, b"2".to_vec()).await,
        Err(Error::AlreadyExists(_))
    ));
    let got = store.get(&key).await.expect("get").expect("present");
    assert_eq!(
        (got.value.as_slice(), got.mod_revision, got.create_revision),
        (b"1".as_slice(), r1, r1)
    );
    assert!(matches!(
        store.update(&key, b"3".to_vec(), r1 + 10).await,
        Err(Error::Conflict { .. })
    ));
    let r2 = store.update(&key, b"3".to_vec(), r1).await.expect("update");
    assert!(r2 > r1);
    let got = store.get(&key).await.expect("get").expect("present");
    assert_eq!((got.create_revision, got.mod_revision), (r1, r2));
    let (r3, last) = store.delete(&key, Some(r2)).await.expect("delete");
    assert_eq!(
        (last.value.as_slice(), last.mod_revision, r3 > r2),
        (b"3".as_slice(), r3, true)
    );
    assert!(store.get(&key).await.expect("get").is_none());
    assert!(matches!(
        store.delete(&key, None).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.update(&key, b"4".to_vec(), r3).await,
        Err(Error::NotFound(_))
    ));
    let r4 = store
        .create(&key, b"5".to_vec())
        .await
        .expect("create again");
    let got = store.get(&key).await.expect("get").expect("present");
    assert_eq!((got.create_revision, got.mod_revision), (r4, r4));
}

async fn list_pages_in_key_order((store, _): Handles, p: String) {
    let mut last = 0;
    for name in ["c", "a", "b", "d"] {
        last = store
            .create(&format!("{p}{name}"), name.as_bytes().to_vec())
            .await
            .expect("create");
    }
    // A key just past the prefix (`{p}` ends in '/', '0' follows it).
    store
        .create(&format!("{}0z", &p[..p.len() - 1]), b"z".to_vec())
        .await
        .expect("create");
    let page = store.list(&p, None, 3).await.expect("list");
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, [format!("{p}a"), format!("{p}b"), format!("{p}c")]);
    assert!(page.more);
    assert!(page.revision > last);
    let rest = store
        .list_at(&p, Some(&format!("{p}c")), 3, Some(page.revision))
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].key, format!("{p}d"));
    assert!(!rest.more);
    assert_eq!(rest.revision, page.revision);
    let all = store.list(&p, None, 0).await.expect("list");
    assert_eq!((all.items.len(), all.more), (4, false));
}

async fn lists_at_an_earlier_revision((store, _): Handles, p: String) {
    let k = |name: &str| format!("{p}{name}");
    let a = store.create(&k("a"), b"a1".to_vec()).await.expect("create");
    store.create(&k("b"), b"b1".to_vec()).await.expect("create");
    let c = store.create(&k("c"), b"c1".to_vec()).await.expect("create");
    let snapshot = store.current_revision().await.expect("rev");
    assert!(snapshot >= c);
    store
        .update(&k("a"), b"a2".to_vec(), a)
        .await
        .expect("update");
    store.delete(&k("c"), Some(c)).await.expect("delete");
    store.create(&k("d"), b"d1".to_vec()).await.expect("create");
    store.compact(snapshot).await.expect("compact");
    let page = store
        .list_at(&p, None, 0, Some(snapshot))
        .await
        .expect("list at the compaction point");
    let seen: Vec<(String, &[u8])> = page
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [
            (k("a"), b"a1".as_slice()),
            (k("b"), b"b1".as_slice()),
            (k("c"), b"c1".as_slice())
        ]
    );
    assert_eq!(page.revision, snapshot);
    let rest = store
        .list_at(&p, Some(&k("a")), 1, Some(snapshot))
        .await
        .expect("list");
    assert_eq!((rest.items[0].key.clone(), rest.more), (k("b"), true));
    let now = store.list(&p, None, 0).await.expect("list");
    let keys: Vec<String> = now.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [k("a"), k("b"), k("d")]);
    store.compact(snapshot + 1).await.expect("compact");
    assert!(matches!(
        store.list_at(&p, None, 0, Some(snapshot)).await,
        Err(Error::Compacted { .. })
    ));
}

async fn a_list_revision_is_where_a_watch_resumes((store, other): Handles, p: String) {
    store
        .create(&format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    let list = store.list(&p, None, 0).await.expect("list");
    let rb = store
        .create(&format!("{p}b"), b"2".to_vec())
        .await
        .expect("create");
    let mut watch = other.watch(&p, list.revision).await.expect("watch");
    let event = next(&mut watch).await;
    assert_eq!(
        (event.kind, event.kv.key, event.kv.mod_revision),
        (EventKind::Created, format!("{p}b"), rb)
    );
}

async fn watch_replays_then_follows((store, _): Handles, p: String) {
    let r1 = store
        .create(&format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    store
        .create(&format!("{p}b"), b"2".to_vec())
        .await
        .expect("create");
    store
        .create(&format!("{}0c", &p[..p.len() - 1]), b"3".to_vec())
        .await
        .expect("create");
    let mut watch = store.watch(&p, r1).await.expect("watch");
    let first = next(&mut watch).await;
    assert_eq!(
        (first.kind, first.kv.key),
        (EventKind::Created, format!("{p}b"))
    );
    store.delete(&format!("{p}a"), None).await.expect("delete");
    let second = next(&mut watch).await;
    assert_eq!(
        (second.kind, second.kv.key),
        (EventKind::Deleted, format!("{p}a"))
    );
}

async fn updates_carry_the_previous_value((store, _): Handles, p: String) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"1".to_vec()).await.expect("create");
    let r2 = store.update(&key, b"2".to_vec(), r1).await.expect("update");
    let mut replay = store.watch(&p, r1).await.expect("watch");
    let event = next(&mut replay).await;
    assert_eq!(
        (event.kind, event.prev.as_deref(), event.kv.mod_revision),
        (EventKind::Updated, Some(b"1".as_slice()), r2)
    );
    let mut live = store.watch(&p, r2).await.expect("watch");
    let r3 = store.update(&key, b"3".to_vec(), r2).await.expect("update");
    let event = next(&mut live).await;
    assert_eq!(
        (event.kind, event.prev.as_deref(), event.kv.mod_revision),
        (EventKind::Updated, Some(b"2".as_slice()), r3)
    );
    assert_eq!(event.kv.create_revision, r1);
}

async fn deletes_carry_the_last_value((store, _): Handles, p: String) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"1".to_vec()).await.expect("create");
    let r2 = store.update(&key, b"2".to_vec(), r1).await.expect("update");
    assert!(matches!(
        store.delete(&key, Some(r1)).await,
        Err(Error::Conflict { current, .. }) if current.mod_revision == r2
    ));
    let mut watch = store.watch(&p, r2).await.expect("watch");
    let (r3, _) = store.delete(&key, Some(r2)).await.expect("delete");
    let event = next(&mut watch).await;
    assert_eq!(
        (
            event.kind,
            event.kv.value.as_slice(),
            event.kv.mod_revision,
            event.kv.create_revision
        ),
        (EventKind::Deleted, b"2".as_slice(), r3, r1)
    );
}

async fn compacted_revision_is_refused((store, _): Handles, p: String) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"1".to_vec()).await.expect("create");
    let r2 = store.update(&key, b"2".to_vec(), r1).await.expect("update");
    store.compact(r2).await.expect("compact");
    assert!(matches!(
        store.watch(&p, r1).await,
        Err(Error::Compacted { .. })
    ));
    let mut watch = store
        .watch(&p, r2)
        .await
        .expect("watch from the compaction point");
    let r3 = store.update(&key, b"3".to_vec(), r2).await.expect("update");
    assert_eq!(next(&mut watch).await.kv.mod_revision, r3);
}

async fn one_of_concurrent_conflicting_writers_wins((store, other): Handles, p: String) {
    let key = format!("{p}a");
    let r1 = store.create(&key, b"0".to_vec()).await.expect("create");
    let writes = (0..16).map(|i| {
        let handle = if i % 2 == 0 { &store } else { &other };
        let key = key.clone();
        async move { handle.update(&key, vec![b'a' + i], r1).await }
    });
    let results = futures::future::join_all(writes).await;
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let winner = *won[0].as_ref().expect("ok");
    for result in &results {
        match result {
            Ok(_) => {}
            Err(Error::Conflict { current, expected }) => {
                assert_eq!((*expected, current.mod_revision), (r1, winner));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

async fn concurrent_creates_get_distinct_revisions((store, other): Handles, p: String) {
    let before = store.current_revision().await.expect("rev");
    let creates = (0..64).map(|i| {
        let handle = if i % 2 == 0 { &store } else { &other };
        let key = format!("{p}{i:03}");
        async move { handle.create(&key, vec![1]).await.expect("create") }
    });
    let mut revisions = futures::future::join_all(creates).await;
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), 64);
    assert!(revisions[0] > before);
    let list = other.list(&p, None, 0).await.expect("list");
    assert_eq!(list.items.len(), 64);
    assert!(list.revision >= *revisions.last().expect("some"));
    let mut watch = store.watch(&p, before).await.expect("watch");
    let mut seen = Vec::new();
    for _ in 0..64 {
        seen.push(next(&mut watch).await.kv.mod_revision);
    }
    assert_eq!(seen, revisions, "the watch replays every create, in order");
}

async fn a_future_revision_reads_the_latest((store, _): Handles, p: String) {
    let r = store
        .create(&format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    let page = store
        .list_at(&p, None, 0, Some(r + 1_000_000))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    assert!(page.revision >= r && page.revision < r + 1_000_000);
}

async fn counts_keys_under_a_prefix((store, _): Handles, p: String) {
    for i in 0..5 {
        store
            .create(&format!("{p}{i}"), vec![1])
            .await
            .expect("create");
    }
    store.delete(&format!("{p}0"), None).await.expect("delete");
    assert_eq!(store.count(&p).await.expect("count"), 4);
}

async fn one_handle_sees_the_other_s_writes((store, other): Handles, p: String) {
    let start = other.current_revision().await.expect("rev");
    let mut watch = other.watch(&p, start).await.expect("watch");
    let r1 = store
        .create(&format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    let event = next(&mut watch).await;
    assert_eq!(
        (event.kind, event.kv.mod_revision),
        (EventKind::Created, r1)
    );
    assert!(other.current_revision().await.expect("rev") >= r1);
    let got = other
        .get(&format!("{p}a"))
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.mod_revision, r1);
    let r2 = other
        .update(&format!("{p}a"), b"2".to_vec(), r1)
        .await
        .expect("update through the other");
    assert!(r2 > r1);
}
