//! One priority level's seats and queues: shuffle sharding picks a flow's
//! queue, fair queuing in virtual time (measured in seat-seconds) picks
//! which queue's head runs next (upstream's queueset, KEP-1040).
//!
//! Pure state: the caller passes the clock and is woken through the
//! one-shot channel a waiting request gets; the level's mutex guards it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

/// Estimated service time of one seat: the work a request is charged on
/// dispatch is `seats × G`, corrected by its real duration when it ends.
const G: f64 = 0.003;

/// A queued level's shape (`limitResponse.queuing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queuing {
    /// `queues`.
    pub queues: usize,
    /// `handSize`.
    pub hand_size: usize,
    /// `queueLengthLimit`.
    pub queue_length_limit: usize,
}

/// How a level answers when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Never queued nor refused (`type: Exempt`).
    Exempt,
    /// Refused at once when full (`limitResponse.type: Reject`).
    Reject,
    /// Queued (`limitResponse.type: Queue`).
    Queue(Queuing),
}

/// What one request is, for the dumps and for accounting.
#[derive(Debug)]
pub struct Descr {
    /// The FlowSchema that matched.
    pub flow_schema: String,
    /// The flow distinguisher (user or namespace), "" for none.
    pub distinguisher: String,
    /// Seats held while executing.
    pub seats: u32,
    /// Who sent it (for `includeRequestDetails`).
    pub user: String,
    /// The request (for `includeRequestDetails`).
    pub info: Arc<crate::apiserver::request::RequestInfo>,
}

/// Why a request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Its queue was full.
    QueueFull,
    /// A Reject level had no room.
    ConcurrencyLimit,
    /// It waited in its queue longer than allowed.
    TimeOut,
}

impl Rejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue-full",
            Self::ConcurrencyLimit => "concurrency-limit",
            Self::TimeOut => "time-out",
        }
    }
}

/// The answer to an arriving request.
#[derive(Debug)]
pub enum Admission {
    /// Run now.
    Execute,
    /// Wait for the channel, then run (or give up with [`QueueSet::cancel`]).
    Wait(oneshot::Receiver<()>),
    /// Refused.
    Reject(Rejection),
}

struct Waiting {
    id: u64,
    descr: Arc<Descr>,
    arrived: Instant,
    arrived_at: SystemTime,
    arrival_r: f64,
    wake: oneshot::Sender<()>,
}

impl Waiting {
    fn work(&self) -> f64 {
        f64::from(self.descr.seats) * G
    }
}

struct Executing {
    descr: Arc<Descr>,
    queue: Option<usize>,
    arrived_at: SystemTime,
    started: Instant,
    started_at: SystemTime,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    next_dispatch_r: f64,
    executing: usize,
    seats_in_use: u32,
}

impl Queue {
    fn waiting_work(&self) -> f64 {
        self.waiting.iter().map(Waiting::work).sum()
    }
}

/// Counters kept for the `dump_priority_levels` columns.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Requests that ran.
    pub dispatched: u64,
    /// Requests refused on arrival.
    pub rejected: u64,
    /// Requests that left their queue before running.
    pub cancelled: u64,
}

/// Seat demand over a period (seats in use plus seats waiting), for borrowing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Demand {
    /// Time-weighted mean.
    pub average: f64,
    /// Time-weighted standard deviation.
    pub stddev: f64,
    /// Highest value seen.
    pub high_watermark: f64,
    /// Time-weighted mean of seats in use over the limit (0–1).
    pub utilization: f64,
}

#[derive(Default)]
struct DemandIntegrator {
    seconds: f64,
    sum: f64,
    sum_squares: f64,
    high_watermark: f64,
    in_use_sum: f64,
}

/// One level's state.
pub struct QueueSet {
    shape: Shape,
    limit: u32,
    queues: Vec<Queue>,
    executing: HashMap<u64, Executing>,
    seats_in_use: u32,
    seats_waiting: u32,
    virtual_r: f64,
    last: Instant,
    robin: usize,
    enqueues: usize,
    totals: Totals,
    demand: DemandIntegrator,
    no_accommodation: u64,
}

impl QueueSet {
    /// A level of `shape` with `limit` seats.
    pub fn new(shape: Shape, limit: u32, now: Instant) -> Self {
        let queues = match shape {
            Shape::Queue(q) => (0..q.queues).map(|_| Queue::default()).collect(),
            _ => Vec::new(),
        };
        Self {
            shape,
            limit,
            queues,
            executing: HashMap::new(),
            seats_in_use: 0,
            seats_waiting: 0,
            virtual_r: 0.0,
            last: now,
            robin: 0,
            enqueues: 0,
            totals: Totals::default(),
            demand: DemandIntegrator::default(),
            no_accommodation: 0,
        }
    }

    /// The level's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Seats the level may use now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Changes the seats the level may use, dispatching what now fits.
    pub fn set_limit(&mut self, limit: u32, now: Instant) {
        self.advance(now);
        self.limit = limit;
        self.dispatch(now);
    }

    /// A request `id` of `descr` arrives; `hash` picks its queues.
    pub fn arrive(&mut self, id: u64, descr: Arc<Descr>, hash: u64, now: Instant) -> Admission {
        self.advance(now);
        let queuing = match self.shape {
            Shape::Exempt => {
                self.start(id, descr, None, SystemTime::now(), now);
                return Admission::Execute;
            }
            Shape::Reject => {
                if self.fits(descr.seats) {
                    self.start(id, descr, None, SystemTime::now(), now);
                    return Admission::Execute;
                }
                self.totals.rejected += 1;
                return Admission::Reject(Rejection::ConcurrencyLimit);
            }
            Shape::Queue(q) => q,
        };
        let queue = self.choose_queue(hash, queuing);
        if self.seats_in_use >= self.limit
            && self.queues[queue].waiting.len() >= queuing.queue_length_limit
        {
            self.totals.rejected += 1;
            return Admission::Reject(Rejection::QueueFull);
        }
        let (wake, woken) = oneshot::channel();
        self.seats_waiting += descr.seats;
        let arrival_r = self.virtual_r;
        self.queues[queue].waiting.push_back(Waiting {
            id,
            descr,
            arrived: now,
            arrived_at: SystemTime::now(),
            arrival_r,
            wake,
        });
        self.dispatch(now);
        if self.executing.contains_key(&id) {
            Admission::Execute
        } else {
            Admission::Wait(woken)
        }
    }

    /// A waiting request gives up (timed out or its client left). False
    /// when it was dispatched meanwhile: then it runs and must [`finish`](Self::finish).
    pub fn cancel(&mut self, id: u64, now: Instant) -> bool {
        self.advance(now);
        for queue in &mut self.queues {
            if let Some(at) = queue.waiting.iter().position(|w| w.id == id) {
                let gone = queue.waiting.remove(at).expect("position is in range");
                self.seats_waiting -= gone.descr.seats;
                self.totals.cancelled += 1;
                self.dispatch(now);
                return true;
            }
        }
        false
    }

    /// A running request ends; what now fits is dispatched.
    pub fn finish(&mut self, id: u64, now: Instant) {
        self.advance(now);
        let Some(done) = self.executing.remove(&id) else {
            return;
        };
        self.seats_in_use -= done.descr.seats;
        if let Some(index) = done.queue {
            let queue = &mut self.queues[index];
            queue.executing -= 1;
            queue.seats_in_use -= done.descr.seats;
            // Charge the real duration instead of the estimate.
            let took = now.duration_since(done.started).as_secs_f64();
            queue.next_dispatch_r += f64::from(done.descr.seats) * (took - G);
        }
        self.dispatch(now);
    }

    /// Seats in use, requests running, requests waiting.
    pub fn load(&self) -> (u32, usize, usize) {
        (
            self.seats_in_use,
            self.executing.len(),
            self.queues.iter().map(|q| q.waiting.len()).sum(),
        )
    }

    /// The dump counters.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Times a queue's head did not fit and nothing was dispatched.
    pub fn no_accommodation(&self) -> u64 {
        self.no_accommodation
    }

    /// The virtual time now, in seat-seconds.
    pub fn virtual_time(&self) -> f64 {
        self.virtual_r
    }

    /// Demand since the last call, and starts a new period.
    pub fn take_demand(&mut self, now: Instant) -> Demand {
        self.advance(now);
        let d = std::mem::take(&mut self.demand);
        let current = f64::from(self.seats_in_use + self.seats_waiting);
        self.demand.high_watermark = current;
        if d.seconds <= 0.0 {
            return Demand {
                average: current,
                stddev: 0.0,
                high_watermark: d.high_watermark.max(current),
                utilization: self.utilization(),
            };
        }
        let average = d.sum / d.seconds;
        let variance = (d.sum_squares / d.seconds - average * average).max(0.0);
        Demand {
            average,
            stddev: variance.sqrt(),
            high_watermark: d.high_watermark,
            utilization: if self.limit == 0 {
                0.0
            } else {
                (d.in_use_sum / d.seconds / f64::from(self.limit)).min(1.0)
            },
        }
    }

    fn utilization(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            (f64::from(self.seats_in_use) / f64::from(self.limit)).min(1.0)
        }
    }

    /// Moves the clock: integrates demand and advances virtual time at
    /// min(demand, limit) shared by the active queues.
    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        let demand = f64::from(self.seats_in_use + self.seats_waiting);
        self.demand.seconds += dt;
        self.demand.sum += demand * dt;
        self.demand.sum_squares += demand * demand * dt;
        self.demand.in_use_sum += f64::from(self.seats_in_use) * dt;
        self.demand.high_watermark = self.demand.high_watermark.max(demand);
        let active = self
            .queues
            .iter()
            .filter(|q| !q.waiting.is_empty() || q.executing > 0)
            .count();
        if active > 0 {
            let rate = demand.min(f64::from(self.limit)) / active as f64;
            self.virtual_r += rate * dt;
        }
    }

    /// Whether `seats` more fit (a wide request runs alone if nothing else does).
    fn fits(&self, seats: u32) -> bool {
        self.seats_in_use + seats <= self.limit || self.seats_in_use == 0
    }

    /// Shuffle sharding: of the flow's hand of queues, the one with the
    /// least waiting work (scanned from a rotating offset).
    fn choose_queue(&mut self, hash: u64, q: Queuing) -> usize {
        let hand = deal(hash, q.queues, q.hand_size);
        let offset = self.enqueues % hand.len();
        self.enqueues = self.enqueues.wrapping_add(1);
        let mut best = hand[offset];
        let mut best_work = self.queues[best].waiting_work();
        for i in 1..hand.len() {
            let candidate = hand[(offset + i) % hand.len()];
            let work = self.queues[candidate].waiting_work();
            if work < best_work {
                best = candidate;
                best_work = work;
            }
        }
        best
    }

    /// Dispatches queue heads in fair order while they fit.
    fn dispatch(&mut self, now: Instant) {
        while self.seats_waiting > 0 {
            let Some(index) = self.next_queue() else {
                return;
            };
            let queue = &mut self.queues[index];
            let head = queue.waiting.front().expect("next_queue has a head");
            let seats = head.descr.seats;
            if !(self.seats_in_use + seats <= self.limit || self.seats_in_use == 0) {
                self.no_accommodation += 1;
                return;
            }
            let head = queue.waiting.pop_front().expect("front exists");
            // A queue that was idle starts at its head's arrival, not behind.
            queue.next_dispatch_r = queue.next_dispatch_r.max(head.arrival_r) + head.work();
            queue.executing += 1;
            queue.seats_in_use += seats;
            self.seats_waiting -= seats;
            self.robin = index;
            let Waiting {
                id,
                descr,
                arrived_at,
                wake,
                ..
            } = head;
            self.start(id, descr, Some(index), arrived_at, now);
            // A waiter that has gone is cleaned up by its own `cancel` (false).
            let _ = wake.send(());
        }
    }

    /// The queue whose head finishes first in virtual time, round-robin
    /// from the last dispatched on ties.
    fn next_queue(&self) -> Option<usize> {
        let n = self.queues.len();
        let mut best: Option<(usize, f64)> = None;
        for step in 1..=n {
            let index = (self.robin + step) % n;
            let queue = &self.queues[index];
            let Some(head) = queue.waiting.front() else {
                continue;
            };
            let finish = queue.next_dispatch_r.max(head.arrival_r) + head.work();
            if best.is_none_or(|(_, f)| finish < f) {
                best = Some((index, finish));
            }
        }
        best.map(|(i, _)| i)
    }

    fn start(
        &mut self,
        id: u64,
        descr: Arc<Descr>,
        queue: Option<usize>,
        arrived_at: SystemTime,
        now: Instant,
    ) {
        self.seats_in_use += descr.seats;
        self.totals.dispatched += 1;
        self.executing.insert(
            id,
            Executing {
                descr,
                queue,
                arrived_at,
                started: now,
                started_at: SystemTime::now(),
            },
        );
    }

    /// The level's queues and requests, for the debug dumps.
    pub fn dump(&self) -> LevelDump {
        let queues = self
            .queues
            .iter()
            .map(|q| QueueDump {
                waiting: q.waiting.len(),
                executing: q.executing,
                seats_in_use: q.seats_in_use,
                next_dispatch_r: q.next_dispatch_r,
                initial_seats_sum: q.waiting.iter().map(|w| w.descr.seats).sum(),
                total_work: q.waiting_work(),
            })
            .collect();
        let mut requests = Vec::new();
        for (index, q) in self.queues.iter().enumerate() {
            for (position, w) in q.waiting.iter().enumerate() {
                requests.push(RequestDump {
                    descr: w.descr.clone(),
                    queue: Some((index, Some(position))),
                    arrived_at: w.arrived_at,
                    started_at: None,
                    waited: w.arrived.elapsed(),
                });
            }
        }
        let mut executing: Vec<&Executing> = self.executing.values().collect();
        executing.sort_by_key(|e| (e.queue.is_none(), e.queue, e.started));
        for e in executing {
            requests.push(RequestDump {
                descr: e.descr.clone(),
                queue: e.queue.map(|i| (i, None)),
                arrived_at: e.arrived_at,
                started_at: Some(e.started_at),
                waited: Duration::ZERO,
            });
        }
        LevelDump {
            queues,
            requests,
            totals: self.totals,
            executing: self.executing.len(),
            waiting: self.queues.iter().map(|q| q.waiting.len()).sum(),
        }
    }
}

/// One queue in `dump_queues`.
#[derive(Debug, Clone)]
pub struct QueueDump {
    /// Requests waiting.
    pub waiting: usize,
    /// Requests running that came from it.
    pub executing: usize,
    /// Their seats.
    pub seats_in_use: u32,
    /// Its virtual finish time so far.
    pub next_dispatch_r: f64,
    /// Seats of the waiting requests.
    pub initial_seats_sum: u32,
    /// Work of the waiting requests, in seat-seconds.
    pub total_work: f64,
}

/// One request in `dump_requests`.
#[derive(Debug, Clone)]
pub struct RequestDump {
    /// What it is.
    pub descr: Arc<Descr>,
    /// Its queue and position (None position: running from that queue);
    /// None: running without a queue.
    pub queue: Option<(usize, Option<usize>)>,
    /// When it arrived.
    pub arrived_at: SystemTime,
    /// When it started; None while it waits.
    pub started_at: Option<SystemTime>,
    /// How long it has waited so far.
    pub waited: Duration,
}

/// A level's state for the dumps.
#[derive(Debug, Clone)]
pub struct LevelDump {
    /// Its queues, by index.
    pub queues: Vec<QueueDump>,
    /// Waiting, then running requests.
    pub requests: Vec<RequestDump>,
    /// Its counters.
    pub totals: Totals,
    /// Requests running.
    pub executing: usize,
    /// Requests waiting.
    pub waiting: usize,
}

/// Deals a hand of `hand` distinct queues out of `deck` from `hash`
/// (upstream's shuffle-sharding dealer: mixed radix digits of the hash,
/// each drawn from the cards left).
pub fn deal(mut hash: u64, deck: usize, hand: usize) -> Vec<usize> {
    let hand = hand.clamp(1, deck.max(1));
    let mut draws: Vec<usize> = Vec::with_capacity(hand);
    for i in 0..hand {
        let left = (deck - i) as u64;
        draws.push((hash % left) as usize);
        hash /= left;
    }
    // Turn each draw (an index among the cards left) into a card.
    (0..hand)
        .map(|i| {
            let mut card = draws[i];
            for j in (0..i).rev() {
                if card >= draws[j] {
                    card += 1;
                }
            }
            card
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descr(seats: u32, flow: &str) -> Arc<Descr> {
        Arc::new(Descr {
            flow_schema: "fs".into(),
            distinguisher: flow.into(),
            seats,
            user: String::new(),
            info: Arc::new(crate::apiserver::request::RequestInfo::new(
                &axum::http::Method::GET,
                &axum::http::Uri::from_static("/"),
            )),
        })
    }

    fn queued(queues: usize, hand: usize, limit_len: usize) -> Shape {
        Shape::Queue(Queuing {
            queues,
            hand_size: hand,
            queue_length_limit: limit_len,
        })
    }

    #[test]
    fn dealt_hands_are_distinct_and_in_the_deck() {
        for hash in [0u64, 1, 7, 12345, u64::MAX, 0xdead_beef_cafe] {
            let hand = deal(hash, 64, 8);
            let mut sorted = hand.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 8, "{hand:?}");
            assert!(hand.iter().all(|&c| c < 64));
        }
        assert_eq!(deal(5, 1, 1), vec![0]);
        // The first card is the hash modulo the deck.
        assert_eq!(deal(70, 64, 2)[0], 6);
    }

    #[test]
    fn exempt_runs_everything() {
        let now = Instant::now();
        let mut qs = QueueSet::new(Shape::Exempt, 0, now);
        for id in 0..5 {
            assert!(matches!(
                qs.arrive(id, descr(1, "a"), 0, now),
                Admission::Execute
            ));
        }
        assert_eq!(qs.load(), (5, 5, 0));
    }

    #[test]
    fn reject_levels_refuse_past_their_limit() {
        let now = Instant::now();
        let mut qs = QueueSet::new(Shape::Reject, 2, now);
        assert!(matches!(
            qs.arrive(1, descr(1, "a"), 0, now),
            Admission::Execute
        ));
        assert!(matches!(
            qs.arrive(2, descr(1, "a"), 0, now),
            Admission::Execute
        ));
        assert!(matches!(
            qs.arrive(3, descr(1, "a"), 0, now),
            Admission::Reject(Rejection::ConcurrencyLimit)
        ));
        qs.finish(1, now);
        assert!(matches!(
            qs.arrive(4, descr(1, "a"), 0, now),
            Admission::Execute
        ));
        // Wider than the limit: runs only alone.
        let mut alone = QueueSet::new(Shape::Reject, 2, now);
        assert!(matches!(
            alone.arrive(1, descr(5, "a"), 0, now),
            Admission::Execute
        ));
        assert!(matches!(
            alone.arrive(2, descr(1, "a"), 0, now),
            Admission::Reject(_)
        ));
    }

    #[test]
    fn full_queues_refuse_and_finishing_dispatches_the_next() {
        let now = Instant::now();
        let mut qs = QueueSet::new(queued(1, 1, 1), 1, now);
        assert!(matches!(
            qs.arrive(1, descr(1, "a"), 0, now),
            Admission::Execute
        ));
        let Admission::Wait(mut woken) = qs.arrive(2, descr(1, "a"), 0, now) else {
            panic!("the second waits");
        };
        assert!(matches!(
            qs.arrive(3, descr(1, "a"), 0, now),
            Admission::Reject(Rejection::QueueFull)
        ));
        assert!(woken.try_recv().is_err());
        qs.finish(1, now + Duration::from_millis(10));
        assert!(woken.try_recv().is_ok(), "dispatched on finish");
        assert_eq!(qs.load(), (1, 1, 0));
        assert!(!qs.cancel(2, now), "already running");
        let totals = qs.totals();
        assert_eq!((totals.dispatched, totals.rejected), (2, 1));
    }

    #[test]
    fn a_cancelled_waiter_leaves_its_queue() {
        let now = Instant::now();
        let mut qs = QueueSet::new(queued(4, 2, 10), 1, now);
        qs.arrive(1, descr(1, "a"), 3, now);
        let Admission::Wait(_) = qs.arrive(2, descr(1, "a"), 3, now) else {
            panic!("waits");
        };
        assert!(qs.cancel(2, now));
        assert_eq!(qs.load(), (1, 1, 0));
        assert_eq!(qs.totals().cancelled, 1);
    }

    #[test]
    fn fair_queuing_alternates_between_a_flood_and_a_trickle() {
        let start = Instant::now();
        let mut qs = QueueSet::new(queued(64, 1, 1000), 1, start);
        let flood_hash = 0; // queue 0
        let trickle_hash = 1; // queue 1
        assert!(matches!(
            qs.arrive(0, descr(1, "flood"), flood_hash, start),
            Admission::Execute
        ));
        let mut waiters = HashMap::new();
        for id in 1..=20 {
            if let Admission::Wait(rx) = qs.arrive(id, descr(1, "flood"), flood_hash, start) {
                waiters.insert(id, rx);
            }
        }
        let Admission::Wait(mut trickle) = qs.arrive(100, descr(1, "trickle"), trickle_hash, start)
        else {
            panic!("waits");
        };
        // After the running flood request, the trickle goes before the rest of the flood.
        qs.finish(0, start + Duration::from_millis(3));
        assert!(trickle.try_recv().is_ok());
        assert!(waiters.get_mut(&1).unwrap().try_recv().is_err());
    }

    #[test]
    fn demand_is_integrated_over_time() {
        let start = Instant::now();
        let mut qs = QueueSet::new(queued(1, 1, 10), 2, start);
        qs.take_demand(start);
        qs.arrive(1, descr(1, "a"), 0, start);
        qs.arrive(2, descr(1, "a"), 0, start);
        qs.arrive(3, descr(1, "a"), 0, start);
        let d = qs.take_demand(start + Duration::from_secs(10));
        assert!((d.average - 3.0).abs() < 1e-9, "{d:?}");
        assert_eq!(d.high_watermark, 3.0);
        assert!((d.utilization - 1.0).abs() < 1e-9);
    }
}
