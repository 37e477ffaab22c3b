//! rustls configurations around the cluster CA, shared by every listener
//! and client kelp runs (API server, kubelet API, agents, the CLI).

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(ca.context("CA certificate")?)
            .context("adding CA")?;
    }
    Ok(roots)
}

/// A listener's settings: presents `serving` (whatever it holds at each
/// handshake, so renewal swaps it) and verifies client certificates
/// against the CA when clients offer one.
pub fn server_config(
    ca_pem: &str,
    serving: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("client verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's settings: trusts the CA only, and presents `identity` (a
/// client certificate) when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots(ca_pem)?);
    Ok(Arc::new(match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    }))
}

/// A client that checks no server certificate, only the handshake's
/// signatures: for the API server's proxy to `https:` services and pods
/// (as upstream's), and for a joining node's first `/cacerts`, whose
/// answer it checks against the token's hash before trusting anything.
pub fn unverified_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate, checking only the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends one request over a fresh TLS connection to `host:port` (connected
/// within `connect_timeout`, if one is given), checking the certificate for
/// `server_name`, and returns the answer's status and body: the command
/// line's and a joining node's calls before they have a kube client, and
/// the API server's calls to admission webhooks.
pub async fn request_once(
    host: &str,
    port: u16,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    request: http::Request<Full<bytes::Bytes>>,
    connect_timeout: Option<std::time::Duration>,
) -> Result<(http::StatusCode, bytes::Bytes)> {
    let connect = tokio::net::TcpStream::connect((host, port));
    let tcp = match connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .context("connecting timed out")?,
        None => connect.await,
    }
    .with_context(|| format!("connecting to {host}:{port}"))?;
    let name =
        rustls_pki_types::ServerName::try_from(server_name.to_string()).context("server name")?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the response")?
        .to_bytes();
    Ok((status, body))
}
