//! Services (upstream's service strategy): defaults and validation; the
//! ClusterIP and node ports are allocated by the API server's hooks.

use serde_json::{Value, json};

use super::{Strategy, default_field};
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
}
