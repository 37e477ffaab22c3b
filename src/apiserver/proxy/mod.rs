//! The proxy subresources `services/proxy`, `pods/proxy` and `nodes/proxy`:
//! `…/{name}/proxy/{path}` is relayed, any method, body and answer
//! streamed, upgrades spliced, to a ready endpoint of the Service, to the
//! pod's IP, or to the node's kubelet. `location.rs` parses paths and
//! rewrites redirects, `resolve.rs` finds the backend, `forward.rs` relays.

mod forward;
mod location;
mod resolve;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use location::ProxyPath;

use super::ApiState;
use crate::api::ApiError;
use crate::api::resources::Subresource;

/// The proxy request `raw_path` (still percent-encoded) makes, if it is one
/// of a resource whose table row serves `proxy`.
pub fn route(state: &ApiState, raw_path: &str) -> Option<ProxyPath> {
    let path = location::parse(raw_path)?;
    let rt = state.registry.lookup("", "v1", &path.resource)?;
    rt.has(Subresource::Proxy).then_some(path)
}

/// Serves a proxy request; every failure is a metav1.Status.
pub async fn serve(state: &ApiState, path: ProxyPath, parts: Parts, body: Body) -> Response {
    handle(state, path, parts, body)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn handle(
    state: &ApiState,
    path: ProxyPath,
    parts: Parts,
    body: Body,
) -> Result<Response, ApiError> {
    // Upstream's proxy REST connects these methods only.
    if ![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .contains(&parts.method)
    {
        return Err(ApiError::MethodNotAllowed);
    }
    let namespace = path.namespace.as_deref().unwrap_or_default();
    let targets = match path.resource.as_str() {
        "services" => resolve::service(state, namespace, &path.id).await?,
        "pods" => vec![resolve::pod(state, namespace, &path.id).await?],
        _ => vec![resolve::node(state, &path.id).await?],
    };
    let backend_path = location::backend_path(&path.rest);
    if backend_path.is_empty()
        && matches!(parts.method, Method::GET | Method::HEAD)
        && !forward::is_upgrade(&parts.headers)
    {
        // `…/proxy` → `…/proxy/`, so relative links on the backend's root
        // page resolve under the proxy (upstream's fix for issue 4958).
        return Ok(redirect_to_slash(&parts));
    }
    let exchange = forward::Exchange {
        path: if backend_path.is_empty() {
            "/".to_string()
        } else {
            backend_path
        },
        prefix: path.prefix,
        parts,
        body,
    };
    forward::forward(state, &targets, exchange).await
}

/// 301 to the same path with a trailing slash, query kept.
fn redirect_to_slash(parts: &Parts) -> Response {
    let target = match parts.uri.query() {
        Some(query) => format!("{}/?{query}", parts.uri.path()),
        None => format!("{}/", parts.uri.path()),
    };
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(location) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
