//! Request concurrency control, after authentication and before
//! authorization as upstream's chain has them.
//!
//! With `--enable-priority-and-fairness` (the default), API Priority and
//! Fairness (KEP-1040): each request is classified by the FlowSchemas into
//! a priority level, which runs it, queues it fairly among its flows, or
//! refuses it with 429 (`controller`, `queueset`); the bootstrap objects
//! are kept as upstream keeps them (`bootstrap`); levels, queues and
//! requests are dumped under `/debug/api_priority_and_fairness/` (`debug`).
//! With it off, kube-apiserver's max-in-flight limits (`max_in_flight`).

pub mod bootstrap;
pub mod classify;
pub mod concurrency;
pub mod config;
pub mod controller;
pub mod debug;
pub mod max_in_flight;
pub mod metrics;
pub mod queueset;
pub mod retry_after;
pub mod width;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::ApiState;
use super::authn::User;
use super::request::RequestInfo;
use crate::api::ApiError;
pub use controller::PriorityAndFairness;
pub use max_in_flight::InFlightLimits;

/// Set on a response the limits refused, so the request metrics count it as
/// terminated in self-defense (`apiserver_request_terminations_total`).
#[derive(Debug, Clone, Copy)]
pub struct Terminated;

/// Which filter limits requests.
pub enum FlowControl {
    /// `--enable-priority-and-fairness=false`.
    MaxInFlight(InFlightLimits),
    /// API Priority and Fairness.
    PriorityAndFairness(Arc<PriorityAndFairness>),
}

/// The response headers naming the FlowSchema and priority level (by UID).
const FLOW_SCHEMA_HEADER: &str = "x-kubernetes-pf-flowschema-uid";
const PRIORITY_LEVEL_HEADER: &str = "x-kubernetes-pf-prioritylevel-uid";

/// Middleware: runs the request, or refuses it with 429.
pub async fn filter(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(info) = req.extensions().get::<Arc<RequestInfo>>().cloned() else {
        return next.run(req).await;
    };
    match &state.flow_control {
        FlowControl::MaxInFlight(limits) => {
            match limits.acquire(&info, req.extensions().get::<User>()) {
                Ok(_slot) => next.run(req).await,
                Err(max_in_flight::Full) => too_many_requests(1),
            }
        }
        FlowControl::PriorityAndFairness(apf) => {
            // Watches pass through APF; other long-running requests do not.
            if info.is_long_running() && info.verb != "watch" {
                return next.run(req).await;
            }
            let Some(user) = req.extensions().get::<User>().cloned() else {
                return next.run(req).await;
            };
            let digest = classify::Digest {
                user: &user,
                info: &info,
            };
            match apf.admit(digest).await {
                Ok(ticket) => {
                    let mut response = next.run(req).await;
                    // A watch holds its seat only until it is set up.
                    set_headers(ticket.uids.clone(), &mut response);
                    drop(ticket);
                    response
                }
                Err(refusal) => {
                    let mut response = too_many_requests(refusal.retry_after);
                    set_headers(refusal.uids, &mut response);
                    response
                }
            }
        }
    }
}

/// Adds the `X-Kubernetes-PF-*` headers.
fn set_headers((flow_schema, priority_level): (String, String), response: &mut Response) {
    for (name, value) in [
        (FLOW_SCHEMA_HEADER, flow_schema),
        (PRIORITY_LEVEL_HEADER, priority_level),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Upstream's refusal: 429, `Retry-After`, counted as terminated.
fn too_many_requests(retry_after: u64) -> Response {
    let mut refused = ApiError::TooManyRequests {
        message: "Too many requests, please try again later.".into(),
        retry_after_seconds: Some(retry_after as u32),
        causes: Vec::new(),
    }
    .into_response();
    refused.extensions_mut().insert(Terminated);
    refused
}

/// Keeps the bootstrap configuration (always) and, with APF on, the
/// FlowSchemas' `Dangling` conditions current after every change.
pub async fn maintain(state: Arc<ApiState>) {
    tokio::spawn(bootstrap::run(state.clone()));
    let FlowControl::PriorityAndFairness(apf) = &state.flow_control else {
        return;
    };
    let mut changes = apf.changes();
    loop {
        if let Err(e) = bootstrap::sync_status(&state).await {
            tracing::warn!(err = %e, "writing FlowSchema status");
        }
        if changes.changed().await.is_err() {
            return;
        }
        // Let a burst of changes (the ensurer's pass) settle into one write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        changes.borrow_and_update();
    }
}
