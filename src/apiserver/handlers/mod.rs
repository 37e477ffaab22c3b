//! Resource verbs, one file each; this file dispatches a parsed request to its
//! verb and holds what the verbs share (loading, storing, rendering objects).

pub mod create;
pub mod delete;
mod get;
mod list;
mod namespaces;
pub mod patch;
mod pods;
mod scale;
mod token;
pub mod update;
mod watch;
pub use watch::DecodedEvents;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::User;
use super::body::{TABLE, json_response, typed_response, wants_table};
use super::request::{Query, ResourcePath};
use crate::api::registry::resources::{ResourceType, Subresource, Verbs};
use crate::api::{ApiError, registry::object, values::meta};
use crate::store::{self, KeyValue};

/// One resource request, parsed and resolved against the registry.
#[derive(Clone)]
pub struct Request {
    /// The resolved resource.
    pub rt: Arc<ResourceType>,
    /// The path parts.
    pub path: ResourcePath,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// Who asked.
    pub user: User,
    /// Warnings for the client that admission raised (`Warning` headers).
    pub warnings: Warnings,
}

/// Warnings collected while a request is served; shared by the requests
/// derived from it (one per object of a collection write).
#[derive(Debug, Clone, Default)]
pub struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    /// Adds one warning (once).
    pub fn push(&self, warning: String) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !list.contains(&warning) {
            list.push(warning);
        }
    }

    /// The warnings so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Request {
    /// Namespace to use: the path's, for namespaced resources.
    pub fn namespace(&self) -> Option<&str> {
        if self.rt.namespaced {
            self.path.namespace.as_deref()
        } else {
            None
        }
    }

    /// The object name (present for item requests).
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }

    /// The store key of the named object.
    pub fn key(&self) -> String {
        self.rt.key(self.namespace(), self.name())
    }

    /// 404 for the named object.
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.resource, self.name())
    }

    /// The field manager an Update-type write records (None for apply, which records its own):
    /// `fieldManager`, else the User-Agent's program name, as upstream.
    pub fn update_manager(&self) -> Option<String> {
        if super::body::content_type(&self.headers).starts_with("application/apply-patch") {
            return None;
        }
        let from_agent = || {
            let agent = self
                .headers
                .get(axum::http::header::USER_AGENT)?
                .to_str()
                .ok()?;
            agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        Some(
            self.query
                .get("fieldManager")
                .map(String::from)
                .or_else(from_agent)
                .unwrap_or_else(|| "unknown".into()),
        )
    }

    /// The same request for another object name (and namespace).
    pub fn for_object(&self, namespace: Option<&str>, name: &str) -> Request {
        let mut path = self.path.clone();
        path.name = Some(name.to_string());
        if let Some(ns) = namespace.filter(|ns| !ns.is_empty()) {
            path.namespace = Some(ns.to_string());
        }
        Request {
            rt: self.rt.clone(),
            path,
            query: self.query.clone(),
            headers: self.headers.clone(),
            user: self.user.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// The server's own request for a built-in resource (v1), acting as
/// `system:apiserver` in `system:masters`: bootstrap and reconcile writes.
pub fn system_request(
    state: &ApiState,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Option<Request> {
    let rt = state.registry.lookup(group, "v1", resource)?;
    let path = ResourcePath {
        group: group.into(),
        version: "v1".into(),
        namespace: namespace.map(String::from),
        resource: resource.into(),
        name: name.map(String::from),
        ..Default::default()
    };
    Some(Request {
        rt,
        path,
        query: Query::default(),
        headers: HeaderMap::new(),
        warnings: Warnings::default(),
        user: User {
            name: "system:apiserver".into(),
            groups: vec![
                crate::apiserver::authz::PRIVILEGED_GROUP.into(),
                "system:authenticated".into(),
            ],
        },
    })
}

/// Routes a resource request to its verb.
pub async fn dispatch(
    state: Arc<ApiState>,
    user: User,
    method: Method,
    path: ResourcePath,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rt = state
        .registry
        .lookup(&path.group, &path.version, &path.resource)
        .ok_or(ApiError::NoSuchPath)?;
    if rt.namespaced && path.namespace.is_none() && path.name.is_some() {
        return Err(ApiError::NoSuchPath);
    }
    let subresource = match path.subresource.as_deref() {
        None => None,
        Some(s) => Some(
            Subresource::parse(s)
                .filter(|s| rt.has(*s))
                .ok_or(ApiError::NoSuchPath)?,
        ),
    };
    let req = Request {
        rt,
        path,
        query,
        headers,
        user,
        warnings: Warnings::default(),
    };
    let mut response = serve(state, &req, method, subresource, body).await?;
    super::add_warnings(&mut response, &req.warnings.take());
    Ok(response)
}

/// Runs the verb.
async fn serve(
    state: Arc<ApiState>,
    req: &Request,
    method: Method,
    subresource: Option<Subresource>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if req.rt.verbs == Verbs::CreateOnly {
        return match (method, req.path.name.is_none()) {
            (Method::POST, true) => super::reviews::create(&state, req, &body).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    if req.rt.verbs == Verbs::GetList {
        return super::resource_metrics::serve(&state, req, &method).await;
    }
    let item = req.path.name.is_some();
    match (subresource, method, item) {
        (None, Method::GET, false) if req.query.flag("watch") => {
            watch::watch(state, req.clone()).await
        }
        (None, Method::GET, false) => list::list(&state, req).await,
        (None, Method::GET, true) => get::get(&state, req).await,
        (None, Method::POST, false) => create::create(&state, req, &body).await,
        (None, Method::PUT, true) => update::update(&state, req, &body, false).await,
        (None, Method::PATCH, true) => patch::patch(&state, req, &body, false).await,
        (None, Method::DELETE, true) => delete::delete(&state, req, &body).await,
        (None, Method::DELETE, false) => delete::delete_collection(&state, req, &body).await,
        (Some(Subresource::Status), Method::GET, true) => get::get(&state, req).await,
        (Some(Subresource::Status), Method::PUT, true) => {
            update::update(&state, req, &body, true).await
        }
        (Some(Subresource::Status), Method::PATCH, true) => {
            patch::patch(&state, req, &body, true).await
        }
        (Some(Subresource::Approval), Method::GET, true) => get::get(&state, req).await,
        (Some(Subresource::Approval), Method::PUT, true) => {
            update::update(&state, req, &body, true).await
        }
        (Some(Subresource::Approval), Method::PATCH, true) => {
            patch::patch(&state, req, &body, true).await
        }
        (Some(Subresource::EphemeralContainers), Method::GET, true) => get::get(&state, req).await,
        (Some(Subresource::EphemeralContainers), Method::PUT, true) => {
            update::update(&state, req, &body, false).await
        }
        (Some(Subresource::EphemeralContainers), Method::PATCH, true) => {
            patch::patch(&state, req, &body, false).await
        }
        (Some(Subresource::Scale), Method::GET, true) => scale::get(&state, req).await,
        (Some(Subresource::Scale), Method::PUT, true) => scale::update(&state, req, &body).await,
        (Some(Subresource::Scale), Method::PATCH, true) => scale::patch(&state, req, &body).await,
        (Some(Subresource::Binding), Method::POST, true) => pods::bind(&state, req, &body).await,
        (Some(Subresource::Eviction), Method::POST, true) => pods::evict(&state, req).await,
        (Some(Subresource::Token), Method::POST, true) => token::create(&state, req, &body).await,
        (Some(Subresource::Finalize), Method::PUT, true) => {
            namespaces::finalize(&state, req, &body).await
        }
        (Some(Subresource::Log), Method::GET, true) => {
            crate::apiserver::kubelet::pod_log(&state, req).await
        }
        (Some(_), _, true) => Err(ApiError::ServiceUnavailable(format!(
            "{}/{} is served by the node, which this server does not run yet",
            req.rt.resource,
            req.path.subresource.as_deref().unwrap_or("")
        ))),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Maps store errors for `req`'s object to API errors.
pub fn store_error(req: &Request, e: store::Error) -> ApiError {
    match e {
        store::Error::AlreadyExists(_) => {
            ApiError::already_exists(&req.rt.group, &req.rt.resource, req.name())
        }
        store::Error::NotFound(_) => req.not_found(),
        store::Error::Conflict { .. } => {
            ApiError::conflict(&req.rt.group, &req.rt.resource, req.name())
        }
        store::Error::Compacted {
            requested,
            compacted,
        } => ApiError::Expired {
            requested,
            current: compacted,
        },
        other => ApiError::internal(other),
    }
}

/// Decodes a stored value into the object served at `rt`'s version.
pub fn decode_stored(rt: &ResourceType, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    if let Some(map) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        map.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    super::convert::to_version(rt, &mut obj);
    Ok(obj)
}

/// Encodes an object for storage: in the storage version, without resourceVersion.
pub fn encode_for_store(rt: &ResourceType, obj: &Value) -> Vec<u8> {
    let mut stored = obj.clone();
    if let Some(map) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        map.remove("resourceVersion");
    }
    super::convert::to_storage(rt, &mut stored);
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Loads the request's object.
pub async fn load(state: &ApiState, req: &Request) -> Result<(Value, KeyValue), ApiError> {
    let kv = state
        .store
        .get(&req.key())
        .await
        .map_err(|e| store_error(req, e))?
        .ok_or_else(|| req.not_found())?;
    Ok((decode_stored(&req.rt, &kv)?, kv))
}

/// Sets `resourceVersion` on an object after a write.
pub fn with_revision(mut obj: Value, revision: i64) -> Value {
    meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(revision.to_string()));
    obj
}

/// Renders one object as JSON or, if asked, its metadata or a one-row Table.
pub fn render(_state: &ApiState, req: &Request, status: StatusCode, obj: &Value) -> Response {
    if super::body::wants_metadata(&req.headers) {
        return typed_response(status, super::body::PARTIAL, &object::partial_metadata(obj));
    }
    if wants_table(&req.headers) {
        let table = super::table::single(
            &req.rt,
            obj,
            meta::meta_str(obj, "resourceVersion"),
            &req.query,
        );
        return typed_response(status, TABLE, &table);
    }
    json_response(status, obj)
}

/// The resourceVersion precondition inside a body, if any.
pub fn body_revision(obj: &Value) -> Result<Option<i64>, ApiError> {
    match meta::meta_str(obj, "resourceVersion") {
        "" => Ok(None),
        rv => rv
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}
