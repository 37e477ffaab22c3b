//! The secure ports of the in-process controller-manager (10257) and
//! scheduler (10259): `/healthz` (public, as upstream) and `/metrics`
//! behind the API server's TLS and authentication; the scheduler's also
//! `/metrics/resources`. kelp's components share one process and one
//! registry, so every `/metrics` shows all of its series, as k3s's do.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::{ApiState, authn, authz};
use crate::http::serve;
use crate::telemetry::PROMETHEUS_TEXT_CONTENT_TYPE;

/// kube-controller-manager's secure port.
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
/// kube-scheduler's secure port.
pub const SCHEDULER_PORT: u16 = 10259;

/// `/healthz` and `/metrics`.
pub fn router(state: Arc<ApiState>) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move { prometheus(text) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            authn::authenticate,
        ))
        .layer(axum::middleware::from_fn(super::parse_request))
}

/// The text of the scheduler's `/metrics/resources`, made at each scrape.
pub type ResourceMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// The scheduler's: also `/metrics/resources`, as the scheduler renders it.
pub fn scheduler_router(state: Arc<ApiState>, resources: ResourceMetrics) -> Router {
    let resources = Router::new()
        .route(
            "/metrics/resources",
            get(move || {
                let text = resources();
                async move { prometheus(text) }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authn::authenticate,
        ))
        .layer(axum::middleware::from_fn(super::parse_request));
    router(state).merge(resources)
}

fn prometheus(text: String) -> axum::response::Response {
    (
        StatusCode::OK,
        [("content-type", PROMETHEUS_TEXT_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Serves `app` on 127.0.0.1:`port` in the background. A port already
/// taken (another kelp, an upstream component) is logged, not fatal: the
/// component itself runs either way.
pub async fn spawn(port: u16, tls: Arc<rustls::ServerConfig>, app: Router) {
    let addr = format!("127.0.0.1:{port}");
    match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => {
            tokio::spawn(async move {
                if let Err(e) = serve::serve(listener, tls, app, std::future::pending()).await {
                    tracing::warn!(err = %e, port, "component port stopped");
                }
            });
        }
        Err(e) => tracing::warn!(err = %e, address = %addr, "cannot serve component metrics"),
    }
}
