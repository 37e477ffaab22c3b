//! The `/scale` subresource: an autoscaling/v1 Scale view of `spec.replicas`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::patch::{PatchType, apply_patch};
use super::update::write_update;
use super::{Request, load};
use crate::api::values::selectors::LabelSelector;
use crate::api::{ApiError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::{content_type, decode_object, json_response, parse_json};

/// Where a resource keeps replicas and selector.
fn paths(req: &Request) -> (String, String, Option<String>) {
    match req.rt.custom.as_ref().and_then(|c| c.scale.clone()) {
        Some((spec, status, selector)) => (
            to_pointer(&spec),
            to_pointer(&status),
            selector.map(|s| to_pointer(&s)),
        ),
        None => (
            "/spec/replicas".into(),
            "/status/replicas".into(),
            Some("/spec/selector".into()),
        ),
    }
}

fn to_pointer(json_path: &str) -> String {
    json_path
        .trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, part| format!("{acc}/{part}"))
}

/// The Scale object for `obj`.
fn scale_of(req: &Request, obj: &Value) -> Value {
    let (spec, status, selector) = paths(req);
    let metadata = meta::metadata(obj);
    let selector_text = selector
        .and_then(|p| obj.pointer(&p).cloned())
        .map(|s| match s {
            Value::String(text) => text,
            other => LabelSelector::from_object(&other).to_query(),
        });
    let mut scale_status = json!({"replicas": obj.pointer(&status).cloned().unwrap_or(json!(0))});
    if let Some(sel) = selector_text {
        scale_status["selector"] = json!(sel);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(&spec).cloned().unwrap_or(json!(0))},
        "status": scale_status,
    })
}

/// GET …/scale.
pub async fn get(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    let (obj, _) = load(state, req).await?;
    Ok(json_response(StatusCode::OK, &scale_of(req, &obj)))
}

/// PUT …/scale.
pub async fn update(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (scale, _) = decode_object(&req.headers, body)?;
    write_scale(state, req, scale).await
}

/// PATCH …/scale: the patch applies to the Scale view.
pub async fn patch(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let kind = match content_type(&req.headers).as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            PatchType::Merge
        }
        _ => return Err(ApiError::UnsupportedMediaType),
    };
    let (patch, _) = parse_json(body)?;
    let (obj, _) = load(state, req).await?;
    let scale = apply_patch(state, req, kind, &scale_of(req, &obj), &patch)?;
    write_scale(state, req, scale).await
}

async fn write_scale(state: &ApiState, req: &Request, scale: Value) -> Result<Response, ApiError> {
    let (old, kv) = load(state, req).await?;
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && rv != kv.mod_revision.to_string()
    {
        return Err(ApiError::conflict(
            &req.rt.group,
            &req.rt.resource,
            req.name(),
        ));
    }
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    if replicas.as_i64().is_none_or(|n| n < 0) {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            req.name(),
            vec![crate::api::FieldError::invalid(
                "spec.replicas",
                &replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let (spec_path, _, _) = paths(req);
    let mut new = old.clone();
    match new.pointer_mut(&spec_path) {
        Some(slot) => *slot = replicas,
        None => crate::api::registry::strategy::default_field(&mut new, &spec_path, replicas),
    }
    let (_, updated) = write_update(state, req, new, &old, kv.mod_revision, false).await?;
    Ok(json_response(StatusCode::OK, &scale_of(req, &updated)))
}
