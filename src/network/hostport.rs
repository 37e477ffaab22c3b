//! hostPort: DNAT from the node's ports to pods, in kelp's nat chain
//! `KELP-HOSTPORTS` (jumped to from PREROUTING and OUTPUT for local
//! destinations). Rules carry the container id in their comment, so DEL
//! removes exactly its own. Connections from the node itself to
//! 127.0.0.1:hostPort work too (route_localnet on the bridge, masqueraded).

use serde::Deserialize;

use super::iptables::{ensure_rule, iptables, rules};

/// kelp's hostPort chain.
pub const CHAIN: &str = "KELP-HOSTPORTS";
const JUMP_COMMENT: &str = "kelp hostports";

/// One mapping, as the runtime passes it in `runtimeConfig.portMappings`
/// (the CNI spec's names; containerd 1.6 sends Go's capitalised ones).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the node.
    #[serde(alias = "HostPort")]
    pub host_port: u16,
    /// Port in the pod.
    #[serde(alias = "ContainerPort")]
    pub container_port: u16,
    /// tcp, udp or sctp.
    #[serde(default = "tcp", alias = "Protocol")]
    pub protocol: String,
    /// Node address to bind (empty: all).
    #[serde(default, rename = "hostIP", alias = "HostIP")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".into()
}

fn comment(container: &str) -> String {
    format!("kelp hostport {container}")
}

/// The DNAT rule of one mapping.
pub fn rule(container: &str, pod_ip: &str, m: &PortMapping) -> Vec<String> {
    let mut rule = vec![
        "-p".to_string(),
        m.protocol.to_lowercase(),
        "--dport".into(),
        m.host_port.to_string(),
    ];
    if !m.host_ip.is_empty() && m.host_ip != "0.0.0.0" {
        rule.extend(["-d".into(), m.host_ip.clone()]);
    }
    rule.extend([
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        comment(container),
        "-j".into(),
        "DNAT".into(),
        "--to-destination".into(),
        format!("{pod_ip}:{}", m.container_port),
    ]);
    rule
}

/// Maps the ports to the pod. Idempotent; callers hold the plugin's lock.
pub fn add(
    container: &str,
    pod_ip: &str,
    bridge: &str,
    mappings: &[PortMapping],
) -> Result<(), String> {
    if mappings.is_empty() {
        return Ok(());
    }
    let _ = iptables(&["-N", CHAIN]);
    let jump = [
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-m",
        "comment",
        "--comment",
        JUMP_COMMENT,
        "-j",
        CHAIN,
    ];
    ensure_rule("PREROUTING", &jump)?;
    ensure_rule("OUTPUT", &jump)?;
    // The node's own connections to 127.0.0.1:hostPort leave through the bridge.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    );
    super::masquerade::ensure_localhost(bridge)?;
    for m in mappings {
        let rule = rule(container, pod_ip, m);
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure_rule(CHAIN, &args)?;
    }
    Ok(())
}

/// Removes the container's mappings (nothing if it had none).
pub fn remove(container: &str) {
    let marker = comment(container);
    for rule in rules(CHAIN) {
        if rule.contains(&marker) {
            let mut args: Vec<&str> = rule.iter().map(String::as_str).collect();
            args[0] = "-D";
            let _ = iptables(&args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_from_runtime_config_and_become_dnat_rules() {
        let m: PortMapping = serde_json::from_str(
            r#"{"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":""}"#,
        )
        .unwrap();
        let containerd: PortMapping = serde_json::from_str(
            r#"{"HostPort":8080,"ContainerPort":80,"Protocol":"TCP","HostIP":""}"#,
        )
        .unwrap();
        assert_eq!(m, containerd);
        let rule = rule("abc", "10.42.0.5", &m);
        assert_eq!(rule[..4], ["-p", "tcp", "--dport", "8080"]);
        assert!(rule.contains(&"kelp hostport abc".to_string()));
        assert_eq!(rule.last().unwrap(), "10.42.0.5:80");
    }
}
