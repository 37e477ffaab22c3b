//! StatefulSets: pods with stable names `<set>-0 … <set>-(n-1)`, each with
//! its hostname and the governing Service as subdomain. OrderedReady makes
//! them one at a time in order (each Running and Ready before the next) and
//! removes them from the highest down; Parallel does both at once. A new
//! template rolls out from the highest ordinal down to the partition, one
//! pod at a time; history lives in ControllerRevisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::history::{self, REVISION_HASH};
use super::{Context, Error};
use crate::api::values::pods;
use crate::telemetry::events::{self, Source};

const COMPONENT: &str = "statefulset-controller";
/// Labels upstream puts on every StatefulSet pod.
const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller: woken by its StatefulSets and by changes to the
/// pods they control, which it reads from the shared pod cache.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) = super::over_owned_pods::<StatefulSet>(&context).await {
        super::drive(controller, context, reconcile).await;
    }
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
        // Each claim template is a volume of that name, first.
        let mut volumes: Vec<k8s_openapi::api::core::v1::Volume> = claim_templates(set)
            .iter()
            .map(|t| k8s_openapi::api::core::v1::Volume {
                name: t.name_any(),
                persistent_volume_claim: Some(
                    k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                        claim_name: claim_name(set, t, ordinal),
                        read_only: Some(false),
                    },
                ),
                ..Default::default()
            })
            .collect();
        for volume in pod_spec.volumes.take().unwrap_or_default() {
            if !volumes.iter().any(|v| v.name == volume.name) {
                volumes.push(volume);
            }
        }
        if !volumes.is_empty() {
            pod_spec.volumes = Some(volumes);
        }
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

fn claim_templates(set: &StatefulSet) -> Vec<PersistentVolumeClaim> {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default()
}

/// The claim of `template` for the pod at `ordinal`: `<template>-<set>-<ordinal>`.
fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// The claim made from `template` for `ordinal`: the template with the
/// set's namespace, and the selector's labels over the template's.
fn new_claim(
    set: &StatefulSet,
    template: &PersistentVolumeClaim,
    ordinal: i32,
) -> PersistentVolumeClaim {
    let mut claim = template.clone();
    claim.metadata.name = Some(claim_name(set, template, ordinal));
    claim.metadata.namespace = set.namespace();
    claim.metadata.resource_version = None;
    claim.metadata.uid = None;
    claim.metadata.creation_timestamp = None;
    claim.status = None;
    let labels = claim.metadata.labels.get_or_insert_default();
    for (k, v) in set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
    {
        labels.insert(k, v);
    }
    claim
}

/// The owner references a set's claim should carry under its retention
/// policy: the set's (whenDeleted: Delete) while its ordinal is wanted,
/// its pod's (whenScaled: Delete) once condemned; others' refs stay.
fn claim_owners(
    set: &StatefulSet,
    claim: &PersistentVolumeClaim,
    ordinal: i32,
    pod: Option<&Pod>,
) -> Vec<OwnerReference> {
    let spec = set.spec.as_ref();
    let policy = spec.and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |p: Option<&String>| p.map(String::as_str) == Some("Delete");
    let when_deleted = delete(policy.and_then(|p| p.when_deleted.as_ref()));
    let when_scaled = delete(policy.and_then(|p| p.when_scaled.as_ref()));
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let condemned = ordinal >= replicas;
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone());
    // Refs to this set or its pod are ours to decide; the rest stay.
    let mut refs: Vec<OwnerReference> = claim
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            !(r.uid == set_uid
                || (r.kind == "Pod" && Some(&r.uid) == pod_uid.as_ref())
                || (r.kind == "StatefulSet" && r.name == set.name_any()))
        })
        .collect();
    if refs.iter().any(|r| r.controller == Some(true)) {
        return claim.metadata.owner_references.clone().unwrap_or_default();
    }
    if when_scaled && condemned {
        if let Some(pod) = pod {
            refs.push(crate::runtime::controller_ref(pod));
        }
    } else if when_deleted {
        refs.push(crate::runtime::controller_ref(set));
    }
    refs
}

/// Makes the pod's missing claims and keeps every claim's owners as the
/// retention policy says. Err when a claim is being deleted (the pod must
/// wait for it to go).
async fn ensure_claims(
    context: &Context,
    set: &StatefulSet,
    ordinal: i32,
    pod: Option<&Pod>,
    create: bool,
) -> Result<(), Error> {
    let namespace = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let source = Source {
        component: COMPONENT.into(),
        host: None,
    };
    let pod_name = format!("{}-{ordinal}", set.name_any());
    for template in claim_templates(set) {
        let name = claim_name(set, &template, ordinal);
        match api.get_opt(&name).await? {
            None if create => {
                let mut claim = new_claim(set, &template, ordinal);
                claim.metadata.owner_references =
                    Some(claim_owners(set, &claim, ordinal, pod)).filter(|r| !r.is_empty());
                match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => {
                        let message = format!(
                            "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                            set.name_any()
                        );
                        events::record(
                            &context.client,
                            &source,
                            set,
                            "Normal",
                            "SuccessfulCreate",
                            &message,
                        )
                        .await;
                    }
                    Err(e) if crate::runtime::already_exists(&e) => {}
                    Err(e) => {
                        let message = format!(
                            "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                            set.name_any()
                        );
                        events::record(
                            &context.client,
                            &source,
                            set,
                            "Warning",
                            "FailedCreate",
                            &message,
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            None => {}
            Some(claim) if claim.metadata.deletion_timestamp.is_some() => {
                return Err(Error::Waiting(format!("pvc {name} is being deleted")));
            }
            Some(claim) => {
                let owners = claim_owners(set, &claim, ordinal, pod);
                if owners != claim.metadata.owner_references.clone().unwrap_or_default() {
                    let mut updated = claim.clone();
                    updated.metadata.owner_references = Some(owners);
                    api.replace(&name, &PostParams::default(), &updated).await?;
                }
            }
        }
    }
    Ok(())
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
    // Act only on a full cache that shows this set's own last creates and
    // deletes (the next change in it wakes the set; the requeue is a
    // fallback).
    let key = format!("{namespace}/{name}");
    let Some((cache, true)) = super::pod_cache(&context, &key) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let spec = set.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let revisions: Api<ControllerRevision> = Api::namespaced(context.client.clone(), &namespace);
    let owner = crate::runtime::controller_ref(set.as_ref());
    let previous = set.status.clone().unwrap_or_default();
    let history = history::record(
        &revisions,
        &owner,
        &namespace,
        &spec.selector,
        &spec.template,
        previous.collision_count,
        &context.informers,
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
    let candidates = super::selected(&cache, &namespace, &spec.selector);
    let owned = super::claim_from(&pods_api, candidates, &owner).await;
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
                ensure_claims(&context, &set, i, None, true).await?;
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(made) => {
                        context.expectations.wrote(&key, &made, false);
                        event("SuccessfulCreate", "create", &pod.name_any()).await
                    }
                    Err(e) if crate::runtime::already_exists(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                if !parallel {
                    break;
                }
            }
            Some(pod) if pods::is_terminal(pod) && pod.metadata.deletion_timestamp.is_none() => {
                super::delete_owned(&context, &key, &pods_api, pod).await;
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
            // Its claims follow the pod when the policy says so.
            if let Some(i) = ordinal(&name, &pod.name_any()) {
                ensure_claims(&context, &set, i, Some(pod), false).await?;
            }
            super::delete_owned(&context, &key, &pods_api, pod).await;
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
            super::delete_owned(&context, &key, &pods_api, pod).await;
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

    #[test]
    fn claim_templates_become_claims_and_volumes_per_ordinal() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"replicas": 2, "serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                                  "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                                               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
                     "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}},
        }))
        .unwrap();
        let pod = stateful_pod(&set, 1, "h");
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["data", "cache"]);
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-1"
        );
        let template = &claim_templates(&set)[0];
        let claim = new_claim(&set, template, 1);
        assert_eq!(claim.name_any(), "data-web-1");
        let labels = claim.metadata.labels.clone().unwrap();
        assert_eq!(
            (labels["tier"].as_str(), labels["app"].as_str()),
            ("db", "nginx")
        );
        // In range: owned by the set; condemned: by its pod.
        let owners = claim_owners(&set, &claim, 1, None);
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "s1");
        let condemned: Pod = serde_json::from_value(
            json!({"metadata": {"name": "web-2", "namespace": "default", "uid": "p2"}}),
        )
        .unwrap();
        let owners = claim_owners(&set, &new_claim(&set, template, 2), 2, Some(&condemned));
        assert_eq!((owners.len(), owners[0].kind.as_str()), (1, "Pod"));
    }
}
