//! A node: its components (service proxy, kubelet, routes to other nodes'
//! pods, cluster DNS), as `kelp server` runs them for its local node and
//! `kelp agent` for a node that joins a server over the network
//! ([`bootstrap`], over [`crate::http::client`]).

pub mod bootstrap;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use self::bootstrap::{CertificateKind, CredentialFiles};
use crate::http::client::{self, Identity};
use crate::pki::bootstrap_token::JoinToken;
use crate::pki::reloadable::ReloadableCert;

/// What every node of a cluster shares (the server's flags; agents ask the
/// server at `/v1-kelp/config`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClusterSettings {
    /// `--cluster-cidr`.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `--cluster-dns`.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: String,
    /// `--cluster-domain`.
    #[serde(rename = "clusterDomain")]
    pub cluster_domain: String,
    /// Whether nodes provision local-path volumes (not `--disable local-storage`).
    #[serde(rename = "localStorage", default)]
    pub local_storage: bool,
    /// Whether nodes enforce NetworkPolicies (not `--disable network-policy`).
    #[serde(rename = "networkPolicy", default)]
    pub network_policy: bool,
    /// Whether nodes run the ingress proxy (not `--disable ingress`).
    #[serde(default)]
    pub ingress: bool,
}

/// The user a joined node's cluster DNS acts as.
const DNS_USER: &str = "system:kelp:coredns";
/// The user a joined node's local-path provisioner acts as.
pub const LOCAL_STORAGE_USER: &str = "system:kelp:local-path-provisioner";
/// The user every node's NetworkPolicy enforcer acts as.
pub const NETWORK_POLICY_USER: &str = "system:kelp:network-policy";
/// The user every node's ingress proxy acts as.
pub const INGRESS_USER: &str = "system:kelp:ingress";

/// The identities a node's components act as.
pub struct NodeClients {
    /// The kubelet: `system:node:<name>`.
    pub kubelet: kube::Client,
    /// Sets what a kubelet may not (role labels), on the server's own node only.
    pub labeler: Option<kube::Client>,
    /// The service proxy: `system:kube-proxy`.
    pub proxy: kube::Client,
    /// The cluster DNS, unless disabled.
    pub dns: Option<kube::Client>,
    /// The local-path provisioner, unless disabled.
    pub local_storage: Option<kube::Client>,
    /// The NetworkPolicy enforcer, unless disabled.
    pub network_policy: Option<kube::Client>,
    /// The ingress proxy, unless disabled.
    pub ingress: Option<kube::Client>,
}

/// Starts a node's components: service proxy, kubelet (which registers the
/// Node and gets its pod CIDR), routes to other nodes' pods, cluster DNS.
pub async fn run_node(
    clients: NodeClients,
    config: crate::kubelet::AgentConfig,
    mut dns: crate::dns::Config,
    tls: Arc<rustls::ServerConfig>,
    metrics: Arc<crate::telemetry::Metrics>,
) -> Result<crate::kubelet::Agent> {
    crate::proxy::start(
        clients.proxy,
        crate::proxy::ProxyConfig {
            node_name: config.node.name.clone(),
            cluster_cidr: config.cluster_cidr.clone(),
            bridge: crate::network::cni::default_bridge(),
        },
        metrics,
    );
    if let Some(client) = clients.local_storage {
        let storage = crate::local_storage::LocalStorage {
            node: config.node.name.clone(),
            dir: config.storage_dir.clone(),
        };
        tokio::spawn(storage.run(client));
    }
    if let Some(client) = clients.network_policy {
        let enforcer = crate::netpol::PolicyEnforcer {
            node: config.node.name.clone(),
            bridge: crate::network::cni::default_bridge(),
        };
        tokio::spawn(enforcer.run(client));
    }
    if let Some(client) = clients.ingress {
        let (http, https) = config.ingress_ports;
        let proxy = crate::ingress::IngressProxy {
            http: (std::net::Ipv4Addr::UNSPECIFIED, http).into(),
            https: (std::net::Ipv4Addr::UNSPECIFIED, https).into(),
        };
        if let Err(e) = proxy.start(client).await {
            tracing::error!(err = %format!("{e:#}"), "the ingress proxy failed to start");
        }
    }
    let node_ip = config.node.ip.parse().ok();
    let backend = config.pod_network_backend;
    let name = config.node.name.clone();
    let agent =
        crate::kubelet::start(config, clients.kubelet.clone(), clients.labeler, tls).await?;
    if let Some(IpAddr::V4(ip)) = node_ip {
        tokio::spawn(crate::network::peers::run(
            clients.kubelet,
            name,
            ip,
            backend,
        ));
    }
    if let Some(client) = clients.dns {
        dns.pod_cidr = agent.pod_cidr.clone();
        if let Err(e) = crate::dns::start(dns, client).await {
            tracing::error!(err = %format!("{e:#}"), "the cluster DNS failed to start");
        }
    }
    Ok(agent)
}

/// A node that has joined: the pinned CA, its kubelet identity and the
/// cluster's settings.
pub struct Joined {
    /// The server's URL.
    pub server: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The kubelet's client certificate, renewed in place.
    pub kubelet_cert: Arc<ReloadableCert>,
    /// A client as the kubelet.
    pub kubelet: kube::Client,
    /// The cluster's settings.
    pub cluster: ClusterSettings,
    files: CredentialFiles,
    node: String,
}

/// Joins `server` as `node`: pins the CA from the token, proves the node
/// password and gets (or reuses) the kubelet's client certificate.
pub async fn join(
    server: &str,
    token: &JoinToken,
    data_dir: &std::path::Path,
    node: &str,
) -> Result<Joined> {
    let started = std::time::Instant::now();
    let files = CredentialFiles::new(data_dir);
    let ca_pem = match (std::fs::read_to_string(files.ca()), &token.ca_hash) {
        // A CA pinned at an earlier join stays pinned while the token agrees.
        (Ok(pem), Some(hash)) if crate::pki::bootstrap_token::ca_hash(&pem) == *hash => pem,
        (Ok(pem), None) => pem,
        _ => {
            let pem = bootstrap::pin_ca(server, token).await?;
            crate::pki::write_file_mode(&files.ca(), &pem, 0o644)?;
            pem
        }
    };
    let (cert, key) = bootstrap::retrying("joining", || {
        bootstrap::kubelet_client_certificate(server, &ca_pem, token, &files, node)
    })
    .await?;
    let kubelet_cert = ReloadableCert::from_pem(&cert, &key)?;
    let kubelet = client::remote(server, &ca_pem, Identity::Certificate(kubelet_cert.clone()))?;
    let settings = bootstrap::retrying("reading the cluster settings", || async {
        let request = http::Request::get(crate::pki::node_password::CONFIG_PATH)
            .body(Vec::new())
            .context("request")?;
        kubelet
            .request_text(request)
            .await
            .context("reading the cluster settings from the server")
    })
    .await?;
    let cluster: ClusterSettings =
        serde_json::from_str(&settings).context("the server's cluster settings")?;
    tracing::info!(
        server,
        node,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "joined"
    );
    Ok(Joined {
        server: server.to_string(),
        ca_pem,
        kubelet_cert,
        kubelet,
        cluster,
        files,
        node: node.to_string(),
    })
}

/// Runs the joined node: gets the serving certificate and the proxy's and
/// DNS's client certificates, starts the components, and keeps every
/// certificate renewed before it expires.
pub async fn run_joined(
    joined: Joined,
    config: crate::kubelet::AgentConfig,
    dns: crate::dns::Config,
    run_dns: bool,
    metrics: Arc<crate::telemetry::Metrics>,
) -> Result<crate::kubelet::Agent> {
    let ip: IpAddr = config.node.ip.parse().context("the node IP")?;
    let mut kinds = vec![
        CertificateKind::kubelet_serving(&joined.node, ip),
        CertificateKind::component_client("client-kube-proxy", "system:kube-proxy"),
    ];
    // The components that run only when enabled: (on, file stem, user).
    let optional = [
        (run_dns, "client-coredns", DNS_USER),
        (
            joined.cluster.local_storage,
            "client-local-path-provisioner",
            LOCAL_STORAGE_USER,
        ),
        (
            joined.cluster.network_policy,
            "client-network-policy",
            NETWORK_POLICY_USER,
        ),
        (joined.cluster.ingress, "client-ingress", INGRESS_USER),
    ];
    for (on, stem, user) in optional {
        if on {
            kinds.push(CertificateKind::component_client(stem, user));
        }
    }
    let mut certs = Vec::new();
    for kind in &kinds {
        let (cert, key) =
            bootstrap::retrying(&format!("getting the {} certificate", kind.stem), || {
                kind.obtain(&joined.kubelet, &joined.files, false)
            })
            .await?;
        certs.push(ReloadableCert::from_pem(&cert, &key)?);
    }
    let remote = |cert: &Arc<ReloadableCert>| {
        client::remote(
            &joined.server,
            &joined.ca_pem,
            Identity::Certificate(cert.clone()),
        )
    };
    // A client as `user`, when its certificate was asked for.
    let optional_client = |user: &str| -> Result<Option<kube::Client>> {
        kinds
            .iter()
            .position(|k| k.common_name == user)
            .map(|i| remote(&certs[i]))
            .transpose()
    };
    let clients = NodeClients {
        kubelet: joined.kubelet.clone(),
        labeler: None,
        proxy: remote(&certs[1])?,
        dns: optional_client(DNS_USER)?,
        local_storage: optional_client(LOCAL_STORAGE_USER)?,
        network_policy: optional_client(NETWORK_POLICY_USER)?,
        ingress: optional_client(INGRESS_USER)?,
    };
    let tls = crate::pki::tls::server_config(&joined.ca_pem, certs[0].clone())?;
    let agent = run_node(clients, config, dns, tls, metrics).await?;
    // The kubelet's own client certificate renews like the others (as the
    // node itself: upstream's selfnodeclient approval).
    let mut renewed: Vec<(CertificateKind, Arc<ReloadableCert>)> =
        kinds.into_iter().zip(certs).collect();
    renewed.push((
        CertificateKind::kubelet_client(&joined.node),
        joined.kubelet_cert.clone(),
    ));
    tokio::spawn(keep_renewed(
        joined.kubelet.clone(),
        joined.files.clone(),
        renewed,
    ));
    Ok(agent)
}

/// Renews each certificate once 80% of its lifetime has passed.
async fn keep_renewed(
    client: kube::Client,
    files: CredentialFiles,
    certs: Vec<(CertificateKind, Arc<ReloadableCert>)>,
) {
    loop {
        let now = time::OffsetDateTime::now_utc();
        let next = certs
            .iter()
            .filter_map(|(kind, _)| files.load(kind.stem))
            .filter_map(|(cert, _)| {
                crate::pki::csr::renew_at(&cert, crate::pki::csr::RENEW_FRACTION)
            })
            .min()
            .map(|at| std::time::Duration::try_from(at - now).unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        tokio::time::sleep(next).await;
        for (kind, live) in &certs {
            if kind.stored(&files).is_some() {
                continue;
            }
            match kind.obtain(&client, &files, true).await {
                Ok((cert, key)) => match live.replace(&cert, &key) {
                    Ok(()) => tracing::info!(certificate = kind.stem, "certificate renewed"),
                    Err(e) => {
                        tracing::error!(err = %format!("{e:#}"), certificate = kind.stem, "loading a renewed certificate")
                    }
                },
                Err(e) => {
                    tracing::warn!(err = %format!("{e:#}"), certificate = kind.stem, "renewing a certificate; retrying in a minute");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        }
    }
}
