//! One keyed back-off (upstream's `flowcontrol.Backoff`): per key, a delay
//! that starts at `initial` and doubles on each failure up to `max`, and is
//! forgotten when the key has been quiet for twice `max`. Used wherever
//! kelp retries something that failed: container restarts, image pulls and
//! sandboxes (kubelet), containerd's supervision, add-on manifests.
//!
//! It holds no clock: callers pass `now`, so decisions over it are pure.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    /// When the delay last stepped.
    at: Instant,
}

/// Per-key doubling delays.
#[derive(Debug, Clone)]
pub struct Backoff<K> {
    initial: Duration,
    max: Duration,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    /// Delays from `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// Another failure of `key` at `now`: its delay doubles (or starts at
    /// `initial`, for a new key or one quiet for twice `max`). Returns the
    /// delay to wait from now.
    pub fn step(&mut self, key: &K, now: Instant) -> Duration {
        let delay = match self.entries.get(key) {
            Some(e) if !self.expired(e, now) => (e.delay * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(key.clone(), Entry { delay, at: now });
        delay
    }

    /// The current delay of `key`, if it has one.
    pub fn delay(&self, key: &K) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// What is left of `key`'s delay counted from its last step, if any
    /// (upstream's IsInBackOffSinceUpdate).
    pub fn left(&self, key: &K, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        (e.at + e.delay)
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    /// What is left of `key`'s delay counted from an event `elapsed` ago
    /// (upstream's IsInBackOffSince: a container's exit), if any.
    pub fn left_since(&self, key: &K, elapsed: Duration) -> Option<Duration> {
        let e = self.entries.get(key)?;
        e.delay.checked_sub(elapsed).filter(|left| !left.is_zero())
    }

    /// Forgets `key`: its next failure waits `initial` again.
    pub fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Forgets every key quiet for twice `max`.
    pub fn collect_garbage(&mut self, now: Instant) {
        let max = self.max;
        self.entries
            .retain(|_, e| now.duration_since(e.at) <= max * 2);
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.at) > self.max * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut b = Backoff::new(10 * S, 40 * S);
        let t = Instant::now();
        assert_eq!(b.step(&"c", t), 10 * S);
        assert_eq!(b.step(&"c", t + S), 20 * S);
        assert_eq!(b.step(&"c", t + 2 * S), 40 * S);
        assert_eq!(b.step(&"c", t + 3 * S), 40 * S);
        // Keys are apart.
        assert_eq!(b.step(&"d", t), 10 * S);
        assert_eq!(b.delay(&"c"), Some(40 * S));
    }

    #[test]
    fn what_is_left_counts_from_the_step_or_from_an_event() {
        let mut b = Backoff::new(10 * S, 300 * S);
        let t = Instant::now();
        assert_eq!(b.left(&"c", t), None);
        assert_eq!(b.left_since(&"c", S), None);
        b.step(&"c", t);
        assert_eq!(b.left(&"c", t + 4 * S), Some(6 * S));
        assert_eq!(b.left(&"c", t + 10 * S), None);
        assert_eq!(b.left_since(&"c", 3 * S), Some(7 * S));
        assert_eq!(b.left_since(&"c", 10 * S), None);
    }

    #[test]
    fn a_quiet_key_starts_again_and_is_collected() {
        let mut b = Backoff::new(10 * S, 40 * S);
        let t = Instant::now();
        b.step(&"c", t);
        b.step(&"c", t);
        assert_eq!(b.step(&"c", t + 81 * S), 10 * S, "quiet for 2 × max");
        b.collect_garbage(t + 200 * S);
        assert_eq!(b.delay(&"c"), None);
        b.step(&"c", t);
        b.reset(&"c");
        assert_eq!(b.step(&"c", t), 10 * S);
    }
}
