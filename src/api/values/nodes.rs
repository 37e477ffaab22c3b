//! Facts about a Node that several components read.

use k8s_openapi::api::core::v1::{Node, NodeCondition};

/// The node's `Ready` condition, if it has one.
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `Ready` is True.
pub fn is_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

/// Labels in the kubernetes.io and k8s.io domains a kubelet may set on its
/// own Node (upstream NodeRestriction's list).
const ALLOWED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Whether a kubelet may set `key` on its Node.
pub fn kubelet_may_set_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    if prefix == "node-restriction.kubernetes.io" {
        return false;
    }
    let restricted = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    ALLOWED_LABELS.contains(&key)
        || restricted("kubelet.kubernetes.io")
        || restricted("node.kubernetes.io")
}

/// The addresses a load balancer Service is served on: each Ready node's
/// ExternalIP, or its InternalIP when it has none; sorted, IPv4 only.
pub fn ready_addresses(nodes: &[std::sync::Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| is_ready(n))
        .filter_map(|n| {
            let addresses = n.status.as_ref()?.addresses.as_ref()?;
            let of = |kind: &str| {
                addresses
                    .iter()
                    .find(|a| a.type_ == kind && a.address.parse::<std::net::Ipv4Addr>().is_ok())
                    .map(|a| a.address.clone())
            };
            of("ExternalIP").or_else(|| of("InternalIP"))
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_a_kubelet_may_set() {
        assert!(kubelet_may_set_label("kubernetes.io/hostname"));
        assert!(kubelet_may_set_label("example.com/rack"));
        assert!(kubelet_may_set_label("plain"));
        assert!(kubelet_may_set_label(
            "node.kubernetes.io/exclude-from-external-load-balancers"
        ));
        assert!(!kubelet_may_set_label(
            "node-role.kubernetes.io/control-plane"
        ));
        assert!(!kubelet_may_set_label("node-restriction.kubernetes.io/vip"));
        assert!(!kubelet_may_set_label("foo.k8s.io/bar"));
    }
}
