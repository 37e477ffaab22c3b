//! Volume binding (upstream's VolumeBinding plugin): a pod's claims decide
//! where it may go. Bound claims pin it to their volumes' nodes; claims of
//! a `WaitForFirstConsumer` class wait for the scheduler's choice, which
//! either binds an Available volume on the chosen node (its claimRef) or
//! asks the class's provisioner for one there (the claim's
//! `volume.kubernetes.io/selected-node`). The pod is bound once every
//! claim is. Pure decisions over a snapshot of the caches.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::api::values::scheduling::Reason;
use crate::api::values::storage::{
    BIND_COMPLETED, SELECTED_NODE, claim_class, find_best_match, has, node_affinity_allows,
    prebound_to,
};

/// The claims, volumes and classes the scheduler sees.
#[derive(Default)]
pub struct StorageView {
    /// Claims by (namespace, name).
    pub claims: HashMap<(String, String), PersistentVolumeClaim>,
    /// Every volume.
    pub volumes: Vec<PersistentVolume>,
    /// Classes by name.
    pub classes: HashMap<String, StorageClass>,
}

/// A pod's claims, sorted for the per-node check.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volumes of the pod's bound claims.
    bound: Vec<PersistentVolume>,
    /// Claims waiting for the scheduler (WaitForFirstConsumer, unbound).
    delayed: Vec<PersistentVolumeClaim>,
}

/// What the chosen node needs before the pod can be bound there.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// Bind this Available volume to the claim (its claimRef).
    Volume {
        /// The volume, with the claimRef to write.
        volume: Box<PersistentVolume>,
    },
    /// Ask the class's provisioner for a volume on the node.
    Provision {
        /// The claim, with the selected-node annotation to write.
        claim: Box<PersistentVolumeClaim>,
    },
}

/// Whether a claim's binding is complete.
fn is_bound(claim: &PersistentVolumeClaim) -> bool {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
        && has(&claim.metadata, BIND_COMPLETED)
}

impl StorageView {
    fn delayed(&self, claim: &PersistentVolumeClaim) -> bool {
        claim_class(claim)
            .and_then(|c| self.classes.get(&c))
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer")
    }

    /// The pod's claims, or why no node can take it (upstream's PreFilter).
    pub fn pod_volumes(&self, pod: &Pod) -> Result<PodVolumes, Reason> {
        let namespace = pod.namespace().unwrap_or_default();
        let mut found = PodVolumes::default();
        for name in crate::api::values::pods::claims_of(pod) {
            let Some(claim) = self.claims.get(&(namespace.clone(), name.to_string())) else {
                return Err(format!("persistentvolumeclaim {name:?} not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
            }
            if is_bound(claim) {
                let volume = claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .unwrap_or_default();
                match self.volumes.iter().find(|v| v.name_any() == volume) {
                    Some(pv) => found.bound.push(pv.clone()),
                    None => {
                        return Err(format!(
                            "persistentvolumeclaim {name:?} bound to non-existent persistentvolume {volume:?}"
                        ));
                    }
                }
            } else if self.delayed(claim) {
                found.delayed.push(claim.clone());
            } else {
                return Err("pod has unbound immediate PersistentVolumeClaims".into());
            }
        }
        Ok(found)
    }

    /// Whether `node` can take the pod's volumes, and what must be written
    /// first if it is chosen (upstream's Filter and Reserve).
    pub fn check(&self, volumes: &PodVolumes, node: &Node) -> Result<Vec<Binding>, Reason> {
        if volumes
            .bound
            .iter()
            .any(|pv| !node_affinity_allows(pv, node))
        {
            return Err("node(s) had volume node affinity conflict".into());
        }
        let node_name = node.name_any();
        let unavailable =
            || Reason::from("node(s) didn't find available persistent volumes to bind");
        let mut bindings = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        // Smaller claims choose first, as upstream.
        let mut delayed: Vec<&PersistentVolumeClaim> = volumes.delayed.iter().collect();
        delayed.sort_by(|a, b| {
            crate::api::values::storage::requested(a)
                .cmp(&crate::api::values::storage::requested(b))
        });
        for claim in delayed {
            if let Some(selected) = claim.annotations().get(SELECTED_NODE) {
                if *selected != node_name {
                    return Err(unavailable());
                }
                continue;
            }
            let prebound = unclaimed(&self.volumes, &taken).find(|v| prebound_to(v, claim));
            if let Some(pv) = prebound {
                // Already chosen for it; the binder completes the binding.
                if !node_affinity_allows(pv, node) {
                    return Err("node(s) had volume node affinity conflict".into());
                }
                taken.push(pv.name_any());
                continue;
            }
            let matched =
                find_best_match(claim, unclaimed(&self.volumes, &taken), false, Some(node));
            if let Some(pv) = matched {
                taken.push(pv.name_any());
                let mut volume = pv.clone();
                volume.spec.get_or_insert_default().claim_ref =
                    Some(crate::api::values::storage::claim_reference(claim));
                volume.annotations_mut().insert(
                    crate::api::values::storage::BOUND_BY_CONTROLLER.into(),
                    "yes".into(),
                );
                bindings.push(Binding::Volume {
                    volume: Box::new(volume),
                });
                continue;
            }
            let provisionable = claim_class(claim)
                .and_then(|c| self.classes.get(&c))
                .is_some_and(|c| {
                    !c.provisioner.is_empty()
                        && c.provisioner != "kubernetes.io/no-provisioner"
                        && topology_allows(c, node)
                });
            if !provisionable {
                return Err(unavailable());
            }
            let mut claim = claim.clone();
            claim
                .annotations_mut()
                .insert(SELECTED_NODE.into(), node_name.clone());
            bindings.push(Binding::Provision {
                claim: Box::new(claim),
            });
        }
        Ok(bindings)
    }

    /// Whether every claim of the pod is bound (it may be bound to its node).
    pub fn all_bound(volumes: &PodVolumes) -> bool {
        volumes.delayed.is_empty()
    }
}

/// The volumes not yet chosen for another claim of the pod.
fn unclaimed<'v>(
    volumes: &'v [PersistentVolume],
    taken: &[String],
) -> impl Iterator<Item = &'v PersistentVolume> {
    volumes
        .iter()
        .filter(move |v| !taken.contains(&v.name_any()))
}

/// A class's allowedTopologies admit the node (none: every node).
fn topology_allows(class: &StorageClass, node: &Node) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    let labels = node.labels();
    terms.iter().any(|term| {
        term.match_label_expressions
            .iter()
            .flatten()
            .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .unwrap()
    }

    fn pod(claim: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}))
        .unwrap()
    }

    fn view(claim: serde_json::Value, volumes: Vec<serde_json::Value>) -> StorageView {
        let claim: PersistentVolumeClaim = serde_json::from_value(claim).unwrap();
        let mut view = StorageView::default();
        view.claims
            .insert(("default".into(), claim.name_any()), claim);
        view.volumes = volumes
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        for (name, mode, provisioner) in [
            (
                "local-path",
                "WaitForFirstConsumer",
                "rancher.io/local-path",
            ),
            (
                "manual",
                "WaitForFirstConsumer",
                "kubernetes.io/no-provisioner",
            ),
            ("now", "Immediate", "x"),
        ] {
            view.classes.insert(
                name.into(),
                serde_json::from_value(
                    json!({"metadata": {"name": name}, "provisioner": provisioner,
                    "volumeBindingMode": mode}),
                )
                .unwrap(),
            );
        }
        view
    }

    fn claim(class: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"metadata": {"name": "data", "namespace": "default", "uid": "c1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": class}});
        json_patch::merge(&mut c, &extra);
        c
    }

    fn local_pv(name: &str, on: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"}, "storageClassName": "manual", "local": {"path": "/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}},
            "status": {"phase": "Available"}});
        json_patch::merge(&mut v, &extra);
        v
    }

    #[test]
    fn delayed_claims_are_provisioned_on_the_chosen_node() {
        let view = view(claim("local-path", json!({})), vec![]);
        let volumes = view.pod_volumes(&pod("data")).unwrap();
        assert!(!StorageView::all_bound(&volumes));
        let bindings = view.check(&volumes, &node("n1")).unwrap();
        let [Binding::Provision { claim }] = bindings.as_slice() else {
            panic!("{bindings:?}");
        };
        assert_eq!(claim.annotations()[SELECTED_NODE], "n1");
        let chosen = self::view(claim_json_with_node("n1"), vec![]);
        let volumes = chosen.pod_volumes(&pod("data")).unwrap();
        assert_eq!(chosen.check(&volumes, &node("n1")), Ok(vec![]));
        assert!(chosen.check(&volumes, &node("n2")).is_err());
    }

    fn claim_json_with_node(node: &str) -> serde_json::Value {
        claim(
            "local-path",
            json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
        )
    }

    #[test]
    fn static_local_volumes_pick_the_node() {
        let view = view(
            claim("manual", json!({})),
            vec![local_pv("on-n2", "n2", json!({}))],
        );
        let volumes = view.pod_volumes(&pod("data")).unwrap();
        assert_eq!(
            view.check(&volumes, &node("n1")),
            Err("node(s) didn't find available persistent volumes to bind".into())
        );
        let bindings = view.check(&volumes, &node("n2")).unwrap();
        let [Binding::Volume { volume }] = bindings.as_slice() else {
            panic!("{bindings:?}");
        };
        let reference = volume.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(reference.uid.as_deref(), Some("c1"));
    }

    #[test]
    fn bound_claims_pin_the_pod_and_broken_ones_stop_it() {
        let bound = claim(
            "manual",
            json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}}, "spec": {"volumeName": "on-n2"}}),
        );
        let view = view(bound, vec![local_pv("on-n2", "n2", json!({}))]);
        let volumes = view.pod_volumes(&pod("data")).unwrap();
        assert!(StorageView::all_bound(&volumes));
        assert_eq!(
            view.check(&volumes, &node("n1")),
            Err("node(s) had volume node affinity conflict".into())
        );
        assert_eq!(view.check(&volumes, &node("n2")), Ok(vec![]));
        assert_eq!(
            view.pod_volumes(&pod("nope")).unwrap_err(),
            "persistentvolumeclaim \"nope\" not found"
        );
        let immediate = super::tests::view(claim("now", json!({})), vec![]);
        assert_eq!(
            immediate.pod_volumes(&pod("data")).unwrap_err(),
            "pod has unbound immediate PersistentVolumeClaims"
        );
    }
}
