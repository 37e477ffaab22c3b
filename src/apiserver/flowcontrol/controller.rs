//! API Priority and Fairness: the configuration mirrored from the store,
//! one queue set per priority level, and the admission of each request
//! (classify, estimate its seats, queue or refuse it) — upstream's
//! apf_controller.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::classify::{self, Digest};
use super::concurrency::{self, Claim, Limits};
use super::config::{Config, Distinguisher, LevelSpec, Schema};
use super::metrics::{Flow, FlowSeries, FlowcontrolMetrics, Seats};
use super::queueset::{Admission, Descr, LevelDump, QueueSet, Rejection, Shape};
use super::retry_after::RetryAfter;
use crate::apiserver::mirror::{self, Mirror};
use crate::store::{Event, EventKind, KeyValue, Store};
use crate::telemetry::Metrics;

/// Where FlowSchemas and PriorityLevelConfigurations live in the store.
pub const PREFIX: &str = "/registry/flowcontrol.apiserver.k8s.io/";

/// The two resources' ranges, mirrored one by one.
const RANGES: [&str; 2] = [
    "/registry/flowcontrol.apiserver.k8s.io/flowschemas/",
    "/registry/flowcontrol.apiserver.k8s.io/prioritylevelconfigurations/",
];

/// How long a request may wait in its queue: a quarter of the 60 s
/// request timeout, as upstream.
const WAIT_LIMIT: Duration = Duration::from_secs(15);

/// How often seats are re-allocated between levels.
const ADJUST_PERIOD: Duration = Duration::from_secs(10);

/// One priority level: its queues and what it was configured with.
pub struct Level {
    name: String,
    state: Mutex<LevelState>,
}

struct LevelState {
    spec: LevelSpec,
    limits: Limits,
    max_seats: u32,
    queues: QueueSet,
    retry: RetryAfter,
    smoothed: f64,
    no_accommodation_seen: u64,
}

impl Level {
    fn lock(&self) -> std::sync::MutexGuard<'_, LevelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends request `id` (it ran, or gave up after being dispatched).
    fn finish(&self, id: u64) {
        self.lock().queues.finish(id, Instant::now());
    }
}

/// The configuration in force and the levels it names.
struct Dispatch {
    schemas: Vec<Schema>,
    /// Each schema's metric series, made on its first request.
    series: Vec<OnceLock<Arc<FlowSeries>>>,
    levels: BTreeMap<String, Arc<Level>>,
}

/// The flow-control controller.
pub struct PriorityAndFairness {
    /// `--max-requests-inflight` + `--max-mutating-requests-inflight`.
    server_seats: u32,
    dispatch: RwLock<Arc<Dispatch>>,
    /// The stored objects by key (the mirror's copy).
    objects: Mutex<BTreeMap<String, Value>>,
    /// Object counts by resource label, for LIST widths.
    object_counts: RwLock<HashMap<String, i64>>,
    metrics: FlowcontrolMetrics,
    next_id: AtomicU64,
    /// Bumped on every configuration change (for the status writer).
    changes: watch::Sender<u64>,
    clock: Instant,
    mirror: std::sync::OnceLock<Mirror>,
}

/// A refused request: the advice and the names for headers.
#[derive(Debug)]
pub struct Refusal {
    /// Why.
    pub reason: Rejection,
    /// `Retry-After` seconds.
    pub retry_after: u64,
    /// The FlowSchema and priority level UIDs.
    pub uids: (String, String),
}

/// An admitted request: its seats are held until this is dropped.
pub struct Ticket {
    level: Arc<Level>,
    id: u64,
    series: Arc<FlowSeries>,
    seats: u32,
    started: Instant,
    watch: bool,
    /// The FlowSchema and priority level UIDs.
    pub uids: (String, String),
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.level.finish(self.id);
        self.series
            .finished(self.seats, self.started.elapsed().as_secs_f64(), self.watch);
    }
}

/// A request waiting in a queue; leaving early (the client went away)
/// takes it out again.
struct Queued {
    level: Arc<Level>,
    id: u64,
    settled: bool,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.settled && !self.level.lock().queues.cancel(self.id, Instant::now()) {
            // Dispatched just as its client left: give the seats back.
            self.level.finish(self.id);
        }
    }
}

impl PriorityAndFairness {
    /// Starts mirroring the configuration (listed before it returns) with
    /// `server_seats` seats to share.
    pub async fn start(
        store: Arc<dyn Store>,
        server_seats: u32,
        metrics: &Metrics,
    ) -> crate::store::Result<Arc<Self>> {
        let this = Arc::new(Self {
            server_seats,
            dispatch: RwLock::new(Arc::new(Dispatch {
                schemas: Vec::new(),
                series: Vec::new(),
                levels: BTreeMap::new(),
            })),
            objects: Mutex::new(BTreeMap::new()),
            object_counts: RwLock::new(HashMap::new()),
            metrics: FlowcontrolMetrics::new(metrics),
            next_id: AtomicU64::new(1),
            changes: watch::channel(0).0,
            clock: Instant::now(),
            mirror: std::sync::OnceLock::new(),
        });
        let mirror = Mirror::start(store, &RANGES, this.clone()).await?;
        let _ = this.mirror.set(mirror);
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(ADJUST_PERIOD);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match weak.upgrade() {
                    Some(this) => this.adjust(),
                    None => return,
                }
            }
        });
        Ok(this)
    }

    /// Notified on every configuration change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records how many objects of a resource (`pods`, `deployments.apps`) are stored.
    pub fn object_count(&self, resource: &str, count: i64) {
        self.object_counts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(resource.to_string(), count);
    }

    fn current(&self) -> Arc<Dispatch> {
        self.dispatch
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Classifies the request, then runs it, queues it, or refuses it.
    pub async fn admit(&self, digest: Digest<'_>) -> Result<Ticket, Refusal> {
        let dispatch = self.current();
        let index = dispatch
            .schemas
            .iter()
            .position(|s| classify::matches(&s.rules, &digest))
            .or_else(|| dispatch.schemas.iter().position(|s| s.name == "catch-all"))
            .expect("catch-all is always configured");
        let schema = &dispatch.schemas[index];
        let level = dispatch
            .levels
            .get(&schema.level)
            .expect("schemas name configured levels")
            .clone();
        let info = digest.info;
        let (shape, max_seats, pl_uid) = {
            let state = level.lock();
            (
                state.queues.shape(),
                state.max_seats,
                state.spec.uid.clone(),
            )
        };
        let uids = (schema.uid.clone(), pl_uid);
        let series = dispatch.series[index]
            .get_or_init(|| {
                Arc::new(self.metrics.series(Flow {
                    priority_level: schema.level.clone(),
                    flow_schema: schema.name.clone(),
                }))
            })
            .clone();
        let seats = if shape == Shape::Exempt {
            1
        } else {
            let counts = self.object_counts.read().unwrap_or_else(|p| p.into_inner());
            super::width::seats(info, max_seats, |label| counts.get(label).copied())
        };
        let distinguisher = match (shape, schema.distinguisher) {
            (Shape::Queue(q), Some(d)) if q.queues > 1 => match d {
                Distinguisher::ByUser => digest.user.name.clone(),
                Distinguisher::ByNamespace => digest.namespace().to_string(),
            },
            _ => String::new(),
        };
        let hash = match shape {
            Shape::Queue(q) if q.queues > 1 => flow_hash(&schema.name, &distinguisher),
            _ => 0,
        };
        let descr = Arc::new(Descr {
            flow_schema: schema.name.clone(),
            distinguisher,
            seats,
            user: digest.user.name.clone(),
            info: digest.info.clone(),
        });
        if shape != Shape::Exempt {
            series.estimated(seats);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let arrived = Instant::now();
        let admission = level.lock().queues.arrive(id, descr, hash, arrived);
        let ticket = |level: Arc<Level>, series: Arc<FlowSeries>, uids| {
            series.started(seats);
            Ticket {
                level,
                id,
                series,
                seats,
                started: Instant::now(),
                watch: info.verb == "watch",
                uids,
            }
        };
        let refuse = |reason: Rejection, level: &Level, series: &FlowSeries, uids| {
            series.rejected(reason.as_str());
            let second = self.clock.elapsed().as_secs();
            Refusal {
                reason,
                retry_after: level.lock().retry.dropped(second),
                uids,
            }
        };
        match admission {
            Admission::Execute => {
                if shape != Shape::Exempt {
                    series.not_queued();
                }
                Ok(ticket(level, series, uids))
            }
            Admission::Reject(reason) => Err(refuse(reason, &level, &series, uids)),
            Admission::Wait(woken) => {
                let length = level.lock().queues.load().2;
                series.enqueued(seats, length);
                let mut queued = Queued {
                    level: level.clone(),
                    id,
                    settled: false,
                };
                let outcome = tokio::time::timeout(WAIT_LIMIT, woken).await;
                let dispatched = match outcome {
                    Ok(Ok(())) => true,
                    // Timed out (or the level went away): leave the queue,
                    // unless it was dispatched in the meantime.
                    _ => !level.lock().queues.cancel(id, Instant::now()),
                };
                queued.settled = true;
                series.dequeued(seats, arrived.elapsed().as_secs_f64());
                if dispatched {
                    Ok(ticket(level, series, uids))
                } else {
                    Err(refuse(Rejection::TimeOut, &level, &series, uids))
                }
            }
        }
    }

    /// Rebuilds the levels from the stored objects, keeping the queues of
    /// levels whose shape did not change.
    fn reconfigure(&self) {
        let config = {
            let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            Config::from_objects(objects.values())
        };
        let old = self.current();
        let specs: Vec<&LevelSpec> = config.levels.values().collect();
        let shares: Vec<_> = specs.iter().map(|s| s.share()).collect();
        let limits = concurrency::limits(self.server_seats, &shares);
        let now = Instant::now();
        let mut levels = BTreeMap::new();
        for (spec, limits) in specs.into_iter().zip(limits) {
            let max_seats = match spec.shape {
                Shape::Queue(q) => concurrency::max_seats(limits.nominal, q.hand_size),
                _ => 10,
            };
            let kept = old
                .levels
                .get(&spec.name)
                .filter(|l| l.lock().queues.shape() == spec.shape)
                .cloned();
            let level = match kept {
                Some(level) => {
                    let mut state = level.lock();
                    state.spec = spec.clone();
                    state.limits = limits;
                    state.max_seats = max_seats;
                    drop(state);
                    level
                }
                None => Arc::new(Level {
                    name: spec.name.clone(),
                    state: Mutex::new(LevelState {
                        spec: spec.clone(),
                        limits,
                        max_seats,
                        queues: QueueSet::new(spec.shape, limits.initial(), now),
                        retry: RetryAfter::default(),
                        smoothed: f64::from(limits.nominal),
                        no_accommodation_seen: 0,
                    }),
                }),
            };
            levels.insert(spec.name.clone(), level);
        }
        *self.dispatch.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Dispatch {
            series: config.schemas.iter().map(|_| OnceLock::new()).collect(),
            schemas: config.schemas,
            levels,
        });
        self.adjust();
        self.changes.send_modify(|n| *n += 1);
    }

    /// Re-allocates seats between levels from their demand in the last
    /// period: busy levels borrow what idle ones may lend.
    fn adjust(&self) {
        let dispatch = self.current();
        let now = Instant::now();
        let mut remaining: f64 = 0.0;
        let mut limited = Vec::new();
        for level in dispatch.levels.values() {
            let mut state = level.lock();
            let demand = state.queues.take_demand(now);
            state.smoothed = concurrency::smooth(state.smoothed, demand.average, demand.stddev);
            let limits = state.limits;
            remaining += f64::from(limits.nominal);
            let fresh = state.queues.no_accommodation();
            self.metrics
                .no_accommodation(&level.name, fresh - state.no_accommodation_seen);
            state.no_accommodation_seen = fresh;
            let mut seats = Seats {
                nominal: limits.nominal,
                current: 0,
                lower: limits.min(),
                upper: limits.max(),
                target: 0.0,
                demand: [
                    demand.high_watermark,
                    demand.average,
                    demand.stddev,
                    state.smoothed,
                ],
                utilization: demand.utilization,
            };
            if state.queues.shape() == Shape::Exempt {
                let current = (limits.min() as f64).max(demand.high_watermark);
                remaining -= current;
                seats.current = current as u32;
                seats.target = current;
                state.queues.set_limit(seats.current, now);
                self.metrics.seats(&level.name, &seats);
                continue;
            }
            let lower =
                f64::from(limits.min()).max(f64::from(limits.nominal).min(demand.high_watermark));
            let claim = Claim {
                lower,
                upper: f64::from(limits.max()),
                target: lower.max(state.smoothed),
            };
            drop(state);
            limited.push((level.clone(), claim, seats));
        }
        let min_sum: f64 = limited
            .iter()
            .map(|(_, _, seats)| f64::from(seats.lower))
            .sum();
        let lower_sum: f64 = limited.iter().map(|(_, c, _)| c.lower).sum();
        let (allocations, fair) = if remaining <= min_sum {
            (
                limited.iter().map(|(_, _, seats)| seats.lower).collect(),
                0.0,
            )
        } else if remaining <= lower_sum {
            let scale = (remaining - min_sum) / (lower_sum - min_sum).max(f64::MIN_POSITIVE);
            (
                limited
                    .iter()
                    .map(|(_, c, seats)| {
                        let min = f64::from(seats.lower);
                        (min + ((c.lower - min) * scale).round()) as u32
                    })
                    .collect(),
                0.0,
            )
        } else {
            let claims: Vec<Claim> = limited.iter().map(|(_, c, _)| *c).collect();
            concurrency::allocate(remaining, &claims)
        };
        self.metrics.fair_fraction(fair);
        for ((level, claim, mut seats), allocation) in limited.into_iter().zip(allocations) {
            seats.current = allocation.max(1);
            seats.target = claim.target;
            level.lock().queues.set_limit(seats.current, now);
            self.metrics.seats(&level.name, &seats);
        }
    }

    /// Every level's state, by name.
    pub fn dump(&self) -> Vec<(String, LevelDump)> {
        self.current()
            .levels
            .iter()
            .map(|(name, level)| (name.clone(), level.lock().queues.dump()))
            .collect()
    }
}

/// The flow's hash: SHA-256 of the schema's name, a NUL and the distinguisher.
fn flow_hash(schema: &str, distinguisher: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(schema.as_bytes());
    hasher.update([0u8]);
    hasher.update(distinguisher.as_bytes());
    let sum = hasher.finalize();
    u64::from_le_bytes(sum[..8].try_into().expect("8 bytes"))
}

impl mirror::Sink for PriorityAndFairness {
    fn reset(&self, items: &[KeyValue]) {
        {
            let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            objects.clear();
            for kv in items {
                if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                    objects.insert(kv.key.clone(), obj);
                }
            }
        }
        self.reconfigure();
    }

    fn apply(&self, event: &Event) {
        {
            let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            match event.kind {
                EventKind::Deleted => {
                    objects.remove(&event.kv.key);
                }
                EventKind::Created | EventKind::Updated => {
                    match serde_json::from_slice::<Value>(&event.kv.value) {
                        Ok(obj) => {
                            objects.insert(event.kv.key.clone(), obj);
                        }
                        Err(e) => {
                            tracing::warn!(key = %event.kv.key, err = %e, "unreadable flow-control object ignored")
                        }
                    }
                }
            }
        }
        self.reconfigure();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hashes_differ_by_distinguisher_and_are_stable() {
        let a = flow_hash("service-accounts", "system:serviceaccount:a:b");
        assert_eq!(
            a,
            flow_hash("service-accounts", "system:serviceaccount:a:b")
        );
        assert_ne!(
            a,
            flow_hash("service-accounts", "system:serviceaccount:a:c")
        );
        assert_ne!(flow_hash("ab", "c"), flow_hash("a", "bc"));
    }
}
