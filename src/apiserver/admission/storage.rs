//! Storage admission plugins: DefaultStorageClass (a claim without a class
//! gets the default one), StorageObjectInUseProtection (claims and volumes
//! carry the finalizer their protection controllers remove) and
//! PersistentVolumeClaimResize (only bound claims of expandable classes grow).

use serde_json::{Value, json};

pub use crate::api::values::storage::{
    BETA_CLASS, CLAIM_PROTECTION, VOLUME_PROTECTION, default_class,
};

/// A claim that names no class at all (neither field nor beta annotation).
pub fn has_no_class(claim: &Value) -> bool {
    claim
        .pointer("/spec/storageClassName")
        .is_none_or(Value::is_null)
        && claim["metadata"]["annotations"].get(BETA_CLASS).is_none()
}

/// DefaultStorageClass: sets the default class on a new claim naming none.
pub fn default_storage_class(claim: &mut Value, classes: &[Value]) {
    if !has_no_class(claim) {
        return;
    }
    if let Some(name) = default_class(classes).and_then(|c| c["metadata"]["name"].as_str()) {
        claim["spec"]["storageClassName"] = json!(name);
    }
}

/// StorageObjectInUseProtection: the protection finalizer on a new claim or volume.
pub fn protect(object: &mut Value, finalizer: &str) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
    if finalizers.is_null() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f.as_str() == Some(finalizer))
    {
        list.push(json!(finalizer));
    }
}

/// The class a claim names (beta annotation first).
pub fn class_of(claim: &Value) -> Option<&str> {
    claim["metadata"]["annotations"][BETA_CLASS]
        .as_str()
        .or_else(|| {
            claim
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
        })
}

/// PersistentVolumeClaimResize: a grown request needs a bound claim whose
/// class allows expansion (`class` is that class, if it exists).
pub fn check_resize(new: &Value, old: &Value, class: Option<&Value>) -> Result<(), String> {
    let request = |c: &Value| {
        c.pointer("/spec/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(|q| crate::api::values::quantity::Quantity::parse(q).ok())
    };
    match (request(new), request(old)) {
        (Some(n), Some(o)) if n > o => {}
        _ => return Ok(()),
    }
    if old.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
        return Err("Only bound persistent volume claims can be expanded".into());
    }
    if class.and_then(|c| c["allowVolumeExpansion"].as_bool()) != Some(true) {
        return Err("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_fills_claims_without_one() {
        let classes = [json!({"metadata": {"name": "new",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}})];
        let mut claim = json!({"metadata": {"name": "c"}, "spec": {}});
        default_storage_class(&mut claim, &classes);
        assert_eq!(claim["spec"]["storageClassName"], "new");
        let mut empty = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": ""}});
        default_storage_class(&mut empty, &classes);
        assert_eq!(empty["spec"]["storageClassName"], "");
        let mut beta = json!({"metadata": {"annotations": {BETA_CLASS: "x"}}, "spec": {}});
        default_storage_class(&mut beta, &classes);
        assert!(beta["spec"].get("storageClassName").is_none());
    }

    #[test]
    fn finalizers_are_added_once() {
        let mut pv = json!({"metadata": {"name": "p", "finalizers": ["a"]}});
        protect(&mut pv, VOLUME_PROTECTION);
        protect(&mut pv, VOLUME_PROTECTION);
        assert_eq!(
            pv["metadata"]["finalizers"],
            json!(["a", VOLUME_PROTECTION])
        );
    }

    #[test]
    fn only_bound_claims_of_expandable_classes_grow() {
        let old = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Bound"}});
        let new = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
        let expandable = json!({"allowVolumeExpansion": true});
        assert!(check_resize(&new, &old, Some(&expandable)).is_ok());
        assert!(
            check_resize(&new, &old, None)
                .unwrap_err()
                .starts_with("only dynamically")
        );
        let pending = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(
            check_resize(&new, &pending, Some(&expandable)).unwrap_err(),
            "Only bound persistent volume claims can be expanded"
        );
        assert!(check_resize(&old, &old, None).is_ok());
    }
}
