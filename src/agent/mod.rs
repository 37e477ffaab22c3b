//! A node: its components (service proxy, kubelet, routes to other nodes'
//! pods, cluster DNS), as `kelp server` runs them for its local node and
//! `kelp agent` for a node that joins a server over the network
//! ([`bootstrap`], over [`crate::http::client`]).

pub mod balancer;
pub mod bootstrap;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::oneshot;

use self::bootstrap::{CertificateKind, CredentialFiles};
use crate::http::client::{self, Identity};
use crate::pki::bootstrap_token::JoinToken;
use crate::pki::reloadable::ReloadableCert;
use crate::runtime::{Components, Informers, Shutdown};

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

/// The identities a node's components write as (they read from the
/// node's shared caches, [`crate::runtime::Informers`]).
pub struct NodeClients {
    /// The kubelet: `system:node:<name>`.
    pub kubelet: kube::Client,
    /// Sets what a kubelet may not (role labels), on the server's own node only.
    pub labeler: Option<kube::Client>,
    /// The cluster DNS, unless disabled.
    pub dns: Option<kube::Client>,
    /// The local-path provisioner, unless disabled.
    pub local_storage: Option<kube::Client>,
    /// Whether the node enforces NetworkPolicies (the enforcer only reads).
    pub network_policy: bool,
    /// The ingress proxy, unless disabled.
    pub ingress: Option<IngressIdentity>,
}

/// What the ingress proxy writes Ingress status as, and the caches it
/// reads Secrets from (the node's shared reader may not read them):
/// `kelp server`'s own caches, or on a joined node its own as
/// `system:kelp:ingress`.
pub struct IngressIdentity {
    /// Writes the Ingresses' status.
    pub client: kube::Client,
    /// Holds the Secrets.
    pub secrets: Informers,
}

/// A node: its components, what they write as, and the caches they read.
pub struct Node {
    /// What the components write as.
    pub clients: NodeClients,
    /// The caches every component reads: one per kind for them all.
    pub informers: Informers,
    /// The kubelet's settings.
    pub config: crate::kubelet::AgentConfig,
    /// The cluster DNS's settings (its pod CIDR comes at registration).
    pub dns: crate::dns::Config,
    /// The kubelet API's serving configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Where the service proxy's metrics go.
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// How long a node's components have, together, to stop (containerd gets
/// up to 10 s to exit).
const NODE_GRACE: Duration = Duration::from_secs(12);

impl Node {
    /// Runs the node's components until `shutdown`, then stops them
    /// together: service proxy, local-path provisioner, NetworkPolicy
    /// enforcer, ingress proxy and kubelet, then (once the kubelet has
    /// registered the Node and got its pod CIDR, which `registered` is
    /// told) the routes to other nodes' pods and the cluster DNS. An error
    /// if the kubelet fails before registering (`registered` is dropped).
    pub async fn run(self, registered: oneshot::Sender<String>, shutdown: Shutdown) -> Result<()> {
        let Node {
            clients,
            informers,
            config,
            mut dns,
            tls,
            metrics,
        } = self;
        let mut components = Components::new();
        let proxy = crate::proxy::ProxyConfig {
            node_name: config.node.name.clone(),
            cluster_cidr: config.cluster_cidr.clone(),
            bridge: crate::network::cni::default_bridge(),
        };
        let reader = informers.clone();
        components.start("service-proxy", |shutdown| {
            crate::proxy::run(reader, proxy, metrics, shutdown)
        });
        if let Some(client) = clients.local_storage {
            let storage = crate::local_storage::LocalStorage {
                node: config.node.name.clone(),
                dir: config.storage_dir.clone(),
            };
            let reader = informers.clone();
            components.start("local-storage", |shutdown| {
                storage.run(reader, client, shutdown)
            });
        }
        if clients.network_policy {
            let enforcer = crate::netpol::PolicyEnforcer {
                node: config.node.name.clone(),
                bridge: crate::network::cni::default_bridge(),
            };
            let reader = informers.clone();
            components.start("network-policy", |shutdown| enforcer.run(reader, shutdown));
        }
        if let Some(IngressIdentity { client, secrets }) = clients.ingress {
            let (http, https) = config.ingress_ports;
            let ingress = crate::ingress::IngressProxy {
                http: (std::net::Ipv4Addr::UNSPECIFIED, http).into(),
                https: (std::net::Ipv4Addr::UNSPECIFIED, https).into(),
            };
            let reader = informers.clone();
            components.start("ingress", |shutdown| {
                ingress.run(reader, secrets, client, shutdown)
            });
        }
        let node_ip = config.node.ip.parse().ok();
        let backend = config.pod_network_backend;
        let name = config.node.name.clone();
        let (kubelet_registered, pod_cidr) = oneshot::channel();
        let kubelet = clients.kubelet.clone();
        components.start("kubelet", |shutdown| {
            crate::kubelet::run(
                config,
                kubelet,
                clients.labeler,
                tls,
                kubelet_registered,
                shutdown,
            )
        });
        let pod_cidr = match shutdown.until(pod_cidr).await {
            Some(Ok(pod_cidr)) => pod_cidr,
            Some(Err(_)) => {
                stop(components).await;
                anyhow::bail!("the kubelet failed before registering the node");
            }
            None => {
                stop(components).await;
                return Ok(());
            }
        };
        let _ = registered.send(pod_cidr.clone());
        if let Some(IpAddr::V4(ip)) = node_ip
            && backend != crate::network::routes::Backend::None
        {
            let reader = informers.clone();
            components.start("routes", |shutdown| async move {
                let routes = crate::network::peers::run(reader, clients.kubelet, name, ip, backend);
                shutdown.until(routes).await;
                Ok(())
            });
        }
        if let Some(client) = clients.dns {
            dns.pod_cidr = pod_cidr;
            components.start("cluster-dns", |shutdown| {
                crate::dns::run(dns, informers, client, shutdown)
            });
        }
        shutdown.requested().await;
        stop(components).await;
        Ok(())
    }
}

/// Stops a node's components within [`NODE_GRACE`].
async fn stop(components: Components) {
    let aborted = components.stop(NODE_GRACE).await;
    if !aborted.is_empty() {
        tracing::warn!(components = ?aborted, "node components stopped without finishing");
    }
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

/// Runs the joined node until `shutdown`: gets the serving certificate
/// and its components' client certificates, runs the components
/// ([`Node::run`]; `registered` hears the pod CIDR), and keeps every
/// certificate renewed before it expires.
pub async fn run_joined(
    joined: Joined,
    config: crate::kubelet::AgentConfig,
    dns: crate::dns::Config,
    metrics: Arc<crate::telemetry::Metrics>,
    registered: oneshot::Sender<String>,
    shutdown: Shutdown,
) -> Result<()> {
    let certified = shutdown.until(certify(joined, config, dns, metrics)).await;
    let Some(certified) = certified else {
        return Ok(());
    };
    let (node, renewal) = certified?;
    tokio::select! {
        outcome = node.run(registered, shutdown.clone()) => outcome,
        () = renewal => Ok(()),
    }
}

/// The joined node with its certificates, and the loop that renews them
/// (it never ends).
async fn certify(
    joined: Joined,
    config: crate::kubelet::AgentConfig,
    dns: crate::dns::Config,
    metrics: Arc<crate::telemetry::Metrics>,
) -> Result<(Node, impl std::future::Future<Output = ()>)> {
    let ip: IpAddr = config.node.ip.parse().context("the node IP")?;
    use crate::pki::identity::node_components;
    let mut kinds = vec![
        CertificateKind::kubelet_serving(&joined.node, ip),
        CertificateKind::component_client("client-node-reader", node_components::READER),
        CertificateKind::component_client("client-coredns", node_components::DNS),
    ];
    // The components that run only when enabled: (on, file stem, user).
    let optional = [
        (
            joined.cluster.local_storage,
            "client-local-path-provisioner",
            node_components::LOCAL_STORAGE,
        ),
        (
            joined.cluster.ingress,
            "client-ingress",
            node_components::INGRESS,
        ),
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
        dns: optional_client(node_components::DNS)?,
        local_storage: optional_client(node_components::LOCAL_STORAGE)?,
        network_policy: joined.cluster.network_policy,
        ingress: optional_client(node_components::INGRESS)?.map(|client| IngressIdentity {
            secrets: Informers::new(client.clone()),
            client,
        }),
    };
    let informers = Informers::new(remote(&certs[1])?);
    let tls = crate::pki::tls::server_config(&joined.ca_pem, certs[0].clone())?;
    let node = Node {
        clients,
        informers,
        config,
        dns,
        tls,
        metrics,
    };
    // The kubelet's own client certificate renews like the others (as the
    // node itself: upstream's selfnodeclient approval).
    let mut renewed: Vec<(CertificateKind, Arc<ReloadableCert>)> =
        kinds.into_iter().zip(certs).collect();
    renewed.push((
        CertificateKind::kubelet_client(&joined.node),
        joined.kubelet_cert.clone(),
    ));
    let renewal = keep_renewed(joined.kubelet.clone(), joined.files.clone(), renewed);
    Ok((node, renewal))
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
