//! The PersistentVolume binder (upstream's `persistentvolume-binder`): binds
//! claims to matching volumes (the smallest that fits, pre-bound volumes
//! first), asks a class's provisioner for a volume when none matches
//! (leaving `WaitForFirstConsumer` claims to the scheduler's node choice),
//! gives a claim without a class the default one later, marks claims Lost
//! and volumes Released, and reclaims released volumes (Retain keeps them;
//! Delete is the provisioner's, which deletes the storage and the PV).
//! The decisions are pure functions below; the reconcilers write them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
    Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::api::values::storage::{
    BETA_STORAGE_PROVISIONER, BIND_COMPLETED, BOUND_BY_CONTROLLER, PROVISIONED_BY, SELECTED_NODE,
    STORAGE_PROVISIONER, access_modes, capacity, claim_class, find_best_match, has, phase_of,
    prebound_to, requested, volume_class, volume_mode_claim, volume_mode_pv,
};
use crate::telemetry::events::Recorder;

const COMPONENT: &str = "persistentvolume-controller";
/// Every claim and volume not settled is looked at again this often
/// (`--pvclaimbinder-sync-period`).
const RESYNC: Duration = Duration::from_secs(15);

/// Runs the claim and volume loops.
pub async fn run(context: Arc<Context>) {
    tokio::join!(run_claims(context.clone()), run_volumes(context));
}

async fn run_claims(context: Arc<Context>) {
    let claim_of = |pv: Arc<PersistentVolume>| {
        let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
        Some(ObjectRef::new(claim.name.as_deref()?).within(claim.namespace.as_deref()?))
    };
    let watching = crate::runtime::shared_controller_watching(&context.informers, claim_of);
    if let Some(controller) = watching.await {
        super::drive(controller, context, sync_claim).await;
    }
}

async fn run_volumes(context: Arc<Context>) {
    let volume_of = |pvc: Arc<PersistentVolumeClaim>| {
        let name = pvc.spec.as_ref()?.volume_name.clone()?;
        (!name.is_empty()).then(|| ObjectRef::new(&name))
    };
    let watching = crate::runtime::shared_controller_watching(&context.informers, volume_of);
    let Some(controller) = watching.await else {
        return;
    };
    controller
        .run(sync_volume, super::retry, context)
        .for_each(|_| async {})
        .await;
}

/// The volume after binding it to `claim` (None when already so).
pub fn bind_volume(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Option<PersistentVolume> {
    let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let uid_matches = reference.and_then(|r| r.uid.as_deref()) == claim.metadata.uid.as_deref();
    if prebound_to(pv, claim) && uid_matches {
        return None;
    }
    let mut pv = pv.clone();
    if !prebound_to(&pv, claim) {
        pv.annotations_mut()
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    pv.spec.get_or_insert_default().claim_ref =
        Some(crate::api::values::storage::claim_reference(claim));
    Some(pv)
}

/// The claim after binding it to `pv` (None when already so).
pub fn bind_claim(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Option<PersistentVolumeClaim> {
    let name = pv.name_any();
    let current = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    if current == Some(name.as_str()) && has(&claim.metadata, BIND_COMPLETED) {
        return None;
    }
    let mut claim = claim.clone();
    if current != Some(name.as_str()) {
        claim.spec.get_or_insert_default().volume_name = Some(name);
        claim
            .annotations_mut()
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    claim
        .annotations_mut()
        .insert(BIND_COMPLETED.into(), "yes".into());
    Some(claim)
}

/// A claim's status in `phase` (Bound copies the volume's modes and capacity).
pub fn claim_status(
    claim: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
) -> PersistentVolumeClaimStatus {
    let mut status = claim.status.clone().unwrap_or_default();
    let was = status.phase.clone();
    status.phase = Some(phase.into());
    match (phase, pv) {
        ("Bound", Some(pv)) => {
            status.access_modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
            if was.as_deref() != Some("Bound") || status.capacity.is_none() {
                status.capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone()).map(|c| {
                    c.into_iter()
                        .filter(|(k, _)| k == "storage")
                        .collect::<BTreeMap<_, _>>()
                });
            }
        }
        _ => {
            status.access_modes = None;
            status.capacity = None;
        }
    }
    status
}

async fn write_claim_status(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    status: PersistentVolumeClaimStatus,
) -> Result<(), Error> {
    let previous = claim.status.clone().unwrap_or_default();
    super::write_status(api, claim, &previous, &status).await
}

async fn write_volume_phase(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    phase: &str,
    message: Option<String>,
) -> Result<(), Error> {
    let previous = pv.status.clone().unwrap_or_default();
    let status = PersistentVolumeStatus {
        phase: Some(phase.into()),
        message,
        reason: None,
        last_phase_transition_time: previous.last_phase_transition_time.clone(),
    };
    if previous.phase == status.phase && previous.message == status.message {
        return Ok(());
    }
    super::write_status(api, pv, &previous, &status).await
}

async fn sync_claim(
    claim: Arc<PersistentVolumeClaim>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let client = &context.client;
    let namespace = claim.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), COMPONENT, None);
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if has(&claim.metadata, BIND_COMPLETED) {
        // Bound: keep both halves, or the claim is lost.
        let lost = |reason: &'static str, message: &'static str| {
            let (claims, claim, recorder) = (claims.clone(), claim.clone(), recorder.clone());
            async move {
                if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Lost") {
                    recorder
                        .record(claim.as_ref(), "Warning", reason, message)
                        .await;
                }
                write_claim_status(&claims, &claim, claim_status(&claim, "Lost", None)).await
            }
        };
        if volume_name.is_empty() {
            lost(
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            )
            .await?;
            return Ok(Action::await_change());
        }
        let Some(pv) = volumes.get_opt(&volume_name).await? else {
            lost(
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            )
            .await?;
            return Ok(Action::await_change());
        };
        let reference_uid = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.clone());
        if reference_uid.is_some_and(|uid| Some(uid) != claim.metadata.uid) {
            lost(
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )
            .await?;
            return Ok(Action::await_change());
        }
        bind(&context, &claim, &pv).await?;
        return Ok(Action::await_change());
    }
    let class_name = claim_class(&claim);
    let class = match class_name.as_deref().filter(|c| !c.is_empty()) {
        Some(name) => {
            Api::<StorageClass>::all(client.clone())
                .get_opt(name)
                .await?
        }
        None => None,
    };
    if !volume_name.is_empty() {
        // Pre-bound by the user to a named volume.
        let Some(pv) = volumes.get_opt(&volume_name).await? else {
            write_claim_status(&claims, &claim, claim_status(&claim, "Pending", None)).await?;
            return Ok(Action::requeue(RESYNC));
        };
        let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if reference.is_none() {
            let mismatch = if pv.metadata.deletion_timestamp.is_some() {
                Some(format!(
                    "the volume is marked for deletion {:?}",
                    pv.name_any()
                ))
            } else if capacity(&pv) < requested(&claim) {
                Some("requested PV is too small".to_string())
            } else if volume_class(&pv) != class_name.clone().unwrap_or_default() {
                Some("storageClassName does not match".to_string())
            } else if volume_mode_pv(&pv) != volume_mode_claim(&claim) {
                Some("incompatible volumeMode".to_string())
            } else {
                let wanted =
                    access_modes(claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
                let offered = access_modes(pv.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
                (!wanted.iter().all(|m| offered.contains(m)))
                    .then(|| "incompatible accessMode".to_string())
            };
            if let Some(reason) = mismatch {
                let message = format!("Cannot bind to requested volume {volume_name:?}: {reason}");
                recorder
                    .record(claim.as_ref(), "Warning", "VolumeMismatch", &message)
                    .await;
                write_claim_status(&claims, &claim, claim_status(&claim, "Pending", None)).await?;
                return Ok(Action::requeue(RESYNC));
            }
        } else if !prebound_to(&pv, &claim) {
            let message = format!("volume {volume_name:?} already bound to a different claim.");
            recorder
                .record(claim.as_ref(), "Warning", "FailedBinding", &message)
                .await;
            write_claim_status(&claims, &claim, claim_status(&claim, "Pending", None)).await?;
            return Ok(Action::requeue(RESYNC));
        }
        bind(&context, &claim, &pv).await?;
        return Ok(Action::await_change());
    }
    let delayed = class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    // Candidates from the shared cache (a stale one fails the bind's
    // resourceVersion check and is retried); none until it is filled.
    let cached = context.informers.informer::<PersistentVolume>();
    if !cached.filled() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let all: Vec<PersistentVolume> = cached.store.state().iter().map(|v| (**v).clone()).collect();
    if let Some(pv) = find_best_match(&claim, &all, delayed, None) {
        bind(&context, &claim, pv).await?;
        return Ok(Action::await_change());
    }
    if class_name.is_none() {
        // A default class made after the claim: give it to the claim.
        let classes = context.informers.informer::<StorageClass>().store.state();
        let as_values: Vec<serde_json::Value> = classes
            .iter()
            .filter_map(|c| serde_json::to_value(c.as_ref()).ok())
            .collect();
        if let Some(name) = default_class_name(&as_values) {
            let mut updated = (*claim).clone();
            updated.spec.get_or_insert_default().storage_class_name = Some(name);
            claims
                .replace(&claim.name_any(), &PostParams::default(), &updated)
                .await?;
            return Ok(Action::await_change());
        }
    }
    let selected = claim.annotations().get(SELECTED_NODE).cloned();
    if delayed && selected.is_none() {
        let waiting = waiting_pods(&context, &claim);
        let (reason, message) = match waiting.as_slice() {
            [] => (
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".to_string(),
            ),
            [one] => (
                "WaitForPodScheduled",
                format!("waiting for pod {one} to be scheduled"),
            ),
            many => (
                "WaitForPodScheduled",
                format!("waiting for pods {} to be scheduled", many.join(",")),
            ),
        };
        recorder
            .record(claim.as_ref(), "Normal", reason, &message)
            .await;
    } else if let Some(class) = &class {
        provision(&claims, &claim, class, &recorder).await?;
    } else if class_name.as_deref().is_some_and(|c| !c.is_empty()) {
        let message = format!(
            "storageclass.storage.k8s.io {:?} not found",
            class_name.unwrap_or_default()
        );
        recorder
            .record(claim.as_ref(), "Warning", "ProvisioningFailed", &message)
            .await;
    } else {
        recorder
            .record(
                claim.as_ref(),
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
            .await;
    }
    write_claim_status(&claims, &claim, claim_status(&claim, "Pending", None)).await?;
    Ok(Action::requeue(RESYNC))
}

/// The name of the default class among `classes` (as JSON objects).
fn default_class_name(classes: &[serde_json::Value]) -> Option<String> {
    crate::api::values::storage::default_class(classes)
        .and_then(|c| c["metadata"]["name"].as_str())
        .map(str::to_string)
}

/// Unscheduled pods of the claim's namespace that use it.
fn waiting_pods(context: &Context, claim: &PersistentVolumeClaim) -> Vec<String> {
    let namespace = claim.namespace();
    let name = claim.name_any();
    context
        .informers
        .informer::<Pod>()
        .store
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace)
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
                && !crate::api::values::pods::is_terminal(p)
                && crate::api::values::pods::claims_of(p).any(|c| c == name)
        })
        .map(|p| p.name_any())
        .collect()
}

/// Asks the class's provisioner for a volume: both storage-provisioner
/// annotations on the claim, and the event telling the user so.
async fn provision(
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    recorder: &Recorder,
) -> Result<(), Error> {
    let provisioner = class.provisioner.clone();
    let annotations = claim.annotations();
    if annotations.get(STORAGE_PROVISIONER) != Some(&provisioner)
        || annotations.get(BETA_STORAGE_PROVISIONER) != Some(&provisioner)
    {
        let mut updated = claim.clone();
        updated
            .annotations_mut()
            .insert(STORAGE_PROVISIONER.into(), provisioner.clone());
        updated
            .annotations_mut()
            .insert(BETA_STORAGE_PROVISIONER.into(), provisioner.clone());
        claims
            .replace(&claim.name_any(), &PostParams::default(), &updated)
            .await?;
    }
    let message = format!(
        "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
    );
    recorder
        .record(claim, "Normal", "ExternalProvisioning", &message)
        .await;
    Ok(())
}

/// Both halves of a binding, each write skipped when already so: the
/// volume's claimRef, its Bound phase, the claim's volumeName and
/// annotations, its Bound status.
async fn bind(
    context: &Context,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<(), Error> {
    let client = &context.client;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let pv = match bind_volume(pv, claim) {
        Some(updated) => {
            volumes
                .replace(&pv.name_any(), &PostParams::default(), &updated)
                .await?
        }
        None => pv.clone(),
    };
    write_volume_phase(&volumes, &pv, "Bound", None).await?;
    let claim = match bind_claim(claim, &pv) {
        Some(updated) => {
            claims
                .replace(&claim.name_any(), &PostParams::default(), &updated)
                .await?
        }
        None => claim.clone(),
    };
    write_claim_status(&claims, &claim, claim_status(&claim, "Bound", Some(&pv))).await
}

async fn sync_volume(pv: Arc<PersistentVolume>, context: Arc<Context>) -> Result<Action, Error> {
    let client = &context.client;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), COMPONENT, None);
    let reference = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
    let Some(reference) = reference.filter(|r| r.uid.as_deref().is_some_and(|u| !u.is_empty()))
    else {
        // Free, or pre-bound by the user to a claim not yet made.
        write_volume_phase(&volumes, &pv, "Available", None).await?;
        return Ok(Action::await_change());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        reference.namespace.as_deref().unwrap_or_default(),
    );
    let claim = claims
        .get_opt(reference.name.as_deref().unwrap_or_default())
        .await?
        .filter(|c| c.metadata.uid == reference.uid);
    let Some(claim) = claim else {
        // The claim is gone.
        return release(&volumes, &pv, &recorder).await;
    };
    let claim_volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if claim_volume.is_empty() {
        // The claim's own loop binds it (a provisioned volume's fast path).
        if volume_mode_pv(&pv) != volume_mode_claim(&claim) {
            let message = format!(
                "Cannot bind PersistentVolume to requested PersistentVolumeClaim {:?} due to incompatible volumeMode.",
                claim.name_any()
            );
            recorder
                .record(pv.as_ref(), "Warning", "VolumeMismatch", &message)
                .await;
        }
        return Ok(Action::requeue(RESYNC));
    }
    if claim_volume == pv.name_any() {
        write_volume_phase(&volumes, &pv, "Bound", None).await?;
        return Ok(Action::await_change());
    }
    // The claim is bound to another volume.
    let policy = reclaim_policy(&pv);
    if has(&pv.metadata, PROVISIONED_BY) && policy == "Delete" {
        return release(&volumes, &pv, &recorder).await;
    }
    let mut freed = (*pv).clone();
    if has(&pv.metadata, BOUND_BY_CONTROLLER) {
        freed.spec.get_or_insert_default().claim_ref = None;
        freed.annotations_mut().remove(BOUND_BY_CONTROLLER);
    } else if let Some(r) = freed.spec.get_or_insert_default().claim_ref.as_mut() {
        r.uid = None;
    }
    let freed = volumes
        .replace(&pv.name_any(), &PostParams::default(), &freed)
        .await?;
    write_volume_phase(&volumes, &freed, "Available", None).await?;
    Ok(Action::await_change())
}

fn reclaim_policy(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone())
        .unwrap_or_else(|| "Retain".into())
}

/// A volume whose claim went: Released first (that status write wakes the
/// volume again), then reclaimed.
async fn release(
    volumes: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    recorder: &Recorder,
) -> Result<Action, Error> {
    if !matches!(phase_of(pv), "Released" | "Failed") {
        write_volume_phase(volumes, pv, "Released", None).await?;
        return Ok(Action::await_change());
    }
    reclaim(volumes, pv, recorder).await
}

/// A released volume's fate by its policy: Retain keeps it (and its data)
/// until an administrator frees it; Delete belongs to the provisioner that
/// made it; a volume no provisioner made cannot be deleted by kelp.
async fn reclaim(
    volumes: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    recorder: &Recorder,
) -> Result<Action, Error> {
    match reclaim_policy(pv).as_str() {
        "Retain" => Ok(Action::await_change()),
        "Delete" if has(&pv.metadata, PROVISIONED_BY) => Ok(Action::requeue(RESYNC)),
        "Delete" => {
            let message = format!(
                "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched",
                pv.name_any()
            );
            if phase_of(pv) != "Failed" {
                recorder
                    .record(pv, "Warning", "VolumeFailedDelete", &message)
                    .await;
            }
            write_volume_phase(volumes, pv, "Failed", Some(message)).await?;
            Ok(Action::await_change())
        }
        _ => {
            if phase_of(pv) != "Failed" {
                recorder
                    .record(
                        pv,
                        "Warning",
                        "VolumeUnknownReclaimPolicy",
                        "Volume has unrecognized PersistentVolumeReclaimPolicy",
                    )
                    .await;
            }
            write_volume_phase(
                volumes,
                pv,
                "Failed",
                Some("Volume has unrecognized PersistentVolumeReclaimPolicy".into()),
            )
            .await?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, class: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": size}, "storageClassName": class, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    fn claim(size: &str, class: &str) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "default", "uid": "c1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                     "storageClassName": class}}),
        )
        .unwrap()
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_class_wins() {
        let volumes = [
            pv("big", "10Gi", "slow", json!({})),
            pv("small", "2Gi", "slow", json!({})),
            pv("tiny", "500Mi", "slow", json!({})),
            pv("other", "2Gi", "fast", json!({})),
            pv(
                "taken",
                "2Gi",
                "slow",
                json!({"status": {"phase": "Bound"}}),
            ),
            pv(
                "rwx",
                "1Gi",
                "slow",
                json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
            ),
        ];
        let found = find_best_match(&claim("1Gi", "slow"), &volumes, false, None);
        assert_eq!(found.map(|p| p.name_any()).as_deref(), Some("small"));
        assert!(find_best_match(&claim("1Gi", "slow"), &volumes, true, None).is_none());
        assert!(find_best_match(&claim("20Gi", "slow"), &volumes, false, None).is_none());
    }

    #[test]
    fn a_volume_made_for_the_claim_binds_even_when_delayed() {
        let provisioned = pv(
            "pvc-c1",
            "1Gi",
            "local-path",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "c1"}}, "status": {"phase": "Pending"}}),
        );
        let volumes = [provisioned];
        let c = claim("1Gi", "local-path");
        let found = find_best_match(&c, &volumes, true, None).expect("pre-bound volume");
        assert!(
            bind_volume(found, &c).is_none(),
            "already bound to the claim"
        );
        let bound = bind_claim(&c, found).expect("claim changes");
        assert_eq!(bound.spec.unwrap().volume_name.as_deref(), Some("pvc-c1"));
        let annotations = bound.metadata.annotations.unwrap();
        assert_eq!(annotations[BIND_COMPLETED], "yes");
        assert_eq!(annotations[BOUND_BY_CONTROLLER], "yes");
    }

    #[test]
    fn binding_a_free_volume_marks_it_bound_by_the_controller() {
        let free = pv("a", "1Gi", "", json!({}));
        let c = claim("1Gi", "");
        let bound = bind_volume(&free, &c).expect("changes");
        assert_eq!(bound.annotations()[BOUND_BY_CONTROLLER], "yes");
        let reference = bound.spec.unwrap().claim_ref.unwrap();
        assert_eq!(reference.uid.as_deref(), Some("c1"));
        let status = claim_status(&c, "Bound", Some(&free));
        assert_eq!(status.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(claim_status(&c, "Lost", None).capacity, None);
    }
}
