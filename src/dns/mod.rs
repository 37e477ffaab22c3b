//! The cluster DNS, built in: hickory's server answers on port 53 of the
//! node's bridge address (the first address of its pod CIDR, cni0's
//! gateway) over UDP and TCP. A catalog holds the cluster domain and the
//! reverse zones, answered from watch caches of Services, EndpointSlices
//! and Namespaces ([`records`], [`zone`]), and a forwarder for every other
//! name ([`forward`]). Pods reach it through the selector-less `kube-dns`
//! Service whose per-node EndpointSlices each node keeps ([`service`]).
//!
//! Answers never call the API: the caches are rebuilt into an index when
//! they change. The listeners are opened at start (so a busy port is an
//! error at once) but only serve once every cache has synced, so no pod
//! gets a negative answer from an empty index.

pub mod forward;
pub mod metrics;
pub mod records;
pub mod service;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use hickory_proto::rr::{LowerName, Name};
use hickory_server::Server;
use hickory_server::zone_handler::{Catalog, ZoneHandler};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;

use self::records::{Index, Shared};
use self::service::Registration;
use crate::runtime::{Informers, Shutdown};

/// The DNS port (pods' resolvers know no other).
pub const PORT: u16 = 53;
/// An idle TCP connection is closed after this long (CoreDNS's read timeout).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Receive buffer of the UDP socket, so bursts of queries are not dropped
/// (the kernel caps it at net.core.rmem_max).
const UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// How often the Service and this node's slice are checked without a change.
const RESYNC: Duration = Duration::from_secs(30);

/// What the DNS needs to know about its node and cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's name.
    pub node: String,
    /// The node's pod CIDR: the DNS listens on its first address.
    pub pod_cidr: String,
    /// `--cluster-dns`: the `kube-dns` Service's ClusterIP.
    pub cluster_dns: String,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// The node's resolv.conf, whose nameservers other names go to.
    pub resolv_conf: PathBuf,
}

/// The address the node's DNS listens on: its bridge's (the pod CIDR's first).
pub fn listen_address(pod_cidr: &str) -> Result<IpAddr> {
    let cidr: crate::network::cidr::Cidr = pod_cidr
        .parse()
        .map_err(|e: String| anyhow::anyhow!("pod CIDR: {e}"))?;
    Ok(IpAddr::V4(cidr.nth(1)))
}

/// Opens the listeners and starts the caches, the index and the
/// registration; serving begins once the caches have synced. Runs until
/// `shutdown`. It reads from the node's shared caches; `client` (the DNS's
/// own identity) writes the `kube-dns` Service and this node's slice.
pub async fn run(
    config: Config,
    informers: Informers,
    client: kube::Client,
    shutdown: Shutdown,
) -> Result<()> {
    let zone = Name::from_ascii(format!("{}.", config.cluster_domain.trim_end_matches('.')))
        .with_context(|| format!("--cluster-domain {:?}", config.cluster_domain))?
        .to_lowercase();
    let cluster_ip: IpAddr = config
        .cluster_dns
        .parse()
        .with_context(|| format!("--cluster-dns {:?}", config.cluster_dns))?;
    let address = listen_address(&config.pod_cidr)?;
    let listen = SocketAddr::new(address, PORT);
    let udp = bind_udp(listen).with_context(|| format!("listening on {listen}/udp"))?;
    let tcp = bind_tcp(listen).with_context(|| format!("listening on {listen}/tcp"))?;
    let dns_metrics = Arc::new(metrics::DnsMetrics::default());
    let metrics_address = SocketAddr::new(address, metrics::PORT);
    let metrics_listener = bind_tcp(metrics_address)
        .inspect_err(|e| {
            tracing::warn!(address = %metrics_address, err = %e, "cluster DNS metrics are off: port taken");
        })
        .ok();
    let serving_metrics = {
        let dns_metrics = dns_metrics.clone();
        async move {
            if let Some(listener) = metrics_listener {
                metrics::serve(listener, dns_metrics).await;
            }
        }
    };

    let (services, service_changes) = informers.cache::<Service>();
    let (slices, slice_changes) = informers.cache::<EndpointSlice>();
    let (namespaces, namespace_changes) = informers.cache::<Namespace>();
    let caches = Caches {
        services,
        slices,
        namespaces,
        informers: informers.clone(),
    };
    let shared = Shared::new(Index::build(&zone, vec![cluster_ip], 0, [], [], []));
    let forwarder = forward::handler(&config.resolv_conf, &[address, cluster_ip]);
    let cluster_zones = ["in-addr.arpa.", "ip6.arpa."]
        .iter()
        .filter_map(|z| Name::from_ascii(z).ok())
        .chain([zone.clone()])
        .map(LowerName::from)
        .collect();
    let catalog = metrics::MeteredHandler::new(
        catalog(&zone, &shared, forwarder)?,
        dns_metrics,
        cluster_zones,
    );
    let registration = Registration {
        node: config.node.clone(),
        address,
        cluster_ip,
    };

    // Keeps the index current.
    let changes = futures::stream::select_all([service_changes, slice_changes, namespace_changes]);
    let (indexed, first_index) = tokio::sync::oneshot::channel();
    let indexing = keep_index(
        changes,
        caches,
        shared,
        zone,
        cluster_ip,
        client,
        registration,
        indexed,
    );
    // Dropped at the stop, the server aborts its socket tasks.
    let serving = async move {
        if first_index.await.is_err() {
            return;
        }
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(address = %listen, "cluster DNS is serving");
        if let Err(e) = server.block_until_done().await {
            tracing::error!(err = %e, "cluster DNS stopped");
        }
    };
    shutdown
        .until(async { tokio::join!(serving_metrics, indexing, serving) })
        .await;
    Ok(())
}

/// The watch caches the answers come from.
#[derive(Clone)]
struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    informers: Informers,
}

impl Caches {
    async fn ready(&self) {
        self.informers.informer::<Service>().ready().await;
        self.informers.informer::<EndpointSlice>().ready().await;
        self.informers.informer::<Namespace>().ready().await;
    }

    fn filled(&self) -> bool {
        self.informers.informer::<Service>().filled()
            && self.informers.informer::<EndpointSlice>().filled()
            && self.informers.informer::<Namespace>().filled()
    }

    fn index(&self, zone: &Name, cluster_ip: IpAddr) -> Index {
        let services = self.services.state();
        let slices = self.slices.state();
        let namespaces = self
            .namespaces
            .state()
            .into_iter()
            .filter_map(|n| n.metadata.name.clone());
        // The SOA serial: seconds since the epoch at the change, as CoreDNS's.
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or_default();
        Index::build(
            zone,
            vec![cluster_ip],
            serial,
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            namespaces,
        )
    }
}

/// Rebuilds the index after each burst of changes (telling `indexed` when
/// the first complete one is in place), and keeps the `kube-dns` Service and
/// this node's slice (after changes and every [`RESYNC`]).
#[allow(clippy::too_many_arguments)]
async fn keep_index(
    mut changes: futures::stream::SelectAll<futures::stream::BoxStream<'static, ()>>,
    caches: Caches,
    shared: Shared,
    zone: Name,
    cluster_ip: IpAddr,
    client: kube::Client,
    registration: Registration,
    indexed: tokio::sync::oneshot::Sender<()>,
) {
    let mut resync = tokio::time::interval(RESYNC);
    let mut indexed = Some(indexed);
    loop {
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    return;
                }
                // Let a burst of events settle into one rebuild.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = resync.tick() => {}
            _ = caches.ready(), if indexed.is_some() => {}
        }
        if indexed.is_some() {
            // Until every cache has listed, an index would deny names that exist.
            if !caches.filled() {
                continue;
            }
        }
        shared.replace(caches.index(&zone, cluster_ip));
        if let Some(indexed) = indexed.take() {
            let _ = indexed.send(());
        }
        if let Err(e) =
            service::ensure(&client, &registration, &caches.services, &caches.slices).await
        {
            tracing::warn!(err = %e, "keeping the kube-dns Service and this node's EndpointSlice");
        }
    }
}

/// The zones: the cluster domain (ours alone), the reverse zones (ours, then
/// the forwarder for addresses we do not know) and the root (the forwarder).
fn catalog(
    zone: &Name,
    index: &Shared,
    forwarder: Option<Arc<dyn ZoneHandler>>,
) -> Result<Catalog> {
    let mut catalog = Catalog::new();
    catalog.upsert(
        LowerName::new(zone),
        vec![Arc::new(zone::ClusterZone::new(
            zone.clone(),
            index.clone(),
        ))],
    );
    for reverse in ["in-addr.arpa.", "ip6.arpa."] {
        let origin = Name::from_ascii(reverse)?;
        let mut chain: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(zone::ClusterZone::new(
            origin.clone(),
            index.clone(),
        ))];
        chain.extend(forwarder.clone());
        catalog.upsert(LowerName::new(&origin), chain);
    }
    if let Some(forwarder) = forwarder {
        catalog.upsert(LowerName::new(&Name::root()), vec![forwarder]);
    }
    Ok(catalog)
}

/// A UDP socket on `addr` that may be bound before the address exists (the
/// bridge appears with the first pod): IP_FREEBIND.
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    free_bind(&socket, addr)?;
    // Best effort: a smaller buffer only drops more under bursts.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// A TCP listener on `addr`, bound as [`bind_udp`] binds.
fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    free_bind(&socket, addr)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn free_bind(socket: &socket2::Socket, addr: SocketAddr) -> std::io::Result<()> {
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_listens_on_the_bridge_address() {
        assert_eq!(
            listen_address("10.42.3.0/24").unwrap(),
            "10.42.3.1".parse::<IpAddr>().unwrap()
        );
        assert!(listen_address("nonsense").is_err());
    }
}
