//! Resource usage of the node, its pods and their containers, sampled every
//! [`SAMPLE_PERIOD`]: CPU (cumulative, and a rate in nano-cores from the last
//! two samples) and memory working set. Containers' figures come from CRI
//! (`ListContainerStats`, what upstream's kubelet uses with containerd), or
//! from their cgroups when CRI has none; the node's from the root cgroup.
//! Served on 10250 as the Summary API (`/stats/summary`) and as Prometheus
//! text (`/metrics/resource`); the API server's `metrics.k8s.io` reads the
//! summary. The document's types are in `crate::api::values::summary`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::cgroup::{self, Mounts, Usage};
use super::container::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
use super::cri::{Cri, api};
use crate::api::values::summary::{
    ClaimReference, ContainerStats, CpuStats, FsStats, InterfaceStats, MemoryStats, NetworkStats,
    NodeStats, PodReference, PodStats, SAMPLE_PERIOD, Summary, VolumeStats,
};
use crate::telemetry::{Descriptor, StabilityLevel, register_in};

/// `/proc/<pid>/net/dev`: every interface but loopback.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            (name != "lo" && n.len() >= 12).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// One reading of something's usage.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: DateTime<Utc>,
    usage: Usage,
}

/// A running container's reading and whose it is.
#[derive(Debug, Clone, PartialEq)]
struct ContainerSample {
    pod: PodReference,
    name: String,
    started: DateTime<Utc>,
    reading: Reading,
    /// The writable layer's bytes and inodes, as CRI reports them.
    rootfs: Option<(u64, Option<u64>)>,
}

/// Everything read in one sampling round.
#[derive(Debug, Clone, Default, PartialEq)]
struct Round {
    node: Option<Reading>,
    /// Container id → sample.
    containers: HashMap<String, ContainerSample>,
    /// Pod uid → sandbox creation.
    pod_started: HashMap<String, DateTime<Utc>>,
    /// Pod uid → its network namespace's interfaces, when read.
    pod_network: HashMap<String, (DateTime<Utc>, Vec<InterfaceStats>)>,
    /// Pod uid → its claims' volumes' figures.
    pod_volumes: HashMap<String, Vec<VolumeStats>>,
}

/// The last two rounds.
#[derive(Debug, Default)]
struct Samples {
    previous: Option<Round>,
    latest: Option<Round>,
}

/// Samples usage and renders it; shared by the sampling task and the
/// 10250 handlers.
pub struct Collector {
    cri: Cri,
    containerd: tonic::transport::Channel,
    node_name: String,
    mounts: Mounts,
    boot: Option<DateTime<Utc>>,
    memory_capacity: Option<u64>,
    claim_volumes: super::volumes::ClaimVolumes,
    // A std mutex: nothing awaits while it is held, and it is held only to
    // swap a round in or clone the two out.
    samples: Mutex<Samples>,
}

impl Collector {
    /// A collector for this node (nothing sampled yet).
    pub fn new(
        cri: Cri,
        containerd: tonic::transport::Channel,
        node_name: String,
        claim_volumes: super::volumes::ClaimVolumes,
    ) -> Arc<Self> {
        let proc_stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Arc::new(Collector {
            cri,
            containerd,
            node_name,
            mounts: Mounts::discover(),
            boot: cgroup::boot_time(&proc_stat).and_then(|s| DateTime::from_timestamp(s, 0)),
            memory_capacity: cgroup::parse_meminfo(&meminfo).get("MemTotal").copied(),
            claim_volumes,
            samples: Mutex::new(Samples::default()),
        })
    }

    /// Samples every [`SAMPLE_PERIOD`], keeping the last two rounds.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let round = self.sample().await;
            let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            samples.previous = samples.latest.replace(round);
        }
    }

    /// The Summary API document from the last two rounds.
    pub fn summary(&self) -> Summary {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summary = summarize(
            samples.previous.as_ref(),
            samples.latest.as_ref(),
            self.memory_capacity,
        );
        summary.node.node_name = self.node_name.clone();
        summary.node.start_time = self.boot;
        summary
    }

    /// One round: the node, then every running container.
    async fn sample(&self) -> Round {
        let node = Some(Reading {
            at: Utc::now(),
            usage: self.mounts.node_usage(),
        });
        let mut round = Round {
            node,
            pod_volumes: self
                .claim_volumes
                .all()
                .into_iter()
                .map(|(pod, volumes)| (pod.uid, volumes.iter().filter_map(volume_stats).collect()))
                .collect(),
            ..Default::default()
        };
        let mut runtime = self.cri.runtime.clone();
        let running = api::ContainerFilter {
            state: Some(api::ContainerStateValue {
                state: api::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        let containers = match runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(running),
            })
            .await
        {
            Ok(list) => list.into_inner().containers,
            Err(e) => {
                tracing::debug!(err = %e.message(), "listing containers for stats");
                return round;
            }
        };
        let mut stats: HashMap<String, api::ContainerStats> = match runtime
            .list_container_stats(api::ListContainerStatsRequest::default())
            .await
        {
            Ok(list) => list
                .into_inner()
                .stats
                .into_iter()
                .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                .collect(),
            Err(e) => {
                tracing::debug!(err = %e.message(), "CRI container stats; reading cgroups");
                HashMap::new()
            }
        };
        if let Ok(list) = runtime
            .list_pod_sandbox(api::ListPodSandboxRequest::default())
            .await
        {
            for sandbox in list.into_inner().items {
                if let Some(uid) = sandbox.labels.get(POD_UID) {
                    let created = from_nanos(sandbox.created_at);
                    let entry = round.pod_started.entry(uid.clone()).or_insert(created);
                    *entry = (*entry).max(created);
                    if sandbox.state == api::PodSandboxState::SandboxReady as i32
                        && let Some(pid) = self.task_pid(&sandbox.id).await
                        && let Ok(text) =
                            tokio::fs::read_to_string(format!("/proc/{pid}/net/dev")).await
                    {
                        round
                            .pod_network
                            .insert(uid.clone(), (Utc::now(), parse_net_dev(&text)));
                    }
                }
            }
        }
        for container in containers {
            let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
            let pod = PodReference {
                name: label(POD_NAME),
                namespace: label(POD_NAMESPACE),
                uid: label(POD_UID),
            };
            if pod.name.is_empty() {
                continue;
            }
            let cri_stats = stats.remove(&container.id);
            let rootfs = cri_stats
                .as_ref()
                .and_then(|s| s.writable_layer.as_ref())
                .and_then(|l| {
                    let used = l.used_bytes.as_ref()?.value;
                    Some((used, l.inodes_used.as_ref().map(|i| i.value)))
                });
            let mut reading = cri_stats.map(from_cri).unwrap_or(Reading {
                at: Utc::now(),
                usage: Usage::default(),
            });
            if (reading.usage.cpu_ns.is_none() || reading.usage.memory.is_none())
                && let Some(usage) = self.cgroup_usage(&container.id).await
            {
                reading.usage.cpu_ns = reading.usage.cpu_ns.or(usage.cpu_ns);
                reading.usage.memory = reading.usage.memory.or(usage.memory);
            }
            round.containers.insert(
                container.id.clone(),
                ContainerSample {
                    pod,
                    name: label(CONTAINER_NAME),
                    started: from_nanos(container.created_at),
                    reading,
                    rootfs,
                },
            );
        }
        round
    }

    /// A container's usage from its cgroups, through its init process.
    async fn cgroup_usage(&self, id: &str) -> Option<Usage> {
        let pid = self.task_pid(id).await?;
        self.mounts.process_usage(pid)
    }

    /// The pid of a container's (or sandbox's) init process, from containerd.
    async fn task_pid(&self, id: &str) -> Option<u32> {
        let mut tasks = containerd_client::services::v1::tasks_client::TasksClient::new(
            self.containerd.clone(),
        );
        Some(
            tasks
                .get(super::containerd::namespaced(
                    containerd_client::services::v1::GetRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                    },
                ))
                .await
                .ok()?
                .into_inner()
                .process?
                .pid,
        )
    }

    /// `/metrics/resource`: upstream's resource metrics in Prometheus text.
    pub fn resource_metrics(&self) -> String {
        resource_metrics(&self.summary())
    }

    /// `/metrics/cadvisor`, from the latest readings.
    pub fn cadvisor_metrics(&self) -> String {
        cadvisor_metrics(&self.summary())
    }

    /// The claims' volume series of the kubelet's `/metrics`.
    pub fn volume_metrics(&self) -> String {
        volume_metrics(&self.summary())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    namespace: String,
    persistentvolumeclaim: String,
}

/// `kubelet_volume_stats_*`: one series per claim (several pods mounting
/// one claim count once), upstream's names and help.
fn volume_metrics(summary: &Summary) -> String {
    type Read = fn(&VolumeStats) -> u64;
    let families: [(&str, &str, Read); 6] = [
        (
            "kubelet_volume_stats_capacity_bytes",
            "Capacity in bytes of the volume",
            |v| v.capacity_bytes,
        ),
        (
            "kubelet_volume_stats_available_bytes",
            "Number of available bytes in the volume",
            |v| v.available_bytes,
        ),
        (
            "kubelet_volume_stats_used_bytes",
            "Number of used bytes in the volume",
            |v| v.used_bytes,
        ),
        (
            "kubelet_volume_stats_inodes",
            "Maximum number of inodes in the volume",
            |v| v.inodes,
        ),
        (
            "kubelet_volume_stats_inodes_free",
            "Number of free inodes in the volume",
            |v| v.inodes_free,
        ),
        (
            "kubelet_volume_stats_inodes_used",
            "Number of used inodes in the volume",
            |v| v.inodes_used,
        ),
    ];
    let volumes: BTreeMap<(String, String), &VolumeStats> = summary
        .pods
        .iter()
        .flat_map(|p| p.volume.iter().flatten())
        .filter_map(|v| {
            let claim = v.pvc_ref.as_ref()?;
            Some(((claim.namespace.clone(), claim.name.clone()), v))
        })
        .collect();
    if volumes.is_empty() {
        return String::new();
    }
    let mut registry = prometheus_client::registry::Registry::default();
    for (name, help, read) in families {
        let family = Family::<ClaimLabels, prometheus_client::metrics::gauge::Gauge>::default();
        for ((namespace, claim), volume) in &volumes {
            family
                .get_or_create(&ClaimLabels {
                    namespace: namespace.clone(),
                    persistentvolumeclaim: claim.clone(),
                })
                .set(read(volume) as i64);
        }
        register_in(&mut registry, &Descriptor::new(name, help), family);
    }
    crate::telemetry::prometheus_text(&registry)
}

fn from_nanos(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

/// A reading from CRI's container stats (its own timestamps when given).
fn from_cri(stats: api::ContainerStats) -> Reading {
    let cpu = stats.cpu.unwrap_or_default();
    let memory = stats.memory;
    let at = if cpu.timestamp > 0 {
        from_nanos(cpu.timestamp)
    } else {
        Utc::now()
    };
    let value = |v: &Option<api::UInt64Value>| v.as_ref().map(|v| v.value);
    Reading {
        at,
        usage: Usage {
            cpu_ns: value(&cpu.usage_core_nano_seconds),
            memory: memory.and_then(|m| {
                let working_set = value(&m.working_set_bytes)?;
                Some(cgroup::Memory {
                    usage: value(&m.usage_bytes).unwrap_or(working_set),
                    working_set,
                    rss: value(&m.rss_bytes).unwrap_or(0),
                })
            }),
        },
    }
}

/// The average rate between two readings, in nano-cores.
fn rate(previous: Option<&Reading>, latest: &Reading) -> Option<u64> {
    let previous = previous?;
    let (before, after) = (previous.usage.cpu_ns?, latest.usage.cpu_ns?);
    let elapsed = (latest.at - previous.at).num_nanoseconds()?;
    if elapsed <= 0 || after < before {
        return None;
    }
    Some(((after - before) as u128 * 1_000_000_000 / elapsed as u128) as u64)
}

fn cpu_stats(previous: Option<&Reading>, latest: &Reading) -> Option<CpuStats> {
    latest.usage.cpu_ns.map(|total| CpuStats {
        time: latest.at,
        usage_nano_cores: rate(previous, latest),
        usage_core_nano_seconds: Some(total),
    })
}

fn memory_stats(latest: &Reading, capacity: Option<u64>) -> Option<MemoryStats> {
    latest.usage.memory.map(|m| MemoryStats {
        time: latest.at,
        available_bytes: capacity.map(|c| c.saturating_sub(m.working_set)),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: Some(m.rss),
    })
}

/// The Summary from the last two rounds: rates where both rounds read the
/// same thing; pods sum their containers (a pod's rate only when every
/// container has one).
/// A claim volume's figures: statfs of its directory (the whole file
/// system's, as upstream's local volumes report).
fn volume_stats(volume: &super::volumes::ClaimVolume) -> Option<VolumeStats> {
    let fs = nix::sys::statvfs::statvfs(&volume.path).ok()?;
    let block = fs.fragment_size() as u64;
    let (blocks, free, available) = (
        fs.blocks() as u64,
        fs.blocks_free() as u64,
        fs.blocks_available() as u64,
    );
    let (inodes, inodes_free) = (fs.files() as u64, fs.files_free() as u64);
    Some(VolumeStats {
        time: Utc::now(),
        available_bytes: available * block,
        capacity_bytes: blocks * block,
        used_bytes: blocks.saturating_sub(free) * block,
        inodes_free,
        inodes,
        inodes_used: inodes.saturating_sub(inodes_free),
        name: volume.name.clone(),
        pvc_ref: Some(ClaimReference {
            namespace: volume.claim.0.clone(),
            name: volume.claim.1.clone(),
        }),
    })
}

fn summarize(
    previous: Option<&Round>,
    latest: Option<&Round>,
    memory_capacity: Option<u64>,
) -> Summary {
    let Some(latest) = latest else {
        return Summary::default();
    };
    let node_previous = previous.and_then(|p| p.node.as_ref());
    let node = NodeStats {
        cpu: latest
            .node
            .as_ref()
            .and_then(|n| cpu_stats(node_previous, n)),
        memory: latest
            .node
            .as_ref()
            .and_then(|n| memory_stats(n, memory_capacity)),
        ..Default::default()
    };
    let mut pods: BTreeMap<PodReference, Vec<ContainerStats>> = BTreeMap::new();
    for (id, sample) in &latest.containers {
        let before = previous
            .and_then(|p| p.containers.get(id))
            .map(|s| &s.reading);
        pods.entry(sample.pod.clone())
            .or_default()
            .push(ContainerStats {
                name: sample.name.clone(),
                start_time: Some(sample.started),
                cpu: cpu_stats(before, &sample.reading),
                memory: memory_stats(&sample.reading, None),
                rootfs: sample.rootfs.map(|(used, inodes)| FsStats {
                    time: sample.reading.at,
                    used_bytes: Some(used),
                    inodes_used: inodes,
                }),
            });
    }
    let pods = pods
        .into_iter()
        .map(|(pod_ref, mut containers)| {
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            PodStats {
                start_time: latest.pod_started.get(&pod_ref.uid).copied(),
                cpu: sum_cpu(&containers),
                memory: sum_memory(&containers),
                network: latest
                    .pod_network
                    .get(&pod_ref.uid)
                    .map(|(time, interfaces)| NetworkStats {
                        time: *time,
                        default: interfaces
                            .iter()
                            .find(|i| i.name == "eth0")
                            .cloned()
                            .unwrap_or_default(),
                        interfaces: interfaces.clone(),
                    }),
                volume: latest
                    .pod_volumes
                    .get(&pod_ref.uid)
                    .filter(|v| !v.is_empty())
                    .cloned(),
                pod_ref,
                containers,
            }
        })
        .collect();
    Summary { node, pods }
}

fn sum_cpu(containers: &[ContainerStats]) -> Option<CpuStats> {
    let all: Vec<&CpuStats> = containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    if all.len() != containers.len() || all.is_empty() {
        return None;
    }
    Some(CpuStats {
        time: all.iter().map(|c| c.time).max()?,
        usage_nano_cores: all.iter().map(|c| c.usage_nano_cores).sum(),
        usage_core_nano_seconds: all.iter().map(|c| c.usage_core_nano_seconds).sum(),
    })
}

fn sum_memory(containers: &[ContainerStats]) -> Option<MemoryStats> {
    let all: Vec<&MemoryStats> = containers
        .iter()
        .filter_map(|c| c.memory.as_ref())
        .collect();
    if all.len() != containers.len() || all.is_empty() {
        return None;
    }
    Some(MemoryStats {
        time: all.iter().map(|m| m.time).max()?,
        available_bytes: None,
        usage_bytes: all.iter().map(|m| m.usage_bytes).sum(),
        working_set_bytes: all.iter().map(|m| m.working_set_bytes).sum(),
        rss_bytes: all.iter().map(|m| m.rss_bytes).sum(),
    })
}

/// Labels of the container series, in the order upstream prints them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
    namespace: String,
    pod: String,
}

/// Labels of the pod series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Upstream kubelet's `/metrics/resource` series from a summary (without
/// sample timestamps, which prometheus-client does not write).
/// Labels of `kubelet_node_name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// Labels of `kubelet_running_containers`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerStateLabels {
    container_state: String,
}

/// The kubelet's `/metrics` (upstream's names and stability): the node's
/// name, pods with a running sandbox, containers by state.
pub fn kubelet_metrics(
    node: &str,
    running_pods: i64,
    containers: &std::collections::BTreeMap<&str, i64>,
) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    let name = Family::<NodeLabels, prometheus_client::metrics::gauge::Gauge>::default();
    name.get_or_create(&NodeLabels {
        node: node.to_string(),
    })
    .set(1);
    register_in(
        &mut registry,
        &Descriptor::new(
            "kubelet_node_name",
            "The node's name. The count is always 1",
        ),
        name,
    );
    let pods = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    pods.set(running_pods);
    register_in(
        &mut registry,
        &Descriptor::new(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
        ),
        pods,
    );
    let running =
        Family::<ContainerStateLabels, prometheus_client::metrics::gauge::Gauge>::default();
    for (state, count) in containers {
        running
            .get_or_create(&ContainerStateLabels {
                container_state: (*state).to_string(),
            })
            .set(*count);
    }
    register_in(
        &mut registry,
        &Descriptor::new(
            "kubelet_running_containers",
            "Number of containers currently running",
        ),
        running,
    );
    crate::telemetry::prometheus_text(&registry)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    container: String,
    interface: String,
    namespace: String,
    pod: String,
}

/// cAdvisor's per-pod network series (`container_network_*_total`, from
/// the pod's network namespace, labelled `container=""` as cAdvisor labels
/// the pod's cgroup) and the containers' writable layers
/// (`container_fs_usage_bytes`, as CRI reports them).
fn network_series(summary: &Summary, registry: &mut prometheus_client::registry::Registry) {
    type Read = fn(&InterfaceStats) -> u64;
    let families: [(&str, &str, Read); 8] = [
        (
            "container_network_receive_bytes",
            "Cumulative count of bytes received",
            |i| i.rx_bytes,
        ),
        (
            "container_network_receive_packets",
            "Cumulative count of packets received",
            |i| i.rx_packets,
        ),
        (
            "container_network_receive_errors",
            "Cumulative count of errors encountered while receiving",
            |i| i.rx_errors,
        ),
        (
            "container_network_receive_packets_dropped",
            "Cumulative count of packets dropped while receiving",
            |i| i.rx_dropped,
        ),
        (
            "container_network_transmit_bytes",
            "Cumulative count of bytes transmitted",
            |i| i.tx_bytes,
        ),
        (
            "container_network_transmit_packets",
            "Cumulative count of packets transmitted",
            |i| i.tx_packets,
        ),
        (
            "container_network_transmit_errors",
            "Cumulative count of errors encountered while transmitting",
            |i| i.tx_errors,
        ),
        (
            "container_network_transmit_packets_dropped",
            "Cumulative count of packets dropped while transmitting",
            |i| i.tx_dropped,
        ),
    ];
    for (name, help, value) in families {
        let family =
            Family::<InterfaceLabels, prometheus_client::metrics::counter::Counter>::default();
        for pod in &summary.pods {
            for interface in pod.network.iter().flat_map(|n| &n.interfaces) {
                family
                    .get_or_create(&InterfaceLabels {
                        container: String::new(),
                        interface: interface.name.clone(),
                        namespace: pod.pod_ref.namespace.clone(),
                        pod: pod.pod_ref.name.clone(),
                    })
                    .inc_by(value(interface));
            }
        }
        registry.register(name, help, family);
    }
    let fs = Family::<ContainerLabels, Gauge>::default();
    for pod in &summary.pods {
        for c in &pod.containers {
            if let Some(used) = c.rootfs.as_ref().and_then(|r| r.used_bytes) {
                fs.get_or_create(&ContainerLabels {
                    container: c.name.clone(),
                    namespace: pod.pod_ref.namespace.clone(),
                    pod: pod.pod_ref.name.clone(),
                })
                .set(used as i64);
            }
        }
    }
    registry.register(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem",
        fs,
    );
}

/// cAdvisor's container series as the kubelet's `/metrics/cadvisor`
/// serves them (`container_cpu_usage_seconds_total`,
/// `container_memory_{working_set,usage}_bytes`, `container_memory_rss`,
/// `container_start_time_seconds`), labelled by container, namespace and
/// pod (cAdvisor's `id`, `image` and `name` labels are not given).
fn cadvisor_metrics(summary: &Summary) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    network_series(summary, &mut registry);
    let cpu = Family::<ContainerLabels, FloatCounter>::default();
    let working_set = Family::<ContainerLabels, FloatGauge>::default();
    let usage = Family::<ContainerLabels, FloatGauge>::default();
    let rss = Family::<ContainerLabels, FloatGauge>::default();
    let start = Family::<ContainerLabels, FloatGauge>::default();
    for pod in &summary.pods {
        for c in &pod.containers {
            let labels = ContainerLabels {
                container: c.name.clone(),
                namespace: pod.pod_ref.namespace.clone(),
                pod: pod.pod_ref.name.clone(),
            };
            if let Some(ns) = c.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
                cpu.get_or_create(&labels).inc_by(ns as f64 / 1e9);
            }
            if let Some(m) = &c.memory {
                let set = |family: &Family<ContainerLabels, FloatGauge>, v: Option<u64>| {
                    if let Some(v) = v {
                        family.get_or_create(&labels).set(v as f64);
                    }
                };
                set(&working_set, m.working_set_bytes);
                set(&usage, m.usage_bytes);
                set(&rss, m.rss_bytes);
            }
            if let Some(t) = c.start_time {
                start
                    .get_or_create(&labels)
                    .set(t.timestamp_micros() as f64 / 1e6);
            }
        }
    }
    registry.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed in seconds",
        cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "Current working set in bytes",
        working_set,
    );
    registry.register(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        usage,
    );
    registry.register("container_memory_rss", "Size of RSS in bytes", rss);
    registry.register(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        start,
    );
    crate::telemetry::prometheus_text(&registry)
}

fn resource_metrics(summary: &Summary) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    let seconds = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e9);
    let bytes = |m: &Option<MemoryStats>| {
        m.as_ref()
            .and_then(|m| m.working_set_bytes)
            .map(|b| b as f64)
    };
    let container_cpu = Family::<ContainerLabels, FloatCounter>::default();
    let container_memory = Family::<ContainerLabels, FloatGauge>::default();
    let container_start = Family::<ContainerLabels, FloatGauge>::default();
    let pod_cpu = Family::<PodLabels, FloatCounter>::default();
    let pod_memory = Family::<PodLabels, FloatGauge>::default();
    for pod in &summary.pods {
        let labels = PodLabels {
            namespace: pod.pod_ref.namespace.clone(),
            pod: pod.pod_ref.name.clone(),
        };
        if let Some(v) = seconds(pod.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds)) {
            pod_cpu.get_or_create(&labels).inc_by(v);
        }
        if let Some(v) = bytes(&pod.memory) {
            pod_memory.get_or_create(&labels).set(v);
        }
        for c in &pod.containers {
            let labels = ContainerLabels {
                container: c.name.clone(),
                namespace: labels.namespace.clone(),
                pod: labels.pod.clone(),
            };
            if let Some(v) = seconds(c.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds)) {
                container_cpu.get_or_create(&labels).inc_by(v);
            }
            if let Some(v) = bytes(&c.memory) {
                container_memory.get_or_create(&labels).set(v);
            }
            if let Some(t) = c.start_time {
                container_start
                    .get_or_create(&labels)
                    .set(t.timestamp_micros() as f64 / 1e6);
            }
        }
    }
    // prometheus-client appends `_total` to counters.
    register_in(
        &mut registry,
        &Descriptor::new(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed by the container in core-seconds",
        )
        .stability(StabilityLevel::Stable),
        container_cpu,
    );
    register_in(
        &mut registry,
        &Descriptor::new(
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
        )
        .stability(StabilityLevel::Stable),
        container_memory,
    );
    register_in(
        &mut registry,
        &Descriptor::new(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
        )
        .stability(StabilityLevel::Stable),
        container_start,
    );
    let node_cpu = FloatCounter::default();
    if let Some(v) = seconds(
        summary
            .node
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds),
    ) {
        node_cpu.inc_by(v);
        register_in(
            &mut registry,
            &Descriptor::new(
                "node_cpu_usage_seconds",
                "Cumulative cpu time consumed by the node in core-seconds",
            )
            .stability(StabilityLevel::Stable),
            node_cpu,
        );
    }
    if let Some(v) = bytes(&summary.node.memory) {
        let gauge = FloatGauge::default();
        gauge.set(v);
        register_in(
            &mut registry,
            &Descriptor::new(
                "node_memory_working_set_bytes",
                "Current working set of the node in bytes",
            )
            .stability(StabilityLevel::Stable),
            gauge,
        );
    }
    register_in(
        &mut registry,
        &Descriptor::new(
            "pod_cpu_usage_seconds",
            "Cumulative cpu time consumed by the pod in core-seconds",
        )
        .stability(StabilityLevel::Stable),
        pod_cpu,
    );
    register_in(
        &mut registry,
        &Descriptor::new(
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
        )
        .stability(StabilityLevel::Stable),
        pod_memory,
    );
    let scrape_error = Gauge::<i64>::default();
    scrape_error.set(i64::from(summary.node.cpu.is_none()));
    register_in(
        &mut registry,
        &Descriptor::new(
            "resource_scrape_error",
            "1 if there was an error while getting container metrics, 0 otherwise",
        )
        .stability(StabilityLevel::Stable),
        scrape_error,
    );
    crate::telemetry::prometheus_text(&registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    fn reading(secs: i64, cpu_ns: u64, working_set: u64) -> Reading {
        Reading {
            at: at(secs),
            usage: Usage {
                cpu_ns: Some(cpu_ns),
                memory: Some(cgroup::Memory {
                    usage: working_set + 100,
                    working_set,
                    rss: working_set / 2,
                }),
            },
        }
    }

    fn round(secs: i64, node_cpu: u64, containers: &[(&str, &str, &str, u64, u64)]) -> Round {
        Round {
            node: Some(reading(secs, node_cpu, 1 << 30)),
            containers: containers
                .iter()
                .map(|(id, pod, name, cpu, mem)| {
                    (
                        id.to_string(),
                        ContainerSample {
                            pod: PodReference {
                                name: pod.to_string(),
                                namespace: "default".into(),
                                uid: format!("uid-{pod}"),
                            },
                            name: name.to_string(),
                            started: at(-100),
                            reading: reading(secs, *cpu, *mem),
                            rootfs: Some((4096 * *mem, Some(3))),
                        },
                    )
                })
                .collect(),
            pod_started: HashMap::from([("uid-web".to_string(), at(-120))]),
            pod_network: HashMap::from([(
                "uid-web".to_string(),
                (
                    at(secs),
                    parse_net_dev(&format!(
                        "Inter-|   Receive\n face |bytes\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n  eth0: {} 10 1 2 0 0 0 0 {} 20 3 4 0 0 0 0\n",
                        1000 + secs,
                        2000 + secs
                    )),
                ),
            )]),
            pod_volumes: HashMap::from([(
                "uid-web".to_string(),
                vec![VolumeStats {
                    time: at(secs),
                    capacity_bytes: 1000,
                    available_bytes: 600,
                    used_bytes: 400,
                    name: "data".into(),
                    pvc_ref: Some(ClaimReference {
                        name: "data-web-0".into(),
                        namespace: "default".into(),
                    }),
                    ..Default::default()
                }],
            )]),
        }
    }

    #[test]
    fn claim_volumes_are_in_the_summary_and_the_metrics() {
        let summary = summarize(
            None,
            Some(&round(10, 0, &[("c1", "web", "web", 1, 1)])),
            None,
        );
        let volume = &summary.pods[0].volume.as_ref().expect("volumes")[0];
        assert_eq!(volume.pvc_ref.as_ref().expect("claim").name, "data-web-0");
        let json = serde_json::to_value(&summary.pods[0]).expect("json");
        assert_eq!(json["volume"][0]["pvcRef"]["namespace"], "default");
        assert_eq!(json["volume"][0]["capacityBytes"], 1000);
        let text = volume_metrics(&summary);
        assert!(
            text.contains(
                "kubelet_volume_stats_used_bytes{namespace=\"default\",persistentvolumeclaim=\"data-web-0\"} 400"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP kubelet_volume_stats_capacity_bytes [ALPHA] Capacity in bytes of the volume"
            ),
            "{text}"
        );
    }

    #[test]
    fn rates_come_from_the_last_two_rounds() {
        let first = round(
            0,
            1_000_000_000,
            &[("a", "web", "app", 0, 10), ("b", "web", "side", 0, 5)],
        );
        // 10 s later: node used 5 s of CPU (half a core... times one), app 2.5 s, side 0.5 s.
        let second = round(
            10,
            6_000_000_000,
            &[
                ("a", "web", "app", 2_500_000_000, 20),
                ("b", "web", "side", 500_000_000, 6),
                ("c", "db", "db", 1_000, 7),
            ],
        );
        let summary = summarize(Some(&first), Some(&second), Some(1 << 31));
        let node_cpu = summary.node.cpu.as_ref().expect("node cpu");
        assert_eq!(node_cpu.usage_nano_cores, Some(500_000_000));
        assert_eq!(node_cpu.usage_core_nano_seconds, Some(6_000_000_000));
        let node_memory = summary.node.memory.as_ref().expect("node memory");
        assert_eq!(node_memory.working_set_bytes, Some(1 << 30));
        assert_eq!(node_memory.available_bytes, Some(1 << 30));

        let names: Vec<&str> = summary
            .pods
            .iter()
            .map(|p| p.pod_ref.name.as_str())
            .collect();
        assert_eq!(names, ["db", "web"]);
        let web = &summary.pods[1];
        assert_eq!(web.start_time, Some(at(-120)));
        assert_eq!(web.containers[0].name, "app");
        assert_eq!(
            web.containers[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_nano_cores),
            Some(250_000_000)
        );
        let cpu = web.cpu.as_ref().expect("pod cpu");
        assert_eq!(cpu.usage_nano_cores, Some(300_000_000));
        assert_eq!(cpu.usage_core_nano_seconds, Some(3_000_000_000));
        assert_eq!(
            web.memory.as_ref().and_then(|m| m.working_set_bytes),
            Some(26)
        );
        // A container seen once has a total but no rate yet; nor has its pod.
        let db = &summary.pods[0];
        let db_cpu = db.containers[0].cpu.as_ref().expect("db cpu");
        assert_eq!(
            (db_cpu.usage_nano_cores, db_cpu.usage_core_nano_seconds),
            (None, Some(1_000))
        );
        assert_eq!(db.cpu.as_ref().and_then(|c| c.usage_nano_cores), None);
    }

    #[test]
    fn a_restarted_counter_gives_no_rate() {
        let before = reading(0, 5_000, 1);
        let after = reading(10, 1_000, 1);
        assert_eq!(rate(Some(&before), &after), None);
        assert_eq!(rate(Some(&after), &after), None);
        assert_eq!(rate(None, &after), None);
    }

    #[test]
    fn summary_json_has_upstreams_field_names() {
        let summary = summarize(
            Some(&round(0, 0, &[("a", "web", "app", 0, 10)])),
            Some(&round(10, 10, &[("a", "web", "app", 10, 10)])),
            None,
        );
        let json = serde_json::to_value(&summary).expect("json");
        let pod = &json["pods"][0];
        assert_eq!(pod["podRef"]["name"], "web");
        assert_eq!(pod["containers"][0]["cpu"]["usageNanoCores"], 1);
        assert_eq!(pod["containers"][0]["memory"]["workingSetBytes"], 10);
        assert!(pod["startTime"].is_string());
        assert!(json["node"]["cpu"]["usageCoreNanoSeconds"].is_u64());
        let back: Summary = serde_json::from_value(json.clone()).expect("round trip");
        assert_eq!(serde_json::to_value(&back).expect("json"), json);
    }

    #[test]
    fn resource_metrics_use_upstreams_names_and_labels() {
        let mut summary = summarize(
            Some(&round(0, 0, &[("a", "web", "app", 0, 10)])),
            Some(&round(
                10,
                2_000_000_000,
                &[("a", "web", "app", 1_500_000_000, 4096)],
            )),
            None,
        );
        summary.node.node_name = "n".into();
        let text = resource_metrics(&summary);
        for line in [
            "# TYPE container_cpu_usage_seconds_total counter",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 1.5",
            "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 4096",
            "node_cpu_usage_seconds_total 2",
            "# TYPE node_memory_working_set_bytes gauge",
            "node_memory_working_set_bytes 1073741824",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 1.5",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 4096",
            "resource_scrape_error 0",
        ] {
            assert!(
                text.lines()
                    .any(|l| l == line || l.starts_with(&format!("{line}.0"))),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn kubelet_metrics_name_the_node_and_count_what_runs() {
        let states = std::collections::BTreeMap::from([("running", 3), ("exited", 1)]);
        let text = kubelet_metrics("edge-1", 2, &states);
        for line in [
            "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox.",
            "# TYPE kubelet_running_pods gauge",
            "kubelet_running_pods 2",
            "kubelet_node_name{node=\"edge-1\"} 1",
            "kubelet_running_containers{container_state=\"running\"} 3",
            "kubelet_running_containers{container_state=\"exited\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn pods_carry_their_traffic_and_containers_their_layers() {
        let first = round(0, 1_000, &[("a", "web", "app", 0, 10)]);
        let second = round(10, 2_000, &[("a", "web", "app", 5, 20)]);
        let summary = summarize(Some(&first), Some(&second), None);
        let network = summary.pods[0].network.as_ref().expect("network");
        assert_eq!(network.default.name, "eth0");
        assert_eq!(network.default.rx_bytes, 1010);
        assert_eq!(network.interfaces.len(), 1, "loopback is left out");
        let json = serde_json::to_value(&summary.pods[0]).unwrap();
        assert_eq!(json["network"]["rxBytes"], 1010);
        assert_eq!(json["network"]["interfaces"][0]["txErrors"], 3);
        assert_eq!(json["containers"][0]["rootfs"]["usedBytes"], 4096 * 20);
        let text = cadvisor_metrics(&summary);
        for line in [
            "container_network_receive_bytes_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"web\"} 1010",
            "container_network_transmit_packets_dropped_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"web\"} 4",
            "container_fs_usage_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 81920",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
