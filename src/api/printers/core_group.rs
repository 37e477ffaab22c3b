//! Printers for the core ("") group: workloads, networking and configuration kinds.
//! (Events and PersistentVolumes live in `events` and `storage`.)

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{
    NONE, UNKNOWN, age, arr, at, at_or_null, condition_true, containers, deleting, format_labels,
    int_at, len_at, name, non_empty_or, obj, opt_int, opt_str, quantity_or_zero, since, str_at,
    str_or, time_at,
};
use super::{AGE, CONTAINERS, IMAGES, NAME, Table, int, row, text};

pub(crate) const POD: Table = Table {
    columns: &[
        NAME,
        text("Ready", ""),
        text(
            "Status",
            "The aggregate status of the containers in this pod.",
        ),
        text("Restarts", ""),
        AGE,
        text("IP", "").wide(),
        text("Node", "").wide(),
        text("Nominated Node", "").wide(),
        text("Readiness Gates", "").wide(),
    ],
    cells: pod_cells,
};

/// Running totals while walking a pod's container statuses.
#[derive(Default)]
struct PodTally {
    restarts: i64,
    last_restart: Option<DateTime<Utc>>,
    ready: i64,
}

impl PodTally {
    /// Adds a status's restart count and its last termination time.
    fn count_restarts(&mut self, status: &Value) {
        self.restarts = self
            .restarts
            .saturating_add(int_at(status, "/restartCount"));
        let finished = time_at(status, "/lastState/terminated/finishedAt");
        if let Some(t) = finished.filter(|t| self.last_restart.is_none_or(|last| last < *t)) {
            self.last_restart = Some(t);
        }
    }
}

/// The reason a terminated container without a reason shows: "Signal:9" or "ExitCode:1".
fn exit_reason(terminated: &Value) -> String {
    match int_at(terminated, "/signal") {
        0 => format!("ExitCode:{}", int_at(terminated, "/exitCode")),
        signal => format!("Signal:{signal}"),
    }
}

/// The STATUS while init containers run: `None` once they are all done.
fn init_reason(
    pod: &Value,
    restartable: &HashMap<&str, bool>,
    tally: &mut PodTally,
    side: &mut PodTally,
) -> Option<String> {
    let total = arr(pod, "/spec/initContainers").len();
    for (i, status) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        tally.count_restarts(status);
        let sidecar = restartable
            .get(str_at(status, "/name"))
            .copied()
            .unwrap_or(false);
        if sidecar {
            side.count_restarts(status);
        }
        let terminated = at(status, "/state/terminated");
        let waiting_reason = str_at(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && status.pointer("/started") == Some(&Value::Bool(true)) {
            if status.pointer("/ready") == Some(&Value::Bool(true)) {
                side.ready += 1;
            }
            continue;
        }
        return Some(match terminated {
            Some(t) if str_at(t, "/reason").is_empty() => format!("Init:{}", exit_reason(t)),
            Some(t) => format!("Init:{}", str_at(t, "/reason")),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{total}"),
        });
    }
    None
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = str_at(pod, "/status/phase");
    let mut reason = str_or(pod, "/status/reason", phase);
    let gated = arr(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".to_string();
    }
    let restartable: HashMap<&str, bool> = arr(pod, "/spec/initContainers")
        .iter()
        .map(|c| (str_at(c, "/name"), str_at(c, "/restartPolicy") == "Always"))
        .collect();
    let sidecars = arr(pod, "/spec/initContainers")
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .count();
    let total = (arr(pod, "/spec/containers").len() + sidecars) as i64;

    let mut tally = PodTally::default();
    let mut side = PodTally::default();
    let init = init_reason(pod, &restartable, &mut tally, &mut side);
    let initializing = init.is_some();
    if let Some(r) = init {
        reason = r;
    }
    if !initializing || condition_true(pod, "/status/conditions", "Initialized") {
        tally = PodTally {
            ready: tally.ready + side.ready,
            ..side
        };
        let mut has_running = false;
        for status in arr(pod, "/status/containerStatuses").iter().rev() {
            tally.count_restarts(status);
            let waiting = str_at(status, "/state/waiting/reason");
            let terminated = at(status, "/state/terminated");
            if at(status, "/state/waiting").is_some() && !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if r.is_empty() {
                    exit_reason(t)
                } else {
                    r.to_string()
                };
            } else if status.pointer("/ready") == Some(&Value::Bool(true))
                && at(status, "/state/running").is_some()
            {
                has_running = true;
                tally.ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let ready = condition_true(pod, "/status/conditions", "Ready");
            reason = if ready { "Running" } else { "NotReady" }.to_string();
        }
    } else {
        tally.ready += side.ready;
    }
    if deleting(pod) && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting(pod) && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }
    let restarts = match tally.last_restart {
        Some(t) if tally.restarts != 0 => {
            format!("{} ({} ago)", tally.restarts, since(Some(t), now))
        }
        _ => tally.restarts.to_string(),
    };
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map_or_else(|| str_at(pod, "/status/podIP"), |ip| str_at(ip, "/ip"));
    row![
        name(pod),
        format!("{}/{total}", tally.ready),
        reason,
        restarts,
        age(pod, now),
        non_empty_or(ip, NONE),
        str_or(pod, "/spec/nodeName", NONE),
        str_or(pod, "/status/nominatedNodeName", NONE),
        readiness_gates(pod),
    ]
}

/// The row condition upstream attaches to finished pods.
pub(crate) fn pod_row_conditions(pod: &Value) -> Vec<Value> {
    let (reason, message) = match str_at(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![
        serde_json::json!({"type": "Completed", "status": "True", "reason": reason, "message": message}),
    ]
}

/// "true/total" readiness gates, or "<none>".
fn readiness_gates(pod: &Value) -> String {
    let gates = arr(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return NONE.to_string();
    }
    let passing = gates
        .iter()
        .filter(|g| condition_true(pod, "/status/conditions", str_at(g, "/conditionType")))
        .count();
    format!("{passing}/{}", gates.len())
}

pub(crate) const POD_TEMPLATE: Table = Table {
    columns: &[
        NAME,
        text("Containers", "Names of each container in the template."),
        text(
            "Images",
            "Images referenced by each container in the template.",
        ),
        text("Pod Labels", "The labels for the pod template."),
    ],
    cells: |t, _| {
        let (names, images) = containers(at_or_null(t, "/template/spec"));
        row![
            name(t),
            names,
            images,
            format_labels(obj(t, "/template/metadata/labels"))
        ]
    },
};

pub(crate) const SERVICE: Table = Table {
    columns: &[
        NAME,
        text("Type", ""),
        text("Cluster-IP", ""),
        text("External-IP", ""),
        text("Port(s)", ""),
        AGE,
        text("Selector", "").wide(),
    ],
    cells: service_cells,
};

/// Sorted, de-duplicated load-balancer ingress points (IP, else hostname), joined with ",".
pub(crate) fn load_balancer_status(v: &Value, ptr: &str) -> String {
    let points: BTreeSet<&str> = arr(v, ptr)
        .iter()
        .map(|i| {
            opt_str(i, "/ip")
                .filter(|s| !s.is_empty())
                .unwrap_or(str_at(i, "/hostname"))
        })
        .filter(|s| !s.is_empty())
        .collect();
    points.into_iter().collect::<Vec<_>>().join(",")
}

fn service_external_ip(svc: &Value, svc_type: &str) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => non_empty_or(&external.join(","), NONE),
        "LoadBalancer" => {
            let lb = load_balancer_status(svc, "/status/loadBalancer/ingress");
            let all: Vec<&str> = lb
                .split(',')
                .filter(|s| !s.is_empty())
                .chain(external)
                .collect();
            non_empty_or(&all.join(","), "<pending>")
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => UNKNOWN.to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = opt_str(p, "/protocol").unwrap_or("TCP");
            match int_at(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", int_at(p, "/port")),
                _ => format!("{}/{proto}", int_at(p, "/port")),
            }
        })
        .collect();
    non_empty_or(&ports.join(","), NONE)
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let svc_type = opt_str(svc, "/spec/type").unwrap_or("ClusterIP");
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or(str_at(svc, "/spec/clusterIP"));
    row![
        name(svc),
        svc_type,
        non_empty_or(cluster_ip, NONE),
        service_external_ip(svc, svc_type),
        service_ports(svc),
        age(svc, now),
        format_labels(obj(svc, "/spec/selector")),
    ]
}

pub(crate) const ENDPOINTS: Table = Table {
    columns: &[NAME, text("Endpoints", ""), AGE],
    cells: |e, now| row![name(e), format_endpoints(e), age(e, now)],
};

/// Up to three ready "ip:port" endpoints, then " + N more..." (formatEndpoints).
fn format_endpoints(e: &Value) -> String {
    let subsets = arr(e, "/subsets");
    if subsets.is_empty() {
        return NONE.to_string();
    }
    let mut all = Vec::new();
    for subset in subsets {
        let ips = arr(subset, "/addresses").iter().map(|a| str_at(a, "/ip"));
        let ports = arr(subset, "/ports");
        if ports.is_empty() {
            all.extend(ips.map(str::to_string));
            continue;
        }
        for port in ports {
            let n = int_at(port, "/port");
            all.extend(ips.clone().map(|ip| join_host_port(ip, n)));
        }
    }
    let shown = all.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    match all.len() {
        n if n > 3 => format!("{shown} + {} more...", n - 3),
        _ => shown,
    }
}

/// "host:port", with IPv6 hosts in brackets (net.JoinHostPort).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) const NAMESPACE: Table = Table {
    columns: &[NAME, text("Status", "The status of the namespace"), AGE],
    cells: |ns, now| row![name(ns), str_at(ns, "/status/phase"), age(ns, now)],
};

const ADDRESSES_DESC: &str = "An address the node reports in status.addresses.";

pub(crate) const NODE: Table = Table {
    columns: &[
        NAME,
        text("Status", "The status of the node"),
        text("Roles", "The roles of the node"),
        AGE,
        text("Version", "Kubelet Version reported by the node."),
        text("Internal-IP", ADDRESSES_DESC).wide(),
        text("External-IP", ADDRESSES_DESC).wide(),
        text("OS-Image", "").wide(),
        text("Kernel-Version", "").wide(),
        text("Container-Runtime", "").wide(),
    ],
    cells: node_cells,
};

/// "Ready", "NotReady" or "Unknown", plus ",SchedulingDisabled" when cordoned.
fn node_status(node: &Value) -> String {
    let ready = arr(node, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` keys and the `kubernetes.io/role` value.
fn node_roles(node: &Value) -> String {
    let roles: BTreeSet<&str> = obj(node, "/metadata/labels")
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => Some(role),
            None if k == "kubernetes.io/role" => v.as_str(),
            None => None,
        })
        .filter(|r| !r.is_empty())
        .collect();
    non_empty_or(&roles.into_iter().collect::<Vec<_>>().join(","), NONE)
}

fn node_address(node: &Value, kind: &str) -> String {
    let found = arr(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == kind);
    found.map_or(NONE, |a| str_at(a, "/address")).to_string()
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = |field: &str| str_or(node, &format!("/status/nodeInfo/{field}"), UNKNOWN);
    row![
        name(node),
        node_status(node),
        node_roles(node),
        age(node, now),
        str_at(node, "/status/nodeInfo/kubeletVersion"),
        node_address(node, "InternalIP"),
        node_address(node, "ExternalIP"),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

pub(crate) const CONFIG_MAP: Table = Table {
    columns: &[NAME, text("Data", ""), AGE],
    cells: |cm, now| {
        row![
            name(cm),
            len_at(cm, "/data") + len_at(cm, "/binaryData"),
            age(cm, now)
        ]
    },
};

pub(crate) const SECRET: Table = Table {
    columns: &[NAME, text("Type", ""), text("Data", ""), AGE],
    cells: |s, now| {
        let kind = opt_str(s, "/type").unwrap_or("Opaque");
        row![name(s), kind, len_at(s, "/data"), age(s, now)]
    },
};

pub(crate) const SERVICE_ACCOUNT: Table = Table {
    columns: &[NAME, text("Secrets", ""), AGE],
    cells: |sa, now| row![name(sa), len_at(sa, "/secrets"), age(sa, now)],
};

pub(crate) const REPLICATION_CONTROLLER: Table = Table {
    columns: &[
        NAME,
        int("Desired", ""),
        int("Current", ""),
        int("Ready", ""),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: |rc, now| {
        let (names, images) = containers(at_or_null(rc, "/spec/template/spec"));
        row![
            name(rc),
            opt_int(rc, "/spec/replicas").unwrap_or(1),
            int_at(rc, "/status/replicas"),
            int_at(rc, "/status/readyReplicas"),
            age(rc, now),
            names,
            images,
            format_labels(obj(rc, "/spec/selector")),
        ]
    },
};

pub(crate) const RESOURCE_QUOTA: Table = Table {
    columns: &[NAME, text("Request", ""), text("Limit", ""), AGE],
    cells: |rq, now| {
        let mut hard: Vec<(&String, &Value)> =
            obj(rq, "/status/hard").into_iter().flatten().collect();
        hard.sort_by(|a, b| a.0.cmp(b.0));
        let used = obj(rq, "/status/used");
        let (mut requests, mut limits) = (Vec::new(), Vec::new());
        for (resource, limit) in hard {
            let current = quantity_or_zero(used.and_then(|u| u.get(resource)));
            let entry = format!("{resource}: {current}/{}", quantity_or_zero(Some(limit)));
            if resource.starts_with("limits.") {
                &mut limits
            } else {
                &mut requests
            }
            .push(entry);
        }
        row![
            name(rq),
            requests.join(", "),
            limits.join(", "),
            age(rq, now)
        ]
    },
};

#[cfg(test)]
#[path = "core_group_tests.rs"]
mod tests;
