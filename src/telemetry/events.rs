//! Events about objects (a pod's Scheduled, Pulled, Started, BackOff; a
//! Deployment's ScalingReplicaSet; ...), as `kubectl describe` and `kubectl
//! events` show them, from any component. Best effort: a failed write is
//! logged, never retried.

use k8s_openapi::api::core::v1::Event;
use kube::{Api, Resource};
use serde_json::json;

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

/// Records an event about `object`.
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
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let now = chrono::Utc::now();
    let name = meta.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default()), "namespace": namespace},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": name, "namespace": namespace, "uid": meta.uid},
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
