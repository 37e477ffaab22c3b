//! DELETE of one object or a collection: preconditions, finalizers,
//! propagation policy, graceful deletion.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::list::collect;
use super::{Request, encode_for_store, load, render, store_error, with_revision};
use crate::api::{ApiError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::{BodyFormat, content_type, decode_as, json_response};

/// The finalizer that makes the garbage collector delete dependents first.
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that makes the garbage collector orphan dependents.
const ORPHAN: &str = "orphan";

/// Namespaces the server needs; upstream refuses to delete them.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// Parsed DeleteOptions (body and query).
#[derive(Debug, Default)]
pub struct DeleteOptions {
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    grace_period: Option<i64>,
}

impl DeleteOptions {
    /// A plain delete that succeeds only while the object is at `revision`
    /// (`preconditions.resourceVersion`).
    pub fn at_revision(revision: i64) -> Self {
        Self {
            resource_version: Some(revision.to_string()),
            ..Default::default()
        }
    }
}

fn options(req: &Request, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        propagation: req.query.get("propagationPolicy").map(String::from),
        grace_period: req
            .query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok()),
        ..Default::default()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let format = if content_type(&req.headers) == "application/vnd.kubernetes.protobuf" {
        BodyFormat::Protobuf
    } else {
        BodyFormat::Json
    };
    let (value, _) = decode_as(format, body)?;
    if let Some(p) = value.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation = Some(p.to_string());
    }
    if value.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        && opts.propagation.is_none()
    {
        opts.propagation = Some("Orphan".into());
    }
    if let Some(g) = value.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace_period = Some(g);
    }
    opts.uid = value
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        .map(String::from);
    opts.resource_version = value
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(p) = &opts.propagation
        && !["Orphan", "Background", "Foreground"].contains(&p.as_str())
    {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            vec![crate::api::FieldError::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan"],
            )],
        ));
    }
    Ok(opts)
}

/// Deletes the named object.
pub async fn delete(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let opts = options(req, body)?;
    let (status, obj) = delete_one(state, req, &opts).await?;
    Ok(match obj {
        Some(obj) => render(state, req, status, &obj),
        None => json_response(StatusCode::OK, &success(req)),
    })
}

/// Deletes every object matching the selectors.
pub async fn delete_collection(
    state: &ApiState,
    req: &Request,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let opts = options(req, body)?;
    let (items, revision, _) = collect(state, req).await?;
    let mut deleted = Vec::new();
    for item in items {
        let named = req.for_object(Some(meta::namespace(&item)), meta::name(&item));
        match delete_one(state, &named, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => deleted.push(item),
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": format!("{}List", req.rt.kind), "apiVersion": req.rt.api_version(), "metadata": {"resourceVersion": revision.to_string()}, "items": deleted});
    Ok(json_response(StatusCode::OK, &body))
}

/// Deletes now, or marks for deletion when finalizers must run first. Returns
/// the object still present (marked), or None when it is gone.
pub async fn delete_one(
    state: &ApiState,
    req: &Request,
    opts: &DeleteOptions,
) -> Result<(StatusCode, Option<Value>), ApiError> {
    if req.rt.group.is_empty()
        && req.rt.resource == "namespaces"
        && PROTECTED_NAMESPACES.contains(&req.name())
    {
        return Err(ApiError::forbidden(
            "",
            "namespaces",
            req.name(),
            "this namespace may not be deleted",
        ));
    }
    let dry_run = req.query.dry_run()?;
    for _ in 0..5 {
        let (obj, kv) = load(state, req).await?;
        state.admit_delete(req, &obj).await?;
        if let Some(uid) = &opts.uid
            && meta::meta_str(&obj, "uid") != uid
        {
            return Err(precondition(req, "UID", uid, meta::meta_str(&obj, "uid")));
        }
        if let Some(rv) = &opts.resource_version
            && kv.mod_revision.to_string() != *rv
        {
            return Err(precondition(
                req,
                "ResourceVersion",
                rv,
                &kv.mod_revision.to_string(),
            ));
        }
        let mut marked = obj.clone();
        if let Some(grace) = req.rt.strategy.deletion_grace(&obj, opts.grace_period)
            && grace > 0
        {
            // Graceful: the node stops the pod, then deletes it with grace 0.
            let current = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if current.is_some_and(|c| c <= grace) {
                return Ok((StatusCode::OK, Some(obj)));
            }
            let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
            let metadata = meta::metadata_mut(&mut marked);
            metadata.insert(
                "deletionTimestamp".into(),
                json!(deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            );
            metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
            match write_marked(state, req, marked, kv.mod_revision, dry_run).await? {
                Some(marked) => return Ok((StatusCode::OK, Some(marked))),
                None => continue,
            }
        }
        let mut finalizers: Vec<Value> = meta::metadata(&obj)
            .get("finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.contains(&json!(FOREGROUND)) => {
                finalizers.push(json!(FOREGROUND))
            }
            Some("Orphan") if !finalizers.contains(&json!(ORPHAN)) => {
                finalizers.push(json!(ORPHAN))
            }
            _ => {}
        }
        let needs_finalizing = !finalizers.is_empty() || req.rt.strategy.finalized_by_server();
        if !needs_finalizing {
            if dry_run {
                return Ok((StatusCode::OK, Some(obj)));
            }
            match state.store.delete(&req.key(), Some(kv.mod_revision)).await {
                Ok((rev, _)) => {
                    state.after_delete(&req.rt, &obj, rev).await;
                    return Ok((
                        StatusCode::OK,
                        req.rt.strategy.returns_deleted_object().then_some(obj),
                    ));
                }
                Err(crate::store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(req, e)),
            }
        }
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers.len()
                == meta::metadata(&obj)
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
        {
            // Already being deleted; nothing new to record.
            return Ok((StatusCode::ACCEPTED, Some(obj)));
        }
        let metadata = meta::metadata_mut(&mut marked);
        metadata.insert("finalizers".into(), Value::Array(finalizers));
        metadata
            .entry("deletionTimestamp")
            .or_insert_with(|| json!(meta::now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        req.rt.strategy.mark_deleting(&mut marked);
        match write_marked(state, req, marked, kv.mod_revision, dry_run).await? {
            Some(marked) => return Ok((StatusCode::ACCEPTED, Some(marked))),
            None => continue,
        }
    }
    Err(ApiError::conflict(
        &req.rt.group,
        &req.rt.resource,
        req.name(),
    ))
}

/// Stores the object marked for deletion if it is still at `revision`;
/// None on a conflict (the caller re-reads and retries).
async fn write_marked(
    state: &ApiState,
    req: &Request,
    marked: Value,
    revision: i64,
    dry_run: bool,
) -> Result<Option<Value>, ApiError> {
    if dry_run {
        return Ok(Some(marked));
    }
    match state
        .store
        .update(&req.key(), encode_for_store(&req.rt, &marked), revision)
        .await
    {
        Ok(rev) => {
            let marked = with_revision(marked, rev);
            state.after_write(&req.rt, &marked, rev).await;
            Ok(Some(marked))
        }
        Err(crate::store::Error::Conflict { .. }) => Ok(None),
        Err(e) => Err(store_error(req, e)),
    }
}

fn precondition(req: &Request, what: &str, wanted: &str, actual: &str) -> ApiError {
    ApiError::Conflict {
        group: req.rt.group.clone(),
        resource: req.rt.resource.clone(),
        name: req.name().to_string(),
        detail: format!(
            "Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}"
        ),
        causes: vec![],
    }
}

/// The Status upstream answers when an object is gone at once.
fn success(req: &Request) -> Value {
    let mut details = json!({"name": req.name(), "kind": req.rt.resource});
    if !req.rt.group.is_empty() {
        details["group"] = json!(req.rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
