//! Periodic compaction of the store's history, as kube-apiserver does it
//! every `--etcd-compaction-interval`: each pass forgets what is older
//! than the revision the previous pass saw (one interval of history
//! stays), and never more than [`RETAINED_REVISIONS`] are kept.
//!
//! At idle a pass has next to nothing to forget (a few superseded Lease
//! and Node rows) yet costs a commit of its own: a third of an idle
//! node's disk writes. So a pass that would forget fewer than
//! [`MIN_BATCH`] revisions waits, at most [`MAX_SKIPPED`] passes in a row
//! (an hour at the default 5 minutes); history is only ever kept longer,
//! never shorter, than upstream keeps it.

use std::sync::Arc;
use std::time::Duration;

use super::{Revision, Store};

/// At most this many revisions of history are kept (kine, k3s's store
/// shim, keeps 1,000; a larger window lets slow informers resume instead
/// of relisting).
pub const RETAINED_REVISIONS: Revision = 10_000;

/// Fewer revisions than this to forget, and a pass waits for more.
pub const MIN_BATCH: Revision = 1_000;

/// Passes in a row that may wait for a batch; the next one compacts.
pub const MAX_SKIPPED: u32 = 11;

/// The decisions of the compaction loop, without I/O.
#[derive(Debug, Default)]
pub struct Compactor {
    /// The current revision the previous pass saw.
    previous_pass: Option<Revision>,
    /// Where this process last compacted to (unknown before its first).
    compacted: Option<Revision>,
    /// Passes in a row that waited.
    skipped: u32,
}

impl Compactor {
    /// A pass that found the store at `current`: the revision to compact
    /// through, if this pass compacts. Call [`Compactor::compacted`] once
    /// it did.
    pub fn pass(&mut self, current: Revision) -> Option<Revision> {
        let last_pass = self.previous_pass.replace(current)?;
        let target = last_pass.max(current - RETAINED_REVISIONS);
        if target <= 0 || self.compacted.is_some_and(|c| target <= c) {
            return None;
        }
        let small = self.compacted.is_some_and(|c| target - c < MIN_BATCH);
        if small && self.skipped < MAX_SKIPPED {
            self.skipped += 1;
            return None;
        }
        Some(target)
    }

    /// The store compacted through `revision`.
    pub fn compacted(&mut self, revision: Revision) {
        self.compacted = Some(revision);
        self.skipped = 0;
    }
}

/// Compacts `store` every `interval` as [`Compactor`] decides.
pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    let mut compactor = Compactor::default();
    loop {
        ticker.tick().await;
        let Ok(current) = store.current_revision().await else {
            continue;
        };
        let Some(target) = compactor.pass(current) else {
            continue;
        };
        match store.compact(target).await {
            Ok(()) => compactor.compacted(target),
            Err(e) => tracing::warn!(err = %e, revision = target, "compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pass_forgets_what_is_older_than_the_previous_pass() {
        let mut c = Compactor::default();
        assert_eq!(c.pass(100), None, "the first pass only looks");
        assert_eq!(c.pass(5_000), Some(100), "unknown point: compacts");
        c.compacted(100);
        assert_eq!(c.pass(9_000), Some(5_000));
        c.compacted(5_000);
        // Never more than RETAINED_REVISIONS kept.
        assert_eq!(c.pass(30_000), Some(20_000));
    }

    #[test]
    fn idle_passes_wait_for_a_batch_at_most_max_skipped_in_a_row() {
        let mut c = Compactor::default();
        c.pass(1_000);
        assert_eq!(c.pass(1_030), Some(1_000));
        c.compacted(1_000);
        let mut current = 1_030;
        for _ in 0..MAX_SKIPPED {
            current += 30;
            assert_eq!(c.pass(current), None);
        }
        current += 30;
        assert_eq!(c.pass(current), Some(current - 30), "the wait is bounded");
        c.compacted(current - 30);
        // A busy interval's revisions go at the pass after it.
        let busy = current + MIN_BATCH;
        assert_eq!(c.pass(busy), None);
        assert_eq!(c.pass(busy + 30), Some(busy));
    }

    #[test]
    fn a_failed_compaction_is_tried_again_next_pass() {
        let mut c = Compactor::default();
        c.pass(10);
        assert_eq!(c.pass(20), Some(10));
        // Not compacted: the next pass goes further, not nowhere.
        assert_eq!(c.pass(30), Some(20));
        let mut fresh = Compactor::default();
        fresh.pass(0);
        assert_eq!(fresh.pass(5), None, "nothing at or below zero");
    }
}
