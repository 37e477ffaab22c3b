//! The CNI plugin protocol (kelp invoked as `kelp-cni`): the invocation read
//! from the environment and stdin, typed; results and errors written as the
//! CNI 1.0 specification says. ADD allocates an address (ipam.rs) and wires the
//! pod to the node bridge (bridge.rs); DEL undoes both; CHECK confirms the
//! allocation. With `clusterCIDR` set, ADD also ensures MASQUERADE for traffic
//! leaving it (masquerade.rs).

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bridge;
use super::cidr::Cidr;
use super::ipam::Ipam;
use super::{hostport, masquerade};
use serde_json::json;

/// The CNI spec versions kelp speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// What the runtime asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it (must succeed even if parts are already gone).
    Del,
    /// Verify the attachment.
    Check,
    /// Report supported versions.
    Version,
}

/// One invocation: the environment variables of the CNI spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS: path of the network namespace.
    pub netns: PathBuf,
    /// CNI_IFNAME: interface name inside the container.
    pub ifname: String,
}

/// kelp's network configuration (the JSON on stdin).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version the runtime uses.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// The plugin type (`kelp-cni`).
    #[serde(rename = "type")]
    pub plugin: String,
    /// Bridge device name.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// This node's pod CIDR.
    pub subnet: String,
    /// The whole cluster's pod CIDR (traffic leaving it is masqueraded).
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// Where IPAM state lives.
    #[serde(default = "default_state_dir")]
    pub data_dir: PathBuf,
    /// MTU of veth and bridge.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// What the runtime passes for declared capabilities (hostPort mappings).
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
}

/// `runtimeConfig` of the network configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// hostPort mappings of the pod.
    #[serde(default)]
    pub port_mappings: Vec<super::hostport::PortMapping>,
}

/// The pod bridge's name (`cni0`, as k3s's flannel bridge).
pub fn default_bridge() -> String {
    "cni0".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kelp/agent/cni/networks")
}

/// A CNI error: a code from the spec and a message, printed as JSON on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// Spec code: 1 incompatible version, 4 invalid environment, 6 decode failure,
    /// 7 invalid network config, 100+ plugin-specific.
    pub code: u32,
    /// What went wrong.
    pub msg: String,
    /// More detail.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
}

/// Reads the invocation from an environment lookup.
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => return Err(CniError::new(4, format!("unknown CNI_COMMAND {other:?}"))),
        None => return Err(CniError::new(4, "CNI_COMMAND is not set")),
    };
    let required = |name: &str| -> Result<String, CniError> {
        match get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ if command == Command::Version => Ok(String::new()),
            // DEL may come without a netns when the namespace is already gone.
            _ if command == Command::Del && name == "CNI_NETNS" => Ok(String::new()),
            _ => Err(CniError::new(4, format!("{name} is required"))),
        }
    };
    Ok(Invocation {
        command,
        container_id: required("CNI_CONTAINERID")?,
        netns: PathBuf::from(required("CNI_NETNS")?),
        ifname: required("CNI_IFNAME")?,
    })
}

/// Parses the network configuration and checks its version.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(6, format!("decoding network configuration: {e}")))?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            1,
            format!("incompatible CNI version {:?}", conf.cni_version),
        ));
    }
    if conf.subnet.parse::<super::cidr::Cidr>().is_err() {
        return Err(CniError::new(
            7,
            format!("subnet {:?} is not an IPv4 CIDR", conf.subnet),
        ));
    }
    Ok(conf)
}

/// The VERSION answer.
pub fn version_result() -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS})
}

/// Entry point of `kelp-cni`: returns the process exit code.
pub fn run() -> i32 {
    respond(handle(|name| std::env::var(name).ok(), std::io::stdin()))
}

/// The `loopback` plugin (kelp invoked as `loopback`): containerd runs it
/// for every pod to bring `lo` up.
pub fn run_loopback() -> i32 {
    respond(handle_loopback(|name| std::env::var(name).ok()))
}

fn handle_loopback(env: impl Fn(&str) -> Option<String>) -> Result<serde_json::Value, CniError> {
    let invocation = parse_env(env)?;
    match invocation.command {
        Command::Version => Ok(version_result()),
        Command::Add => {
            bridge::loopback_up(&invocation.netns)
                .map_err(|e| CniError::new(100, e.to_string()))?;
            Ok(json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "lo", "sandbox": invocation.netns}],
                "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            }))
        }
        // Nothing to undo: lo goes with the namespace.
        Command::Del | Command::Check => Ok(json!({})),
    }
}

fn respond(outcome: Result<serde_json::Value, CniError>) -> i32 {
    let mut stdout = std::io::stdout();
    match outcome {
        Ok(result) => {
            let _ = writeln!(stdout, "{result}");
            0
        }
        Err(e) => {
            let mut body = serde_json::to_value(&e).unwrap_or_default();
            body["cniVersion"] = json!("1.0.0");
            let _ = writeln!(stdout, "{body}");
            1
        }
    }
}

fn handle(
    env: impl Fn(&str) -> Option<String>,
    mut stdin: impl Read,
) -> Result<serde_json::Value, CniError> {
    let invocation = parse_env(env)?;
    if invocation.command == Command::Version {
        return Ok(version_result());
    }
    let mut input = Vec::new();
    stdin
        .read_to_end(&mut input)
        .map_err(|e| CniError::new(5, format!("reading stdin: {e}")))?;
    let conf = parse_conf(&input)?;
    let subnet: Cidr = conf
        .subnet
        .parse()
        .map_err(|e: String| CniError::new(7, e))?;
    let ipam = Ipam::open(&conf.data_dir.join(&conf.name), subnet)
        .map_err(|e| CniError::new(5, e.to_string()))?;
    match invocation.command {
        Command::Add => add(&conf, &invocation, &ipam, subnet),
        Command::Del => {
            // DEL succeeds when things are already gone, as the spec asks.
            {
                let _lock = ipam.lock().map_err(|e| CniError::new(5, e.to_string()))?;
                hostport::remove(&invocation.container_id);
            }
            bridge::detach(&invocation.container_id, &invocation.ifname)
                .map_err(|e| CniError::new(100, e.to_string()))?;
            ipam.release(&invocation.container_id, &invocation.ifname)
                .map_err(|e| CniError::new(5, e.to_string()))?;
            Ok(json!({}))
        }
        Command::Check => {
            let known = ipam
                .allocated()
                .map_err(|e| CniError::new(5, e.to_string()))?
                .iter()
                .any(|(_, c, i)| *c == invocation.container_id && *i == invocation.ifname);
            if known {
                Ok(json!({}))
            } else {
                Err(CniError::new(3, "container unknown to kelp-cni"))
            }
        }
        Command::Version => Ok(version_result()),
    }
}

fn add(
    conf: &NetConf,
    invocation: &Invocation,
    ipam: &Ipam,
    subnet: Cidr,
) -> Result<serde_json::Value, CniError> {
    let address = ipam
        .allocate(&invocation.container_id, &invocation.ifname)
        .map_err(|e| CniError::new(5, e.to_string()))?;
    let attached = bridge::attach(
        &conf.bridge,
        &invocation.netns,
        &invocation.container_id,
        &invocation.ifname,
        address,
        ipam.gateway(),
        subnet.prefix,
    );
    let attachment = match attached {
        Ok(a) => a,
        Err(e) => {
            // Leave nothing behind: the runtime will retry ADD from scratch.
            let _ = bridge::detach(&invocation.container_id, &invocation.ifname);
            let _ = ipam.release(&invocation.container_id, &invocation.ifname);
            return Err(CniError::new(100, e.to_string()));
        }
    };
    // Pods reach other nodes and the outside through the host.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| CniError::new(5, format!("enabling ip_forward: {e}")))?;
    if let Some(cluster) = &conf.cluster_cidr {
        let _lock = ipam.lock().map_err(|e| CniError::new(5, e.to_string()))?;
        masquerade::ensure(cluster).map_err(|e| CniError::new(100, e))?;
    }
    if !conf.runtime_config.port_mappings.is_empty() {
        let _lock = ipam.lock().map_err(|e| CniError::new(5, e.to_string()))?;
        hostport::add(
            &invocation.container_id,
            &attachment.address.to_string(),
            &conf.bridge,
            &conf.runtime_config.port_mappings,
        )
        .map_err(|e| CniError::new(100, e))?;
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": conf.bridge},
            {"name": attachment.host_veth},
            {"name": invocation.ifname, "sandbox": invocation.netns},
        ],
        "ips": [{
            "address": format!("{}/{}", attachment.address, attachment.prefix),
            "gateway": attachment.gateway.to_string(),
            "interface": 2,
        }],
        "routes": [{"dst": "0.0.0.0/0", "gw": attachment.gateway.to_string()}],
        "dns": {},
    }))
}

/// The network configuration list containerd reads (`10-kelp.conflist`):
/// kelp-cni on `bridge` with the node's pod CIDR. The cluster's MASQUERADE
/// rule is kept by the agent (see kubelet), not ensured on every ADD.
pub fn conflist(bridge: &str, subnet: &str, data_dir: &std::path::Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "kelp",
        "plugins": [{
            "type": "kelp-cni",
            "bridge": bridge,
            "subnet": subnet,
            "dataDir": data_dir,
            "capabilities": {"portMappings": true},
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn version_needs_nothing_else() {
        let result = handle(env(&[("CNI_COMMAND", "VERSION")]), std::io::empty()).expect("version");
        assert_eq!(result["supportedVersions"][3], "1.0.0");
    }

    #[test]
    fn environment_is_checked() {
        assert_eq!(parse_env(env(&[])).expect_err("no command").code, 4);
        assert_eq!(
            parse_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")]))
                .expect_err("missing")
                .code,
            4
        );
        let del = parse_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("del");
        assert_eq!((del.command, del.netns), (Command::Del, PathBuf::new()));
    }

    #[test]
    fn configuration_is_typed() {
        let conf = parse_conf(
            br#"{"cniVersion":"1.0.0","name":"kelp","type":"kelp-cni","subnet":"10.42.0.0/24"}"#,
        )
        .expect("conf");
        assert_eq!(
            (conf.bridge.as_str(), conf.subnet.as_str()),
            ("cni0", "10.42.0.0/24")
        );
        assert_eq!(conf.cluster_cidr, None);
        let with_cluster = parse_conf(
            br#"{"cniVersion":"1.0.0","name":"kelp","type":"kelp-cni","subnet":"10.42.0.0/24","clusterCIDR":"10.42.0.0/16"}"#,
        )
        .expect("conf");
        assert_eq!(with_cluster.cluster_cidr.as_deref(), Some("10.42.0.0/16"));
        assert_eq!(parse_conf(b"{").expect_err("garbage").code, 6);
        assert_eq!(
            parse_conf(
                br#"{"cniVersion":"9.9.9","name":"k","type":"kelp-cni","subnet":"10.42.0.0/24"}"#
            )
            .expect_err("version")
            .code,
            1
        );
        assert_eq!(
            parse_conf(br#"{"cniVersion":"1.0.0","name":"k","type":"kelp-cni","subnet":"nope"}"#)
                .expect_err("subnet")
                .code,
            7
        );
    }
}
