//! Storage object in-use protection (upstream's `pvc-protection` and
//! `pv-protection` controllers): a claim being deleted keeps its finalizer
//! while a scheduled pod names it; a volume being deleted keeps its
//! finalizer while it is Bound. Admission puts the finalizers on.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error};
use crate::api::values::storage::{CLAIM_PROTECTION, VOLUME_PROTECTION};

/// Runs the claim protection loop (woken by the claims' pods too).
pub async fn run_claims(context: Arc<Context>) {
    let claims_of = |pod: Arc<Pod>| {
        let namespace = pod.namespace().unwrap_or_default();
        crate::api::values::pods::claims_of(&pod)
            .map(|claim| ObjectRef::new(claim).within(&namespace))
            .collect::<Vec<_>>()
    };
    let watching = crate::runtime::shared_controller_watching(&context.informers, claims_of);
    if let Some(controller) = watching.await {
        super::drive(controller, context, sync_claim).await;
    }
}

/// Runs the volume protection loop.
pub async fn run_volumes(context: Arc<Context>) {
    if let Some(controller) =
        crate::runtime::shared_controller::<PersistentVolume>(&context.informers).await
    {
        super::drive(controller, context, sync_volume).await;
    }
}

/// Whether `pod` holds `claim` (a scheduled pod naming it).
pub fn uses(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()))
        && crate::api::values::pods::claims_of(pod).any(|c| c == claim)
}

/// `object` without `finalizer`, or None when it does not carry it.
fn without<K: Resource + Clone>(object: &K, finalizer: &str) -> Option<K> {
    let finalizers = object.meta().finalizers.as_ref()?;
    if !finalizers.iter().any(|f| f == finalizer) {
        return None;
    }
    let mut object = object.clone();
    object
        .meta_mut()
        .finalizers
        .get_or_insert_default()
        .retain(|f| f != finalizer);
    Some(object)
}

async fn sync_claim(
    claim: Arc<PersistentVolumeClaim>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    if claim.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let Some(released) = without(claim.as_ref(), CLAIM_PROTECTION) else {
        return Ok(Action::await_change());
    };
    let namespace = claim.namespace().unwrap_or_default();
    // A user in the shared cache settles it; no user there is confirmed
    // with the API server (as upstream's protection controller asks it),
    // since a pod the cache has not taken in yet may use the claim.
    let cached = context.informers.informer::<Pod>().store.state();
    let in_namespace = |p: &&Arc<Pod>| p.namespace().as_deref() == Some(namespace.as_str());
    if cached
        .iter()
        .filter(in_namespace)
        .any(|p| uses(p, &claim.name_any()))
    {
        return Ok(Action::await_change());
    }
    let pods = Api::<Pod>::namespaced(context.client.clone(), &namespace)
        .list(&ListParams::default())
        .await?;
    if pods.items.iter().any(|p| uses(p, &claim.name_any())) {
        return Ok(Action::await_change());
    }
    Api::<PersistentVolumeClaim>::namespaced(context.client.clone(), &namespace)
        .replace(&claim.name_any(), &PostParams::default(), &released)
        .await?;
    Ok(Action::await_change())
}

async fn sync_volume(pv: Arc<PersistentVolume>, context: Arc<Context>) -> Result<Action, Error> {
    let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if pv.metadata.deletion_timestamp.is_none() || bound {
        return Ok(Action::await_change());
    }
    if let Some(released) = without(pv.as_ref(), VOLUME_PROTECTION) {
        Api::<PersistentVolume>::all(context.client.clone())
            .replace(&pv.name_any(), &PostParams::default(), &released)
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_scheduled_pods_naming_the_claim_hold_it() {
        let pod = |node: &str, claim: &str| -> Pod {
            serde_json::from_value(json!({"spec": {"nodeName": node, "containers": [],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}))
            .unwrap()
        };
        assert!(uses(&pod("n1", "data"), "data"));
        assert!(!uses(&pod("", "data"), "data"));
        assert!(!uses(&pod("n1", "other"), "data"));
        let claim: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": "data", "finalizers": ["a", CLAIM_PROTECTION]}}),
        )
        .unwrap();
        let released = without(&claim, CLAIM_PROTECTION).unwrap();
        assert_eq!(released.metadata.finalizers.unwrap(), ["a"]);
        assert!(without(&released_again(), CLAIM_PROTECTION).is_none());
    }

    fn released_again() -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "data", "finalizers": ["a"]}})).unwrap()
    }
}
