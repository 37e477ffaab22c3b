//! The scheduler: binds pending pods (`spec.schedulerName` default, no node
//! yet) to nodes through `pods/binding`. Nodes, pods and the storage
//! objects come from the process's shared caches (`runtime::Informers`); a
//! pass runs after any change and every few seconds, so unschedulable pods
//! are retried when nodes or pods change. The rules are in `fit.rs`.

pub mod fit;
pub mod metrics;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use self::metrics::{Outcome, SchedulerMetrics};
use crate::runtime::{Informers, Shutdown};
use crate::telemetry::{Metrics, events};

/// The scheduler's name in pods and events.
pub const NAME: &str = "default-scheduler";
/// Pods that did not fit are retried at least this often.
const RETRY: Duration = Duration::from_secs(5);

fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let node = spec.and_then(|s| s.node_name.as_deref()).unwrap_or("");
    let scheduler = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(NAME);
    node.is_empty()
        && scheduler == NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !crate::api::values::pods::is_terminal(pod)
}

/// Bindings written concurrently in one pass.
const BINDINGS_IN_FLIGHT: usize = 32;

/// The `default-scheduler` component, ready to run.
#[derive(Clone)]
pub struct DefaultScheduler {
    client: kube::Client,
    informers: Informers,
    metrics: SchedulerMetrics,
}

impl DefaultScheduler {
    /// The scheduler binding through `client`, reading the process's shared
    /// caches, its series registered in `metrics`.
    pub fn new(client: kube::Client, informers: Informers, metrics: &Metrics) -> Self {
        DefaultScheduler {
            client,
            informers,
            metrics: SchedulerMetrics::new(metrics),
        }
    }

    /// Its pod cache (which `/metrics/resources` reads).
    pub fn pods(&self) -> Store<Pod> {
        self.informers.informer::<Pod>().store
    }

    /// Schedules until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        shutdown
            .until(run(self.client, self.informers, self.metrics))
            .await
            .unwrap_or(Ok(()))
    }
}

/// Schedules until dropped.
async fn run(
    client: kube::Client,
    informers: Informers,
    metrics: SchedulerMetrics,
) -> anyhow::Result<()> {
    let (pods, pod_events) = informers.cache::<Pod>();
    let (nodes, node_events) = informers.cache::<Node>();
    let (claims, claim_events) = informers.cache::<PersistentVolumeClaim>();
    let (volumes, volume_events) = informers.cache::<PersistentVolume>();
    let (classes, class_events) = informers.cache::<StorageClass>();
    // The watches run on their own, keeping the caches current; any number
    // of changes during a pass make one more pass.
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    // Aborted with the scheduler.
    let mut watches = tokio::task::JoinSet::new();
    for events in [
        pod_events,
        node_events,
        claim_events,
        volume_events,
        class_events,
    ] {
        let changed = changed.clone();
        watches.spawn(events.for_each(move |_| {
            changed.notify_one();
            std::future::ready(())
        }));
    }
    // A pass before both caches are filled would find pods and no nodes.
    if !informers.informer::<Pod>().ready().await || !informers.informer::<Node>().ready().await {
        anyhow::bail!("the scheduler's pod and node caches ended before they filled");
    }
    let storage = Storage {
        claims,
        volumes,
        classes,
    };
    let mut scheduler = Scheduler {
        client,
        metrics,
        reported: HashMap::new(),
        assumed: HashMap::new(),
    };
    let mut retry = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            _ = changed.notified() => {
                // Let a burst of events settle into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = retry.tick() => {}
        }
        scheduler.pass(&pods, &nodes, &storage).await;
    }
}

/// The storage caches volume binding reads.
struct Storage {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

impl Storage {
    fn view(&self) -> volumes::StorageView {
        use kube::ResourceExt;
        volumes::StorageView {
            claims: self
                .claims
                .state()
                .iter()
                .map(|c| {
                    (
                        (c.namespace().unwrap_or_default(), c.name_any()),
                        (**c).clone(),
                    )
                })
                .collect(),
            volumes: self.volumes.state().iter().map(|v| (**v).clone()).collect(),
            classes: self
                .classes
                .state()
                .iter()
                .map(|c| (c.name_any(), (**c).clone()))
                .collect(),
        }
    }
}

struct Scheduler {
    client: kube::Client,
    metrics: SchedulerMetrics,
    /// The last unschedulable message reported per pod uid.
    reported: HashMap<String, String>,
    /// Pods bound in earlier passes whose binding the cache has not shown yet.
    assumed: HashMap<String, (String, Pod)>,
}

impl Scheduler {
    /// Places every pending pod it can, oldest first.
    async fn pass(&mut self, pods: &Store<Pod>, nodes: &Store<Node>, storage: &Storage) {
        // The claims' snapshot is taken for the first pending pod with
        // claims; a pass without one copies nothing.
        let no_claims = volumes::StorageView::default();
        let mut snapshot: Option<volumes::StorageView> = None;
        let node_cache = nodes;
        let all: Vec<std::sync::Arc<Pod>> = pods.state();
        let is_bound = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        };
        // Bookkeeping only when there is some: passes follow every pod change.
        if !self.assumed.is_empty() {
            let bound: HashSet<&str> = all
                .iter()
                .filter(|p| is_bound(p))
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            self.assumed.retain(|uid, _| !bound.contains(uid.as_str()));
        }
        let bound_count = all.iter().filter(|p| is_bound(p)).count();
        self.metrics
            .cache_size(node_cache.state().len(), bound_count, self.assumed.len());
        if !self.reported.is_empty() {
            let live: HashSet<&str> = all
                .iter()
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            self.reported.retain(|uid, _| live.contains(uid.as_str()));
        }
        let mut queue: Vec<&std::sync::Arc<Pod>> = all
            .iter()
            .filter(|p| pending(p))
            .filter(|p| {
                !self
                    .assumed
                    .contains_key(p.metadata.uid.as_deref().unwrap_or_default())
            })
            .collect();
        // Nothing to place: no copy of the nodes and their pods (passes
        // follow every pod change, most of them of bound pods).
        if queue.is_empty() {
            self.metrics.pending(0, 0);
            return;
        }
        let nodes: Vec<Node> = node_cache.state().iter().map(|n| (**n).clone()).collect();
        let mut by_node: HashMap<String, Vec<Pod>> = HashMap::new();
        for p in &all {
            if let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            {
                by_node.entry(node).or_default().push((**p).clone());
            }
        }
        for (node, pod) in self.assumed.values() {
            by_node.entry(node.clone()).or_default().push(pod.clone());
        }
        queue.sort_by_key(|p| {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            (
                std::cmp::Reverse(priority),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        let mut infos: Vec<fit::NodeInfo> = nodes
            .iter()
            .map(|n| fit::NodeInfo::new(n, &by_node))
            .collect();
        let mut decisions: Vec<(std::sync::Arc<Pod>, String, f64)> = Vec::new();
        let mut unschedulable = 0;
        for pod in queue {
            let started = std::time::Instant::now();
            let mut reasons = Vec::new();
            let wanted = fit::pod_requests(pod);
            let storage = match crate::api::values::pods::claims_of(pod).next() {
                Some(_) => &*snapshot.get_or_insert_with(|| storage.view()),
                None => &no_claims,
            };
            let pod_volumes = match storage.pod_volumes(pod) {
                Ok(v) => v,
                Err(reason) => {
                    unschedulable += 1;
                    self.metrics
                        .attempt(Outcome::Unschedulable, started.elapsed().as_secs_f64());
                    let reasons = vec![reason; nodes.len()];
                    self.unschedulable(pod, fit::unschedulable_message(nodes.len(), &reasons))
                        .await;
                    continue;
                }
            };
            // Highest score; then fewer pods; then the name, for a stable choice.
            let mut best: Option<((i64, i64), usize)> = None;
            let mut volume_bindings: HashMap<usize, Vec<volumes::Binding>> = HashMap::new();
            for (i, node) in nodes.iter().enumerate() {
                let fit = fit::fits(pod, wanted, node, &infos[i], &by_node, &nodes)
                    .and_then(|()| storage.check(&pod_volumes, node));
                match fit {
                    Ok(bindings) => {
                        volume_bindings.insert(i, bindings);
                        let key = (
                            fit::score(pod, wanted, node, &infos[i], &by_node),
                            -infos[i].pods,
                        );
                        let better = match best {
                            None => true,
                            Some((k, j)) => {
                                key > k || (key == k && node.metadata.name < nodes[j].metadata.name)
                            }
                        };
                        if better {
                            best = Some((key, i));
                        }
                    }
                    Err(reason) => reasons.push(reason),
                }
            }
            match best {
                Some((_, i)) if !volumes::StorageView::all_bound(&pod_volumes) => {
                    // Volumes first: the pod is bound once its claims are.
                    let bindings = volume_bindings.remove(&i).unwrap_or_default();
                    self.bind_volumes(bindings).await;
                }
                Some((_, i)) => {
                    // Assumed bound at once, so the next pods see it there;
                    // the bindings themselves are written together below.
                    let node_name = nodes[i].metadata.name.clone().unwrap_or_default();
                    infos[i].add(pod, wanted);
                    by_node
                        .entry(node_name.clone())
                        .or_default()
                        .push((**pod).clone());
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    self.assumed
                        .insert(uid, (node_name.clone(), (**pod).clone()));
                    decisions.push((pod.clone(), node_name, started.elapsed().as_secs_f64()));
                }
                None => {
                    unschedulable += 1;
                    self.metrics
                        .attempt(Outcome::Unschedulable, started.elapsed().as_secs_f64());
                    self.unschedulable(pod, fit::unschedulable_message(nodes.len(), &reasons))
                        .await
                }
            }
        }
        // Bindings are independent writes: many in flight at once.
        let this = &*self;
        let failed: Vec<String> = futures::stream::iter(decisions)
            .map(|(pod, node, deciding)| async move {
                let started = std::time::Instant::now();
                let ok = this.bind(&pod, &node).await;
                let outcome = if ok {
                    Outcome::Scheduled
                } else {
                    Outcome::Error
                };
                this.metrics
                    .attempt(outcome, deciding + started.elapsed().as_secs_f64());
                (!ok).then(|| pod.metadata.uid.clone().unwrap_or_default())
            })
            .buffer_unordered(BINDINGS_IN_FLIGHT)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        self.metrics.pending(failed.len(), unschedulable);
        for uid in failed {
            self.assumed.remove(&uid);
        }
    }

    /// Writes what the chosen node needs of the pod's claims (upstream's
    /// PreBind): volumes' claimRefs, then the claims' selected node.
    async fn bind_volumes(&self, bindings: Vec<volumes::Binding>) {
        use kube::ResourceExt;
        for binding in bindings {
            let result = match binding {
                volumes::Binding::Volume { volume } => {
                    Api::<PersistentVolume>::all(self.client.clone())
                        .replace(&volume.name_any(), &PostParams::default(), &volume)
                        .await
                        .map(|_| ())
                }
                volumes::Binding::Provision { claim } => Api::<PersistentVolumeClaim>::namespaced(
                    self.client.clone(),
                    &claim.namespace().unwrap_or_default(),
                )
                .replace(&claim.name_any(), &PostParams::default(), &claim)
                .await
                .map(|_| ()),
            };
            if let Err(e) = result {
                tracing::debug!(err = %e, "binding volumes");
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> bool {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let result: Result<serde_json::Value, _> = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                let message = format!("Successfully assigned {namespace}/{name} to {node}");
                let (client, pod) = (self.client.clone(), pod.clone());
                tokio::spawn(async move {
                    let source = events::Source {
                        component: NAME.into(),
                        host: None,
                    };
                    events::record(&client, &source, &pod, "Normal", "Scheduled", &message).await;
                });
                true
            }
            Err(e) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), err = %e, "binding failed");
                false
            }
        }
    }

    /// PodScheduled=False with upstream's message, and a FailedScheduling
    /// event when the message changes.
    async fn unschedulable(&mut self, pod: &Pod, message: String) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.reported.get(&uid) == Some(&message) {
            return;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let now = crate::api::values::meta::now();
        let mut conditions: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "PodScheduled")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": message, "lastProbeTime": null, "lastTransitionTime": now}));
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %format!("{namespace}/{name}"), err = %e, "reporting unschedulable");
            return;
        }
        self.event(pod, "Warning", "FailedScheduling", &message)
            .await;
        self.reported.insert(uid, message);
    }

    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let source = events::Source {
            component: NAME.into(),
            host: None,
        };
        events::record(&self.client, &source, pod, kind, reason, message).await;
    }
}
