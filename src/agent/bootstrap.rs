//! Joining: pin the cluster CA from the token's hash, prove the node
//! password, and get the node's certificates through
//! CertificateSigningRequests (upstream's kubelet TLS bootstrap). Every
//! credential is kept under `<data-dir>/agent/` and reused while valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use http_body_util::Full;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::http::client::{self, Identity};
use crate::pki::bootstrap_token::{JoinToken, ca_hash};
use crate::pki::csr;
use crate::pki::write_file_mode;

/// The server said no (a wrong token, another node's name, a denied
/// request): trying again will not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether an error is a [`Refused`].
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refused>())
}

/// Runs `attempt` until it succeeds or is refused, backing off up to 30 s
/// (a server restarting or a network cut must not end the agent).
pub async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(err = %format!("{e:#}"), "{what}; retrying in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The files of a node's credentials.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    dir: PathBuf,
}

impl CredentialFiles {
    /// Under `<data-dir>/agent/`.
    pub fn new(data_dir: &Path) -> Self {
        CredentialFiles {
            dir: data_dir.join("agent"),
        }
    }

    /// The pinned cluster CA.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("server-ca.crt")
    }

    /// The node password (k3s keeps it in /etc/rancher/node/password).
    pub fn node_password(&self) -> PathBuf {
        self.dir.join("node-password")
    }

    fn pair(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        )
    }

    /// A stored certificate and key, if both are there.
    pub fn load(&self, stem: &str) -> Option<(String, String)> {
        let (cert, key) = self.pair(stem);
        Some((
            std::fs::read_to_string(cert).ok()?,
            std::fs::read_to_string(key).ok()?,
        ))
    }

    /// Stores a certificate and key (the key readable by root only).
    pub fn store(&self, stem: &str, cert: &str, key: &str) -> Result<()> {
        let (cert_path, key_path) = self.pair(stem);
        write_file_mode(&key_path, key, 0o600)?;
        write_file_mode(&cert_path, cert, 0o644)
    }
}

/// Fetches the server's CA bundle from `/cacerts` without trusting the
/// server yet, and keeps it only if it hashes to what the token says. No
/// credential is sent on this connection. Retries while the server cannot
/// be reached; a wrong hash is final.
pub async fn pin_ca(server: &str, token: &JoinToken) -> Result<String> {
    let mut wait = Duration::from_secs(1);
    let pem = loop {
        match fetch_cacerts(server).await {
            Ok(pem) => break pem,
            Err(e) => {
                tracing::warn!(err = %format!("{e:#}"), server, "waiting for the server");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    match &token.ca_hash {
        Some(expected) if *expected != ca_hash(&pem) => bail!(
            "the server's CA certificate (sha256 {}) is not the one the token names (sha256 {expected}): refusing to join (is the token for another cluster, or is something in between?)",
            ca_hash(&pem)
        ),
        Some(_) => {}
        None => tracing::warn!(
            "the token carries no CA hash (K10<hash>::…): trusting the server's CA on first use"
        ),
    }
    Ok(pem)
}

async fn fetch_cacerts(server: &str) -> Result<String> {
    let uri: http::Uri = server.parse().context("the server URL")?;
    let host = uri
        .host()
        .context("the server URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let request = http::Request::get("/cacerts")
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Full::default())
        .context("request")?;
    let (status, body) = crate::pki::tls::request_once(
        &host,
        port,
        &host,
        crate::pki::tls::unverified_client_config(),
        request,
        Some(Duration::from_secs(10)),
    )
    .await
    .context("GET /cacerts")?;
    if status != http::StatusCode::OK {
        bail!("GET /cacerts answered {status}");
    }
    let pem = String::from_utf8(body.to_vec()).context("/cacerts is not text")?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("/cacerts holds no certificate");
    }
    Ok(pem)
}

/// The node's password, made at its first join and kept.
pub fn node_password(files: &CredentialFiles) -> Result<String> {
    let path = files.node_password();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => {
            let password = format!(
                "{}{}",
                crate::pki::node_password::generate(),
                crate::pki::node_password::generate()
            );
            write_file_mode(&path, &format!("{password}\n"), 0o600)?;
            Ok(password)
        }
    }
}

/// Posts a JSON body to a kelp path, as `client`.
async fn post(
    client: &kube::Client,
    path: &str,
    body: serde_json::Value,
) -> Result<(), kube::Error> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await.map(|_| ())
}

/// The kubelet's client certificate: the stored one while it is valid
/// and not due for renewal, else a new one through the bootstrap token.
pub async fn kubelet_client_certificate(
    server: &str,
    ca_pem: &str,
    token: &JoinToken,
    files: &CredentialFiles,
    node: &str,
) -> Result<(String, String)> {
    let kind = CertificateKind::kubelet_client(node);
    if let Some(stored) = kind.stored(files) {
        return Ok(stored);
    }
    let bootstrap = client::remote(
        server,
        ca_pem,
        Identity::Token(token.bootstrap_token().to_string()),
    )?;
    let password = node_password(files)?;
    post(
        &bootstrap,
        crate::pki::node_password::PROOF_PATH,
        json!({"node": node, "password": password}),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(status) if status.code == 403 || status.code == 401 => {
            anyhow::Error::new(Refused(format!(
                "the server refused to let node {node:?} join: {}",
                status.message
            )))
        }
        other => anyhow::anyhow!("proving the node password: {other}"),
    })?;
    kind.obtain(&bootstrap, files, true).await
}

/// The server's words for a refused request.
fn refusal(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// What one certificate of a node is.
#[derive(Debug, Clone)]
pub struct CertificateKind {
    /// File stem under `<data-dir>/agent/`.
    pub stem: &'static str,
    /// The signer asked.
    pub signer: &'static str,
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations.
    pub organizations: Vec<&'static str>,
    /// DNS names (serving).
    pub dns: Vec<String>,
    /// IP addresses (serving).
    pub ips: Vec<IpAddr>,
    /// Key usages.
    pub usages: Vec<&'static str>,
}

impl CertificateKind {
    /// The kubelet's client certificate (`system:node:<node>` in `system:nodes`).
    pub fn kubelet_client(node: &str) -> Self {
        CertificateKind {
            stem: "client-kubelet",
            signer: csr::KUBE_APISERVER_CLIENT_KUBELET,
            common_name: format!("system:node:{node}"),
            organizations: vec!["system:nodes"],
            dns: vec![],
            ips: vec![],
            usages: vec![csr::USAGE_DIGITAL_SIGNATURE, csr::USAGE_CLIENT_AUTH],
        }
    }

    /// The kubelet API's serving certificate.
    pub fn kubelet_serving(node: &str, ip: IpAddr) -> Self {
        CertificateKind {
            stem: "serving-kubelet",
            signer: csr::KUBELET_SERVING,
            common_name: format!("system:node:{node}"),
            organizations: vec!["system:nodes"],
            dns: vec![node.to_string()],
            ips: vec![ip],
            usages: vec![csr::USAGE_DIGITAL_SIGNATURE, csr::USAGE_SERVER_AUTH],
        }
    }

    /// A client certificate for a node component (`system:kube-proxy`, `system:kelp:coredns`).
    pub fn component_client(stem: &'static str, user: &str) -> Self {
        CertificateKind {
            stem,
            signer: csr::KUBE_APISERVER_CLIENT,
            common_name: user.to_string(),
            organizations: vec![],
            dns: vec![],
            ips: vec![],
            usages: vec![csr::USAGE_DIGITAL_SIGNATURE, csr::USAGE_CLIENT_AUTH],
        }
    }

    /// The stored certificate and key, if they name this subject and are
    /// not due for renewal.
    pub fn stored(&self, files: &CredentialFiles) -> Option<(String, String)> {
        let (cert, key) = files.load(self.stem)?;
        let ours =
            crate::pki::identity::user_from_pem(&cert).is_some_and(|u| u.name == self.common_name);
        (ours && !csr::renew_due(&cert, time::OffsetDateTime::now_utc())).then_some((cert, key))
    }

    /// The stored certificate if valid and not due, else a new one asked for as `client`.
    pub async fn obtain(
        &self,
        client: &kube::Client,
        files: &CredentialFiles,
        renew: bool,
    ) -> Result<(String, String)> {
        if !renew && let Some(stored) = self.stored(files) {
            return Ok(stored);
        }
        let (cert, key) = request_certificate(
            client,
            self.signer,
            &self.common_name,
            &self.organizations,
            &self.dns,
            &self.ips,
            &self.usages,
        )
        .await?;
        files.store(self.stem, &cert, &key)?;
        Ok((cert, key))
    }
}

/// Asks for a certificate with a CertificateSigningRequest and waits until
/// it is issued (or refused).
pub async fn request_certificate(
    client: &kube::Client,
    signer: &str,
    common_name: &str,
    organizations: &[&str],
    dns: &[String],
    ips: &[IpAddr],
    usages: &[&str],
) -> Result<(String, String)> {
    let (request, key) = csr::new_request(common_name, organizations, dns, ips)
        .context("making the certificate request")?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let object: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"generateName": "csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": signer,
            "usages": usages,
        },
    }))
    .context("building the CertificateSigningRequest")?;
    let created = csrs
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| {
            let message = format!(
                "creating a certificate signing request for {common_name}: {}",
                refusal(&e)
            );
            match e {
                kube::Error::Api(status) if status.code == 403 || status.code == 401 => {
                    anyhow::Error::new(Refused(message))
                }
                _ => anyhow::anyhow!(message),
            }
        })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer, subject = common_name, "certificate requested");
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let current = match csrs.get(&name).await {
            Ok(current) => current,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                bail!("certificate signing request {name} was deleted before it was issued")
            }
            Err(e) => {
                tracing::warn!(err = %e, csr = %name, "reading the certificate signing request; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let status = current.status.unwrap_or_default();
        if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
            let pem =
                String::from_utf8(certificate.0).context("the issued certificate is not PEM")?;
            return Ok((pem, key));
        }
        for condition in status.conditions.unwrap_or_default() {
            if (condition.type_ == "Denied" || condition.type_ == "Failed")
                && condition.status == "True"
            {
                return Err(anyhow::Error::new(Refused(format!(
                    "certificate signing request {name} was {}: {}",
                    condition.type_.to_lowercase(),
                    condition.message.unwrap_or_default()
                ))));
            }
        }
        if !told && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!(csr = %name, "waiting for approval (kubectl certificate approve {name})");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
