//! Per-resource rules (upstream's REST strategies): what create clears, what an
//! update may change, defaults, validation, which updates the store may
//! coalesce. Each resource with rules of its own has a [`Strategy`], named
//! by its row in the resource table (`resources.rs`); the rest use
//! [`Plain`], one file per resource (a family sharing one strategy shares
//! its file: the apps workloads, the webhook configurations, APF's two
//! kinds). This file holds the trait, the rules every resource shares, and
//! the entry points the API server calls.

pub mod admissionregistration;
pub(crate) mod apps;
pub mod certificates;
pub mod configmaps;
pub mod cronjobs;
pub mod flowcontrol;
pub mod jobs;
pub(crate) mod leases;
pub mod namespaces;
pub mod nodes;
pub mod persistent_volume_claims;
pub mod persistent_volumes;
pub mod pod_templates;
pub mod pods;
pub mod replication_controllers;
pub mod secrets;
pub mod services;
pub mod storage_classes;

use serde_json::{Value, json};

use super::resources::{ResourceType, Subresource};
use crate::api::FieldError;

/// One resource's own rules. Every method defaults to "nothing special".
pub trait Strategy: std::fmt::Debug + Send + Sync {
    /// Sets what a new object starts with (after its status is cleared).
    fn prepare_for_create(&self, _obj: &mut Value) {}
    /// Keeps what a main-resource update may not change (after its status
    /// is kept).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}
    /// Keeps what a status update may not change (after everything but the
    /// status is the old object's).
    fn prepare_for_status_update(&self, _new: &mut Value, _old: &Value) {}
    /// Upstream's defaults for the resource's fields.
    fn default(&self, _obj: &mut Value) {}
    /// Field problems of the object; empty when valid.
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        vec![]
    }
    /// Update-only checks: what may not change once set.
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        vec![]
    }
    /// Whether an update may be coalesced by the store (held in memory
    /// until a later commit): one a crash may lose without harm.
    fn coalescible(&self, _new: &Value, _old: &Value) -> bool {
        false
    }
    /// Seconds a DELETE leaves the object for its owner to wind down (a
    /// pod on its node), or None to delete it at once.
    fn deletion_grace(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }
    /// Whether a DELETE only marks the object, for a controller of the
    /// server's to finalize (namespaces), even without finalizers.
    fn finalized_by_server(&self) -> bool {
        false
    }
    /// Changes to an object as its DELETE marks it terminating.
    fn mark_deleting(&self, _obj: &mut Value) {}
    /// Whether a DELETE answers with the deleted object rather than a
    /// Status (upstream's `ReturnDeletedObject`).
    fn returns_deleted_object(&self) -> bool {
        false
    }
}

/// The strategy of resources with no rules of their own.
#[derive(Debug)]
pub struct Plain;

impl Strategy for Plain {}

/// Clears what users may not set on create (status, mostly) and sets initial status.
pub fn prepare_for_create(rt: &ResourceType, obj: &mut Value) {
    if rt.has(Subresource::Status)
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    rt.strategy.prepare_for_create(obj);
}

/// Whether an update may be coalesced by the store.
pub fn coalescible(rt: &ResourceType, new: &Value, old: &Value) -> bool {
    rt.strategy.coalescible(new, old)
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
    rt.strategy.prepare_for_update(new, old);
}

/// Update-only checks: what may not change once set.
pub fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    rt.strategy.validate_update(new, old)
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
    rt.strategy.prepare_for_status_update(new, old);
}

/// Upstream's defaults for the resource's fields.
pub fn default(rt: &ResourceType, obj: &mut Value) {
    rt.strategy.default(obj);
}

/// Field problems of the object; empty when valid. Must not change anything.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    rt.strategy.validate(obj)
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
        pods::default_spec(spec);
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

    #[test]
    fn deletes_wait_for_pods_and_namespaces_and_answer_with_the_object_where_upstream_does() {
        let registry = crate::api::registry::resources::Registry::new();
        let rule = |resource: &str| {
            registry
                .lookup("", "v1", resource)
                .expect(resource)
                .strategy
        };
        // A pod on a node gets its grace period; nothing else waits.
        let pod = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30}});
        assert_eq!(rule("pods").deletion_grace(&pod, None), Some(30));
        assert_eq!(rule("configmaps").deletion_grace(&json!({}), Some(5)), None);
        // Namespaces are finalized by the server and show Terminating.
        assert!(rule("namespaces").finalized_by_server());
        assert!(!rule("pods").finalized_by_server());
        let mut ns = json!({"status": {"phase": "Active"}});
        rule("namespaces").mark_deleting(&mut ns);
        assert_eq!(ns["status"]["phase"], "Terminating");
        for (resource, answers_object) in [
            ("pods", true),
            ("namespaces", true),
            ("services", true),
            ("nodes", true),
            ("configmaps", false),
            ("secrets", false),
        ] {
            assert_eq!(
                rule(resource).returns_deleted_object(),
                answers_object,
                "{resource}"
            );
        }
    }
}
