//! Persistent storage's shared vocabulary: the annotations binder,
//! scheduler, provisioner and kubelet exchange, and which class is the
//! default (upstream's `component-helpers/storage/volume`).

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use serde_json::Value;

/// Claim annotation: the binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The controller, not the user, chose the other side of the binding.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Volume annotation: the provisioner that made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Claim annotation naming the provisioner asked for a volume.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its beta twin, written alongside.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Claim annotation: the node the scheduler chose for a delayed claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The legacy class annotation, which wins over `storageClassName`.
pub const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The finalizer kept on a claim while a pod uses it.
pub const CLAIM_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer kept on a volume while it is bound.
pub const VOLUME_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The annotations marking the default StorageClass (GA, beta).
const DEFAULT_CLASS_MARKS: &[&str] = &[
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Whether a StorageClass is marked default (either annotation "true").
pub fn is_default_class(class: &Value) -> bool {
    DEFAULT_CLASS_MARKS
        .iter()
        .any(|a| class["metadata"]["annotations"][*a].as_str() == Some("true"))
}

/// The default class among `classes`: the newest marked default, ties by name.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    crate::api::values::meta::newest_default(classes, DEFAULT_CLASS_MARKS)
}

/// Whether the object carries `annotation` (its value does not matter).
pub fn has(meta: &kube::api::ObjectMeta, annotation: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotation))
}

/// The class a claim asks for (the beta annotation wins over the field).
pub fn claim_class(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .annotations()
        .get(BETA_CLASS)
        .cloned()
        .or_else(|| claim.spec.as_ref()?.storage_class_name.clone())
}

/// The class a volume belongs to ("" for none).
pub fn volume_class(pv: &PersistentVolume) -> String {
    pv.annotations()
        .get(BETA_CLASS)
        .cloned()
        .or_else(|| pv.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

fn quantity(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| crate::api::values::quantity::value(&q.0))
        .unwrap_or(0)
}

/// The storage a claim asks for, in bytes.
pub fn requested(claim: &PersistentVolumeClaim) -> i64 {
    quantity(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

/// A volume's storage capacity, in bytes.
pub fn capacity(pv: &PersistentVolume) -> i64 {
    quantity(
        pv.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

/// A volume's mode (Filesystem when unset).
pub fn volume_mode_pv(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

/// A claim's volume mode (Filesystem when unset).
pub fn volume_mode_claim(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

/// A volume's phase ("" before any).
pub fn phase_of(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether `pv`'s claimRef names `claim` (by namespace and name, and uid
/// when the ref carries one).
pub fn prebound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    reference.name == claim.metadata.name
        && reference.namespace == claim.metadata.namespace
        && reference
            .uid
            .as_deref()
            .is_none_or(|uid| uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

/// The access modes listed (none when unset).
pub fn access_modes(modes: Option<&Vec<String>>) -> Vec<String> {
    modes.cloned().unwrap_or_default()
}

/// The volume a claim binds to: one pre-bound to it, else (unless the
/// binding waits for the scheduler) the smallest Available one of its
/// class that offers every access mode asked, has the capacity and
/// matches its selector — and, when the scheduler asks for `node`,
/// whose node affinity admits that node.
pub fn find_best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    delayed: bool,
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let wanted = access_modes(claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
    let size = requested(claim);
    let class = claim_class(claim).unwrap_or_default();
    let selector = claim.spec.as_ref().and_then(|s| s.selector.clone());
    let mut best: Option<&PersistentVolume> = None;
    for pv in volumes {
        let offered = access_modes(pv.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
        if !wanted.iter().all(|m| offered.contains(m)) {
            continue;
        }
        let claimed_elsewhere = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some()
            && !prebound_to(pv, claim);
        if claimed_elsewhere
            || capacity(pv) < size
            || volume_mode_pv(pv) != volume_mode_claim(claim)
            || pv.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if node.is_some_and(|n| !node_affinity_allows(pv, n)) {
            continue;
        }
        if prebound_to(pv, claim) {
            return Some(pv);
        }
        if delayed || phase_of(pv) != "Available" || volume_class(pv) != class {
            continue;
        }
        if let Some(selector) = &selector
            && !crate::api::values::selectors::LabelSelector::from_typed(selector)
                .matches_labels(pv.labels())
        {
            continue;
        }
        let smaller = best.is_none_or(|b| capacity(pv) < capacity(b));
        if smaller {
            best = Some(pv);
        }
    }
    best
}

/// The reference a volume bound to `claim` carries (`spec.claimRef`).
pub fn claim_reference(
    claim: &PersistentVolumeClaim,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Whether a volume's required node affinity admits `node` (none: any node).
pub fn node_affinity_allows(pv: &PersistentVolume, node: &Node) -> bool {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice());
    match terms {
        None => true,
        Some(terms) => terms
            .iter()
            .any(|t| crate::api::values::scheduling::term_matches(t, node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newest_default_class_is_the_default() {
        let class = |name: &str, created: &str, default: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {"storageclass.kubernetes.io/is-default-class": default}}})
        };
        let classes = [
            class("old", "2024-01-01T00:00:00Z", "true"),
            class("b", "2025-01-01T00:00:00Z", "true"),
            class("a", "2025-01-01T00:00:00Z", "true"),
            class("plain", "2026-01-01T00:00:00Z", "false"),
        ];
        assert_eq!(default_class(&classes).unwrap()["metadata"]["name"], "a");
        assert!(default_class(&classes[3..]).is_none());
    }
}
