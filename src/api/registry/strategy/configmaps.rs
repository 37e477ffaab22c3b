//! ConfigMaps, and the key and immutability rules Secrets share (what is
//! Secrets' own is in `secrets.rs`).

use base64::Engine;
use serde_json::{Value, json};

use super::Strategy;
use crate::api::FieldError;

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// The entries of `fields` have config keys and string values; `data`'s
/// values are base64 text where `base64_data` (a Secret's).
pub(super) fn validate_keys(obj: &Value, fields: &[&str], base64_data: bool) -> Vec<FieldError> {
    let mut causes = Vec::new();
    for field in fields {
        for (key, value) in obj
            .get(*field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if !is_config_key(key) {
                causes.push(FieldError::invalid(*field, &json!(key), CONFIG_KEY_MSG));
            }
            if *field == "data" && base64_data {
                let valid = value
                    .as_str()
                    .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                if !valid {
                    causes.push(FieldError::invalid(
                        format!("data[{key}]"),
                        value,
                        "must be base64-encoded",
                    ));
                }
            } else if !value.is_string() {
                causes.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    value,
                    "must be a string",
                ));
            }
        }
    }
    causes
}

/// An `immutable: true` ConfigMap or Secret keeps its data (and stays immutable).
pub fn validate_immutable_data(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable") != old.get("immutable") {
            causes.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        for field in ["data", "binaryData"] {
            if new.get(field) != old.get(field) {
                causes.push(FieldError::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    causes
}

/// ConfigMap keys.
pub fn validate_configmap(cm: &Value) -> Vec<FieldError> {
    validate_keys(cm, &["data", "binaryData"], false)
}

/// ConfigMaps: keys checked, immutable once so marked.
#[derive(Debug)]
pub struct ConfigMaps;

impl Strategy for ConfigMaps {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_configmap(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_immutable_data(new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_data_stays() {
        let old = json!({"kind": "ConfigMap", "immutable": true, "data": {"a": "1"}});
        assert!(validate_immutable_data(&old, &old).is_empty());
        let changed = json!({"kind": "ConfigMap", "immutable": true, "data": {"a": "2"}});
        assert_eq!(validate_immutable_data(&changed, &old)[0].field, "data");
    }

    #[test]
    fn config_keys() {
        assert!(validate_configmap(&json!({"data": {"a.b": "x"}})).is_empty());
        assert_eq!(validate_configmap(&json!({"data": {"a b": "x"}})).len(), 1);
    }
}
