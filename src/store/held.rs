//! Writes the SQLite store holds in memory instead of committing them at
//! once: updates a crash may lose without harm (a Lease whose renewTime is
//! all that moved), made durable by the store's next commit, or at most
//! [`HOLD_AT_MOST`] after the first of them. At idle that turns a commit per
//! renewal (each dirtying some 30 kB of WAL and index pages, whatever the
//! page size) into one per period.
//!
//! Every read sees a held write at once: a get finds its value here, a list
//! lays the held values over the committed rows, a watch replays held
//! events after the committed log. Held revisions are always newer than
//! every committed one, since each commit first writes what is held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Event, KeyValue, Revision};

/// How long a held write may wait for a commit: upstream's node status
/// report period (5 minutes) and half a minute, so that at idle the Node's
/// own status write takes the held renewals with it. (The kubelet renews
/// its Lease a moment before it posts the status in the same heartbeat:
/// with exactly 5 minutes the renewal's deadline came first, and two
/// commits a second apart did the work of one.)
#[cfg(not(test))]
pub const HOLD_AT_MOST: Duration = Duration::from_secs(330);
#[cfg(test)]
pub const HOLD_AT_MOST: Duration = Duration::from_millis(300);

/// The held writes: each key's newest value, and every write as its event.
#[derive(Default)]
pub struct Held {
    latest: HashMap<String, KeyValue>,
    events: Vec<Event>,
    since: Option<Instant>,
}

impl Held {
    /// The newest held value of `key`.
    pub fn current(&self, key: &str) -> Option<&KeyValue> {
        self.latest.get(key)
    }

    /// Holds an update (`event.kv` its new value at its revision).
    pub fn hold(&mut self, event: Event) {
        self.since.get_or_insert_with(Instant::now);
        self.latest.insert(event.kv.key.clone(), event.kv.clone());
        self.events.push(event);
    }

    /// Every held write, oldest first (for the commit that makes them durable).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Forgets everything: a commit made it durable.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// When the oldest held write must be committed, if any is held.
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + HOLD_AT_MOST)
    }

    /// The newest held revision.
    pub fn newest(&self) -> Option<Revision> {
        self.events.last().map(|e| e.kv.mod_revision)
    }

    /// The held events for keys in `[start, end)` after revision `after`.
    pub fn events_after(&self, start: &str, end: &str, after: Revision) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.kv.mod_revision > after && in_range(&e.kv.key, start, end))
            .cloned()
            .collect()
    }
}

/// Lays held values over `items` (rows read from the database) as they
/// stood at revision `at`: a row takes the newest of the held `events` at or
/// before `at` when that is newer than the row.
pub fn overlay(events: &[Event], items: &mut [KeyValue], at: Revision) {
    if events.is_empty() {
        return;
    }
    for item in items {
        let newest = events
            .iter()
            .rev()
            .find(|e| e.kv.key == item.key && e.kv.mod_revision <= at);
        if let Some(held) = newest
            && held.kv.mod_revision > item.mod_revision
        {
            *item = held.kv.clone();
        }
    }
}

fn in_range(key: &str, start: &str, end: &str) -> bool {
    key >= start && key < end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn kv(key: &str, value: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    fn update(key: &str, value: &str, rev: Revision) -> Event {
        Event {
            kind: EventKind::Updated,
            kv: kv(key, value, rev),
            prev: None,
        }
    }

    #[test]
    fn lists_see_the_held_value_as_of_their_revision() {
        let mut held = Held::default();
        held.hold(update("/l/a", "a@5", 5));
        held.hold(update("/l/a", "a@7", 7));
        let rows = || vec![kv("/l/a", "a@2", 2), kv("/l/b", "b@3", 3)];
        let mut latest = rows();
        overlay(held.events(), &mut latest, 7);
        assert_eq!(latest[0].value, b"a@7");
        assert_eq!(latest[1].value, b"b@3");
        let mut earlier = rows();
        overlay(held.events(), &mut earlier, 6);
        assert_eq!(earlier[0].value, b"a@5");
        let mut before = rows();
        overlay(held.events(), &mut before, 4);
        assert_eq!(before[0].value, b"a@2");
        // A row committed since (newer than what is held) stays.
        let mut committed = vec![kv("/l/a", "a@9", 9)];
        overlay(held.events(), &mut committed, 9);
        assert_eq!(committed[0].value, b"a@9");
    }

    #[test]
    fn watches_replay_held_events_in_their_range_after_their_revision() {
        let mut held = Held::default();
        assert!(held.due().is_none());
        held.hold(update("/l/a", "1", 5));
        held.hold(update("/m/b", "2", 6));
        held.hold(update("/l/c", "3", 7));
        let revisions = |events: Vec<Event>| -> Vec<Revision> {
            events.iter().map(|e| e.kv.mod_revision).collect()
        };
        assert_eq!(revisions(held.events_after("/l/", "/l0", 0)), [5, 7]);
        assert_eq!(revisions(held.events_after("/l/", "/l0", 5)), [7]);
        assert_eq!(held.newest(), Some(7));
        assert_eq!(held.current("/m/b").map(|kv| kv.mod_revision), Some(6));
        assert!(held.due().is_some());
        held.clear();
        assert!(held.events().is_empty() && held.due().is_none() && held.current("/l/a").is_none());
    }
}
