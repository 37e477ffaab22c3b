//! PUT: replace an object (or its status).

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Request, body_revision, encode_for_store, load, render, store_error, with_revision};
use crate::api::{ApiError, FieldError, registry::object, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::decode_object;

/// Replaces the named object with the body.
pub async fn update(
    state: &ApiState,
    req: &Request,
    body: &Bytes,
    status_only: bool,
) -> Result<Response, ApiError> {
    let (mut obj, duplicates) = decode_object(&req.headers, body)?;
    let warnings = state.validate_fields(req, &obj, &duplicates)?;
    let body_name = meta::name(&obj).to_string();
    if !body_name.is_empty() && body_name != req.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    let (old, kv) = load(state, req).await?;
    let expected = body_revision(&obj)?;
    if let Some(expected) = expected
        && expected != kv.mod_revision
    {
        return Err(ApiError::conflict(
            &req.rt.group,
            &req.rt.resource,
            req.name(),
        ));
    }
    meta::metadata_mut(&mut obj).insert("name".into(), Value::String(req.name().to_string()));
    let (status, updated) =
        write_update(state, req, obj, &old, kv.mod_revision, status_only).await?;
    let mut response = render(state, req, status, &updated);
    crate::apiserver::add_warnings(&mut response, &warnings);
    Ok(response)
}

/// Applies update rules to `new` against `old` (at `revision`) and writes it.
pub async fn write_update(
    state: &ApiState,
    req: &Request,
    mut new: Value,
    old: &Value,
    revision: i64,
    status_only: bool,
) -> Result<(StatusCode, Value), ApiError> {
    super::super::convert::from_request(&req.rt, &mut new);
    if req.path.subresource.as_deref() == Some("ephemeralcontainers") {
        // Only ephemeral containers change, and only by being added.
        new = crate::api::registry::strategy::pods::with_ephemeral_containers(old, &new)
            .map_err(|causes| ApiError::invalid(&req.rt.group, &req.rt.kind, req.name(), causes))?;
    }
    let approval = req.path.subresource.as_deref() == Some("approval");
    let requested_status = approval.then(|| new.get("status").cloned().unwrap_or_default());
    object::before_update(&req.rt, &mut new, old, status_only)?;
    if let Some(requested) = requested_status {
        crate::api::registry::strategy::certificates::prepare_for_approval_update(
            &mut new, &requested, old,
        );
        object::validate_after_strategy(&req.rt, &new, old)?;
    }
    state.admit_update(req, &mut new, old, status_only).await?;
    if let Some(manager) = req.update_manager() {
        // What the writer sent for managedFields is ignored; ownership follows the change.
        let previous = meta::metadata(old).get("managedFields").cloned();
        match previous {
            Some(managed) => meta::metadata_mut(&mut new).insert("managedFields".into(), managed),
            None => meta::metadata_mut(&mut new).remove("managedFields"),
        };
        let changed = crate::api::codec::managed_fields::changed_fields(&new, old);
        let subresource = status_only.then_some("status");
        crate::api::codec::managed_fields::record_update(
            &mut new,
            &manager,
            &req.rt.api_version(),
            subresource,
            &changed,
        );
    }
    // Deleted once its last finalizer goes, unless a graceful period still runs.
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
        && old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let finalizers_empty = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty());
    if req.query.dry_run()? {
        return Ok((StatusCode::OK, new));
    }
    if deleting && finalizers_empty {
        // The last finalizer is gone from an object being deleted: delete it now.
        let (rev, _) = state
            .store
            .delete(&req.key(), Some(revision))
            .await
            .map_err(|e| store_error(req, e))?;
        state.after_delete(&req.rt, &new, rev).await;
        return Ok((StatusCode::OK, with_revision(new, rev)));
    }
    if new == *old {
        // Nothing changed: no write, same resourceVersion, as upstream.
        return Ok((StatusCode::OK, new));
    }
    let encoded = encode_for_store(&req.rt, &new);
    let written = if crate::api::registry::strategy::coalescible(&req.rt, &new, old) {
        // A Lease renewal: the store may hold it until its next commit.
        state
            .store
            .update_coalesced(&req.key(), encoded, revision)
            .await
    } else {
        state.store.update(&req.key(), encoded, revision).await
    };
    let rev = written.map_err(|e| store_error(req, e))?;
    state.after_write(&req.rt, &new, rev).await;
    Ok((StatusCode::OK, with_revision(new, rev)))
}

/// A field the update may not change.
pub fn immutable(field: &str, value: &Value) -> FieldError {
    FieldError::invalid(field, value, "field is immutable")
}
