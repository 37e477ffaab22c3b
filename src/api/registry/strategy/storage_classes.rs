//! StorageClasses (`storage.k8s.io`): upstream's defaults, and the
//! provisioner, parameters and policies fixed once created.

use serde_json::{Value, json};

use super::{Strategy, default_field};
use crate::api::FieldError;

const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];

const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

/// v1 defaults of a StorageClass.
pub fn default_class(class: &mut Value) {
    default_field(class, "/reclaimPolicy", json!("Delete"));
    default_field(class, "/volumeBindingMode", json!("Immediate"));
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
