//! StatefulSets: pods with stable names `<set>-0 … <set>-(n-1)`, each with
//! its hostname and the governing Service as subdomain. OrderedReady makes
//! them one at a time in order (each Running and Ready before the next) and
//! removes them from the highest down; Parallel does both at once. A new
//! template rolls out from the highest ordinal down to the partition, one
//! pod at a time; history lives in ControllerRevisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::history::{self, REVISION_HASH};
use super::{Context, Error};
use crate::api::pods;
use crate::telemetry::events::{self, Source};

const COMPONENT: &str = "statefulset-controller";
/// Labels upstream puts on every StatefulSet pod.
const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(
        super::workqueue::queued(context.queue.clone(), reconcile),
        super::retry,
        context,
    )
    .for_each(|_| async {})
    .await;
}

/// The ordinal in a StatefulSet pod's name (`web-3` → 3).
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The pod at `ordinal`, made from the revision `hash`'s template.
fn stateful_pod(set: &StatefulSet, ordinal: i32, hash: &str) -> Pod {
    let spec = set.spec.as_ref();
    let namespace = set.namespace().unwrap_or_default();
    let mut pod = super::pod_from_template(
        spec.map(|s| &s.template),
        crate::runtime::controller_ref(set),
        &namespace,
    );
    let name = format!("{}-{ordinal}", set.name_any());
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    labels.insert(POD_NAME.into(), name.clone());
    labels.insert(POD_INDEX.into(), ordinal.to_string());
    if let Some(pod_spec) = pod.spec.as_mut() {
        pod_spec.hostname = Some(name);
        if let Some(service) = spec
            .and_then(|s| s.service_name.clone())
            .filter(|s| !s.is_empty())
        {
            pod_spec.subdomain = Some(service);
        }
    }
    pod
}

/// Running and Ready (for minReadySeconds): the next ordinal may start.
fn settled(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pods::is_available(pod, min_ready, now)
}

async fn reconcile(set: Arc<StatefulSet>, context: Arc<Context>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let revisions: Api<ControllerRevision> = Api::namespaced(context.client.clone(), &namespace);
    let owner = crate::runtime::controller_ref(set.as_ref());
    let previous = set.status.clone().unwrap_or_default();
    let history = history::record(
        &revisions,
        &owner,
        &spec.selector,
        &spec.template,
        previous.collision_count,
    )
    .await?;
    let update_hash = history::hash_of(&history.current);
    let update_revision = history.current.name_any();
    let current_revision = previous
        .current_revision
        .clone()
        .filter(|r| history.all.iter().any(|h| &h.name_any() == r))
        .unwrap_or_else(|| update_revision.clone());
    let current_hash = history
        .all
        .iter()
        .find(|h| h.name_any() == current_revision)
        .map(history::hash_of)
        .unwrap_or_else(|| update_hash.clone());
    let owned = super::claim(&pods_api, &spec.selector, &owner).await?;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();
    let source = Source {
        component: COMPONENT.into(),
        host: None,
    };
    let event = |reason: &'static str, verb: &str, pod: &str| {
        let message = format!("{verb} Pod {pod} in StatefulSet {name} successful");
        let client = context.client.clone();
        let source = source.clone();
        let set = set.clone();
        async move { events::record(&client, &source, set.as_ref(), "Normal", reason, &message).await }
    };

    let by_ordinal: BTreeMap<i32, &Pod> = owned
        .iter()
        .filter_map(|p| Some((ordinal(&name, &p.name_any())?, p)))
        .collect();
    let mut requeue = None;
    // Wanted ordinals, lowest first: make the missing, replace the failed.
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            None => {
                // Below the partition pods stay at the current revision.
                let partition = partition_of(&set);
                let hash = if i < partition {
                    &current_hash
                } else {
                    &update_hash
                };
                let pod = stateful_pod(&set, i, hash);
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => event("SuccessfulCreate", "create", &pod.name_any()).await,
                    Err(e) if crate::runtime::already_exists(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                if !parallel {
                    break;
                }
            }
            Some(pod) if pods::is_terminal(pod) && pod.metadata.deletion_timestamp.is_none() => {
                let _ = pods_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await;
                event("SuccessfulDelete", "delete", &pod.name_any()).await;
                if !parallel {
                    break;
                }
            }
            Some(pod) if !parallel && !settled(pod, min_ready, now) => {
                if pods::is_ready(pod) {
                    requeue = pods::available_in(pod, min_ready, now);
                }
                break;
            }
            Some(_) => {}
        }
    }
    let all_settled = (0..replicas).all(|i| {
        by_ordinal
            .get(&i)
            .is_some_and(|p| settled(p, min_ready, now))
    });
    // Ordinals past `replicas`, highest first.
    let condemned: Vec<&Pod> = by_ordinal
        .iter()
        .rev()
        .filter(|(i, _)| **i >= replicas)
        .map(|(_, p)| *p)
        .collect();
    let doomed: Vec<&&Pod> = if parallel {
        condemned.iter().collect()
    } else if all_settled {
        // One at a time: the highest, once the one before it has gone.
        condemned.first().into_iter().collect()
    } else {
        Vec::new()
    };
    for pod in doomed {
        if pod.metadata.deletion_timestamp.is_none() {
            let _ = pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await;
            event("SuccessfulDelete", "delete", &pod.name_any()).await;
        }
    }
    // Rolling update: the highest outdated pod at or above the partition
    // goes once everything is settled; it comes back at the new revision.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        != Some("OnDelete");
    if rolling && all_settled && condemned.is_empty() {
        let partition = partition_of(&set);
        if let Some((_, pod)) = by_ordinal
            .iter()
            .rev()
            .filter(|(i, _)| **i >= partition && **i < replicas)
            .find(|(_, p)| p.labels().get(REVISION_HASH) != Some(&update_hash))
            && pod.metadata.deletion_timestamp.is_none()
        {
            let _ = pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await;
            event("SuccessfulDelete", "delete", &pod.name_any()).await;
        }
    }

    let live: Vec<&Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |hash: &str| {
        live.iter()
            .filter(|p| p.labels().get(REVISION_HASH).map(String::as_str) == Some(hash))
            .count() as i32
    };
    let updated = count(&update_hash);
    let done = updated == replicas && live.len() as i32 == replicas;
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: live.len() as i32,
        ready_replicas: Some(live.iter().filter(|p| pods::is_ready(p)).count() as i32),
        available_replicas: Some(
            live.iter()
                .filter(|p| pods::is_available(p, min_ready, now))
                .count() as i32,
        ),
        current_replicas: Some(count(&current_hash)),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision.clone()),
        update_revision: Some(update_revision.clone()),
        collision_count: previous.collision_count,
        conditions: previous.conditions.clone(),
    };
    if done {
        status.current_revision = Some(update_revision);
        status.current_replicas = Some(updated);
    }
    let in_use: Vec<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(REVISION_HASH).cloned())
        .collect();
    let mut keep = in_use.clone();
    keep.push(current_hash);
    history::trim(
        &revisions,
        &history,
        &keep,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await;
    let api: Api<StatefulSet> = Api::namespaced(context.client.clone(), &namespace);
    super::write_status(&api, &set, &previous, &status).await?;
    Ok(requeue.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(100))
    }))
}

fn partition_of(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web-x"), None);
    }

    #[test]
    fn pods_get_stable_names_hostnames_and_the_service_subdomain() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        let pod = stateful_pod(&set, 1, "h");
        assert_eq!(pod.name_any(), "web-1");
        assert_eq!(pod.metadata.generate_name, None);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        assert_eq!(pod.metadata.labels.unwrap()[POD_INDEX], "1");
    }
}
