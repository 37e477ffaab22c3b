//! Events about pods (Pulled, Created, Started, Killing, BackOff, ...), as
//! `kubectl describe` and `kubectl events` show them. Best effort: a failed
//! event write is logged, never retried.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use serde_json::json;

/// Records an event about `pod` from this node's kubelet.
pub async fn record(
    client: &kube::Client,
    node: &str,
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
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
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
