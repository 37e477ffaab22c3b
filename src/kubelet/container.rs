//! CRI configurations from a pod spec: the sandbox (DNS, ports, namespaces),
//! and each container (command, environment, mounts, resources, security).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::Api;
use sha2::{Digest, Sha256};

use super::cri::api;
use crate::api::values::quantity;

/// CRI labels kelp (like upstream's kubelet) sets to find a pod's objects.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Pod name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Container name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Annotation: hash of the container spec the CRI container was made from.
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";

/// Node-wide settings the configs need.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Cluster DNS server (`--cluster-dns`).
    pub cluster_dns: String,
    /// Cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// The node's resolver configuration (`--resolv-conf`), for pods that
    /// use the node's DNS.
    pub resolv_conf: PathBuf,
    /// Node IP (status.hostIP).
    pub node_ip: String,
    /// Allocatable CPU cores and memory bytes, the default for limits in the downward API.
    pub allocatable: (f64, f64),
    /// kubelet's `--cgroup-root`: pods go under `<root>/kubepods/pod<uid>`.
    pub cgroup_root: String,
}

/// The pod's log directory, as upstream lays it out.
pub fn log_directory(pod: &Pod) -> PathBuf {
    PathBuf::from(format!(
        "/var/log/pods/{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(
        POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    labels.insert(POD_UID.into(), pod.metadata.uid.clone().unwrap_or_default());
    labels
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |node: bool| {
        if node {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        }
    };
    api::NamespaceOption {
        network: mode(spec.host_network.unwrap_or(false)),
        pid: if spec.host_pid.unwrap_or(false) {
            api::NamespaceMode::Node as i32
        } else if spec.share_process_namespace.unwrap_or(false) {
            api::NamespaceMode::Pod as i32
        } else {
            api::NamespaceMode::Container as i32
        },
        ipc: mode(spec.host_ipc.unwrap_or(false)),
        ..Default::default()
    }
}

/// Upstream's limits on what a pod's resolv.conf may hold (nameservers, and
/// search domains by count and by total length).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// DNS for the pod by its dnsPolicy, as upstream's kubelet forms it:
/// ClusterFirst (host networking excepted) and ClusterFirstWithHostNet get
/// the cluster DNS, the namespace's search list followed by the node's,
/// and `ndots:5`; Default (and ClusterFirst with host networking) gets the
/// node's resolv.conf (`--resolv-conf`); None starts empty. The pod's
/// `dnsConfig` is then appended (duplicates dropped, options by name), and
/// the result trimmed to the resolver's limits.
fn dns_config(pod: &Pod, node: &NodeSettings) -> api::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let domain = &node.cluster_domain;
    let cluster_first = match policy {
        "ClusterFirst" => !host_network(pod),
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let host = || {
        crate::network::resolv::ResolvConf::read(&node.resolv_conf)
            .inspect_err(|e| {
                tracing::warn!(path = %node.resolv_conf.display(), err = %e, "reading the node's resolv.conf")
            })
            .unwrap_or_default()
    };
    let mut config = if cluster_first && !node.cluster_dns.is_empty() {
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        searches.extend(host().searches);
        api::DnsConfig {
            servers: vec![node.cluster_dns.clone()],
            searches,
            options: vec!["ndots:5".into()],
        }
    } else if policy == "None" {
        api::DnsConfig::default()
    } else {
        let host = host();
        api::DnsConfig {
            servers: host.nameservers.iter().map(|ip| ip.to_string()).collect(),
            searches: host.searches,
            options: host.options,
        }
    };
    if let Some(custom) = &spec.dns_config {
        config
            .servers
            .extend(custom.nameservers.clone().unwrap_or_default());
        config
            .searches
            .extend(custom.searches.clone().unwrap_or_default());
        for option in custom.options.clone().unwrap_or_default() {
            let name = option.name.unwrap_or_default();
            let option = match option.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            };
            crate::network::resolv::merge_option(&mut config.options, &option);
        }
    }
    dedup(&mut config.servers);
    dedup(&mut config.searches);
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches.truncate(MAX_SEARCHES);
    let mut chars = 0;
    config.searches.retain(|s| {
        chars += s.len() + 1;
        chars <= MAX_SEARCH_CHARS
    });
    config
}

/// Drops later duplicates, keeping the order.
fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// The sandbox configuration of a pod.
pub fn sandbox_config(pod: &Pod, attempt: u32, node: &NodeSettings) -> api::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for port in c.ports.clone().unwrap_or_default() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
                continue;
            };
            port_mappings.push(api::PortMapping {
                protocol: match port.protocol.as_deref() {
                    Some("UDP") => api::Protocol::Udp as i32,
                    Some("SCTP") => api::Protocol::Sctp as i32,
                    _ => api::Protocol::Tcp as i32,
                },
                container_port: port.container_port,
                host_port,
                host_ip: port.host_ip.unwrap_or_default(),
            });
        }
    }
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname
        },
        log_directory: log_directory(pod).display().to_string(),
        dns_config: Some(dns_config(pod, node)),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: super::cgroup::pod_parent(
                &node.cgroup_root,
                pod.metadata.uid.as_deref().unwrap_or_default(),
            ),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged: spec.containers.iter().any(privileged),
                ..Default::default()
            }),
            sysctls: spec
                .security_context
                .and_then(|s| s.sysctls)
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

fn privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// Hash of the parts of a container spec that need a new container when they change.
pub fn spec_hash(c: &Container) -> String {
    let mut relevant = c.clone();
    // Probes and resources can change without a restart upstream.
    relevant.liveness_probe = None;
    relevant.readiness_probe = None;
    relevant.startup_probe = None;
    relevant.resources = None;
    let bytes = serde_json::to_vec(&relevant).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..4])
}

/// Why a container's configuration could not be made.
pub type ConfigError = String;

/// Resolves the pod fields the downward API and env `fieldRef`s can name.
pub fn field_value(pod: &Pod, pod_ip: &str, node: &NodeSettings, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let lookup = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .or(Some(String::new()))
    };
    let format_map = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return lookup(&meta.labels, key);
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return lookup(&meta.annotations, key);
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(&meta.labels)),
        "metadata.annotations" => Some(format_map(&meta.annotations)),
        "spec.nodeName" => spec.node_name.clone(),
        "spec.serviceAccountName" => spec.service_account_name.clone(),
        "status.hostIP" | "status.hostIPs" => Some(node.node_ip.clone()),
        "status.podIP" | "status.podIPs" => Some(if host_network(pod) {
            node.node_ip.clone()
        } else {
            pod_ip.to_string()
        }),
        _ => None,
    }
}

/// `resourceFieldRef`: a container's request or limit (limits default to
/// the node's allocatable), divided by the divisor and rounded up.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: &NodeSettings,
) -> Option<String> {
    let resources = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .and_then(|q| quantity::parse(&q.0))
    };
    let value = match resource {
        "limits.cpu" => get(&resources.limits, "cpu").unwrap_or(node.allocatable.0),
        "limits.memory" => get(&resources.limits, "memory").unwrap_or(node.allocatable.1),
        "requests.cpu" => get(&resources.requests, "cpu")
            .or(get(&resources.limits, "cpu"))
            .unwrap_or(0.0),
        "requests.memory" => get(&resources.requests, "memory")
            .or(get(&resources.limits, "memory"))
            .unwrap_or(0.0),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" => 0.0,
        _ => return None,
    };
    let divisor = divisor
        .and_then(quantity::parse)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(((value / divisor) - 1e-9).ceil().max(0.0).to_string())
}

/// Where keyed data comes from: a ConfigMap (data and binaryData) or a Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl DataSource {
    /// The kind's name, as messages give it.
    pub fn kind(self) -> &'static str {
        match self {
            DataSource::ConfigMap => "ConfigMap",
            DataSource::Secret => "Secret",
        }
    }

    /// Upstream's message for a missing object.
    pub fn not_found(self, name: &str) -> String {
        format!("{} \"{name}\" not found", self.kind().to_lowercase())
    }

    /// The object's keys and values, or None if it does not exist.
    pub async fn data(
        self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let found = match self {
            DataSource::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                api.get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|cm| {
                        let mut data: BTreeMap<String, Vec<u8>> = cm
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        data.extend(
                            cm.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        data
                    })
            }
            DataSource::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                api.get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect()
                    })
            }
        };
        Ok(found)
    }
}

/// Expands `$(VAR)` references as upstream does (`$$(` escapes).
pub fn expand(value: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("$(")
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Service links: `<NAME>_SERVICE_HOST` and friends for Services of the
/// pod's namespace (and the API server's `KUBERNETES_*`).
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let spec = svc.spec.clone().unwrap_or_default();
        let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
            continue;
        };
        let name = svc
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(port_name) = &p.name {
                env.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = first
            .protocol
            .clone()
            .unwrap_or_else(|| "TCP".into())
            .to_lowercase();
        env.push((
            format!("{name}_PORT"),
            format!("{proto}://{ip}:{}", first.port),
        ));
        for p in &ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            env.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
            ));
            env.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
            env.push((format!("{prefix}_PORT"), p.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

/// The container's environment, in upstream's order: service links, then
/// envFrom, then env (later wins), with `$(VAR)` expanded.
pub async fn environment(
    client: &kube::Client,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    node: &NodeSettings,
) -> Result<Vec<api::KeyValue>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let set =
        |order: &mut Vec<String>, values: &mut HashMap<String, String>, k: String, v: String| {
            if !values.contains_key(&k) {
                order.push(k.clone());
            }
            values.insert(k, v);
        };
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
        services.extend(
            api.list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items,
        );
    }
    if namespace != "default" || !links {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        if let Some(k) = api.get_opt("kubernetes").await.map_err(|e| e.to_string())? {
            services.push(k);
        }
    }
    for (k, v) in service_env(&services) {
        set(&mut order, &mut values, k, v);
    }
    for from in c.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.unwrap_or_default();
        let sources = [
            from.config_map_ref
                .map(|r| (DataSource::ConfigMap, r.name, r.optional)),
            from.secret_ref
                .map(|r| (DataSource::Secret, r.name, r.optional)),
        ];
        for (kind, name, optional) in sources.into_iter().flatten() {
            match kind.data(client, &namespace, &name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut order,
                            &mut values,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if optional == Some(true) => {}
                None => return Err(kind.not_found(&name)),
            }
        }
    }
    for var in c.env.clone().unwrap_or_default() {
        let value = if let Some(v) = var.value {
            expand(&v, &values)
        } else if let Some(from) = var.value_from {
            let key_ref = from
                .config_map_key_ref
                .clone()
                .map(|r| (DataSource::ConfigMap, r.name, r.key, r.optional))
                .or_else(|| {
                    from.secret_key_ref
                        .clone()
                        .map(|r| (DataSource::Secret, r.name, r.key, r.optional))
                });
            if let Some((kind, name, key, optional)) = key_ref {
                match kind.data(client, &namespace, &name).await? {
                    Some(data) => match data.get(&key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in {} {namespace}/{name}",
                                kind.kind()
                            ));
                        }
                    },
                    None if optional == Some(true) => continue,
                    None => return Err(kind.not_found(&name)),
                }
            } else if let Some(r) = from.field_ref {
                field_value(pod, pod_ip, node, &r.field_path)
                    .ok_or_else(|| format!("unsupported fieldRef {:?}", r.field_path))?
            } else if let Some(r) = from.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(name) if !name.is_empty() => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|x| x.name == name).cloned())
                        .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?,
                    _ => c.clone(),
                };
                resource_value(
                    &target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    node,
                )
                .ok_or_else(|| format!("unsupported resourceFieldRef {:?}", r.resource))?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut order, &mut values, var.name, value);
    }
    Ok(order
        .into_iter()
        .map(|k| api::KeyValue {
            value: values.remove(&k).unwrap_or_default(),
            key: k,
        })
        .collect())
}

/// Bind mounts for the container's volumeMounts (read-only where the
/// mount or the volume, in `read_only`, says so).
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    read_only: &std::collections::HashSet<String>,
) -> Result<Vec<api::Mount>, ConfigError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path inside the volume"
                    ));
                }
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only.unwrap_or(false) || read_only.contains(&m.name),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional as i32,
                _ => api::MountPropagation::PropagationPrivate as i32,
            },
            ..Default::default()
        });
    }
    Ok(out)
}

/// cgroup limits from the container's resources (upstream's conversion).
pub fn linux_resources(c: &Container) -> api::LinuxContainerResources {
    let resources = c.resources.clone().unwrap_or_default();
    let get =
        |map: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
         key: &str| { map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone()) };
    let cpu_request = get(&resources.requests, "cpu").or(get(&resources.limits, "cpu"));
    let cpu_limit = get(&resources.limits, "cpu");
    let memory_limit = get(&resources.limits, "memory");
    let period = 100_000;
    api::LinuxContainerResources {
        cpu_period: if cpu_limit.is_some() { period } else { 0 },
        cpu_quota: cpu_limit
            .and_then(|q| quantity::milli(&q))
            .map(|m| (m * period / 1000).max(1000))
            .unwrap_or(0),
        // 1024 shares per core; 2 is the kernel's minimum.
        cpu_shares: cpu_request
            .and_then(|q| quantity::milli(&q))
            .map(|m| (m * 1024 / 1000).max(2))
            .unwrap_or(2),
        memory_limit_in_bytes: memory_limit.and_then(|q| quantity::value(&q)).unwrap_or(0),
        ..Default::default()
    }
}

/// The container's security settings.
pub fn security(pod: &Pod, c: &Container) -> api::LinuxContainerSecurityContext {
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let run_as_group = sc.run_as_group.or(pod_sc.run_as_group);
    let capabilities = sc.capabilities.clone().unwrap_or_default();
    api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: capabilities.add.unwrap_or_default(),
            drop_capabilities: capabilities.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        run_as_user: run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod_sc.supplemental_groups.unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> NodeSettings {
        NodeSettings {
            cluster_dns: "10.43.0.10".into(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/nonexistent/resolv.conf"),
            node_ip: "192.0.2.1".into(),
            allocatable: (2.0, 4e9),
            cgroup_root: "/kelp-edge".into(),
        }
    }

    #[test]
    fn pods_go_under_the_cgroup_root() {
        let config = sandbox_config(&pod(json!({"containers": []})), 0, &node());
        assert_eq!(
            config.linux.map(|l| l.cgroup_parent).as_deref(),
            Some("/kelp-edge/kubepods/podu1")
        );
        assert_eq!(
            super::super::cgroup::pod_parent("/", "u1"),
            "/kubepods/podu1"
        );
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}}, "spec": spec})).unwrap()
    }

    #[test]
    fn variables_expand_like_upstream() {
        let env = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn cluster_first_dns_searches_the_namespace_first() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let dns = dns_config(&p, &node());
        assert_eq!(dns.servers, ["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
        );
        assert_eq!(dns.options, ["ndots:5"]);
    }

    #[test]
    fn dns_policies_follow_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = node();
        settings.resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &settings.resolv_conf,
            "nameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n",
        )
        .unwrap();
        let containers = json!([{"name": "c", "image": "i"}]);
        // ClusterFirst appends the node's search domains after the cluster's.
        let dns = dns_config(&pod(json!({"containers": containers})), &settings);
        assert_eq!(
            dns.searches,
            [
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(dns.options, ["ndots:5"]);
        // Host networking falls back to the node's configuration...
        let host = json!({"hostNetwork": true, "containers": containers});
        let dns = dns_config(&pod(host), &settings);
        assert_eq!(dns.servers, ["192.0.2.53"]);
        assert_eq!(dns.searches, ["corp.example"]);
        assert_eq!(dns.options, ["timeout:2"]);
        // ...unless it asks for the cluster's.
        let with_net = json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": containers});
        assert_eq!(
            dns_config(&pod(with_net), &settings).servers,
            ["10.43.0.10"]
        );
        let default = json!({"dnsPolicy": "Default", "containers": containers});
        assert_eq!(dns_config(&pod(default), &settings).servers, ["192.0.2.53"]);
        // None: only what dnsConfig says; options merge by name.
        let none = json!({"dnsPolicy": "None", "containers": containers, "dnsConfig": {
            "nameservers": ["10.42.0.1", "10.42.0.1"], "searches": ["ns.svc.cluster.local"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"name": "ndots", "value": "3"}]}});
        let dns = dns_config(&pod(none), &settings);
        assert_eq!(dns.servers, ["10.42.0.1"]);
        assert_eq!(dns.searches, ["ns.svc.cluster.local"]);
        assert_eq!(dns.options, ["edns0", "ndots:3"]);
        // dnsConfig extends ClusterFirst; at most three nameservers.
        let extra = json!({"containers": containers, "dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "options": [{"name": "ndots", "value": "1"}]}});
        let dns = dns_config(&pod(extra), &settings);
        assert_eq!(dns.servers, ["10.43.0.10", "1.1.1.1", "2.2.2.2"]);
        assert_eq!(dns.options, ["ndots:1"]);
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}})).unwrap();
        let r = linux_resources(&c);
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares),
            (100_000, 50_000, 256)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(
            resource_value(&c, "limits.memory", Some("1Mi"), &node()).as_deref(),
            Some("64")
        );
        assert_eq!(
            resource_value(&c, "requests.cpu", Some("1m"), &node()).as_deref(),
            Some("250")
        );
        let none: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(
            resource_value(&none, "limits.cpu", None, &node()).as_deref(),
            Some("2")
        );
    }

    #[test]
    fn fields_and_service_links_resolve() {
        let p = pod(json!({"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(
            field_value(&p, "10.42.0.9", &node(), "status.podIP").as_deref(),
            Some("10.42.0.9")
        );
        assert_eq!(
            field_value(&p, "", &node(), "metadata.labels['app']").as_deref(),
            Some("x")
        );
        assert_eq!(
            field_value(&p, "", &node(), "spec.nodeName").as_deref(),
            Some("n1")
        );
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "my-svc"}, "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})).unwrap();
        let env: HashMap<_, _> = service_env(&[svc]).into_iter().collect();
        assert_eq!(env["MY_SVC_SERVICE_HOST"], "10.43.0.20");
        assert_eq!(env["MY_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_SVC_PORT"], "tcp://10.43.0.20:80");
        assert_eq!(env["MY_SVC_PORT_80_TCP_ADDR"], "10.43.0.20");
    }
}
