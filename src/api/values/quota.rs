//! ResourceQuota arithmetic (upstream's quota evaluators), pure: what one
//! object counts toward a quota's resource names, and whether a quota lets
//! a new object in, with upstream's words when it does not. Shared by the
//! API server's admission and the quota controller. Amounts are kept in
//! thousandths (millicores, milli-bytes, milli-objects) so CPU and counts
//! compare exactly.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity;

/// Amounts by quota resource name (`pods`, `requests.cpu`, `count/deployments.apps`, …).
pub type Usage = BTreeMap<String, i64>;

const ONE: i64 = 1000;

/// The names that count objects of `resource` in `group` (legacy core names too).
fn count_names(group: &str, resource: &str) -> Vec<String> {
    let mut names = vec![if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }];
    if group.is_empty()
        && matches!(
            resource,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        names.push(resource.to_string());
    }
    names
}

/// Whether a pod no longer counts (upstream: terminal pods free their quota).
fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A quantity, written as a string or (as YAML numbers arrive) a number.
fn milli_of(q: &Value) -> Option<i64> {
    match q {
        Value::String(text) => quantity::milli(text),
        Value::Number(n) => n.as_f64().map(|v| (v * 1000.0).ceil() as i64),
        _ => None,
    }
}

/// A container's amount of `resource` under `kind` (requests or limits;
/// a request defaults to the limit, as upstream's defaulting does).
fn container_amount(c: &Value, kind: &str, resource: &str) -> Option<i64> {
    let from = |k: &str| milli_of(&c["resources"][k][resource]);
    match kind {
        "requests" => from("requests").or_else(|| from("limits")),
        _ => from("limits"),
    }
}

/// The pod's amount: its containers' sum or its largest init container,
/// whichever is more, plus overhead (upstream's rule).
fn pod_amount(pod: &Value, kind: &str, resource: &str) -> i64 {
    let spec = &pod["spec"];
    let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
    let sum: i64 = list("containers")
        .iter()
        .filter_map(|c| container_amount(c, kind, resource))
        .sum();
    let init = list("initContainers")
        .iter()
        .filter_map(|c| container_amount(c, kind, resource))
        .max()
        .unwrap_or(0);
    sum.max(init) + milli_of(&spec["overhead"][resource]).unwrap_or(0)
}

/// What `obj` (of `resource` in `group`) counts toward quotas.
pub fn object_usage(group: &str, resource: &str, obj: &Value) -> Usage {
    let mut usage = Usage::new();
    if group.is_empty() && resource == "pods" && terminal(obj) {
        return usage;
    }
    for name in count_names(group, resource) {
        usage.insert(name, ONE);
    }
    match (group, resource) {
        ("", "pods") => {
            for r in ["cpu", "memory", "ephemeral-storage"] {
                let requests = pod_amount(obj, "requests", r);
                let limits = pod_amount(obj, "limits", r);
                usage.insert(format!("requests.{r}"), requests);
                usage.insert(format!("limits.{r}"), limits);
                if r != "ephemeral-storage" {
                    usage.insert(r.to_string(), requests);
                }
            }
        }
        ("", "services") => {
            let kind = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            let node_ports = if matches!(kind, "NodePort" | "LoadBalancer") {
                ports
            } else {
                0
            };
            usage.insert("services.nodeports".into(), node_ports * ONE);
            usage.insert(
                "services.loadbalancers".into(),
                if kind == "LoadBalancer" { ONE } else { 0 },
            );
        }
        ("", "persistentvolumeclaims") => {
            let storage = milli_of(&obj["spec"]["resources"]["requests"]["storage"]).unwrap_or(0);
            usage.insert("requests.storage".into(), storage);
        }
        _ => {}
    }
    usage
}

/// The quota's hard limits, if it applies to every object (quotas with
/// scopes are not enforced yet).
pub fn hard(quota: &Value) -> Option<Usage> {
    let spec = &quota["spec"];
    let scoped = spec["scopes"].as_array().is_some_and(|s| !s.is_empty())
        || spec.get("scopeSelector").is_some_and(|s| !s.is_null());
    if scoped {
        return None;
    }
    Some(
        spec["hard"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), milli_of(v)?)))
            .collect(),
    )
}

/// Whether the quota's hard limits name anything `usage` counts.
pub fn concerns(hard: &Usage, usage: &Usage) -> bool {
    hard.keys().any(|k| usage.contains_key(k))
}

/// A quantity as upstream prints it: `500m`, `2`, `128Mi`.
pub fn format(name: &str, milli: i64) -> String {
    let bytes = name.contains("memory") || name.contains("storage");
    let suffixes = match bytes {
        true => super::quantity::Suffixes::Binary,
        false => super::quantity::Suffixes::Decimal,
    };
    super::quantity::format_milli(milli, suffixes)
}

fn pairs(names: &[&String], amounts: &Usage) -> String {
    names
        .iter()
        .map(|n| format!("{n}={}", format(n, amounts.get(*n).copied().unwrap_or(0))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream's check of one quota for a new object: every compute resource
/// the quota limits must be set on each container, and used + requested
/// may not pass the hard limit. The error is upstream's text after
/// `<kind> "<name>" is forbidden: `.
pub fn admit(
    quota_name: &str,
    hard: &Usage,
    used: &Usage,
    requested: &Usage,
    pod: Option<&Value>,
) -> Result<(), String> {
    if let Some(pod) = pod {
        let mut missing = Vec::new();
        for name in hard.keys() {
            let Some((kind, resource)) = name
                .split_once('.')
                .filter(|(k, _)| matches!(*k, "requests" | "limits"))
                .or(match name.as_str() {
                    "cpu" | "memory" => Some(("requests", name.as_str())),
                    _ => None,
                })
            else {
                continue;
            };
            if !matches!(resource, "cpu" | "memory") {
                continue;
            }
            let lacking: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| container_amount(c, kind, resource).is_none())
                .filter_map(|c| c["name"].as_str())
                .collect();
            if !lacking.is_empty() {
                missing.push(format!("{name} for: {}", lacking.join(",")));
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "failed quota: {quota_name}: must specify {}",
                missing.join("; ")
            ));
        }
    }
    let exceeded: Vec<&String> = hard
        .iter()
        .filter(|(name, limit)| {
            requested.get(*name).is_some_and(|r| *r > 0)
                && used.get(*name).copied().unwrap_or(0) + requested[*name] > **limit
        })
        .map(|(name, _)| name)
        .collect();
    if exceeded.is_empty() {
        return Ok(());
    }
    Err(format!(
        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
        pairs(&exceeded, requested),
        pairs(&exceeded, used),
        pairs(&exceeded, hard)
    ))
}

/// The sum of `objects`' usage, for the names in `hard`.
pub fn total<'a>(
    group: &str,
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
    hard: &Usage,
) -> Usage {
    let mut used: Usage = Usage::new();
    for obj in objects {
        for (name, amount) in object_usage(group, resource, obj) {
            if hard.contains_key(&name) {
                *used.entry(name).or_default() += amount;
            }
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: Option<&str>, memory: Option<&str>) -> Value {
        let mut requests = serde_json::Map::new();
        if let Some(c) = cpu {
            requests.insert("cpu".into(), json!(c));
        }
        if let Some(m) = memory {
            requests.insert("memory".into(), json!(m));
        }
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "resources": {"requests": requests}}]}})
    }

    fn hard_of(pairs: &[(&str, &str)]) -> Usage {
        hard(&json!({"spec": {"hard": pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()}})).expect("unscoped")
    }

    #[test]
    fn pods_count_and_request() {
        let usage = object_usage("", "pods", &pod(Some("250m"), Some("64Mi")));
        assert_eq!(usage["pods"], 1000);
        assert_eq!(usage["count/pods"], 1000);
        assert_eq!(usage["requests.cpu"], 250);
        assert_eq!(usage["cpu"], 250);
        assert_eq!(usage["requests.memory"], 64 * 1024 * 1024 * 1000);
        let mut done = pod(Some("1"), None);
        done["status"] = json!({"phase": "Succeeded"});
        assert!(
            object_usage("", "pods", &done).is_empty(),
            "terminal pods free their quota"
        );
        let deployment = object_usage("apps", "deployments", &json!({}));
        assert_eq!(deployment["count/deployments.apps"], 1000);
        let svc = object_usage(
            "",
            "services",
            &json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}}),
        );
        assert_eq!(
            (
                svc["services"],
                svc["services.nodeports"],
                svc["services.loadbalancers"]
            ),
            (1000, 2000, 0)
        );
    }

    #[test]
    fn admission_refuses_in_upstream_words() {
        let hard = hard_of(&[("pods", "2"), ("requests.cpu", "1")]);
        let one = pod(Some("600m"), None);
        let requested = object_usage("", "pods", &one);
        let used = total("", "pods", [&one], &hard);
        assert!(admit("compute", &hard, &Usage::new(), &requested, Some(&one)).is_ok());
        let e = admit("compute", &hard, &used, &requested, Some(&one)).unwrap_err();
        assert_eq!(
            e,
            "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
        );
        let e = admit(
            "compute",
            &hard,
            &used,
            &object_usage("", "pods", &pod(None, None)),
            Some(&pod(None, None)),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "failed quota: compute: must specify requests.cpu for: app"
        );
        let counts = hard_of(&[("pods", "1")]);
        let e = admit(
            "counts",
            &counts,
            &total("", "pods", [&one], &counts),
            &requested,
            Some(&one),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "exceeded quota: counts, requested: pods=1, used: pods=1, limited: pods=1"
        );
    }

    #[test]
    fn scoped_quotas_are_not_enforced_yet_and_quantities_print_as_upstream() {
        assert!(
            hard(&json!({"spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}})).is_none()
        );
        assert_eq!(format("requests.memory", 128 * 1024 * 1024 * 1000), "128Mi");
        assert_eq!(format("requests.cpu", 1500), "1500m");
        assert_eq!(format("pods", 3000), "3");
    }
}
