//! PersistentVolumeClaims (upstream's claim strategy): Pending at first,
//! access modes and a positive request, and only binding and resizing
//! change a bound claim. The access-mode and quantity checks volumes share
//! are here; StatefulSets' claim templates use the defaults and spec checks.

use serde_json::{Value, json};

use super::{Strategy, default_field};
use crate::api::FieldError;

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// A new claim starts Pending.
pub fn prepare_claim_for_create(pvc: &mut Value) {
    pvc["status"] = json!({"phase": "Pending"});
}

/// v1 defaults of a claim (also of a StatefulSet's claim templates).
pub fn default_claim(pvc: &mut Value) {
    default_field(pvc, "/spec/volumeMode", json!("Filesystem"));
}

pub(super) fn access_modes(spec: &Value, field: &str, causes: &mut Vec<FieldError>) {
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

pub(super) fn volume_mode(spec: &Value, field: &str, causes: &mut Vec<FieldError>) {
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

pub(super) fn positive_quantity(value: Option<&Value>, field: &str, causes: &mut Vec<FieldError>) {
    match value {
        None | Some(Value::Null) => causes.push(FieldError::required(field, "")),
        Some(v) => {
            let parsed = match v {
                Value::String(s) => crate::api::values::quantity::parse(s),
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
                .and_then(|q| crate::api::values::quantity::Quantity::parse(q).ok())
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
}
