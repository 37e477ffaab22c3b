//! POST: create an object.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Request, encode_for_store, render, store_error, with_revision};
use crate::api::{ApiError, registry::object, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::decode_object;

/// Creates the object in the body.
pub async fn create(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (mut obj, duplicates) = decode_object(&req.headers, body)?;
    let warnings = state.validate_fields(req, &obj, &duplicates)?;
    create_object(state, req, &mut obj)
        .await
        .map(|(status, obj)| {
            let mut response = render(state, req, status, &obj);
            crate::apiserver::add_warnings(&mut response, &warnings);
            response
        })
}

/// Runs create rules, admission and the write; shared with apply-create and replace-create.
pub async fn create_object(
    state: &ApiState,
    req: &Request,
    obj: &mut Value,
) -> Result<(StatusCode, Value), ApiError> {
    super::super::convert::from_request(&req.rt, obj);
    let sent = crate::api::codec::managed_fields::fields_of(obj);
    object::before_create(&req.rt, obj, req.path.namespace.as_deref())?;
    if let Some(manager) = req.update_manager() {
        meta::metadata_mut(obj).remove("managedFields");
        crate::api::codec::managed_fields::record_update(
            obj,
            &manager,
            &req.rt.api_version(),
            None,
            &sent,
        );
    }
    if let Some(ns) = req.namespace() {
        state.require_namespace(ns, req).await?;
    }
    let name = meta::name(obj).to_string();
    let key = req.rt.key(req.namespace(), &name);
    let named = req.for_object(None, &name);
    let _allocation = state.admit_create(&named, obj).await?;
    if req.query.dry_run()? {
        return Ok((StatusCode::CREATED, obj.clone()));
    }
    let revision = state
        .store
        .create(&key, encode_for_store(&req.rt, obj))
        .await
        .map_err(|e| store_error(&named, e))?;
    state.after_write(&req.rt, obj, revision).await;
    Ok((StatusCode::CREATED, with_revision(obj.clone(), revision)))
}
