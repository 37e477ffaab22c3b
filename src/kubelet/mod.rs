//! The node agent: supervises containerd, imports images, registers the
//! Node, runs a worker per pod over CRI, rotates logs, samples resource usage
//! and serves the kubelet API on 10250. Also the pod sandbox process (`pause`).

pub mod cgroup;
pub mod container;
pub mod containerd;
pub mod cri;
pub mod exec;
pub mod images;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod node_logs;
pub mod pause;
pub mod plan;
pub mod pod_runtime;
pub mod pods;
pub mod portforward;
pub mod probes;
pub mod registries;
pub mod server;
pub mod spdy;
pub mod stats;
pub mod status;
pub mod streaming;
pub mod volumes;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::{oneshot, watch};

use self::container::NodeSettings;
use self::node::NodeConfig;
use crate::runtime::Shutdown;

/// Everything the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node.
    pub node: NodeConfig,
    /// `--container-runtime-endpoint` (unset: kelp runs containerd).
    pub runtime_endpoint: Option<PathBuf>,
    /// `--cluster-cidr`, masqueraded when leaving.
    pub cluster_cidr: String,
    /// `--cluster-dns`.
    pub cluster_dns: String,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf` (or the file k3s would choose).
    pub resolv_conf: PathBuf,
    /// `--container-log-max-size`, bytes.
    pub log_max_size: u64,
    /// `--container-log-max-files`.
    pub log_max_files: usize,
    /// `--private-registry`: mirrors and credentials (k3s's registries.yaml format).
    pub private_registry: PathBuf,
    /// `--pod-network-backend`: how pods reach other nodes' pods.
    pub pod_network_backend: crate::network::routes::Backend,
    /// kubelet's `--cgroup-root`.
    pub cgroup_root: String,
    /// `--default-local-storage-path`: local-path volumes' directories.
    pub storage_dir: PathBuf,
    /// `--ingress-http-port`, `--ingress-https-port`.
    pub ingress_ports: (u16, u16),
    /// kelp's helm job image to build here: (reference, the `helm` it holds).
    pub helm_job_image: Option<(String, PathBuf)>,
}

/// Runs the node until `shutdown`: starts containerd (unless
/// `--container-runtime-endpoint` names one), registers the Node and tells
/// `registered` its pod CIDR, then runs the pod workers, heartbeat, log
/// rotation, stats and the kubelet API. At the stop, containerd stops
/// too (pods keep running). `client` acts as the node; `tls` serves the
/// kubelet API.
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    labeler: Option<kube::Client>,
    tls: Arc<rustls::ServerConfig>,
    registered: oneshot::Sender<String>,
    shutdown: Shutdown,
) -> Result<()> {
    let layout = containerd::Layout::new(&config.node.data_dir);
    let (stop, stop_rx) = watch::channel(false);
    let (socket, supervisor) = match &config.runtime_endpoint {
        Some(endpoint) => {
            let path = endpoint.to_string_lossy();
            (PathBuf::from(path.trim_start_matches("unix://")), None)
        }
        None => {
            let registries = registries::Registries::load(&config.private_registry)?;
            layout.prepare(images::PAUSE_IMAGE, &registries)?;
            let task = tokio::spawn(containerd::supervise(layout.clone(), stop_rx));
            (layout.socket.clone(), Some(task))
        }
    };
    let outcome = shutdown
        .until(run_over(config, client, labeler, tls, socket, registered))
        .await
        .unwrap_or(Ok(()));
    let _ = stop.send(true);
    if let Some(task) = supervisor {
        let _ = task.await;
    }
    outcome
}

/// The node over the container runtime at `socket`, until dropped.
async fn run_over(
    config: AgentConfig,
    client: kube::Client,
    labeler: Option<kube::Client>,
    tls: Arc<rustls::ServerConfig>,
    socket: PathBuf,
    registered: oneshot::Sender<String>,
) -> Result<()> {
    let data_dir = config.node.data_dir.clone();
    let layout = containerd::Layout::new(&data_dir);
    let channel = containerd::connect(&socket, Duration::from_secs(60)).await?;
    let importer = images::ImageImporter::new(channel.clone());
    let agent_dir = data_dir.join("agent");
    cgroup::record_root(&data_dir, &config.cgroup_root).context("recording the cgroup root")?;
    let started = std::time::Instant::now();
    importer
        .ensure_pause(&agent_dir)
        .await
        .context("importing the pause image")?;
    tracing::info!(
        image = images::PAUSE_IMAGE,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "pause image ready"
    );
    import_image_dir(&importer, &agent_dir).await;
    if let Some((reference, helm)) = config.helm_job_image.clone() {
        // In the background: a few hundred MB to write once per binary.
        let importer = importer.clone();
        let dir = agent_dir.join("helm-job-image");
        tokio::spawn(async move {
            let built = match images::helm_job_image(&reference, &helm) {
                Ok(image) => importer.ensure_built(&dir, image).await,
                Err(e) => Err(e),
            };
            match built {
                Ok(()) => {
                    tracing::info!(image = %reference, helm = %helm.display(), "helm job image ready")
                }
                Err(e) => {
                    tracing::warn!(err = %format!("{e:#}"), helm = %helm.display(), "building the helm job image")
                }
            }
        });
    }
    let channel_for_exec = channel.clone();
    let kubelet_metrics = Arc::new(metrics::KubeletMetrics::default());
    let cri = cri::Cri::new(channel, kubelet_metrics.clone());

    let nodes: Api<Node> = Api::all(client.clone());
    let labeler: Option<Api<Node>> = labeler.map(Api::all);
    let pod_cidr = loop {
        match node::register(&nodes, labeler.as_ref(), &config.node).await {
            Ok(Some(cidr)) => break cidr,
            Ok(None) => anyhow::bail!("the server gave the Node no podCIDR"),
            Err(e) => {
                tracing::warn!(err = %format!("{e:#}"), "registering the node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    if config.runtime_endpoint.is_none() {
        let conf = crate::network::cni::conflist(
            &crate::network::cni::default_bridge(),
            &pod_cidr,
            &layout.cni_state,
        );
        std::fs::write(
            layout.cni_conf.join("10-kelp.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )
        .context("writing the CNI configuration")?;
    }
    tracing::info!(node = %config.node.name, pod_cidr = %pod_cidr, "node registered");
    let _ = registered.send(pod_cidr);
    let heartbeat = node::heartbeat(
        client.clone(),
        config.node.clone(),
        node::Host {
            runtime: cri.clone(),
            data_dir: data_dir.clone(),
        },
    );

    let readings = node::Readings::take(&data_dir);
    let kubelet_client = client.clone();
    let probe_metrics = Arc::new(probes::ProbeMetrics::default());
    let claim_volumes = volumes::ClaimVolumes::default();
    let ctx = Arc::new(worker::NodeContext {
        client,
        cri: cri.clone(),
        settings: NodeSettings {
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            resolv_conf: config.resolv_conf.clone(),
            node_ip: config.node.ip.clone(),
            allocatable: (readings.cpus as f64, readings.memory_total as f64),
            cgroup_root: config.cgroup_root.clone(),
        },
        data_dir: data_dir.clone(),
        node_name: config.node.name.clone(),
        probe_metrics: probe_metrics.clone(),
        metrics: kubelet_metrics.clone(),
        claim_volumes: claim_volumes.clone(),
    });

    let collector = stats::Collector::new(
        cri.clone(),
        channel_for_exec.clone(),
        config.node.name.clone(),
        claim_volumes,
    );
    let sampling = collector.clone().run();
    let kubelet = server::router(Arc::new(server::KubeletApi {
        cri: cri.clone(),
        containerd: channel_for_exec,
        client: kubelet_client,
        stats: collector,
        node_name: config.node.name.clone(),
        probes: probe_metrics,
        metrics: kubelet_metrics,
    }));
    let addr = format!("0.0.0.0:{}", server::PORT);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr} (kubelet API)"))?;
    let serving = async move {
        if let Err(e) =
            crate::http::serve::serve(listener, tls, kubelet, std::future::pending()).await
        {
            tracing::error!(err = %e, "kubelet API stopped");
        }
    };
    // Each loop its own task, as before; dropping the set at the stop
    // aborts them all.
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(keep_masquerade(config.cluster_cidr.clone()));
    loops.spawn(heartbeat);
    loops.spawn(pods::run(ctx));
    loops.spawn(rotate_logs(cri, config.log_max_size, config.log_max_files));
    loops.spawn(sampling);
    loops.spawn(serving);
    while loops.join_next().await.is_some() {}
    Ok(())
}

/// Keeps the MASQUERADE rule for pod traffic leaving `--cluster-cidr`:
/// made at start, repaired every minute if something removed it.
async fn keep_masquerade(cluster_cidr: String) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        let cidr = cluster_cidr.clone();
        match tokio::task::spawn_blocking(move || crate::network::masquerade::ensure(&cidr)).await {
            Ok(Err(e)) => tracing::warn!(err = %e, "ensuring MASQUERADE for the cluster CIDR"),
            Err(e) => tracing::warn!(err = %e, "ensuring MASQUERADE for the cluster CIDR"),
            Ok(Ok(())) => {}
        }
    }
}

/// Imports the tarballs in `<data-dir>/agent/images/` (air-gap images).
async fn import_image_dir(importer: &images::ImageImporter, agent_dir: &std::path::Path) {
    let dir = agent_dir.join("images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
        .collect();
    files.sort();
    for file in files {
        let started = std::time::Instant::now();
        match importer.import_tarball(&file, agent_dir).await {
            Ok(names) => {
                tracing::info!(file = %file.display(), images = ?names, elapsed_ms = started.elapsed().as_millis() as u64, "imported images")
            }
            Err(e) => {
                tracing::error!(file = %file.display(), err = %format!("{e:#}"), "importing images")
            }
        }
    }
}

/// Every 10 s, rotates the log of each running container that grew past the limit.
async fn rotate_logs(cri: cri::Cri, max_size: u64, max_files: usize) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticker.tick().await;
        let mut runtime = cri.runtime.clone();
        let filter = cri::api::ContainerFilter {
            state: Some(cri::api::ContainerStateValue {
                state: cri::api::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        let Ok(list) = runtime
            .list_containers(cri::api::ListContainersRequest {
                filter: Some(filter),
            })
            .await
        else {
            continue;
        };
        for c in list.into_inner().containers {
            let Ok(status) = runtime
                .container_status(cri::api::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            else {
                continue;
            };
            let Some(status) = status.into_inner().status else {
                continue;
            };
            let path = PathBuf::from(&status.log_path);
            let reopen = || {
                let mut runtime = cri.runtime.clone();
                let id = c.id.clone();
                async move {
                    runtime
                        .reopen_container_log(cri::api::ReopenContainerLogRequest {
                            container_id: id,
                        })
                        .await
                        .is_ok()
                }
            };
            if logs::rotate_if_needed(&path, max_size, max_files, reopen).await {
                tracing::debug!(container = %c.id, "rotated container log");
            }
        }
    }
}
