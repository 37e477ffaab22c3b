//! Events about pods (Scheduled, FailedScheduling, Pulled, Created, Started,
//! Killing, BackOff, ...), as `kubectl describe` and `kubectl events` show
//! them, from any component. Best effort: a failed write is logged, never
//! retried.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use serde_json::json;

/// Who reports an event: the component and, for a kubelet, its node.
#[derive(Debug, Clone)]
pub struct Source {
    /// `kubelet`, `default-scheduler`, a controller's name.
    pub component: String,
    /// The node, for a kubelet.
    pub host: Option<String>,
}

/// Records an event about `pod`.
pub async fn record(
    client: &kube::Client,
    source: &Source,
    pod: &Pod,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let now = chrono::Utc::now();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{pod_name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default()), "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "namespace": namespace, "uid": pod.metadata.uid},
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": source.component, "host": source.host},
        "reportingComponent": source.component,
        "reportingInstance": source.host.clone().unwrap_or_else(|| source.component.clone()),
        "firstTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    if let Err(e) = api.create(&Default::default(), &event).await {
        tracing::debug!(err = %e, reason, "recording an event");
    }
}
