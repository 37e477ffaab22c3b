//! Whether a pod fits a node, and how well: upstream's filters (node ready
//! and schedulable, nodeSelector and required node affinity, taints and
//! tolerations, resources against allocatable, pod count, host ports,
//! required pod anti-affinity) and scores (least allocated, spread of a
//! workload's pods, preferred node affinity). Pure functions over API
//! objects; the scheduler loop feeds them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::values::{pods, quantity};

/// The pods bound to each node, by node name.
pub type PodsByNode = HashMap<String, Vec<Pod>>;

pub use crate::api::values::scheduling::Reason;
use crate::api::values::scheduling::{node_allows, selector_matches, term_matches};

/// Resources a pod asks for: cpu in millicores, memory and ephemeral storage in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Requests {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Bytes.
    pub storage: i64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, o: Requests) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.storage += o.storage;
    }
}

fn container_requests(c: &Container) -> Requests {
    let Some(resources) = c.resources.as_ref() else {
        return Requests::default();
    };
    let get = |key: &str| -> Option<&str> {
        resources
            .requests
            .as_ref()
            .and_then(|r| r.get(key))
            .or_else(|| resources.limits.as_ref().and_then(|l| l.get(key)))
            .map(|q| q.0.as_str())
    };
    Requests {
        cpu: get("cpu").and_then(quantity::milli).unwrap_or(0),
        memory: get("memory").and_then(quantity::value).unwrap_or(0),
        storage: get("ephemeral-storage")
            .and_then(quantity::value)
            .unwrap_or(0),
    }
}

/// What the pod requests: the larger of its containers' sum and its
/// largest init container, plus overhead (upstream's rule).
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else {
        return Requests::default();
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        sum += container_requests(c);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        sum.cpu = sum.cpu.max(r.cpu);
        sum.memory = sum.memory.max(r.memory);
        sum.storage = sum.storage.max(r.storage);
    }
    if let Some(overhead) = &spec.overhead {
        sum += Requests {
            cpu: overhead
                .get("cpu")
                .and_then(|q| quantity::milli(&q.0))
                .unwrap_or(0),
            memory: overhead
                .get("memory")
                .and_then(|q| quantity::value(&q.0))
                .unwrap_or(0),
            storage: 0,
        };
    }
    sum
}

fn allocatable(node: &Node) -> (Requests, i64) {
    let empty = BTreeMap::new();
    let a: &BTreeMap<String, Quantity> = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .unwrap_or(&empty);
    let get = |k: &str| a.get(k).map(|q| q.0.clone());
    (
        Requests {
            cpu: get("cpu").and_then(|q| quantity::milli(&q)).unwrap_or(0),
            memory: get("memory").and_then(|q| quantity::value(&q)).unwrap_or(0),
            storage: get("ephemeral-storage")
                .and_then(|q| quantity::value(&q))
                .unwrap_or(0),
        },
        get("pods").and_then(|q| quantity::value(&q)).unwrap_or(110),
    )
}

/// One node as a scheduling pass sees it: what it can hold and what the
/// pods bound there already take, kept current as the pass places pods
/// (so filters and scores need not walk the node's pods again).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// Allocatable cpu, memory, ephemeral storage.
    pub allocatable: Requests,
    /// Allocatable pod count.
    pub max_pods: i64,
    /// What the running pods bound there request.
    pub used: Requests,
    /// How many running pods are bound there.
    pub pods: i64,
    /// Host ports taken: (port, protocol, host IP).
    pub ports: Vec<(i32, String, String)>,
}

impl NodeInfo {
    /// The node with the pods bound to it.
    pub fn new(node: &Node, pods_by_node: &PodsByNode) -> Self {
        let (allocatable, max_pods) = allocatable(node);
        let mut info = Self {
            allocatable,
            max_pods,
            ..Self::default()
        };
        for pod in running_on(
            pods_by_node,
            node.metadata.name.as_deref().unwrap_or_default(),
        ) {
            info.add(pod, pod_requests(pod));
        }
        info
    }

    /// Counts a pod placed on the node.
    pub fn add(&mut self, pod: &Pod, requests: Requests) {
        self.used += requests;
        self.pods += 1;
        self.ports.extend(host_ports(pod));
    }
}

fn labels(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

fn host_ports(pod: &Pod) -> Vec<(i32, String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().unwrap_or_default(),
            ))
        })
        .collect()
}

/// The pods bound to a node that still run there.
fn running_on<'a>(pods_by_node: &'a PodsByNode, node: &str) -> impl Iterator<Item = &'a Pod> {
    pods_by_node
        .get(node)
        .into_iter()
        .flatten()
        .filter(|p| !pods::is_terminal(p))
}

/// Whether `pod` (requesting `wanted`) fits `node`, whose bound pods
/// `info` sums up; `pods_by_node` and `nodes` serve pod anti-affinity.
pub fn fits(
    pod: &Pod,
    wanted: Requests,
    node: &Node,
    info: &NodeInfo,
    pods_by_node: &PodsByNode,
    nodes: &[Node],
) -> Result<(), Reason> {
    node_allows(pod, node)?;
    let default_spec = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    if info.pods + 1 > info.max_pods {
        return Err("Too many pods".into());
    }
    let (used, capacity) = (info.used, info.allocatable);
    if wanted.cpu > 0 && used.cpu + wanted.cpu > capacity.cpu {
        return Err("Insufficient cpu".into());
    }
    if wanted.memory > 0 && used.memory + wanted.memory > capacity.memory {
        return Err("Insufficient memory".into());
    }
    if wanted.storage > 0 && used.storage + wanted.storage > capacity.storage {
        return Err("Insufficient ephemeral-storage".into());
    }
    for (port, protocol, ip) in host_ports(pod) {
        let clash = info.ports.iter().any(|(p, proto, other_ip)| {
            *p == port
                && *proto == protocol
                && (ip.is_empty()
                    || other_ip.is_empty()
                    || ip == "0.0.0.0"
                    || other_ip == "0.0.0.0"
                    || *other_ip == ip)
        });
        if clash {
            return Err("node(s) didn't have free ports for the requested pod ports".into());
        }
    }
    let node_labels = labels(&node.metadata);
    let anti = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    for term in &anti {
        let Some(domain) = node_labels.get(&term.topology_key) else {
            continue;
        };
        let namespaces = term
            .namespaces
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| vec![namespace.clone()]);
        let selector = term.label_selector.clone().unwrap_or_default();
        let conflict = nodes
            .iter()
            .filter(|n| labels(&n.metadata).get(&term.topology_key) == Some(domain))
            .flat_map(|n| {
                pods_by_node
                    .get(n.metadata.name.as_deref().unwrap_or_default())
                    .into_iter()
                    .flatten()
            })
            .filter(|p| !pods::is_terminal(p))
            .any(|p| {
                namespaces.contains(p.metadata.namespace.as_ref().unwrap_or(&String::new()))
                    && selector_matches(&selector, &labels(&p.metadata))
            });
        if conflict {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    Ok(())
}

/// How good a node is for the pod (higher is better): free resources after
/// placing it, fewer pods of the same workload, preferred node affinity.
pub fn score(
    pod: &Pod,
    wanted: Requests,
    node: &Node,
    info: &NodeInfo,
    pods_by_node: &PodsByNode,
) -> i64 {
    let capacity = info.allocatable;
    let mut used = wanted;
    used += info.used;
    // Per mille, so that small requests still tell nodes apart.
    let free = |cap: i64, used: i64| {
        if cap <= 0 {
            0
        } else {
            ((cap - used).max(0) * 1000) / cap
        }
    };
    let least_allocated = (free(capacity.cpu, used.cpu) + free(capacity.memory, used.memory)) / 2;
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let owner = pods::controller_of(&pod.metadata).map(|o| o.uid.clone());
    let siblings = owner.map_or(0, |uid| {
        running_on(pods_by_node, node_name)
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == uid)
            })
            .count() as i64
    });
    let spread = 1000 / (1 + siblings);
    let preferred: i64 = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t.preference, node))
                .map(|t| i64::from(t.weight) * 10)
                .sum()
        })
        .unwrap_or(0);
    least_allocated + spread + preferred
}

/// The PodScheduled message upstream writes: `0/N nodes are available: …`.
pub fn unschedulable_message(nodes: usize, reasons: &[Reason]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": "a"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3", "ephemeral-storage": "10Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}});
        merge(&mut p, extra);
        serde_json::from_value(p).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b.clone()) {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
    }

    fn check(p: &Pod, n: &Node, bound: &[Pod]) -> Result<(), Reason> {
        let mut by_node = PodsByNode::new();
        by_node.insert(n.metadata.name.clone().unwrap(), bound.to_vec());
        let info = NodeInfo::new(n, &by_node);
        fits(
            p,
            pod_requests(p),
            n,
            &info,
            &by_node,
            std::slice::from_ref(n),
        )
    }

    #[test]
    fn selectors_affinity_and_taints_filter_nodes() {
        let n = node(
            "n1",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            check(&pod("p", json!({})), &n, &[]).unwrap_err(),
            "node(s) had untolerated taint {dedicated: db}"
        );
        let tolerant = pod(
            "p",
            json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
        );
        assert!(check(&tolerant, &n, &[]).is_ok());
        let plain = node("n2", json!({}));
        let selector = pod("p", json!({"spec": {"nodeSelector": {"zone": "b"}}}));
        assert_eq!(
            check(&selector, &plain, &[]).unwrap_err(),
            "node(s) didn't match Pod's node affinity/selector"
        );
        let affinity = pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}}),
        );
        assert!(check(&affinity, &plain, &[]).is_ok());
        let unschedulable = node("n3", json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            check(&pod("p", json!({})), &unschedulable, &[]).unwrap_err(),
            "node(s) were unschedulable"
        );
    }

    #[test]
    fn resources_pod_count_and_ports_are_counted() {
        let n = node("n1", json!({}));
        let big = pod(
            "big",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m"}}}]}}),
        );
        assert!(check(&big, &n, &[]).is_ok());
        assert_eq!(
            check(&big, &n, std::slice::from_ref(&big)).unwrap_err(),
            "Insufficient cpu"
        );
        let small = pod("s", json!({}));
        assert_eq!(
            check(&small, &n, &[small.clone(), small.clone(), small.clone()]).unwrap_err(),
            "Too many pods"
        );
        let ported = pod(
            "w",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        assert_eq!(
            check(&ported, &n, std::slice::from_ref(&ported)).unwrap_err(),
            "node(s) didn't have free ports for the requested pod ports"
        );
        let init = pod(
            "i",
            json!({"spec": {"initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"memory": "1Gi"}}}],
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"memory": "100Mi"}}}]}}),
        );
        assert_eq!(pod_requests(&init).memory, 1 << 30);
    }

    #[test]
    fn required_anti_affinity_keeps_matching_pods_apart() {
        let n = node("n1", json!({}));
        let term = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}}}});
        let p = pod("p2", term);
        assert!(check(&p, &n, &[]).is_ok());
        assert_eq!(
            check(&p, &n, &[pod("p1", json!({}))]).unwrap_err(),
            "node(s) didn't match pod anti-affinity rules"
        );
    }

    #[test]
    fn emptier_nodes_score_higher_and_messages_count_reasons() {
        let n = node("n1", json!({}));
        let p = pod(
            "p",
            json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}),
        );
        let empty = HashMap::new();
        let busy = PodsByNode::from([("n1".to_string(), vec![p.clone()])]);
        let score_on = |by_node: &PodsByNode| {
            score(
                &p,
                pod_requests(&p),
                &n,
                &NodeInfo::new(&n, by_node),
                by_node,
            )
        };
        assert!(score_on(&empty) > score_on(&busy));
        let msg = unschedulable_message(
            3,
            &[
                "Insufficient cpu".into(),
                "Insufficient cpu".into(),
                "node(s) were unschedulable".into(),
            ],
        );
        assert_eq!(
            msg,
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable."
        );
    }
}
