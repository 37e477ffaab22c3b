//! Server-side apply (`application/apply-patch+yaml`): creates the object if
//! absent, otherwise merges the applied configuration into it; records the
//! manager's fields in `managedFields` (FieldsV1, lists treated as atomic) and
//! reports conflicts with fields other managers applied, unless `force=true`.

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::handlers::patch::decode_apply_body;
use super::handlers::update::write_update;
use super::handlers::{Request, load, render};
use crate::api::{ApiError, FieldError, object};

/// Applies the body as `fieldManager`'s configuration.
pub async fn apply(
    state: &ApiState,
    req: &Request,
    body: &Bytes,
    status_only: bool,
) -> Result<Response, ApiError> {
    let manager = req.query.get("fieldManager").unwrap_or("").to_string();
    if manager.is_empty() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    }
    let force = req.query.flag("force");
    let mut applied = decode_apply_body(body)?;
    let warnings = state.validate_fields(req, &applied, &[])?;
    if object::name(&applied) != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            object::name(&applied),
            req.name()
        )));
    }
    let owned = fields_of(&applied);
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": req.rt.api_version(),
        "time": object::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": owned,
    });
    let (status, result) = match load(state, req).await {
        Err(ApiError::NotFound { .. }) => {
            object::metadata_mut(&mut applied).insert("managedFields".into(), json!([entry]));
            super::handlers::create::create_object(state, req, &mut applied).await?
        }
        Err(e) => return Err(e),
        Ok((live, kv)) => {
            let managed: Vec<Value> = object::metadata(&live)
                .get("managedFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !force {
                let conflicts = conflicts(&managed, &manager, &owned, &applied, &live);
                if !conflicts.is_empty() {
                    return Err(conflict_error(req, conflicts));
                }
            }
            let previous = managed
                .iter()
                .find(|m| {
                    m.get("manager").and_then(Value::as_str) == Some(&manager)
                        && m.get("operation").and_then(Value::as_str) == Some("Apply")
                })
                .and_then(|m| m.get("fieldsV1"))
                .cloned();
            let mut merged = live.clone();
            if let Some(previous) = previous {
                remove_dropped(&mut merged, &previous, &owned);
            }
            let root = state.schemas.definition_name(&req.rt);
            merged = crate::api::strategic_merge::apply(
                &merged,
                &strip_meta(&applied),
                root.as_deref(),
                state.schemas.definitions(),
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut managed: Vec<Value> = managed
                .into_iter()
                .filter(|m| {
                    !(m.get("manager").and_then(Value::as_str) == Some(&manager)
                        && m.get("operation").and_then(Value::as_str) == Some("Apply"))
                })
                .collect();
            if force {
                for other in &mut managed {
                    if let Some(fields) = other.get_mut("fieldsV1") {
                        subtract(fields, &owned);
                    }
                }
            }
            managed.push(entry);
            object::metadata_mut(&mut merged).insert("managedFields".into(), Value::Array(managed));
            write_update(state, req, merged, &live, kv.mod_revision, status_only).await?
        }
    };
    let mut response = render(state, req, status, &result);
    super::add_warnings(&mut response, &warnings);
    Ok(response)
}

/// The applied object without what the server owns.
fn strip_meta(applied: &Value) -> Value {
    let mut patch = applied.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    patch
}

/// FieldsV1 of a configuration: `f:<key>` per map key; lists and scalars are leaves.
pub fn fields_of(value: &Value) -> Value {
    let mut out = Map::new();
    if let Some(map) = value.as_object() {
        for (key, child) in map {
            if matches!(key.as_str(), "apiVersion" | "kind") {
                continue;
            }
            if value.get("metadata").is_some() && key == "metadata" {
                let mut meta = Map::new();
                for (mk, mv) in child.as_object().into_iter().flatten() {
                    if matches!(
                        mk.as_str(),
                        "name"
                            | "namespace"
                            | "managedFields"
                            | "resourceVersion"
                            | "uid"
                            | "creationTimestamp"
                            | "generation"
                    ) {
                        continue;
                    }
                    meta.insert(format!("f:{mk}"), fields_of(mv));
                }
                out.insert("f:metadata".into(), Value::Object(meta));
                continue;
            }
            out.insert(format!("f:{key}"), fields_of(child));
        }
    }
    Value::Object(out)
}

/// Leaf paths of a FieldsV1 set.
fn leaves(fields: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match fields.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.trim_start_matches("f:").to_string());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn conflicts(
    managed: &[Value],
    manager: &str,
    owned: &Value,
    applied: &Value,
    live: &Value,
) -> Vec<(String, String)> {
    let mut mine = Vec::new();
    leaves(owned, &mut Vec::new(), &mut mine);
    let mut found = Vec::new();
    for other in managed {
        let name = other.get("manager").and_then(Value::as_str).unwrap_or("");
        if name == manager {
            continue;
        }
        let mut theirs = Vec::new();
        leaves(
            other.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut theirs,
        );
        for path in &mine {
            if theirs.contains(path) && lookup(applied, path) != lookup(live, path) {
                found.push((name.to_string(), path.join(".")));
            }
        }
    }
    found
}

fn conflict_error(req: &Request, conflicts: Vec<(String, String)>) -> ApiError {
    let causes: Vec<FieldError> = conflicts
        .iter()
        .map(|(manager, path)| FieldError {
            reason: "FieldManagerConflict",
            field: format!(".{path}"),
            message: format!("conflict with \"{manager}\""),
        })
        .collect();
    let detail = format!(
        "Apply failed with {} conflict{}: {}",
        causes.len(),
        if causes.len() == 1 { "" } else { "s" },
        conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": .{p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ApiError::Conflict {
        group: req.rt.group.clone(),
        resource: req.rt.resource.clone(),
        name: req.name().to_string(),
        detail,
        causes,
    }
}

/// Removes from `obj` the leaves the manager owned before but no longer applies.
fn remove_dropped(obj: &mut Value, previous: &Value, now: &Value) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    leaves(previous, &mut Vec::new(), &mut before);
    leaves(now, &mut Vec::new(), &mut after);
    for path in before.into_iter().filter(|p| !after.contains(p)) {
        if let Some((last, parents)) = path.split_last()
            && let Some(parent) = parents
                .iter()
                .try_fold(&mut *obj, |v, k| v.get_mut(k))
                .and_then(Value::as_object_mut)
        {
            parent.remove(last);
        }
    }
}

/// Removes `owned` leaves from another manager's set (force takes ownership).
fn subtract(fields: &mut Value, owned: &Value) {
    let (Some(map), Some(owned)) = (fields.as_object_mut(), owned.as_object()) else {
        return;
    };
    for (key, sub) in owned {
        let remove = match map.get_mut(key) {
            Some(child) if sub.as_object().is_some_and(|s| !s.is_empty()) => {
                subtract(child, sub);
                child.as_object().is_some_and(Map::is_empty)
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_conflicts() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v2"}});
        let owned = fields_of(&applied);
        assert_eq!(
            owned,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:data": {"f:k": {}}})
        );
        let live = json!({"metadata": {"name": "x"}, "data": {"k": "v1"}});
        let managed = vec![
            json!({"manager": "other", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}}),
        ];
        assert_eq!(
            conflicts(&managed, "me", &owned, &applied, &live),
            [("other".to_string(), "data.k".to_string())]
        );
        let mut theirs = json!({"f:data": {"f:k": {}, "f:j": {}}});
        subtract(&mut theirs, &owned);
        assert_eq!(theirs, json!({"f:data": {"f:j": {}}}));
    }

    #[test]
    fn dropped_fields_are_removed() {
        let mut obj = json!({"data": {"a": "1", "b": "2"}});
        remove_dropped(
            &mut obj,
            &json!({"f:data": {"f:a": {}, "f:b": {}}}),
            &json!({"f:data": {"f:a": {}}}),
        );
        assert_eq!(obj, json!({"data": {"a": "1"}}));
    }
}
