//! Per-resource rules (upstream's REST strategies): what create clears, what an
//! update may change, defaults, validation. One file per API group; this file
//! dispatches by resource and holds the rules shared by all.

pub mod admissionregistration;
mod apps;
pub mod batch;
pub mod certificates;
mod coordination;
mod core;
pub mod flowcontrol;
pub mod pod;
pub mod storage;

use serde_json::{Value, json};

use super::FieldError;
use super::resources::{ResourceType, Subresource};

/// Clears what users may not set on create (status, mostly) and sets initial status.
pub fn prepare_for_create(rt: &ResourceType, obj: &mut Value) {
    if rt.has(Subresource::Status)
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => pod::prepare_for_create(obj),
        ("", "namespaces") => obj["status"] = json!({"phase": "Active"}),
        ("batch", "jobs") => batch::prepare_job_for_create(obj),
        ("", "secrets") => core::fold_string_data(obj),
        ("", "persistentvolumes") => storage::prepare_volume_for_create(obj),
        ("", "persistentvolumeclaims") => storage::prepare_claim_for_create(obj),
        _ => {}
    }
}

/// Whether an update may be coalesced by the store (held in memory until a
/// later commit): one a crash may lose without harm.
pub fn coalescible(rt: &ResourceType, new: &Value, old: &Value) -> bool {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("coordination.k8s.io", "leases") => coordination::renewal_only(old, new),
        _ => false,
    }
}

/// A main-resource update keeps the status it had (status has its own endpoint).
pub fn prepare_for_update(rt: &ResourceType, new: &mut Value, old: &Value) {
    if rt.has(Subresource::Status)
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("batch", "jobs") => batch::prepare_job_for_update(new, old),
        ("certificates.k8s.io", "certificatesigningrequests") => {
            certificates::prepare_for_update(new, old)
        }
        ("", "secrets") => core::fold_string_data(new),
        _ => {}
    }
}

/// Update-only checks: what may not change once set.
pub fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "configmaps" | "secrets") => core::validate_immutable_data(new, old),
        ("", "persistentvolumeclaims") => storage::validate_claim_update(new, old),
        ("", "persistentvolumes") => storage::validate_volume_update(new, old),
        ("storage.k8s.io", "storageclasses") => storage::validate_class_update(new, old),
        ("apps", "statefulsets") => apps::validate_statefulset_update(new, old),
        ("certificates.k8s.io", "certificatesigningrequests") => {
            certificates::validate_update(new, old)
        }
        _ => vec![],
    }
}

/// A status update changes only `.status`: everything else is the old object's.
pub fn prepare_for_status_update(rt: &ResourceType, new: &mut Value, old: &Value) {
    let status = new.get("status").cloned();
    let mut merged = old.clone();
    if let Some(map) = merged.as_object_mut() {
        match status {
            Some(status) => map.insert("status".into(), status),
            None => map.remove("status"),
        };
    }
    if let (Some(meta), Some(rv)) = (
        merged.get_mut("metadata"),
        new.pointer("/metadata/resourceVersion").cloned(),
    ) {
        meta["resourceVersion"] = rv;
    }
    *new = merged;
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("certificates.k8s.io", "certificatesigningrequests") => {
            certificates::prepare_for_status_update(new, old)
        }
        ("", "persistentvolumes") => storage::prepare_volume_for_status_update(new, old),
        _ => {}
    }
}

/// Upstream's defaults for the resource's fields.
pub fn default(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod::default_spec(spec);
                pod::default_pod_only(spec);
            }
        }
        ("", "podtemplates") => default_template(obj.get_mut("template")),
        ("", "replicationcontrollers") => {
            default_field(obj, "/spec/replicas", json!(1));
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("", "services") => core::default_service(obj),
        ("", "secrets") => default_field(obj, "/type", json!("Opaque")),
        ("", "namespaces") => default_field(obj, "/spec/finalizers", json!(["kubernetes"])),
        ("", "persistentvolumes") => storage::default_volume(obj),
        ("", "persistentvolumeclaims") => storage::default_claim(obj),
        ("storage.k8s.io", "storageclasses") => storage::default_class(obj),
        ("apps", _) => apps::default(&rt.resource, obj),
        ("batch", _) => batch::default(&rt.resource, obj),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            admissionregistration::default_webhooks(obj, true)
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            admissionregistration::default_webhooks(obj, false)
        }
        ("flowcontrol.apiserver.k8s.io", "flowschemas") => flowcontrol::default_flow_schema(obj),
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations") => {
            flowcontrol::default_priority_level(obj)
        }
        _ => {}
    }
}

/// Field problems of the object; empty when valid. Must not change anything.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => obj
            .get("spec")
            .map(|s| pod::validate_spec(s, "spec"))
            .unwrap_or_else(|| vec![FieldError::required("spec.containers", "")]),
        ("", "services") => core::validate_service(obj),
        ("", "configmaps") => core::validate_configmap(obj),
        ("", "secrets") => core::validate_secret(obj),
        ("", "persistentvolumes") => storage::validate_volume(obj),
        ("", "persistentvolumeclaims") => storage::validate_claim(obj),
        ("storage.k8s.io", "storageclasses") => storage::validate_class(obj),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            apps::validate(obj)
        }
        ("batch", "jobs") => batch::validate_job(obj),
        ("batch", "cronjobs") => batch::validate_cronjob(obj),
        ("certificates.k8s.io", "certificatesigningrequests") => certificates::validate(obj),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            admissionregistration::validate_webhooks(obj, true)
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            admissionregistration::validate_webhooks(obj, false)
        }
        ("flowcontrol.apiserver.k8s.io", "flowschemas") => flowcontrol::validate_flow_schema(obj),
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations") => {
            flowcontrol::validate_priority_level(obj)
        }
        _ => vec![],
    }
}

/// Sets `pointer` to `value` when absent, creating parent objects.
pub fn default_field(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut current = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (index, part) in parts.iter().enumerate() {
        let Some(map) = current.as_object_mut() else {
            return;
        };
        if index == parts.len() - 1 {
            map.insert((*part).to_string(), value);
            return;
        }
        let next = map.entry((*part).to_string()).or_insert_with(|| json!({}));
        if next.is_null() {
            *next = json!({});
        }
        current = next;
    }
}

/// Defaults inside a pod template (`{metadata, spec}`).
pub(crate) fn default_template(template: Option<&mut Value>) {
    if let Some(spec) = template.and_then(|t| t.get_mut("spec")) {
        pod::default_spec(spec);
    }
}

/// Validates a selector against a template's labels, as workload validation does.
pub(crate) fn validate_selector_matches(obj: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let selector = obj.pointer("/spec/selector");
    let match_labels = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let has_expressions = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if match_labels.is_none_or(|m| m.is_empty()) && !has_expressions {
        causes.push(FieldError::required("spec.selector", ""));
        return causes;
    }
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    if let Some(wanted) = match_labels {
        let matches = wanted
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            let shown = labels
                .map(|l| Value::Object(l.clone()))
                .unwrap_or(json!({}));
            causes.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &json!(render_labels(&shown)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    causes
}

fn render_labels(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .map(|s| format!("map[{s}]"))
        .unwrap_or_default()
}

/// A non-negative integer field.
pub(crate) fn validate_non_negative(obj: &Value, pointer: &str, field: &str) -> Option<FieldError> {
    let value = obj.pointer(pointer)?;
    match value.as_i64() {
        Some(n) if n >= 0 => None,
        _ => Some(FieldError::invalid(
            field,
            value,
            "must be greater than or equal to 0",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_field_creates_parents_and_keeps_values() {
        let mut obj = json!({"spec": {"replicas": 3}});
        default_field(&mut obj, "/spec/replicas", json!(1));
        default_field(&mut obj, "/spec/strategy/type", json!("RollingUpdate"));
        assert_eq!(
            obj,
            json!({"spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"}}})
        );
    }

    #[test]
    fn selector_must_match_template() {
        let bad = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}}}});
        assert_eq!(
            validate_selector_matches(&bad)[0].field,
            "spec.template.metadata.labels"
        );
        let good = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a", "x": "y"}}}}});
        assert!(validate_selector_matches(&good).is_empty());
        assert_eq!(
            validate_selector_matches(&json!({"spec": {}}))[0].field,
            "spec.selector"
        );
    }
}
