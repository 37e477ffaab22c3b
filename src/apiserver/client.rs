//! In-process API clients: a kube-rs [`kube::Client`] whose transport is the
//! server's own router, so built-in components go through the same
//! authentication, admission and storage path as kubectl, without TCP or TLS.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tower::ServiceExt;

use super::authn::{ConnectionIdentity, User};
use super::request::RequestInfo;
use super::{ApiState, router};

/// A client acting as `user` against the API served by `state`.
pub fn in_process(state: Arc<ApiState>, user: User) -> kube::Client {
    in_process_with_reader(state, user.clone(), user)
}

/// A client that lists and watches as `reader` and does everything else as
/// `user`: upstream's controller-manager runs its shared informers as
/// itself and each controller's own requests as the controller's service
/// account, so each holds exactly its upstream rights.
pub fn in_process_with_reader(state: Arc<ApiState>, user: User, reader: User) -> kube::Client {
    let router = router(state);
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let router = router.clone();
        let info = RequestInfo::new(req.method(), req.uri());
        let acting = match info.verb.as_str() {
            "list" | "watch" => reader.clone(),
            _ => user.clone(),
        };
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            let mut attempt = 0;
            loop {
                let mut req = http::Request::builder()
                    .method(parts.method.clone())
                    .uri(parts.uri.clone())
                    .version(parts.version)
                    .body(axum::body::Body::from(body.clone()))?;
                *req.headers_mut() = parts.headers.clone();
                req.extensions_mut()
                    .insert(ConnectionIdentity(acting.clone()));
                let response = router.clone().oneshot(req).await?;
                attempt += 1;
                match retry_after(&response) {
                    Some(wait) if attempt < MAX_ATTEMPTS => tokio::time::sleep(wait).await,
                    _ => return Ok::<_, tower::BoxError>(response),
                }
            }
        }
    });
    kube::Client::new(service, "default")
}

/// client-go's attempts at a request the server asks to retry.
const MAX_ATTEMPTS: u32 = 10;

/// How long to wait before retrying, when the answer asks for a retry as
/// client-go understands it: 429 with `Retry-After` seconds.
fn retry_after(response: &http::Response<axum::body::Body>) -> Option<Duration> {
    if response.status() != http::StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let seconds: u64 = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_with_retry_after_is_retried() {
        let answer = |code: u16, header: Option<&str>| {
            let mut r = http::Response::builder().status(code);
            if let Some(h) = header {
                r = r.header("retry-after", h);
            }
            r.body(axum::body::Body::empty()).unwrap()
        };
        assert_eq!(
            retry_after(&answer(429, Some("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(&answer(429, None)), None);
        assert_eq!(retry_after(&answer(503, Some("1"))), None);
        assert_eq!(retry_after(&answer(200, Some("1"))), None);
    }
}
