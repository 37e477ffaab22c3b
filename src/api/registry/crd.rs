//! CustomResourceDefinitions: validation of the definition, its status, and
//! registering its versions as served resources.

use std::sync::Arc;

use serde_json::{Value, json};

use super::resources::{CustomResource, Registry, ResourceType, Subresource, Verbs};
use crate::api::FieldError;

/// Checks a CRD and fills in its status (names accepted, established).
pub fn prepare(crd: &mut Value) -> Result<(), Vec<FieldError>> {
    let mut causes = Vec::new();
    let (group, plural) = group_and_plural(crd);
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if group.is_empty() {
        causes.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        causes.push(FieldError::required("spec.names.plural", ""));
    }
    if crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(FieldError::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    if versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count()
        != 1
        && !versions.is_empty()
    {
        causes.push(FieldError::invalid(
            "spec.versions",
            &json!(versions.len()),
            "must have exactly one version marked as storage version",
        ));
    }
    let scope = crd.pointer("/spec/scope").cloned().unwrap_or(Value::Null);
    if !matches!(scope.as_str(), Some("Namespaced" | "Cluster")) {
        causes.push(FieldError::not_supported(
            "spec.scope",
            &scope,
            &["Cluster", "Namespaced"],
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let mut names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if names.get("singular").is_none() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        names["singular"] = json!(kind);
    }
    if names.get("listKind").is_none() {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        names["listKind"] = json!(format!("{kind}List"));
    }
    crd["spec"]["names"] = names.clone();
    let now = crate::api::values::meta::now();
    let stored: Vec<Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// Serves the CRD's versions (replacing what it served before).
pub fn register(registry: &Registry, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let strings = |v: &Value, k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let plural = text(&names, "plural");
    if group.is_empty() || plural.is_empty() {
        return;
    }
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        registry.set_custom(&group, &plural, vec![]);
        return;
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| text(v, "name"))
        .unwrap_or_default();
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced");
    let served: Vec<ResourceType> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| {
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push(Subresource::Status);
            }
            let scale = v.pointer("/subresources/scale").map(|s| {
                (
                    text(s, "specReplicasPath"),
                    text(s, "statusReplicasPath"),
                    s.get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(String::from),
                )
            });
            if scale.is_some() {
                subresources.push(Subresource::Scale);
            }
            ResourceType {
                group: group.clone(),
                version: text(v, "name"),
                resource: plural.clone(),
                singular: text(&names, "singular"),
                kind: text(&names, "kind"),
                namespaced,
                short_names: strings(&names, "shortNames"),
                categories: strings(&names, "categories"),
                subresources,
                verbs: Verbs::All,
                tracks_generation: true,
                storage_group: group.clone(),
                storage_version: storage_version.clone(),
                custom: Some(Arc::new(CustomResource {
                    schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                    printer_columns: v
                        .get("additionalPrinterColumns")
                        .cloned()
                        .unwrap_or(json!([])),
                    scale,
                    served: true,
                })),
                strategy: &crate::api::registry::strategy::Plain,
            }
        })
        .collect();
    registry.set_custom(&group, &plural, served);
}

/// `spec.group` and `spec.names.plural` ("" when missing).
fn group_and_plural(crd: &Value) -> (&str, &str) {
    let text = |pointer: &str| crd.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    (text("/spec/group"), text("/spec/names/plural"))
}

/// Stops serving the CRD's resources.
pub fn unregister(registry: &Registry, crd: &Value) {
    let (group, plural) = group_and_plural(crd);
    registry.set_custom(group, plural, vec![]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab() -> Value {
        json!({"metadata": {"name": "crontabs.stable.example.com"}, "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}}}}}}}]}})
    }

    #[test]
    fn prepares_and_registers() {
        let mut crd = crontab();
        prepare(&mut crd).expect("valid");
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
        assert_eq!(crd["spec"]["names"]["singular"], "crontab");
        let registry = Registry::new();
        register(&registry, &crd);
        let rt = registry
            .lookup("stable.example.com", "v1", "crontabs")
            .expect("served");
        assert!(rt.namespaced && rt.has(Subresource::Status));
        unregister(&registry, &crd);
        assert!(
            registry
                .lookup("stable.example.com", "v1", "crontabs")
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_name() {
        let mut crd = crontab();
        crd["metadata"]["name"] = json!("wrong");
        assert_eq!(
            prepare(&mut crd).expect_err("invalid")[0].field,
            "metadata.name"
        );
    }
}
