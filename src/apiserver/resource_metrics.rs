//! `metrics.k8s.io/v1beta1`, served by the API server itself (upstream
//! serves it from the metrics-server add-on): NodeMetrics and PodMetrics
//! (get, list, label and field selectors), built at each request from the
//! nodes' kubelet Summary (`/stats/summary`), reached as for `pods/log`.
//! `kubectl top` and the HorizontalPodAutoscaler read it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::ApiState;
use super::body::json_response;
use super::handlers::Request;
use crate::api::ApiError;
use crate::api::values::selectors::{FieldSelector, LabelSelector};
use crate::api::values::summary::{CpuStats, MemoryStats, SAMPLE_PERIOD, Summary};

/// The group served here.
pub const GROUP: &str = "metrics.k8s.io";

/// How long a kubelet may take to answer before its node is left out.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(5);

/// GET of `nodes` or `pods` in `metrics.k8s.io/v1beta1` (one or a list).
pub async fn serve(state: &ApiState, req: &Request, method: &Method) -> Result<Response, ApiError> {
    if *method != Method::GET || req.query.flag("watch") {
        return Err(ApiError::MethodNotAllowed);
    }
    let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or(""), &[])?;
    let now = Utc::now();
    match (req.rt.resource.as_str(), req.path.name.as_deref()) {
        ("nodes", name) => {
            let nodes = load(state, "nodes", None).await?;
            let chosen: Vec<Value> = nodes
                .into_iter()
                .filter(|n| match name {
                    Some(name) => n["metadata"]["name"] == name,
                    None => labels.matches(n.pointer("/metadata/labels")) && fields.matches(n),
                })
                .collect();
            let names: Vec<String> = chosen.iter().map(name_of).collect();
            let summaries = summaries(state, &names).await;
            let mut items: Vec<Value> = chosen
                .iter()
                .filter_map(|node| {
                    let summary = summaries.get(&name_of(node))?;
                    node_metrics(node, summary, now)
                })
                .collect();
            match name {
                Some(name) => single(items.pop(), "nodemetrics", name),
                None => Ok(list("NodeMetricsList", items)),
            }
        }
        ("pods", name) => {
            let namespace = req.path.namespace.as_deref();
            let pods = load(state, "pods", namespace).await?;
            let chosen: Vec<Value> = pods
                .into_iter()
                .filter(|p| match name {
                    Some(name) => p["metadata"]["name"] == name,
                    None => labels.matches(p.pointer("/metadata/labels")) && fields.matches(p),
                })
                .collect();
            let mut nodes: Vec<String> = chosen
                .iter()
                .filter_map(|p| p["spec"]["nodeName"].as_str())
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            nodes.sort();
            nodes.dedup();
            let summaries = summaries(state, &nodes).await;
            let mut items: Vec<Value> = chosen
                .iter()
                .filter_map(|pod| {
                    let node = pod["spec"]["nodeName"].as_str()?;
                    pod_metrics(pod, summaries.get(node)?, now)
                })
                .collect();
            match name {
                Some(name) => {
                    let full = format!("{}/{name}", namespace.unwrap_or_default());
                    single(items.pop(), "podmetrics", &full)
                }
                None => Ok(list("PodMetricsList", items)),
            }
        }
        _ => Err(ApiError::NoSuchPath),
    }
}

/// One object as GET answers it, or upstream's NotFound (metrics-server
/// names pods `namespace/name` in it).
fn single(item: Option<Value>, resource: &str, name: &str) -> Result<Response, ApiError> {
    let mut item = item.ok_or_else(|| ApiError::not_found(GROUP, resource, name))?;
    let kind = if resource == "nodemetrics" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    if let Some(map) = item.as_object_mut() {
        map.insert("kind".into(), json!(kind));
        map.insert("apiVersion".into(), json!(format!("{GROUP}/v1beta1")));
    }
    Ok(json_response(StatusCode::OK, &item))
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": kind, "apiVersion": format!("{GROUP}/v1beta1"), "metadata": {}, "items": items}),
    )
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The stored core/v1 objects of `resource` (in `namespace`), in key order.
async fn load(
    state: &ApiState,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let rt = state
        .registry
        .lookup("", "v1", resource)
        .ok_or_else(|| ApiError::Internal(format!("{resource} are not served")))?;
    state.stored_objects(&rt.key_prefix(namespace)).await
}

/// The kubelet summaries of `nodes`, fetched concurrently; nodes whose
/// kubelet does not answer are left out (as metrics-server leaves them out).
async fn summaries(state: &ApiState, nodes: &[String]) -> HashMap<String, Summary> {
    let fetches = nodes.iter().map(|node| async move {
        let summary = super::kubelet::kubelet_json::<Summary>(
            state,
            node,
            "/stats/summary?only_cpu_and_memory=true",
            KUBELET_TIMEOUT,
        )
        .await;
        match summary {
            Ok(summary) => Some((node.clone(), summary)),
            Err(e) => {
                tracing::debug!(node = %node, err = %e, "no resource metrics from the kubelet");
                None
            }
        }
    });
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// CPU as metrics-server writes it: nano-cores.
fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        "0".into()
    } else {
        format!("{nano_cores}n")
    }
}

/// Memory as metrics-server writes it: binary SI when whole KiB.
fn memory_quantity(bytes: u64) -> String {
    if bytes != 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// `metav1.Duration` text (Go's format) of the sampling window.
fn window() -> String {
    let ms = SAMPLE_PERIOD.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", (ms as f64 / 1000.0))
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// CPU rate and working set, when both were measured.
fn usage(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<(Value, DateTime<Utc>)> {
    let cpu = cpu?;
    let nano_cores = cpu.usage_nano_cores?;
    let working_set = memory?.working_set_bytes?;
    Some((
        json!({"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(working_set)}),
        cpu.time,
    ))
}

/// A node's NodeMetrics, if its kubelet has measured it.
fn node_metrics(node: &Value, summary: &Summary, now: DateTime<Utc>) -> Option<Value> {
    let (usage, at) = usage(summary.node.cpu.as_ref(), summary.node.memory.as_ref())?;
    let mut metadata = json!({"name": node["metadata"]["name"], "creationTimestamp": time(now)});
    if let Some(labels) = node.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    Some(json!({"metadata": metadata, "timestamp": time(at), "window": window(), "usage": usage}))
}

/// A pod's PodMetrics, if its kubelet has measured every container it
/// reports (metrics-server leaves out pods with a container unmeasured).
fn pod_metrics(pod: &Value, summary: &Summary, now: DateTime<Utc>) -> Option<Value> {
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let name = pod["metadata"]["name"].as_str()?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let stats = summary.pods.iter().find(|p| {
        p.pod_ref.namespace == namespace
            && p.pod_ref.name == name
            && (uid.is_empty() || p.pod_ref.uid == uid)
    })?;
    if stats.containers.is_empty() {
        return None;
    }
    let mut latest: Option<DateTime<Utc>> = None;
    let mut containers = BTreeMap::new();
    for c in &stats.containers {
        let (usage, at) = usage(c.cpu.as_ref(), c.memory.as_ref())?;
        latest = latest.max(Some(at));
        containers.insert(c.name.clone(), usage);
    }
    let containers: Vec<Value> = containers
        .into_iter()
        .map(|(name, usage)| json!({"name": name, "usage": usage}))
        .collect();
    let mut metadata =
        json!({"name": name, "namespace": namespace, "creationTimestamp": time(now)});
    if let Some(labels) = pod.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    Some(json!({
        "metadata": metadata,
        "timestamp": time(latest?),
        "window": window(),
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::values::summary::{ContainerStats, NodeStats, PodReference, PodStats};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    fn cpu(rate: Option<u64>) -> Option<CpuStats> {
        Some(CpuStats {
            time: at(0),
            usage_nano_cores: rate,
            usage_core_nano_seconds: Some(1),
        })
    }

    fn memory(bytes: u64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: at(0),
            working_set_bytes: Some(bytes),
            ..Default::default()
        })
    }

    fn summary() -> Summary {
        let container = |name: &str, rate: Option<u64>| ContainerStats {
            name: name.into(),
            cpu: cpu(rate),
            memory: memory(4096),
            ..Default::default()
        };
        Summary {
            node: NodeStats {
                node_name: "n1".into(),
                cpu: cpu(Some(250_000_000)),
                memory: memory(1 << 30),
                ..Default::default()
            },
            pods: vec![
                PodStats {
                    pod_ref: PodReference {
                        name: "web".into(),
                        namespace: "default".into(),
                        uid: "u1".into(),
                    },
                    containers: vec![
                        container("side", Some(0)),
                        container("app", Some(1_000_000)),
                    ],
                    ..Default::default()
                },
                PodStats {
                    pod_ref: PodReference {
                        name: "new".into(),
                        namespace: "default".into(),
                        uid: "u2".into(),
                    },
                    containers: vec![container("app", None)],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn node_metrics_in_metrics_servers_shape() {
        let node = json!({"metadata": {"name": "n1", "labels": {"role": "edge"}}});
        let metrics = node_metrics(&node, &summary(), at(5)).expect("metrics");
        assert_eq!(
            metrics,
            json!({
                "metadata": {"name": "n1", "creationTimestamp": "2023-11-14T22:13:25Z", "labels": {"role": "edge"}},
                "timestamp": "2023-11-14T22:13:20Z",
                "window": "10s",
                "usage": {"cpu": "250000000n", "memory": "1048576Ki"},
            })
        );
    }

    #[test]
    fn pod_metrics_need_every_container_measured() {
        let pod = |name: &str, uid: &str| json!({"metadata": {"name": name, "namespace": "default", "uid": uid, "labels": {"app": "web"}}});
        let web = pod_metrics(&pod("web", "u1"), &summary(), at(5)).expect("web");
        assert_eq!(web["containers"][0]["name"], "app");
        assert_eq!(web["containers"][0]["usage"]["cpu"], "1000000n");
        assert_eq!(
            web["containers"][1]["usage"],
            json!({"cpu": "0", "memory": "4Ki"})
        );
        assert_eq!(web["metadata"]["labels"]["app"], "web");
        // The first sample of a new container has no rate yet.
        assert_eq!(pod_metrics(&pod("new", "u2"), &summary(), at(5)), None);
        // A pod recreated under the same name is not the one measured.
        assert_eq!(pod_metrics(&pod("web", "other"), &summary(), at(5)), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(2048), "2Ki");
        assert_eq!(cpu_quantity(5), "5n");
        assert_eq!(
            crate::api::values::quantity::milli(&cpu_quantity(123_000_000)),
            Some(123)
        );
    }
}
