//! ReplicaSets: keep `spec.replicas` pods matching the selector, made from
//! the template and owned by the ReplicaSet (adopting matching orphans,
//! deleting the surplus, not-ready pods first), and report replica counts in
//! the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::api::values::pods;

/// Runs the controller: woken by its ReplicaSets and by changes to the
/// pods they control, which it reads from the shared pod cache.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) = super::over_owned_pods::<ReplicaSet>(&context).await {
        super::drive(controller, context, reconcile).await;
    }
}

/// A label selector as the API's `labelSelector` query string.
pub fn selector_string(selector: &LabelSelector) -> String {
    crate::api::values::selectors::LabelSelector::from_typed(selector).to_query()
}

/// Which pods to delete first when scaling down, as upstream's ActivePods
/// order: unassigned before assigned; Pending, then Unknown, then Running;
/// not ready before ready; lower `controller.kubernetes.io/pod-deletion-cost`
/// first; of ready pods, the one ready for less time first; more container
/// restarts first; then the newest.
pub fn deletion_order(pods: &mut [Pod]) {
    pods.sort_by_cached_key(|p| {
        let assigned = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let status = p.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Pending") => 0,
            Some("Unknown") => 1,
            Some("Running") => 2,
            _ => 0,
        };
        let ready = pods::is_ready(p);
        let cost: i32 = p
            .annotations()
            .get(DELETION_COST)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // Ready for less time first: the later transition sorts first.
        let ready_since = ready
            .then(|| {
                status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .and_then(|c| c.last_transition_time.clone())
                    .map(|t| t.0)
            })
            .flatten();
        let restarts = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().map(|c| c.restart_count).max())
            .unwrap_or(0);
        let created = p.metadata.creation_timestamp.clone().map(|t| t.0);
        (
            assigned,
            phase,
            ready,
            cost,
            std::cmp::Reverse(ready_since),
            std::cmp::Reverse(restarts),
            std::cmp::Reverse(created),
        )
    });
}

/// The annotation that lets users rank pods for scale-down.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

async fn reconcile(rs: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, Error> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let key = format!("{namespace}/{}", rs.name_any());
    // Until the cache shows this ReplicaSet's own last creates and deletes,
    // counting from it would make or remove pods twice.
    let Some((cache, in_sync)) = super::pod_cache(&context, &key) else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let owned = super::claim_from(
        &pods_api,
        super::selected(&cache, &namespace, &spec.selector),
        &crate::runtime::controller_ref(rs.as_ref()),
    )
    .await;
    let mut live: Vec<Pod> = owned
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let wanted = spec.replicas.unwrap_or(1).max(0) as usize;
    if in_sync && live.len() < wanted {
        for _ in live.len()..wanted {
            let pod = super::pod_from_template(
                spec.template.as_ref(),
                crate::runtime::controller_ref(rs.as_ref()),
                &namespace,
            );
            let made = pods_api.create(&PostParams::default(), &pod).await?;
            context.expectations.wrote(&key, &made, false);
        }
    } else if in_sync && live.len() > wanted {
        deletion_order(&mut live);
        let surplus = live.len() - wanted;
        for pod in live.drain(..surplus) {
            super::delete_owned(&context, &key, &pods_api, &pod).await;
        }
    }
    let labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let running: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = k8s_openapi::jiff::Timestamp::now();
    // A Ready pod becomes available minReadySeconds later: look again then.
    let next_check = running
        .iter()
        .filter_map(|p| pods::available_in(p, min_ready, now))
        .filter(|d| !d.is_zero())
        .min();
    let status = json!({
        "replicas": running.len(),
        "fullyLabeledReplicas": running.iter().filter(|p| labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count(),
        "readyReplicas": running.iter().filter(|p| pods::is_ready(p)).count(),
        "availableReplicas": running.iter().filter(|p| pods::is_available(p, min_ready, now)).count(),
        "observedGeneration": rs.meta().generation,
    });
    let current = rs
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default();
    let changed = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .any(|k| current.get(*k).cloned().unwrap_or(json!(0)) != status[*k]);
    if changed {
        let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
        // The counts change; the rest of the status (conditions) stays.
        let mut body = serde_json::to_value(&*rs).map_err(kube::Error::SerdeError)?;
        if !body["status"].is_object() {
            body["status"] = json!({});
        }
        for (k, v) in status.as_object().into_iter().flatten() {
            body["status"][k] = v.clone();
        }
        let body: ReplicaSet = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
        api.replace_status(&rs.name_any(), &PostParams::default(), &body)
            .await?;
    }
    if !in_sync {
        // The cache's news of these writes wakes it; this is the fallback.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(next_check.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(100))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_become_query_strings() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(selector_string(&selector), "app=web,!canary,tier in (a,b)");
    }

    #[test]
    fn scale_down_removes_unscheduled_and_unready_pods_first() {
        let pod = |name: &str, node: &str, phase: &str, ready: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap()
        };
        let mut pods = vec![
            pod("ready", "n", "Running", true),
            pod("unready", "n", "Running", false),
            pod("floating", "", "Pending", false),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["floating", "unready", "ready"]);
    }

    #[test]
    fn of_ready_pods_cost_then_the_shortest_ready_then_restarts_then_the_newest_go_first() {
        let pod = |name: &str,
                   ready_at: &str,
                   restarts: i32,
                   created: &str,
                   cost: Option<&str>|
         -> Pod {
            let mut obj = json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": "n", "containers": []},
                "status": {"phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}],
                           "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": restarts}]},
            });
            if let Some(cost) = cost {
                obj["metadata"]["annotations"] = json!({DELETION_COST: cost});
            }
            serde_json::from_value(obj).unwrap()
        };
        let t = |m: u32| format!("2026-12-04T10:{m:02}:00Z");
        let mut pods = vec![
            pod("old-steady", &t(1), 0, &t(0), None),
            pod("just-ready", &t(9), 0, &t(0), None),
            pod("restarting", &t(1), 5, &t(0), None),
            pod("newer", &t(1), 0, &t(2), None),
            pod("cheap", &t(1), 0, &t(0), Some("-10")),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            ["cheap", "just-ready", "restarting", "newer", "old-steady"]
        );
    }
}
