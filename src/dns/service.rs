//! How pods reach the cluster DNS: the `kube-dns` Service in `kube-system`
//! (ClusterIP = `--cluster-dns`, ports 53/UDP `dns` and 53/TCP `dns-tcp`,
//! k3s's labels) has no selector, because no pod serves DNS: each node's
//! kelp does. So each node keeps an EndpointSlice of its own,
//! `kube-dns-<node>`, listing its DNS address with its `nodeName`, and the
//! Service has `internalTrafficPolicy: Local`, so that a node's service
//! proxy sends its pods' queries to the DNS on the same node. The slice is
//! owned by the Node, so it goes when the Node does. Both are re-created
//! when deleted and corrected when edited (only differences are written).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

/// The Service's namespace and name (what every cluster's pods expect).
pub const NAMESPACE: &str = "kube-system";
/// The Service's name.
pub const NAME: &str = "kube-dns";
/// The slices' `endpointslice.kubernetes.io/managed-by` value: kelp's DNS,
/// not the EndpointSlice controller (which leaves selector-less Services alone).
pub const MANAGER: &str = "dns.kelp.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// What this node publishes.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The node's name.
    pub node: String,
    /// Where this node's DNS listens.
    pub address: IpAddr,
    /// The Service's ClusterIP (`--cluster-dns`).
    pub cluster_ip: IpAddr,
}

/// The Service's ports, as k3s's CoreDNS has them: DNS over UDP and TCP,
/// and CoreDNS's metrics.
const PORTS: [(&str, &str, i32); 3] = [
    ("dns", "UDP", super::PORT as i32),
    ("dns-tcp", "TCP", super::PORT as i32),
    ("metrics", "TCP", super::metrics::PORT as i32),
];

/// The `kube-dns` Service as kelp wants it.
pub fn service(cluster_ip: IpAddr) -> Service {
    let labels = BTreeMap::from([
        ("k8s-app".to_string(), "kube-dns".to_string()),
        (
            "kubernetes.io/cluster-service".to_string(),
            "true".to_string(),
        ),
        ("kubernetes.io/name".to_string(), "kelp-dns".to_string()),
    ]);
    let ports = PORTS
        .iter()
        .map(|(name, protocol, port)| ServicePort {
            name: Some((*name).into()),
            port: *port,
            protocol: Some((*protocol).into()),
            target_port: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(*port),
            ),
            ..Default::default()
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.to_string()),
            cluster_ips: Some(vec![cluster_ip.to_string()]),
            ports: Some(ports),
            internal_traffic_policy: Some("Local".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// This node's slice of the Service's endpoints, owned by `node`.
pub fn slice(registration: &Registration, node: &Node) -> EndpointSlice {
    let labels = BTreeMap::from([
        (SERVICE_NAME.to_string(), NAME.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
    ]);
    let ports = PORTS
        .iter()
        .map(|(name, protocol, port)| EndpointPort {
            name: Some((*name).into()),
            port: Some(*port),
            protocol: Some((*protocol).into()),
            ..Default::default()
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&registration.node)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels),
            owner_references: Some(vec![crate::runtime::controller_ref(node)]),
            ..Default::default()
        },
        address_type: match registration.address {
            IpAddr::V4(_) => "IPv4".into(),
            IpAddr::V6(_) => "IPv6".into(),
        },
        endpoints: vec![Endpoint {
            addresses: vec![registration.address.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(registration.node.clone()),
            ..Default::default()
        }],
        ports: Some(ports),
    }
}

/// The name of a node's slice.
pub fn slice_name(node: &str) -> String {
    format!("{NAME}-{node}")
}

/// Makes the Service and this node's slice exist as wanted, reading the
/// current state from the caches and writing only what differs.
pub async fn ensure(
    client: &kube::Client,
    registration: &Registration,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Result<(), kube::Error> {
    let services_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let current = services
        .state()
        .into_iter()
        .find(|s| s.namespace().as_deref() == Some(NAMESPACE) && s.name_any() == NAME);
    match current {
        None => {
            services_api
                .create(&PostParams::default(), &service(registration.cluster_ip))
                .await
                .map(|_| ())
                .or_else(ignore_conflict)?;
        }
        // Someone gave it a selector: pods would then be its endpoints and
        // the controllers would fight over its slices; put it back.
        Some(current)
            if current
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| !s.is_empty()) =>
        {
            let patch = serde_json::json!({"spec": {"selector": null}});
            services_api
                .patch(
                    NAME,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
        }
        Some(_) => {}
    }
    let name = slice_name(&registration.node);
    let current = slices
        .state()
        .into_iter()
        .find(|s| s.namespace().as_deref() == Some(NAMESPACE) && s.name_any() == name);
    // The owner's uid is not compared: a slice owned by an earlier Node of
    // the same name is collected, and then made anew for this one.
    let owner_of = |s: &EndpointSlice| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.kind.clone(), o.name.clone()))
            .collect::<Vec<_>>()
    };
    let placeholder: Node = Node {
        metadata: ObjectMeta {
            name: Some(registration.node.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let shape = slice(registration, &placeholder);
    if let Some(current) = &current
        && current.endpoints == shape.endpoints
        && current.ports == shape.ports
        && current.address_type == shape.address_type
        && current.metadata.labels == shape.metadata.labels
        && owner_of(current) == owner_of(&shape)
    {
        return Ok(());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&registration.node).await?;
    let mut wanted = slice(registration, &node);
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    match current {
        None => slices_api
            .create(&PostParams::default(), &wanted)
            .await
            .map(|_| ())
            .or_else(ignore_conflict),
        Some(current) => {
            wanted.metadata.resource_version = current.metadata.resource_version.clone();
            slices_api
                .replace(&name, &PostParams::default(), &wanted)
                .await
                .map(|_| ())
        }
    }
}

/// A create that lost a race with another writer is as good as done.
fn ignore_conflict(e: kube::Error) -> Result<(), kube::Error> {
    if crate::runtime::already_exists(&e) {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_has_no_selector_and_keeps_traffic_on_the_node() {
        let svc = service("10.43.0.10".parse().unwrap());
        let spec = svc.spec.unwrap();
        assert!(spec.selector.is_none());
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.protocol.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".into(), "UDP".into(), 53),
                ("dns-tcp".into(), "TCP".into(), 53),
                ("metrics".into(), "TCP".into(), 9153)
            ]
        );
        assert_eq!(svc.metadata.labels.unwrap()["k8s-app"], "kube-dns");
    }

    #[test]
    fn each_node_lists_its_own_address() {
        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n1", "uid": "u-n1"}}))
                .unwrap();
        let registration = Registration {
            node: "n1".into(),
            address: "10.42.0.1".parse().unwrap(),
            cluster_ip: "10.43.0.10".parse().unwrap(),
        };
        let slice = slice(&registration, &node);
        assert_eq!(slice.metadata.name.as_deref(), Some("kube-dns-n1"));
        assert_eq!(slice.endpoints[0].addresses, ["10.42.0.1"]);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("n1"));
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels[SERVICE_NAME], "kube-dns");
        assert_eq!(labels[MANAGED_BY], MANAGER);
        let owner = &slice.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "u-n1"));
    }
}
