//! The pod manager: watches the pods bound to this node and keeps one
//! [`PodWorker`] per pod; relists the runtime every second (upstream's PLEG)
//! to wake the workers whose containers changed; after a restart, adopts the
//! running pods and tears down sandboxes of pods that no longer exist.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, mpsc, watch};

use super::container::POD_UID;
use super::cri::api;
use super::volumes;
use super::worker::{NodeContext, PodWorker};

/// How often the runtime is relisted.
const RELIST: Duration = Duration::from_secs(1);

struct Handle {
    pod_tx: watch::Sender<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
}

/// Runs the pods of this node until the process ends.
pub async fn run(ctx: Arc<NodeContext>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher::watcher(api, config).boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut relist = tokio::time::interval(RELIST);
    let mut last_seen: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut synced_once = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(Event::Init) => listing = Some(HashSet::new()),
                    Ok(Event::InitApply(pod)) => {
                        if let Some(seen) = listing.as_mut() {
                            seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                        }
                        apply(&ctx, &mut workers, &done_tx, pod);
                    }
                    Ok(Event::InitDone) => {
                        let seen = listing.take().unwrap_or_default();
                        for (uid, handle) in &workers {
                            if !seen.contains(uid) {
                                let _ = handle.pod_tx.send(None);
                            }
                        }
                        if !synced_once {
                            synced_once = true;
                            remove_orphans(&ctx, &seen).await;
                        }
                    }
                    Ok(Event::Apply(pod)) => apply(&ctx, &mut workers, &done_tx, pod),
                    Ok(Event::Delete(pod)) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        if let Some(handle) = workers.get(&uid) {
                            let _ = handle.pod_tx.send(None);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(err = %e, "watching pods");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
            }
            _ = relist.tick() => {
                let now = snapshot(&ctx).await;
                for (uid, state) in &now {
                    if last_seen.get(uid) != Some(state)
                        && let Some(handle) = workers.get(uid)
                    {
                        handle.wake.notify_one();
                    }
                }
                last_seen = now;
            }
        }
    }
}

fn apply(
    ctx: &Arc<NodeContext>,
    workers: &mut HashMap<String, Handle>,
    done: &mpsc::UnboundedSender<String>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = Arc::new(pod);
    if let Some(handle) = workers.get(&uid) {
        let _ = handle.pod_tx.send(Some(pod));
        return;
    }
    let (pod_tx, pod_rx) = watch::channel(Some(pod));
    let wake = Arc::new(Notify::new());
    let worker = PodWorker::new(ctx.clone(), pod_rx, wake.clone());
    let done = done.clone();
    let id = uid.clone();
    tokio::spawn(async move {
        worker.run().await;
        let _ = done.send(id);
    });
    workers.insert(uid, Handle { pod_tx, wake });
}

/// Container ids and states per pod uid, from one runtime listing.
async fn snapshot(ctx: &NodeContext) -> HashMap<String, Vec<(String, i32)>> {
    let mut runtime = ctx.cri.runtime.clone();
    let mut out: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    if let Ok(list) = runtime
        .list_containers(api::ListContainersRequest { filter: None })
        .await
    {
        for c in list.into_inner().containers {
            if let Some(uid) = c.labels.get(POD_UID) {
                out.entry(uid.clone()).or_default().push((c.id, c.state));
            }
        }
    }
    if let Ok(list) = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
    {
        for s in list.into_inner().items {
            if let Some(uid) = s.labels.get(POD_UID) {
                out.entry(uid.clone())
                    .or_default()
                    .push((s.id, s.state + 100));
            }
        }
    }
    for states in out.values_mut() {
        states.sort();
    }
    out
}

/// Sandboxes of pods the API no longer has (deleted while kelp was down).
async fn remove_orphans(ctx: &NodeContext, known: &HashSet<String>) {
    let mut runtime = ctx.cri.runtime.clone();
    let Ok(list) = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for sandbox in list.into_inner().items {
        let Some(uid) = sandbox.labels.get(POD_UID) else {
            continue;
        };
        if known.contains(uid) {
            continue;
        }
        tracing::info!(uid = %uid, sandbox = %sandbox.id, "removing the sandbox of a pod that no longer exists");
        let _ = runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await;
        let _ = runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await;
        super::cgroup::remove_pod(&ctx.settings.cgroup_root, uid);
        volumes::remove(&ctx.data_dir, uid);
        ctx.claim_volumes.forget(uid);
        if let Some(meta) = &sandbox.metadata {
            let _ = std::fs::remove_dir_all(format!(
                "/var/log/pods/{}_{}_{}",
                meta.namespace, meta.name, meta.uid
            ));
        }
    }
}
