//! The kubelet's Summary API document (upstream's `stats/v1alpha1`
//! Summary): what `/stats/summary` serves and what the API server's
//! `metrics.k8s.io` and `kubectl top` read. Types only: the kubelet fills
//! them (`kubelet::stats`), the API server reads them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often usage is sampled (cAdvisor's housekeeping interval); CPU rates
/// are averages over this window.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);

/// The Summary API's document (upstream's `stats/v1alpha1` Summary, the
/// parts kelp fills: CPU and memory of node, pods and containers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node's figures.
    pub node: NodeStats,
    /// One entry per pod with running containers.
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// Node-level figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The Node's name.
    pub node_name: String,
    /// Boot time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// CPU usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// Pod-level figures: the sums of its containers'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When its sandbox was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Its running containers.
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    /// CPU usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Traffic of the pod's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The pod's volumes that report figures (claims' volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Vec<VolumeStats>>,
}

/// A volume's file system figures (statfs of its directory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Bytes free to unprivileged users.
    pub available_bytes: u64,
    /// The file system's size.
    pub capacity_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Free inodes.
    pub inodes_free: u64,
    /// All inodes.
    pub inodes: u64,
    /// Inodes in use.
    pub inodes_used: u64,
    /// The pod's name for the volume.
    pub name: String,
    /// The claim, for a claim's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<ClaimReference>,
}

/// Namespace and name of a PersistentVolumeClaim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// A pod's network figures (the Summary API's: the default interface's
/// totals and every interface).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    /// When they were read.
    pub time: DateTime<Utc>,
    /// The default interface (`eth0`) and its counters.
    #[serde(flatten)]
    pub default: InterfaceStats,
    /// Every interface but loopback.
    #[serde(default)]
    pub interfaces: Vec<InterfaceStats>,
}

/// One interface's counters since it appeared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// The interface.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets received (cAdvisor's series; not in the Summary API).
    #[serde(skip)]
    pub rx_packets: u64,
    /// Received packets dropped.
    #[serde(skip)]
    pub rx_dropped: u64,
    /// Packets sent.
    #[serde(skip)]
    pub tx_packets: u64,
    /// Sent packets dropped.
    #[serde(skip)]
    pub tx_dropped: u64,
}

/// A container's writable layer (the Summary API's `rootfs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Bytes the layer uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Inodes the layer uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// Namespace, name and uid of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// One container's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name in the pod spec.
    pub name: String,
    /// When the container was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// CPU usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Its writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
}

/// CPU usage at a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Average rate over the last sample period, in billionths of a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage at a time, bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When it was read.
    pub time: DateTime<Utc>,
    /// What is left before the limit (the node's: its capacity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory charged, page cache included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Usage less inactive file pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}
