//! Endpoints and EndpointSlices: for every Service with a selector, the
//! addresses of the pods it selects, ready ones apart from the rest, with
//! each Service port resolved to the pod's port (numbers, or container port
//! names). Both are recomputed from reflector caches on any Service or pod
//! change, and only differences are written; Endpoints of a deleted Service
//! go with it (its EndpointSlices are owned by it and collected).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::Context;
use super::endpointslice;
use crate::api::values::pods;

/// Marks Endpoints this controller manages (upstream's annotation).
const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Headless Services' Endpoints and slices carry this label.
pub const HEADLESS: &str = "service.kubernetes.io/headless";

/// One pod behind a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// The pod's IP.
    pub ip: String,
    /// Its node.
    pub node: Option<String>,
    /// The pod itself.
    pub target: ObjectReference,
    /// Set when the pod's hostname and subdomain name it under the Service.
    pub hostname: Option<String>,
    /// Ready (or the Service publishes not-ready addresses).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The Service's ports as this pod serves them: (name, port, protocol).
    pub ports: Vec<(String, i32, String)>,
}

/// The pods `service` selects, as backends, in IP order.
pub fn backends<'a>(service: &Service, pods: impl Iterator<Item = &'a Pod>) -> Vec<Backend> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let namespace = service.namespace();
    let publish = spec.publish_not_ready_addresses == Some(true);
    let mut out: Vec<Backend> = pods
        .filter(|p| p.namespace() == namespace && !pods::is_terminal(p))
        .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .filter_map(|p| {
            let ip = p
                .status
                .as_ref()?
                .pod_ip
                .clone()
                .filter(|ip| !ip.is_empty())?;
            let pod_spec = p.spec.as_ref()?;
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|sp| {
                    let port = match &sp.target_port {
                        None => sp.port,
                        Some(IntOrString::Int(n)) => *n,
                        Some(IntOrString::String(name)) => {
                            pod_spec
                                .containers
                                .iter()
                                .flat_map(|c| c.ports.iter().flatten())
                                .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                                .container_port
                        }
                    };
                    let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                    Some((sp.name.clone().unwrap_or_default(), port, protocol))
                })
                .collect();
            let service_name = service.name_any();
            let hostname = pod_spec
                .hostname
                .clone()
                .filter(|_| pod_spec.subdomain.as_deref() == Some(service_name.as_str()));
            Some(Backend {
                ip,
                node: pod_spec.node_name.clone(),
                target: ObjectReference {
                    kind: Some("Pod".into()),
                    name: p.metadata.name.clone(),
                    namespace: p.metadata.namespace.clone(),
                    uid: p.metadata.uid.clone(),
                    ..Default::default()
                },
                hostname,
                ready: publish || pods::is_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
                ports,
            })
        })
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out
}

/// The Endpoints subsets: pods grouped by how they serve the ports;
/// terminating pods left out.
pub fn subsets(backends: &[Backend]) -> Option<Vec<EndpointSubset>> {
    let mut groups: BTreeMap<Vec<(String, i32, String)>, EndpointSubset> = BTreeMap::new();
    for b in backends.iter().filter(|b| !b.terminating) {
        let subset = groups
            .entry(b.ports.clone())
            .or_insert_with(|| EndpointSubset {
                ports: Some(
                    b.ports
                        .iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: Some(name.clone()).filter(|n| !n.is_empty()),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            ..Default::default()
                        })
                        .collect(),
                )
                .filter(|p: &Vec<EndpointPort>| !p.is_empty()),
                ..Default::default()
            });
        let address = EndpointAddress {
            ip: b.ip.clone(),
            hostname: b.hostname.clone(),
            node_name: b.node.clone(),
            target_ref: Some(b.target.clone()),
        };
        let list = if b.ready {
            subset.addresses.get_or_insert_default()
        } else {
            subset.not_ready_addresses.get_or_insert_default()
        };
        list.push(address);
    }
    let all: Vec<EndpointSubset> = groups.into_values().collect();
    (!all.is_empty()).then_some(all)
}

fn labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.labels().clone();
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS.into(), String::new());
    }
    labels
}

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    // Upstream keeps slices with a controller of their own, and its own
    // rights to write them (it reads them from the shared cache).
    let slice_client = (context.identities)("endpointslice-controller");
    let (services, service_changes) = context.informers.cache::<Service>();
    let (pods, pod_changes) = context.informers.cache::<Pod>();
    let (endpoints, endpoint_changes) = context.informers.cache::<Endpoints>();
    let (slices, slice_changes) = context.informers.cache::<EndpointSlice>();
    let streams = [
        service_changes,
        pod_changes,
        endpoint_changes,
        slice_changes,
    ];
    let changes = futures::stream::select_all(streams).boxed();
    let mut passes =
        crate::runtime::passes(changes, Duration::from_secs(30), Duration::from_millis(10));
    while passes.next().await.is_some() {
        pass(
            &client,
            &slice_client,
            &services,
            &pods,
            &endpoints,
            &slices,
        )
        .await;
    }
}

async fn pass(
    client: &kube::Client,
    slice_client: &kube::Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    endpoints: &Store<Endpoints>,
    slices: &Store<EndpointSlice>,
) {
    let all_pods = pods.state();
    let current: HashMap<(String, String), Arc<Endpoints>> = endpoints
        .state()
        .into_iter()
        .map(|e| ((e.namespace().unwrap_or_default(), e.name_any()), e))
        .collect();
    let mut existing = std::collections::HashSet::new();
    for service in services.state() {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        existing.insert((namespace.clone(), name.clone()));
        // A Service without a selector has its endpoints kept by someone
        // else (the user, or kelp's DNS for kube-dns): left alone, as upstream.
        let has_selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        if !has_selector {
            continue;
        }
        let backends = backends(&service, all_pods.iter().map(|p| p.as_ref()));
        let existing = current.get(&(namespace.clone(), name.clone()));
        if let Err(e) =
            write_endpoints(client, &service, &backends, existing.map(|e| e.as_ref())).await
        {
            tracing::debug!(err = %e, service = %name, "writing endpoints");
        }
        if let Err(e) = endpointslice::sync(slice_client, &service, &backends, slices).await {
            tracing::debug!(err = %e, service = %name, "writing endpoint slices");
        }
    }
    // Endpoints this controller made for Services that are gone.
    for ((namespace, name), e) in &current {
        if !existing.contains(&(namespace.clone(), name.clone()))
            && e.annotations().contains_key(TRIGGER_TIME)
        {
            let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
    }
}

async fn write_endpoints(
    client: &kube::Client,
    service: &Service,
    backends: &[Backend],
    existing: Option<&Endpoints>,
) -> Result<(), kube::Error> {
    let subsets = subsets(backends);
    let labels = labels(service);
    if let Some(e) = existing
        && e.subsets == subsets
        && e.labels() == &labels
        && e.annotations().contains_key(TRIGGER_TIME)
    {
        return Ok(());
    }
    let namespace = service.namespace().unwrap_or_default();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        TRIGGER_TIME.to_string(),
        k8s_openapi::jiff::Timestamp::now().to_string(),
    );
    let mut object = Endpoints {
        metadata: kube::api::ObjectMeta {
            name: Some(service.name_any()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        subsets,
    };
    match existing {
        Some(e) => {
            object.metadata.resource_version = e.metadata.resource_version.clone();
            api.replace(&service.name_any(), &PostParams::default(), &object)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &object).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn selected_pods_become_ready_and_not_ready_addresses_with_resolved_ports() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap();
        let pods = [
            pod("b", "10.42.0.3", true, json!({"app": "web"})),
            pod("a", "10.42.0.2", false, json!({"app": "web"})),
            pod("other", "10.42.0.4", true, json!({"app": "db"})),
        ];
        let found = backends(&service, pods.iter());
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].ports,
            [("http".to_string(), 8080, "TCP".to_string())]
        );
        let subsets = subsets(&found).unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.42.0.3");
        assert_eq!(
            subsets[0].not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.42.0.2"
        );
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    }
}
