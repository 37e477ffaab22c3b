//! One `PodWorker` per pod bound to this node: makes the runtime match the
//! pod (sandbox, init containers in order, containers, restarts with
//! back-off), reports status when it changes, and tears everything down
//! when the pod goes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use super::container::{self, CONTAINER_HASH, CONTAINER_NAME, NodeSettings, POD_UID};
use super::cri::{Cri, api};
use super::probes::{ProbeResults, Prober};
use super::status::{self, ContainerRun, ContainerView, RunState, SandboxView};
use super::volumes;
use crate::telemetry::events;

/// What every worker shares.
pub struct NodeContext {
    /// In-process API client acting as this node.
    pub client: kube::Client,
    /// The runtime.
    pub cri: Cri,
    /// DNS, addresses, allocatable.
    pub settings: NodeSettings,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The Node's name.
    pub node_name: String,
    /// Probe counts (`/metrics/probes`).
    pub probe_metrics: Arc<super::probes::ProbeMetrics>,
    /// Pod start durations (`/metrics`).
    pub metrics: Arc<super::metrics::KubeletMetrics>,
    /// The claims' volumes each pod mounts (for their stats).
    pub claim_volumes: volumes::ClaimVolumes,
}

/// Back-off before restarting a failed container: 10 s doubling to 5 min.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off forgotten.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Resync period when nothing else wakes the worker.
const RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
}

/// Reconciles one pod.
pub struct PodWorker {
    ctx: Arc<NodeContext>,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    backoff: HashMap<String, Backoff>,
    /// Per container: no pull before the instant; the current delay.
    pull_backoff: HashMap<String, (std::time::Instant, Duration)>,
    /// After a failed sandbox creation: no new attempt before the instant.
    sandbox_backoff: Option<(std::time::Instant, Duration)>,
    waiting: HashMap<String, (String, String)>,
    volumes: Option<HashMap<String, PathBuf>>,
    /// The pod as our last status write left it: the informer may deliver
    /// that write after the next sync, and computing from its older status
    /// would move lastTransitionTime (and a StatefulSet's ordering with it).
    last_written: Option<Pod>,
    prober: Prober,
    probe_results: ProbeResults,
    pod_ip: String,
    /// When the pod's projected service-account tokens are next refreshed.
    tokens_due: Option<std::time::Instant>,
    /// When this kubelet first saw the pod, until it runs (None for a pod
    /// already running when seen: a restarted kubelet measures nothing).
    pending_since: Option<std::time::Instant>,
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn run_of(s: &api::ContainerStatus) -> ContainerRun {
    ContainerRun {
        id: s.id.clone(),
        attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
        state: match api::ContainerState::try_from(s.state) {
            Ok(api::ContainerState::ContainerCreated) => RunState::Created,
            Ok(api::ContainerState::ContainerRunning) => RunState::Running,
            Ok(api::ContainerState::ContainerExited) => RunState::Exited,
            _ => RunState::Unknown,
        },
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason.clone(),
        message: s.message.clone(),
        image_ref: s.image_ref.clone(),
    }
}

impl PodWorker {
    /// A worker fed pod updates through `pod_rx` (None: the pod is gone) and
    /// woken by `wake` when its containers change.
    pub fn new(
        ctx: Arc<NodeContext>,
        pod_rx: watch::Receiver<Option<Arc<Pod>>>,
        wake: Arc<Notify>,
    ) -> Self {
        let probe_results = ProbeResults::default();
        let running = pod_rx
            .borrow()
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase != "Pending");
        let pending_since = (!running).then(std::time::Instant::now);
        PodWorker {
            prober: Prober::new(
                ctx.cri.clone(),
                probe_results.clone(),
                wake.clone(),
                ctx.probe_metrics.clone(),
            ),
            ctx,
            pod_rx,
            wake,
            backoff: HashMap::new(),
            pull_backoff: HashMap::new(),
            sandbox_backoff: None,
            waiting: HashMap::new(),
            volumes: None,
            last_written: None,
            probe_results,
            pod_ip: String::new(),
            tokens_due: None,
            pending_since,
        }
    }

    /// Runs until the pod is gone and torn down.
    pub async fn run(mut self) {
        let mut last: Option<Arc<Pod>> = None;
        loop {
            let pod = self.pod_rx.borrow_and_update().clone();
            match pod {
                None => {
                    if let Some(pod) = &last {
                        self.terminate(pod, 2).await;
                    }
                    return;
                }
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                    self.terminate(&pod, grace).await;
                    self.finish_deletion(&pod).await;
                    // Wait for the API to confirm (or the manager to drop us).
                    if self.pod_rx.changed().await.is_err() {
                        return;
                    }
                    last = Some(pod);
                    continue;
                }
                Some(pod) => {
                    let span = sync_span(&pod);
                    let next = match self.sync(&pod).instrument(span).await {
                        Ok(next) => next,
                        Err(e) => {
                            tracing::warn!(pod = %pod_ref(&pod), err = %e, "pod sync failed");
                            Duration::from_secs(2)
                        }
                    };
                    last = Some(pod);
                    tokio::select! {
                        changed = self.pod_rx.changed() => {
                            if changed.is_err() {
                                if let Some(pod) = &last {
                                    self.terminate(pod, 2).await;
                                }
                                return;
                            }
                        }
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(next) => {}
                    }
                }
            }
        }
    }

    fn uid(pod: &Pod) -> String {
        pod.metadata.uid.clone().unwrap_or_default()
    }

    async fn sandboxes(&self, uid: &str) -> Result<Vec<api::PodSandbox>, tonic::Status> {
        let mut runtime = self.ctx.cri.runtime.clone();
        let filter = api::PodSandboxFilter {
            label_selector: HashMap::from([(POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        };
        let mut items = runtime
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner()
            .items;
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(items)
    }

    async fn container_views(
        &self,
        sandbox_id: &str,
    ) -> Result<HashMap<String, Vec<(ContainerRun, String)>>, tonic::Status> {
        let mut runtime = self.ctx.cri.runtime.clone();
        let filter = api::ContainerFilter {
            pod_sandbox_id: sandbox_id.to_string(),
            ..Default::default()
        };
        let list = runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner()
            .containers;
        let mut by_name: HashMap<String, Vec<(ContainerRun, String)>> = HashMap::new();
        for c in list {
            let status = match runtime
                .container_status(api::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(s) => s.into_inner().status.unwrap_or_default(),
                Err(_) => continue,
            };
            let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
            let hash = c
                .annotations
                .get(CONTAINER_HASH)
                .cloned()
                .unwrap_or_default();
            by_name
                .entry(name)
                .or_default()
                .push((run_of(&status), hash));
        }
        for runs in by_name.values_mut() {
            runs.sort_by_key(|(r, _)| std::cmp::Reverse(r.attempt));
        }
        Ok(by_name)
    }

    /// One reconciliation; returns when to look again at the latest.
    async fn sync(&mut self, pod: &Pod) -> anyhow::Result<Duration> {
        let uid = Self::uid(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let terminal = crate::api::pods::is_terminal(pod);
        let sandboxes = self.sandboxes(&uid).await?;
        let ready = sandboxes
            .iter()
            .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            .cloned();
        if terminal {
            // Finished pods keep their containers (for logs) but not their sandbox.
            if let Some(s) = &ready {
                self.stop_sandbox(&s.id).await;
            }
            return Ok(RESYNC * 6);
        }
        if self.volumes.is_some()
            && let Some(due) = self.tokens_due
            && std::time::Instant::now() >= due
        {
            // Projected tokens expire: fresh ones before they do (upstream's
            // kubelet token manager).
            self.tokens_due = match volumes::refresh_tokens(
                &self.ctx.client,
                pod,
                &self.ctx.data_dir,
            )
            .await
            {
                Ok(()) => volumes::token_refresh_after(pod).map(|d| std::time::Instant::now() + d),
                Err(e) => {
                    tracing::warn!(err = %e, pod = %pod.metadata.name.as_deref().unwrap_or_default(), "refreshing projected tokens; retrying");
                    Some(std::time::Instant::now() + Duration::from_secs(10))
                }
            };
        }
        if self.volumes.is_none() {
            let node = self.ctx.settings.clone();
            let field = |path: &str| {
                if let Some(resource) = path.strip_prefix("resource:") {
                    return spec
                        .containers
                        .first()
                        .and_then(|c| container::resource_value(c, resource, None, &node));
                }
                container::field_value(pod, "", &node, path)
            };
            match volumes::prepare(&self.ctx.client, pod, &self.ctx.data_dir, &field).await {
                Ok(v) => {
                    self.ctx.claim_volumes.record(pod, &v);
                    self.volumes = Some(v);
                    self.tokens_due =
                        volumes::token_refresh_after(pod).map(|d| std::time::Instant::now() + d);
                }
                Err(e) => {
                    let message = format!("MountVolume.SetUp failed: {e}");
                    for c in spec
                        .containers
                        .iter()
                        .chain(spec.init_containers.iter().flatten())
                    {
                        self.waiting.insert(
                            c.name.clone(),
                            ("ContainerCreating".into(), message.clone()),
                        );
                    }
                    self.event(pod, "Warning", "FailedMount", &message).await;
                    self.report(pod, None, &HashMap::new()).await;
                    return Ok(Duration::from_secs(5));
                }
            }
        }
        let sandbox = match ready {
            Some(s) => s,
            None => {
                if let Some((until, _)) = self.sandbox_backoff
                    && let Some(left) = until.checked_duration_since(std::time::Instant::now())
                {
                    return Ok(left);
                }
                // A new sandbox: the old ones (and their containers) go.
                for old in &sandboxes {
                    self.remove_sandbox(&old.id).await;
                }
                let attempt = sandboxes
                    .iter()
                    .filter_map(|s| s.metadata.as_ref())
                    .map(|m| m.attempt + 1)
                    .max()
                    .unwrap_or(0);
                let config = container::sandbox_config(pod, attempt, &self.ctx.settings);
                let _ = std::fs::create_dir_all(&config.log_directory);
                let mut runtime = self.ctx.cri.runtime.clone();
                match runtime
                    .run_pod_sandbox(api::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                {
                    Ok(_) => self.sandbox_backoff = None,
                    Err(e) => {
                        let delay = self
                            .sandbox_backoff
                            .map_or(Duration::from_secs(2), |(_, d)| {
                                (d * 2).min(Duration::from_secs(60))
                            });
                        self.sandbox_backoff = Some((std::time::Instant::now() + delay, delay));
                        let message = format!("Failed to create pod sandbox: {}", e.message());
                        self.event(pod, "Warning", "FailedCreatePodSandBox", &message)
                            .await;
                        for c in &spec.containers {
                            self.waiting.insert(
                                c.name.clone(),
                                ("ContainerCreating".into(), message.clone()),
                            );
                        }
                        self.report(pod, None, &HashMap::new()).await;
                        return Ok(delay);
                    }
                }
                self.waiting.clear();
                match self
                    .sandboxes(&uid)
                    .await?
                    .into_iter()
                    .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
                {
                    Some(s) => s,
                    None => return Ok(Duration::from_secs(1)),
                }
            }
        };
        let sandbox_view = self.sandbox_view(&sandbox.id).await;
        self.pod_ip = sandbox_view.ip.clone().unwrap_or_default();
        let mut runs = self.container_views(&sandbox.id).await?;
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut next = RESYNC;

        // Init containers, one at a time, in order.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let latest = runs
                .get(&c.name)
                .and_then(|r| r.first())
                .map(|(r, _)| r.clone());
            match latest {
                None => {
                    self.start(pod, &sandbox.id, c, 0).await;
                    initialized = false;
                    break;
                }
                Some(r) if r.state == RunState::Exited && r.exit_code == 0 => continue,
                Some(r) if r.state == RunState::Exited => {
                    initialized = false;
                    if restart_policy != "Never" {
                        next = next.min(self.restart_after_backoff(pod, &sandbox.id, c, &r).await);
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                let latest = runs.get(&c.name).and_then(|r| r.first()).cloned();
                match latest {
                    None => self.start(pod, &sandbox.id, c, 0).await,
                    Some((r, hash)) if r.state == RunState::Running => {
                        let changed = hash != container::spec_hash(c);
                        let unhealthy = self.probe_results.liveness_failed(&r.id);
                        if changed || unhealthy {
                            let why = if changed {
                                format!(
                                    "Container {} definition changed, will be restarted",
                                    c.name
                                )
                            } else {
                                format!(
                                    "Container {} failed liveness probe, will be restarted",
                                    c.name
                                )
                            };
                            self.event(pod, "Normal", "Killing", &why).await;
                            let grace = spec.termination_grace_period_seconds.unwrap_or(30);
                            self.stop_container(pod, c, &r.id, grace).await;
                            self.probe_results.forget(&r.id);
                            next = Duration::from_millis(100);
                        } else {
                            let ip = self.probe_ip();
                            let labels = super::probes::PodRef {
                                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                                name: pod.metadata.name.clone().unwrap_or_default(),
                                uid: pod.metadata.uid.clone().unwrap_or_default(),
                                container: c.name.clone(),
                            };
                            self.prober.ensure(c, &r.id, &ip, labels);
                        }
                    }
                    Some((r, _)) if r.state == RunState::Exited || r.state == RunState::Unknown => {
                        self.prober.stop(&r.id);
                        let restart = match restart_policy.as_str() {
                            "Always" => true,
                            "OnFailure" => r.exit_code != 0,
                            _ => false,
                        };
                        if restart {
                            next =
                                next.min(self.restart_after_backoff(pod, &sandbox.id, c, &r).await);
                        }
                    }
                    Some(_) => {}
                }
            }
            // Ephemeral containers (`kubectl debug`) start once, never again.
            for c in status::ephemeral_containers(&spec) {
                if !runs.contains_key(&c.name) {
                    self.start(pod, &sandbox.id, &c, 0).await;
                }
            }
        }
        self.collect_garbage(&mut runs).await;
        let runs = self.container_views(&sandbox.id).await?;
        self.report(pod, Some(sandbox_view), &runs).await;
        Ok(next)
    }

    /// Where probes and hooks connect: the pod IP, or the node's with host networking.
    fn probe_ip(&self) -> String {
        if self.pod_ip.is_empty() {
            self.ctx.settings.node_ip.clone()
        } else {
            self.pod_ip.clone()
        }
    }

    async fn sandbox_view(&self, id: &str) -> SandboxView {
        let mut runtime = self.ctx.cri.runtime.clone();
        match runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
        {
            Ok(s) => {
                let s = s.into_inner().status.unwrap_or_default();
                SandboxView {
                    ready: s.state == api::PodSandboxState::SandboxReady as i32,
                    ip: s.network.map(|n| n.ip).filter(|ip| !ip.is_empty()),
                }
            }
            Err(_) => SandboxView::default(),
        }
    }

    /// Restarts an exited container unless it is backing off; returns when to look again.
    async fn restart_after_backoff(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        c: &Container,
        last: &ContainerRun,
    ) -> Duration {
        let ran = Duration::from_nanos((last.finished_at - last.started_at).max(0) as u64);
        if ran >= BACKOFF_RESET {
            self.backoff.remove(&c.name);
        }
        let since_exit = Duration::from_nanos((now_nanos() - last.finished_at).max(0) as u64);
        match self.backoff.get(&c.name).copied() {
            Some(b) if since_exit < b.delay => {
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}",
                    b.delay.as_secs(),
                    c.name,
                    pod_ref(pod)
                );
                if self.waiting.get(&c.name).map(|(r, _)| r.as_str()) != Some("CrashLoopBackOff") {
                    self.event(
                        pod,
                        "Warning",
                        "BackOff",
                        "Back-off restarting failed container",
                    )
                    .await;
                }
                self.waiting
                    .insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
                b.delay - since_exit
            }
            previous => {
                let delay = previous.map_or(BACKOFF_START, |b| (b.delay * 2).min(BACKOFF_MAX));
                self.backoff.insert(c.name.clone(), Backoff { delay });
                self.start(pod, sandbox, c, last.attempt + 1).await;
                RESYNC
            }
        }
    }

    /// Records an event about the pod from this node, without waiting for
    /// the write (events never hold up a pod).
    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let ctx = self.ctx.clone();
        let about = Pod {
            metadata: pod.metadata.clone(),
            ..Default::default()
        };
        let (kind, reason, message) = (kind.to_string(), reason.to_string(), message.to_string());
        tokio::spawn(async move {
            let source = events::Source {
                component: "kubelet".into(),
                host: Some(ctx.node_name.clone()),
            };
            events::record(&ctx.client, &source, &about, &kind, &reason, &message).await;
        });
    }

    /// A container could not be created or started: a Failed event, and the
    /// container waits with `reason`.
    async fn fail(&mut self, pod: &Pod, container: &str, reason: &str, message: String) {
        self.event(pod, "Warning", "Failed", &format!("Error: {message}"))
            .await;
        self.waiting
            .insert(container.to_string(), (reason.to_string(), message));
    }

    /// Makes sure the image is there (by pull policy), then creates and starts the container.
    async fn start(&mut self, pod: &Pod, sandbox: &str, c: &Container, attempt: u32) {
        let image = c.image.clone().unwrap_or_default();
        if let Err((reason, message)) = self.ensure_image(pod, c, &image).await {
            self.waiting.insert(c.name.clone(), (reason, message));
            return;
        }
        let config = match self.container_config(pod, c, attempt, &image).await {
            Ok(config) => config,
            Err(message) => {
                self.fail(pod, &c.name, "CreateContainerConfigError", message)
                    .await;
                return;
            }
        };
        let sandbox_config = container::sandbox_config(pod, 0, &self.ctx.settings);
        let mut runtime = self.ctx.cri.runtime.clone();
        let created = runtime
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.fail(
                    pod,
                    &c.name,
                    "CreateContainerError",
                    e.message().to_string(),
                )
                .await;
                return;
            }
        };
        self.event(
            pod,
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        )
        .await;
        if let Err(e) = runtime
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            self.fail(pod, &c.name, "RunContainerError", e.message().to_string())
                .await;
            return;
        }
        self.waiting.remove(&c.name);
        self.event(
            pod,
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        )
        .await;
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            self.prober
                .run_hook(&id, &hook, Duration::from_secs(30), &self.probe_ip())
                .await;
        }
    }

    async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        image: &str,
    ) -> Result<(), (String, String)> {
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into());
        let mut images = self.ctx.cri.images.clone();
        let spec = api::ImageSpec {
            image: image.into(),
            ..Default::default()
        };
        let present = images
            .image_status(api::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image.is_some())
            .unwrap_or(false);
        if present && policy != "Always" {
            return Ok(());
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            return Err(("ErrImageNeverPull".into(), message));
        }
        if let Some((until, _)) = self.pull_backoff.get(&c.name)
            && std::time::Instant::now() < *until
        {
            return Err((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{image}\""),
            ));
        }
        self.event(
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
        )
        .await;
        let started = std::time::Instant::now();
        match images
            .pull_image(api::PullImageRequest {
                image: Some(spec),
                auth: None,
                sandbox_config: None,
            })
            .await
        {
            Ok(_) => {
                self.pull_backoff.remove(&c.name);
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:?}",
                        started.elapsed()
                    ),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                let delay = self
                    .pull_backoff
                    .get(&c.name)
                    .map_or(BACKOFF_START, |(_, d)| (*d * 2).min(BACKOFF_MAX));
                self.pull_backoff
                    .insert(c.name.clone(), (std::time::Instant::now() + delay, delay));
                let message = format!("Failed to pull image \"{image}\": {}", e.message());
                self.event(pod, "Warning", "Failed", &message).await;
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    async fn container_config(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        image: &str,
    ) -> Result<api::ContainerConfig, String> {
        let env =
            container::environment(&self.ctx.client, pod, c, &self.pod_ip, &self.ctx.settings)
                .await?;
        let vars: HashMap<String, String> = env
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        let expand = |items: &Option<Vec<String>>| -> Vec<String> {
            items
                .iter()
                .flatten()
                .map(|s| container::expand(s, &vars))
                .collect()
        };
        let mounts = container::mounts(
            c,
            self.volumes.as_ref().unwrap_or(&HashMap::new()),
            &super::volumes::read_only(pod),
        )?;
        let labels = HashMap::from([
            (CONTAINER_NAME.to_string(), c.name.clone()),
            (
                container::POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                container::POD_NAMESPACE.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (POD_UID.to_string(), Self::uid(pod)),
        ]);
        let annotations = HashMap::from([
            (CONTAINER_HASH.to_string(), container::spec_hash(c)),
            (
                "io.kubernetes.container.restartCount".to_string(),
                attempt.to_string(),
            ),
        ]);
        let _ = std::fs::create_dir_all(container::log_directory(pod).join(&c.name));
        Ok(api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: expand(&c.command),
            args: expand(&c.args),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: env,
            mounts,
            labels,
            annotations,
            log_path: format!("{}/{attempt}.log", c.name),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(container::linux_resources(c)),
                security_context: Some(container::security(pod, c)),
            }),
            ..Default::default()
        })
    }

    /// Runs the preStop hook, then stops the container within `grace` seconds.
    async fn stop_container(&self, pod: &Pod, c: &Container, id: &str, grace: i64) {
        let started = std::time::Instant::now();
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) {
            self.prober
                .run_hook(
                    id,
                    &hook,
                    Duration::from_secs(grace.max(1) as u64),
                    &self.probe_ip(),
                )
                .await;
        }
        let left = (grace - started.elapsed().as_secs() as i64).max(2);
        let mut runtime = self.ctx.cri.runtime.clone();
        if let Err(e) = runtime
            .stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout: left,
            })
            .await
        {
            tracing::warn!(pod = %pod_ref(pod), container = %c.name, err = %e.message(), "stopping container");
        }
    }

    async fn stop_sandbox(&self, id: &str) {
        let mut runtime = self.ctx.cri.runtime.clone();
        let _ = runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
    }

    async fn remove_sandbox(&self, id: &str) {
        self.stop_sandbox(id).await;
        let mut runtime = self.ctx.cri.runtime.clone();
        let _ = runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
    }

    /// Keeps the latest two attempts of each container (the current one and
    /// the one `kubectl logs --previous` reads).
    async fn collect_garbage(&self, runs: &mut HashMap<String, Vec<(ContainerRun, String)>>) {
        let mut runtime = self.ctx.cri.runtime.clone();
        for list in runs.values_mut() {
            while list.len() > 2 {
                let (old, _) = list.pop().expect("len > 2");
                let _ = runtime
                    .remove_container(api::RemoveContainerRequest {
                        container_id: old.id,
                    })
                    .await;
            }
        }
    }

    /// Computes the status and writes it when it changed.
    async fn report(
        &mut self,
        pod: &Pod,
        sandbox: Option<SandboxView>,
        runs: &HashMap<String, Vec<(ContainerRun, String)>>,
    ) {
        let spec = pod.spec.clone().unwrap_or_default();
        let ephemeral = status::ephemeral_containers(&spec);
        let mut views = HashMap::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .chain(&ephemeral)
        {
            let list: Vec<ContainerRun> = runs
                .get(&c.name)
                .map(|l| l.iter().map(|(r, _)| r.clone()).collect())
                .unwrap_or_default();
            let latest = list.first();
            let running_id = latest
                .filter(|r| r.state == RunState::Running)
                .map(|r| r.id.clone());
            let waiting = match (self.waiting.get(&c.name), latest) {
                (Some(w), _) => Some(w.clone()),
                (None, Some(r)) if r.state == RunState::Created => {
                    Some(("ContainerCreating".to_string(), String::new()))
                }
                _ => None,
            };
            let (ready, started) = match &running_id {
                Some(id) => {
                    let started = self.probe_results.started(id, c.startup_probe.is_some());
                    (
                        started && self.probe_results.ready(id, c.readiness_probe.is_some()),
                        started,
                    )
                }
                None => (false, false),
            };
            views.insert(
                c.name.clone(),
                ContainerView {
                    runs: list,
                    waiting,
                    ready,
                    started,
                },
            );
        }
        let revision = |p: &Pod| {
            p.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let basis = match &self.last_written {
            Some(written) if revision(written) > revision(pod) => {
                let mut newer = pod.clone();
                newer.status = written.status.clone();
                std::borrow::Cow::Owned(newer)
            }
            _ => std::borrow::Cow::Borrowed(pod),
        };
        let pod = basis.as_ref();
        let now = crate::api::object::now();
        let computed = status::pod_status(&status::Observed {
            pod,
            sandbox,
            containers: &views,
            host_ip: &self.ctx.settings.node_ip,
            now: &now,
        });
        if computed["phase"] == "Running"
            && let Some(since) = self.pending_since.take()
        {
            self.ctx.metrics.pod_started(since.elapsed());
        }
        let current = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        if status::unchanged(&computed, &current) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"status": computed});
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(written) => self.last_written = Some(written),
            Err(e) => tracing::debug!(pod = %pod_ref(pod), err = %e, "writing pod status"),
        }
    }

    /// Stops every container (preStop, then SIGTERM, SIGKILL after the grace
    /// period), the sandbox, and removes the pod's volumes.
    async fn terminate(&mut self, pod: &Pod, grace: i64) {
        let uid = Self::uid(pod);
        self.prober.stop_all();
        let Ok(sandboxes) = self.sandboxes(&uid).await else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        for sandbox in &sandboxes {
            if let Ok(runs) = self.container_views(&sandbox.id).await {
                let stops = runs.iter().filter_map(|(name, list)| {
                    let (r, _) = list.first()?;
                    if r.state != RunState::Running {
                        return None;
                    }
                    let c = spec
                        .containers
                        .iter()
                        .chain(spec.init_containers.iter().flatten())
                        .find(|c| &c.name == name)?
                        .clone();
                    Some((c, r.id.clone()))
                });
                let stops: Vec<_> = stops.collect();
                if !stops.is_empty() {
                    self.event(
                        pod,
                        "Normal",
                        "Killing",
                        &format!(
                            "Stopping container {}",
                            stops
                                .iter()
                                .map(|(c, _)| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .await;
                }
                futures::future::join_all(
                    stops
                        .iter()
                        .map(|(c, id)| self.stop_container(pod, c, id, grace)),
                )
                .await;
            }
            self.remove_sandbox(&sandbox.id).await;
        }
        super::cgroup::remove_pod(&self.ctx.settings.cgroup_root, &uid);
        volumes::remove(&self.ctx.data_dir, &uid);
        self.ctx.claim_volumes.forget(&uid);
        let _ = std::fs::remove_dir_all(container::log_directory(pod));
    }

    /// The final DELETE once the pod's containers are gone.
    async fn finish_deletion(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let params = final_delete(pod);
        if let Err(e) = api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            tracing::debug!(pod = %pod_ref(pod), err = %e, "final pod delete");
        }
    }
}

/// `namespace/name` for logs.
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// With traces on, the `syncPod` span of one reconciliation (upstream's
/// kubelet span and attributes); the CRI calls it makes are its children.
fn sync_span(pod: &Pod) -> tracing::Span {
    use crate::telemetry::traces;
    if !traces::on() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: traces::TARGET,
        "syncPod",
        k8s.pod = pod.metadata.name.as_deref().unwrap_or(""),
        k8s.namespace = pod.metadata.namespace.as_deref().unwrap_or(""),
        k8s.pod.uid = pod.metadata.uid.as_deref().unwrap_or(""),
    )
}

/// The kubelet's final DELETE of a pod whose containers are gone: at once,
/// and only of this pod (not one made since under the same name).
pub fn final_delete(pod: &Pod) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    }
}
