//! The kubelet's own series on its `/metrics` (besides those read from the
//! runtime at each scrape, `stats::kubelet_metrics`): every CRI call by
//! operation (`kubelet_runtime_operations_total`, `_duration_seconds`,
//! `_errors_total`) and how long pods take to start
//! (`kubelet_pod_start_duration_seconds`), under upstream's names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::{Descriptor, register_in};

/// kubelet_pod_start_duration_seconds' buckets, as upstream's.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation_type: String,
}

/// The kubelet's registry of series kept between scrapes.
#[derive(Debug)]
pub struct KubeletMetrics {
    registry: Registry,
    operations: Family<OperationLabels, Counter>,
    durations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    errors: Family<OperationLabels, Counter>,
    pod_start: Histogram,
}

impl Default for KubeletMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let this_durations: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.5, 14)));
        let operations = Family::default();
        let errors = Family::default();
        let pod_start = Histogram::new(POD_START_BUCKETS);
        register_in(
            &mut registry,
            &Descriptor::new(
                "kubelet_runtime_operations",
                "Cumulative number of runtime operations by operation type",
            ),
            operations.clone(),
        );
        register_in(
            &mut registry,
            &Descriptor::new(
                "kubelet_runtime_operations_duration_seconds",
                "Duration in seconds of runtime operations. Broken down by operation type",
            ),
            this_durations.clone(),
        );
        register_in(
            &mut registry,
            &Descriptor::new(
                "kubelet_runtime_operations_errors",
                "Cumulative number of runtime operation errors by operation type",
            ),
            errors.clone(),
        );
        register_in(
            &mut registry,
            &Descriptor::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            ),
            pod_start.clone(),
        );
        Self {
            registry,
            operations,
            durations: this_durations,
            errors,
            pod_start,
        }
    }
}

impl KubeletMetrics {
    /// The series in Prometheus' text format.
    pub fn encode(&self) -> String {
        crate::telemetry::prometheus_text(&self.registry)
    }

    /// Counts one CRI call (`/runtime.v1.RuntimeService/RunPodSandbox`)
    /// that took `took` and failed or not.
    pub fn runtime_operation(&self, grpc_path: &str, took: Duration, failed: bool) {
        let labels = OperationLabels {
            operation_type: operation_type(grpc_path),
        };
        self.operations.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// A pod the kubelet first saw `took` ago now runs.
    pub fn pod_started(&self, took: Duration) {
        self.pod_start.observe(took.as_secs_f64());
    }
}

/// Upstream's operation type of a CRI method: snake case, `PodSandbox` as
/// one word (`run_podsandbox`, `list_podsandbox`, `image_fs_info`).
fn operation_type(grpc_path: &str) -> String {
    let method = grpc_path.rsplit('/').next().unwrap_or(grpc_path);
    let method = method.replace("PodSandbox", "Podsandbox");
    let mut out = String::with_capacity(method.len() + 4);
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_types_are_upstreams() {
        for (path, op) in [
            ("/runtime.v1.RuntimeService/RunPodSandbox", "run_podsandbox"),
            (
                "/runtime.v1.RuntimeService/ListPodSandbox",
                "list_podsandbox",
            ),
            (
                "/runtime.v1.RuntimeService/PodSandboxStatus",
                "podsandbox_status",
            ),
            (
                "/runtime.v1.RuntimeService/ContainerStatus",
                "container_status",
            ),
            ("/runtime.v1.ImageService/ImageFsInfo", "image_fs_info"),
            ("/runtime.v1.RuntimeService/ExecSync", "exec_sync"),
        ] {
            assert_eq!(operation_type(path), op);
        }
    }

    #[test]
    fn operations_are_counted_and_timed() {
        let metrics = KubeletMetrics::default();
        metrics.runtime_operation(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_millis(3),
            false,
        );
        metrics.runtime_operation(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_millis(3),
            true,
        );
        metrics.pod_started(Duration::from_secs(2));
        let text = metrics.encode();
        assert!(
            text.contains("kubelet_runtime_operations_total{operation_type=\"version\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "kubelet_runtime_operations_errors_total{operation_type=\"version\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("kubelet_pod_start_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP kubelet_runtime_operations_total [ALPHA] "),
            "{text}"
        );
    }
}
