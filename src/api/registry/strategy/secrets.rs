//! Secrets: `stringData` folded into `data`, keys and base64 checked,
//! immutable once so marked (the rules shared with ConfigMaps are there).

use base64::Engine;
use serde_json::{Value, json};

use super::configmaps::{validate_immutable_data, validate_keys};
use super::{Strategy, default_field};
use crate::api::FieldError;

/// `stringData` is write-only: its entries are base64-encoded into `data`
/// (winning over the same keys there) and the field is dropped, as upstream.
pub fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    if let Some(data) = secret.get_mut("data").and_then(Value::as_object_mut) {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// Secret keys and base64 data.
pub fn validate_secret(secret: &Value) -> Vec<FieldError> {
    validate_keys(secret, &["data", "stringData"], true)
}

/// The data rules a ConfigMap has too, and a `type` that never changes.
pub fn validate_secret_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = validate_immutable_data(new, old);
    if new.get("type") != old.get("type") {
        causes.push(FieldError::invalid(
            "type",
            new.get("type").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
    causes
}

/// Secrets: `stringData` folded into `data`, immutable once so marked.
#[derive(Debug)]
pub struct Secrets;

impl Strategy for Secrets {
    fn prepare_for_create(&self, obj: &mut Value) {
        fold_string_data(obj);
    }

    fn prepare_for_update(&self, new: &mut Value, _old: &Value) {
        fold_string_data(new);
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj, "/type", json!("Opaque"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_secret(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_secret_update(new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_folds_into_data() {
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "hi", "a": "y"}});
        fold_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"a": "eQ==", "b": "aGk="}}));
    }

    #[test]
    fn a_secrets_type_never_changes() {
        let old = json!({"kind": "Secret", "type": "Opaque", "data": {"a": "eA=="}});
        assert!(validate_secret_update(&old, &old).is_empty());
        let retyped = json!({"kind": "Secret", "type": "kubernetes.io/tls", "data": {"a": "eA=="}});
        assert_eq!(validate_secret_update(&retyped, &old)[0].field, "type");
    }

    #[test]
    fn secret_data_is_base64() {
        assert_eq!(
            validate_secret(&json!({"kind": "Secret", "data": {"k": "!!"}})).len(),
            1
        );
    }
}
