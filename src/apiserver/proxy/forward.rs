//! Relaying one request to a proxy backend and its answer back: a fresh
//! HTTP/1.1 connection (TCP, or TLS), the body streamed both ways, hop-by-hop
//! and credential headers dropped, redirects rewritten to lead back through
//! the proxy, and WebSocket/SPDY upgrades spliced (upstream's
//! `UpgradeAwareHandler` with its rewriting transport).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Version};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::location::{forwarded_uri, rewrite_location};
use super::resolve::{Target, Transport};
use crate::api::ApiError;
use crate::apiserver::ApiState;
pub(super) use crate::http::headers::is_upgrade;
use crate::http::headers::strip_hop_by_hop;

/// How long connecting (and the TLS handshake) to a backend may take: a
/// backend that is gone must not hold the request until the client gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Service endpoints tried before giving up: a pod that just went away
/// (its slice not yet updated) costs one retry, not the request.
const MAX_ATTEMPTS: usize = 3;

/// CORS answers belong to the API server, not to what it proxies (upstream
/// strips them from backend responses).
const CORS: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
];

/// What is relayed: the client's request, the proxy prefix its path had and
/// the path to ask the backend for.
pub struct Exchange {
    /// Method, URI, headers and extensions (the connection upgrade) of the request.
    pub parts: Parts,
    /// The request body, streamed to the backend.
    pub body: Body,
    /// The request path up to and including `/proxy`.
    pub prefix: String,
    /// The backend path (`/` at least).
    pub path: String,
}

/// Sends the exchange to the first of `targets` that accepts a connection
/// and streams the answer back. An unreachable backend is a 503
/// ServiceUnavailable, `error trying to reach service: …` as upstream.
pub async fn forward(
    state: &ApiState,
    targets: &[Target],
    mut exchange: Exchange,
) -> Result<Response, ApiError> {
    let upgrade = is_upgrade(&exchange.parts.headers);
    let client_upgrade = match upgrade {
        true => Some(
            exchange
                .parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))?,
        ),
        false => None,
    };
    let (target, io) = connect_any(state, targets).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(unreachable)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(err = %e, "proxy backend connection ended");
        }
    });

    let peer = exchange
        .parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let headers = request_headers(
        &exchange.parts.headers,
        &target.authority(),
        &forwarded_uri(&exchange.prefix, &exchange.path),
        peer,
        upgrade,
    );
    let uri = match exchange.parts.uri.query() {
        Some(query) => format!("{}?{query}", exchange.path),
        None => exchange.path.clone(),
    };
    let body = if upgrade {
        // What follows an upgrade request is the new protocol, relayed below.
        Body::empty()
    } else {
        exchange.body
    };
    let mut request = hyper::Request::builder()
        .method(exchange.parts.method.clone())
        .uri(&uri)
        .version(Version::HTTP_11)
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("invalid proxy request: {e}")))?;
    *request.headers_mut() = headers;
    crate::telemetry::traces::propagate(request.headers_mut());
    let mut response = sender.send_request(request).await.map_err(unreachable)?;

    if let Some(client) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let mut reply = Response::new(Body::empty());
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *reply.headers_mut() = response.headers().clone();
        crate::http::upgrade::relay(hyper::upgrade::on(&mut response), client);
        return Ok(reply);
    }
    let request_host = exchange
        .parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| exchange.parts.uri.authority().map(|a| a.as_str()));
    let headers = response_headers(response.headers(), |location| {
        rewrite_location(
            location,
            &target.authority(),
            target.default_port(),
            request_host,
            &exchange.prefix,
        )
    });
    let (parts, incoming) = response.into_parts();
    let mut reply = Response::new(Body::new(incoming));
    *reply.status_mut() = parts.status;
    *reply.headers_mut() = headers;
    Ok(reply)
}

/// The headers sent to the backend: the client's, less hop-by-hop ones and
/// the credentials the API server consumed (Authorization, impersonation),
/// with Host naming the backend and upstream's X-Forwarded-Uri/-For.
fn request_headers(
    client: &HeaderMap,
    authority: &str,
    forwarded_uri: &str,
    peer: Option<IpAddr>,
    upgrade: bool,
) -> HeaderMap {
    let mut headers = client.clone();
    let upgrade_to = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    // Our server already answered `Expect: 100-continue` when the body was
    // first read; the backend gets the body without waiting for its own 100.
    headers.remove(header::EXPECT);
    let impersonation: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
    if upgrade && let Some(protocol) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, host);
    }
    if let Ok(uri) = HeaderValue::from_str(forwarded_uri) {
        headers.insert("x-forwarded-uri", uri);
    }
    if let Some(ip) = peer {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }
    headers
}

/// The backend's response headers as relayed: no hop-by-hop or CORS headers,
/// Location rewritten by `rewrite`.
fn response_headers(backend: &HeaderMap, rewrite: impl Fn(&str) -> String) -> HeaderMap {
    let mut headers = backend.clone();
    strip_hop_by_hop(&mut headers);
    for name in CORS {
        headers.remove(*name);
    }
    if let Some(location) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok())
        && let Ok(value) = HeaderValue::from_str(&rewrite(location))
    {
        headers.insert(header::LOCATION, value);
    }
    headers
}

/// 503 for a backend that cannot be reached or broke off.
fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError::ServiceUnavailable(format!("error trying to reach service: {e}"))
}

/// A connection to a backend: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to the first of (at most [`MAX_ATTEMPTS`] of) `targets` that answers.
async fn connect_any<'a>(
    state: &ApiState,
    targets: &'a [Target],
) -> Result<(&'a Target, Box<dyn Io>), ApiError> {
    let mut last = String::from("no backend");
    for target in targets.iter().take(MAX_ATTEMPTS) {
        match connect(state, target).await {
            Ok(io) => return Ok((target, io)),
            Err(e) => {
                tracing::debug!(backend = %target.authority(), err = %e, "proxy backend unreachable");
                last = e;
            }
        }
    }
    Err(unreachable(last))
}

/// One connection, TLS as the target needs, within [`CONNECT_TIMEOUT`].
async fn connect(state: &ApiState, target: &Target) -> Result<Box<dyn Io>, String> {
    let authority = target.authority();
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("dial tcp {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = match target.transport {
            Transport::Http => return Ok(Box::new(tcp) as Box<dyn Io>),
            // Certificates are not verified (see Transport::HttpsInsecure), signatures are.
            Transport::HttpsInsecure => crate::pki::tls::unverified_client_config(),
            Transport::Kubelet => state
                .kubelet_tls
                .clone()
                .ok_or("this server does not reach kubelets")?,
        };
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{authority}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {authority}: {e}"))?;
        Ok(Box::new(stream) as Box<dyn Io>)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("dial tcp {authority}: i/o timeout"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_backend_gets_no_credentials_or_hop_by_hop_headers() {
        let client = map(&[
            ("host", "127.0.0.1:6443"),
            ("authorization", "Bearer secret"),
            ("expect", "100-continue"),
            ("impersonate-user", "root"),
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("accept", "text/html"),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        let peer = Some("127.0.0.1".parse().unwrap());
        let out = request_headers(&client, "10.42.0.5:80", "/p/x", peer, false);
        assert_eq!(out.get("host").unwrap(), "10.42.0.5:80");
        assert_eq!(out.get("accept").unwrap(), "text/html");
        assert_eq!(out.get("x-forwarded-uri").unwrap(), "/p/x");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "192.0.2.1, 127.0.0.1");
        for gone in [
            "authorization",
            "expect",
            "impersonate-user",
            "connection",
            "x-trace",
            "keep-alive",
            "transfer-encoding",
        ] {
            assert!(!out.contains_key(gone), "{gone} was relayed");
        }
    }

    #[test]
    fn upgrades_keep_their_handshake() {
        let client = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(is_upgrade(&client));
        let out = request_headers(&client, "10.42.0.5:80", "/", None, true);
        assert_eq!(out.get("connection").unwrap(), "Upgrade");
        assert_eq!(out.get("upgrade").unwrap(), "websocket");
        assert_eq!(out.get("sec-websocket-key").unwrap(), "abc");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&map(&[("connection", "keep-alive")])));
    }

    #[test]
    fn responses_lose_cors_and_have_redirects_rewritten() {
        let backend = map(&[
            ("location", "/login"),
            ("access-control-allow-origin", "*"),
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
        ]);
        let out = response_headers(&backend, |l| format!("/proxy{l}"));
        assert_eq!(out.get("location").unwrap(), "/proxy/login");
        assert_eq!(out.get("content-type").unwrap(), "text/plain");
        assert!(!out.contains_key("access-control-allow-origin"));
        assert!(!out.contains_key("transfer-encoding"));
    }
}
