//! rustls configurations around the cluster CA, shared by every listener
//! and client kelp runs (API server, kubelet API, agents, the CLI).

use std::sync::Arc;

use anyhow::{Context, Result};

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
