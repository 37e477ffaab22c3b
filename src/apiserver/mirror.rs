//! Key ranges of the store held in memory: listed once, then kept current
//! from the store's watch. Authorization reads its policy from mirrors, so a
//! request never waits on the database to learn who may do what.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::store::{self, Event, KeyValue, Revision, Store};

/// What a mirror feeds: an in-memory index over the range's objects.
pub trait Sink: Send + Sync + 'static {
    /// Replaces everything with a fresh listing.
    fn reset(&self, items: &[KeyValue]);
    /// Applies one committed write.
    fn apply(&self, event: &Event);
}

/// A running mirror; tells how far it has read, range by range.
#[derive(Clone)]
pub struct Mirror {
    ranges: Vec<(String, watch::Receiver<Revision>)>,
}

/// How long a writer waits for the mirror to see its own write.
const CATCH_UP: Duration = Duration::from_secs(2);

impl Mirror {
    /// Lists the key ranges `prefixes` (one per resource: etcd keeps each
    /// resource under its own prefix) into `sink`, at one revision and
    /// before returning, so the first request sees them; then follows the
    /// store's watch of each from there.
    pub async fn start(
        store: Arc<dyn Store>,
        prefixes: &[&str],
        sink: Arc<dyn Sink>,
    ) -> store::Result<Mirror> {
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        let (items, revision) = list_all(store.as_ref(), &prefixes).await?;
        sink.reset(&items);
        let (senders, ranges) = prefixes
            .iter()
            .map(|prefix| {
                let (tx, rx) = watch::channel(revision);
                (tx, (prefix.clone(), rx))
            })
            .unzip();
        tokio::spawn(follow(store, prefixes, sink, senders, revision));
        Ok(Mirror { ranges })
    }

    /// Waits (briefly) until the mirror has applied `revision` in the range
    /// holding `key` (a key or a resource's prefix), so a client that just
    /// wrote a policy object is judged by it on its next request.
    pub async fn caught_up(&self, key: &str, revision: Revision) {
        let Some((_, seen)) = self
            .ranges
            .iter()
            .find(|(p, _)| key.starts_with(p.as_str()))
        else {
            return;
        };
        let mut rx = seen.clone();
        let wait = rx.wait_for(|seen| *seen >= revision);
        if tokio::time::timeout(CATCH_UP, wait).await.is_err() {
            tracing::warn!(revision, key, "policy mirror did not catch up in time");
        }
    }
}

/// Every range's objects, read at one revision.
async fn list_all(
    store: &dyn Store,
    prefixes: &[String],
) -> store::Result<(Vec<KeyValue>, Revision)> {
    let mut items = Vec::new();
    let mut revision = None;
    for prefix in prefixes {
        let page = store.list_at(prefix, None, 0, revision).await?;
        revision = Some(page.revision);
        items.extend(page.items);
    }
    Ok((items, revision.unwrap_or_default()))
}

/// The watch loop: applies each range's events; lists again when a watch
/// cannot go on.
async fn follow(
    store: Arc<dyn Store>,
    prefixes: Vec<String>,
    sink: Arc<dyn Sink>,
    senders: Vec<watch::Sender<Revision>>,
    revision: Revision,
) {
    let mut revisions = vec![revision; prefixes.len()];
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut streams = Vec::with_capacity(prefixes.len());
        for (range, prefix) in prefixes.iter().enumerate() {
            match store.watch(prefix, revisions[range]).await {
                // Each stream ends with a marker, so one range ending
                // stops the whole mirror's watch instead of going quiet.
                Ok(events) => streams.push(
                    events
                        .map(move |event| (range, Some(event)))
                        .chain(futures::stream::once(async move { (range, None) }))
                        .boxed(),
                ),
                Err(store::Error::Compacted { .. }) => break,
                Err(e) => {
                    tracing::warn!(err = %e, prefix, "mirror watch failed");
                    break;
                }
            }
        }
        if streams.len() == prefixes.len() {
            let mut merged = futures::stream::select_all(streams);
            while let Some((range, event)) = merged.next().await {
                match event {
                    Some(Ok(event)) => {
                        revisions[range] = event.kv.mod_revision;
                        sink.apply(&event);
                        senders[range].send_replace(revisions[range]);
                        backoff = Duration::from_millis(100);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(err = %e, prefix = prefixes[range], "mirror watch ended");
                        break;
                    }
                    None => break,
                }
            }
        }
        if senders.iter().all(watch::Sender::is_closed) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        // Start over from a fresh listing (the history after where each
        // range was may be gone).
        if let Ok((items, revision)) = list_all(store.as_ref(), &prefixes).await {
            sink.reset(&items);
            for (range, sender) in senders.iter().enumerate() {
                revisions[range] = revision;
                sender.send_replace(revision);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::store::EventKind;
    use crate::store::sqlite::SqliteStore;

    /// A sink that holds the keys it was given.
    #[derive(Default)]
    struct Keys(Mutex<BTreeSet<String>>);

    impl Keys {
        fn held(&self) -> Vec<String> {
            self.0.lock().expect("keys").iter().cloned().collect()
        }
    }

    impl Sink for Keys {
        fn reset(&self, items: &[KeyValue]) {
            *self.0.lock().expect("keys") = items.iter().map(|kv| kv.key.clone()).collect();
        }

        fn apply(&self, event: &Event) {
            let mut keys = self.0.lock().expect("keys");
            match event.kind {
                EventKind::Deleted => keys.remove(&event.kv.key),
                EventKind::Created | EventKind::Updated => keys.insert(event.kv.key.clone()),
            };
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ranges_are_listed_together_and_each_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("s.db")).expect("open"));
        for key in ["/a/1", "/b/1", "/c/1"] {
            store.create(key, b"{}".to_vec()).await.expect("create");
        }
        let keys = Arc::new(Keys::default());
        let mirror = Mirror::start(store.clone(), &["/a/", "/b/"], keys.clone())
            .await
            .expect("start");
        assert_eq!(keys.held(), ["/a/1", "/b/1"]);

        // A writer waits on the range of what it wrote, and only as long as
        // that range takes to see it.
        let written = store.create("/b/2", b"{}".to_vec()).await.expect("create");
        let started = Instant::now();
        mirror.caught_up("/b/", written).await;
        assert!(started.elapsed() < CATCH_UP / 2, "{:?}", started.elapsed());
        assert_eq!(keys.held(), ["/a/1", "/b/1", "/b/2"]);
        let (deleted, _) = store.delete("/a/1", None).await.expect("delete");
        mirror.caught_up("/a/1", deleted).await;
        assert_eq!(keys.held(), ["/b/1", "/b/2"]);

        // Writes outside the ranges are not mirrored, and nobody waits for them.
        let outside = store.create("/c/2", b"{}".to_vec()).await.expect("create");
        let started = Instant::now();
        mirror.caught_up("/c/2", outside).await;
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(keys.held(), ["/b/1", "/b/2"]);
    }
}
