//! kube-rs clients to a remote API server over HTTPS (rustls with ring,
//! trusting only the cluster CA): as a bootstrap token before the node has
//! credentials, with a client certificate after.

use std::sync::Arc;

use anyhow::{Context, Result};
use http::HeaderValue;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::middleware::BaseUriLayer;
use tower::ServiceBuilder;

use crate::pki::reloadable::ReloadableCert;

/// Who the client is.
pub enum Identity {
    /// A bearer token (a bootstrap token while joining).
    Token(String),
    /// A client certificate, renewed in place.
    Certificate(Arc<ReloadableCert>),
}

/// A client for `server` (`https://HOST:PORT`) trusting `ca_pem`.
pub fn remote(server: &str, ca_pem: &str, identity: Identity) -> Result<kube::Client> {
    let base: http::Uri = server
        .parse()
        .with_context(|| format!("the server URL {server:?}"))?;
    let (tls, token) = match identity {
        Identity::Token(token) => (crate::pki::tls::client_config(ca_pem, None)?, Some(token)),
        Identity::Certificate(cert) => (crate::pki::tls::client_config(ca_pem, Some(cert))?, None),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let http_client = HttpClient::builder(TokioExecutor::new()).build(https);
    let authorization = token
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()
        .context("the token is not a valid header value")?;
    let service = ServiceBuilder::new()
        .layer(BaseUriLayer::new(base))
        .map_request(move |mut req: http::Request<kube::client::Body>| {
            if let Some(value) = &authorization {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, value.clone());
            }
            req
        })
        .service(http_client);
    Ok(kube::Client::new(service, "default"))
}
