//! kube-proxy's two plain-HTTP ports, on 127.0.0.1: metrics on 10249 and
//! the health check on 10256 (200 while the rules were applied lately,
//! 503 before the first sync or after a stall), with upstream's JSON body.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{SecondsFormat, Utc};

use super::LastSync;
use crate::telemetry::{Metrics, PROMETHEUS_TEXT_CONTENT_TYPE};

/// kube-proxy's metrics port.
pub const METRICS_PORT: u16 = 10249;
/// kube-proxy's health check port.
pub const HEALTHZ_PORT: u16 = 10256;

/// Rules older than this make the proxy unhealthy (two resync periods).
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Serves both ports until the process ends; a port already taken is
/// logged and skipped.
pub async fn serve(metrics: Arc<Metrics>, last_sync: Arc<LastSync>) {
    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.encode();
            async move {
                (
                    StatusCode::OK,
                    [("content-type", PROMETHEUS_TEXT_CONTENT_TYPE)],
                    text,
                )
            }
        }),
    );
    let health_app = Router::new().route(
        "/healthz",
        get(move || {
            let answer = health(last_sync.get());
            async move { answer }
        }),
    );
    let mut serving = Vec::new();
    for (port, app) in [(METRICS_PORT, metrics_app), (HEALTHZ_PORT, health_app)] {
        let addr = format!("127.0.0.1:{port}");
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(listener) => serving.push(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(err = %e, port, "service proxy port stopped");
                }
            }),
            Err(e) => {
                tracing::warn!(err = %e, address = %addr, "cannot serve the service proxy port")
            }
        }
    }
    futures::future::join_all(serving).await;
}

fn health(last: Option<chrono::DateTime<Utc>>) -> axum::response::Response {
    let now = Utc::now();
    let healthy = last.is_some_and(|t| now - t < STALE_AFTER);
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let body = serde_json::json!({
        "lastUpdated": last.map(stamp).unwrap_or_default(),
        "currentTime": stamp(now),
        "nodeEligible": true,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_rules_are_fresh() {
        assert_eq!(health(None).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health(Some(Utc::now())).status(), StatusCode::OK);
        let old = Utc::now() - STALE_AFTER - chrono::TimeDelta::seconds(1);
        assert_eq!(health(Some(old)).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
