//! Hands committed events to a watcher: first a backlog read from the
//! store, then the live events a store broadcasts as it commits, skipping
//! those the backlog already held and those outside the watched prefix.
//! Shared by the stores that broadcast their own commits (SQLite, and
//! PostgreSQL's follower of the shared log).

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Error, Event, Revision, WatchStream};

/// Events a watcher may fall behind before it is told to relist (410).
pub const CAPACITY: usize = 16 * 1024;

/// The watch stream: `backlog` (events after `after`, in order), then what
/// `live` carries past it under `prefix`. A watcher that falls more than
/// [`CAPACITY`] events behind gets [`Error::Lagged`]; a closed broadcast
/// ends the stream (the client watches again from its last revision).
pub fn stream(
    backlog: Vec<Event>,
    after: Revision,
    prefix: &str,
    mut live: broadcast::Receiver<Arc<Event>>,
) -> WatchStream {
    let prefix = prefix.to_string();
    let mut last = backlog.last().map(|e| e.kv.mod_revision).unwrap_or(after);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => {
                    if event.kv.mod_revision <= last || !event.kv.key.starts_with(&prefix) {
                        continue;
                    }
                    last = event.kv.mod_revision;
                    if tx.send(Ok((*event).clone())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(Err(Error::Lagged)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut rx = rx;
    let backlog = futures::stream::iter(backlog.into_iter().map(Ok));
    let live = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Box::pin(futures::StreamExt::chain(backlog, live))
}
