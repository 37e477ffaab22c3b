//! EndpointSlices (discovery.k8s.io/v1) for a Service's backends: one
//! slice per Service and address family, owned by the Service, endpoints
//! with ready/serving/terminating conditions (terminating pods stay listed,
//! not ready), labelled as upstream's controller labels them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::endpoints::{Backend, HEADLESS};

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

/// The slice's endpoints and ports for `backends`.
pub fn contents(backends: &[Backend]) -> (Vec<Endpoint>, Option<Vec<EndpointPort>>) {
    let endpoints = backends
        .iter()
        .map(|b| Endpoint {
            addresses: vec![b.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(b.ready && !b.terminating),
                serving: Some(b.ready),
                terminating: Some(b.terminating),
            }),
            hostname: b.hostname.clone(),
            node_name: b.node.clone(),
            target_ref: Some(b.target.clone()),
            ..Default::default()
        })
        .collect();
    let ports = backends.first().map(|b| {
        b.ports
            .iter()
            .map(|(name, port, protocol)| EndpointPort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some(protocol.clone()),
                ..Default::default()
            })
            .collect()
    });
    (endpoints, ports)
}

/// Makes the Service's slice say what `backends` say.
pub async fn sync(
    client: &kube::Client,
    service: &Service,
    backends: &[Backend],
    slices: &Store<EndpointSlice>,
) -> Result<(), kube::Error> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let mut ours: Vec<std::sync::Arc<EndpointSlice>> = slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|s| s.labels().get(SERVICE_NAME) == Some(&name))
        .filter(|s| s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER))
        .collect();
    ours.sort_by_key(|s| s.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut labels: BTreeMap<String, String> = service.labels().clone();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS.into(), String::new());
    }
    let (endpoints, ports) = contents(backends);
    // One name per Service, so a pass that runs before the cache has seen
    // the slice an earlier pass created gets a conflict instead of making a
    // duplicate (a generated name made one per pass under load).
    let slice_name = slice_name(service);
    // Extra slices (an earlier layout, or such duplicates) go.
    for extra in ours.iter().filter(|s| s.name_any() != slice_name) {
        let _ = api
            .delete(&extra.name_any(), &DeleteParams::default())
            .await;
    }
    let owner = crate::runtime::controller_ref(service);
    let mut slice = EndpointSlice {
        metadata: kube::api::ObjectMeta {
            name: Some(slice_name.clone()),
            namespace: Some(namespace),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports,
    };
    match ours.iter().find(|s| s.name_any() == slice_name) {
        Some(current)
            if current.endpoints == slice.endpoints
                && current.ports == slice.ports
                && current.metadata.labels == slice.metadata.labels =>
        {
            Ok(())
        }
        Some(current) => {
            slice.metadata.resource_version = current.metadata.resource_version.clone();
            api.replace(&slice_name, &PostParams::default(), &slice)
                .await
                .map(|_| ())
        }
        None => match api.create(&PostParams::default(), &slice).await {
            // The cache has not caught up with an earlier pass: next time.
            Err(e) if crate::runtime::already_exists(&e) => Ok(()),
            other => other.map(|_| ()),
        },
    }
}

/// The Service's slice name: `<service>-<5 hex digits of its uid>`, shaped
/// like upstream's generated names but the same on every pass.
pub fn slice_name(service: &Service) -> String {
    use sha2::Digest;
    let uid = service.metadata.uid.clone().unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(uid.as_bytes()));
    format!("{}-{}", service.name_any(), &digest[..5])
}
