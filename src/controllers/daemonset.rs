//! DaemonSets: one pod from the template on every node it may run on
//! (node selector, required node affinity, tolerated taints), pinned there
//! by node affinity and tolerating the node conditions upstream's daemon
//! pods tolerate; pods on nodes that no longer qualify go; a new template
//! rolls out node by node within maxUnavailable (RollingUpdate) or when
//! pods are deleted (OnDelete); history in ControllerRevisions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::history::{self, REVISION_HASH};
use super::{Context, Error};
use crate::api::values::pods;
use crate::api::values::scheduling;
use crate::telemetry::events::{self, Source};

const COMPONENT: &str = "daemonset-controller";
/// The label carrying the DaemonSet generation a pod was made at.
const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Runs the controller: woken by its DaemonSets and by changes to the
/// pods they control (from the shared pod cache); any node change looks at
/// every DaemonSet again.
pub async fn run(context: Arc<Context>) {
    let node_changes = context.informers.informer::<Node>().changes().map(|_| ());
    if let Some(controller) = super::over_owned_pods::<DaemonSet>(&context).await {
        let controller = controller.reconcile_all_on(node_changes);
        super::drive(controller, context, reconcile).await;
    }
}

/// The tolerations upstream gives every daemon pod, so that node trouble
/// does not evict it and cordoned or pressured nodes still run it.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut keys = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        keys.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    keys.into_iter()
        .map(|(key, effect)| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        })
        .collect()
}

/// The daemon pod for `node`: the template, the daemon tolerations added,
/// and node affinity naming the node (the scheduler places it).
fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.as_ref();
    let mut pod = super::pod_from_template(
        spec.map(|s| &s.template),
        crate::runtime::controller_ref(ds),
        &ds.namespace().unwrap_or_default(),
    );
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    if let Some(pod_spec) = pod.spec.as_mut() {
        let host_network = pod_spec.host_network == Some(true);
        let tolerations = pod_spec.tolerations.get_or_insert_default();
        for t in daemon_tolerations(host_network) {
            if !tolerations.contains(&t) {
                tolerations.push(t);
            }
        }
        let affinity = pod_spec.affinity.get_or_insert_default();
        let node_affinity = affinity.node_affinity.get_or_insert_default();
        node_affinity.required_during_scheduling_ignored_during_execution =
            serde_json::from_value(json!({"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}]}]}))
            .ok();
    }
    pod
}

/// How many nodes may be without an available daemon pod during a rollout.
pub fn max_unavailable(ds: &DaemonSet, desired: i32) -> i32 {
    let value = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match value {
        IntOrString::Int(n) => n,
        IntOrString::String(p) => {
            let percent: i64 = p.trim_end_matches('%').parse().unwrap_or(0);
            ((percent * i64::from(desired) + 99) / 100) as i32
        }
    };
    n.max(1)
}

async fn reconcile(ds: Arc<DaemonSet>, context: Arc<Context>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let node_cache = context.informers.informer::<Node>();
    // Act only on full caches that show this set's own last creates and
    // deletes (the next change in them wakes the set; the requeue is a
    // fallback).
    let key = format!("{namespace}/{}", ds.name_any());
    let Some((cache, true)) = super::pod_cache(&context, &key).filter(|_| node_cache.filled())
    else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let spec = ds.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let revisions: Api<ControllerRevision> = Api::namespaced(context.client.clone(), &namespace);
    let owner = crate::runtime::controller_ref(ds.as_ref());
    let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
    let history = history::record(
        &revisions,
        &owner,
        &namespace,
        &spec.selector,
        &spec.template,
        collision_count,
        &context.informers,
    )
    .await?;
    let hash = history::hash_of(&history.current);
    let nodes = node_cache.store.state();
    let candidates = super::selected(&cache, &namespace, &spec.selector);
    let owned = super::claim_from(&pods_api, candidates, &owner).await;
    let source = Source {
        component: COMPONENT.into(),
        host: None,
    };
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &owned {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .or_else(|| target_node(pod))
            .unwrap_or_default();
        by_node.entry(node).or_default().push(pod);
    }
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count,
        ..Default::default()
    };
    let mut create = Vec::new();
    let mut delete: Vec<&Pod> = Vec::new();
    let mut outdated: Vec<&Pod> = Vec::new();
    let mut unavailable = 0;
    let (mut available_count, mut updated_count) = (0, 0);
    let mut requeue = None;
    for node in &nodes {
        let name = node.name_any();
        let probe = daemon_pod(&ds, &name, &hash);
        let eligible = scheduling::node_allows(&probe, node).is_ok();
        let pods = by_node.remove(&name).unwrap_or_default();
        let (failed, live): (Vec<&Pod>, Vec<&Pod>) = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .partition(|p| pods::is_terminal(p));
        // Failed daemon pods are replaced.
        delete.extend(failed);
        if !eligible {
            status.number_misscheduled += i32::from(!live.is_empty());
            delete.extend(live);
            continue;
        }
        status.desired_number_scheduled += 1;
        let Some(pod) = live.first() else {
            create.push(name);
            unavailable += 1;
            continue;
        };
        // One pod per node: extra ones go, the oldest stays.
        delete.extend(live.iter().skip(1));
        status.current_number_scheduled += 1;
        let ready = pods::is_ready(pod);
        let available = pods::is_available(pod, min_ready, now);
        status.number_ready += i32::from(ready);
        available_count += i32::from(available);
        if ready && !available {
            requeue = pods::available_in(pod, min_ready, now);
        }
        if !available {
            unavailable += 1;
        }
        if pod.labels().get(REVISION_HASH) == Some(&hash) {
            updated_count += 1;
        } else {
            outdated.push(pod);
        }
    }
    // Pods on nodes that are gone.
    delete.extend(
        by_node
            .into_values()
            .flatten()
            .filter(|p| p.metadata.deletion_timestamp.is_none()),
    );
    status.number_available = Some(available_count).filter(|n| *n > 0);
    status.updated_number_scheduled = Some(updated_count).filter(|n| *n > 0);
    status.number_unavailable =
        Some(status.desired_number_scheduled - available_count).filter(|n| *n > 0);

    if !on_delete {
        // Unavailable outdated pods first, then as many more as maxUnavailable allows.
        let mut budget = max_unavailable(&ds, status.desired_number_scheduled) - unavailable;
        outdated.sort_by_key(|p| pods::is_available(p, min_ready, now));
        for pod in outdated {
            if !pods::is_available(pod, min_ready, now) {
                delete.push(pod);
            } else if budget > 0 {
                budget -= 1;
                delete.push(pod);
            }
        }
    }
    for name in create {
        let pod = daemon_pod(&ds, &name, &hash);
        let created = pods_api.create(&PostParams::default(), &pod).await?;
        context.expectations.wrote(&key, &created, false);
        events::record(
            &context.client,
            &source,
            ds.as_ref(),
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {}", created.name_any()),
        )
        .await;
    }
    for pod in delete {
        if super::delete_owned(&context, &key, &pods_api, pod).await {
            events::record(
                &context.client,
                &source,
                ds.as_ref(),
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {}", pod.name_any()),
            )
            .await;
        }
    }
    let in_use: Vec<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(REVISION_HASH).cloned())
        .collect();
    history::trim(
        &revisions,
        &history,
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await;

    let api: Api<DaemonSet> = Api::namespaced(context.client.clone(), &namespace);
    let previous = ds.status.clone().unwrap_or_default();
    super::write_status(&api, &ds, &previous, &status).await?;
    Ok(requeue.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(100))
    }))
}

/// The node a daemon pod's affinity names, before the scheduler binds it.
fn target_node(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints, "unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn daemon_pods_go_where_selector_and_taints_allow_even_on_cordoned_nodes() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u1", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap();
        let pod = daemon_pod(&ds, "n1", "h1");
        assert_eq!(pod.labels()[REVISION_HASH], "h1");
        assert_eq!(pod.labels()[TEMPLATE_GENERATION], "2");
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        // Cordoned, but labelled: the daemon pod still goes.
        let edge = node("n1", json!({"role": "edge"}), json!([]));
        assert!(scheduling::node_allows(&pod, &edge).is_ok());
        let other = node("n1", json!({}), json!([]));
        assert!(scheduling::node_allows(&pod, &other).is_err());
        let tainted = node(
            "n1",
            json!({"role": "edge"}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        assert!(scheduling::node_allows(&pod, &tainted).is_err());
    }

    #[test]
    fn max_unavailable_rounds_up_and_is_at_least_one() {
        let ds = |v: serde_json::Value| -> DaemonSet {
            serde_json::from_value(json!({"spec": {"selector": {}, "template": {},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": v}}}}))
            .unwrap()
        };
        assert_eq!(max_unavailable(&ds(json!(2)), 10), 2);
        assert_eq!(max_unavailable(&ds(json!("25%")), 10), 3);
        assert_eq!(max_unavailable(&ds(json!(0)), 10), 1);
    }
}
