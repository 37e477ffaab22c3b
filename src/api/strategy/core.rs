//! Core-group rules beyond pods: services, config maps, secrets.

use base64::Engine;
use serde_json::{Value, json};

use super::{Strategy, default_field, default_template};
use crate::api::FieldError;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

/// Service defaults (the ClusterIP and node ports are allocated by the API server).
pub fn default_service(svc: &mut Value) {
    default_field(svc, "/spec/type", json!("ClusterIP"));
    default_field(svc, "/spec/sessionAffinity", json!("None"));
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind != "ExternalName" {
        default_field(svc, "/spec/internalTrafficPolicy", json!("Cluster"));
        default_field(svc, "/spec/ipFamilies", json!(["IPv4"]));
        default_field(svc, "/spec/ipFamilyPolicy", json!("SingleStack"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        default_field(svc, "/spec/externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports {
            default_field(port, "/protocol", json!("TCP"));
            if let Some(p) = port.get("port").cloned() {
                default_field(port, "/targetPort", p);
            }
        }
    }
    if svc.pointer("/status").is_none() {
        svc["status"] = json!({"loadBalancer": {}});
    }
}

/// Service validation: type, ports.
pub fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let kind = svc
        .pointer("/spec/type")
        .cloned()
        .unwrap_or(json!("ClusterIP"));
    if !SERVICE_TYPES.contains(&kind.as_str().unwrap_or("")) {
        causes.push(FieldError::not_supported("spec.type", &kind, SERVICE_TYPES));
    }
    let headless = svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
    if kind != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        causes.push(FieldError::required("spec.ports", ""));
    }
    let mut seen = Vec::new();
    for (i, port) in ports.into_iter().flatten().enumerate() {
        let number = port.get("port");
        if !number
            .and_then(Value::as_i64)
            .is_some_and(|n| (1..=65535).contains(&n))
        {
            causes.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                number.unwrap_or(&Value::Null),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.is_some_and(|p| p.len() > 1) && name.is_empty() {
            causes.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
        let key = (number.cloned(), port.get("protocol").cloned());
        if seen.contains(&key) {
            causes.push(FieldError::duplicate(
                format!("spec.ports[{i}]"),
                &json!({"port": key.0, "protocol": key.1}),
            ));
        }
        seen.push(key);
    }
    causes
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn validate_keys(obj: &Value, fields: &[&str]) -> Vec<FieldError> {
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
            if *field == "data" && obj.get("kind").and_then(Value::as_str) == Some("Secret") {
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
    if old.get("kind").and_then(Value::as_str) == Some("Secret")
        && new.get("type") != old.get("type")
    {
        causes.push(FieldError::invalid(
            "type",
            new.get("type").unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
    causes
}

/// ConfigMap keys.
pub fn validate_configmap(cm: &Value) -> Vec<FieldError> {
    validate_keys(cm, &["data", "binaryData"])
}

/// Secret keys and base64 data.
pub fn validate_secret(secret: &Value) -> Vec<FieldError> {
    validate_keys(secret, &["data", "stringData"])
}

/// Namespaces: Active from the start, the `kubernetes` finalizer.
#[derive(Debug)]
pub struct Namespaces;

impl Strategy for Namespaces {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj, "/spec/finalizers", json!(["kubernetes"]));
    }

    fn finalized_by_server(&self) -> bool {
        true
    }

    fn mark_deleting(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Terminating"});
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }
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
        validate_immutable_data(new, old)
    }
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

/// Services.
#[derive(Debug)]
pub struct Services;

impl Strategy for Services {
    fn default(&self, obj: &mut Value) {
        default_service(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_service(obj)
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }
}

/// Nodes: deleted at once, answered with the object.
#[derive(Debug)]
pub struct Nodes;

impl Strategy for Nodes {
    fn returns_deleted_object(&self) -> bool {
        true
    }
}

/// PodTemplates: their pod spec defaulted.
#[derive(Debug)]
pub struct PodTemplates;

impl Strategy for PodTemplates {
    fn default(&self, obj: &mut Value) {
        default_template(obj.get_mut("template"));
    }
}

/// ReplicationControllers: one replica, their template defaulted.
#[derive(Debug)]
pub struct ReplicationControllers;

impl Strategy for ReplicationControllers {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "/spec/replicas", json!(1));
        default_template(obj.pointer_mut("/spec/template"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults_and_validation() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        default_service(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert!(validate_service(&svc).is_empty());
        let bad = json!({"spec": {"type": "Weird", "ports": [{"port": 0}]}});
        assert_eq!(validate_service(&bad).len(), 2);
    }

    #[test]
    fn string_data_folds_into_data() {
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "hi", "a": "y"}});
        fold_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"a": "eQ==", "b": "aGk="}}));
    }

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
        assert_eq!(
            validate_secret(&json!({"kind": "Secret", "data": {"k": "!!"}})).len(),
            1
        );
    }
}
