//! The Node object: registration (labels, taints), status with real readings
//! (capacity, conditions, addresses, nodeInfo) and the heartbeat Lease.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::api::values::conditions;

/// The kubelet version Nodes report (the API version kelp serves).
pub const KUBELET_VERSION: &str = concat!("v1.33.0+kelp-", env!("CARGO_PKG_VERSION"));
/// How long a Lease stays valid without renewal (upstream's default).
const LEASE_SECONDS: i32 = 40;
/// Heartbeat period: Lease renewal and status check (upstream: 10 s).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Status is posted at least this often even when unchanged (upstream's
/// nodeStatusReportFrequency; the Lease is the heartbeat in between).
const STATUS_REPORT: Duration = Duration::from_secs(300);
/// Hard eviction thresholds that allocatable leaves room for (upstream defaults).
const MEMORY_RESERVE: u64 = 100 << 20;
const DISK_RESERVE_PERCENT: u64 = 10;

/// What the node is told at start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name (`--node-name`, default hostname).
    pub name: String,
    /// InternalIP address.
    pub ip: String,
    /// `--node-label key=value`.
    pub labels: Vec<String>,
    /// `--node-taint key=value:Effect`.
    pub taints: Vec<String>,
    /// True on servers: adds the control-plane role label.
    pub control_plane: bool,
    /// The data dir, whose file system is the node's ephemeral storage.
    pub data_dir: std::path::PathBuf,
}

/// Parses `key=value` labels.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
            anyhow::ensure!(!k.is_empty(), "--node-label {item:?}: expected key=value");
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Parses `key=value:Effect` (or `key:Effect`) taints.
pub fn parse_taints(items: &[String]) -> Result<Vec<Value>> {
    items
        .iter()
        .map(|item| {
            let (kv, effect) = item
                .rsplit_once(':')
                .with_context(|| format!("--node-taint {item:?}: expected key=value:Effect"))?;
            anyhow::ensure!(
                matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute"),
                "--node-taint {item:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
            );
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            let mut taint = json!({"key": key, "effect": effect});
            if !value.is_empty() {
                taint["value"] = json!(value);
            }
            Ok(taint)
        })
        .collect()
}

impl NodeConfig {
    fn labels(&self) -> Result<BTreeMap<String, String>> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            (
                "kubernetes.io/os".to_string(),
                crate::platform::OS.to_string(),
            ),
            (
                "kubernetes.io/arch".to_string(),
                crate::platform::arch().to_string(),
            ),
            (
                "beta.kubernetes.io/os".to_string(),
                crate::platform::OS.to_string(),
            ),
            (
                "beta.kubernetes.io/arch".to_string(),
                crate::platform::arch().to_string(),
            ),
        ]);
        if self.control_plane {
            labels.insert(
                "node-role.kubernetes.io/control-plane".into(),
                "true".into(),
            );
        }
        labels.extend(parse_labels(&self.labels)?);
        Ok(labels)
    }
}

/// Creates the Node or refreshes its labels; returns its podCIDR.
///
/// NodeRestriction lets a kubelet set only some labels, and taints only when
/// it creates its Node: role labels, restricted `--node-label`s and later
/// taint changes go through `labeler` (the server's controller identity, as
/// k3s does), or are reported as not applied when there is none.
pub async fn register(
    nodes: &Api<Node>,
    labeler: Option<&Api<Node>>,
    config: &NodeConfig,
) -> Result<Option<String>> {
    let (own, restricted): (BTreeMap<_, _>, BTreeMap<_, _>) = config
        .labels()?
        .into_iter()
        .partition(|(k, _)| crate::api::values::nodes::kubelet_may_set_label(k));
    let taints = parse_taints(&config.taints)?;
    let node = match nodes.get_opt(&config.name).await? {
        None => {
            let mut spec = json!({});
            if !taints.is_empty() {
                spec["taints"] = json!(taints);
            }
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": config.name, "labels": own},
                "spec": spec,
            }))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .context("registering the Node")?
        }
        Some(_) => {
            let patch = json!({"metadata": {"labels": own}});
            nodes
                .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("updating the Node's labels")?
        }
    };
    let current_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| serde_json::to_value(t).unwrap_or_default());
    let taints_differ = !taints.is_empty() && current_taints != Some(json!(taints));
    if restricted.is_empty() && !taints_differ {
        return Ok(node.spec.and_then(|s| s.pod_cidr));
    }
    let Some(labeler) = labeler else {
        tracing::warn!(labels = ?restricted.keys().collect::<Vec<_>>(), "a kubelet may not set these labels or change its taints; not applied");
        return Ok(node.spec.and_then(|s| s.pod_cidr));
    };
    let mut patch = json!({"metadata": {"labels": restricted}});
    if taints_differ {
        patch["spec"] = json!({"taints": taints});
    }
    let node = labeler
        .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("setting the Node's role labels and taints")?;
    Ok(node.spec.and_then(|s| s.pod_cidr))
}

/// Readings the status is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    /// CPUs online.
    pub cpus: usize,
    /// MemTotal and MemAvailable, bytes.
    pub memory_total: u64,
    /// MemAvailable, bytes.
    pub memory_available: u64,
    /// Size and free space of the data dir's file system, bytes.
    pub disk_total: u64,
    /// Free bytes on it.
    pub disk_available: u64,
    /// Processes and the system's maximum.
    pub pids: (u64, u64),
}

impl Readings {
    /// Reads /proc and the data dir's file system.
    pub fn take(data_dir: &Path) -> Readings {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        // The block counts are 32-bit on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let (disk_total, disk_available) = nix::sys::statvfs::statvfs(data_dir)
            .map(|s| {
                let frag = s.fragment_size() as u64;
                (s.blocks() as u64 * frag, s.blocks_available() as u64 * frag)
            })
            .unwrap_or((0, 0));
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        let running = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        Readings {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_total: field("MemTotal:"),
            memory_available: field("MemAvailable:"),
            disk_total,
            disk_available,
            pids: (running, pid_max),
        }
    }
}

/// Static facts about the machine for `status.nodeInfo`.
pub fn node_info(runtime_version: &str) -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "machineID": read("/etc/machine-id"),
        "systemUUID": read("/sys/class/dmi/id/product_uuid"),
        "bootID": read("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": kernel,
        "osImage": os_image,
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": crate::platform::OS,
        "architecture": crate::platform::arch(),
    })
}

/// The node's status from readings; `ready` is the runtime's and network's state.
pub fn status(
    r: &Readings,
    ip: &str,
    hostname: &str,
    info: &Value,
    ready: Result<(), String>,
    previous: Option<&Value>,
    now: &str,
) -> Value {
    let memory_pressure = r.memory_available < MEMORY_RESERVE;
    let disk_pressure =
        r.disk_total > 0 && r.disk_available * 100 < r.disk_total * DISK_RESERVE_PERCENT;
    let pid_pressure = r.pids.0 * 100 > r.pids.1 * 90;
    let condition = |kind: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let mut c = json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now});
        let before = previous.and_then(|p| p["conditions"].as_array());
        conditions::carry_transition(before.map_or(&[][..], Vec::as_slice), &mut c);
        c
    };
    let (ready_status, ready_reason, ready_message) = match &ready {
        Ok(()) => (
            true,
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Err(why) => (false, "KubeletNotReady", why.clone()),
    };
    let conditions = vec![
        condition(
            "MemoryPressure",
            memory_pressure,
            if memory_pressure {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            },
            if memory_pressure {
                "kubelet has insufficient memory available"
            } else {
                "kubelet has sufficient memory available"
            },
        ),
        condition(
            "DiskPressure",
            disk_pressure,
            if disk_pressure {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            },
            if disk_pressure {
                "kubelet has disk pressure"
            } else {
                "kubelet has no disk pressure"
            },
        ),
        condition(
            "PIDPressure",
            pid_pressure,
            if pid_pressure {
                "KubeletHasInsufficientPID"
            } else {
                "KubeletHasSufficientPID"
            },
            if pid_pressure {
                "kubelet has insufficient PID available"
            } else {
                "kubelet has sufficient PID available"
            },
        ),
        condition("Ready", ready_status, ready_reason, &ready_message),
    ];
    let ki = |bytes: u64| format!("{}Ki", bytes / 1024);
    let capacity = json!({
        "cpu": r.cpus.to_string(),
        "memory": ki(r.memory_total),
        "pods": "110",
        "ephemeral-storage": ki(r.disk_total),
    });
    let allocatable = json!({
        "cpu": r.cpus.to_string(),
        "memory": ki(r.memory_total.saturating_sub(MEMORY_RESERVE)),
        "pods": "110",
        "ephemeral-storage": (r.disk_total - r.disk_total * DISK_RESERVE_PERCENT / 100).to_string(),
    });
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": hostname}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": super::server::PORT}},
        "nodeInfo": info,
    })
}

/// Whether `wanted` (a status the kubelet computed) says more than
/// `current` (the status the API holds) in the fields the kubelet sets,
/// heartbeat times aside. Fields others own (none today) do not count.
pub fn changed(current: &Value, wanted: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(cs) = v["conditions"].as_array_mut() {
            for c in cs {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastHeartbeatTime");
                }
            }
        }
        v
    }
    let (current, wanted) = (strip(current), strip(wanted));
    wanted
        .as_object()
        .into_iter()
        .flatten()
        .any(|(key, value)| current.get(key) != Some(value))
}

/// What a heartbeat reads from the node: its runtime's version and health
/// and the machine's figures. A real node reads CRI and /proc ([`Host`]);
/// the hollow nodes of `benches/hollow_nodes.rs` report fixed ones.
pub trait Machine: Send + Sync + 'static {
    /// The runtime's `name://version`, and whether it and the network are ready.
    fn health(&self) -> impl std::future::Future<Output = (String, Result<(), String>)> + Send;
    /// Capacity and what is free.
    fn readings(&self) -> Readings;
}

/// This machine: the CRI runtime's health, /proc and the data dir's file system.
pub struct Host {
    /// The node's runtime.
    pub runtime: super::cri::Cri,
    /// The data dir (its file system is the node's ephemeral storage).
    pub data_dir: std::path::PathBuf,
}

impl Machine for Host {
    async fn health(&self) -> (String, Result<(), String>) {
        self.runtime.health().await
    }

    fn readings(&self) -> Readings {
        Readings::take(&self.data_dir)
    }
}

/// Posts node status when it differs from the API's (as upstream's kubelet,
/// which reads the Node first: a node the lifecycle controller marked
/// Unknown is corrected at once) or every 5 minutes, and renews the Lease,
/// every [`HEARTBEAT`], until cancelled.
pub async fn heartbeat(client: kube::Client, config: NodeConfig, machine: impl Machine) {
    let raw = client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut last_posted: Option<std::time::Instant> = None;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        let tick = ticker.tick().await;
        if let Err(e) = renew_lease(&leases, &nodes, &config.name).await {
            tracing::warn!(err = %format!("{e:#}"), "renewing the node lease");
        }
        let (version, ready) = machine.health().await;
        let info = node_info(&version);
        let readings = machine.readings();
        let now = crate::api::values::meta::now();
        // The API's copy, as JSON (a typed round trip would drop fields):
        // what others (the node lifecycle) changed counts.
        let current = match read_status(&raw, &config.name).await {
            Ok(status) => Some(status),
            Err(e) => {
                tracing::warn!(err = %e, "reading the node status");
                None
            }
        };
        let status = status(
            &readings,
            &config.ip,
            &config.name,
            &info,
            ready,
            current.as_ref(),
            &now,
        );
        let due = match (&last_posted, &current) {
            (Some(at), Some(current)) => changed(current, &status) || at.elapsed() >= STATUS_REPORT,
            _ => true,
        };
        if !due {
            continue;
        }
        let patch = json!({"status": status});
        match nodes
            .patch_status(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Timed from the tick, not the reply: the report then falls due
            // on the 30th tick exactly, always before the store's deadline
            // for the renewals it holds meanwhile (first held a tick after
            // this post), so one commit carries both.
            Ok(_) => last_posted = Some(tick.into_std()),
            Err(e) => tracing::warn!(err = %e, "posting node status"),
        }
    }
}

/// The Node's `status` as the API serves it.
async fn read_status(client: &kube::Client, name: &str) -> Result<Value> {
    let request = http::Request::get(format!("/api/v1/nodes/{name}")).body(Vec::new())?;
    let node: Value = client.request(request).await?;
    Ok(node["status"].clone())
}

async fn renew_lease(leases: &Api<Lease>, nodes: &Api<Node>, name: &str) -> Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    if leases.get_opt(name).await?.is_some() {
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
        leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(());
    }
    let node = nodes.get(name).await?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings() -> Readings {
        Readings {
            cpus: 2,
            memory_total: 4 << 30,
            memory_available: 2 << 30,
            disk_total: 100 << 30,
            disk_available: 50 << 30,
            pids: (200, 4_194_304),
        }
    }

    #[test]
    fn status_reports_capacity_allocatable_and_healthy_conditions() {
        let s = status(
            &readings(),
            "10.0.0.5",
            "n1",
            &json!({}),
            Ok(()),
            None,
            "T0",
        );
        assert_eq!(s["capacity"]["cpu"], "2");
        assert_eq!(s["capacity"]["memory"], "4194304Ki");
        assert_eq!(
            s["allocatable"]["memory"],
            format!("{}Ki", (4u64 << 20) - 102_400)
        );
        assert_eq!(s["capacity"]["pods"], "110");
        let by_type = |t: &str| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        assert_eq!(by_type("Ready")["status"], "True");
        assert_eq!(by_type("MemoryPressure")["status"], "False");
        assert_eq!(
            by_type("DiskPressure")["reason"],
            "KubeletHasNoDiskPressure"
        );
        assert_eq!(s["addresses"][0]["address"], "10.0.0.5");
    }

    #[test]
    fn pressure_and_transitions_follow_the_readings() {
        let mut r = readings();
        r.memory_available = 50 << 20;
        r.disk_available = 5 << 30;
        let first = status(
            &r,
            "ip",
            "n",
            &json!({}),
            Err("runtime down".into()),
            None,
            "T0",
        );
        let find = |s: &Value, t: &str| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        assert_eq!(find(&first, "MemoryPressure")["status"], "True");
        assert_eq!(find(&first, "DiskPressure")["status"], "True");
        assert_eq!(find(&first, "Ready")["message"], "runtime down");
        let second = status(&r, "ip", "n", &json!({}), Ok(()), Some(&first), "T1");
        assert_eq!(find(&second, "MemoryPressure")["lastTransitionTime"], "T0");
        assert_eq!(find(&second, "Ready")["lastTransitionTime"], "T1");
        assert!(changed(&first, &second));
        let third = status(&r, "ip", "n", &json!({}), Ok(()), Some(&second), "T2");
        assert!(!changed(&second, &third), "only heartbeat times moved");
        // The node lifecycle marked the node Unknown: the next status corrects it.
        let mut unknown = third.clone();
        for c in unknown["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["status"] = json!("Unknown");
            }
        }
        assert!(changed(&unknown, &third));
        // Fields the kubelet does not set do not count.
        let mut more = third.clone();
        more["volumesInUse"] = json!(["x"]);
        assert!(!changed(&more, &third));
    }

    #[test]
    fn flags_parse_into_labels_and_taints() {
        let labels = parse_labels(&["a=b".into(), "c".into()]).unwrap();
        assert_eq!(labels["a"], "b");
        assert_eq!(labels["c"], "");
        let taints = parse_taints(&["k=v:NoSchedule".into(), "x:NoExecute".into()]).unwrap();
        assert_eq!(
            taints[0],
            json!({"key": "k", "value": "v", "effect": "NoSchedule"})
        );
        assert_eq!(taints[1], json!({"key": "x", "effect": "NoExecute"}));
        assert!(parse_taints(&["k=v:Sometimes".into()]).is_err());
    }
}
