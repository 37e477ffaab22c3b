//! The built-in service load balancer, as k3s's ServiceLB: every Service of
//! type LoadBalancer (without a `loadBalancerClass`, which another
//! implementation owns) gets the Ready nodes' addresses (ExternalIP, else
//! InternalIP) as `status.loadBalancer.ingress`; the service proxy then
//! serves its ports on those addresses. A Service that stops being a
//! LoadBalancer loses them. Recomputed from watch caches on any Service or
//! Node change; only differences are written.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Context;

/// The ingress `service` should have: the node addresses for a
/// LoadBalancer this controller owns, nothing otherwise.
pub fn wanted_ingress(service: &Service, addresses: &[String]) -> Option<Vec<LoadBalancerIngress>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    Some(
        addresses
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.clone()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            })
            .collect(),
    )
}

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let (services, service_changes) = context.informers.cache::<Service>();
    let (nodes, node_changes) = context.informers.cache::<Node>();
    let changes = futures::stream::select_all([service_changes, node_changes]).boxed();
    let mut passes =
        crate::runtime::passes(changes, Duration::from_secs(30), Duration::from_millis(10));
    while passes.next().await.is_some() {
        let addresses = crate::api::values::nodes::ready_addresses(&nodes.state());
        for service in services.state() {
            let current = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.clone())
                .unwrap_or_default();
            let owned = service
                .spec
                .as_ref()
                .is_some_and(|s| s.load_balancer_class.is_none());
            let wanted = match wanted_ingress(&service, &addresses) {
                Some(ingress) => LoadBalancerStatus {
                    ingress: Some(ingress),
                },
                // Only ingress this controller could have written is cleared.
                None if owned => LoadBalancerStatus::default(),
                None => continue,
            };
            let empty = |s: &LoadBalancerStatus| s.ingress.as_ref().is_none_or(Vec::is_empty);
            if current == wanted || (empty(&current) && empty(&wanted)) {
                continue;
            }
            let api: Api<Service> =
                Api::namespaced(client.clone(), &service.namespace().unwrap_or_default());
            let patch = json!({"status": {"loadBalancer": {"ingress": wanted.ingress}}});
            if let Err(e) = api
                .patch_status(
                    &service.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(err = %e, service = %service.name_any(), "writing load balancer status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, addresses: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addresses}
            }))
            .expect("node"),
        )
    }

    #[test]
    fn ready_nodes_external_or_internal_addresses() {
        let nodes = [
            node(
                "a",
                "True",
                json!([{"type": "InternalIP", "address": "10.0.0.2"}]),
            ),
            node(
                "b",
                "True",
                json!([{"type": "InternalIP", "address": "10.0.0.3"}, {"type": "ExternalIP", "address": "192.0.2.3"}]),
            ),
            node(
                "c",
                "False",
                json!([{"type": "InternalIP", "address": "10.0.0.4"}]),
            ),
        ];
        assert_eq!(
            crate::api::values::nodes::ready_addresses(&nodes),
            ["10.0.0.2", "192.0.2.3"]
        );
    }

    #[test]
    fn only_unclassed_load_balancers_get_ingress() {
        let service = |spec: serde_json::Value| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).expect("svc")
        };
        let addresses = ["10.0.0.2".to_string()];
        let lb = wanted_ingress(&service(json!({"type": "LoadBalancer"})), &addresses).expect("lb");
        assert_eq!(lb[0].ip.as_deref(), Some("10.0.0.2"));
        assert!(wanted_ingress(&service(json!({"type": "ClusterIP"})), &addresses).is_none());
        assert!(
            wanted_ingress(
                &service(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"})),
                &addresses
            )
            .is_none()
        );
    }
}
