//! `apiserver_storage_objects`: how many objects of each stored resource
//! the store holds, counted every minute as kube-apiserver does (-1 when a
//! count fails).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::ApiState;

/// How often the objects are counted (upstream's storage count period).
const PERIOD: Duration = Duration::from_secs(60);

/// Counts every stored resource's objects now and every [`PERIOD`].
pub async fn run(state: Arc<ApiState>) {
    let mut ticker = tokio::time::interval(PERIOD);
    loop {
        ticker.tick().await;
        for (prefix, resource) in stored_resources(&state) {
            let count = state.store.count(&prefix).await.unwrap_or(-1);
            state.metrics.apiserver.storage_objects(&resource, count);
            if let crate::apiserver::flowcontrol::FlowControl::PriorityAndFairness(apf) =
                &state.flow_control
            {
                apf.object_count(&resource, count);
            }
        }
    }
}

/// Each stored resource once (versions share their storage), by key
/// prefix, with its `resource` label (`pods`, `deployments.apps`).
fn stored_resources(state: &ApiState) -> BTreeMap<String, String> {
    state
        .registry
        .all()
        .into_iter()
        .filter(|rt| !crate::api::registry::resources::Registry::is_review(&rt.kind))
        .map(|rt| {
            let label = if rt.group.is_empty() {
                rt.resource.clone()
            } else {
                format!("{}.{}", rt.resource, rt.group)
            };
            (rt.key_prefix(None), label)
        })
        .collect()
}
