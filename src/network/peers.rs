//! The node's side of pod networking across nodes: watches the Nodes,
//! plans routes to every other node's pod CIDR ([`super::routes::plan`]) and
//! applies them; with vxlan, makes the tunnel device once another node
//! exists and publishes its MAC in this Node's annotations.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::routes::{self, Backend, Peer};
use crate::runtime::Informers;

/// How often the routes are re-applied without a change (someone deleted one).
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps this node's routes to the other nodes' pods until dropped: reads the Nodes from the node's shared cache, publishes the
/// vxlan MAC on its own Node as `client` (the kubelet).
pub async fn run(
    informers: Informers,
    client: kube::Client,
    node_name: String,
    node_ip: Ipv4Addr,
    backend: Backend,
) {
    if backend == Backend::None {
        return;
    }
    let (connection, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(err = %e, "opening netlink; pods will not reach other nodes");
            return;
        }
    };
    tokio::spawn(connection);
    let nodes: Api<Node> = Api::all(client);
    let (store, mut changes) = informers.cache::<Node>();
    let mut published_mac: Option<[u8; 6]> = None;
    // Plan only from a complete list: an empty store would delete every route.
    if !informers.informer::<Node>().ready().await {
        return;
    }
    let mut ticker = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            change = changes.next() => if change.is_none() { return },
            _ = ticker.tick() => {}
        }
        // One pass per burst of events.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(changes.next()) {}
        let all: Vec<Peer> = store
            .state()
            .iter()
            .filter_map(|n| routes::peer_from_node(n))
            .collect();
        let own = all.iter().find(|p| p.name == node_name).cloned();
        let others = all.iter().filter(|p| p.name != node_name).count();
        if backend == Backend::Vxlan
            && others > 0
            && let Some(own) = &own
        {
            match ensure_tunnel(&handle, node_ip, own).await {
                Ok(mac) if published_mac != Some(mac) => {
                    let patch = json!({"metadata": {"annotations": {
                        routes::VTEP_MAC_ANNOTATION: routes::format_mac(mac),
                        routes::BACKEND_ANNOTATION: backend.as_str(),
                        routes::PUBLIC_IP_ANNOTATION: node_ip.to_string(),
                    }}});
                    match nodes
                        .patch(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => published_mac = Some(mac),
                        Err(e) => tracing::warn!(err = %e, "publishing the vxlan MAC on the Node"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(err = %e, "setting up the vxlan device");
                    continue;
                }
            }
        }
        let plan = routes::plan(backend, &node_name, &all);
        match routes::apply(&handle, backend, &plan).await {
            Ok(changes) if !changes.is_empty() => {
                tracing::info!(backend = %backend, peers = others, "routes to other nodes' pods updated");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(err = %e, "applying routes to other nodes' pods"),
        }
    }
}

async fn ensure_tunnel(
    handle: &rtnetlink::Handle,
    node_ip: Ipv4Addr,
    own: &Peer,
) -> routes::Result<[u8; 6]> {
    let mtu = routes::underlay_mtu(handle, node_ip).await?.unwrap_or(1500);
    routes::ensure_vxlan(handle, node_ip, routes::vtep_address(own.pod_cidr), mtu).await
}
