//! `/etc/kelp/registries.yaml` (k3s's format): registry mirrors, TLS and
//! credentials, turned into containerd's per-registry `hosts.toml` files
//! (`<data-dir>/agent/containerd/certs.d/<registry>/`) and CRI auth settings.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//! configs:
//!   "127.0.0.1:5000":
//!     auth: {username: u, password: p}
//!     tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The file's contents.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Registries {
    /// Registry name (or `*`) → endpoints to try first.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Registry host → TLS and credentials.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// Mirrors of one registry.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Mirror {
    /// Endpoint URLs, tried in order before the registry itself.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

/// TLS and credentials for one registry host.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct RegistryConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// Registry credentials.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Auth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// Base64 `user:password`.
    #[serde(default)]
    pub auth: String,
    /// Identity token.
    #[serde(default)]
    pub identity_token: String,
}

/// Registry TLS.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Tls {
    /// CA bundle.
    #[serde(default)]
    pub ca_file: String,
    /// Client certificate.
    #[serde(default)]
    pub cert_file: String,
    /// Client key.
    #[serde(default)]
    pub key_file: String,
    /// Skip server verification.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Registries {
    /// Reads the file; a missing file is no configuration.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn host_of(endpoint: &str) -> &str {
        let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    fn tls_lines(&self, host: &str) -> String {
        let mut out = String::new();
        if let Some(tls) = self.configs.get(host).and_then(|c| c.tls.as_ref()) {
            if tls.insecure_skip_verify {
                out.push_str("  skip_verify = true\n");
            }
            if !tls.ca_file.is_empty() {
                out.push_str(&format!("  ca = {:?}\n", tls.ca_file));
            }
            if !tls.cert_file.is_empty() && !tls.key_file.is_empty() {
                out.push_str(&format!(
                    "  client = [[{:?}, {:?}]]\n",
                    tls.cert_file, tls.key_file
                ));
            }
        }
        out
    }

    /// `hosts.toml` per registry: its mirrors first, then the registry.
    pub fn hosts_files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        let mut registries: Vec<&String> = self.mirrors.keys().collect();
        for host in self.configs.keys() {
            if !self.mirrors.contains_key(host) {
                registries.push(host);
            }
        }
        for registry in registries {
            let dir = if registry == "*" {
                "_default".to_string()
            } else {
                registry.clone()
            };
            let server = match registry.as_str() {
                "docker.io" => "https://registry-1.docker.io".to_string(),
                "*" => String::new(),
                other => format!("https://{other}"),
            };
            let mut text = String::from("# Written by kelp from registries.yaml at every start.\n");
            if !server.is_empty() {
                text.push_str(&format!("server = {server:?}\n"));
            }
            for endpoint in self
                .mirrors
                .get(registry)
                .map(|m| m.endpoint.as_slice())
                .unwrap_or_default()
            {
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("https://{endpoint}")
                };
                text.push_str(&format!(
                    "\n[host.{url:?}]\n  capabilities = [\"pull\", \"resolve\"]\n"
                ));
                text.push_str(&self.tls_lines(Self::host_of(&url)));
            }
            let own_tls = self.tls_lines(registry);
            if !own_tls.is_empty() && !server.is_empty() {
                text.push_str(&format!(
                    "\n[host.{server:?}]\n  capabilities = [\"pull\", \"resolve\"]\n{own_tls}"
                ));
            }
            files.insert(dir, text);
        }
        files
    }

    /// CRI's credential settings, appended to containerd's config.
    pub fn auth_config(&self) -> String {
        let mut out = String::new();
        for (host, config) in &self.configs {
            let Some(auth) = &config.auth else { continue };
            out.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{host:?}.auth]\n"
            ));
            for (key, value) in [
                ("username", &auth.username),
                ("password", &auth.password),
                ("auth", &auth.auth),
                ("identitytoken", &auth.identity_token),
            ] {
                if !value.is_empty() {
                    out.push_str(&format!("  {key} = {value:?}\n"));
                }
            }
        }
        out
    }

    /// Replaces the hosts directory's contents with this configuration.
    pub fn write_hosts(&self, dir: &Path) -> Result<()> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (registry, text) in self.hosts_files() {
            let sub = dir.join(&registry);
            std::fs::create_dir_all(&sub)?;
            std::fs::write(sub.join("hosts.toml"), text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000"]
  mirror.test:
    endpoint: ["127.0.0.1:5443"]
configs:
  "127.0.0.1:5443":
    tls: {insecure_skip_verify: true, ca_file: /ca.pem}
    auth: {username: me, password: secret}
"#;

    #[test]
    fn mirrors_become_hosts_files_and_credentials_cri_settings() {
        let r: Registries = serde_yaml_ng::from_str(YAML).unwrap();
        let files = r.hosts_files();
        assert!(files["docker.io"].contains("server = \"https://registry-1.docker.io\""));
        assert!(files["docker.io"].contains("[host.\"http://127.0.0.1:5000\"]"));
        let mirror = &files["mirror.test"];
        assert!(mirror.contains("[host.\"https://127.0.0.1:5443\"]"));
        assert!(mirror.contains("skip_verify = true"));
        assert!(mirror.contains("ca = \"/ca.pem\""));
        let auth = r.auth_config();
        assert!(auth.contains("configs.\"127.0.0.1:5443\".auth]"));
        assert!(auth.contains("username = \"me\""));
    }

    #[test]
    fn a_missing_file_is_no_configuration() {
        assert_eq!(
            Registries::load(Path::new("/nonexistent/registries.yaml")).unwrap(),
            Registries::default()
        );
    }
}
