//! NetworkPolicy rules for one node, rendered as an `iptables-restore`
//! input for the filter table (pure: no I/O). Only kelp's chains:
//!
//! - `KELP-NETPOL`, jumped to first from FORWARD (pod traffic, routed or
//!   bridged) and from INPUT for packets from the pod bridge (pods reaching
//!   the node): replies pass; a new connection from a local pod that
//!   egress policies isolate goes through the pod's `KELP-NPE-…` chain, one
//!   to a local pod that ingress policies isolate through its `KELP-NPI-…`.
//! - A pod chain marks what any of its policies' rules allows (a peer and
//!   a port) and rejects the rest: ingress marks 0x10000, egress 0x20000
//!   (kube-router's bits, apart from kube-proxy's 0x4000 and 0x8000).
//! - An ipBlock with exceptions gets a `KELP-NPB-…` chain: the exceptions
//!   return unmarked, the block's ports mark.
//!
//! Pods no policy selects, and traffic the node itself sends, are untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::values::selectors::LabelSelector;

/// The chain FORWARD and INPUT jump to.
pub const CHAIN: &str = "KELP-NETPOL";
/// Prefixes of the per-pod and per-block chains (stale ones are deleted).
pub const PER_POD_PREFIXES: &[&str] = &["KELP-NPI-", "KELP-NPE-", "KELP-NPB-"];
const INGRESS_MARK: &str = "0x10000/0x10000";
const EGRESS_MARK: &str = "0x20000/0x20000";

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its IP.
    pub ip: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports: name → (protocol, number).
    pub ports: BTreeMap<String, (String, i32)>,
    /// Whether it runs on this node.
    pub local: bool,
}

/// Who a rule admits.
#[derive(Debug, Clone, PartialEq)]
enum Peer {
    /// Any address.
    Any,
    /// One pod, whose named ports resolve against its own.
    Pod(PodInfo),
    /// A CIDR less its exceptions.
    Block { cidr: String, except: Vec<String> },
}

/// A rule's peers (None: anyone) and ports (None: any).
type RuleParts = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

/// A port match ready for iptables: protocol and `--dport` value (None: any port).
type PortMatch = (String, Option<String>);

/// What the rendering gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// `iptables-restore --noflush` input.
    pub text: String,
    /// The per-pod and per-block chains it declares (the next pass's
    /// `existing`).
    pub chains: BTreeSet<String>,
}

fn hash(parts: &[&str]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(parts.join("\0").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02X}")).collect()
}

/// Whether the policy selects the pod.
fn selects(policy: &NetworkPolicy, pod: &PodInfo) -> bool {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let selector = policy
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.clone())
        .unwrap_or_default();
    pod.namespace == namespace && LabelSelector::from_typed(&selector).matches_labels(&pod.labels)
}

/// The directions a policy governs (Ingress when it names none, Egress
/// too when it has egress rules).
fn types(policy: &NetworkPolicy) -> (bool, bool) {
    let spec = policy.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.and_then(|s| s.egress.as_ref()).is_some()),
    }
}

/// The pods (or blocks) one peer entry names, seen from `namespace`.
fn peers(
    peer: &NetworkPolicyPeer,
    namespace: &str,
    pods: &[PodInfo],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Peer> {
    if let Some(block) = &peer.ip_block {
        return vec![Peer::Block {
            cidr: block.cidr.clone(),
            except: block.except.clone().unwrap_or_default(),
        }];
    }
    let in_namespace = |pod: &PodInfo| match &peer.namespace_selector {
        None => pod.namespace == namespace,
        Some(selector) => {
            let no_labels = BTreeMap::new();
            let labels = namespaces.get(&pod.namespace).unwrap_or(&no_labels);
            LabelSelector::from_typed(selector).matches_labels(labels)
        }
    };
    let pod_matches = |pod: &PodInfo| match &peer.pod_selector {
        None => true,
        Some(selector) => LabelSelector::from_typed(selector).matches_labels(&pod.labels),
    };
    pods.iter()
        .filter(|p| in_namespace(p) && pod_matches(p))
        .cloned()
        .map(Peer::Pod)
        .collect()
}

/// A rule's ports as matches; `named` resolves a port name (to the
/// destination pod's container port), None when it cannot.
fn port_matches(
    ports: Option<&Vec<NetworkPolicyPort>>,
    named: &dyn Fn(&str) -> Option<(String, i32)>,
) -> Vec<PortMatch> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![("all".into(), None)];
    };
    let mut out = Vec::new();
    for port in ports {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        match &port.port {
            None => out.push((protocol, None)),
            Some(IntOrString::Int(n)) => {
                let range = match port.end_port {
                    Some(end) if end > *n => format!("{n}:{end}"),
                    _ => n.to_string(),
                };
                out.push((protocol, Some(range)));
            }
            Some(IntOrString::String(name)) => {
                // A named port matches where the container's protocol agrees.
                if let Some((p, number)) = named(name)
                    && p.eq_ignore_ascii_case(&protocol)
                {
                    out.push((protocol, Some(number.to_string())));
                }
            }
        }
    }
    out
}

fn port_args((protocol, port): &PortMatch) -> String {
    let protocol = protocol.to_ascii_lowercase();
    match port {
        _ if protocol == "all" => String::new(),
        None => format!(" -p {protocol}"),
        Some(p) => format!(" -p {protocol} -m {protocol} --dport {p}"),
    }
}

/// A table's chains and rules being built.
#[derive(Default)]
struct Table {
    chains: Vec<String>,
    rules: Vec<String>,
}

impl Table {
    fn rule(&mut self, chain: &str, args: &str) {
        self.rules.push(format!("-A {chain} {}", args.trim_start()));
    }
}

/// One isolated pod's chain for one direction.
fn pod_chain(
    table: &mut Table,
    chain: &str,
    pod: &PodInfo,
    policies: &[&NetworkPolicy],
    ingress: bool,
    pods: &[PodInfo],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) {
    let (mark, address) = if ingress {
        (INGRESS_MARK, "-s")
    } else {
        (EGRESS_MARK, "-d")
    };
    let mut block_index = 0;
    for policy in policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let spec = policy.spec.clone().unwrap_or_default();
        // (peers of the rule, or None for any; the rule's ports)
        let rules: Vec<RuleParts> = if ingress {
            spec.ingress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.from, r.ports))
                .collect()
        } else {
            spec.egress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.to, r.ports))
                .collect()
        };
        for (peer_list, ports) in rules {
            let admitted: Vec<Peer> = match peer_list.filter(|p| !p.is_empty()) {
                None => vec![Peer::Any],
                Some(list) => list
                    .iter()
                    .flat_map(|p| peers(p, namespace, pods, namespaces))
                    .collect(),
            };
            for peer in admitted {
                // Named ports: the destination's (the pod itself for
                // ingress, the peer pod for egress).
                let target = if ingress {
                    Some(pod)
                } else {
                    match &peer {
                        Peer::Pod(p) => Some(p),
                        _ => None,
                    }
                };
                let named = |name: &str| target.and_then(|t| t.ports.get(name).cloned());
                let matches = port_matches(ports.as_ref(), &named);
                match &peer {
                    Peer::Any => {
                        for m in &matches {
                            table.rule(
                                chain,
                                &format!("{} -j MARK --set-xmark {mark}", port_args(m)),
                            );
                        }
                    }
                    Peer::Pod(p) => {
                        for m in &matches {
                            table.rule(
                                chain,
                                &format!(
                                    "{address} {}/32{} -j MARK --set-xmark {mark}",
                                    p.ip,
                                    port_args(m)
                                ),
                            );
                        }
                    }
                    Peer::Block { cidr, except } if except.is_empty() => {
                        for m in &matches {
                            table.rule(
                                chain,
                                &format!(
                                    "{address} {cidr}{} -j MARK --set-xmark {mark}",
                                    port_args(m)
                                ),
                            );
                        }
                    }
                    Peer::Block { cidr, except } => {
                        let block =
                            format!("KELP-NPB-{}", hash(&[chain, &block_index.to_string()]));
                        block_index += 1;
                        table.chains.push(block.clone());
                        for e in except {
                            table.rule(&block, &format!("{address} {e} -j RETURN"));
                        }
                        for m in &matches {
                            table.rule(
                                &block,
                                &format!("{} -j MARK --set-xmark {mark}", port_args(m)),
                            );
                        }
                        table.rule(chain, &format!("{address} {cidr} -j {block}"));
                    }
                }
            }
        }
    }
    let direction = if ingress { "ingress" } else { "egress" };
    table.rule(
        chain,
        &format!(
            "-m comment --comment \"{}/{} {direction} not allowed by a network policy\" -m mark ! --mark {mark} -j REJECT",
            pod.namespace, pod.name
        ),
    );
}

/// The rules for this node's pods under `policies`; `existing` are the
/// per-pod chains of the previous pass (deleted when no longer used).
pub fn render(
    policies: &[NetworkPolicy],
    pods: &[PodInfo],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    existing: &BTreeSet<String>,
) -> Rendered {
    let mut table = Table::default();
    table.chains.push(CHAIN.into());
    table.rule(
        CHAIN,
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
    );
    table.rule(CHAIN, "-j MARK --set-xmark 0x0/0x30000");
    let mut local: Vec<&PodInfo> = pods
        .iter()
        .filter(|p| p.local && !p.ip.is_empty())
        .collect();
    local.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut ingress_jumps = Vec::new();
    for pod in local {
        let selecting: Vec<&NetworkPolicy> = policies.iter().filter(|p| selects(p, pod)).collect();
        for (ingress, prefix) in [(false, "KELP-NPE-"), (true, "KELP-NPI-")] {
            let governing: Vec<&NetworkPolicy> = selecting
                .iter()
                .copied()
                .filter(|p| if ingress { types(p).0 } else { types(p).1 })
                .collect();
            if governing.is_empty() {
                continue;
            }
            let chain = format!("{prefix}{}", hash(&[&pod.namespace, &pod.name]));
            table.chains.push(chain.clone());
            pod_chain(
                &mut table, &chain, pod, &governing, ingress, pods, namespaces,
            );
            if ingress {
                ingress_jumps.push(format!("-d {}/32 -j {chain}", pod.ip));
            } else {
                table.rule(CHAIN, &format!("-s {}/32 -j {chain}", pod.ip));
            }
        }
    }
    // Egress first: a connection leaves its pod before it reaches another.
    for jump in ingress_jumps {
        table.rule(CHAIN, &jump);
    }
    let chains: BTreeSet<String> = table
        .chains
        .iter()
        .filter(|c| *c != CHAIN)
        .cloned()
        .collect();
    let stale: Vec<&String> = existing.difference(&chains).collect();
    let mut text = String::from("*filter\n");
    for chain in table.chains.iter().chain(stale.iter().copied()) {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in &table.rules {
        let _ = writeln!(text, "{rule}");
    }
    for chain in stale {
        let _ = writeln!(text, "-X {chain}");
    }
    text.push_str("COMMIT\n");
    Rendered { text, chains }
}

/// The jumps into [`CHAIN`]: FORWARD for all pod traffic, INPUT for what
/// pods on `bridge` send to the node. Each must be first in its chain.
pub fn jumps(bridge: &str) -> [(&'static str, Vec<String>); 2] {
    let comment = ["-m", "comment", "--comment", "kelp network policies"].map(String::from);
    let mut forward: Vec<String> = comment.to_vec();
    forward.extend(["-j", CHAIN].map(String::from));
    let mut input: Vec<String> = vec!["-i".into(), bridge.into()];
    input.extend(comment);
    input.extend(["-j", CHAIN].map(String::from));
    [("FORWARD", forward), ("INPUT", input)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)], local: bool) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            ip: ip.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: BTreeMap::from([("http".to_string(), ("TCP".to_string(), 8080))]),
            local,
        }
    }

    fn policy(value: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(value).unwrap()
    }

    fn pods() -> Vec<PodInfo> {
        vec![
            pod("default", "web", "10.42.0.5", &[("app", "web")], true),
            pod(
                "default",
                "client",
                "10.42.0.6",
                &[("role", "client")],
                true,
            ),
            pod("other", "far", "10.42.1.7", &[("role", "client")], false),
        ]
    }

    fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([
            (
                "default".into(),
                BTreeMap::from([("kubernetes.io/metadata.name".into(), "default".into())]),
            ),
            (
                "other".into(),
                BTreeMap::from([("team".into(), "b".into())]),
            ),
        ])
    }

    fn rules_of(text: &str, chain_prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("-A {chain_prefix}")))
            .map(|l| {
                l.split_once(' ')
                    .unwrap()
                    .1
                    .split_once(' ')
                    .unwrap()
                    .1
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn no_policy_leaves_pods_alone() {
        let out = render(&[], &pods(), &namespaces(), &BTreeSet::new());
        assert!(out.chains.is_empty());
        assert_eq!(rules_of(&out.text, "KELP-NETPOL").len(), 2);
    }

    #[test]
    fn default_deny_rejects_everything_new_to_the_selected_pods() {
        let deny = policy(json!({"metadata": {"name": "deny", "namespace": "default"},
            "spec": {"podSelector": {}}}));
        let out = render(&[deny], &pods(), &namespaces(), &BTreeSet::new());
        // Both local default pods are isolated for ingress only.
        assert_eq!(out.chains.len(), 2);
        assert!(out.chains.iter().all(|c| c.starts_with("KELP-NPI-")));
        let jumps = rules_of(&out.text, "KELP-NETPOL");
        assert_eq!(
            jumps[0],
            "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
        );
        assert!(
            jumps
                .iter()
                .any(|j| j.starts_with("-d 10.42.0.5/32 -j KELP-NPI-"))
        );
        let web = rules_of(&out.text, "KELP-NPI-");
        assert!(
            web.iter()
                .all(|r| r.ends_with("-m mark ! --mark 0x10000/0x10000 -j REJECT")),
            "{web:?}"
        );
    }

    #[test]
    fn allow_rules_mark_peers_ports_and_blocks() {
        let allow = policy(
            json!({"metadata": {"name": "allow", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                 "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53, "endPort": 60}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}},
                          {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}]}}),
        );
        let out = render(&[allow], &pods(), &namespaces(), &BTreeSet::new());
        let web: Vec<String> = rules_of(&out.text, "KELP-NPI-");
        // The local client only (the far one is in another namespace), on
        // the named port resolved to 8080 and UDP 53-60.
        assert!(
            web.contains(
                &"-s 10.42.0.6/32 -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x10000/0x10000"
                    .to_string()
            ),
            "{web:?}"
        );
        assert!(
            web.contains(
                &"-s 10.42.0.6/32 -p udp -m udp --dport 53:60 -j MARK --set-xmark 0x10000/0x10000"
                    .to_string()
            ),
            "{web:?}"
        );
        assert!(
            !web.iter().any(|r| r.contains("-s 10.42.0.6/32 -j MARK")),
            "{web:?}"
        );
        // The namespace selector admits the far pod, on any port.
        assert!(
            web.contains(&"-s 10.42.1.7/32 -j MARK --set-xmark 0x10000/0x10000".to_string()),
            "{web:?}"
        );
        let block: Vec<String> = rules_of(&out.text, "KELP-NPB-");
        assert_eq!(
            block,
            [
                "-s 192.168.1.0/24 -j RETURN",
                "-j MARK --set-xmark 0x10000/0x10000"
            ]
        );
        assert!(
            web.iter()
                .any(|r| r.starts_with("-s 192.168.0.0/16 -j KELP-NPB-"))
        );
    }

    #[test]
    fn egress_policies_isolate_the_source_and_stale_chains_go() {
        let egress = policy(json!({"metadata": {"name": "out", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}}));
        let existing = BTreeSet::from(["KELP-NPI-0000000000000000".to_string()]);
        let out = render(&[egress], &pods(), &namespaces(), &existing);
        let client = rules_of(&out.text, "KELP-NPE-");
        assert_eq!(
            client[0],
            "-d 10.42.0.5/32 -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x20000/0x20000"
        );
        assert!(client[1].ends_with("-m mark ! --mark 0x20000/0x20000 -j REJECT"));
        assert!(out.text.contains(":KELP-NPI-0000000000000000 - [0:0]\n"));
        assert!(out.text.contains("-X KELP-NPI-0000000000000000\n"));
        assert!(!out.chains.contains("KELP-NPI-0000000000000000"));
    }
}
