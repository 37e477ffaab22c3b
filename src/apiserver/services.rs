//! Service admission: ClusterIP allocation from `--service-cidr` and NodePort
//! allocation from `--service-node-port-range`, checked against existing services.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::ApiState;
use super::handlers::Request;
use crate::api::{ApiError, FieldError, values::meta};
pub use crate::network::cidr::Cidr;

/// Services' storage hooks: the cluster IP and node ports, allocated
/// before the write.
pub struct Services;

#[async_trait::async_trait]
impl super::hooks::StorageHooks for Services {
    /// Fills in `spec.clusterIP(s)` and node ports, keeping what `old` had.
    async fn before_write(
        &self,
        state: &ApiState,
        req: &Request,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let kind = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let (used_ips, used_ports) = in_use(state, req, svc).await?;
        let mut causes = Vec::new();
        if kind == "ExternalName" {
            return Ok(());
        }
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        let wanted = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = match (wanted.as_str(), old_ip) {
            ("", Some(old_ip)) => old_ip,
            ("None", _) => json!("None"),
            ("", None) => {
                let cidr = state.config.service_cidr;
                // Dynamic allocation from the upper part, leaving the low addresses for static ones (kube-dns at .10).
                let start = (cidr.size() / 16).clamp(11, 256).min(cidr.size());
                let free = (start..=cidr.size())
                    .chain(2..start)
                    .map(|n| cidr.nth(n))
                    .find(|ip| !used_ips.contains(ip));
                match free {
                    Some(ip) => json!(ip.to_string()),
                    None => {
                        return Err(ApiError::internal(
                            "failed to allocate a serviceIP: range is full",
                        ));
                    }
                }
            }
            (given, old_ip) => {
                if let Some(old_ip) = old_ip
                    && old_ip.as_str() != Some(given)
                {
                    causes.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        &json!(given),
                        "may not change once set",
                    ));
                }
                match given.parse::<Ipv4Addr>() {
                Ok(ip) if !state.config.service_cidr.contains(ip) => causes.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([given]),
                    &format!("failed to allocate IP {given}: the provided IP ({given}) is not in the valid range. The range of valid IPs is {}/{}", state.config.service_cidr.base, state.config.service_cidr.prefix),
                )),
                Ok(ip) if old.is_none() && used_ips.contains(&ip) => causes.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([given]),
                    &format!("failed to allocate IP {given}: provided IP is already allocated"),
                )),
                Ok(_) => {}
                Err(_) => causes.push(FieldError::invalid("spec.clusterIPs[0]", &json!(given), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
            }
                json!(given)
            }
        };
        svc["spec"]["clusterIP"] = ip.clone();
        svc["spec"]["clusterIPs"] = json!([ip]);
        if kind == "NodePort" || kind == "LoadBalancer" {
            let (low, high) = state.config.node_port_range;
            let old_ports: Vec<Value> = old
                .and_then(|o| o.pointer("/spec/ports"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut taken = used_ports;
            if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for (i, port) in ports.iter_mut().enumerate() {
                    if let Some(n) = port.get("nodePort").and_then(Value::as_u64) {
                        let n = n as u16;
                        let kept = old_ports
                            .iter()
                            .any(|p| p.get("nodePort").and_then(Value::as_u64) == Some(n as u64));
                        if !(low..=high).contains(&n) {
                            causes.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(n), &format!("provided port is not in the valid range. The range of valid ports is {low}-{high}")));
                        } else if !kept && taken.contains(&n) {
                            causes.push(FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(n),
                                "provided port is already allocated",
                            ));
                        }
                        taken.insert(n);
                        continue;
                    }
                    let previous = old_ports
                        .iter()
                        .find(|p| p.get("port") == port.get("port"))
                        .and_then(|p| p.get("nodePort").and_then(Value::as_u64));
                    let chosen = previous
                        .map(|p| p as u16)
                        .or_else(|| (low..=high).find(|p| !taken.contains(p)));
                    match chosen {
                        Some(p) => {
                            taken.insert(p);
                            port["nodePort"] = json!(p);
                        }
                        None => {
                            return Err(ApiError::internal(
                                "failed to allocate a nodePort: range is full",
                            ));
                        }
                    }
                }
            }
        } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports {
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid("", "Service", meta::name(svc), causes))
        }
    }
}

/// ClusterIPs and node ports held by other services.
async fn in_use(
    state: &ApiState,
    req: &Request,
    svc: &Value,
) -> Result<(HashSet<Ipv4Addr>, HashSet<u16>), ApiError> {
    let others = state.stored_objects(&req.rt.key_prefix(None)).await?;
    let me = (
        meta::namespace(svc).to_string(),
        meta::name(svc).to_string(),
    );
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for other in others {
        if (
            meta::namespace(&other).to_string(),
            meta::name(&other).to_string(),
        ) == me
        {
            continue;
        }
        if let Some(ip) = other
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            ips.insert(ip);
        }
        for p in other
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                ports.insert(n as u16);
            }
        }
    }
    Ok((ips, ports))
}

/// The Endpoints and EndpointSlice of the `default/kubernetes` Service:
/// the API servers' advertised addresses and port, so that pods reach the
/// API through the Service (upstream's endpoint reconciler writes these).
pub fn kubernetes_endpoints(ips: &[std::net::IpAddr], port: u16) -> (Value, Value) {
    let family = if ips.first().is_some_and(|ip| ip.is_ipv6()) {
        "IPv6"
    } else {
        "IPv4"
    };
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": addresses,
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    (endpoints, slice)
}

/// Writes [`kubernetes_endpoints`] through `client` (server-side apply as
/// `kube-apiserver`).
async fn write_kubernetes_endpoints(
    client: &kube::Client,
    ips: &[std::net::IpAddr],
    port: u16,
) -> kube::Result<()> {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, Patch, PatchParams};
    let (endpoints, slice) = kubernetes_endpoints(ips, port);
    let params = PatchParams::apply("kube-apiserver").force();
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .patch("kubernetes", &params, &Patch::Apply(&endpoints))
        .await?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .patch("kubernetes", &params, &Patch::Apply(&slice))
        .await?;
    Ok(())
}

/// Publishes this server as the `kubernetes` Service's one endpoint,
/// retrying until it is done (a server alone on its datastore).
pub async fn publish_kubernetes_endpoints(client: kube::Client, ip: std::net::IpAddr, port: u16) {
    while let Err(e) = write_kubernetes_endpoints(&client, &[ip], port).await {
        tracing::warn!(err = %e, "publishing the kubernetes Service's endpoints; retrying");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The label of the Leases by which servers sharing a datastore announce
/// their addresses (upstream keeps such records as `masterleases`).
const ENDPOINT_LEASE_LABEL: &str = "kelp.io/apiserver-endpoint";
/// How long an announcement holds without renewal, and how often it is renewed.
const ENDPOINT_LEASE_SECONDS: i32 = 15;
const ENDPOINT_RENEW: std::time::Duration = std::time::Duration::from_secs(5);

/// The addresses whose announcements hold at `now`, sorted.
fn announced_addresses(
    leases: &[k8s_openapi::api::coordination::v1::Lease],
    now: jiff::Timestamp,
) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = leases
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0;
            let seconds = spec
                .lease_duration_seconds
                .unwrap_or(ENDPOINT_LEASE_SECONDS);
            let expires = renewed
                .checked_add(jiff::SignedDuration::from_secs(seconds.into()))
                .ok()?;
            (expires > now).then(|| spec.holder_identity.as_deref()?.parse().ok())?
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Servers sharing a datastore: each announces its address in a Lease
/// renewed every few seconds and keeps the `kubernetes` Service's
/// endpoints to the addresses whose Leases hold (upstream's lease endpoint
/// reconciler), so a server that dies leaves them within 15 s.
pub async fn reconcile_kubernetes_endpoints(client: kube::Client, ip: std::net::IpAddr, port: u16) {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let name = format!("kelp-apiserver-{}", ip.to_string().replace([':', '.'], "-"));
    let params = PatchParams::apply("kube-apiserver").force();
    let mut published: Option<Vec<std::net::IpAddr>> = None;
    loop {
        let pass = async {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-system".into()),
                    labels: Some([(ENDPOINT_LEASE_LABEL.to_string(), "true".to_string())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(ip.to_string()),
                    lease_duration_seconds: Some(ENDPOINT_LEASE_SECONDS),
                    renew_time: Some(MicroTime(jiff::Timestamp::now())),
                    ..Default::default()
                }),
            };
            leases.patch(&name, &params, &Patch::Apply(&lease)).await?;
            let all = leases
                .list(&ListParams::default().labels(ENDPOINT_LEASE_LABEL))
                .await?;
            let ips = announced_addresses(&all.items, jiff::Timestamp::now());
            if published.as_ref() != Some(&ips) {
                write_kubernetes_endpoints(&client, &ips, port).await?;
                tracing::info!(servers = ?ips, "the kubernetes Service's endpoints");
                published = Some(ips);
            }
            Ok::<_, kube::Error>(())
        };
        if let Err(e) = pass.await {
            tracing::warn!(err = %e, "announcing this server's address");
        }
        tokio::time::sleep(ENDPOINT_RENEW).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_held_announcements_are_endpoints() {
        use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let now = jiff::Timestamp::now();
        let lease = |ip: &str, ago: i64| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(ip.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - jiff::SignedDuration::from_secs(ago))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let leases = [
            lease("10.0.0.2", 1),
            lease("10.0.0.1", 14),
            lease("10.0.0.3", 16),
        ];
        let held: Vec<std::net::IpAddr> =
            vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(super::announced_addresses(&leases, now), held);
    }
}
