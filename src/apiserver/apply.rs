//! Server-side apply (`application/apply-patch+yaml`): creates the object if
//! absent, otherwise merges the applied configuration into it; records the
//! manager's fields in `managedFields` (FieldsV1, lists treated as atomic) and
//! reports conflicts with fields other managers applied, unless `force=true`.

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::handlers::patch::decode_apply_body;
use super::handlers::update::write_update;
use super::handlers::{Request, load, render};
use crate::api::codec::managed_fields::{conflicts, fields_of, remove_dropped, subtract};
use crate::api::{ApiError, FieldError, values::meta};

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
    if meta::name(&applied) != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            meta::name(&applied),
            req.name()
        )));
    }
    let owned = fields_of(&applied);
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": req.rt.api_version(),
        "time": meta::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": owned,
    });
    let (status, result) = match load(state, req).await {
        Err(ApiError::NotFound { .. }) => {
            meta::metadata_mut(&mut applied).insert("managedFields".into(), json!([entry]));
            super::handlers::create::create_object(state, req, &mut applied).await?
        }
        Err(e) => return Err(e),
        Ok((live, kv)) => {
            let managed: Vec<Value> = meta::metadata(&live)
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
            merged = crate::api::codec::strategic_merge::apply(
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
            meta::metadata_mut(&mut merged).insert("managedFields".into(), Value::Array(managed));
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
