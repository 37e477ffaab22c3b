//! Calls to a running `kelp server` from the command line, with the admin
//! kubeconfig's credentials (server URL, cluster CA, client certificate):
//! what `kelp secrets-encrypt` uses to reach the server it administers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// Where the server writes the admin kubeconfig: `--write-kubeconfig`'s
/// environment variable, else the config files, else the default.
pub fn admin_kubeconfig() -> PathBuf {
    std::env::var("KELP_WRITE_KUBECONFIG")
        .ok()
        .or_else(|| super::config::server_setting("write-kubeconfig"))
        .unwrap_or_else(|| "/etc/kelp/kelp.yaml".into())
        .into()
}

/// Sends `method path` (with a JSON `body`) to the server `kubeconfig`
/// names; returns the status code and body.
pub async fn call(
    kubeconfig: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config: Value = serde_yaml_ng::from_str(&text).context("parsing the kubeconfig")?;
    let field = |pointer: &str| -> Result<Vec<u8>> {
        let b64 = config
            .pointer(pointer)
            .and_then(Value::as_str)
            .with_context(|| format!("the kubeconfig has no {pointer}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .with_context(|| format!("decoding {pointer}"))
    };
    let server = config
        .pointer("/clusters/0/cluster/server")
        .and_then(Value::as_str)
        .context("the kubeconfig names no server")?;
    let authority = server
        .strip_prefix("https://")
        .context("the server is not https")?
        .trim_end_matches('/');
    let (host, port) = authority
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap_or(443)))
        .unwrap_or((authority.to_string(), 443));
    let tls = client_tls(
        &field("/clusters/0/cluster/certificate-authority-data")?,
        &field("/users/0/user/client-certificate-data")?,
        &field("/users/0/user/client-key-data")?,
    )?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let name = rustls_pki_types::ServerName::try_from(host.clone()).context("server name")?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .context("request")?;
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("response")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn client_tls(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &ca[..]) {
        roots
            .add(ca.context("CA certificate")?)
            .context("adding CA")?;
    }
    let certs = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<Vec<_>, _>>()
        .context("client certificate")?;
    let key = rustls_pemfile::private_key(&mut &key[..])
        .context("client key")?
        .context("no client key")?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("client certificate")?;
    Ok(Arc::new(config))
}
