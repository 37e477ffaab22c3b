//! A certificate and key that TLS configurations hold by reference, so a
//! renewed pair takes effect on the next handshake without restarting a
//! listener or dropping a connection.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The current pair; serves as a server or client certificate resolver.
#[derive(Debug)]
pub struct ReloadableCert(RwLock<Arc<CertifiedKey>>);

impl ReloadableCert {
    /// A pair from PEM.
    pub fn from_pem(cert: &str, key: &str) -> Result<Arc<Self>> {
        Ok(Arc::new(Self(RwLock::new(certified(cert, key)?))))
    }

    /// Replaces the pair; handshakes from now on present the new one.
    pub fn replace(&self, cert: &str, key: &str) -> Result<()> {
        let new = certified(cert, key)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn certified(cert: &str, key: &str) -> Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<_, _>>()
        .context("certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_bytes())
        .context("key")?
        .context("no key")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).context("key type")?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadableCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
