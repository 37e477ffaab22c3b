//! The controller manager's work-queue metrics under upstream's names
//! (`workqueue_adds_total`, `workqueue_work_duration_seconds`,
//! `workqueue_retries_total`, `workqueue_depth`, labelled by queue `name`).
//! kube-rs keeps each controller's queue inside its runtime, so an item
//! counts here when its reconcile starts: `adds` are the items processed
//! (several wake-ups of one object in a burst make one), `depth` the items
//! being processed now, `retries` the reconciles that failed and are due
//! again. Also `leader_election_master_status` of the controller manager
//! and the scheduler: 1 on a server alone on its datastore, else whether
//! this server holds the Lease ([`WorkQueueMetrics::leader_status`]).

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::telemetry::{Descriptor, Metrics};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: &'static str,
}

/// The families every queue reports into.
#[derive(Debug, Clone)]
pub struct WorkQueueMetrics {
    adds: Family<QueueLabels, Counter>,
    depth: Family<QueueLabels, Gauge>,
    durations: Family<QueueLabels, Histogram, fn() -> Histogram>,
    retries: Family<QueueLabels, Counter>,
    leader: Family<LeaderLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderLabels {
    name: &'static str,
}

impl WorkQueueMetrics {
    /// The families, registered in `metrics`, and the leader-election
    /// status of the controller manager and the scheduler.
    pub fn new(metrics: &Metrics) -> Self {
        let this = Self {
            adds: Family::default(),
            depth: Family::default(),
            // client-go's buckets: 1 µs growing tenfold to 10 s.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-8, 10.0, 10))
            }),
            retries: Family::default(),
            leader: Family::default(),
        };
        metrics.register(
            Descriptor::new(
                "workqueue_adds",
                "Total number of adds handled by workqueue",
            ),
            this.adds.clone(),
        );
        metrics.register(
            Descriptor::new("workqueue_depth", "Current depth of workqueue"),
            this.depth.clone(),
        );
        metrics.register(
            Descriptor::new(
                "workqueue_work_duration_seconds",
                "How long in seconds processing an item from workqueue takes",
            ),
            this.durations.clone(),
        );
        metrics.register(
            Descriptor::new(
                "workqueue_retries",
                "Total number of retries handled by workqueue",
            ),
            this.retries.clone(),
        );
        let leader = this.leader.clone();
        for name in ["kube-controller-manager", "kube-scheduler"] {
            leader.get_or_create(&LeaderLabels { name }).set(1);
        }
        metrics.register(
            Descriptor::new(
                "leader_election_master_status",
                "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name",
            ),
            leader,
        );
        this
    }

    /// The `leader_election_master_status` gauge of Lease `name`, for its
    /// election to keep (set to 1 until then: a server alone leads).
    pub fn leader_status(&self, name: &'static str) -> Gauge {
        self.leader.get_or_create(&LeaderLabels { name }).clone()
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &'static str) -> Queue {
        Queue {
            name,
            metrics: self.clone(),
        }
    }
}

/// One controller's queue.
#[derive(Debug, Clone)]
pub struct Queue {
    name: &'static str,
    metrics: WorkQueueMetrics,
}

impl Queue {
    /// Times `work` as one item of this queue; a failure counts as a retry.
    pub async fn process<T, E>(&self, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let labels = QueueLabels { name: self.name };
        let m = &self.metrics;
        m.adds.get_or_create(&labels).inc();
        m.depth.get_or_create(&labels).inc();
        let started = Instant::now();
        let result = work.await;
        m.durations
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        m.depth.get_or_create(&labels).dec();
        if result.is_err() {
            m.retries.get_or_create(&labels).inc();
        }
        result
    }
}

/// `reconcile` as a kube-rs reconciler whose every run is an item of `queue`.
pub fn queued<K, C, E, F, Fut>(
    queue: Queue,
    mut reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>
where
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    move |object, context| {
        let work = reconcile(object, context);
        let queue = queue.clone();
        Box::pin(async move { queue.process(work).await })
    }
}
