//! The ingress proxy every node runs (what k3s gets from Traefik behind its
//! service load balancer): HTTP on `--ingress-http-port` and HTTPS on
//! `--ingress-https-port` of every address, routing by the Ingresses of
//! kelp's class (`routes.rs`, pure) to their Services' cluster IPs. TLS
//! certificates come from the Ingresses' Secrets by SNI, a self-signed
//! one otherwise; WebSocket and other upgrades pass through; the table is
//! swapped in whole after any change, so open connections keep going. The
//! Ingresses' status lists the Ready nodes' addresses.

pub mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use rustls::sign::CertifiedKey;

use self::routes::{Table, Target};
use crate::http::headers::{is_upgrade, strip_hop_by_hop};
use crate::runtime::{Informers, Shutdown};

/// How long connecting to a backend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The IngressClass the server creates: kelp's, the default.
pub fn ingress_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": routes::CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": routes::CONTROLLER},
    })
}

/// What the proxy serves from: the table and the certificates it names.
#[derive(Default)]
struct Snapshot {
    table: Table,
    certs: BTreeMap<(String, String), Arc<CertifiedKey>>,
}

type Shared = Arc<RwLock<Arc<Snapshot>>>;

fn current(shared: &Shared) -> Arc<Snapshot> {
    shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// A node's ingress proxy.
pub struct IngressProxy {
    /// Where plain HTTP is served.
    pub http: SocketAddr,
    /// Where HTTPS is served.
    pub https: SocketAddr,
}

/// A certificate and key from a `kubernetes.io/tls` Secret.
fn certified_key(secret: &Secret) -> Option<Arc<CertifiedKey>> {
    let data = secret.data.as_ref()?;
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut data.get("tls.crt")?.0.as_slice())
            .collect::<Result<_, _>>()
            .ok()?;
    let key = rustls_pemfile::private_key(&mut data.get("tls.key")?.0.as_slice()).ok()??;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    (!chain.is_empty()).then(|| Arc::new(CertifiedKey::new(chain, signer)))
}

/// A self-signed certificate for names no Ingress covers (as Traefik's
/// default certificate).
fn default_certificate() -> anyhow::Result<Arc<CertifiedKey>> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["kelp-ingress.default".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "KELP DEFAULT CERT");
    let cert = params.self_signed(&key)?;
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(anyhow::Error::msg)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// Picks the certificate by SNI from the current snapshot.
#[derive(Debug)]
struct Certificates {
    shared: Shared,
    fallback: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl rustls::server::ResolvesServerCert for Certificates {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = current(&self.shared);
        hello
            .server_name()
            .and_then(|name| snapshot.table.secret_for(name))
            .and_then(|secret| snapshot.certs.get(secret).cloned())
            .or_else(|| Some(self.fallback.clone()))
    }
}

impl IngressProxy {
    /// Binds both ports, then serves and follows the Ingresses until
    /// `shutdown`: reads from the node's shared caches, Secrets from
    /// `secrets` (caches that may read them), and writes Ingress status as
    /// `client`.
    pub async fn run(
        self,
        informers: Informers,
        secrets: Informers,
        client: kube::Client,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let http = tokio::net::TcpListener::bind(self.http)
            .await
            .with_context(|| format!("ingress: listening on {}", self.http))?;
        let https = tokio::net::TcpListener::bind(self.https)
            .await
            .with_context(|| format!("ingress: listening on {}", self.https))?;
        let shared: Shared = Arc::default();
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Certificates {
                shared: shared.clone(),
                fallback: default_certificate()?,
            }));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        tracing::info!(http = %self.http, https = %self.https, "ingress proxy serving");
        let serving = async {
            tokio::join!(
                accept(http, None, shared.clone()),
                accept(
                    https,
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
                    shared.clone(),
                ),
                follow(informers, secrets, client, shared.clone()),
            )
        };
        shutdown.until(serving).await;
        Ok(())
    }
}

/// Rebuilds the snapshot after every change; keeps the Ingresses' status.
async fn follow(
    informers: Informers,
    secret_cache: Informers,
    client: kube::Client,
    shared: Shared,
) {
    let (ingresses, ingress_changes) = informers.cache::<Ingress>();
    let (classes, class_changes) = informers.cache::<IngressClass>();
    let (services, service_changes) = informers.cache::<Service>();
    let (secrets, secret_changes) = secret_cache.cache::<Secret>();
    let (nodes, node_changes) = informers.cache::<Node>();
    let changes = futures::stream::select_all([
        ingress_changes,
        class_changes,
        service_changes,
        secret_changes,
        node_changes,
    ]);
    let mut passes = crate::runtime::passes(
        changes.boxed(),
        Duration::from_secs(30),
        Duration::from_millis(20),
    );
    while passes.next().await.is_some() {
        // A table (and status) from half-filled caches would be wrong.
        let filled = informers.informer::<Ingress>().filled()
            && informers.informer::<IngressClass>().filled()
            && informers.informer::<Service>().filled()
            && secret_cache.informer::<Secret>().filled()
            && informers.informer::<Node>().filled();
        if !filled {
            continue;
        }
        let all: Vec<Ingress> = ingresses.state().iter().map(|i| (**i).clone()).collect();
        let class_list: Vec<IngressClass> = classes.state().iter().map(|c| (**c).clone()).collect();
        let service_list: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let table = Table::build(&all, &class_list, &service_list);
        let mut certs = BTreeMap::new();
        for (namespace, name) in table.tls.values() {
            let key = (namespace.clone(), name.clone());
            if certs.contains_key(&key) {
                continue;
            }
            let secret =
                secrets.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace));
            if let Some(cert) = secret.as_deref().and_then(certified_key) {
                certs.insert(key, cert);
            }
        }
        *shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Snapshot { table, certs });
        // Status: the Ready nodes' addresses on each of kelp's Ingresses.
        let addresses = crate::api::values::nodes::ready_addresses(&nodes.state());
        let wanted = IngressLoadBalancerStatus {
            ingress: Some(
                addresses
                    .iter()
                    .map(|ip| IngressLoadBalancerIngress {
                        ip: Some(ip.clone()),
                        ..Default::default()
                    })
                    .collect(),
            )
            .filter(|v: &Vec<_>| !v.is_empty()),
        };
        for ingress in all.iter().filter(|i| routes::is_ours(i, &class_list)) {
            let current = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.clone())
                .unwrap_or_default();
            if current == wanted {
                continue;
            }
            let mut updated = ingress.clone();
            updated.status = Some(IngressStatus {
                load_balancer: Some(wanted.clone()),
            });
            let api: Api<Ingress> =
                Api::namespaced(client.clone(), &ingress.namespace().unwrap_or_default());
            if let Err(e) = api
                .replace_status(&ingress.name_any(), &PostParams::default(), &updated)
                .await
            {
                tracing::debug!(err = %e, ingress = %ingress.name_any(), "ingress status");
            }
        }
    }
}

/// Accepts connections (TLS when `tls`), one hyper connection each.
async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Shared,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (tls, shared) = (tls.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let scheme = if tls.is_some() { "https" } else { "http" };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(handle(&shared, req, scheme, peer).await)
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(err = %e, peer = %peer, "ingress TLS handshake");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(err = %e, peer = %peer, "ingress connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Routes one request and relays it.
async fn handle(
    shared: &Shared,
    req: hyper::Request<hyper::body::Incoming>,
    scheme: &str,
    peer: SocketAddr,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_string();
    let name = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(h, _)| h)
        .trim_end_matches('.');
    let target = current(shared).table.route(name, req.uri().path()).cloned();
    match target {
        None => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
        Some(Target::Unavailable(why)) => {
            tracing::debug!(host = %host, reason = %why, "ingress backend unavailable");
            plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
        }
        Some(Target::Address(address)) => match forward(req, address, &host, scheme, peer).await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(backend = %address, err = %e, "ingress backend");
                plain(StatusCode::BAD_GATEWAY, "Bad Gateway\n")
            }
        },
    }
}

type Backends = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    hyper::body::Incoming,
>;

/// The process's pool of backend connections (keep-alive, idle 90 s).
fn backends() -> &'static Backends {
    static POOL: std::sync::OnceLock<Backends> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// Relays the request to `address` with the X-Forwarded headers (over a
/// pooled connection); an upgrade gets a connection of its own and is
/// spliced once both sides switched.
async fn forward(
    mut req: hyper::Request<hyper::body::Incoming>,
    address: SocketAddr,
    host: &str,
    scheme: &str,
    peer: SocketAddr,
) -> anyhow::Result<Response<Body>> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (true, Some(protocol)) = (upgrade, upgrade_to) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for),
        ("x-forwarded-proto", scheme.to_string()),
        ("x-forwarded-host", host.to_string()),
        ("x-real-ip", peer.ip().to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.version = hyper::Version::HTTP_11;
    let mut response = if upgrade {
        // A connection of its own, kept for the upgraded protocol.
        parts.uri = path.parse()?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await??;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        sender
            .send_request(hyper::Request::from_parts(parts, body))
            .await?
    } else {
        // Pooled keep-alive connections to the backends.
        parts.uri = format!("http://{address}{path}").parse()?;
        backends()
            .request(hyper::Request::from_parts(parts, body))
            .await?
    };
    if let Some(client) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let mut reply = Response::new(Body::empty());
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *reply.headers_mut() = response.headers().clone();
        crate::http::upgrade::relay(hyper::upgrade::on(&mut response), client);
        return Ok(reply);
    }
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(incoming)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers `GET /` with "plain" and switches an
    /// `Upgrade: echo` request to a byte echo.
    async fn backend() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut response = Response::new(Body::from(format!(
                            "plain host={} xff={}",
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or(""),
                            req.headers().contains_key("x-forwarded-for")
                        )));
                        if req.headers().get("upgrade").is_some() {
                            let upgraded = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(upgraded.await.unwrap());
                                let mut buf = [0u8; 64];
                                let n = io.read(&mut buf).await.unwrap();
                                io.write_all(&buf[..n]).await.unwrap();
                            });
                            response = Response::new(Body::empty());
                            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            response
                                .headers_mut()
                                .insert("connection", HeaderValue::from_static("upgrade"));
                            response
                                .headers_mut()
                                .insert("upgrade", HeaderValue::from_static("echo"));
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades(),
                );
            }
        });
        address
    }

    #[tokio::test]
    async fn requests_keep_their_host_and_upgrades_pass_through() {
        let backend = backend().await;
        let ingress: Ingress = serde_json::from_value(json!({"metadata": {"name": "ws", "namespace": "default"},
            "spec": {"ingressClassName": routes::CLASS, "rules": [{"host": "ws.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "echo", "port": {"number": backend.port()}}}}]}}]}}))
        .unwrap();
        let service: Service =
            serde_json::from_value(json!({"metadata": {"name": "echo", "namespace": "default"},
            "spec": {"clusterIP": "127.0.0.1", "ports": [{"port": backend.port()}]}}))
            .unwrap();
        let class: IngressClass = serde_json::from_value(ingress_class()).unwrap();
        let shared: Shared = Arc::new(RwLock::new(Arc::new(Snapshot {
            table: Table::build(&[ingress], &[class], &[service]),
            certs: BTreeMap::new(),
        })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        tokio::spawn(accept(listener, None, shared));

        // Two requests on one client connection (keep-alive), Host kept.
        let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        for _ in 0..2 {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: ws.test\r\n\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 1024];
            let n = client.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.ends_with("plain host=ws.test xff=true"), "{text}");
        }
        // An upgrade: 101, then bytes both ways.
        let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        client.write_all(b"hello").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        // No route: 404.
        let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
            .await
            .unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    }
}
