//! Helpers shared by the benchmarks: an HTTPS client with the admin
//! certificate, resident memory and CPU time of a process, percentiles.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::common::Server;

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds a process has used (user + system).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, 11)
}

/// CPU seconds used by the children a process has waited for (user +
/// system): the commands it runs (iptables, mount, …) are its work too.
pub fn children_cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, 13)
}

/// The sum of two consecutive tick fields of `/proc/PID/stat`, counted
/// from the field after the command, in seconds.
fn stat_seconds(pid: u32, first: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // /proc reports in USER_HZ, 100 on Linux whatever the kernel's HZ.
    (field(first) + field(first + 1)) as f64 / 100.0
}

/// One keep-alive HTTPS/1.1 connection authenticated with the admin certificate.
pub struct Client {
    /// The connection (for requests that stream, like watches).
    pub sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(tls: &TlsConnector, port: u16) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let stream = tls
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (u16, Bytes) {
        self.request_with(method, path, body, None).await
    }

    /// A request with a bearer token (on a connection without a client certificate).
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        bearer: Option<&str>,
    ) -> (u16, Bytes) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(req).await.expect("send");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    }
}

/// TLS that trusts the cluster CA and presents no client certificate
/// (callers authenticate with bearer tokens).
pub fn tls_connector_without_certificate(server: &Server) -> TlsConnector {
    let (ca, _, _) = server.admin_credentials();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(ca.expect("ca")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// TLS with the admin client certificate of `server`.
pub fn tls_connector(server: &Server) -> TlsConnector {
    let (ca, cert, key) = server.admin_credentials();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(ca.expect("ca")).expect("root");
    }
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<_, _>>()
        .expect("cert");
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_slice())
        .expect("key")
        .expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    TlsConnector::from(Arc::new(config))
}

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Milliseconds, three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
