//! Printers for the remaining built-in groups: autoscaling, policy, networking,
//! discovery, coordination, storage, scheduling, node, rbac, certificates,
//! flowcontrol, admissionregistration and apiregistration (APIService).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::core_group::load_balancer_status;
use super::helpers::{
    NONE, UNSET, age, arr, at, at_or_null, condition, format_label_selector, int_at, int_or_string,
    len_at, list_with_more, name, opt_bool, opt_int, opt_str, quantity, str_at, str_or,
};
use super::{AGE, NAME, Table, col, human_duration, int, row, text};

pub(crate) const HPA: Table = Table {
    columns: &[
        NAME,
        text("Reference", ""),
        text("Targets", ""),
        text("MinPods", ""),
        text("MaxPods", ""),
        text("Replicas", ""),
        AGE,
    ],
    cells: |hpa, now| {
        let reference = format!(
            "{}/{}",
            str_at(hpa, "/spec/scaleTargetRef/kind"),
            str_at(hpa, "/spec/scaleTargetRef/name")
        );
        let min =
            opt_int(hpa, "/spec/minReplicas").map_or_else(|| UNSET.to_string(), |n| n.to_string());
        row![
            name(hpa),
            reference,
            hpa_targets(hpa),
            min,
            int_at(hpa, "/spec/maxReplicas"),
            int_at(hpa, "/status/currentReplicas"),
            age(hpa, now),
        ]
    },
};

/// The metric specs and statuses in the v2 shape; autoscaling/v1 objects are
/// converted the way the API server does (a CPU utilization Resource metric).
fn hpa_metrics(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    let v1 = str_at(hpa, "/apiVersion") == "autoscaling/v1"
        || at(hpa, "/spec/targetCPUUtilizationPercentage").is_some();
    if !v1 {
        return (
            arr(hpa, "/spec/metrics").to_vec(),
            arr(hpa, "/status/currentMetrics").to_vec(),
        );
    }
    let cpu = |field: &str, value: i64| json!({"type": "Resource", "resource": {"name": "cpu", field: {"averageUtilization": value}}});
    let specs = opt_int(hpa, "/spec/targetCPUUtilizationPercentage").map(|n| cpu("target", n));
    let statuses =
        opt_int(hpa, "/status/currentCPUUtilizationPercentage").map(|n| cpu("current", n));
    (specs.into_iter().collect(), statuses.into_iter().collect())
}

/// One metric as "current/target", with current "<unknown>" until reported.
fn hpa_target(spec: &Value, status: Option<&Value>) -> String {
    let source = |kind: &str| at(spec, &format!("/{kind}")).unwrap_or(&Value::Null);
    let reported = |kind: &str| status.and_then(|s| at(s, &format!("/{kind}")));
    let unknown = || "<unknown>".to_string();
    match str_at(spec, "/type") {
        kind @ ("External" | "Object") => {
            let key = if kind == "External" {
                "external"
            } else {
                "object"
            };
            let target = at_or_null(source(key), "/target");
            match at(target, "/averageValue") {
                Some(avg) => {
                    let current = reported(key).and_then(|s| at(s, "/current/averageValue"));
                    let current = current.map_or_else(unknown, |q| quantity(Some(q)));
                    format!("{current}/{} (avg)", quantity(Some(avg)))
                }
                None => {
                    let current =
                        reported(key).map_or_else(unknown, |s| quantity(at(s, "/current/value")));
                    format!("{current}/{}", quantity(at(target, "/value")))
                }
            }
        }
        "Pods" => {
            let current =
                reported("pods").map_or_else(unknown, |s| quantity(at(s, "/current/averageValue")));
            format!(
                "{current}/{}",
                quantity(at(source("pods"), "/target/averageValue"))
            )
        }
        kind @ ("Resource" | "ContainerResource") => {
            let key = if kind == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let src = source(key);
            let resource = str_at(src, "/name");
            let target = at_or_null(src, "/target");
            if let Some(avg) = at(target, "/averageValue") {
                let current = reported(key)
                    .map_or_else(unknown, |s| quantity(at(s, "/current/averageValue")));
                return format!("{resource}: {current}/{}", quantity(Some(avg)));
            }
            let percent = |v: Option<i64>| v.map(|n| format!("{n}%"));
            let current =
                percent(reported(key).and_then(|s| opt_int(s, "/current/averageUtilization")));
            let goal = percent(opt_int(target, "/averageUtilization"))
                .unwrap_or_else(|| "<auto>".to_string());
            format!("{resource}: {}/{goal}", current.unwrap_or_else(unknown))
        }
        _ => "<unknown type>".to_string(),
    }
}

/// Up to two metric targets joined with ", ", then " + N more...".
fn hpa_targets(hpa: &Value) -> String {
    let (specs, statuses) = hpa_metrics(hpa);
    if specs.is_empty() {
        return NONE.to_string();
    }
    let all: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| hpa_target(s, statuses.get(i)))
        .collect();
    let shown = all.iter().take(2).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 2 {
        format!("{shown} + {} more...", all.len() - 2)
    } else {
        shown
    }
}

pub(crate) const PDB: Table = Table {
    columns: &[
        NAME,
        text(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        text(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        int("Allowed Disruptions", ""),
        AGE,
    ],
    cells: |pdb, now| {
        let bound = |ptr: &str| at(pdb, ptr).map_or_else(|| "N/A".to_string(), int_or_string);
        row![
            name(pdb),
            bound("/spec/minAvailable"),
            bound("/spec/maxUnavailable"),
            int_at(pdb, "/status/disruptionsAllowed"),
            age(pdb, now),
        ]
    },
};

pub(crate) const INGRESS: Table = Table {
    columns: &[
        NAME,
        text("Class", ""),
        text("Hosts", ""),
        text("Address", ""),
        text("Ports", "Ports of TLS configurations that open"),
        AGE,
    ],
    cells: |ing, now| {
        let ports = if arr(ing, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        row![
            name(ing),
            opt_str(ing, "/spec/ingressClassName").unwrap_or(NONE),
            ingress_hosts(ing),
            load_balancer_status(ing, "/status/loadBalancer/ingress"),
            ports,
            age(ing, now),
        ]
    },
};

/// Up to three rule hosts, "*" when none (formatHosts, including its counting quirk).
fn ingress_hosts(ing: &Value) -> String {
    let rules = arr(ing, "/spec/rules");
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        more |= hosts.len() == 3;
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    match (hosts.is_empty(), more) {
        (true, _) => "*".to_string(),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - 3),
        (false, false) => hosts.join(","),
    }
}

pub(crate) const INGRESS_CLASS: Table = Table {
    columns: &[
        NAME,
        text(
            "Controller",
            "Controller that is responsible for handling this class",
        ),
        text(
            "Parameters",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    cells: |ic, now| {
        let parameters = at(ic, "/spec/parameters").map_or_else(
            || NONE.to_string(),
            |p| match opt_str(p, "/apiGroup") {
                Some(g) => format!("{}.{g}/{}", str_at(p, "/kind"), str_at(p, "/name")),
                None => format!("{}/{}", str_at(p, "/kind"), str_at(p, "/name")),
            },
        );
        row![
            name(ic),
            str_at(ic, "/spec/controller"),
            parameters,
            age(ic, now)
        ]
    },
};

pub(crate) const NETWORK_POLICY: Table = Table {
    columns: &[NAME, text("Pod-Selector", ""), AGE],
    cells: |np, now| {
        row![
            name(np),
            format_label_selector(at(np, "/spec/podSelector")),
            age(np, now)
        ]
    },
};

pub(crate) const ENDPOINT_SLICE: Table = Table {
    columns: &[
        NAME,
        text("AddressType", ""),
        text("Ports", ""),
        text("Endpoints", ""),
        AGE,
    ],
    cells: |es, now| {
        let ports: Vec<String> = arr(es, "/ports")
            .iter()
            .map(|p| match (opt_int(p, "/port"), opt_str(p, "/name")) {
                (Some(n), _) => n.to_string(),
                (None, Some(port_name)) => port_name.to_string(),
                (None, None) => "*".to_string(),
            })
            .collect();
        let addresses: Vec<String> = arr(es, "/endpoints")
            .iter()
            .flat_map(|e| {
                arr(e, "/addresses")
                    .iter()
                    .map(|a| a.as_str().unwrap_or("").to_string())
            })
            .collect();
        row![
            name(es),
            str_at(es, "/addressType"),
            list_with_more(&ports, 3),
            list_with_more(&addresses, 3),
            age(es, now),
        ]
    },
};

pub(crate) const LEASE: Table = Table {
    columns: &[NAME, text("Holder", ""), AGE],
    cells: |l, now| row![name(l), str_at(l, "/spec/holderIdentity"), age(l, now)],
};

pub(crate) const PRIORITY_CLASS: Table = Table {
    columns: &[
        NAME,
        int("Value", ""),
        col("Global-Default", "boolean", ""),
        AGE,
        text("PreemptionPolicy", ""),
    ],
    cells: |pc, now| {
        row![
            name(pc),
            int_at(pc, "/value"),
            opt_bool(pc, "/globalDefault").unwrap_or(false),
            age(pc, now),
            str_at(pc, "/preemptionPolicy"),
        ]
    },
};

pub(crate) const RUNTIME_CLASS: Table = Table {
    columns: &[NAME, text("Handler", ""), AGE],
    cells: |rc, now| row![name(rc), str_at(rc, "/handler"), age(rc, now)],
};

/// Columns of RoleBindings and ClusterRoleBindings (the wide ones name the binding kind).
macro_rules! binding_columns {
    ($kind:literal) => {
        &[
            NAME,
            text("Role", ""),
            AGE,
            text("Users", concat!("Users in the ", $kind)).wide(),
            text("Groups", concat!("Groups in the ", $kind)).wide(),
            text("ServiceAccounts", concat!("ServiceAccounts in the ", $kind)).wide(),
        ]
    };
}

pub(crate) const ROLE_BINDING: Table = Table {
    columns: binding_columns!("roleBinding"),
    cells: binding_cells,
};

pub(crate) const CLUSTER_ROLE_BINDING: Table = Table {
    columns: binding_columns!("clusterRoleBinding"),
    cells: binding_cells,
};

fn binding_cells(b: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(b, "/roleRef/kind"),
        str_at(b, "/roleRef/name")
    );
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in arr(b, "/subjects") {
        match str_at(s, "/kind") {
            "ServiceAccount" => sas.push(format!(
                "{}/{}",
                str_at(s, "/namespace"),
                str_at(s, "/name")
            )),
            "User" => users.push(str_at(s, "/name").to_string()),
            "Group" => groups.push(str_at(s, "/name").to_string()),
            _ => {}
        }
    }
    row![
        name(b),
        role,
        age(b, now),
        users.join(", "),
        groups.join(", "),
        sas.join(", ")
    ]
}

pub(crate) const CSR: Table = Table {
    columns: &[
        NAME,
        AGE,
        text("SignerName", ""),
        text("Requestor", "Base64-encoded PKCS#10 CSR data"),
        text("RequestedDuration", ""),
        text("Condition", ""),
    ],
    cells: |csr, now| {
        let duration = opt_int(csr, "/spec/expirationSeconds").map_or_else(
            || NONE.to_string(),
            |s| human_duration(chrono::Duration::try_seconds(s).unwrap_or(chrono::Duration::MAX)),
        );
        row![
            name(csr),
            age(csr, now),
            str_or(csr, "/spec/signerName", NONE),
            str_at(csr, "/spec/username"),
            duration,
            csr_condition(csr),
        ]
    },
};

/// "Approved", "Denied" or "Pending", plus ",Failed" and ",Issued" when they apply.
fn csr_condition(csr: &Value) -> String {
    let conditions = arr(csr, "/status/conditions");
    let has = |kind: &str| conditions.iter().any(|c| str_at(c, "/type") == kind);
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(csr, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

pub(crate) const FLOW_SCHEMA: Table = Table {
    columns: &[
        NAME,
        text("PriorityLevel", ""),
        text("MatchingPrecedence", ""),
        text("DistinguisherMethod", ""),
        AGE,
        text("MissingPL", ""),
    ],
    cells: |fs, now| {
        let missing = arr(fs, "/status/conditions")
            .iter()
            .find(|c| str_at(c, "/type") == "Dangling")
            .map_or("?", |c| str_at(c, "/status"));
        row![
            name(fs),
            str_at(fs, "/spec/priorityLevelConfiguration/name"),
            int_at(fs, "/spec/matchingPrecedence"),
            str_or(fs, "/spec/distinguisherMethod/type", NONE),
            age(fs, now),
            missing,
        ]
    },
};

pub(crate) const PRIORITY_LEVEL: Table = Table {
    columns: &[
        NAME,
        text("Type", ""),
        text("NominalConcurrencyShares", ""),
        text("Queues", ""),
        text("HandSize", ""),
        text("QueueLengthLimit", ""),
        AGE,
    ],
    cells: |pl, now| {
        let none = || Value::from(NONE);
        let limited = at(pl, "/spec/limited");
        let shares = limited.map_or_else(none, |l| {
            opt_int(l, "/nominalConcurrencyShares").unwrap_or(30).into()
        });
        let queuing = limited.and_then(|l| at(l, "/limitResponse/queuing"));
        let queue = |field: &str, default: i64| {
            queuing.map_or_else(none, |q| {
                opt_int(q, &format!("/{field}")).unwrap_or(default).into()
            })
        };
        row![
            name(pl),
            str_at(pl, "/spec/type"),
            shares,
            queue("queues", 64),
            queue("handSize", 8),
            queue("queueLengthLimit", 50),
            age(pl, now),
        ]
    },
};

pub(crate) const WEBHOOKS: Table = Table {
    columns: &[NAME, int("Webhooks", ""), AGE],
    cells: |w, now| row![name(w), len_at(w, "/webhooks"), age(w, now)],
};

pub(crate) const API_SERVICE: Table = Table {
    columns: &[
        NAME,
        text(
            "Service",
            "The reference to the service that hosts this API endpoint.",
        ),
        text("Available", "Whether this service is available."),
        AGE,
    ],
    cells: |svc, now| {
        let service = at(svc, "/spec/service").map_or_else(
            || "Local".to_string(),
            |s| format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name")),
        );
        let available = match condition(svc, "/status/conditions", "Available") {
            None => "Unknown".to_string(),
            Some(c) => match (str_at(c, "/status"), str_at(c, "/reason")) {
                (status @ "True", _) | (status, "") => status.to_string(),
                (status, reason) => format!("{status} ({reason})"),
            },
        };
        row![name(svc), service, available, age(svc, now)]
    },
};

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
