//! Events about objects (a pod's Scheduled, Pulled, Started, BackOff; a
//! Deployment's ScalingReplicaSet; ...), as `kubectl describe` and `kubectl
//! events` show them, from any component. Best effort: a failed write is
//! logged, never retried. A repeat of an event (same source, object, type,
//! reason and message) within [`DEDUP_WINDOW`] bumps the first one's
//! `count` and `lastTimestamp` instead of writing a new Event, as
//! client-go's event correlator does, so `kubectl describe` shows `x5 over
//! 2m`.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;

/// How many distinct events are remembered for deduplication (client-go's
/// cache size).
const REMEMBERED: usize = 4096;

/// How long a repeat still counts against an earlier event.
const DEDUP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Source, object (kind, namespace, name, uid), type, reason, message.
type EventKey = [String; 9];

/// An event already written.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    name: String,
    count: i32,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// What to write for an event: a new Event, or a bump of an earlier one.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    Create { name: String },
    Bump(Written),
}

/// Events written lately, oldest dropped first.
#[derive(Debug, Default)]
struct Correlator {
    written: HashMap<EventKey, Written>,
    order: VecDeque<EventKey>,
}

impl Correlator {
    /// Decides how to write the event `key` about object `name` at `now`
    /// and remembers it.
    fn observe(&mut self, key: EventKey, name: &str, now: DateTime<Utc>) -> Write {
        if let Some(seen) = self.written.get_mut(&key)
            && now - seen.last < DEDUP_WINDOW
        {
            seen.count += 1;
            seen.last = now;
            return Write::Bump(seen.clone());
        }
        let event_name = format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default());
        if !self.written.contains_key(&key) {
            if self.written.len() >= REMEMBERED {
                while let Some(oldest) = self.order.pop_front() {
                    if self.written.remove(&oldest).is_some() {
                        break;
                    }
                }
            }
            self.order.push_back(key.clone());
        }
        self.written.insert(
            key,
            Written {
                name: event_name.clone(),
                count: 1,
                first: now,
                last: now,
            },
        );
        Write::Create { name: event_name }
    }

    /// Forgets `key` (its Event is gone), so the next repeat creates anew.
    fn forget(&mut self, key: &EventKey) {
        self.written.remove(key);
    }
}

/// The process's event correlator. One for all components is enough: the
/// key holds the source, so components never share an entry.
static CORRELATOR: LazyLock<Mutex<Correlator>> = LazyLock::new(Default::default);

fn correlator() -> std::sync::MutexGuard<'static, Correlator> {
    CORRELATOR.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who reports an event: the component and, for a kubelet, its node.
#[derive(Debug, Clone)]
pub struct Source {
    /// `kubelet`, `default-scheduler`, a controller's name.
    pub component: String,
    /// The node, for a kubelet.
    pub host: Option<String>,
}

/// Records events for one component (upstream's EventRecorder).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    source: Source,
}

impl Recorder {
    /// A recorder for `component` (running on `host`, for a kubelet).
    pub fn new(client: kube::Client, component: &str, host: Option<String>) -> Self {
        Self {
            client,
            source: Source {
                component: component.into(),
                host,
            },
        }
    }

    /// Records an event about `object`.
    pub async fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        kind: &str,
        reason: &str,
        message: &str,
    ) {
        record(&self.client, &self.source, object, kind, reason, message).await;
    }
}

/// Records an event about `object`, or counts a repeat of it.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    source: &Source,
    object: &K,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let meta = object.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    // Events about cluster-scoped objects live in `default`, as upstream's.
    let home = if namespace.is_empty() {
        "default"
    } else {
        namespace.as_str()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), home);
    let name = meta.name.clone().unwrap_or_default();
    let key: EventKey = [
        source.component.clone(),
        source.host.clone().unwrap_or_default(),
        K::kind(&()).to_string(),
        namespace.clone(),
        name.clone(),
        meta.uid.clone().unwrap_or_default(),
        kind.to_string(),
        reason.to_string(),
        message.to_string(),
    ];
    let now = Utc::now();
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let write = correlator().observe(key.clone(), &name, now);
    let event_name = match write {
        Write::Bump(seen) => {
            let patch = json!({"count": seen.count, "lastTimestamp": stamp(seen.last)});
            match api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // Expired or deleted: start over with a new Event.
                    correlator().forget(&key);
                    match correlator().observe(key, &name, now) {
                        Write::Create { name } => name,
                        Write::Bump(seen) => seen.name,
                    }
                }
                Err(e) => {
                    tracing::debug!(err = %e, reason, "counting a repeated event");
                    return;
                }
            }
        }
        Write::Create { name } => name,
    };
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name, "namespace": home},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": name, "namespace": namespace, "uid": meta.uid},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": source.component, "host": source.host},
        "reportingComponent": source.component,
        "reportingInstance": source.host.clone().unwrap_or_else(|| source.component.clone()),
        "firstTimestamp": stamp(now),
        "lastTimestamp": stamp(now),
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    if let Err(e) = api.create(&Default::default(), &event).await {
        tracing::debug!(err = %e, reason, "recording an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> EventKey {
        [
            "scheduler",
            "",
            "Pod",
            "default",
            "web",
            "u1",
            "Warning",
            "FailedScheduling",
            message,
        ]
        .map(String::from)
    }

    #[test]
    fn repeats_bump_the_first_event_within_the_window() {
        let mut correlator = Correlator::default();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let Write::Create { name } = correlator.observe(key("no fit"), "web", t0) else {
            panic!("first sighting creates");
        };
        assert!(name.starts_with("web."));
        let later = t0 + chrono::TimeDelta::seconds(30);
        let Write::Bump(seen) = correlator.observe(key("no fit"), "web", later) else {
            panic!("a repeat bumps");
        };
        assert_eq!(
            (seen.name.as_str(), seen.count, seen.first, seen.last),
            (name.as_str(), 2, t0, later)
        );
        // Another message is another event.
        assert!(matches!(
            correlator.observe(key("other"), "web", later),
            Write::Create { .. }
        ));
        // Past the window (counted from the last sighting) it starts over.
        let much_later = later + DEDUP_WINDOW;
        assert!(matches!(
            correlator.observe(key("no fit"), "web", much_later),
            Write::Create { .. }
        ));
        correlator.forget(&key("other"));
        assert!(matches!(
            correlator.observe(key("other"), "web", much_later),
            Write::Create { .. }
        ));
    }

    #[test]
    fn the_oldest_entries_are_dropped_when_full() {
        let mut correlator = Correlator::default();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        for i in 0..=REMEMBERED {
            correlator.observe(key(&i.to_string()), "web", t0);
        }
        assert_eq!(correlator.written.len(), REMEMBERED);
        assert!(!correlator.written.contains_key(&key("0")));
        assert!(matches!(
            correlator.observe(key("1"), "web", t0),
            Write::Bump(_)
        ));
    }
}
