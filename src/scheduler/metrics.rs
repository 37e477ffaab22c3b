//! The scheduler's metrics, under kube-scheduler's names: attempts and
//! their latency, pending pods (in the process registry, served on every
//! `/metrics`), and the per-pod resource series of `/metrics/resources`.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::{NAME, fit};
use crate::api::values::quantity;
use crate::telemetry::{Descriptor, Metrics, StabilityLevel};

/// How a scheduling attempt ended (kube-scheduler's `result` label).
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Bound to a node.
    Scheduled,
    /// No node fits.
    Unschedulable,
    /// A node was chosen but the binding failed.
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    profile: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    r#type: &'static str,
}

/// The series a scheduling pass updates.
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    attempts: Family<AttemptLabels, Counter>,
    durations: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    pending: Family<QueueLabels, Gauge>,
    /// `scheduler_cache_size` and its deprecated twin `scheduler_scheduler_cache_size`.
    cache: [Family<CacheLabels, Gauge>; 2],
}

impl SchedulerMetrics {
    /// The series, registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        // kube-scheduler's buckets: 1 ms doubling, 15 of them.
        let this = Self {
            attempts: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            pending: Family::default(),
            cache: Default::default(),
        };
        const CACHE_HELP: &str =
            "Number of nodes, pods, and assumed (bound) pods in the scheduler cache";
        metrics.register(
            Descriptor::new("scheduler_cache_size", CACHE_HELP),
            this.cache[0].clone(),
        );
        metrics.register(
            Descriptor::new("scheduler_scheduler_cache_size", CACHE_HELP)
                .deprecated_since("1.33.0"),
            this.cache[1].clone(),
        );
        metrics.register(
            Descriptor::new(
                "scheduler_schedule_attempts",
                "Number of attempts to schedule pods, by the result. 'unschedulable' \
                 means a pod could not be scheduled, while 'error' means an internal scheduler problem",
            )
            .stability(StabilityLevel::Stable),
            this.attempts.clone(),
        );
        metrics.register(
            Descriptor::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .stability(StabilityLevel::Stable),
            this.durations.clone(),
        );
        metrics.register(
            Descriptor::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type. 'active' means number of pods \
                 in activeQ; 'unschedulable' means number of pods in unschedulablePods",
            )
            .stability(StabilityLevel::Stable),
            this.pending.clone(),
        );
        this
    }

    /// Counts one attempt that took `seconds`.
    pub fn attempt(&self, outcome: Outcome, seconds: f64) {
        let labels = AttemptLabels {
            profile: NAME,
            result: match outcome {
                Outcome::Scheduled => "scheduled",
                Outcome::Unschedulable => "unschedulable",
                Outcome::Error => "error",
            },
        };
        self.attempts.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(seconds);
    }

    /// What the scheduler's caches hold: nodes, pods bound to a node, pods
    /// it bound whose binding it has not seen come back yet.
    pub fn cache_size(&self, nodes: usize, pods: usize, assumed: usize) {
        for family in &self.cache {
            for (r#type, n) in [("nodes", nodes), ("pods", pods), ("assumed_pods", assumed)] {
                family.get_or_create(&CacheLabels { r#type }).set(n as i64);
            }
        }
    }

    /// Pods waiting after a pass: to be tried again at once, or until
    /// something changes.
    pub fn pending(&self, active: usize, unschedulable: usize) {
        for (queue, n) in [("active", active), ("unschedulable", unschedulable)] {
            self.pending
                .get_or_create(&QueueLabels { queue })
                .set(n as i64);
        }
    }
}

/// kube-scheduler's `/metrics/resources`: `kube_pod_resource_request` and
/// `kube_pod_resource_limit` for every pod not yet finished, CPU in cores
/// and memory in bytes.
pub fn resource_metrics(pods: &[std::sync::Arc<Pod>]) -> String {
    let mut requests = String::new();
    let mut limits = String::new();
    let mut sorted: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| !crate::api::values::pods::is_terminal(p))
        .collect();
    sorted.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for pod in sorted {
        let wanted = fit::pod_requests(pod);
        let requested = [
            ("cpu", "cores", wanted.cpu as f64 / 1000.0),
            ("memory", "bytes", wanted.memory as f64),
        ];
        let (cpu_limit, memory_limit) = limits_of(pod);
        let limited = [
            ("cpu", "cores", cpu_limit as f64 / 1000.0),
            ("memory", "bytes", memory_limit as f64),
        ];
        for (out, series) in [(&mut requests, requested), (&mut limits, limited)] {
            for (resource, unit, value) in series {
                if value > 0.0 {
                    let _ = writeln!(out, "{{{}}} {value}", labels(pod, resource, unit));
                }
            }
        }
    }
    let mut text = String::new();
    for (name, help, body) in [
        (
            "kube_pod_resource_request",
            "Resources requested by workloads on the cluster, broken down by pod.",
            requests,
        ),
        (
            "kube_pod_resource_limit",
            "Resources limit for workloads on the cluster, broken down by pod.",
            limits,
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} [STABLE] {help}\n# TYPE {name} gauge");
        for line in body.lines() {
            let _ = writeln!(text, "{name}{line}");
        }
    }
    text
}

/// The pod's summed container limits: milli-CPU, memory bytes.
fn limits_of(pod: &Pod) -> (i64, i64) {
    let mut cpu = 0;
    let mut memory = 0;
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let get = |key: &str| limits.and_then(|l| l.get(key)).map(|q| q.0.as_str());
        cpu += get("cpu").and_then(quantity::milli).unwrap_or(0);
        memory += get("memory").and_then(quantity::value).unwrap_or(0);
    }
    (cpu, memory)
}

/// Labels in upstream's order; values escaped as the text format wants.
fn labels(pod: &Pod, resource: &str, unit: &str) -> String {
    let spec = pod.spec.as_ref();
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let fields = [
        (
            "namespace",
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
        ("pod", pod.metadata.name.clone().unwrap_or_default()),
        (
            "node",
            spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ),
        (
            "scheduler",
            spec.and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| NAME.into()),
        ),
        (
            "priority",
            spec.and_then(|s| s.priority)
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ),
        ("resource", resource.into()),
        ("unit", unit.into()),
    ];
    fields
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_series_list_requests_and_limits_per_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "image": "x", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": "250m"}}}
            ]}
        }))
        .expect("pod");
        let text = resource_metrics(&[std::sync::Arc::new(pod)]);
        let base = "namespace=\"default\",pod=\"web\",node=\"n1\",scheduler=\"default-scheduler\",priority=\"\"";
        for line in [
            "# TYPE kube_pod_resource_request gauge".to_string(),
            format!("kube_pod_resource_request{{{base},resource=\"cpu\",unit=\"cores\"}} 0.5"),
            format!(
                "kube_pod_resource_request{{{base},resource=\"memory\",unit=\"bytes\"}} 67108864"
            ),
            format!(
                "kube_pod_resource_limit{{{base},resource=\"memory\",unit=\"bytes\"}} 134217728"
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("kube_pod_resource_limit{namespace=\"default\",pod=\"web\",node=\"n1\",scheduler=\"default-scheduler\",priority=\"\",resource=\"cpu\""));
    }
}
