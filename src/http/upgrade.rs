//! Relaying an upgraded HTTP/1.1 connection (WebSocket, SPDY) to a backend:
//! the handshake headers pass through, then bytes flow both ways. Used by
//! the API server towards kubelets and by the kubelet towards containerd's
//! streaming server.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

/// Headers of an upgrade handshake, passed between client and backend.
pub const HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// A request to the backend carrying the client's handshake headers.
pub fn backend_request(
    method: axum::http::Method,
    uri: &str,
    client_headers: &HeaderMap,
) -> Result<hyper::Request<http_body_util::Empty<bytes::Bytes>>, axum::http::Error> {
    let mut request = hyper::Request::builder().method(method).uri(uri);
    for name in HEADERS {
        for value in client_headers.get_all(*name) {
            request = request.header(*name, value);
        }
    }
    request.body(http_body_util::Empty::new())
}

/// Answers the client with the backend's 101 and splices the two upgraded
/// connections once both are ready.
pub fn splice(
    backend: &mut hyper::Response<hyper::body::Incoming>,
    client: hyper::upgrade::OnUpgrade,
) -> Result<Response, axum::http::Error> {
    let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in HEADERS {
        for value in backend.headers().get_all(*name) {
            reply = reply.header(*name, value);
        }
    }
    relay(hyper::upgrade::on(backend), client);
    reply.body(Body::empty())
}

/// Once both sides have switched protocols, copies bytes both ways until
/// either closes (in a task of its own: the 101 must reach the client first).
pub fn relay(backend: hyper::upgrade::OnUpgrade, client: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client.await, backend.await) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
}
