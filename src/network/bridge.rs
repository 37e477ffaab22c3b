//! Netlink work of the CNI plugin: the node bridge, a veth pair per pod, the
//! pod side's address and default route inside the pod's network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Errors of the netlink work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink request failed.
    #[error("{what}: {detail}")]
    Netlink {
        /// The step that failed.
        what: String,
        /// The kernel's answer.
        detail: String,
    },
    /// Entering the pod's network namespace failed.
    #[error("network namespace {path}: {detail}")]
    Namespace {
        /// The namespace path.
        path: String,
        /// What went wrong.
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

/// What one pod's attachment looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The veth end on the host, enslaved to the bridge.
    pub host_veth: String,
    /// The pod's address.
    pub address: Ipv4Addr,
    /// Prefix length of the pod CIDR.
    pub prefix: u8,
    /// The bridge address, the pod's default gateway.
    pub gateway: Ipv4Addr,
}

/// The host-side veth name of a pod's interface: stable, at most 15 bytes.
pub fn host_veth_name(container: &str, ifname: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (container, ifname).hash(&mut hasher);
    format!("veth{:08x}", hasher.finish() as u32)
}

/// Runs `f` with a netlink handle on a private single-threaded runtime.
fn with_handle<T>(f: impl AsyncFnOnce(Handle) -> Result<T>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Netlink {
            what: "starting runtime".into(),
            detail: e.to_string(),
        })?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Netlink {
            what: "opening netlink".into(),
            detail: e.to_string(),
        })?;
        tokio::spawn(connection);
        f(handle).await
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}

/// Creates the bridge with the gateway address if missing, and sets it up.
async fn ensure_bridge(handle: &Handle, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<u32> {
    let index = match index_of(handle, name).await? {
        Some(index) => index,
        None => {
            handle
                .link()
                .add(LinkBridge::new(name).up().build())
                .execute()
                .await
                .map_err(netlink(format!("creating bridge {name}")))?;
            index_of(handle, name)
                .await?
                .ok_or_else(|| Error::Netlink {
                    what: format!("bridge {name}"),
                    detail: "missing after creation".into(),
                })?
        }
    };
    let has_gateway = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(netlink("listing bridge addresses"))?
        .iter()
        .any(|a| a.attributes.iter().any(|attr| matches!(attr, rtnetlink::packet_route::address::AddressAttribute::Address(ip) if *ip == IpAddr::V4(gateway))));
    if !has_gateway {
        handle
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
            .map_err(netlink("adding the gateway address"))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("setting the bridge up"))?;
    Ok(index)
}

/// Attaches the pod: bridge, veth pair, the pod end moved into `netns` and
/// renamed `ifname` with `address/prefix` and a default route via `gateway`.
pub fn attach(
    bridge: &str,
    netns: &Path,
    container: &str,
    ifname: &str,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<Attachment> {
    let host_veth = host_veth_name(container, ifname);
    let temporary = format!("tmp{}", &host_veth[4..]);
    let ns = std::fs::File::open(netns).map_err(|e| Error::Namespace {
        path: netns.display().to_string(),
        detail: e.to_string(),
    })?;
    {
        use std::os::fd::AsRawFd;
        let fd = ns.as_raw_fd();
        let host_veth = host_veth.clone();
        let temporary = temporary.clone();
        with_handle(async move |handle| {
            let bridge_index = ensure_bridge(&handle, bridge, gateway, prefix).await?;
            if index_of(&handle, &host_veth).await?.is_none() {
                handle
                    .link()
                    .add(LinkVeth::new(&host_veth, &temporary).build())
                    .execute()
                    .await
                    .map_err(netlink("creating the veth pair"))?;
            }
            let host_index =
                index_of(&handle, &host_veth)
                    .await?
                    .ok_or_else(|| Error::Netlink {
                        what: host_veth.clone(),
                        detail: "missing after creation".into(),
                    })?;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(host_index)
                        .controller(bridge_index)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(netlink("enslaving the host veth"))?;
            // Hairpin: a pod reaching itself through its Service gets its
            // own (DNATed, masqueraded) packets back out of the same port.
            // Over netlink, not sysfs: /sys may show another network
            // namespace's devices (a node run in a namespace of its own).
            handle
                .link()
                .set_port(
                    rtnetlink::LinkBridgePort::new(host_index)
                        .hairpin(true)
                        .build(),
                )
                .execute()
                .await
                .map_err(netlink("setting hairpin mode on the host veth"))?;
            if let Some(peer) = index_of(&handle, &temporary).await? {
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(peer).setns_by_fd(fd).build())
                    .execute()
                    .await
                    .map_err(netlink("moving the veth into the pod"))?;
            }
            Ok(())
        })?;
    }
    in_namespace(netns, ns, {
        let ifname = ifname.to_string();
        move || {
            with_handle(async move |handle| {
                set_loopback_up(&handle).await?;
                let index = match index_of(&handle, &temporary).await? {
                    Some(index) => {
                        handle
                            .link()
                            .set(
                                LinkUnspec::new_with_index(index)
                                    .name(ifname.clone())
                                    .build(),
                            )
                            .execute()
                            .await
                            .map_err(netlink("renaming the pod interface"))?;
                        index
                    }
                    None => index_of(&handle, &ifname)
                        .await?
                        .ok_or_else(|| Error::Netlink {
                            what: ifname.clone(),
                            detail: "no pod interface".into(),
                        })?,
                };
                match handle
                    .address()
                    .add(index, IpAddr::V4(address), prefix)
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // EEXIST: an earlier ADD already set it.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => {}
                    Err(e) => return Err(netlink("adding the pod address")(e)),
                }
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .map_err(netlink("setting the pod interface up"))?;
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .build();
                match handle.route().add(route).execute().await {
                    Ok(()) => Ok(()),
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => Ok(()),
                    Err(e) => Err(netlink("adding the default route")(e)),
                }
            })
        }
    })?;
    Ok(Attachment {
        host_veth,
        address,
        prefix,
        gateway,
    })
}

/// Removes the pod's veth pair (deleting the host end deletes both). Missing is fine.
pub fn detach(container: &str, ifname: &str) -> Result<()> {
    let host_veth = host_veth_name(container, ifname);
    with_handle(async move |handle| {
        if let Some(index) = index_of(&handle, &host_veth).await? {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(netlink("deleting the veth pair"))?;
        }
        Ok(())
    })
}

async fn set_loopback_up(handle: &Handle) -> Result<()> {
    if let Some(lo) = index_of(handle, "lo").await? {
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(netlink("setting lo up"))?;
    }
    Ok(())
}

/// Sets the loopback interface of the namespace at `netns` up (the CNI
/// `loopback` plugin's job, which containerd runs for every pod).
pub fn loopback_up(netns: &Path) -> Result<()> {
    let ns = std::fs::File::open(netns).map_err(|e| Error::Namespace {
        path: netns.display().to_string(),
        detail: e.to_string(),
    })?;
    in_namespace(netns, ns, || {
        with_handle(async move |handle| set_loopback_up(&handle).await)
    })
}

/// Runs `f` on a fresh thread that has joined the network namespace `ns`, so
/// the caller's threads never change namespace.
fn in_namespace<T: Send + 'static>(
    path: &Path,
    ns: std::fs::File,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path_text = path.display().to_string();
    let thread = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::Namespace {
                path: path_text,
                detail: e.to_string(),
            }
        })?;
        f()
    });
    thread.join().map_err(|_| Error::Namespace {
        path: path.display().to_string(),
        detail: "namespace thread panicked".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_short_and_stable() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef", "eth0");
        assert!(a.len() <= 15 && a.starts_with("veth"));
        assert_eq!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth1")
        );
    }
}
