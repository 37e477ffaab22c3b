//! The node side's settings from its flags, for `kelp server`'s local node
//! and `kelp agent` alike.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{LogArgs, NodeArgs};
use crate::agent::ClusterSettings;
use crate::telemetry::{LogConfig, LogFormat, init_logging};

/// Starts logging as the flags say.
pub fn start_logging(log: &LogArgs) -> Result<()> {
    let format = match log.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => bail!("unknown --log-format {other:?} (text or json)"),
    };
    init_logging(&LogConfig {
        format,
        verbosity: log.verbosity,
        file: log.log_file.clone(),
    })
}

/// Runs a long-lived command (`server`, `agent`): takes systemd's notify
/// socket before any thread starts, starts logging, then runs `main` on a
/// multi-threaded runtime until it returns.
pub fn run_daemon<F, Fut>(log: &LogArgs, main: F) -> Result<()>
where
    F: FnOnce(super::notify::Notifier) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    // SAFETY: nothing has started a thread yet (logging and the runtime come next).
    let notifier = unsafe { super::notify::Notifier::from_env() };
    start_logging(log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    runtime.block_on(main(notifier))
}

/// The join token given as `--token` or in `--token-file`, if either.
pub fn join_token(
    token: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<String>> {
    Ok(match (token, file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("--token-file {}", file.display()))?,
        ),
        (None, None) => None,
    })
}

/// The host's name, as nodes are named by default.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl NodeArgs {
    /// `--node-name`, else the host name in lower case.
    pub fn name(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(|| hostname().to_lowercase())
    }

    /// `--node-ip`, else `fallback`, else the address of the default route's interface.
    pub fn ip(&self, fallback: Option<&str>) -> IpAddr {
        self.node_ip
            .as_deref()
            .or(fallback)
            .and_then(|ip| ip.parse().ok())
            .or_else(|| crate::network::host::default_ipv4().map(IpAddr::V4))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }

    /// The node's resolv.conf: `--resolv-conf`, else the file k3s would pick.
    pub fn resolv_conf(&self) -> PathBuf {
        self.resolv_conf
            .clone()
            .unwrap_or_else(crate::network::resolv::host_resolv_conf)
    }

    /// The kubelet's settings.
    pub fn agent_config(
        &self,
        data_dir: &Path,
        cluster: &ClusterSettings,
        ip: IpAddr,
        control_plane: bool,
    ) -> Result<crate::kubelet::AgentConfig> {
        Ok(crate::kubelet::AgentConfig {
            node: crate::kubelet::node::NodeConfig {
                name: self.name(),
                ip: ip.to_string(),
                labels: self.node_label.clone(),
                taints: self.node_taint.clone(),
                control_plane,
                data_dir: data_dir.to_path_buf(),
            },
            runtime_endpoint: self.container_runtime_endpoint.clone(),
            cluster_cidr: cluster.cluster_cidr.clone(),
            cluster_dns: cluster.cluster_dns.clone(),
            cluster_domain: cluster.cluster_domain.clone(),
            resolv_conf: self.resolv_conf(),
            log_max_size: crate::kubelet::logs::parse_size(&self.container_log_max_size)
                .context("--container-log-max-size")?,
            log_max_files: self.container_log_max_files.max(2),
            private_registry: self.private_registry.clone(),
            pod_network_backend: self.pod_network_backend,
            cgroup_root: self.cgroup_root.clone(),
        })
    }

    /// The cluster DNS's settings (the pod CIDR is filled in once the node has one).
    pub fn dns_config(&self, cluster: &ClusterSettings) -> crate::dns::Config {
        crate::dns::Config {
            node: self.name(),
            pod_cidr: String::new(),
            cluster_dns: cluster.cluster_dns.clone(),
            cluster_domain: cluster.cluster_domain.clone(),
            resolv_conf: self.resolv_conf(),
        }
    }
}
