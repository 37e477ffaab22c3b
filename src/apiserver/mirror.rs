//! A key range of the store held in memory: listed once, then kept current
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

/// A running mirror; tells how far it has read.
#[derive(Clone)]
pub struct Mirror {
    revision: watch::Receiver<Revision>,
}

/// How long a writer waits for the mirror to see its own write.
const CATCH_UP: Duration = Duration::from_secs(2);

impl Mirror {
    /// Lists `prefix` into `sink` (before returning, so the first request
    /// sees the range) and follows the store's watch from there.
    pub async fn start(
        store: Arc<dyn Store>,
        prefix: &str,
        sink: Arc<dyn Sink>,
    ) -> store::Result<Mirror> {
        let listed = store.list(prefix, None, 0).await?;
        sink.reset(&listed.items);
        let (tx, revision) = watch::channel(listed.revision);
        tokio::spawn(follow(store, prefix.to_string(), sink, tx, listed.revision));
        Ok(Mirror { revision })
    }

    /// Waits (briefly) until the mirror has applied `revision`, so a client
    /// that just wrote a policy object is judged by it on its next request.
    pub async fn caught_up(&self, revision: Revision) {
        let mut rx = self.revision.clone();
        let wait = rx.wait_for(|seen| *seen >= revision);
        if tokio::time::timeout(CATCH_UP, wait).await.is_err() {
            tracing::warn!(revision, "policy mirror did not catch up in time");
        }
    }
}

/// The watch loop: applies events; relists when the watch cannot resume.
async fn follow(
    store: Arc<dyn Store>,
    prefix: String,
    sink: Arc<dyn Sink>,
    tx: watch::Sender<Revision>,
    mut revision: Revision,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.watch(&prefix, revision).await {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            revision = event.kv.mod_revision;
                            sink.apply(&event);
                            tx.send_replace(revision);
                            backoff = Duration::from_millis(100);
                        }
                        Err(e) => {
                            tracing::debug!(err = %e, prefix, "mirror watch ended");
                            break;
                        }
                    }
                }
            }
            Err(store::Error::Compacted { .. }) => {}
            Err(e) => tracing::warn!(err = %e, prefix, "mirror watch failed"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        // Resume where we were if the store still has it; else list again.
        if let Ok(current) = store.current_revision().await
            && current > revision
            && let Ok(listed) = store.list(&prefix, None, 0).await
        {
            sink.reset(&listed.items);
            revision = listed.revision;
            tx.send_replace(revision);
        }
    }
}
