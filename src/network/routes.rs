//! Multi-node pod networking: routes each other node's pod CIDR to that node,
//! the way flannel's `host-gw` and `vxlan` backends do.
//!
//! The decisions (which routes, neighbour and FDB entries this node wants,
//! and what to add or delete to get there) are pure functions of the Node
//! objects; only [`ensure_vxlan`], [`apply`], [`remove_all`] and
//! [`underlay_mtu`] talk to the kernel.
//!
//! kelp's routes carry their own routing protocol number ([`KELP_RTPROT`]),
//! so routes kelp did not make are never changed or deleted; neighbour and
//! FDB entries are only ever read and written on kelp's own vxlan device.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::network::cidr::Cidr;

/// Node annotation holding the MAC address of the node's VTEP
/// (`aa:bb:cc:dd:ee:ff`), which peers need for their ARP and FDB entries.
pub const VTEP_MAC_ANNOTATION: &str = "kelp.io/vtep-mac";
/// Node annotation naming the backend the node runs, so a mismatch is visible.
pub const BACKEND_ANNOTATION: &str = "kelp.io/backend";
/// Node annotation with the address peers send tunnelled (or host-gw)
/// traffic to; the InternalIP unless the node sits behind another address.
pub const PUBLIC_IP_ANNOTATION: &str = "kelp.io/public-ip";

/// Name of kelp's vxlan device (at most 15 bytes, the kernel's limit).
pub const VXLAN_DEVICE: &str = "kelp.vxlan";
/// VXLAN network identifier, flannel's default.
pub const VXLAN_VNI: u32 = 1;
/// UDP port of the tunnel: flannel's (the Linux default), not IANA's 4789,
/// so kelp nodes interoperate with the port flannel users have opened.
pub const VXLAN_PORT: u16 = 8472;
/// Bytes the vxlan encapsulation adds: outer IPv4 (20), UDP (8), VXLAN (8)
/// and inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Routing protocol number marking kelp's routes (`ip route … proto 75`):
/// only routes with it are ever deleted or replaced.
pub const KELP_RTPROT: u8 = 0x4b;

/// Errors of the routing work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend name that is not one of the three.
    #[error("unknown pod network backend {0:?}: expected one of host-gw, vxlan, none")]
    UnknownBackend(String),
    /// The kernel cannot make vxlan devices.
    #[error(
        "the kernel cannot create vxlan devices ({detail}): the vxlan kernel module is \
         missing; load it with `modprobe vxlan` or use --pod-network-backend host-gw"
    )]
    VxlanUnsupported {
        /// The kernel's answer.
        detail: String,
    },
    /// A netlink request failed.
    #[error("{what}: {detail}")]
    Netlink {
        /// The step that failed.
        what: String,
        /// The kernel's answer.
        detail: String,
    },
}

/// Result alias of the module.
pub type Result<T> = std::result::Result<T, Error>;

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |e| Error::Netlink {
        what,
        detail: e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Pure part: what this node wants.
// ---------------------------------------------------------------------------

/// How pod traffic reaches other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Plain routes via the other node's address: needs all nodes on one L2
    /// segment, costs nothing per packet.
    HostGw,
    /// An overlay: pod packets in UDP between nodes; works across routers.
    Vxlan,
    /// kelp routes nothing between nodes (single node, or someone else does).
    None,
}

impl Backend {
    /// The name used in flags and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
            Backend::None => "none",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            "none" => Ok(Backend::None),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

/// What this node knows about another node, read from its Node object.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// The Node's name.
    pub name: String,
    /// Where traffic for the node's pods goes: its public-ip annotation,
    /// else its InternalIP.
    pub node_ip: Ipv4Addr,
    /// The node's pod CIDR (`spec.podCIDR`).
    pub pod_cidr: Cidr,
    /// MAC of the node's vxlan device, once it has published one.
    pub vtep_mac: Option<[u8; 6]>,
}

/// Reads a [`Peer`] from a Node; `None` while the node has no name, pod CIDR
/// or IPv4 address yet (it will have, once its kubelet registers and the
/// node IPAM controller assigns a CIDR).
pub fn peer_from_node(node: &Node) -> Option<Peer> {
    let name = node.metadata.name.clone()?;
    let pod_cidr: Cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let empty = BTreeMap::new();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let public_ip = annotations
        .get(PUBLIC_IP_ANNOTATION)
        .and_then(|ip| ip.trim().parse::<Ipv4Addr>().ok());
    let internal_ip = || {
        node.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
    };
    let node_ip = public_ip.or_else(internal_ip)?;
    let vtep_mac = annotations
        .get(VTEP_MAC_ANNOTATION)
        .and_then(|mac| parse_mac(mac));
    Some(Peer {
        name,
        node_ip,
        pod_cidr,
        vtep_mac,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`, the annotation's format.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A node's VTEP address: the network address of its pod CIDR (flannel's
/// scheme), held as a /32 on the vxlan device, never given to a pod.
pub fn vtep_address(pod_cidr: Cidr) -> Ipv4Addr {
    pod_cidr.base
}

/// MTU of the vxlan device (and so of pods behind it) on an underlay with
/// `underlay_mtu`: the encapsulated packet must still fit the underlay.
pub fn vxlan_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// A route kelp wants in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Another node's pod CIDR.
    pub destination: Cidr,
    /// Next hop: the node itself (host-gw) or its VTEP address (vxlan).
    pub gateway: Ipv4Addr,
    /// Out of kelp's vxlan device, on-link (the gateway is in no subnet of
    /// it); otherwise the kernel picks the interface that reaches `gateway`.
    pub through_vxlan: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} via {}",
            self.destination.base, self.destination.prefix, self.gateway
        )?;
        if self.through_vxlan {
            write!(f, " dev {VXLAN_DEVICE} onlink")?;
        }
        Ok(())
    }
}

/// A permanent ARP entry on the vxlan device: a peer's VTEP address has the
/// peer's VTEP MAC, so the kernel never has to ask (nothing would answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The peer's VTEP address.
    pub address: Ipv4Addr,
    /// The peer's VTEP MAC.
    pub mac: [u8; 6],
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {VXLAN_DEVICE}",
            self.address,
            format_mac(self.mac)
        )
    }
}

/// A forwarding entry of the vxlan device: frames for a peer's VTEP MAC go
/// in UDP to the peer's node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The peer's VTEP MAC.
    pub mac: [u8; 6],
    /// The peer's node address, the outer destination.
    pub destination: Ipv4Addr,
}

impl fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dst {} dev {VXLAN_DEVICE}",
            format_mac(self.mac),
            self.destination
        )
    }
}

/// Everything this node wants installed for one backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Routes to the other nodes' pod CIDRs.
    pub routes: Vec<Route>,
    /// ARP entries on the vxlan device (vxlan only).
    pub neighbours: Vec<Neighbour>,
    /// FDB entries on the vxlan device (vxlan only).
    pub fdb: Vec<FdbEntry>,
}

impl Plan {
    /// Whether this node wants nothing routed (it is alone).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty() && self.fdb.is_empty()
    }
}

/// What this node wants, given every node it knows of (itself included, it
/// is skipped by name). Peers are taken in name order; a pod CIDR claimed
/// twice is routed to the first claimant only, so the kernel is never asked
/// for two routes to one destination.
pub fn plan(backend: Backend, self_name: &str, peers: &[Peer]) -> Plan {
    let mut ordered: Vec<&Peer> = peers.iter().filter(|p| p.name != self_name).collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));
    let mut result = Plan::default();
    let mut claimed: Vec<Cidr> = Vec::new();
    for peer in ordered {
        if claimed.contains(&peer.pod_cidr) || peer.node_ip.is_unspecified() {
            continue;
        }
        match backend {
            Backend::None => {}
            Backend::HostGw => result.routes.push(Route {
                destination: peer.pod_cidr,
                gateway: peer.node_ip,
                through_vxlan: false,
            }),
            Backend::Vxlan => {
                // Without the peer's MAC neither ARP nor FDB can be filled;
                // its Node gets the annotation once its agent is up.
                let Some(mac) = peer.vtep_mac else { continue };
                let vtep = vtep_address(peer.pod_cidr);
                result.routes.push(Route {
                    destination: peer.pod_cidr,
                    gateway: vtep,
                    through_vxlan: true,
                });
                result.neighbours.push(Neighbour { address: vtep, mac });
                result.fdb.push(FdbEntry {
                    mac,
                    destination: peer.node_ip,
                });
            }
        }
        claimed.push(peer.pod_cidr);
    }
    result
}

/// A route of the main table as read from the kernel, whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// Destination prefix.
    pub destination: Cidr,
    /// Next hop, if the route has one (connected routes do not).
    pub gateway: Option<Ipv4Addr>,
    /// Whether it leaves through kelp's vxlan device.
    pub through_vxlan: bool,
    /// Routing protocol number; [`KELP_RTPROT`] marks kelp's own.
    pub protocol: u8,
}

impl InstalledRoute {
    /// Whether kelp made this route (and so may delete it).
    pub fn is_kelps(&self) -> bool {
        self.protocol == KELP_RTPROT
    }

    fn as_route(&self) -> Option<Route> {
        Some(Route {
            destination: self.destination,
            gateway: self.gateway?,
            through_vxlan: self.through_vxlan,
        })
    }
}

/// What the kernel has: every IPv4 main-table route, and the permanent
/// neighbour and FDB entries of kelp's vxlan device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Installed {
    /// Main-table IPv4 routes, kelp's and others'.
    pub routes: Vec<InstalledRoute>,
    /// Permanent ARP entries on the vxlan device.
    pub neighbours: Vec<Neighbour>,
    /// FDB entries on the vxlan device.
    pub fdb: Vec<FdbEntry>,
}

/// What to do to go from [`Installed`] to a [`Plan`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// kelp's routes nobody wants any more (deleted nodes, old backend).
    pub delete_routes: Vec<Route>,
    /// Stale ARP entries on the vxlan device.
    pub delete_neighbours: Vec<Neighbour>,
    /// Stale FDB entries on the vxlan device.
    pub delete_fdb: Vec<FdbEntry>,
    /// Missing routes.
    pub add_routes: Vec<Route>,
    /// Missing ARP entries.
    pub add_neighbours: Vec<Neighbour>,
    /// Missing FDB entries.
    pub add_fdb: Vec<FdbEntry>,
    /// Wanted routes whose destination a route kelp did not make already
    /// holds: left alone, since that route is someone's deliberate choice.
    pub blocked_routes: Vec<Route>,
}

impl Changes {
    /// Whether nothing needs doing (blocked routes aside).
    pub fn is_empty(&self) -> bool {
        self.delete_routes.is_empty()
            && self.delete_neighbours.is_empty()
            && self.delete_fdb.is_empty()
            && self.add_routes.is_empty()
            && self.add_neighbours.is_empty()
            && self.add_fdb.is_empty()
    }
}

/// Decides what to add and delete. Only kelp's routes (by protocol number)
/// are ever deleted; neighbour and FDB entries in `installed` are all on
/// kelp's own device, so all of them are kelp's.
pub fn diff(installed: &Installed, wanted: &Plan) -> Changes {
    let kelps: Vec<Route> = installed
        .routes
        .iter()
        .filter(|r| r.is_kelps())
        .filter_map(InstalledRoute::as_route)
        .collect();
    let foreign_destinations: Vec<Cidr> = installed
        .routes
        .iter()
        .filter(|r| !r.is_kelps())
        .map(|r| r.destination)
        .collect();
    let mut changes = Changes {
        delete_routes: missing_from(&kelps, &wanted.routes),
        delete_neighbours: missing_from(&installed.neighbours, &wanted.neighbours),
        delete_fdb: missing_from(&installed.fdb, &wanted.fdb),
        add_neighbours: missing_from(&wanted.neighbours, &installed.neighbours),
        add_fdb: missing_from(&wanted.fdb, &installed.fdb),
        ..Changes::default()
    };
    for route in missing_from(&wanted.routes, &kelps) {
        if foreign_destinations.contains(&route.destination) {
            changes.blocked_routes.push(route);
        } else {
            changes.add_routes.push(route);
        }
    }
    changes
}

/// The items of `items` that `other` lacks.
fn missing_from<T: PartialEq + Clone>(items: &[T], other: &[T]) -> Vec<T> {
    items
        .iter()
        .filter(|item| !other.contains(item))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Edge: netlink.
// ---------------------------------------------------------------------------

const ENODEV: i32 = -19;
const ENOENT: i32 = -2;
const ESRCH: i32 = -3;
const EEXIST: i32 = -17;
const EOPNOTSUPP: i32 = -95;

fn kernel_code(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(e) => Some(e.raw_code()),
        _ => None,
    }
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if kernel_code(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}

/// The vxlan attributes of a link, if it is a vxlan device.
fn vxlan_info(link: &LinkMessage) -> Option<&Vec<InfoVxlan>> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(vxlan)) => Some(vxlan),
            _ => None,
        }),
        _ => None,
    })
}

/// Whether an existing device is kelp's vxlan device as it should be now
/// (same VNI, port and local address); otherwise it is made anew.
fn vxlan_is_current(link: &LinkMessage, local_ip: Ipv4Addr) -> bool {
    let is_vxlan = link.attributes.iter().any(|attr| {
        matches!(attr, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))))
    });
    let Some(info) = vxlan_info(link) else {
        return false;
    };
    is_vxlan
        && info.contains(&InfoVxlan::Id(VXLAN_VNI))
        && info.contains(&InfoVxlan::Local(local_ip))
        && info.contains(&InfoVxlan::Port(VXLAN_PORT))
}

fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Asks for the vxlan kernel module once (it may be built as a module that
/// the kernel's own autoload could not reach, e.g. in a container).
async fn load_vxlan_module() {
    match tokio::process::Command::new("modprobe")
        .arg("vxlan")
        .status()
        .await
    {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!("modprobe vxlan: {status}"),
        Err(e) => tracing::warn!("modprobe vxlan: {e}"),
    }
}

async fn create_vxlan(handle: &Handle, local_ip: Ipv4Addr, mtu: u32) -> Result<u32> {
    let request = || {
        LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
            .local(local_ip)
            .port(VXLAN_PORT)
            // Every peer's MAC is configured; nothing is learned from traffic.
            .learning(false)
            .mtu(mtu)
            .build()
    };
    let unsupported = |e: &rtnetlink::Error| {
        kernel_code(e) == Some(EOPNOTSUPP) || e.to_string().contains("Unknown device type")
    };
    match handle.link().add(request()).execute().await {
        Ok(()) => {}
        Err(e) if kernel_code(&e) == Some(EEXIST) => {}
        Err(e) if unsupported(&e) => {
            load_vxlan_module().await;
            match handle.link().add(request()).execute().await {
                Ok(()) => {}
                Err(e) if kernel_code(&e) == Some(EEXIST) => {}
                Err(e) if unsupported(&e) => {
                    return Err(Error::VxlanUnsupported {
                        detail: e.to_string(),
                    });
                }
                Err(e) => return Err(netlink(format!("creating {VXLAN_DEVICE}"))(e)),
            }
        }
        Err(e) => return Err(netlink(format!("creating {VXLAN_DEVICE}"))(e)),
    }
    link_by_name(handle, VXLAN_DEVICE)
        .await?
        .map(|link| link.header.index)
        .ok_or_else(|| Error::Netlink {
            what: VXLAN_DEVICE.into(),
            detail: "missing after creation".into(),
        })
}

async fn ipv4_addresses_of(handle: &Handle, index: u32) -> Result<Vec<AddressMessage>> {
    let addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink("listing addresses"))?;
    Ok(addresses
        .into_iter()
        .filter(|a| a.header.family == AddressFamily::Inet)
        .collect())
}

fn address_of(message: &AddressMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Some(*ip)
        }
        _ => None,
    })
}

/// Makes the vxlan device hold exactly `vtep_addr/32` (a pod CIDR change
/// moves the VTEP address).
async fn ensure_vtep_address(handle: &Handle, index: u32, vtep_addr: Ipv4Addr) -> Result<()> {
    let mut present = false;
    for message in ipv4_addresses_of(handle, index).await? {
        if address_of(&message) == Some(vtep_addr) && message.header.prefix_len == 32 {
            present = true;
            continue;
        }
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(netlink(format!(
                "removing an old address of {VXLAN_DEVICE}"
            )))?;
    }
    if !present {
        handle
            .address()
            .add(index, IpAddr::V4(vtep_addr), 32)
            .execute()
            .await
            .map_err(netlink(format!("adding {vtep_addr}/32 to {VXLAN_DEVICE}")))?;
    }
    Ok(())
}

/// Creates kelp's vxlan device (or keeps it, if it already has this VNI,
/// port and local address), sets its MTU for `underlay_mtu`, gives it
/// `vtep_addr/32`, turns it up, and returns its MAC: publish it in the Node's
/// [`VTEP_MAC_ANNOTATION`] so peers can reach this node.
pub async fn ensure_vxlan(
    handle: &Handle,
    local_ip: Ipv4Addr,
    vtep_addr: Ipv4Addr,
    underlay_mtu: u32,
) -> Result<[u8; 6]> {
    let mtu = vxlan_mtu(underlay_mtu);
    let index = match link_by_name(handle, VXLAN_DEVICE).await? {
        Some(link) if vxlan_is_current(&link, local_ip) => link.header.index,
        Some(link) => {
            tracing::info!("recreating {VXLAN_DEVICE}: its VNI, port or local address changed");
            handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(netlink(format!("deleting the old {VXLAN_DEVICE}")))?;
            create_vxlan(handle, local_ip, mtu).await?
        }
        None => create_vxlan(handle, local_ip, mtu).await?,
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(netlink(format!("setting the MTU of {VXLAN_DEVICE}")))?;
    ensure_vtep_address(handle, index, vtep_addr).await?;
    // Some kernels and NICs corrupt the inner checksum of vxlan packets when
    // it is offloaded (flannel#1279); flannel turns the offload off too.
    if let Err(e) = ethtool::set_tx_checksum(VXLAN_DEVICE, false) {
        tracing::warn!("turning tx checksum offload off on {VXLAN_DEVICE}: {e}");
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("setting {VXLAN_DEVICE} up")))?;
    let link = link_by_name(handle, VXLAN_DEVICE)
        .await?
        .ok_or_else(|| Error::Netlink {
            what: VXLAN_DEVICE.into(),
            detail: "vanished while being set up".into(),
        })?;
    link_mac(&link).ok_or_else(|| Error::Netlink {
        what: VXLAN_DEVICE.into(),
        detail: "has no MAC address".into(),
    })
}

/// The MTU of the interface holding `local_ip`, the underlay of the
/// tunnel; `None` if no interface has that address.
pub async fn underlay_mtu(handle: &Handle, local_ip: Ipv4Addr) -> Result<Option<u32>> {
    let addresses = handle
        .address()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink("listing addresses"))?;
    let Some(index) = addresses
        .iter()
        .find(|a| address_of(a) == Some(local_ip))
        .map(|a| a.header.index)
    else {
        return Ok(None);
    };
    let mut links = handle.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(netlink(format!("looking up the interface of {local_ip}")))?;
    Ok(link.as_ref().and_then(link_mtu))
}

/// Reads one main-table IPv4 route; `None` for routes that cannot matter
/// (other tables, non-unicast, no destination such as the default route).
fn installed_route(message: &RouteMessage, vxlan_index: Option<u32>) -> Option<InstalledRoute> {
    let header = &message.header;
    if header.address_family != AddressFamily::Inet
        || header.table != RouteHeader::RT_TABLE_MAIN
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    Some(InstalledRoute {
        destination: Cidr {
            base: destination?,
            prefix: header.destination_prefix_length,
        },
        gateway,
        through_vxlan: oif.is_some() && oif == vxlan_index,
        protocol: u8::from(header.protocol),
    })
}

fn neighbour_mac(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLayerAddress(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

fn neighbour_destination(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // AF_BRIDGE (FDB) messages carry the address as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// The kernel's current state, with the route messages kept for deletion.
async fn read_installed(
    handle: &Handle,
    vxlan_index: Option<u32>,
) -> Result<(Installed, Vec<(InstalledRoute, RouteMessage)>)> {
    let messages = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink("listing routes"))?;
    let routes: Vec<(InstalledRoute, RouteMessage)> = messages
        .into_iter()
        .filter_map(|m| installed_route(&m, vxlan_index).map(|r| (r, m)))
        .collect();
    let mut installed = Installed {
        routes: routes.iter().map(|(r, _)| r.clone()).collect(),
        ..Installed::default()
    };
    if let Some(index) = vxlan_index {
        let neighbours = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(netlink("listing neighbours"))?;
        installed.neighbours = neighbours
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                Some(Neighbour {
                    address: neighbour_destination(m)?,
                    mac: neighbour_mac(m)?,
                })
            })
            .collect();
        let fdb = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(netlink("listing FDB entries"))?;
        installed.fdb = fdb
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                Some(FdbEntry {
                    mac: neighbour_mac(m)?,
                    destination: neighbour_destination(m)?,
                })
            })
            .collect();
    }
    Ok((installed, routes))
}

fn neighbour_message(family: AddressFamily, index: u32) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message
}

async fn delete_route(handle: &Handle, message: RouteMessage) -> std::result::Result<(), String> {
    match handle.route().del(message).execute().await {
        Err(e) if !matches!(kernel_code(&e), Some(ESRCH | ENOENT)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

async fn delete_neighbour(
    handle: &Handle,
    index: u32,
    neighbour: &Neighbour,
) -> std::result::Result<(), String> {
    let mut message = neighbour_message(AddressFamily::Inet, index);
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            neighbour.address,
        )));
    match handle.neighbours().del(message).execute().await {
        Err(e) if !matches!(kernel_code(&e), Some(ESRCH | ENOENT)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

async fn delete_fdb(
    handle: &Handle,
    index: u32,
    entry: &FdbEntry,
) -> std::result::Result<(), String> {
    let mut message = neighbour_message(AddressFamily::Bridge, index);
    message.header.flags = NeighbourFlags::Own;
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            entry.destination,
        )));
    match handle.neighbours().del(message).execute().await {
        Err(e) if !matches!(kernel_code(&e), Some(ESRCH | ENOENT)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

async fn add_route(
    handle: &Handle,
    route: &Route,
    vxlan_index: Option<u32>,
) -> std::result::Result<(), String> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination.base, route.destination.prefix)
        .gateway(route.gateway)
        .protocol(RouteProtocol::from(KELP_RTPROT));
    if route.through_vxlan {
        let index = vxlan_index.ok_or_else(|| format!("{VXLAN_DEVICE} does not exist"))?;
        builder = builder.output_interface(index).onlink();
    }
    handle
        .route()
        .add(builder.build())
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn add_neighbour(
    handle: &Handle,
    index: u32,
    neighbour: &Neighbour,
) -> std::result::Result<(), String> {
    // Replace: the kernel may hold a non-permanent entry for the address.
    handle
        .neighbours()
        .add(index, IpAddr::V4(neighbour.address))
        .link_layer_address(&neighbour.mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn add_fdb(handle: &Handle, index: u32, entry: &FdbEntry) -> std::result::Result<(), String> {
    handle
        .neighbours()
        .add_bridge(index, &entry.mac)
        .destination(IpAddr::V4(entry.destination))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn delete_vxlan_device(handle: &Handle) -> Result<()> {
    if let Some(link) = link_by_name(handle, VXLAN_DEVICE).await? {
        match handle.link().del(link.header.index).execute().await {
            Err(e) if kernel_code(&e) != Some(ENODEV) => {
                return Err(netlink(format!("deleting {VXLAN_DEVICE}"))(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Makes the kernel match `plan`: deletes kelp's stale routes, ARP and FDB
/// entries (nodes that are gone, an old backend), adds the missing ones.
/// Idempotent; for the vxlan backend, [`ensure_vxlan`] must have run. With
/// any other backend a leftover vxlan device is deleted. Every change is
/// tried; failures are reported together. Returns what was decided.
pub async fn apply(handle: &Handle, backend: Backend, plan: &Plan) -> Result<Changes> {
    let vxlan_index = if backend == Backend::Vxlan {
        match link_by_name(handle, VXLAN_DEVICE).await? {
            Some(link) => Some(link.header.index),
            // Alone in the cluster: no tunnel yet, and none needed (only
            // routes kelp made some other way can be left to delete).
            None if plan.is_empty() => None,
            None => {
                return Err(Error::Netlink {
                    what: VXLAN_DEVICE.into(),
                    detail: "does not exist; ensure_vxlan must run first".into(),
                });
            }
        }
    } else {
        delete_vxlan_device(handle).await?;
        None
    };
    let (installed, route_messages) = read_installed(handle, vxlan_index).await?;
    let changes = diff(&installed, plan);
    for route in &changes.blocked_routes {
        tracing::warn!("not routing {route}: a route kelp did not make holds that destination");
    }
    let mut failures = Vec::new();
    // Deletions first: a changed route or entry is deleted, then re-added.
    for route in &changes.delete_routes {
        let messages = route_messages
            .iter()
            .filter(|(r, _)| r.is_kelps() && r.as_route().as_ref() == Some(route));
        for (_, message) in messages {
            match delete_route(handle, message.clone()).await {
                Ok(()) => tracing::info!("deleted route {route}"),
                Err(e) => failures.push(format!("deleting route {route}: {e}")),
            }
        }
    }
    if let Some(index) = vxlan_index {
        for neighbour in &changes.delete_neighbours {
            if let Err(e) = delete_neighbour(handle, index, neighbour).await {
                failures.push(format!("deleting neighbour {neighbour}: {e}"));
            }
        }
        for entry in &changes.delete_fdb {
            if let Err(e) = delete_fdb(handle, index, entry).await {
                failures.push(format!("deleting FDB entry {entry}: {e}"));
            }
        }
        // ARP and FDB before the routes, so the first packet finds its way.
        for entry in &changes.add_fdb {
            if let Err(e) = add_fdb(handle, index, entry).await {
                failures.push(format!("adding FDB entry {entry}: {e}"));
            }
        }
        for neighbour in &changes.add_neighbours {
            if let Err(e) = add_neighbour(handle, index, neighbour).await {
                failures.push(format!("adding neighbour {neighbour}: {e}"));
            }
        }
    }
    for route in &changes.add_routes {
        match add_route(handle, route, vxlan_index).await {
            Ok(()) => tracing::info!("added route {route}"),
            Err(e) => failures.push(format!("adding route {route}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(changes)
    } else {
        Err(Error::Netlink {
            what: format!("applying the {backend} pod network plan"),
            detail: failures.join("; "),
        })
    }
}

/// Deletes kelp's vxlan device and every route kelp made (clean-up, and
/// `--pod-network-backend none`).
pub async fn remove_all(handle: &Handle) -> Result<()> {
    delete_vxlan_device(handle).await?;
    let (_, routes) = read_installed(handle, None).await?;
    let mut failures = Vec::new();
    for (route, message) in routes.into_iter().filter(|(r, _)| r.is_kelps()) {
        if let Err(e) = delete_route(handle, message).await {
            failures.push(format!(
                "deleting route {}/{}: {e}",
                route.destination.base, route.destination.prefix
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Netlink {
            what: "removing kelp's routes".into(),
            detail: failures.join("; "),
        })
    }
}

/// The one ethtool ioctl kelp needs, by hand: no crate is worth it.
mod ethtool {
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    /// `ETHTOOL_GTXCSUM`: whether tx checksum offload is on.
    #[cfg(test)]
    const GET_TX_CHECKSUM: u32 = 0x16;
    /// `ETHTOOL_STXCSUM`: turns all tx checksum offload features
    /// (`tx-checksum-ip-generic` among them) on or off, like `ethtool -K`.
    const SET_TX_CHECKSUM: u32 = 0x17;

    /// `struct ethtool_value`.
    #[repr(C)]
    struct Value {
        cmd: u32,
        data: u32,
    }

    fn call(device: &str, value: &mut Value) -> std::io::Result<()> {
        let name = device.as_bytes();
        if name.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        let socket = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain old data, all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        request.ifr_ifru.ifru_data = (value as *mut Value).cast();
        // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it
        // points to; both live until the call returns.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut request) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Turns tx checksum offload of `device` on or off.
    pub(super) fn set_tx_checksum(device: &str, on: bool) -> std::io::Result<()> {
        call(
            device,
            &mut Value {
                cmd: SET_TX_CHECKSUM,
                data: u32::from(on),
            },
        )
    }

    /// Whether tx checksum offload of `device` is on.
    #[cfg(test)]
    pub(super) fn tx_checksum(device: &str) -> std::io::Result<bool> {
        let mut value = Value {
            cmd: GET_TX_CHECKSUM,
            data: 0,
        };
        call(device, &mut value)?;
        Ok(value.data != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("cidr")
    }

    fn peer(name: &str, ip: [u8; 4], pod_cidr: &str, mac: Option<[u8; 6]>) -> Peer {
        Peer {
            name: name.into(),
            node_ip: Ipv4Addr::from(ip),
            pod_cidr: cidr(pod_cidr),
            vtep_mac: mac,
        }
    }

    fn three_nodes() -> Vec<Peer> {
        vec![
            peer("b", [192, 168, 1, 12], "10.42.2.0/24", Some(MAC_B)),
            peer(
                "self",
                [192, 168, 1, 10],
                "10.42.0.0/24",
                Some([2, 0, 0, 0, 0, 1]),
            ),
            peer("a", [192, 168, 1, 11], "10.42.1.0/24", Some(MAC_A)),
        ]
    }

    fn kelps(route: &Route) -> InstalledRoute {
        InstalledRoute {
            destination: route.destination,
            gateway: Some(route.gateway),
            through_vxlan: route.through_vxlan,
            protocol: KELP_RTPROT,
        }
    }

    #[test]
    fn backend_names_round_trip() {
        for backend in [Backend::HostGw, Backend::Vxlan, Backend::None] {
            assert_eq!(backend.to_string().parse::<Backend>().unwrap(), backend);
        }
        assert_eq!("host-gw".parse::<Backend>().unwrap(), Backend::HostGw);
        let error = "wireguard".parse::<Backend>().unwrap_err().to_string();
        assert!(error.contains("\"wireguard\""), "{error}");
        assert!(
            error.contains("host-gw") && error.contains("vxlan") && error.contains("none"),
            "{error}"
        );
    }

    #[test]
    fn vxlan_names_and_sizes() {
        assert!(VXLAN_DEVICE.len() <= 15);
        assert_eq!(vxlan_mtu(1500), 1450);
        assert_eq!(vxlan_mtu(9000), 8950);
        assert_eq!(vxlan_mtu(20), 0);
        assert_eq!(
            vtep_address(cidr("10.42.7.0/24")),
            Ipv4Addr::new(10, 42, 7, 0)
        );
    }

    #[test]
    fn macs_parse_and_format() {
        assert_eq!(
            parse_mac("aa:bb:cc:dd:ee:0f"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])
        );
        assert_eq!(
            format_mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]),
            "aa:bb:cc:dd:ee:0f"
        );
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "a:bb:cc:dd:ee:ff0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    fn node(
        name: &str,
        pod_cidr: Option<&str>,
        addresses: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(kind, address)| NodeAddress {
                            type_: kind.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn peer_from_node_reads_cidr_internal_ip_and_mac() {
        let n = node(
            "a",
            Some("10.42.1.0/24"),
            &[
                ("Hostname", "a"),
                ("InternalIP", "fd00::1"),
                ("InternalIP", "192.168.1.11"),
            ],
            &[(VTEP_MAC_ANNOTATION, "02:00:00:00:00:0a")],
        );
        assert_eq!(
            peer_from_node(&n),
            Some(peer("a", [192, 168, 1, 11], "10.42.1.0/24", Some(MAC_A)))
        );
    }

    #[test]
    fn peer_from_node_prefers_the_public_ip() {
        let n = node(
            "a",
            Some("10.42.1.0/24"),
            &[("InternalIP", "192.168.1.11")],
            &[(PUBLIC_IP_ANNOTATION, "203.0.113.5")],
        );
        let p = peer_from_node(&n).expect("peer");
        assert_eq!(p.node_ip, Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(p.vtep_mac, None);
    }

    #[test]
    fn peer_from_node_needs_cidr_and_address() {
        let no_cidr = node("a", None, &[("InternalIP", "192.168.1.11")], &[]);
        assert_eq!(peer_from_node(&no_cidr), None);
        let no_ip = node(
            "a",
            Some("10.42.1.0/24"),
            &[("ExternalIP", "203.0.113.5")],
            &[],
        );
        assert_eq!(peer_from_node(&no_ip), None);
        let bad_mac = node(
            "a",
            Some("10.42.1.0/24"),
            &[("InternalIP", "192.168.1.11")],
            &[(VTEP_MAC_ANNOTATION, "not a mac")],
        );
        assert_eq!(peer_from_node(&bad_mac).expect("peer").vtep_mac, None);
        let mut bare = Node::default();
        assert_eq!(peer_from_node(&bare), None);
        bare.metadata.name = Some("x".into());
        assert_eq!(peer_from_node(&bare), None);
    }

    #[test]
    fn host_gw_routes_each_other_node_via_its_address() {
        let wanted = plan(Backend::HostGw, "self", &three_nodes());
        assert_eq!(
            wanted.routes,
            vec![
                Route {
                    destination: cidr("10.42.1.0/24"),
                    gateway: Ipv4Addr::new(192, 168, 1, 11),
                    through_vxlan: false,
                },
                Route {
                    destination: cidr("10.42.2.0/24"),
                    gateway: Ipv4Addr::new(192, 168, 1, 12),
                    through_vxlan: false,
                },
            ]
        );
        assert!(wanted.neighbours.is_empty() && wanted.fdb.is_empty());
        assert_eq!(
            wanted.routes[0].to_string(),
            "10.42.1.0/24 via 192.168.1.11"
        );
    }

    #[test]
    fn vxlan_routes_via_vtep_addresses_with_arp_and_fdb() {
        let wanted = plan(Backend::Vxlan, "self", &three_nodes());
        assert_eq!(
            wanted.routes,
            vec![
                Route {
                    destination: cidr("10.42.1.0/24"),
                    gateway: Ipv4Addr::new(10, 42, 1, 0),
                    through_vxlan: true,
                },
                Route {
                    destination: cidr("10.42.2.0/24"),
                    gateway: Ipv4Addr::new(10, 42, 2, 0),
                    through_vxlan: true,
                },
            ]
        );
        assert_eq!(
            wanted.neighbours,
            vec![
                Neighbour {
                    address: Ipv4Addr::new(10, 42, 1, 0),
                    mac: MAC_A
                },
                Neighbour {
                    address: Ipv4Addr::new(10, 42, 2, 0),
                    mac: MAC_B
                },
            ]
        );
        assert_eq!(
            wanted.fdb,
            vec![
                FdbEntry {
                    mac: MAC_A,
                    destination: Ipv4Addr::new(192, 168, 1, 11)
                },
                FdbEntry {
                    mac: MAC_B,
                    destination: Ipv4Addr::new(192, 168, 1, 12)
                },
            ]
        );
        assert_eq!(
            wanted.routes[0].to_string(),
            "10.42.1.0/24 via 10.42.1.0 dev kelp.vxlan onlink"
        );
        assert_eq!(
            wanted.neighbours[0].to_string(),
            "10.42.1.0 lladdr 02:00:00:00:00:0a dev kelp.vxlan"
        );
        assert_eq!(
            wanted.fdb[0].to_string(),
            "02:00:00:00:00:0a dst 192.168.1.11 dev kelp.vxlan"
        );
    }

    #[test]
    fn plans_skip_this_node() {
        for backend in [Backend::HostGw, Backend::Vxlan] {
            let wanted = plan(backend, "self", &three_nodes());
            assert!(
                !wanted
                    .routes
                    .iter()
                    .any(|r| r.destination == cidr("10.42.0.0/24")),
                "{backend}"
            );
            assert!(
                !wanted
                    .fdb
                    .iter()
                    .any(|f| f.destination == Ipv4Addr::new(192, 168, 1, 10))
            );
        }
        let only_self = plan(Backend::HostGw, "self", &three_nodes()[1..2]);
        assert_eq!(only_self, Plan::default());
    }

    #[test]
    fn vxlan_peer_without_mac_gets_nothing_yet() {
        let mut peers = three_nodes();
        peers.retain(|p| p.name != "b");
        peers.push(peer("b", [192, 168, 1, 12], "10.42.2.0/24", None));
        let wanted = plan(Backend::Vxlan, "self", &peers);
        assert_eq!(wanted.routes.len(), 1);
        assert_eq!(wanted.neighbours.len(), 1);
        assert_eq!(wanted.fdb.len(), 1);
        assert_eq!(wanted.routes[0].destination, cidr("10.42.1.0/24"));
        // host-gw needs no MAC.
        assert_eq!(plan(Backend::HostGw, "self", &peers).routes.len(), 2);
    }

    #[test]
    fn none_plans_nothing_and_duplicate_cidrs_route_once() {
        assert_eq!(plan(Backend::None, "self", &three_nodes()), Plan::default());
        let mut peers = three_nodes();
        peers.push(peer("c", [192, 168, 1, 13], "10.42.1.0/24", None));
        let wanted = plan(Backend::HostGw, "self", &peers);
        let to_one: Vec<_> = wanted
            .routes
            .iter()
            .filter(|r| r.destination == cidr("10.42.1.0/24"))
            .collect();
        assert_eq!(to_one.len(), 1);
        assert_eq!(to_one[0].gateway, Ipv4Addr::new(192, 168, 1, 11));
    }

    #[test]
    fn diff_adds_what_is_missing_and_nothing_when_done() {
        let wanted = plan(Backend::Vxlan, "self", &three_nodes());
        let changes = diff(&Installed::default(), &wanted);
        assert_eq!(changes.add_routes, wanted.routes);
        assert_eq!(changes.add_neighbours, wanted.neighbours);
        assert_eq!(changes.add_fdb, wanted.fdb);
        assert!(changes.delete_routes.is_empty() && changes.blocked_routes.is_empty());

        let installed = Installed {
            routes: wanted.routes.iter().map(kelps).collect(),
            neighbours: wanted.neighbours.clone(),
            fdb: wanted.fdb.clone(),
        };
        assert!(diff(&installed, &wanted).is_empty());
    }

    #[test]
    fn diff_removes_a_deleted_nodes_entries_and_leaves_foreign_routes_alone() {
        let before = plan(Backend::Vxlan, "self", &three_nodes());
        let foreign = InstalledRoute {
            destination: cidr("192.168.77.0/24"),
            gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            through_vxlan: false,
            protocol: 4, // static
        };
        let connected = InstalledRoute {
            destination: cidr("10.42.0.0/24"),
            gateway: None,
            through_vxlan: false,
            protocol: 2, // kernel
        };
        let mut routes: Vec<InstalledRoute> = before.routes.iter().map(kelps).collect();
        routes.push(foreign.clone());
        routes.push(connected);
        let installed = Installed {
            routes,
            neighbours: before.neighbours.clone(),
            fdb: before.fdb.clone(),
        };
        let mut peers = three_nodes();
        peers.retain(|p| p.name != "b");
        let after = plan(Backend::Vxlan, "self", &peers);
        let changes = diff(&installed, &after);
        assert_eq!(changes.delete_routes, vec![before.routes[1].clone()]);
        assert_eq!(
            changes.delete_neighbours,
            vec![before.neighbours[1].clone()]
        );
        assert_eq!(changes.delete_fdb, vec![before.fdb[1].clone()]);
        assert!(changes.add_routes.is_empty());
        assert!(changes.add_neighbours.is_empty() && changes.add_fdb.is_empty());

        // Nothing wanted at all: still only kelp's routes go.
        let everything = diff(&installed, &Plan::default());
        assert_eq!(everything.delete_routes, before.routes);
        assert!(
            !everything
                .delete_routes
                .iter()
                .any(|r| r.destination == foreign.destination)
        );
    }

    #[test]
    fn diff_does_not_override_a_foreign_route_to_a_pod_cidr() {
        let wanted = plan(Backend::HostGw, "self", &three_nodes());
        let installed = Installed {
            routes: vec![InstalledRoute {
                destination: cidr("10.42.2.0/24"),
                gateway: Some(Ipv4Addr::new(192, 168, 1, 99)),
                through_vxlan: false,
                protocol: 4,
            }],
            ..Installed::default()
        };
        let changes = diff(&installed, &wanted);
        assert_eq!(changes.add_routes, vec![wanted.routes[0].clone()]);
        assert_eq!(changes.blocked_routes, vec![wanted.routes[1].clone()]);
        assert!(changes.delete_routes.is_empty());
    }

    #[test]
    fn diff_replaces_kelps_routes_when_the_backend_or_a_mac_changes() {
        let host_gw = plan(Backend::HostGw, "self", &three_nodes());
        let installed = Installed {
            routes: host_gw.routes.iter().map(kelps).collect(),
            ..Installed::default()
        };
        let vxlan = plan(Backend::Vxlan, "self", &three_nodes());
        let changes = diff(&installed, &vxlan);
        assert_eq!(changes.delete_routes, host_gw.routes);
        assert_eq!(changes.add_routes, vxlan.routes);
        assert!(changes.blocked_routes.is_empty());

        let installed = Installed {
            routes: vxlan.routes.iter().map(kelps).collect(),
            neighbours: vxlan.neighbours.clone(),
            fdb: vxlan.fdb.clone(),
        };
        let mut peers = three_nodes();
        peers[0].vtep_mac = Some([2, 0, 0, 0, 0, 0xbb]);
        let changes = diff(&installed, &plan(Backend::Vxlan, "self", &peers));
        assert!(changes.delete_routes.is_empty() && changes.add_routes.is_empty());
        assert_eq!(changes.delete_neighbours, vec![vxlan.neighbours[1].clone()]);
        assert_eq!(changes.add_neighbours[0].mac, [2, 0, 0, 0, 0, 0xbb]);
        assert_eq!(changes.delete_fdb, vec![vxlan.fdb[1].clone()]);
        assert_eq!(changes.add_fdb[0].mac, [2, 0, 0, 0, 0, 0xbb]);
    }

    // -- Real netlink, only ever inside a network namespace of its own. --

    /// Runs `f` on a thread that has left the host's network namespace for a
    /// fresh one; the namespace, and everything made in it, dies with the
    /// thread, also when `f` panics. `false` (with a message) when this
    /// process may not make namespaces.
    fn in_fresh_netns(f: impl FnOnce() + Send + 'static) -> bool {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: creating a network namespace needs root");
            return false;
        }
        let thread = std::thread::spawn(move || {
            let namespace = || {
                std::fs::metadata("/proc/thread-self/ns/net")
                    .expect("own network namespace")
                    .ino()
            };
            let host = namespace();
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("skipping: unshare(CLONE_NEWNET): {e}");
                return false;
            }
            // Never go on in the host's namespace.
            assert_ne!(
                namespace(),
                host,
                "unshare left the thread in the host namespace"
            );
            f();
            true
        });
        match thread.join() {
            Ok(ran) => ran,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    /// Output of an iproute2 command run in the test's namespace (children
    /// inherit the thread's namespace); `None` if the tool is missing.
    fn iproute2(tool: &str, args: &[&str]) -> Option<String> {
        let output = std::process::Command::new(tool).args(args).output().ok()?;
        assert!(output.status.success(), "{tool} {args:?}: {output:?}");
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn must_index(handle: &Handle, name: &str) -> u32 {
        link_by_name(handle, name)
            .await
            .expect("lookup")
            .unwrap_or_else(|| panic!("{name} missing"))
            .header
            .index
    }

    async fn installed_now(handle: &Handle) -> Installed {
        let vxlan = link_by_name(handle, VXLAN_DEVICE)
            .await
            .expect("lookup")
            .map(|l| l.header.index);
        read_installed(handle, vxlan).await.expect("read").0
    }

    /// The kernel lists entries in its own order.
    fn assert_same_set<T: PartialEq + fmt::Debug>(got: &[T], wanted: &[T]) {
        assert!(
            got.len() == wanted.len() && wanted.iter().all(|w| got.contains(w)),
            "got {got:?}, wanted {wanted:?}"
        );
    }

    fn kelps_routes(installed: &Installed) -> Vec<Route> {
        installed
            .routes
            .iter()
            .filter(|r| r.is_kelps())
            .filter_map(InstalledRoute::as_route)
            .collect()
    }

    #[test]
    fn netlink_in_a_private_namespace() {
        in_fresh_netns(|| run(netlink_scenario()));
    }

    async fn netlink_scenario() {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
        tokio::spawn(connection);
        let handle = &handle;
        let local = Ipv4Addr::new(192, 168, 50, 1);

        // Underlay: a veth pair (dummy devices may not be built in).
        handle
            .link()
            .add(rtnetlink::LinkVeth::new("kelp-u0", "kelp-u1").build())
            .execute()
            .await
            .expect("veth");
        let u0 = must_index(handle, "kelp-u0").await;
        let u1 = must_index(handle, "kelp-u1").await;
        handle
            .address()
            .add(u0, IpAddr::V4(local), 24)
            .execute()
            .await
            .expect("underlay address");
        for index in [u0, u1] {
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .expect("up");
        }
        assert_eq!(underlay_mtu(handle, local).await.unwrap(), Some(1500));
        // Someone else's routes: one elsewhere, one on a pod CIDR.
        for (base, prefix) in [
            (Ipv4Addr::new(10, 99, 0, 0), 16),
            (Ipv4Addr::new(10, 42, 9, 0), 24),
        ] {
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(base, prefix)
                        .gateway(Ipv4Addr::new(192, 168, 50, 254))
                        .build(),
                )
                .execute()
                .await
                .expect("foreign route");
        }
        let foreign_count = |installed: &Installed| {
            installed
                .routes
                .iter()
                .filter(|r| r.protocol == u8::from(RouteProtocol::Static))
                .count()
        };

        let peers = vec![
            peer("self", [192, 168, 50, 1], "10.42.0.0/24", None),
            peer("a", [192, 168, 50, 2], "10.42.1.0/24", Some(MAC_A)),
            peer("b", [192, 168, 50, 3], "10.42.2.0/24", Some(MAC_B)),
            peer(
                "c",
                [192, 168, 50, 4],
                "10.42.9.0/24",
                Some([2, 0, 0, 0, 0, 0x0c]),
            ),
        ];
        let without_b: Vec<Peer> = peers.iter().filter(|p| p.name != "b").cloned().collect();

        // host-gw: two peers, then one.
        let wanted = plan(Backend::HostGw, "self", &peers);
        let changes = apply(handle, Backend::HostGw, &wanted)
            .await
            .expect("apply host-gw");
        assert_eq!(changes.blocked_routes.len(), 1, "{changes:?}");
        let installed = installed_now(handle).await;
        assert_same_set(&kelps_routes(&installed), &wanted.routes[..2]);
        assert_eq!(foreign_count(&installed), 2);
        if let Some(text) = iproute2("ip", &["route", "show", "proto", "75"]) {
            assert!(
                text.contains("10.42.1.0/24 via 192.168.50.2 dev kelp-u0"),
                "{text}"
            );
            assert!(
                text.contains("10.42.2.0/24 via 192.168.50.3 dev kelp-u0"),
                "{text}"
            );
            assert!(!text.contains("10.42.9.0"), "{text}");
        }
        let again = apply(handle, Backend::HostGw, &wanted)
            .await
            .expect("again");
        assert!(again.is_empty(), "{again:?}");
        apply(
            handle,
            Backend::HostGw,
            &plan(Backend::HostGw, "self", &without_b),
        )
        .await
        .expect("apply host-gw without b");
        let installed = installed_now(handle).await;
        assert_eq!(
            kelps_routes(&installed),
            vec![Route {
                destination: cidr("10.42.1.0/24"),
                gateway: Ipv4Addr::new(192, 168, 50, 2),
                through_vxlan: false,
            }]
        );
        assert_eq!(foreign_count(&installed), 2);

        // vxlan.
        let mac = match ensure_vxlan(handle, local, Ipv4Addr::new(10, 42, 0, 0), 1500).await {
            Ok(mac) => mac,
            Err(Error::VxlanUnsupported { detail }) => {
                eprintln!("skipping the vxlan half: {detail}");
                remove_all(handle).await.expect("remove_all");
                return;
            }
            Err(e) => panic!("ensure_vxlan: {e}"),
        };
        let link = link_by_name(handle, VXLAN_DEVICE)
            .await
            .unwrap()
            .expect("device");
        assert_eq!(link_mtu(&link), Some(1450));
        assert!(vxlan_is_current(&link, local));
        let info = vxlan_info(&link).expect("vxlan info");
        assert!(info.contains(&InfoVxlan::Learning(false)), "{info:?}");
        let addresses = ipv4_addresses_of(handle, link.header.index).await.unwrap();
        assert_eq!(addresses.len(), 1);
        assert_eq!(address_of(&addresses[0]), Some(Ipv4Addr::new(10, 42, 0, 0)));
        assert_eq!(addresses[0].header.prefix_len, 32);
        assert!(!ethtool::tx_checksum(VXLAN_DEVICE).expect("ethtool"));
        // Kept, not recreated, when nothing changed.
        assert_eq!(
            ensure_vxlan(handle, local, Ipv4Addr::new(10, 42, 0, 0), 1500)
                .await
                .unwrap(),
            mac
        );

        let wanted = plan(Backend::Vxlan, "self", &peers);
        let changes = apply(handle, Backend::Vxlan, &wanted)
            .await
            .expect("apply vxlan");
        assert_eq!(changes.blocked_routes.len(), 1, "{changes:?}");
        let installed = installed_now(handle).await;
        assert_same_set(&kelps_routes(&installed), &wanted.routes[..2]);
        // c's ARP and FDB entries are harmless without its route; they stay.
        assert_same_set(&installed.neighbours, &wanted.neighbours);
        assert_same_set(&installed.fdb, &wanted.fdb);
        assert_eq!(foreign_count(&installed), 2);
        if let Some(text) = iproute2("ip", &["route", "show", "proto", "75"]) {
            assert!(
                text.contains("10.42.1.0/24 via 10.42.1.0 dev kelp.vxlan onlink"),
                "{text}"
            );
            assert!(
                text.contains("10.42.2.0/24 via 10.42.2.0 dev kelp.vxlan onlink"),
                "{text}"
            );
        }
        if let Some(text) = iproute2("ip", &["neigh", "show", "dev", VXLAN_DEVICE]) {
            assert!(
                text.contains("10.42.1.0 lladdr 02:00:00:00:00:0a PERMANENT"),
                "{text}"
            );
            assert!(
                text.contains("10.42.2.0 lladdr 02:00:00:00:00:0b PERMANENT"),
                "{text}"
            );
        }
        if let Some(text) = iproute2("bridge", &["fdb", "show", "dev", VXLAN_DEVICE]) {
            assert!(
                text.contains("02:00:00:00:00:0a dst 192.168.50.2 self permanent"),
                "{text}"
            );
            assert!(
                text.contains("02:00:00:00:00:0b dst 192.168.50.3 self permanent"),
                "{text}"
            );
        }
        let again = apply(handle, Backend::Vxlan, &wanted).await.expect("again");
        assert!(again.is_empty(), "{again:?}");

        let wanted = plan(Backend::Vxlan, "self", &without_b);
        apply(handle, Backend::Vxlan, &wanted)
            .await
            .expect("apply vxlan without b");
        let installed = installed_now(handle).await;
        assert_same_set(&kelps_routes(&installed), &wanted.routes[..1]);
        assert_same_set(&installed.neighbours, &wanted.neighbours);
        assert_same_set(&installed.fdb, &wanted.fdb);
        assert!(!installed.fdb.iter().any(|f| f.mac == MAC_B));

        // A new local address recreates the device.
        handle
            .address()
            .add(u0, IpAddr::V4(Ipv4Addr::new(192, 168, 50, 9)), 24)
            .execute()
            .await
            .expect("second address");
        ensure_vxlan(
            handle,
            Ipv4Addr::new(192, 168, 50, 9),
            Ipv4Addr::new(10, 42, 0, 0),
            1400,
        )
        .await
        .expect("recreate");
        let link = link_by_name(handle, VXLAN_DEVICE)
            .await
            .unwrap()
            .expect("device");
        assert!(vxlan_is_current(&link, Ipv4Addr::new(192, 168, 50, 9)));
        assert_eq!(link_mtu(&link), Some(1350));

        remove_all(handle).await.expect("remove_all");
        let installed = installed_now(handle).await;
        assert!(kelps_routes(&installed).is_empty());
        assert!(link_by_name(handle, VXLAN_DEVICE).await.unwrap().is_none());
        assert_eq!(foreign_count(&installed), 2);
    }
}
