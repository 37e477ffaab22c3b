//! Pod garbage collection, every 20 s as upstream: pods bound to a node
//! that no longer exists (seen twice, so a node being re-registered is not
//! mistaken for a gone one) and terminating pods that were never scheduled
//! are deleted at once; finished pods beyond the threshold (upstream's
//! `--terminated-pod-gc-threshold`, 12,500) go oldest first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};

use super::Context;
use crate::api::values::pods;

const PERIOD: Duration = Duration::from_secs(20);
/// Finished pods kept at most.
pub const TERMINATED_THRESHOLD: usize = 12_500;

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let mut suspects: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        pass(&context, &mut suspects).await;
    }
}

/// What a pass deletes: (orphans now confirmed, new suspects, the rest).
pub fn select<'a>(
    all: &'a [Arc<Pod>],
    nodes: &HashSet<String>,
    suspects: &HashSet<String>,
    threshold: usize,
) -> (Vec<&'a Pod>, HashSet<String>) {
    let mut doomed = Vec::new();
    let mut next_suspects = HashSet::new();
    for pod in all.iter().map(Arc::as_ref) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        if node.is_empty() {
            if pod.metadata.deletion_timestamp.is_some() {
                doomed.push(pod);
            }
        } else if !nodes.contains(node) {
            if suspects.contains(&uid) {
                doomed.push(pod);
            } else {
                next_suspects.insert(uid);
            }
        }
    }
    let mut finished: Vec<&Pod> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|p| {
            pods::is_terminal(p) && !doomed.iter().any(|d| d.metadata.uid == p.metadata.uid)
        })
        .collect();
    if finished.len() > threshold {
        finished.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
        let excess = finished.len() - threshold;
        doomed.extend(finished.into_iter().take(excess));
    }
    (doomed, next_suspects)
}

/// One pass over the shared caches (none until both hold a full list: a
/// missing node list would make every pod an orphan).
async fn pass(context: &Context, suspects: &mut HashSet<String>) {
    let nodes = context.informers.informer::<Node>();
    let pods = context.informers.informer::<Pod>();
    if !nodes.filled() || !pods.filled() {
        return;
    }
    let nodes: HashSet<String> = nodes.store.state().iter().map(|n| n.name_any()).collect();
    let all = pods.store.state();
    let (doomed, next) = select(&all, &nodes, suspects, TERMINATED_THRESHOLD);
    *suspects = next;
    for pod in doomed {
        let api: Api<Pod> =
            Api::namespaced(context.client.clone(), &pod.namespace().unwrap_or_default());
        if let Err(e) = api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
        {
            tracing::debug!(err = %e, pod = %pod.name_any(), "pod garbage collection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, node: &str, phase: &str, deleting: bool) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": uid, "uid": uid, "creationTimestamp": format!("2026-01-01T00:00:0{}Z", uid.len())},
                           "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn orphans_go_on_the_second_sighting_and_finished_pods_beyond_the_threshold() {
        let nodes: HashSet<String> = ["n1".to_string()].into();
        let all = vec![
            pod("a", "n1", "Running", false),
            pod("bb", "gone", "Running", false),
            pod("ccc", "", "Pending", true),
            pod("dddd", "n1", "Succeeded", false),
            pod("eeeee", "n1", "Failed", false),
        ];
        let (doomed, suspects) = select(&all, &nodes, &HashSet::new(), 1);
        let names: Vec<String> = doomed.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["ccc", "dddd"]);
        assert_eq!(suspects, ["bb".to_string()].into());
        let (doomed, _) = select(&all, &nodes, &suspects, 10);
        let names: Vec<String> = doomed.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["bb", "ccc"]);
    }
}
