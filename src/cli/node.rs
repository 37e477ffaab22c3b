//! The node side's settings from its flags, for `kelp server`'s local node
//! and `kelp agent` alike.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{NodeArgs, TelemetryArgs};
use crate::agent::ClusterSettings;
use crate::telemetry::{LogConfig, LogFormat, TracingConfiguration, init_logging};

/// Starts logging and, with `--tracing-config-file`, traces, as the flags
/// say; returns the trace exporter to flush at exit. Must run inside the
/// Tokio runtime (the exporter's channel lives there).
///
/// A configuration file that can't be read or is invalid stops the start,
/// as it stops kube-apiserver's; an exporter that can't be built only
/// turns traces off.
pub fn start_logging(
    log: &TelemetryArgs,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let format = match log.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => bail!("unknown --log-format {other:?} (text or json)"),
    };
    let tracing_config = log
        .tracing_config_file
        .as_deref()
        .map(TracingConfiguration::read)
        .transpose()?;
    let provider = tracing_config.as_ref().map(TracingConfiguration::provider);
    let (provider, problem) = match provider {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    init_logging(
        &LogConfig {
            format,
            verbosity: log.verbosity,
            file: log.log_file.clone(),
            vmodule: crate::telemetry::VModule::parse(&log.vmodule)
                .map_err(|e| anyhow::anyhow!("--vmodule: {e}"))?,
            file_max_bytes: log.log_file_max_size.saturating_mul(1024 * 1024),
        },
        provider.as_ref(),
    )?;
    if let Some(e) = problem {
        tracing::error!(err = format!("{e:#}"), "Traces are off");
    } else if let Some(config) = &tracing_config {
        tracing::info!(
            endpoint = config.endpoint(),
            samplingRatePerMillion = config.sampling_rate_per_million.unwrap_or(0),
            "Exporting traces"
        );
    }
    Ok(provider)
}

/// Puts the metric flags in force for every registry of the process
/// (before any is made). A manifest that can't be read or parsed is
/// logged and skipped, as upstream does; bad flag values stop the start.
fn set_metrics_policy(flags: &TelemetryArgs) -> Result<()> {
    let minor: u32 = crate::apiserver::KUBERNETES_MINOR
        .parse()
        .context("the served Kubernetes version")?;
    let manifest = flags
        .allow_metric_labels_manifest
        .as_ref()
        .and_then(|path| match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::error!(path = %path.display(), err = %e, "Failed to read allow list manifest");
                None
            }
        });
    let items: Vec<String> = flags
        .allow_metric_labels
        .iter()
        .flat_map(|v| crate::telemetry::stability::split_allow_items(v))
        .collect();
    let policy = crate::telemetry::stability::MetricsPolicy::from_flags(
        (1, minor),
        flags.show_hidden_metrics_for_version.as_deref(),
        &flags.disabled_metrics,
        &items,
        manifest.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    if policy.show_hidden_for.is_some() {
        tracing::warn!("Hidden metrics have been manually overridden, showing deprecated metrics");
    }
    crate::telemetry::stability::set_policy(policy);
    Ok(())
}

/// Runs a long-lived command (`server`, `agent`): takes systemd's notify
/// socket before any thread starts, starts logging, then runs `main` on a
/// multi-threaded runtime until it returns.
pub fn run_daemon<F, Fut>(telemetry: &TelemetryArgs, main: F) -> Result<()>
where
    F: FnOnce(super::notify::Notifier) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    // SAFETY: nothing has started a thread yet (the runtime and logging come next).
    let notifier = unsafe { super::notify::Notifier::from_env() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    let traces = {
        let _runtime = runtime.enter();
        start_logging(telemetry)?
    };
    set_metrics_policy(telemetry)?;
    let result = runtime.block_on(main(notifier));
    if let Some(provider) = traces {
        // The last batch of spans (the exporter gives up after its timeout).
        let _ = provider.shutdown();
    }
    result
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

    /// The `helm` for kelp's job image: `--helm-binary`, else `helm` in PATH.
    pub fn helm_binary(&self) -> Option<PathBuf> {
        if let Some(helm) = &self.helm_binary {
            return Some(helm.clone());
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("helm"))
            .find(|helm| helm.is_file())
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
            ingress_ports: (self.ingress_http_port, self.ingress_https_port),
            helm_job_image: self
                .helm_binary()
                .map(|helm| (crate::helm::JOB_IMAGE.to_string(), helm)),
            storage_dir: self
                .default_local_storage_path
                .clone()
                .unwrap_or_else(|| data_dir.join("storage")),
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
