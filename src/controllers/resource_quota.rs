//! The ResourceQuota controller (as `resourcequota-controller`): keeps each
//! quota's `status.hard` and `status.used` true, counting the namespace's
//! objects with the same arithmetic admission uses (`api::values::quota`), after
//! every change of a quota or a pod and every few seconds for the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::Context;
use crate::api::values::quota;

const RESYNC: Duration = Duration::from_secs(10);

/// The (group, plural, kind) of the objects a quota resource name counts.
fn counted(name: &str) -> Option<(String, String, String)> {
    let core =
        |plural: &str, kind: &str| Some((String::new(), plural.to_string(), kind.to_string()));
    match name {
        "pods" | "count/pods" | "cpu" | "memory" => core("pods", "Pod"),
        n if n.starts_with("requests.") && n != "requests.storage" => core("pods", "Pod"),
        n if n.starts_with("limits.") => core("pods", "Pod"),
        "services" | "count/services" | "services.nodeports" | "services.loadbalancers" => {
            core("services", "Service")
        }
        "configmaps" | "count/configmaps" => core("configmaps", "ConfigMap"),
        "secrets" | "count/secrets" => core("secrets", "Secret"),
        "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage" => {
            core("persistentvolumeclaims", "PersistentVolumeClaim")
        }
        "replicationcontrollers" | "count/replicationcontrollers" => {
            core("replicationcontrollers", "ReplicationController")
        }
        "resourcequotas" | "count/resourcequotas" => core("resourcequotas", "ResourceQuota"),
        n => {
            // count/<plural>.<group>: the kind is not needed to list.
            let (plural, group) = n.strip_prefix("count/")?.split_once('.')?;
            Some((group.to_string(), plural.to_string(), String::new()))
        }
    }
}

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let (quotas, quota_changes) = context.informers.cache::<ResourceQuota>();
    let (_, pod_changes) = context.informers.cache::<Pod>();
    let changes = futures::stream::select(quota_changes, pod_changes).boxed();
    let mut passes = crate::runtime::passes(changes, RESYNC, Duration::from_millis(50));
    while passes.next().await.is_some() {
        for quota in quotas.state() {
            if let Err(e) = sync(&client, &quota).await {
                tracing::debug!(err = %e, quota = %quota.name_any(), "syncing a resource quota");
            }
        }
    }
}

async fn sync(client: &kube::Client, object: &ResourceQuota) -> Result<(), super::Error> {
    let namespace = object.namespace().unwrap_or_default();
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    let hard = object
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut used = BTreeMap::new();
    if let Some(limits) = quota::hard(&value) {
        let mut by_kind: BTreeMap<(String, String, String), quota::Usage> = BTreeMap::new();
        for (name, amount) in &limits {
            if let Some(kind) = counted(name) {
                by_kind
                    .entry(kind)
                    .or_default()
                    .insert(name.clone(), *amount);
            }
        }
        for ((group, plural, kind), names) in by_kind {
            // v1 for every group kelp serves built in (custom resources of
            // other versions are not counted yet).
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(&group, "v1", &kind),
                &plural,
            );
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            let listed = api.list(&Default::default()).await?;
            let objects: Vec<Value> = listed
                .items
                .iter()
                .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
                .collect();
            let total = quota::total(&group, &plural, &objects, &names);
            for name in names.keys() {
                let amount = total.get(name).copied().unwrap_or(0);
                used.insert(name.clone(), Quantity(quota::format(name, amount)));
            }
        }
    }
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    super::write_status(&api, object, &object.status, &Some(status)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_say_what_to_count() {
        assert_eq!(counted("requests.cpu").map(|k| k.1), Some("pods".into()));
        assert_eq!(
            counted("requests.storage").map(|k| k.1),
            Some("persistentvolumeclaims".into())
        );
        assert_eq!(
            counted("services.nodeports").map(|k| k.1),
            Some("services".into())
        );
        assert_eq!(
            counted("count/deployments.apps"),
            Some(("apps".into(), "deployments".into(), String::new()))
        );
        assert_eq!(counted("unknown"), None);
    }
}
