//! Where a proxy request goes: a ready endpoint of a Service (from its
//! EndpointSlices), a pod's IP, or a node's kubelet (or another port on the
//! node), resolved as upstream's `ResourceLocation`s do, with their errors.

use std::net::IpAddr;

use rand::seq::SliceRandom;
use serde_json::Value;

use super::location::{SchemeNamePort, split_scheme_name_port};
use crate::api::ApiError;
use crate::apiserver::ApiState;

/// How to speak to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS without verifying the backend's certificate: pod and service
    /// addresses are IPs no certificate names (upstream's proxy transport
    /// skips verification for the same reason).
    HttpsInsecure,
    /// HTTPS to a kubelet: the cluster CA is trusted and kelp's client
    /// certificate presented, as for `pods/log`.
    Kubelet,
}

/// One backend address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// IP address or host name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Protocol.
    pub transport: Transport,
}

impl Target {
    /// `host:port` (IPv6 in brackets), the Host header sent to the backend.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The port a URL on this backend may leave out.
    pub fn default_port(&self) -> u16 {
        match self.transport {
            Transport::Http => 80,
            Transport::HttpsInsecure | Transport::Kubelet => 443,
        }
    }
}

/// Upstream's label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready endpoints of the Service `id` names, in random order (each request
/// starts on a different backend; later ones are fallbacks).
pub async fn service(state: &ApiState, namespace: &str, id: &str) -> Result<Vec<Target>, ApiError> {
    let SchemeNamePort { scheme, name, port } = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid service request {id:?}")))?;
    let service = load(state, "", "services", Some(namespace), &name).await?;
    let port_name = service_port_name(&service, &name, &port)?;
    let slices: Vec<Value> = list(state, "discovery.k8s.io", "endpointslices", namespace)
        .await?
        .into_iter()
        .filter(|s| s["metadata"]["labels"][SERVICE_NAME_LABEL] == name.as_str())
        .collect();
    let transport = scheme_transport(&scheme);
    let mut targets: Vec<Target> = ready_endpoints(&slices, &port_name)
        .into_iter()
        .map(|(host, port)| Target {
            host,
            port,
            transport,
        })
        .collect();
    if targets.is_empty() {
        return Err(ApiError::ServiceUnavailable(format!(
            "no endpoints available for service {name:?}"
        )));
    }
    targets.shuffle(&mut rand::rng());
    Ok(targets)
}

/// The pod `id` names, at the port asked for (or its first declared one).
pub async fn pod(state: &ApiState, namespace: &str, id: &str) -> Result<Target, ApiError> {
    let SchemeNamePort { scheme, name, port } = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid pod request {id:?}")))?;
    let pod = load(state, "", "pods", Some(namespace), &name).await?;
    let transport = scheme_transport(&scheme);
    let port = pod_port(&pod, &port)?.unwrap_or(match transport {
        Transport::Http => 80,
        _ => 443,
    });
    let ip = pod_address(&pod)?;
    Ok(Target {
        host: ip.to_string(),
        port,
        transport,
    })
}

/// The node `id` names: its kubelet unless another port is asked for.
pub async fn node(state: &ApiState, id: &str) -> Result<Target, ApiError> {
    let SchemeNamePort { scheme, name, port } = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    let (host, kubelet_port) = crate::apiserver::kubelet::kubelet_address(state, &name).await?;
    if port.is_empty() || port == kubelet_port.to_string() {
        return Ok(Target {
            host,
            port: kubelet_port,
            transport: Transport::Kubelet,
        });
    }
    let port = parse_port(&port)?;
    // Other ports on the node get no credentials, and never the node's
    // loopback or link-local addresses (upstream's IsProxyableHostname).
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() || !addresses.iter().all(|ip| proxyable(*ip)) {
        return Err(ApiError::bad_request("address not allowed"));
    }
    Ok(Target {
        host,
        port,
        transport: scheme_transport(&scheme),
    })
}

fn scheme_transport(scheme: &str) -> Transport {
    match scheme {
        "https" => Transport::HttpsInsecure,
        _ => Transport::Http,
    }
}

/// The Service port name a request's port stands for: a number is looked up
/// among the Service's ports (503 when it has none such, as upstream); a
/// name (or "" for the unnamed port) is taken as it is.
fn service_port_name(service: &Value, name: &str, port: &str) -> Result<String, ApiError> {
    let Ok(number) = port.parse::<i64>() else {
        return Ok(port.to_string());
    };
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(number))
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .ok_or_else(|| {
            ApiError::ServiceUnavailable(format!(
                "no service port {number} found for service {name:?}"
            ))
        })
}

/// Addresses and target ports of the ready endpoints in `slices` whose port
/// named `port_name` exists (the Service port's targetPort resolved per pod,
/// as the EndpointSlice controller wrote it). A missing `ready` counts as
/// ready, as the EndpointSlice API defines.
fn ready_endpoints(slices: &[Value], port_name: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            if endpoint["conditions"]["ready"] == false {
                continue;
            }
            if let Some(address) = endpoint["addresses"][0].as_str() {
                out.push((address.to_string(), port));
            }
        }
    }
    out
}

/// A pod port: a number, one of its containers' port names, or (when none is
/// given) the first declared container port; None when it declares none.
fn pod_port(pod: &Value, port: &str) -> Result<Option<u16>, ApiError> {
    let declared = || {
        pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
    };
    if port.is_empty() {
        return Ok(declared()
            .find_map(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok()));
    }
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return parse_port(port).map(Some);
    }
    declared()
        .find(|p| p["name"] == port)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid port {port:?}: no container port of that name"
            ))
        })
}

/// A port number 1–65535.
fn parse_port(port: &str) -> Result<u16, ApiError> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid port {port:?}")))
}

/// The pod's primary IP, refused unless it is a global unicast address
/// (upstream's "address not allowed": no IP yet, loopback, link-local).
fn pod_address(pod: &Value) -> Result<IpAddr, ApiError> {
    pod["status"]["podIPs"][0]["ip"]
        .as_str()
        .or_else(|| pod["status"]["podIP"].as_str())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| global_unicast(*ip))
        .ok_or_else(|| ApiError::bad_request("address not allowed"))
}

/// Go's `IP.IsGlobalUnicast` (private ranges included).
fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Upstream's `IsProxyableIP`: not loopback, link-local or interface-local.
fn proxyable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.is_unspecified()
                || (v6.is_multicast() && matches!(v6.segments()[0] & 0x000f, 1 | 2)))
        }
    }
}

/// One object from the store, or upstream's 404.
async fn load(
    state: &ApiState,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let rt = state
        .registry
        .lookup(group, "v1", resource)
        .ok_or_else(|| ApiError::Internal(format!("{resource} are not served")))?;
    let kv = state
        .store
        .get(&rt.key(namespace, name))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(group, resource, name))?;
    serde_json::from_slice(&kv.value).map_err(ApiError::internal)
}

/// All objects of a namespace.
async fn list(
    state: &ApiState,
    group: &str,
    resource: &str,
    namespace: &str,
) -> Result<Vec<Value>, ApiError> {
    let rt = state
        .registry
        .lookup(group, "v1", resource)
        .ok_or_else(|| ApiError::Internal(format!("{resource} are not served")))?;
    state.stored_objects(&rt.key_prefix(Some(namespace))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_by_number_or_name() {
        let svc = json!({"spec": {"ports": [{"port": 80}, {"name": "metrics", "port": 9090}]}});
        assert_eq!(service_port_name(&svc, "web", "80").unwrap(), "");
        assert_eq!(service_port_name(&svc, "web", "9090").unwrap(), "metrics");
        assert_eq!(
            service_port_name(&svc, "web", "metrics").unwrap(),
            "metrics"
        );
        assert_eq!(service_port_name(&svc, "web", "").unwrap(), "");
        let missing = service_port_name(&svc, "web", "81").unwrap_err();
        assert_eq!(missing.code_and_reason().0, 503);
        assert_eq!(
            missing.to_string(),
            "no service port 81 found for service \"web\""
        );
    }

    #[test]
    fn only_ready_endpoints_with_the_port_are_candidates() {
        let slices = vec![
            json!({
                "ports": [{"name": "", "port": 8080}, {"name": "metrics", "port": 9100}],
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
                    {"addresses": ["10.42.0.7"]},
                ]
            }),
            json!({"ports": [{"name": "other", "port": 1}], "endpoints": [{"addresses": ["10.42.0.8"]}]}),
        ];
        assert_eq!(
            ready_endpoints(&slices, ""),
            [
                ("10.42.0.5".to_string(), 8080),
                ("10.42.0.7".to_string(), 8080)
            ]
        );
        assert_eq!(ready_endpoints(&slices, "metrics").len(), 2);
        assert!(ready_endpoints(&slices, "nope").is_empty());
        // A slice without a `name` on its port serves the unnamed Service port.
        let unnamed =
            vec![json!({"ports": [{"port": 80}], "endpoints": [{"addresses": ["10.42.0.9"]}]})];
        assert_eq!(
            ready_endpoints(&unnamed, ""),
            [("10.42.0.9".to_string(), 80)]
        );
    }

    #[test]
    fn pod_ports_and_addresses() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9000}]}]},
            "status": {"podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}]}
        });
        assert_eq!(pod_port(&pod, "").unwrap(), Some(8080));
        assert_eq!(pod_port(&pod, "9000").unwrap(), Some(9000));
        assert_eq!(pod_port(&pod, "http").unwrap(), Some(8080));
        assert_eq!(pod_port(&pod, "grpc").unwrap_err().code_and_reason().0, 400);
        assert_eq!(
            pod_port(&pod, "70000").unwrap_err().code_and_reason().0,
            400
        );
        assert_eq!(pod_port(&json!({"spec": {}}), "").unwrap(), None);
        assert_eq!(pod_address(&pod).unwrap().to_string(), "10.42.0.5");
        for status in [
            json!({}),
            json!({"podIP": "127.0.0.1"}),
            json!({"podIP": "169.254.1.1"}),
        ] {
            let err = pod_address(&json!({"status": status})).unwrap_err();
            assert_eq!(err.to_string(), "address not allowed");
        }
    }

    #[test]
    fn node_addresses_that_may_be_proxied() {
        assert!(proxyable("192.168.1.10".parse().unwrap()));
        assert!(!proxyable("127.0.0.1".parse().unwrap()));
        assert!(!proxyable("169.254.169.254".parse().unwrap()));
        assert!(!proxyable("::1".parse().unwrap()));
        let target = Target {
            host: "fd00::1".into(),
            port: 80,
            transport: Transport::Http,
        };
        assert_eq!(target.authority(), "[fd00::1]:80");
    }
}
