//! `apiserver_flowcontrol_*`: what API Priority and Fairness dispatched,
//! queued and refused, and each level's seats, under upstream's names,
//! labels and stability levels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::telemetry::{Descriptor, Metrics, StabilityLevel};

const WAIT_BUCKETS: [f64; 13] = [
    0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0,
];
const QUEUE_LENGTH_BUCKETS: [f64; 8] = [0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const SEAT_BUCKETS: [f64; 4] = [1.0, 2.0, 4.0, 10.0];
const UTILIZATION_BUCKETS: [f64; 13] = [
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0,
];
const DEMAND_BUCKETS: [f64; 12] = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0, 2.8, 4.0, 6.0];

/// A series of one flow: a level and a schema.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Flow {
    /// The priority level.
    pub priority_level: String,
    /// The FlowSchema.
    pub flow_schema: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rejected {
    priority_level: String,
    flow_schema: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Waited {
    priority_level: String,
    flow_schema: String,
    execute: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Executed {
    priority_level: String,
    flow_schema: String,
    r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Level {
    priority_level: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Phase {
    phase: &'static str,
    priority_level: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauges = Family<Level, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// One flow's series: the hot ones held, the rare ones looked up.
#[derive(Debug, Clone)]
pub struct FlowSeries {
    flow: Flow,
    dispatched: Counter,
    executing_requests: Gauge,
    executing_seats: Gauge,
    waited: Histogram,
    regular: Histogram,
    estimated: Histogram,
    metrics: FlowcontrolMetrics,
}

impl FlowSeries {
    /// A request was refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.metrics
            .rejected
            .get_or_create(&Rejected {
                priority_level: self.flow.priority_level.clone(),
                flow_schema: self.flow.flow_schema.clone(),
                reason,
            })
            .inc();
    }

    /// A request of `seats` arrived (its estimate).
    pub fn estimated(&self, seats: u32) {
        self.estimated.observe(f64::from(seats));
    }

    /// A request of `seats` joined a queue now `length` long.
    pub fn enqueued(&self, seats: u32, length: usize) {
        let m = &self.metrics;
        m.inqueue_requests.get_or_create(&self.flow).inc();
        m.inqueue_seats
            .get_or_create(&self.flow)
            .inc_by(i64::from(seats));
        m.queue_length
            .get_or_create(&self.flow)
            .observe(length as f64);
    }

    /// A queued request left its queue after `waited` seconds.
    pub fn dequeued(&self, seats: u32, waited: f64) {
        let m = &self.metrics;
        m.inqueue_requests.get_or_create(&self.flow).dec();
        m.inqueue_seats
            .get_or_create(&self.flow)
            .dec_by(i64::from(seats));
        // Upstream records a time-out as `execute="true"` too.
        self.waited.observe(waited);
    }

    /// A request that was not queued waited 0 s.
    pub fn not_queued(&self) {
        self.waited.observe(0.0);
    }

    /// A request of `seats` started running.
    pub fn started(&self, seats: u32) {
        self.dispatched.inc();
        self.executing_requests.inc();
        self.executing_seats.inc_by(i64::from(seats));
    }

    /// A request of `seats` stopped running after `seconds`.
    pub fn finished(&self, seats: u32, seconds: f64, watch: bool) {
        self.executing_requests.dec();
        self.executing_seats.dec_by(i64::from(seats));
        if watch {
            self.metrics
                .execution
                .get_or_create(&Executed {
                    priority_level: self.flow.priority_level.clone(),
                    flow_schema: self.flow.flow_schema.clone(),
                    r#type: "watch",
                })
                .observe(seconds);
        } else {
            self.regular.observe(seconds);
        }
    }
}

/// A level's seat figures, set after each (re)allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seats {
    /// NominalCL.
    pub nominal: u32,
    /// CurrentCL.
    pub current: u32,
    /// Lower bound of the allocation.
    pub lower: u32,
    /// Upper bound of the allocation.
    pub upper: u32,
    /// What it asked for.
    pub target: f64,
    /// Demand high-water mark, mean, deviation and smoothed value.
    pub demand: [f64; 4],
    /// Seats in use over the limit, as a period's mean.
    pub utilization: f64,
}

/// The flow-control series.
#[derive(Debug, Clone)]
pub struct FlowcontrolMetrics {
    rejected: Family<Rejected, Counter>,
    dispatched: Family<Flow, Counter>,
    inqueue_requests: Family<Flow, Gauge>,
    inqueue_seats: Family<Flow, Gauge>,
    executing_requests: Family<Flow, Gauge>,
    executing_seats: Family<Flow, Gauge>,
    wait_duration: Histograms<Waited>,
    execution: Histograms<Executed>,
    queue_length: Histograms<Flow>,
    estimated_seats: Histograms<Flow>,
    nominal: Family<Level, Gauge>,
    current: Family<Level, Gauge>,
    lower: Family<Level, Gauge>,
    upper: Family<Level, Gauge>,
    concurrency_limit: Family<Level, Gauge>,
    target: FloatGauges,
    demand: [FloatGauges; 4],
    fair_fraction: Gauge<f64, std::sync::atomic::AtomicU64>,
    utilization: Histograms<Phase>,
    demand_ratio: Histograms<Level>,
    no_accommodation: Family<Level, Counter>,
}

impl FlowcontrolMetrics {
    /// The series, registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let this = Self {
            rejected: Family::default(),
            dispatched: Family::default(),
            inqueue_requests: Family::default(),
            inqueue_seats: Family::default(),
            executing_requests: Family::default(),
            executing_seats: Family::default(),
            wait_duration: Family::new_with_constructor(|| Histogram::new(WAIT_BUCKETS)),
            execution: Family::new_with_constructor(|| Histogram::new(WAIT_BUCKETS)),
            queue_length: Family::new_with_constructor(|| Histogram::new(QUEUE_LENGTH_BUCKETS)),
            estimated_seats: Family::new_with_constructor(|| Histogram::new(SEAT_BUCKETS)),
            nominal: Family::default(),
            current: Family::default(),
            lower: Family::default(),
            upper: Family::default(),
            concurrency_limit: Family::default(),
            target: Family::default(),
            demand: Default::default(),
            fair_fraction: Gauge::default(),
            utilization: Family::new_with_constructor(|| Histogram::new(UTILIZATION_BUCKETS)),
            demand_ratio: Family::new_with_constructor(|| Histogram::new(DEMAND_BUCKETS)),
            no_accommodation: Family::default(),
        };
        let beta = |name: &str, help: &str| {
            Descriptor::new(format!("apiserver_flowcontrol_{name}"), help)
                .stability(StabilityLevel::Beta)
        };
        let alpha =
            |name: &str, help: &str| Descriptor::new(format!("apiserver_flowcontrol_{name}"), help);
        metrics.register(
            beta(
                "rejected_requests",
                "Number of requests rejected by API Priority and Fairness subsystem",
            ),
            this.rejected.clone(),
        );
        metrics.register(
            beta(
                "dispatched_requests",
                "Number of requests executed by API Priority and Fairness subsystem",
            ),
            this.dispatched.clone(),
        );
        metrics.register(
            beta(
                "current_inqueue_requests",
                "Number of requests currently pending in queues of the API Priority and Fairness subsystem",
            ),
            this.inqueue_requests.clone(),
        );
        metrics.register(
            alpha(
                "current_inqueue_seats",
                "Number of seats currently pending in queues of the API Priority and Fairness subsystem",
            ),
            this.inqueue_seats.clone(),
        );
        metrics.register(
            beta(
                "current_executing_requests",
                "Number of requests in initial (for a WATCH) or any (for a non-WATCH) execution stage in the API Priority and Fairness subsystem",
            ),
            this.executing_requests.clone(),
        );
        metrics.register(
            beta(
                "current_executing_seats",
                "Concurrency (number of seats) occupied by the currently executing (initial stage for a WATCH, any stage otherwise) requests in the API Priority and Fairness subsystem",
            ),
            this.executing_seats.clone(),
        );
        metrics.register(
            beta(
                "request_wait_duration_seconds",
                "Length of time a request spent waiting in its queue",
            ),
            this.wait_duration.clone(),
        );
        metrics.register(
            alpha(
                "request_execution_seconds",
                "Duration of initial stage (for a WATCH) or any (for a non-WATCH) stage of request execution in the API Priority and Fairness subsystem",
            ),
            this.execution.clone(),
        );
        metrics.register(
            alpha(
                "request_queue_length_after_enqueue",
                "Length of queue in the API Priority and Fairness subsystem, as seen by each request after it is enqueued",
            ),
            this.queue_length.clone(),
        );
        metrics.register(
            alpha(
                "work_estimated_seats",
                "Number of estimated seats (maximum of initial and final seats) associated with requests in API Priority and Fairness",
            ),
            this.estimated_seats.clone(),
        );
        metrics.register(
            beta(
                "nominal_limit_seats",
                "Nominal number of execution seats configured for each priority level",
            ),
            this.nominal.clone(),
        );
        metrics.register(
            alpha(
                "current_limit_seats",
                "current derived number of execution seats available to each priority level",
            ),
            this.current.clone(),
        );
        metrics.register(
            alpha(
                "lower_limit_seats",
                "Configured lower bound on number of execution seats available to each priority level",
            ),
            this.lower.clone(),
        );
        metrics.register(
            alpha(
                "upper_limit_seats",
                "Configured upper bound on number of execution seats available to each priority level",
            ),
            this.upper.clone(),
        );
        metrics.register(
            alpha(
                "request_concurrency_limit",
                "Nominal number of execution seats configured for each priority level",
            )
            .deprecated_since("1.30.0"),
            this.concurrency_limit.clone(),
        );
        metrics.register(
            alpha("target_seats", "Seat allocation targets"),
            this.target.clone(),
        );
        for (family, (name, help)) in this.demand.iter().zip([
            (
                "demand_seats_high_watermark",
                "High watermark, over last adjustment period, of demand_seats",
            ),
            (
                "demand_seats_average",
                "Time-weighted average, over last adjustment period, of demand_seats",
            ),
            (
                "demand_seats_stdev",
                "Time-weighted standard deviation, over last adjustment period, of demand_seats",
            ),
            ("demand_seats_smoothed", "Smoothed seat demands"),
        ]) {
            metrics.register(alpha(name, help), family.clone());
        }
        metrics.register(
            alpha(
                "seat_fair_frac",
                "Fair fraction of server's concurrency to allocate to each priority level that can use it",
            ),
            this.fair_fraction.clone(),
        );
        metrics.register(
            alpha(
                "priority_level_seat_utilization",
                "Observations, at the end of every nanosecond, of utilization of seats for any stage of execution (but only initial stage for WATCHes)",
            ),
            this.utilization.clone(),
        );
        metrics.register(
            alpha(
                "demand_seats",
                "Observations, at the end of every nanosecond, of (the number of seats each priority level could use) / (nominal number of seats for that level)",
            ),
            this.demand_ratio.clone(),
        );
        metrics.register(
            alpha(
                "request_dispatch_no_accommodation",
                "Number of times a dispatch attempt resulted in a non accommodation due to lack of available seats",
            ),
            this.no_accommodation.clone(),
        );
        this
    }

    /// The series of one flow, looked up once and kept by the caller.
    pub fn series(&self, flow: Flow) -> FlowSeries {
        let waited = |execute| Waited {
            priority_level: flow.priority_level.clone(),
            flow_schema: flow.flow_schema.clone(),
            execute,
        };
        FlowSeries {
            dispatched: self.dispatched.get_or_create(&flow).clone(),
            executing_requests: self.executing_requests.get_or_create(&flow).clone(),
            executing_seats: self.executing_seats.get_or_create(&flow).clone(),
            waited: self.wait_duration.get_or_create(&waited("true")).clone(),
            regular: self
                .execution
                .get_or_create(&Executed {
                    priority_level: flow.priority_level.clone(),
                    flow_schema: flow.flow_schema.clone(),
                    r#type: "regular",
                })
                .clone(),
            estimated: self.estimated_seats.get_or_create(&flow).clone(),
            metrics: self.clone(),
            flow,
        }
    }

    /// A level's seats after an allocation.
    pub fn seats(&self, level: &str, seats: &Seats) {
        let label = Level {
            priority_level: level.to_string(),
        };
        self.nominal
            .get_or_create(&label)
            .set(i64::from(seats.nominal));
        self.concurrency_limit
            .get_or_create(&label)
            .set(i64::from(seats.nominal));
        self.current
            .get_or_create(&label)
            .set(i64::from(seats.current));
        self.lower.get_or_create(&label).set(i64::from(seats.lower));
        self.upper.get_or_create(&label).set(i64::from(seats.upper));
        self.target.get_or_create(&label).set(seats.target);
        for (family, value) in self.demand.iter().zip(seats.demand) {
            family.get_or_create(&label).set(value);
        }
        self.utilization
            .get_or_create(&Phase {
                phase: "executing",
                priority_level: level.to_string(),
            })
            .observe(seats.utilization);
        if seats.nominal > 0 {
            self.demand_ratio
                .get_or_create(&label)
                .observe(seats.demand[1] / f64::from(seats.nominal));
        }
    }

    /// The fair proportion of the last allocation.
    pub fn fair_fraction(&self, value: f64) {
        self.fair_fraction
            .set(if value.is_finite() { value } else { 0.0 });
    }

    /// Times a level's queue head did not fit, since the last call's total.
    pub fn no_accommodation(&self, level: &str, more: u64) {
        if more > 0 {
            self.no_accommodation
                .get_or_create(&Level {
                    priority_level: level.to_string(),
                })
                .inc_by(more);
        }
    }
}
