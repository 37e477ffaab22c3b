//! Request concurrency limits, after authentication and before
//! authorization as upstream's chain has them.
//!
//! What exists: kube-apiserver's max-in-flight filter. At most
//! `--max-requests-inflight` read-only requests (`get`, `list`, `watch`
//! verbs) and `--max-mutating-requests-inflight` others run at once (0: no
//! limit); a request over the limit is refused at once with 429
//! `TooManyRequests`, `Retry-After: 1` (clients such as client-go retry).
//! Long-running requests (watches, exec, logs, proxies) and `system:masters`
//! are not limited, as upstream. API Priority and Fairness (FlowSchemas,
//! priority levels, fair queuing, `--enable-priority-and-fairness`) is not
//! built yet; these limits are what kube-apiserver applies with it off.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tokio::sync::Semaphore;

use super::ApiState;
use super::authn::User;
use super::request::RequestInfo;
use crate::api::ApiError;

/// Set on a response the limits refused, so the request metrics count it as
/// terminated in self-defense (`apiserver_request_terminations_total`).
#[derive(Debug, Clone, Copy)]
pub struct Terminated;

/// The group whose requests are never limited.
const PRIVILEGED_GROUP: &str = "system:masters";

/// Slots for requests in flight, read-only and mutating apart.
#[derive(Debug)]
pub struct InFlightLimits {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

impl InFlightLimits {
    /// `max_read_only` and `max_mutating` slots (0: unlimited).
    pub fn new(max_read_only: usize, max_mutating: usize) -> Self {
        let slots = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            read_only: slots(max_read_only),
            mutating: slots(max_mutating),
        }
    }

    /// The slots a request of `verb` takes from, if it is limited.
    fn pool(&self, verb: &str) -> Option<&Arc<Semaphore>> {
        if is_read_only(verb) {
            self.read_only.as_ref()
        } else {
            self.mutating.as_ref()
        }
    }
}

/// Upstream's non-mutating verbs.
fn is_read_only(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Whether a request is limited at all.
fn is_limited(info: &RequestInfo, user: Option<&User>) -> bool {
    !info.is_long_running() && !user.is_some_and(|u| u.groups.iter().any(|g| g == PRIVILEGED_GROUP))
}

/// Middleware: takes a slot for the request or refuses it with 429.
pub async fn limit(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(info) = req.extensions().get::<Arc<RequestInfo>>().cloned() else {
        return next.run(req).await;
    };
    if !is_limited(&info, req.extensions().get::<User>()) {
        return next.run(req).await;
    }
    let Some(pool) = state.in_flight.pool(&info.verb) else {
        return next.run(req).await;
    };
    match pool.clone().try_acquire_owned() {
        Ok(_slot) => next.run(req).await,
        Err(_) => {
            let mut refused = ApiError::TooManyRequests {
                message: "Too many requests, please try again later.".into(),
                retry_after_seconds: Some(1),
                causes: Vec::new(),
            }
            .into_response();
            refused.extensions_mut().insert(Terminated);
            refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_have_their_own_slots() {
        let limits = InFlightLimits::new(1, 0);
        assert!(limits.pool("list").is_some());
        assert!(limits.pool("create").is_none(), "0 is no limit");
        let permit = limits.pool("get").unwrap().clone().try_acquire_owned();
        assert!(permit.is_ok());
        assert!(
            limits
                .pool("watch")
                .unwrap()
                .clone()
                .try_acquire_owned()
                .is_err()
        );
    }

    #[test]
    fn watches_and_masters_are_not_limited() {
        let watch = RequestInfo::new(
            &axum::http::Method::GET,
            &"/api/v1/pods?watch=true".parse().unwrap(),
        );
        assert!(!is_limited(&watch, None));
        let list = RequestInfo::new(&axum::http::Method::GET, &"/api/v1/pods".parse().unwrap());
        assert!(is_limited(&list, None));
        let admin = User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(!is_limited(&list, Some(&admin)));
    }
}
