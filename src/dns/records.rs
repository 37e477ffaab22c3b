//! Cluster names to records, as CoreDNS's kubernetes plugin answers them
//! (the Kubernetes DNS specification), from an [`Index`] built out of the
//! Service, EndpointSlice and Namespace caches. No I/O: the index is rebuilt
//! when the caches change and every query is a few hash lookups.
//!
//! Names inside the cluster domain:
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA = the ClusterIPs; for a headless
//!   Service the ready endpoints' addresses; ExternalName → CNAME.
//! - `<ep>.<svc>.<ns>.svc.<zone>`: an endpoint, named by its hostname or
//!   by its address with dashes (`10-42-0-5`).
//! - `_<port>._<proto>.[<ep>.]<svc>.<ns>.svc.<zone>` and SRV on the plain
//!   Service name: SRV records for the (named) ports, their targets' address
//!   records in the additional section.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: the address itself ("pods insecure", the
//!   mode k3s's CoreDNS runs in).
//! - `ns.dns.<zone>`: the cluster DNS Service address; the apex has SOA and NS.
//!
//! Unknown names are NXDOMAIN, known names asked for a type they lack are
//! NOERROR with no answer (both with the SOA in the authority section, added
//! by the catalog). Reverse names (`in-addr.arpa`, `ip6.arpa`) of Service
//! ClusterIPs and endpoint addresses get PTR records; other addresses are
//! not ours ([`Answer::Pass`]) and go upstream.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Record TTL, CoreDNS's default for the kubernetes plugin.
pub const TTL: u32 = 5;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// What a query gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// NOERROR with these records.
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// NOERROR, no records: the name exists, not with this type.
    NoData,
    /// NXDOMAIN: the name does not exist in the cluster domain.
    NxDomain,
    /// Not a name the cluster knows (a reverse name of a foreign address):
    /// the next handler (the forwarder) answers.
    Pass,
}

/// Everything the answers come from, rebuilt as a whole on each change.
#[derive(Debug)]
pub struct Index {
    zone: Name,
    serial: u32,
    dns_ips: Vec<IpAddr>,
    namespaces: HashSet<String>,
    services: HashMap<(String, String), Entry>,
    reverse: HashMap<IpAddr, Name>,
}

/// One Service as DNS sees it.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    ports: Vec<Port>,
    /// Ready endpoints, one per address.
    endpoints: Vec<Endpoint>,
}

#[derive(Debug)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(Name),
}

#[derive(Debug, Clone)]
struct Port {
    name: String,
    protocol: String,
    port: u16,
}

#[derive(Debug)]
struct Endpoint {
    label: String,
    ip: IpAddr,
    /// The ports the endpoint serves; empty when the slice lists none (a
    /// headless Service without ports still has address records).
    ports: Vec<Port>,
}

/// One record an answer may be made of.
struct Hit {
    ip: IpAddr,
    port: Option<u16>,
    target: Name,
}

impl Index {
    /// An index of the given objects. `zone` is the cluster domain,
    /// `dns_ips` the cluster DNS Service's addresses (for `ns.dns.<zone>`),
    /// `serial` the SOA serial (changes with the contents).
    pub fn build<'a>(
        zone: &Name,
        dns_ips: Vec<IpAddr>,
        serial: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        namespaces: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut index = Self {
            zone: zone.to_lowercase(),
            serial,
            dns_ips,
            namespaces: namespaces.into_iter().collect(),
            services: HashMap::new(),
            reverse: HashMap::new(),
        };
        let mut services: Vec<&Service> = services.into_iter().collect();
        services.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
        for service in services {
            let (Some(namespace), Some(name)) =
                (&service.metadata.namespace, &service.metadata.name)
            else {
                continue;
            };
            if let Some(entry) = entry(service) {
                index
                    .services
                    .insert((namespace.to_lowercase(), name.to_lowercase()), entry);
            }
        }
        let mut slices: Vec<&EndpointSlice> = slices.into_iter().collect();
        slices.sort_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_ref(),
                labels.and_then(|l| l.get(SERVICE_NAME)),
            ) else {
                continue;
            };
            let key = (namespace.to_lowercase(), service.to_lowercase());
            let Some(entry) = index.services.get_mut(&key) else {
                continue;
            };
            let ports: Vec<Port> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default().to_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for endpoint in &slice.endpoints {
                // CoreDNS serves ready endpoints only (an unset condition counts as ready).
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
                if ready == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = endpoint
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_lowercase())
                        .unwrap_or_else(|| dashed(ip));
                    entry.endpoints.push(Endpoint {
                        label,
                        ip,
                        ports: ports.clone(),
                    });
                }
            }
        }
        // Reverse names: ClusterIPs first, then endpoint addresses.
        let mut reverse = HashMap::new();
        for ((namespace, name), entry) in &index.services {
            if let Kind::ClusterIp(ips) = &entry.kind
                && let Some(target) = index.service_name(namespace, name)
            {
                for ip in ips {
                    reverse.insert(*ip, target.clone());
                }
            }
        }
        for ((namespace, name), entry) in &index.services {
            for endpoint in &entry.endpoints {
                if reverse.contains_key(&endpoint.ip) {
                    continue;
                }
                if let Some(target) = index.endpoint_name(namespace, name, &endpoint.label) {
                    reverse.insert(endpoint.ip, target);
                }
            }
        }
        index.reverse = reverse;
        index
    }

    /// The cluster domain.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The zone's SOA record for `origin` (CoreDNS's shape: ns.dns, hostmaster, TTL as minimum).
    pub fn soa(&self, origin: &Name) -> Record {
        let relative = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&self.zone))
                .unwrap_or_else(|_| self.zone.clone())
        };
        Record::from_rdata(
            origin.clone(),
            TTL,
            RData::SOA(SOA::new(
                relative("ns.dns"),
                relative("hostmaster"),
                self.serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        )
    }

    /// The answer to `name` `qtype`.
    pub fn answer(&self, name: &Name, qtype: RecordType) -> Answer {
        let name = name.to_lowercase();
        if let Some(ip) = reverse_ip(&name) {
            return match self.reverse.get(&ip) {
                Some(target) if qtype == RecordType::PTR => records(vec![Record::from_rdata(
                    name,
                    TTL,
                    RData::PTR(PTR(target.clone())),
                )]),
                Some(_) => Answer::NoData,
                None => Answer::Pass,
            };
        }
        if !self.zone.zone_of(&name) {
            return Answer::Pass;
        }
        let relative = usize::from(name.num_labels() - self.zone.num_labels());
        let labels: Vec<String> = name
            .iter()
            .take(relative)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => records(vec![self.soa(&self.zone)]),
                RecordType::NS => self.ns(),
                _ => Answer::NoData,
            },
            ["ns", "dns"] => addresses(&name, qtype, self.dns_ips.iter().copied()),
            ["dns"] | ["svc"] | ["pod"] => Answer::NoData,
            [namespace, "svc" | "pod"] => self.namespace(namespace),
            [rest @ .., namespace, "pod"] => self.pod(&name, rest, namespace, qtype),
            [rest @ .., service, namespace, "svc"] => {
                let (port, protocol, endpoint) = match rest {
                    [] => (None, None, None),
                    [endpoint] => (None, None, Some(*endpoint)),
                    [port, protocol] => (Some(*port), Some(*protocol), None),
                    [port, protocol, endpoint] => (Some(*port), Some(*protocol), Some(*endpoint)),
                    _ => return Answer::NxDomain,
                };
                let strip = |l: &'_ str| l.strip_prefix('_').unwrap_or(l).to_string();
                self.service(
                    &name,
                    namespace,
                    service,
                    endpoint,
                    port.map(strip),
                    protocol.map(strip),
                    qtype,
                )
            }
            _ => Answer::NxDomain,
        }
    }

    fn namespace(&self, namespace: &str) -> Answer {
        if self.namespaces.contains(namespace) {
            Answer::NoData
        } else {
            Answer::NxDomain
        }
    }

    fn ns(&self) -> Answer {
        let Ok(server) = Name::from_ascii("ns.dns").and_then(|n| n.append_domain(&self.zone))
        else {
            return Answer::NoData;
        };
        let answers = vec![Record::from_rdata(
            self.zone.clone(),
            TTL,
            RData::NS(NS(server.clone())),
        )];
        let additionals = self
            .dns_ips
            .iter()
            .map(|ip| address_record(&server, *ip))
            .collect();
        Answer::Records {
            answers,
            additionals,
        }
    }

    /// `<dashed-ip>.<ns>.pod.<zone>`: the address the name spells.
    fn pod(&self, name: &Name, rest: &[&str], namespace: &str, qtype: RecordType) -> Answer {
        let [label] = rest else {
            return Answer::NxDomain;
        };
        if !self.namespaces.contains(namespace) {
            return Answer::NxDomain;
        }
        match undashed(label) {
            Some(ip) => addresses(name, qtype, [ip]),
            None => Answer::NxDomain,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn service(
        &self,
        name: &Name,
        namespace: &str,
        service: &str,
        endpoint: Option<&str>,
        port: Option<String>,
        protocol: Option<String>,
        qtype: RecordType,
    ) -> Answer {
        let key = (namespace.to_string(), service.to_string());
        let Some(entry) = self.services.get(&key) else {
            return Answer::NxDomain;
        };
        let wanted = |p: &Port| {
            port.as_ref().is_none_or(|want| *want == p.name)
                && protocol.as_ref().is_none_or(|want| *want == p.protocol)
        };
        let mut hits = Vec::new();
        match &entry.kind {
            Kind::External(target) => {
                if endpoint.is_some() || port.is_some() {
                    return Answer::NxDomain;
                }
                return records(vec![Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::CNAME(CNAME(target.clone())),
                )]);
            }
            Kind::ClusterIp(ips) if endpoint.is_none() => {
                let Some(target) = self.service_name(namespace, service) else {
                    return Answer::NxDomain;
                };
                for p in entry.ports.iter().filter(|p| wanted(p)) {
                    for ip in ips {
                        hits.push(Hit {
                            ip: *ip,
                            port: Some(p.port),
                            target: target.clone(),
                        });
                    }
                }
            }
            // Headless Services, and endpoint names of any Service.
            _ => {
                for e in &entry.endpoints {
                    if endpoint.is_some_and(|want| want != e.label) {
                        continue;
                    }
                    let Some(target) = self.endpoint_name(namespace, service, &e.label) else {
                        continue;
                    };
                    if e.ports.is_empty() {
                        if port.is_none() && protocol.is_none() {
                            hits.push(Hit {
                                ip: e.ip,
                                port: None,
                                target,
                            });
                        }
                        continue;
                    }
                    for p in e.ports.iter().filter(|p| wanted(p)) {
                        hits.push(Hit {
                            ip: e.ip,
                            port: Some(p.port),
                            target: target.clone(),
                        });
                    }
                }
            }
        }
        if hits.is_empty() {
            return Answer::NxDomain;
        }
        match qtype {
            RecordType::A | RecordType::AAAA => {
                addresses(name, qtype, hits.iter().map(|h| h.ip).collect::<Vec<_>>())
            }
            RecordType::SRV => srv(name, &hits),
            _ => Answer::NoData,
        }
    }

    fn service_name(&self, namespace: &str, service: &str) -> Option<Name> {
        Name::from_ascii(format!("{service}.{namespace}.svc"))
            .and_then(|n| n.append_domain(&self.zone))
            .ok()
    }

    fn endpoint_name(&self, namespace: &str, service: &str, label: &str) -> Option<Name> {
        Name::from_ascii(format!("{label}.{service}.{namespace}.svc"))
            .and_then(|n| n.append_domain(&self.zone))
            .ok()
    }
}

/// The DNS view of a Service (None: nothing to answer for it).
fn entry(service: &Service) -> Option<Entry> {
    let spec = service.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let external = spec.external_name.as_deref().filter(|e| !e.is_empty())?;
        // An address is no name to alias (CoreDNS answers nothing for it either).
        if external.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut target = Name::from_ascii(external).ok()?;
        target.set_fqdn(true);
        Kind::External(target)
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<Vec<_>>();
        let mut unique = Vec::new();
        for ip in ips {
            if !unique.contains(&ip) {
                unique.push(ip);
            }
        }
        if unique.is_empty() {
            return None;
        }
        Kind::ClusterIp(unique)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default().to_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some(Entry {
        kind,
        ports,
        endpoints: Vec::new(),
    })
}

fn records(answers: Vec<Record>) -> Answer {
    Answer::Records {
        answers,
        additionals: Vec::new(),
    }
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

/// A or AAAA records of the addresses of the asked family (NoData when none).
fn addresses(name: &Name, qtype: RecordType, ips: impl IntoIterator<Item = IpAddr>) -> Answer {
    let mut seen = HashSet::new();
    let answers: Vec<Record> = ips
        .into_iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            _ => false,
        })
        .filter(|ip| seen.insert(*ip))
        .map(|ip| address_record(name, ip))
        .collect();
    if answers.is_empty() {
        Answer::NoData
    } else {
        records(answers)
    }
}

/// SRV records for the hits that have a port, equal weights summing to
/// about 100 as CoreDNS gives them; the targets' addresses as additionals.
fn srv(name: &Name, hits: &[Hit]) -> Answer {
    let mut seen = HashSet::new();
    let unique: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.port.is_some())
        .filter(|h| seen.insert((h.target.clone(), h.port)))
        .collect();
    if unique.is_empty() {
        return Answer::NoData;
    }
    let weight = u16::try_from(100 / unique.len()).unwrap_or(1).max(1);
    let answers = unique
        .iter()
        .map(|h| {
            Record::from_rdata(
                name.clone(),
                TTL,
                RData::SRV(SRV::new(
                    0,
                    weight,
                    h.port.unwrap_or_default(),
                    h.target.clone(),
                )),
            )
        })
        .collect();
    let mut seen = HashSet::new();
    let additionals = hits
        .iter()
        .filter(|h| seen.insert((h.target.clone(), h.ip)))
        .map(|h| address_record(&h.target, h.ip))
        .collect();
    Answer::Records {
        answers,
        additionals,
    }
}

/// `10.42.0.5` → `10-42-0-5`; IPv6 colons become dashes too.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address a dashed label spells (`10-42-0-5`, `fd00--1`).
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a full reverse name stands for (`5.0.42.10.in-addr.arpa.`,
/// 32 nibbles under `ip6.arpa.`); None for anything else, shorter reverse
/// names included.
fn reverse_ip(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa]
            if in_addr.eq_ignore_ascii_case(b"in-addr") && arpa.eq_ignore_ascii_case(b"arpa") =>
        {
            let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok();
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., ip6, arpa]
            if nibbles.len() == 32
                && ip6.eq_ignore_ascii_case(b"ip6")
                && arpa.eq_ignore_ascii_case(b"arpa") =>
        {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                let [digit] = nibble else { return None };
                value = (value << 4) | u128::from((*digit as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// Whether `name` lies under a reverse zone (`in-addr.arpa.` or `ip6.arpa.`).
pub fn is_reverse(name: &Name) -> bool {
    let labels: Vec<&[u8]> = name.iter().collect();
    matches!(labels.as_slice(), [.., zone, arpa]
        if arpa.eq_ignore_ascii_case(b"arpa")
            && (zone.eq_ignore_ascii_case(b"in-addr") || zone.eq_ignore_ascii_case(b"ip6")))
}

/// Shared handle on the current index: readers take the Arc (a short lock,
/// never across an await) and the rebuild task swaps in a new one.
#[derive(Clone, Debug)]
pub struct Shared(Arc<std::sync::RwLock<Arc<Index>>>);

impl Shared {
    /// A handle starting at `index`.
    pub fn new(index: Index) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(index))))
    }

    /// The index now.
    pub fn current(&self) -> Arc<Index> {
        // A poisoned lock still holds a whole Arc: the writer only swaps it.
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the index.
    pub fn replace(&self, index: Index) {
        let index = Arc::new(index);
        match self.0.write() {
            Ok(mut guard) => *guard = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Name {
        Name::from_ascii("cluster.local.").unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn index() -> Index {
        let services: Vec<Service> = [
            json!({"metadata": {"name": "my-svc", "namespace": "default"},
                   "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20", "fd00:43::20"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "nginx", "namespace": "default"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}}),
            json!({"metadata": {"name": "bare", "namespace": "default"},
                   "spec": {"clusterIP": "None"}}),
            json!({"metadata": {"name": "empty", "namespace": "default"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}}),
            json!({"metadata": {"name": "ext", "namespace": "other"},
                   "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let slices: Vec<EndpointSlice> = [
            json!({"metadata": {"name": "nginx-abc", "namespace": "default", "labels": {SERVICE_NAME: "nginx"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
                   "endpoints": [
                       {"addresses": ["10.42.0.7"], "hostname": "web-0", "conditions": {"ready": true}},
                       {"addresses": ["10.42.0.8"], "hostname": "web-1", "conditions": {"ready": false}},
                       {"addresses": ["10.42.0.9"]}]}),
            json!({"metadata": {"name": "bare-x", "namespace": "default", "labels": {SERVICE_NAME: "bare"}},
                   "addressType": "IPv4",
                   "endpoints": [{"addresses": ["10.42.0.10"], "conditions": {"ready": true}}]}),
            json!({"metadata": {"name": "my-svc-x", "namespace": "default", "labels": {SERVICE_NAME: "my-svc"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                   "endpoints": [{"addresses": ["10.42.0.11"], "conditions": {"ready": true}}]}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        Index::build(
            &zone(),
            vec!["10.43.0.10".parse().unwrap()],
            7,
            &services,
            &slices,
            [
                "default".to_string(),
                "other".to_string(),
                "kube-system".to_string(),
            ],
        )
    }

    fn data(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn services_answer_their_cluster_ips_by_family() {
        let index = index();
        let q = name("my-svc.default.svc.cluster.local.");
        assert_eq!(data(&index.answer(&q, RecordType::A)), ["10.43.0.20"]);
        assert_eq!(data(&index.answer(&q, RecordType::AAAA)), ["fd00:43::20"]);
        // Case does not matter; TTL is CoreDNS's.
        let upper = name("MY-SVC.Default.SVC.cluster.local.");
        match index.answer(&upper, RecordType::A) {
            Answer::Records { answers, .. } => {
                assert_eq!(answers[0].ttl, TTL);
                assert_eq!(answers[0].name, q);
            }
            other => panic!("{other:?}"),
        }
        // Known name, other type: NOERROR without records.
        assert_eq!(index.answer(&q, RecordType::TXT), Answer::NoData);
        assert_eq!(
            index.answer(&name("nope.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(&name("my-svc.nope.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(
                &name("a.b.c.d.my-svc.default.svc.cluster.local."),
                RecordType::A
            ),
            Answer::NxDomain
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_hostnames() {
        let index = index();
        let q = name("nginx.default.svc.cluster.local.");
        assert_eq!(
            data(&index.answer(&q, RecordType::A)),
            ["10.42.0.7", "10.42.0.9"]
        );
        assert_eq!(
            data(&index.answer(
                &name("web-0.nginx.default.svc.cluster.local."),
                RecordType::A
            )),
            ["10.42.0.7"]
        );
        // Not ready: no record.
        assert_eq!(
            index.answer(
                &name("web-1.nginx.default.svc.cluster.local."),
                RecordType::A
            ),
            Answer::NxDomain
        );
        // Without a hostname the endpoint is named by its address.
        assert_eq!(
            data(&index.answer(
                &name("10-42-0-9.nginx.default.svc.cluster.local."),
                RecordType::A
            )),
            ["10.42.0.9"]
        );
        // A headless Service without ports still has addresses.
        assert_eq!(
            data(&index.answer(&name("bare.default.svc.cluster.local."), RecordType::A)),
            ["10.42.0.10"]
        );
        // ... and one without ready endpoints is NXDOMAIN, as in CoreDNS.
        assert_eq!(
            index.answer(&name("empty.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn srv_records_name_the_ports() {
        let index = index();
        let q = name("_http._tcp.my-svc.default.svc.cluster.local.");
        match index.answer(&q, RecordType::SRV) {
            Answer::Records {
                answers,
                additionals,
            } => {
                assert_eq!(answers.len(), 1);
                assert_eq!(
                    answers[0].data.to_string(),
                    "0 100 80 my-svc.default.svc.cluster.local."
                );
                let extra: Vec<String> = additionals.iter().map(|r| r.data.to_string()).collect();
                assert_eq!(extra, ["10.43.0.20", "fd00:43::20"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            data(&index.answer(
                &name("_dns._udp.my-svc.default.svc.cluster.local."),
                RecordType::SRV
            )),
            ["0 100 53 my-svc.default.svc.cluster.local."]
        );
        assert_eq!(
            index.answer(
                &name("_http._udp.my-svc.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Answer::NxDomain
        );
        // Headless: one per endpoint, at the port it serves.
        assert_eq!(
            data(&index.answer(
                &name("_web._tcp.nginx.default.svc.cluster.local."),
                RecordType::SRV
            )),
            [
                "0 50 8080 web-0.nginx.default.svc.cluster.local.",
                "0 50 8080 10-42-0-9.nginx.default.svc.cluster.local."
            ]
        );
        // SRV on the plain name lists every port.
        assert_eq!(
            data(&index.answer(&name("my-svc.default.svc.cluster.local."), RecordType::SRV)).len(),
            2
        );
    }

    #[test]
    fn external_names_are_cnames() {
        let index = index();
        let q = name("ext.other.svc.cluster.local.");
        assert_eq!(data(&index.answer(&q, RecordType::A)), ["db.example.com."]);
        assert_eq!(
            index.answer(&name("x.ext.other.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn reverse_names_of_cluster_addresses_get_ptr_others_pass() {
        let index = index();
        assert_eq!(
            data(&index.answer(&name("20.0.43.10.in-addr.arpa."), RecordType::PTR)),
            ["my-svc.default.svc.cluster.local."]
        );
        assert_eq!(
            data(&index.answer(&name("7.0.42.10.in-addr.arpa."), RecordType::PTR)),
            ["web-0.nginx.default.svc.cluster.local."]
        );
        let v6 = "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(
            data(&index.answer(&name(v6), RecordType::PTR)),
            ["my-svc.default.svc.cluster.local."]
        );
        assert_eq!(
            index.answer(&name("20.0.43.10.in-addr.arpa."), RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            index.answer(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR),
            Answer::Pass
        );
        assert_eq!(
            index.answer(&name("43.10.in-addr.arpa."), RecordType::PTR),
            Answer::Pass
        );
        assert!(is_reverse(&name("43.10.in-addr.arpa.")));
        assert!(!is_reverse(&name("example.com.")));
    }

    #[test]
    fn zone_structure_pods_and_the_dns_itself() {
        let index = index();
        assert_eq!(
            data(&index.answer(
                &name("10-42-0-99.default.pod.cluster.local."),
                RecordType::A
            )),
            ["10.42.0.99"]
        );
        assert_eq!(
            index.answer(&name("10-42-0-99.nope.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(&name("not-an-ip.default.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(&name("default.svc.cluster.local."), RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            index.answer(&name("nope.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(&name("svc.cluster.local."), RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            data(&index.answer(&name("ns.dns.cluster.local."), RecordType::A)),
            ["10.43.0.10"]
        );
        assert_eq!(
            data(&index.answer(&zone(), RecordType::SOA)),
            ["ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"]
        );
        assert_eq!(
            data(&index.answer(&zone(), RecordType::NS)),
            ["ns.dns.cluster.local."]
        );
        assert_eq!(
            index.answer(&name("whatever.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            index.answer(&name("example.com."), RecordType::A),
            Answer::Pass
        );
    }
}
