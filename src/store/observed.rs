//! A [`Store`] in front of another that times every call, as kube-apiserver
//! times its etcd calls (`etcd_request_duration_seconds`,
//! `etcd_requests_total`, `etcd_request_errors_total` by operation and
//! resource type), and with traces on wraps each in a span
//! (`Get sqlite`, `List sqlite`, …, as upstream's `… etcd3` spans).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument as _;

use super::{KeyValue, ListPage, Result, Revision, Store, WatchStream};
use crate::telemetry::{Descriptor, Metrics, REQUEST_DURATION_BUCKETS, StabilityLevel, traces};

/// The observing store.
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    /// The backend's name in span names (`sqlite`).
    backend: &'static str,
    metrics: StoreMetrics,
}

/// Labels of the store metrics, sorted as upstream prints them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    r#type: String,
}

#[derive(Clone)]
struct StoreMetrics {
    durations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    requests: Family<OperationLabels, Counter>,
    errors: Family<OperationLabels, Counter>,
}

impl ObservedStore {
    /// Wraps `inner` (named `backend` in spans), registering its metrics.
    pub fn new(inner: Arc<dyn Store>, backend: &'static str, metrics: &Metrics) -> Self {
        let observed = StoreMetrics {
            durations: Family::new_with_constructor(|| Histogram::new(REQUEST_DURATION_BUCKETS)),
            requests: Family::default(),
            errors: Family::default(),
        };
        metrics.register(
            Descriptor::new(
                "etcd_request_duration_seconds",
                "Etcd request latency in seconds for each operation and object type",
            )
            .stability(StabilityLevel::Alpha),
            observed.durations.clone(),
        );
        metrics.register(
            Descriptor::new(
                "etcd_requests",
                "Etcd request counts for each operation and object type",
            )
            .stability(StabilityLevel::Alpha),
            observed.requests.clone(),
        );
        metrics.register(
            Descriptor::new(
                "etcd_request_errors",
                "Etcd failed request counts for each operation and object type",
            )
            .stability(StabilityLevel::Alpha),
            observed.errors.clone(),
        );
        Self {
            inner,
            backend,
            metrics: observed,
        }
    }

    /// Runs one call: timed, counted, and in a span when traces are on.
    async fn observe<T>(
        &self,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let labels = OperationLabels {
            operation,
            r#type: resource_type(key),
        };
        let started = Instant::now();
        let result = if traces::on() {
            let span = tracing::info_span!(
                target: traces::TARGET,
                "store",
                otel.name = format!("{} {}", span_verb(operation), self.backend),
                key,
                r#type = labels.r#type.as_str(),
            );
            call.instrument(span).await
        } else {
            call.await
        };
        self.metrics
            .durations
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.metrics.requests.get_or_create(&labels).inc();
        if result.is_err() {
            self.metrics.errors.get_or_create(&labels).inc();
        }
        result
    }
}

/// Upstream's span verbs for the storage operations.
fn span_verb(operation: &str) -> &'static str {
    match operation {
        "get" => "Get",
        "listWithCount" => "List",
        "create" => "Create",
        "update" => "GuaranteedUpdate",
        "delete" => "Delete",
        "watch" => "Watch",
        "compact" => "Compact",
        _ => "Call",
    }
}

/// The resource a key belongs to, as upstream's `type` label names it:
/// `pods`, `deployments.apps` (`/registry/<group>/<resource>/…`).
fn resource_type(key: &str) -> String {
    let mut parts = key.trim_start_matches("/registry/").split('/');
    match (parts.next(), parts.next()) {
        (Some("core"), Some(resource)) => resource.to_string(),
        (Some(group), Some(resource)) if !resource.is_empty() => format!("{resource}.{group}"),
        _ => String::new(),
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.observe("get", key, self.inner.get(key)).await
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        self.observe(
            "listWithCount",
            prefix,
            self.inner.list_at(prefix, start_after, limit, revision),
        )
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.observe("create", key, self.inner.create(key, value))
            .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        self.observe("update", key, self.inner.update(key, value, expected))
            .await
    }

    async fn update_coalesced(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision> {
        let write = self.inner.update_coalesced(key, value, expected);
        self.observe("update", key, write).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        self.observe("delete", key, self.inner.delete(key, expected))
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        // Health checks and list heads: too frequent and too cheap to time.
        self.inner.current_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.observe("watch", prefix, self.inner.watch(prefix, after))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.observe("compact", "", self.inner.compact(revision))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        self.observe("count", prefix, self.inner.count(prefix))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_name_group_and_resource() {
        assert_eq!(resource_type("/registry/core/pods/default/web"), "pods");
        assert_eq!(
            resource_type("/registry/apps/deployments/default/web"),
            "deployments.apps"
        );
        assert_eq!(resource_type("/registry/core/namespaces/"), "namespaces");
        assert_eq!(resource_type(""), "");
    }
}
