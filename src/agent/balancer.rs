//! The agent's client load balancer, as k3s's: a TCP proxy on loopback
//! (`--lb-server-port`, 6444) in front of the servers, so every client of
//! the agent (the kubelet, the node's components) keeps working when the
//! server it used dies. It starts from `--server` and the servers it
//! learned before (kept in `<data-dir>/agent/etc/load-balancer.json`), and
//! learns the current ones from the `kubernetes` Service's endpoints.
//!
//! A connection goes to the server that answered last; when that one
//! refuses or does not answer within [`DIAL_TIMEOUT`], to the next. TLS
//! passes through untouched: clients verify the servers' certificates,
//! which name 127.0.0.1.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

use crate::runtime::Shutdown;

/// How long a server may take to accept before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the servers are learned from the `kubernetes` endpoints.
const REFRESH: Duration = Duration::from_secs(15);

/// The servers, in the order they are tried, and which answered last.
#[derive(Debug, Default)]
struct Servers {
    /// `host:port` of each.
    all: Vec<String>,
    /// Index into `all` of the one to try first.
    preferred: usize,
}

impl Servers {
    /// The servers from the one to try first, in order.
    fn in_order(&self) -> Vec<String> {
        let n = self.all.len();
        (0..n)
            .map(|i| self.all[(self.preferred + i) % n].clone())
            .collect()
    }

    /// `server` answered: try it first from now on.
    fn answered(&mut self, server: &str) {
        if let Some(i) = self.all.iter().position(|s| s == server) {
            self.preferred = i;
        }
    }

    /// The servers are now `learned` (and the default, which is never
    /// forgotten); the preferred one stays preferred if still there.
    fn set(&mut self, default: &str, mut learned: Vec<String>) {
        let preferred = self.all.get(self.preferred).cloned();
        if !learned.iter().any(|s| s == default) {
            learned.push(default.to_string());
        }
        learned.sort();
        learned.dedup();
        self.all = learned;
        self.preferred = preferred
            .and_then(|p| self.all.iter().position(|s| *s == p))
            .unwrap_or(0);
    }
}

/// The running balancer.
#[derive(Clone)]
pub struct ServerBalancer {
    servers: Arc<Mutex<Servers>>,
    default: String,
    port: u16,
    state: PathBuf,
}

/// `host:port` of an `https://host:port` URL.
fn authority(url: &str) -> Result<String> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("the server URL {url:?}"))?;
    let host = uri.host().context("the server URL has no host")?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(6443)))
}

impl ServerBalancer {
    /// Listens on 127.0.0.1:`port` in front of `server` (and the servers
    /// remembered in `data_dir`), proxying until the process ends.
    pub async fn start(server: &str, port: u16, data_dir: &std::path::Path) -> Result<Self> {
        let default = authority(server)?;
        let state = data_dir.join("agent/etc/load-balancer.json");
        let remembered: Vec<String> = std::fs::read(&state)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut servers = Servers::default();
        servers.set(&default, remembered);
        servers.answered(&default);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("--lb-server-port: listening on 127.0.0.1:{port}"))?;
        let balancer = Self {
            servers: Arc::new(Mutex::new(servers)),
            default,
            port,
            state,
        };
        let proxy = balancer.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        let proxy = proxy.clone();
                        tokio::spawn(async move { proxy.relay(client).await });
                    }
                    Err(e) => {
                        tracing::warn!(err = %e, "load balancer: accepting");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(balancer)
    }

    /// The URL the agent's clients use.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Joins `client` to the first server that accepts, then copies both
    /// ways until either side closes.
    async fn relay(&self, mut client: TcpStream) {
        let order = self.servers.lock().expect("servers").in_order();
        for server in &order {
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(server)).await {
                Ok(Ok(mut upstream)) => {
                    self.servers.lock().expect("servers").answered(server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                Ok(Err(e)) => tracing::debug!(server, err = %e, "load balancer: server refused"),
                Err(_) => tracing::debug!(server, "load balancer: server did not answer"),
            }
        }
        tracing::warn!(servers = ?order, "load balancer: no server answers");
    }

    /// Learns the servers from the `kubernetes` Service's endpoints every
    /// [`REFRESH`] through `client`, until `shutdown`.
    pub async fn follow(self, client: kube::Client, shutdown: Shutdown) -> Result<()> {
        use k8s_openapi::api::core::v1::Endpoints;
        let endpoints: kube::Api<Endpoints> = kube::Api::namespaced(client, "default");
        loop {
            match endpoints.get_opt("kubernetes").await {
                Ok(Some(found)) => self.learn(servers_of(&found)),
                Ok(None) => {}
                Err(e) => tracing::debug!(err = %e, "load balancer: reading the servers"),
            }
            if shutdown.until(tokio::time::sleep(REFRESH)).await.is_none() {
                return Ok(());
            }
        }
    }

    fn learn(&self, learned: Vec<String>) {
        if learned.is_empty() {
            return;
        }
        let all = {
            let mut servers = self.servers.lock().expect("servers");
            let before = servers.all.clone();
            servers.set(&self.default, learned);
            if servers.all == before {
                return;
            }
            servers.all.clone()
        };
        tracing::info!(servers = ?all, "load balancer: the servers");
        if let Some(dir) = self.state.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(
            &self.state,
            serde_json::to_vec(&all).expect("servers serialize"),
        ) {
            tracing::warn!(err = %e, file = %self.state.display(), "load balancer: remembering the servers");
        }
    }
}

/// `ip:port` of each address of the `kubernetes` Endpoints.
fn servers_of(endpoints: &k8s_openapi::api::core::v1::Endpoints) -> Vec<String> {
    let mut servers = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let port = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .map(|p| p.port);
        let Some(port) = port else { continue };
        for address in subset.addresses.iter().flatten() {
            let ip = &address.ip;
            servers.push(if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            });
        }
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_that_answered_is_tried_first_and_the_default_never_forgotten() {
        let mut servers = Servers::default();
        servers.set("a:6443", vec!["c:6443".into(), "b:6443".into()]);
        assert_eq!(servers.in_order(), ["a:6443", "b:6443", "c:6443"]);
        servers.answered("c:6443");
        assert_eq!(servers.in_order(), ["c:6443", "a:6443", "b:6443"]);
        servers.set("a:6443", vec!["c:6443".into(), "d:6443".into()]);
        assert_eq!(servers.in_order(), ["c:6443", "d:6443", "a:6443"]);
        servers.set("a:6443", vec!["d:6443".into()]);
        assert_eq!(servers.in_order(), ["a:6443", "d:6443"]);
    }

    #[test]
    fn servers_are_read_from_the_endpoints() {
        let endpoints: k8s_openapi::api::core::v1::Endpoints =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kubernetes"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                             "ports": [{"name": "https", "port": 6443}]}]
            }))
            .expect("endpoints");
        assert_eq!(servers_of(&endpoints), ["10.0.0.1:6443", "[fd00::2]:6443"]);
    }
}
