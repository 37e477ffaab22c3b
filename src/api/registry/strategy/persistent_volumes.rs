//! PersistentVolumes (upstream's volume strategy): Pending at first with a
//! timed phase, one mountable source, a capacity, node affinity for local
//! volumes.

use serde_json::{Value, json};

use super::persistent_volume_claims::{access_modes, positive_quantity, volume_mode};
use super::{Strategy, default_field};
use crate::api::FieldError;
use crate::api::values::meta::now;

const PV_RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];

/// The volume sources kelp's nodes can mount (a PV must name one).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath", "local", "nfs", "iscsi", "csi", "fc", "rbd", "cephfs",
];

/// A new PersistentVolume starts Pending whatever the client sent; the
/// phase's transition time is the creation's.
pub fn prepare_volume_for_create(pv: &mut Value) {
    pv["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": now()});
}

/// A PV status write that changes the phase without naming a new
/// transition time gets now.
pub fn prepare_volume_for_status_update(new: &mut Value, old: &Value) {
    let phase = |o: &Value| o.pointer("/status/phase").cloned();
    let time = |o: &Value| o.pointer("/status/lastPhaseTransitionTime").cloned();
    if phase(new) != phase(old) {
        if time(new).is_none() || time(new) == time(old) {
            new["status"]["lastPhaseTransitionTime"] = json!(now());
        }
    } else if time(new).is_none()
        && let Some(t) = time(old)
    {
        new["status"]["lastPhaseTransitionTime"] = t;
    }
}

/// v1 defaults of a PersistentVolume.
pub fn default_volume(pv: &mut Value) {
    default_field(pv, "/spec/persistentVolumeReclaimPolicy", json!("Retain"));
    default_field(pv, "/spec/volumeMode", json!("Filesystem"));
    if pv.pointer("/spec/hostPath").is_some() {
        default_field(pv, "/spec/hostPath/type", json!(""));
    }
}

/// The volume source a PV names (the first of those it sets).
pub fn volume_sources(spec: &Value) -> Vec<&'static str> {
    VOLUME_SOURCES
        .iter()
        .copied()
        .filter(|s| spec.get(*s).is_some_and(|v| !v.is_null()))
        .collect()
}

/// A PersistentVolume.
pub fn validate_volume(pv: &Value) -> Vec<FieldError> {
    let spec = &pv["spec"];
    let mut causes = Vec::new();
    access_modes(spec, "spec", &mut causes);
    match spec.get("capacity").and_then(Value::as_object) {
        None => causes.push(FieldError::required("spec.capacity", "")),
        Some(capacity) => {
            for key in capacity.keys().filter(|k| *k != "storage") {
                causes.push(FieldError::not_supported(
                    "spec.capacity",
                    &json!(key),
                    &["storage"],
                ));
            }
            positive_quantity(capacity.get("storage"), "spec.capacity", &mut causes);
        }
    }
    if let Some(policy) = spec.get("persistentVolumeReclaimPolicy")
        && !PV_RECLAIM_POLICIES.contains(&policy.as_str().unwrap_or(""))
    {
        causes.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            PV_RECLAIM_POLICIES,
        ));
    }
    volume_mode(spec, "spec", &mut causes);
    match volume_sources(spec).as_slice() {
        [] => causes.push(FieldError::required("spec", "must specify a volume type")),
        [_] => {}
        [_, more, ..] => causes.push(FieldError::forbidden(
            format!("spec.{more}"),
            "may not specify more than 1 volume type",
        )),
    }
    for (source, field) in [
        ("hostPath", "spec.hostPath.path"),
        ("local", "spec.local.path"),
    ] {
        let Some(path) = spec
            .get(source)
            .filter(|s| !s.is_null())
            .map(|s| &s["path"])
        else {
            continue;
        };
        match path.as_str() {
            None | Some("") => causes.push(FieldError::required(field, "")),
            Some(p) if p.split('/').any(|part| part == "..") => {
                causes.push(FieldError::invalid(field, path, "must not contain '..'"))
            }
            Some(_) => {}
        }
    }
    if spec.get("local").is_some_and(|l| !l.is_null())
        && spec.get("nodeAffinity").is_none_or(Value::is_null)
    {
        causes.push(FieldError::required(
            "spec.nodeAffinity",
            "Local volume requires node affinity",
        ));
    }
    causes
}

/// A PV's source and mode never change; its node affinity only from unset.
pub fn validate_volume_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let source = |pv: &Value| {
        VOLUME_SOURCES
            .iter()
            .map(|s| pv["spec"].get(*s).cloned().unwrap_or(Value::Null))
            .collect::<Vec<_>>()
    };
    if source(new) != source(old) {
        causes.push(FieldError::forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    if new.pointer("/spec/volumeMode") != old.pointer("/spec/volumeMode") {
        let value = new.pointer("/spec/volumeMode").unwrap_or(&Value::Null);
        causes.push(FieldError::invalid(
            "spec.volumeMode",
            value,
            "field is immutable",
        ));
    }
    fn affinity(pv: &Value) -> Option<&Value> {
        pv.pointer("/spec/nodeAffinity").filter(|a| !a.is_null())
    }
    if affinity(old).is_some() && affinity(new) != affinity(old) {
        causes.push(FieldError::forbidden(
            "spec.nodeAffinity",
            "field is immutable",
        ));
    }
    causes
}

/// PersistentVolumes.
#[derive(Debug)]
pub struct PersistentVolumes;

impl Strategy for PersistentVolumes {
    fn prepare_for_create(&self, obj: &mut Value) {
        prepare_volume_for_create(obj);
    }

    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        prepare_volume_for_status_update(new, old);
    }

    fn default(&self, obj: &mut Value) {
        default_volume(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_volume(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_volume_update(new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_need_one_source_capacity_and_local_affinity() {
        let pv = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                                 "hostPath": {"path": "/srv/a"}}});
        assert!(validate_volume(&pv).is_empty());
        let none =
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
        assert_eq!(
            validate_volume(&none)[0].message,
            "Required value: must specify a volume type"
        );
        let local = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi", "cpu": "1"},
                                    "local": {"path": "/a/../b"}}});
        let messages: Vec<String> = validate_volume(&local)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            messages,
            ["spec.capacity", "spec.local.path", "spec.nodeAffinity"]
        );
        let mut moved = pv.clone();
        moved["spec"]["hostPath"]["path"] = json!("/srv/b");
        assert_eq!(
            validate_volume_update(&moved, &pv)[0].field,
            "spec.persistentvolumesource"
        );
    }

    #[test]
    fn new_volumes_start_pending_and_phase_changes_are_timed() {
        let mut pv = json!({"status": {"phase": "Bound"}});
        prepare_volume_for_create(&mut pv);
        assert_eq!(pv["status"]["phase"], "Pending");
        let old = json!({"status": {"phase": "Pending", "lastPhaseTransitionTime": "2020-01-01T00:00:00Z"}});
        let mut new = json!({"status": {"phase": "Pending"}});
        prepare_volume_for_status_update(&mut new, &old);
        assert_eq!(
            new["status"]["lastPhaseTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        let mut bound = json!({"status": {"phase": "Bound", "lastPhaseTransitionTime": "2020-01-01T00:00:00Z"}});
        prepare_volume_for_status_update(&mut bound, &old);
        assert_ne!(
            bound["status"]["lastPhaseTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }
}
