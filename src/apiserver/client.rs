//! In-process API clients: a kube-rs [`kube::Client`] whose transport is the
//! server's own router, so built-in components go through the same
//! authentication, admission and storage path as kubectl, without TCP or TLS.

use std::sync::Arc;

use tower::ServiceExt;

use super::authn::{ConnectionIdentity, User};
use super::{ApiState, router};

/// A client acting as `user` against the API served by `state`.
pub fn in_process(state: Arc<ApiState>, user: User) -> kube::Client {
    let router = router(state);
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(ConnectionIdentity(user.clone()));
        router.clone().oneshot(req)
    });
    kube::Client::new(service, "default")
}
