//! In-process API clients: a kube-rs [`kube::Client`] whose transport is the
//! server's own router, so built-in components go through the same
//! authentication, admission and storage path as kubectl, without TCP or TLS.

use std::sync::Arc;

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
        let mut req = req.map(axum::body::Body::new);
        let info = RequestInfo::new(req.method(), req.uri());
        let acting = match info.verb.as_str() {
            "list" | "watch" => reader.clone(),
            _ => user.clone(),
        };
        req.extensions_mut().insert(ConnectionIdentity(acting));
        router.clone().oneshot(req)
    });
    kube::Client::new(service, "default")
}
