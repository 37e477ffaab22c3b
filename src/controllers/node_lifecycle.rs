//! Node lifecycle: a node whose kubelet stops renewing its Lease (and
//! posting status) for the grace period has its conditions set to Unknown
//! and its pods marked not ready; nodes that are not ready or unreachable
//! carry upstream's `node.kubernetes.io/not-ready` / `unreachable` taints
//! (NoSchedule and NoExecute), removed when the node is Ready again; pods on
//! a node with a NoExecute taint they do not tolerate are evicted, at once or
//! after their `tolerationSeconds`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Context;
use crate::api::values::nodes::ready_condition;
use crate::api::values::scheduling::tolerates;
use crate::telemetry::events::{self, Source};

/// How long a node may go without a heartbeat (upstream's
/// `--node-monitor-grace-period`).
pub const GRACE: Duration = Duration::from_secs(40);
const CHECK_EVERY: Duration = Duration::from_secs(5);
const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Where each node's heartbeat Lease lives.
const NODE_LEASES: &str = "kube-node-lease";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let (nodes, node_changes) = context.informers.cache::<Node>();
    // Every Lease (the shared cache is cluster-wide); the nodes' are read
    // from kube-node-lease.
    let (leases, lease_changes) = context.informers.cache::<Lease>();
    let (pods, pod_changes) = context.informers.cache::<Pod>();
    let streams = [node_changes, lease_changes, pod_changes];
    let changes = futures::stream::select_all(streams).boxed();
    let mut passes = crate::runtime::passes(changes, CHECK_EVERY, Duration::from_millis(20));
    let mut seen = Heartbeats::default();
    while passes.next().await.is_some() {
        pass(&client, &nodes, &leases, &pods, &mut seen).await;
    }
}

/// When this controller saw each node's heartbeat change, by its own clock
/// (upstream's probeTimestamp): a node is silent when that is more than the
/// grace period ago, not when the stored renewTime is old. So a restart
/// (this controller's, which finds every heartbeat as of when kelp stopped,
/// or the store's, which may have lost coalesced renewals) starts every
/// node's grace period afresh instead of declaring it gone.
#[derive(Default)]
struct Heartbeats(std::collections::HashMap<String, (Option<Timestamp>, std::time::Instant)>);

impl Heartbeats {
    /// Whether `node`, whose latest heartbeat is `heartbeat`, has been
    /// silent for longer than the grace period.
    fn silent(&mut self, node: &str, heartbeat: Option<Timestamp>) -> bool {
        let now = std::time::Instant::now();
        let (last, at) = self.0.entry(node.to_string()).or_insert((heartbeat, now));
        if *last != heartbeat {
            *last = heartbeat;
            *at = now;
        }
        now.duration_since(*at) > GRACE
    }

    /// Forgets nodes that are gone.
    fn keep(&mut self, nodes: &[String]) {
        self.0.retain(|name, _| nodes.contains(name));
    }
}

/// The node's last sign of life: its Lease renewal or Ready heartbeat.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0);
    let posted = ready_condition(node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    renewed.max(posted)
}

/// The taints the node's readiness calls for (`Ready` True, False or Unknown).
pub fn readiness_taints(ready: &str, added: Timestamp) -> Vec<Taint> {
    let key = match ready {
        "True" => return Vec::new(),
        "False" => NOT_READY,
        _ => UNREACHABLE,
    };
    ["NoSchedule", "NoExecute"]
        .into_iter()
        .map(|effect| Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: (effect == "NoExecute").then_some(Time(added)),
            value: None,
        })
        .collect()
}

/// When a pod on a node with `taints` must go: now (`Some(0)`), after a
/// while, or never (`None`).
pub fn eviction_due(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Duration> {
    let tolerations = pod.spec.as_ref()?.tolerations.clone().unwrap_or_default();
    let mut due: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(Duration::ZERO);
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let at = added.as_second() + seconds.max(0);
        let left = Duration::from_secs(u64::try_from(at - now.as_second()).unwrap_or(0));
        due = Some(due.map_or(left, |d| d.min(left)));
    }
    due
}

async fn pass(
    client: &kube::Client,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    seen: &mut Heartbeats,
) {
    let now = Timestamp::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let leases = leases.state();
    let pods = pods.state();
    let source = Source {
        component: "node-controller".into(),
        host: None,
    };
    let nodes = nodes.state();
    seen.keep(&nodes.iter().map(|n| n.name_any()).collect::<Vec<_>>());
    for node in nodes {
        let name = node.name_any();
        let lease = leases
            .iter()
            .find(|l| l.namespace().as_deref() == Some(NODE_LEASES) && l.name_any() == name);
        let mut ready = ready_condition(&node).map_or("Unknown".to_string(), |c| c.status.clone());
        let silent = seen.silent(&name, last_heartbeat(&node, lease.map(|l| l.as_ref())));
        if silent && ready != "Unknown" {
            // The kubelet is gone: every condition becomes Unknown.
            let conditions: Vec<_> = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|mut c| {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(Time(now));
                    c
                })
                .collect();
            let patch = json!({"status": {"conditions": conditions}});
            if node_api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .is_err()
            {
                continue;
            }
            ready = "Unknown".into();
            events::record(
                client,
                &source,
                node.as_ref(),
                "Normal",
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
            mark_pods_not_ready(client, &pods, &name, now).await;
        }

        // Taints follow readiness; others are kept as they are.
        let current: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ours = |t: &Taint| t.key == NOT_READY || t.key == UNREACHABLE;
        let mut wanted = readiness_taints(&ready, now);
        for w in wanted.iter_mut() {
            if let Some(existing) = current
                .iter()
                .find(|c| c.key == w.key && c.effect == w.effect)
            {
                w.time_added = existing.time_added.clone();
            }
        }
        let kept: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
        let had: Vec<Taint> = current.iter().filter(|t| ours(t)).cloned().collect();
        if had != wanted {
            let mut taints = kept;
            taints.extend(wanted.iter().cloned());
            let taints = if taints.is_empty() {
                json!(null)
            } else {
                json!(taints)
            };
            let _ = node_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"taints": taints}})),
                )
                .await;
        }

        // Eviction of pods that do not tolerate the NoExecute taints.
        let no_execute: Vec<Taint> = current
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .cloned()
            .collect();
        if no_execute.is_empty() {
            continue;
        }
        for pod in pods.iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                && p.metadata.deletion_timestamp.is_none()
        }) {
            if eviction_due(pod, &no_execute, now) == Some(Duration::ZERO) {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                if api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                    .is_ok()
                {
                    events::record(
                        client,
                        &Source {
                            component: "taint-eviction-controller".into(),
                            host: None,
                        },
                        pod.as_ref(),
                        "Normal",
                        "TaintManagerEviction",
                        &format!(
                            "Marking for deletion Pod {}/{}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        ),
                    )
                    .await;
                }
            }
        }
    }
}

/// Pods on an unreachable node stop being Ready (so Services drop them).
async fn mark_pods_not_ready(client: &kube::Client, pods: &[Arc<Pod>], node: &str, now: Timestamp) {
    for pod in pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| crate::api::values::pods::is_ready(p))
    {
        let conditions: Vec<_> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c.type_ == "Ready" {
                    c.status = "False".into();
                    c.last_transition_time = Some(Time(now));
                }
                c
            })
            .collect();
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_judged_by_when_it_was_seen_to_change_not_by_its_age() {
        let mut seen = Heartbeats::default();
        // Found at start with a renewal an hour old (kelp was stopped, or
        // the store lost coalesced renewals): the grace period starts now.
        let old: Timestamp = "2026-12-05T09:00:00Z".parse().unwrap();
        assert!(!seen.silent("n1", Some(old)));
        // As if seen that long ago: silent, until the heartbeat moves.
        seen.0.get_mut("n1").unwrap().1 -= GRACE + Duration::from_secs(1);
        assert!(seen.silent("n1", Some(old)));
        let renewed: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        assert!(!seen.silent("n1", Some(renewed)));
        seen.keep(&[]);
        assert!(seen.0.is_empty());
    }

    #[test]
    fn readiness_decides_the_taints() {
        let now = Timestamp::now();
        assert!(readiness_taints("True", now).is_empty());
        let t = readiness_taints("Unknown", now);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.key == UNREACHABLE));
        assert!(
            t.iter()
                .any(|t| t.effect == "NoExecute" && t.time_added.is_some())
        );
        assert_eq!(readiness_taints("False", now)[0].key, NOT_READY);
    }

    #[test]
    fn pods_leave_unless_they_tolerate_and_then_after_their_seconds() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let taints = readiness_taints("Unknown", Timestamp::from_second(999_900).unwrap());
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
                .unwrap()
        };
        assert_eq!(
            eviction_due(&pod(json!([])), &taints, now),
            Some(Duration::ZERO)
        );
        let for_300 = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_due(&for_300, &taints, now),
            Some(Duration::from_secs(200))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_due(&forever, &taints, now), None);
    }
}
