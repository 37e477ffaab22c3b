//! Calls to a running `kelp server` from the command line, with the admin
//! kubeconfig's credentials (server URL, cluster CA, client certificate):
//! what `kelp secrets-encrypt` uses to reach the server it administers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use http_body_util::Full;
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
    let text = |pointer: &str| -> Result<String> {
        String::from_utf8(field(pointer)?).with_context(|| format!("{pointer} is not PEM"))
    };
    let client = crate::pki::reloadable::ReloadableCert::from_pem(
        &text("/users/0/user/client-certificate-data")?,
        &text("/users/0/user/client-key-data")?,
    )?;
    let tls = crate::pki::tls::client_config(
        &text("/clusters/0/cluster/certificate-authority-data")?,
        Some(client),
    )?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .context("request")?;
    let (status, body) = crate::pki::tls::request_once(&host, port, &host, tls, request, None)
        .await
        .with_context(|| format!("calling {server}"))?;
    let status = status.as_u16();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
