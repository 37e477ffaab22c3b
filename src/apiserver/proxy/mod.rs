//! The proxy subresources `services/proxy`, `pods/proxy` and `nodes/proxy`:
//! `…/{name}/proxy/{path}` is relayed, any method, body and answer
//! streamed, upgrades spliced, to a ready endpoint of the Service, to the
//! pod's IP, or to the node's kubelet. `location.rs` parses paths and
//! rewrites redirects, `resolve.rs` finds the backend, `forward.rs` relays.

mod forward;
mod location;
pub mod resolve;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use location::ProxyPath;

use super::ApiState;
use crate::api::ApiError;
use crate::api::registry::resources::Subresource;

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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::apiserver::authn;
    use crate::apiserver::tests::{app_with_default_namespace, call};

    /// A backend that answers with what it was sent; `/redirect` redirects,
    /// `/ws` echoes WebSocket text messages.
    async fn echo_backend() -> u16 {
        let app = Router::new()
            .route(
                "/ws",
                axum::routing::get(|ws: axum::extract::ws::WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move {
                        while let Some(Ok(message)) = socket.recv().await {
                            if matches!(message, axum::extract::ws::Message::Text(_))
                                && socket.send(message).await.is_err()
                            {
                                return;
                            }
                        }
                    })
                }),
            )
            .route(
                "/redirect",
                axum::routing::get(|| async {
                    (StatusCode::FOUND, [("location", "/elsewhere")], "")
                }),
            )
            .fallback(
                |method: axum::http::Method,
                 uri: axum::http::Uri,
                 headers: HeaderMap,
                 body: String| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    (
                        [("access-control-allow-origin", "*")],
                        format!(
                            "{method} {uri} host={} auth={} xfu={} body={body}",
                            header("host"),
                            header("authorization"),
                            header("x-forwarded-uri"),
                        ),
                    )
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port")
    }

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer not-for-the-backend")
            .body(Body::from(body.to_string()))
            .expect("request");
        req.extensions_mut()
            .insert(authn::ConnectionIdentity(authn::User {
                name: "admin".into(),
                groups: vec!["system:masters".into()],
            }));
        let response = app.clone().oneshot(req).await.expect("response");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// A Service `name` (ports `http` 80 and `alt` 8080) whose one
    /// endpoint is 127.0.0.1:`port`, or with no EndpointSlice at all.
    async fn service(app: &Router, name: &str, port: Option<u16>) {
        let svc = json!({"metadata": {"name": name}, "spec": {"ports": [
            {"name": "http", "port": 80}, {"name": "alt", "port": 8080}]}});
        let (status, body) = call(
            app,
            "POST",
            "/api/v1/namespaces/default/services",
            Some(svc),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let Some(port) = port else { return };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-abc"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}, {"name": "alt", "port": port, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["127.0.0.2"], "conditions": {"ready": false}},
            ]
        });
        let (status, body) = call(
            app,
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            Some(slice),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn services_proxy_relays_to_a_ready_endpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with_default_namespace(dir.path()).await;
        let port = echo_backend().await;
        service(&app, "web", Some(port)).await;
        service(&app, "idle", None).await;
        service(&app, "gone", Some(closed_port())).await;
        let base = "/api/v1/namespaces/default/services";

        // Path, query, method and body pass through; credentials do not.
        for id in ["web:80", "web:http", "http:web:8080", "web:alt"] {
            let (status, headers, body) = send(
                &app,
                "GET",
                &format!("{base}/{id}/proxy/a/b/?x=1&y=%20"),
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{id}: {body}");
            assert_eq!(
                body,
                format!(
                    "GET /a/b/?x=1&y=%20 host=127.0.0.1:{port} auth=- xfu={base}/{id}/proxy/a/b/ body="
                ),
                "{id}"
            );
            assert!(!headers.contains_key("access-control-allow-origin"));
        }
        let (status, _, body) = send(
            &app,
            "POST",
            &format!("{base}/web:http/proxy/submit"),
            "hello",
        )
        .await;
        assert_eq!(
            (status, body.ends_with("body=hello")),
            (StatusCode::OK, true),
            "{body}"
        );
        let (_, _, body) = send(&app, "DELETE", &format!("{base}/web:80/proxy"), "").await;
        assert!(body.starts_with("DELETE / "), "{body}");

        // `/proxy` alone redirects to `/proxy/`; backend redirects come back through the proxy.
        let (status, headers, _) = send(&app, "GET", &format!("{base}/web:80/proxy?q=1"), "").await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(headers["location"], format!("{base}/web:80/proxy/?q=1"));
        let (status, headers, _) =
            send(&app, "GET", &format!("{base}/web:80/proxy/redirect"), "").await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(
            headers["location"],
            format!("{base}/web:80/proxy/elsewhere")
        );

        // Errors are Statuses with upstream's wording.
        let status_of = |body: &str| -> (i64, String) {
            let v: serde_json::Value = serde_json::from_str(body).expect("status json");
            (
                v["code"].as_i64().unwrap_or(0),
                v["message"].as_str().unwrap_or("").to_string(),
            )
        };
        let cases = [
            ("nope:80", 404, "services \"nope\" not found".to_string()),
            (
                "idle:80",
                503,
                "no endpoints available for service \"idle\"".to_string(),
            ),
            (
                "web:81",
                503,
                "no service port 81 found for service \"web\"".to_string(),
            ),
            (
                "web",
                503,
                "no endpoints available for service \"web\"".to_string(),
            ),
            (
                "web:metrics",
                503,
                "no endpoints available for service \"web\"".to_string(),
            ),
            (
                "ftp:web:80",
                400,
                "invalid service request \"ftp:web:80\"".to_string(),
            ),
        ];
        for (id, code, message) in cases {
            let (status, _, body) = send(&app, "GET", &format!("{base}/{id}/proxy/"), "").await;
            assert_eq!(status.as_u16() as i64, code, "{id}: {body}");
            assert_eq!(status_of(&body), (code, message), "{id}");
        }
        let (status, _, body) = send(&app, "GET", &format!("{base}/gone:80/proxy/"), "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            status_of(&body)
                .1
                .starts_with("error trying to reach service: dial tcp 127.0.0.1:"),
            "{body}"
        );
        let (status, _, _) = send(&app, "TRACE", &format!("{base}/web/proxy/"), "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pods_and_nodes_proxy_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with_default_namespace(dir.path()).await;
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let (status, _) = call(&app, "POST", "/api/v1/namespaces/default/pods", Some(pod)).await;
        assert_eq!(status, StatusCode::CREATED);
        let cases = [
            (
                "/api/v1/namespaces/default/pods/p/proxy/",
                400,
                "address not allowed",
            ),
            (
                "/api/v1/namespaces/default/pods/q/proxy/",
                404,
                "pods \"q\" not found",
            ),
            (
                "/api/v1/namespaces/default/pods/p:http/proxy/",
                400,
                "invalid port \"http\": no container port of that name",
            ),
            (
                "/api/v1/nodes/n1/proxy/healthz",
                404,
                "nodes \"n1\" not found",
            ),
            (
                "/api/v1/nodes/a:b:c:d/proxy/healthz",
                400,
                "invalid node request \"a:b:c:d\"",
            ),
        ];
        for (uri, code, message) in cases {
            let (status, _, body) = send(&app, "GET", uri, "").await;
            let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
            assert_eq!(
                (status.as_u16(), v["message"].as_str().unwrap_or("")),
                (code, message),
                "{uri}"
            );
        }
    }

    /// Serves `app` over plain HTTP/1.1 with upgrades, every connection the
    /// admin's (the TLS listener's job, which this test does not need).
    async fn serve_plain(app: Router) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut()
                                .insert(authn::ConnectionIdentity(authn::User {
                                    name: "admin".into(),
                                    groups: vec!["system:masters".into()],
                                }));
                            app.clone().oneshot(req.map(Body::new))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn websocket_upgrades_are_spliced_to_the_backend() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with_default_namespace(dir.path()).await;
        service(&app, "web", Some(echo_backend().await)).await;
        let api = serve_plain(app).await;

        let exchange = async {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", api))
                .await
                .expect("connect");
            // RFC 6455's sample key, whose accept value is known.
            let handshake = "GET /api/v1/namespaces/default/services/web:80/proxy/ws HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
            tcp.write_all(handshake.as_bytes()).await.expect("write");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(tcp.read_u8().await.expect("read head"));
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 101"), "{head}");
            assert!(
                head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
                "{head}"
            );
            // A masked text frame "hi" out, the unmasked echo back.
            let mask = [7u8, 1, 2, 3];
            let mut frame = vec![0x81, 0x82];
            frame.extend(mask);
            frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            tcp.write_all(&frame).await.expect("write frame");
            let mut echo = [0u8; 4];
            tcp.read_exact(&mut echo).await.expect("read frame");
            assert_eq!(echo, [0x81, 0x02, b'h', b'i']);
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .expect("the WebSocket exchange timed out");
    }
}
