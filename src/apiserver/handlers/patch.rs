//! PATCH: JSON patch, merge patch, strategic merge patch, and server-side apply.

use axum::body::Bytes;
use axum::response::Response;
use serde_json::Value;

use super::update::write_update;
use super::{Request, body_revision, load, render};
use crate::api::{ApiError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::{BodyFormat, content_type, decode_as, parse_json};

/// How many times a patch is re-applied when the object changes underneath it.
const PATCH_RETRIES: usize = 5;

/// The patch types kubectl sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply.
    Apply,
}

impl PatchType {
    fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        match ct {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            _ => Err(ApiError::UnsupportedMediaType),
        }
    }
}

/// Patches the named object (or its status).
pub async fn patch(
    state: &ApiState,
    req: &Request,
    body: &Bytes,
    status_only: bool,
) -> Result<Response, ApiError> {
    if body.len() > crate::apiserver::body::MAX_BODY {
        return Err(ApiError::TooLarge("patch body".into()));
    }
    let kind = PatchType::from_content_type(&content_type(&req.headers))?;
    if kind == PatchType::Strategic && req.rt.custom.is_some() {
        return Err(ApiError::UnsupportedMediaType);
    }
    if kind == PatchType::Apply {
        return crate::apiserver::apply::apply(state, req, body, status_only).await;
    }
    let (patch, duplicates) = match kind {
        PatchType::Json => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            (value, vec![])
        }
        _ => parse_json(body)?,
    };
    let mut last_error = None;
    for _ in 0..PATCH_RETRIES {
        let (old, kv) = load(state, req).await?;
        let patched = apply_patch(state, req, kind, &old, &patch)?;
        let warnings = state.validate_fields(req, &patched, &duplicates)?;
        if let Some(expected) = body_revision(&patched)?
            && expected != kv.mod_revision
        {
            return Err(ApiError::conflict(
                &req.rt.group,
                &req.rt.resource,
                req.name(),
            ));
        }
        match write_update(state, req, patched, &old, kv.mod_revision, status_only).await {
            Ok((status, obj)) => {
                let mut response = render(state, req, status, &obj);
                crate::apiserver::add_warnings(&mut response, &warnings);
                return Ok(response);
            }
            // Someone wrote in between: re-read and re-apply, as upstream does.
            Err(e @ ApiError::Conflict { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| ApiError::conflict(&req.rt.group, &req.rt.resource, req.name())))
}

/// Applies a non-apply patch of `kind` to `old`.
pub fn apply_patch(
    state: &ApiState,
    req: &Request,
    kind: PatchType,
    old: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let mut target = old.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            // Without the crate's rollback: `target` is a copy that an error
            // discards anyway, and rolling back a move to the root after a
            // failed later operation panics in json-patch 5 (found by
            // benches/fuzz.rs).
            json_patch::patch_unsafe(&mut target, &ops).map_err(|e| ApiError::Invalid {
                group: req.rt.group.clone(),
                kind: req.rt.kind.clone(),
                name: req.name().to_string(),
                causes: vec![crate::api::FieldError::invalid(
                    "",
                    &Value::Null,
                    &e.to_string(),
                )],
            })?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            json_patch::merge(&mut target, patch);
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            let root = state.schemas.definition_name(&req.rt);
            target = crate::api::codec::strategic_merge::apply(
                old,
                patch,
                root.as_deref(),
                state.schemas.definitions(),
            )
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        PatchType::Apply => return Err(ApiError::internal("apply is not a plain patch")),
    }
    if meta::name(&target) != req.name() {
        return Err(ApiError::bad_request(
            "the name of the object may not be changed by a patch",
        ));
    }
    Ok(target)
}

/// Decodes an apply body (YAML or JSON).
pub fn decode_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    decode_as(BodyFormat::Yaml, body).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json").expect("json"),
            PatchType::Json
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml").expect("apply"),
            PatchType::Apply
        );
        assert!(PatchType::from_content_type("application/json").is_err());
    }
}
