//! Persistent storage: PersistentVolumes, PersistentVolumeClaims (core
//! group) and StorageClasses (`storage.k8s.io`) — upstream's registry
//! strategies and validation for them.

use serde_json::{Value, json};

use super::{Strategy, default_field};
use crate::api::FieldError;
use crate::api::object::now;

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const PV_RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
/// The volume sources kelp's nodes can mount (a PV must name one).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath", "local", "nfs", "iscsi", "csi", "fc", "rbd", "cephfs",
];

/// A new PersistentVolume starts Pending whatever the client sent; the
/// phase's transition time is the creation's.
pub fn prepare_volume_for_create(pv: &mut Value) {
    pv["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": now()});
}

/// A new claim starts Pending.
pub fn prepare_claim_for_create(pvc: &mut Value) {
    pvc["status"] = json!({"phase": "Pending"});
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

/// v1 defaults of a claim (also of a StatefulSet's claim templates).
pub fn default_claim(pvc: &mut Value) {
    default_field(pvc, "/spec/volumeMode", json!("Filesystem"));
}

/// v1 defaults of a StorageClass.
pub fn default_class(class: &mut Value) {
    default_field(class, "/reclaimPolicy", json!("Delete"));
    default_field(class, "/volumeBindingMode", json!("Immediate"));
}

fn access_modes(spec: &Value, field: &str, causes: &mut Vec<FieldError>) {
    let modes: Vec<&Value> = spec
        .get("accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if modes.is_empty() {
        causes.push(FieldError::required(
            format!("{field}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for mode in &modes {
        if !ACCESS_MODES.contains(&mode.as_str().unwrap_or("")) {
            causes.push(FieldError::not_supported(
                format!("{field}.accessModes"),
                mode,
                ACCESS_MODES,
            ));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod")) {
        causes.push(FieldError::forbidden(
            format!("{field}.accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn volume_mode(spec: &Value, field: &str, causes: &mut Vec<FieldError>) {
    if let Some(mode) = spec.get("volumeMode").filter(|m| !m.is_null())
        && !VOLUME_MODES.contains(&mode.as_str().unwrap_or(""))
    {
        causes.push(FieldError::not_supported(
            format!("{field}.volumeMode"),
            mode,
            VOLUME_MODES,
        ));
    }
}

fn positive_quantity(value: Option<&Value>, field: &str, causes: &mut Vec<FieldError>) {
    match value {
        None | Some(Value::Null) => causes.push(FieldError::required(field, "")),
        Some(v) => {
            let parsed = match v {
                Value::String(s) => crate::api::quantity::parse(s),
                Value::Number(n) => n.as_f64(),
                _ => None,
            };
            match parsed {
                None => causes.push(FieldError::invalid(
                    field,
                    v,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                Some(q) if q <= 0.0 => {
                    causes.push(FieldError::invalid(field, v, "must be greater than zero"))
                }
                Some(_) => {}
            }
        }
    }
}

/// A claim's spec (`field` is where it sits: `spec`, or a template's).
pub fn validate_claim_spec(spec: &Value, field: &str) -> Vec<FieldError> {
    let mut causes = Vec::new();
    access_modes(spec, field, &mut causes);
    positive_quantity(
        spec.pointer("/resources/requests/storage"),
        &format!("{field}.resources[storage]"),
        &mut causes,
    );
    volume_mode(spec, field, &mut causes);
    for source in ["dataSource", "dataSourceRef"] {
        let Some(reference) = spec.get(source).filter(|s| !s.is_null()) else {
            continue;
        };
        for part in ["name", "kind"] {
            if reference
                .get(part)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(FieldError::required(format!("{field}.{source}.{part}"), ""));
            }
        }
    }
    causes
}

/// A claim.
pub fn validate_claim(pvc: &Value) -> Vec<FieldError> {
    validate_claim_spec(&pvc["spec"], "spec")
}

/// What may change in a claim: the volume name once, the class from unset,
/// the storage request of a bound claim (not below its capacity).
pub fn validate_claim_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let (mut a, mut b) = (new["spec"].clone(), old["spec"].clone());
    if b.get("volumeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        b["volumeName"] = a.get("volumeName").cloned().unwrap_or(Value::Null);
    }
    if b.get("storageClassName").is_none_or(Value::is_null) {
        b["storageClassName"] = a.get("storageClassName").cloned().unwrap_or(Value::Null);
    }
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    if bound {
        a["resources"]["requests"]["storage"] = Value::Null;
        b["resources"]["requests"]["storage"] = Value::Null;
    }
    for spec in [&mut a, &mut b] {
        if let Some(map) = spec.as_object_mut() {
            map.remove("volumeAttributesClassName");
            map.retain(|_, v| !v.is_null());
        }
    }
    if a != b {
        causes.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    if bound {
        let quantity = |o: &Value, pointer: &str| {
            o.pointer(pointer)
                .and_then(Value::as_str)
                .and_then(|q| crate::api::quantity::Quantity::parse(q).ok())
        };
        let request = quantity(new, "/spec/resources/requests/storage");
        let previous = quantity(old, "/spec/resources/requests/storage");
        let capacity = quantity(old, "/status/capacity/storage");
        // Shrinking is allowed only back to above what the volume has
        // (recovering a failed expansion).
        if let (Some(request), Some(previous), Some(capacity)) = (request, previous, capacity)
            && request < previous
            && request <= capacity
        {
            causes.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
    causes
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

/// A StorageClass.
pub fn validate_class(class: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    if class
        .get("provisioner")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(FieldError::required("provisioner", ""));
    }
    if let Some(policy) = class.get("reclaimPolicy")
        && !CLASS_RECLAIM_POLICIES.contains(&policy.as_str().unwrap_or(""))
    {
        causes.push(FieldError::not_supported(
            "reclaimPolicy",
            policy,
            CLASS_RECLAIM_POLICIES,
        ));
    }
    if let Some(mode) = class.get("volumeBindingMode")
        && !BINDING_MODES.contains(&mode.as_str().unwrap_or(""))
    {
        causes.push(FieldError::not_supported(
            "volumeBindingMode",
            mode,
            BINDING_MODES,
        ));
    }
    if let Some(parameters) = class.get("parameters").and_then(Value::as_object)
        && parameters.keys().any(String::is_empty)
    {
        causes.push(FieldError::invalid(
            "parameters",
            &json!(""),
            "field can not be empty.",
        ));
    }
    causes
}

/// A class's provisioner, parameters and policies are fixed at creation.
pub fn validate_class_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    for field in ["parameters", "provisioner", "reclaimPolicy"] {
        if new.get(field) != old.get(field) {
            causes.push(FieldError::forbidden(
                field,
                &format!("updates to {field} are forbidden."),
            ));
        }
    }
    if new.get("volumeBindingMode") != old.get("volumeBindingMode") {
        let value = new.get("volumeBindingMode").unwrap_or(&Value::Null);
        causes.push(FieldError::invalid(
            "volumeBindingMode",
            value,
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

/// PersistentVolumeClaims.
#[derive(Debug)]
pub struct PersistentVolumeClaims;

impl Strategy for PersistentVolumeClaims {
    fn prepare_for_create(&self, obj: &mut Value) {
        prepare_claim_for_create(obj);
    }

    fn default(&self, obj: &mut Value) {
        default_claim(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_claim(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_claim_update(new, old)
    }
}

/// StorageClasses.
#[derive(Debug)]
pub struct StorageClasses;

impl Strategy for StorageClasses {
    fn default(&self, obj: &mut Value) {
        default_class(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_class(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_class_update(new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(extra: Value) -> Value {
        let mut pvc = json!({"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        json_patch::merge(&mut pvc, &extra);
        pvc
    }

    #[test]
    fn claims_need_modes_and_a_positive_request() {
        assert!(validate_claim(&claim(json!({}))).is_empty());
        let bad = json!({"spec": {"accessModes": ["ReadWriteOncePod", "ReadOnlyMany", "Sometimes"],
                                  "resources": {"requests": {"storage": "0"}}}});
        let fields: Vec<String> = validate_claim(&bad)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(fields.len(), 3, "{fields:?}");
        assert!(fields[2].starts_with("spec.resources[storage]: Invalid value"));
        assert_eq!(
            validate_claim(&json!({"spec": {}}))[0].message,
            "Required value: at least 1 access mode is required"
        );
    }

    #[test]
    fn claims_change_only_as_binding_and_resizing_allow() {
        let old = claim(json!({}));
        let bound = claim(json!({"spec": {"volumeName": "pv1", "storageClassName": "local-path"}}));
        assert!(validate_claim_update(&bound, &old).is_empty());
        let other = claim(json!({"spec": {"volumeName": "pv2"}}));
        let mut was_bound = bound.clone();
        was_bound["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        assert_eq!(validate_claim_update(&other, &was_bound).len(), 1);
        let mut big_volume = was_bound.clone();
        big_volume["status"]["capacity"]["storage"] = json!("2Gi");
        big_volume["metadata"]["finalizers"] = json!([]);
        assert!(validate_claim_update(&big_volume, &big_volume).is_empty());
        let mut bigger = was_bound.clone();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(validate_claim_update(&bigger, &was_bound).is_empty());
        bigger["spec"]["resources"]["requests"]["storage"] = json!("1Mi");
        assert_eq!(
            validate_claim_update(&bigger, &was_bound)[0].message,
            "Forbidden: field can not be less than status.capacity"
        );
        let mut resized = old.clone();
        resized["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(validate_claim_update(&resized, &old)[0].field, "spec");
    }

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

    #[test]
    fn classes_default_and_freeze_their_policies() {
        let mut class = json!({"provisioner": "rancher.io/local-path"});
        default_class(&mut class);
        assert_eq!(class["reclaimPolicy"], "Delete");
        assert_eq!(class["volumeBindingMode"], "Immediate");
        assert!(validate_class(&class).is_empty());
        let mut changed = class.clone();
        changed["reclaimPolicy"] = json!("Retain");
        assert_eq!(
            validate_class_update(&changed, &class)[0].message,
            "Forbidden: updates to reclaimPolicy are forbidden."
        );
        assert_eq!(
            validate_class(&json!({"reclaimPolicy": "Recycle"})).len(),
            2
        );
    }
}
