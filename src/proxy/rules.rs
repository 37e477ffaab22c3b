//! The service proxy's rules, as kube-proxy's iptables mode writes them:
//! from Services and their EndpointSlices to the nat chains that DNAT to
//! endpoints and the filter chains that reject Services without any,
//! rendered as one `iptables-restore --noflush` input. Pure: tested without
//! a kernel.
//!
//! nat: `KUBE-SERVICES` (jumped to from PREROUTING and OUTPUT) sends a
//! Service's cluster IP to `KUBE-SVC-…` (or `KUBE-SVL-…`, its node-local
//! endpoints, for `internalTrafficPolicy: Local`), its external and load
//! balancer IPs and (through `KUBE-NODEPORTS`) its node port to
//! `KUBE-EXT-…`; those spread connections over `KUBE-SEP-…` endpoint chains
//! with `statistic` (and `recent` for ClientIP affinity), which DNAT.
//! Traffic that must come back through the node is marked and masqueraded
//! in `KUBE-POSTROUTING`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest, Sha256};

/// The mark of connections to masquerade.
const MASQ_MARK: &str = "0x4000/0x4000";

/// kube-proxy's default ClientIP affinity timeout.
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// nat chains that exist once.
pub const NAT_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];

/// filter chains that exist once.
pub const FILTER_CHAINS: [&str; 3] = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"];

/// Prefixes of the per-Service and per-endpoint nat chains.
pub const PER_SERVICE_PREFIXES: [&str; 4] = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-SEP-"];

/// The jumps from built-in chains: (table, chain, rule). Written once
/// (first in their chain, as kube-proxy does), never by the restore, which
/// must not flush chains kelp does not own.
pub const JUMPS: [(&str, &str, &[&str]); 8] = [
    (
        "nat",
        "PREROUTING",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "nat",
        "OUTPUT",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "nat",
        "POSTROUTING",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes postrouting rules",
            "-j",
            "KUBE-POSTROUTING",
        ],
    ),
    (
        "filter",
        "INPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
            "-j",
            "KUBE-EXTERNAL-SERVICES",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
            "-j",
            "KUBE-EXTERNAL-SERVICES",
        ],
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "comment",
            "--comment",
            "kubernetes forwarding rules",
            "-j",
            "KUBE-FORWARD",
        ],
    ),
    (
        "filter",
        "OUTPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    ),
];

/// One of [`JUMPS`] as the resync's check takes it (present anywhere in
/// its chain: it is inserted first, but others may insert before it).
pub fn jump(
    (table, chain, args): (&'static str, &'static str, &'static [&'static str]),
) -> crate::network::iptables::Jump<'static> {
    crate::network::iptables::Jump {
        table,
        chain,
        args,
        first: false,
    }
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Pod (or other) IPv4 address.
    pub ip: String,
    /// Target port.
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// One port of a Service, with everything its rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (`namespace/name` for an unnamed port).
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The cluster IP (None for headless and ExternalName Services).
    pub cluster_ip: Option<String>,
    /// The Service port.
    pub port: u16,
    /// The node port (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// `externalIPs` and load balancer ingress IPs.
    pub external_ips: Vec<String>,
    /// ClientIP affinity timeout, when the Service has affinity.
    pub affinity_seconds: Option<i32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
}

/// The ports of `service` with the ready endpoints its `slices` list
/// (`node` decides which are local). Empty for ExternalName Services.
pub fn service_ports(service: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = spec
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None" && ip.parse::<std::net::Ipv4Addr>().is_ok());
    let mut external_ips: Vec<String> = spec.external_ips.clone().unwrap_or_default();
    external_ips.extend(
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone()),
    );
    external_ips.retain(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok());
    external_ips.sort();
    external_ips.dedup();
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let protocol = port
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_lowercase();
        let port_name = port.name.clone().unwrap_or_default();
        let mut endpoints: BTreeSet<Endpoint> = BTreeSet::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let Some(target) = slice.ports.iter().flatten().find(|p| {
                p.name.clone().unwrap_or_default() == port_name
                    && p.protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .eq_ignore_ascii_case(&protocol)
            }) else {
                continue;
            };
            let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // Unknown readiness counts as ready, as upstream reads it.
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                let local = endpoint.node_name.as_deref() == Some(node);
                for ip in &endpoint.addresses {
                    endpoints.insert(Endpoint {
                        ip: ip.clone(),
                        port: target_port,
                        local,
                    });
                }
            }
        }
        ports.push(ServicePort {
            name: if port_name.is_empty() {
                format!("{namespace}/{name}")
            } else {
                format!("{namespace}/{name}:{port_name}")
            },
            protocol,
            cluster_ip: cluster_ip.clone(),
            port: u16::try_from(port.port).unwrap_or(0),
            node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
            external_ips: external_ips.clone(),
            affinity_seconds,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            endpoints: endpoints.into_iter().collect(),
        });
    }
    ports
}

/// Every Service's ports, each with the slices labelled with its name.
pub fn all_service_ports(
    services: &[std::sync::Arc<Service>],
    slices: &[std::sync::Arc<EndpointSlice>],
    node: &str,
) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            by_service
                .entry((namespace, service.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut ports: Vec<ServicePort> = services
        .iter()
        .flat_map(|s| {
            let key = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            service_ports(s, slices, node)
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, &a.protocol).cmp(&(&b.name, &b.protocol)));
    ports
}

/// A chain name from a prefix and a hash of `parts` (kube-proxy's scheme,
/// in hex): stable across restarts, within iptables' 28 characters.
fn chain(prefix: &str, parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{0}").as_bytes());
    format!("{prefix}{}", &hex::encode_upper(digest)[..16])
}

/// The rules of one table being built: declared chains and rules.
#[derive(Default)]
struct Table {
    chains: BTreeSet<String>,
    rules: Vec<String>,
}

impl Table {
    fn rule(&mut self, chain: &str, rule: &str) {
        self.rules.push(format!("-A {chain} {rule}"));
    }
}

/// The result of a render: the restore input and the per-Service chains it
/// declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// `iptables-restore --noflush` input for the nat and filter tables.
    pub text: String,
    /// Per-Service nat chains now in use.
    pub chains: BTreeSet<String>,
}

/// The full rule set for `ports`; `existing` per-Service chains no longer
/// used are flushed and deleted in the same transaction.
pub fn render(ports: &[ServicePort], cluster_cidr: &str, existing: &BTreeSet<String>) -> Rendered {
    let mut nat = Table::default();
    let mut filter = Table::default();
    nat.chains.extend(NAT_CHAINS.iter().map(|c| c.to_string()));
    filter
        .chains
        .extend(FILTER_CHAINS.iter().map(|c| c.to_string()));

    nat.rule(
        "KUBE-MARK-MASQ",
        &format!("-j MARK --set-xmark {MASQ_MARK}"),
    );
    nat.rule(
        "KUBE-POSTROUTING",
        &format!("-m mark ! --mark {MASQ_MARK} -j RETURN"),
    );
    nat.rule("KUBE-POSTROUTING", "-j MARK --xor-mark 0x4000");
    nat.rule(
        "KUBE-POSTROUTING",
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    );
    filter.rule("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP");
    filter.rule(
        "KUBE-FORWARD",
        &format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"),
    );
    filter.rule(
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    );

    let mut per_service = BTreeSet::new();
    for sp in ports {
        service_rules(sp, cluster_cidr, &mut nat, &mut filter, &mut per_service);
    }
    nat.rule(
        "KUBE-SERVICES",
        "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    );
    nat.chains.extend(per_service.iter().cloned());
    let stale: Vec<&String> = existing.difference(&per_service).collect();
    nat.chains.extend(stale.iter().map(|c| c.to_string()));

    let mut text = String::new();
    for (name, table, delete) in [("nat", &nat, stale), ("filter", &filter, Vec::new())] {
        let _ = writeln!(text, "*{name}");
        for chain in &table.chains {
            let _ = writeln!(text, ":{chain} - [0:0]");
        }
        for rule in &table.rules {
            let _ = writeln!(text, "{rule}");
        }
        for chain in delete {
            let _ = writeln!(text, "-X {chain}");
        }
        let _ = writeln!(text, "COMMIT");
    }
    Rendered {
        text,
        chains: per_service,
    }
}

/// The rules of one Service port.
fn service_rules(
    sp: &ServicePort,
    cluster_cidr: &str,
    nat: &mut Table,
    filter: &mut Table,
    chains: &mut BTreeSet<String>,
) {
    let key = [sp.name.as_str(), sp.protocol.as_str()];
    let svc = chain("KUBE-SVC-", &key);
    let svl = chain("KUBE-SVL-", &key);
    let ext = chain("KUBE-EXT-", &key);
    let proto = format!("-p {0} -m {0}", sp.protocol);
    let local: Vec<&Endpoint> = sp.endpoints.iter().filter(|e| e.local).collect();
    let all: Vec<&Endpoint> = sp.endpoints.iter().collect();
    let internal = if sp.internal_local { &local } else { &all };
    let has_external = sp.node_port.is_some() || !sp.external_ips.is_empty();
    let name = &sp.name;

    // Cluster IP: to the endpoints, or rejected (not left to hang).
    if let Some(ip) = &sp.cluster_ip {
        let matching = format!("-d {ip}/32 {proto} --dport {}", sp.port);
        if internal.is_empty() {
            let why = if sp.endpoints.is_empty() {
                "has no endpoints"
            } else {
                "has no local endpoints"
            };
            filter.rule(
                "KUBE-SERVICES",
                &format!("{matching} -m comment --comment \"{name} {why}\" -j REJECT"),
            );
        } else {
            let target = if sp.internal_local { &svl } else { &svc };
            nat.rule(
                "KUBE-SERVICES",
                &format!("{matching} -m comment --comment \"{name} cluster IP\" -j {target}"),
            );
        }
    }

    // External IPs, load balancer IPs and the node port.
    if has_external {
        for ip in &sp.external_ips {
            let matching = format!("-d {ip}/32 {proto} --dport {}", sp.port);
            if all.is_empty() {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    &format!(
                        "{matching} -m comment --comment \"{name} has no endpoints\" -j REJECT"
                    ),
                );
            } else {
                nat.rule(
                    "KUBE-SERVICES",
                    &format!("{matching} -m comment --comment \"{name} external IP\" -j {ext}"),
                );
            }
        }
        if let Some(node_port) = sp.node_port {
            if all.is_empty() {
                filter.rule(
                    "KUBE-EXTERNAL-SERVICES",
                    &format!(
                        "-m addrtype --dst-type LOCAL {proto} --dport {node_port} -m comment --comment \"{name} has no endpoints\" -j REJECT"
                    ),
                );
            } else {
                nat.rule(
                    "KUBE-NODEPORTS",
                    &format!(
                        "{proto} --dport {node_port} -m comment --comment \"{name}\" -j {ext}"
                    ),
                );
            }
        }
        if !all.is_empty() {
            chains.insert(ext.clone());
            if sp.external_local {
                // Pods and the node itself may use any endpoint; outside
                // traffic only this node's, keeping its source address.
                nat.rule(
                    &ext,
                    &format!("-s {cluster_cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"),
                );
                nat.rule(
                    &ext,
                    "-m comment --comment \"masquerade LOCAL traffic\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                );
                nat.rule(
                    &ext,
                    &format!("-m comment --comment \"route LOCAL traffic to cluster endpoints\" -m addrtype --src-type LOCAL -j {svc}"),
                );
                if !local.is_empty() {
                    nat.rule(&ext, &format!("-j {svl}"));
                }
            } else {
                nat.rule(
                    &ext,
                    &format!("-m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"),
                );
                nat.rule(&ext, &format!("-j {svc}"));
            }
        }
    }

    // The spreading chains and one DNAT chain per endpoint.
    let uses_svc = !all.is_empty() && (!sp.internal_local || has_external);
    let uses_svl = !local.is_empty() && (sp.internal_local || (sp.external_local && has_external));
    let masq_from_node = sp.cluster_ip.as_ref().map(|ip| {
        format!(
            "! -s {cluster_cidr} -d {ip}/32 {proto} --dport {} -m comment --comment \"{name} cluster IP\" -j KUBE-MARK-MASQ",
            sp.port
        )
    });
    if uses_svc {
        chains.insert(svc.clone());
        if let Some(rule) = &masq_from_node {
            nat.rule(&svc, rule);
        }
        spread(nat, &svc, sp, &all);
    }
    if uses_svl {
        chains.insert(svl.clone());
        if sp.internal_local
            && let Some(rule) = &masq_from_node
        {
            nat.rule(&svl, rule);
        }
        spread(nat, &svl, sp, &local);
    }
    if uses_svc || uses_svl {
        let used: &[&Endpoint] = if uses_svc { &all } else { &local };
        for endpoint in used {
            let sep = endpoint_chain(sp, endpoint);
            chains.insert(sep.clone());
            nat.rule(
                &sep,
                &format!(
                    "-s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
                    endpoint.ip
                ),
            );
            let affinity = if sp.affinity_seconds.is_some() {
                format!(" -m recent --name {sep} --set")
            } else {
                String::new()
            };
            nat.rule(
                &sep,
                &format!(
                    "{proto} -m comment --comment \"{name}\"{affinity} -j DNAT --to-destination {}:{}",
                    endpoint.ip, endpoint.port
                ),
            );
        }
    }
}

fn endpoint_chain(sp: &ServicePort, endpoint: &Endpoint) -> String {
    let address = format!("{}:{}", endpoint.ip, endpoint.port);
    chain("KUBE-SEP-", &[&sp.name, &sp.protocol, &address])
}

/// Sends connections in `from` to one of `endpoints`: a client with
/// affinity to its last endpoint, otherwise uniformly at random (each rule
/// takes its share of what the earlier ones left).
fn spread(nat: &mut Table, from: &str, sp: &ServicePort, endpoints: &[&Endpoint]) {
    let name = &sp.name;
    if let Some(seconds) = sp.affinity_seconds {
        for endpoint in endpoints {
            let sep = endpoint_chain(sp, endpoint);
            nat.rule(
                from,
                &format!(
                    "-m comment --comment \"{name} -> {}:{}\" -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                    endpoint.ip, endpoint.port
                ),
            );
        }
    }
    let n = endpoints.len();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(sp, endpoint);
        let comment = format!(
            "-m comment --comment \"{name} -> {}:{}\"",
            endpoint.ip, endpoint.port
        );
        if i + 1 < n {
            let probability = 1.0 / (n - i) as f64;
            nat.rule(
                from,
                &format!(
                    "{comment} -m statistic --mode random --probability {probability:.11} -j {sep}"
                ),
            );
        } else {
            nat.rule(from, &format!("{comment} -j {sep}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).expect("slice")
    }

    fn web() -> (Service, EndpointSlice) {
        (
            service(serde_json::json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.43.0.20",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}
            })),
            slice(serde_json::json!({
                "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                    {"addresses": ["10.42.0.6"], "conditions": {"ready": false}, "nodeName": "n1"},
                    {"addresses": ["10.42.1.7"], "conditions": {"ready": true}, "nodeName": "n2"}
                ]
            })),
        )
    }

    #[test]
    fn ports_take_ready_endpoints_by_port_name() {
        let (svc, slice) = web();
        let ports = service_ports(&svc, &[&slice], "n1");
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.name, "default/web:http");
        assert_eq!((p.port, p.node_port), (80, Some(30080)));
        assert_eq!(
            p.endpoints,
            [
                Endpoint {
                    ip: "10.42.0.5".into(),
                    port: 8080,
                    local: true
                },
                Endpoint {
                    ip: "10.42.1.7".into(),
                    port: 8080,
                    local: false
                },
            ]
        );
    }

    #[test]
    fn a_service_with_endpoints_is_dnated_with_even_odds() {
        let (svc, slice) = web();
        let ports = service_ports(&svc, &[&slice], "n1");
        let rendered = render(&ports, "10.42.0.0/16", &BTreeSet::new());
        let text = &rendered.text;
        let svc_chain = chain("KUBE-SVC-", &["default/web:http", "tcp"]);
        assert!(text.contains(&format!(
            "-A KUBE-SERVICES -d 10.43.0.20/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http cluster IP\" -j {svc_chain}"
        )), "{text}");
        assert!(
            text.contains("--probability 0.50000000000 -j KUBE-SEP-"),
            "{text}"
        );
        assert!(text.contains("-j DNAT --to-destination 10.42.0.5:8080"));
        assert!(text.contains("-j DNAT --to-destination 10.42.1.7:8080"));
        assert!(
            !text.contains("10.42.0.6"),
            "not-ready endpoints get nothing"
        );
        assert!(text.contains("-A KUBE-NODEPORTS -p tcp -m tcp --dport 30080"));
        // The node-ports jump is the last rule of KUBE-SERVICES.
        let last = text
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .expect("rules");
        assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
        assert_eq!(text.matches("COMMIT").count(), 2);
        assert_eq!(
            rendered.chains.len(),
            4,
            "SVC, EXT and two SEPs: {:?}",
            rendered.chains
        );
    }

    #[test]
    fn no_endpoints_reject_and_stale_chains_go() {
        let (svc, _) = web();
        let ports = service_ports(&svc, &[], "n1");
        let old = BTreeSet::from(["KUBE-SVC-0000000000000000".to_string()]);
        let text = render(&ports, "10.42.0.0/16", &old).text;
        assert!(text.contains("-A KUBE-SERVICES -d 10.43.0.20/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http has no endpoints\" -j REJECT"));
        assert!(text.contains(
            "-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080"
        ));
        assert!(text.contains(":KUBE-SVC-0000000000000000 - [0:0]\n"));
        assert!(text.contains("-X KUBE-SVC-0000000000000000\n"));
        // Deletions come after every rule of the table.
        let nat = &text[..text.find("COMMIT").expect("nat")];
        assert!(nat.rfind("-A ").expect("rules") < nat.find("-X ").expect("delete"));
    }

    #[test]
    fn local_policies_use_only_this_nodes_endpoints() {
        let (mut svc, slice) = web();
        let spec = svc.spec.as_mut().expect("spec");
        spec.internal_traffic_policy = Some("Local".into());
        spec.external_traffic_policy = Some("Local".into());
        let ports = service_ports(&svc, &[&slice], "n1");
        let text = render(&ports, "10.42.0.0/16", &BTreeSet::new()).text;
        let svl = chain("KUBE-SVL-", &["default/web:http", "tcp"]);
        assert!(text.contains(&format!("cluster IP\" -j {svl}")));
        let svl_rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svl} ")))
            .collect();
        assert!(
            svl_rules.iter().all(|r| !r.contains("10.42.1.7")),
            "{svl_rules:?}"
        );
        // On a node without local endpoints the cluster IP is rejected.
        let elsewhere = service_ports(&svc, &[&slice], "n3");
        let text = render(&elsewhere, "10.42.0.0/16", &BTreeSet::new()).text;
        assert!(
            text.contains("has no local endpoints\" -j REJECT"),
            "{text}"
        );
    }

    #[test]
    fn client_ip_affinity_checks_recent_endpoints_first() {
        let (mut svc, slice) = web();
        svc.spec.as_mut().expect("spec").session_affinity = Some("ClientIP".into());
        let ports = service_ports(&svc, &[&slice], "n1");
        let text = render(&ports, "10.42.0.0/16", &BTreeSet::new()).text;
        assert!(text.contains("--rcheck --seconds 10800 --reap -j KUBE-SEP-"));
        assert!(text.contains("-m recent --name KUBE-SEP-"));
        assert!(text.contains("--set -j DNAT"));
    }

    #[test]
    fn load_balancer_ingress_and_headless_services() {
        let lb = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.30", "externalIPs": ["192.0.2.9"],
                     "ports": [{"port": 53, "protocol": "UDP", "nodePort": 31053}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
        }));
        let slice = slice(serde_json::json!({
            "metadata": {"name": "lb-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4",
            "ports": [{"port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.42.0.9"]}]
        }));
        let ports = service_ports(&lb, &[&slice], "n1");
        assert_eq!(ports[0].external_ips, ["127.0.0.1", "192.0.2.9"]);
        let text = render(&ports, "10.42.0.0/16", &BTreeSet::new()).text;
        assert!(text.contains("-A KUBE-SERVICES -d 127.0.0.1/32 -p udp -m udp --dport 53 -m comment --comment \"default/lb external IP\""));
        assert!(text.contains("DNAT --to-destination 10.42.0.9:5353"));
        let headless = service(serde_json::json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let ports = service_ports(&headless, &[], "n1");
        let text = render(&ports, "10.42.0.0/16", &BTreeSet::new()).text;
        assert!(!text.contains("default/h"), "{text}");
    }
}
