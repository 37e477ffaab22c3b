//! `PUT namespaces/{name}/finalize`: the namespace controller removes its
//! `spec.finalizers` entry once the namespace is empty; a namespace being
//! deleted with no finalizers left is then gone.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Request, load, render, store_error};
use crate::api::ApiError;
use crate::apiserver::ApiState;
use crate::apiserver::body::decode_object;

/// Replaces the namespace's `spec.finalizers`.
pub async fn finalize(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (given, _) = decode_object(&req.headers, body)?;
    let (mut namespace, kv) = load(state, req).await?;
    let old = namespace.clone();
    let finalizers = given
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    namespace["spec"]["finalizers"] = finalizers.clone();
    let deleting = namespace.pointer("/metadata/deletionTimestamp").is_some();
    let none_left = finalizers.as_array().is_none_or(Vec::is_empty)
        && namespace
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if deleting && none_left {
        let (rev, _) = state
            .store
            .delete(&req.key(), Some(kv.mod_revision))
            .await
            .map_err(|e| store_error(req, e))?;
        state.after_delete(&req.rt, &namespace, rev).await;
        return Ok(render(state, req, StatusCode::OK, &namespace));
    }
    let (status, written) =
        super::update::write_update(state, req, namespace, &old, kv.mod_revision, false).await?;
    Ok(render(state, req, status, &written))
}
