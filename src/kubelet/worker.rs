//! One `PodWorker` per pod bound to this node: makes the runtime match the
//! pod, reports status when it changes, and tears everything down when the
//! pod goes. Each sync asks the planner (`plan.rs`, pure) what to do about
//! the sandbox and the containers, and carries it out over the runtime
//! trait (`pod_runtime.rs`): pulls, hooks, events and waiting reasons.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use super::container::{self, CONTAINER_HASH, CONTAINER_NAME, NodeSettings, POD_UID};
use super::cri::{Cri, api};
use super::plan::{self, Action, KillReason, Runs, SandboxStep};
use super::pod_runtime::PodRuntime;
use super::probes::{ProbeResults, Prober};
use super::status::{self, ContainerRun, ContainerView, RunState, SandboxView};
use super::volumes;
use crate::runtime::Backoff;
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

/// Image pulls that failed wait 10 s, doubling to 5 min (upstream's).
const PULL_BACKOFF: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(300));
/// Sandbox creations that failed wait 2 s, doubling to a minute.
const SANDBOX_BACKOFF: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));

/// Reconciles one pod.
pub struct PodWorker {
    ctx: Arc<NodeContext>,
    /// Sandboxes, containers and images, over CRI.
    runtime: Arc<dyn PodRuntime>,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    /// Container restarts by container name.
    restarts: Backoff<String>,
    /// Image pulls by container name.
    pulls: Backoff<String>,
    /// Sandbox creations.
    sandbox_backoff: Backoff<()>,
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
    tokens_due: Option<Instant>,
    /// When this kubelet first saw the pod, until it runs (None for a pod
    /// already running when seen: a restarted kubelet measures nothing).
    pending_since: Option<Instant>,
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
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
        let pending_since = (!running).then(Instant::now);
        PodWorker {
            prober: Prober::new(
                ctx.cri.clone(),
                probe_results.clone(),
                wake.clone(),
                ctx.probe_metrics.clone(),
            ),
            runtime: Arc::new(ctx.cri.clone()),
            ctx,
            pod_rx,
            wake,
            restarts: Backoff::new(plan::RESTART_BACKOFF_START, plan::RESTART_BACKOFF_MAX),
            pulls: Backoff::new(PULL_BACKOFF.0, PULL_BACKOFF.1),
            sandbox_backoff: Backoff::new(SANDBOX_BACKOFF.0, SANDBOX_BACKOFF.1),
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

    /// One reconciliation; returns when to look again at the latest.
    async fn sync(&mut self, pod: &Pod) -> anyhow::Result<Duration> {
        let uid = Self::uid(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let sandboxes = self.runtime.sandboxes(&uid).await?;
        let step = plan::sandbox_step(
            crate::api::values::pods::is_terminal(pod),
            &sandboxes,
            self.sandbox_backoff.left(&(), Instant::now()),
        );
        if !matches!(step, SandboxStep::Finish { .. })
            && let Some(retry) = self.prepare_volumes(pod, &spec).await
        {
            return Ok(retry);
        }
        let sandbox = match step {
            SandboxStep::Finish { stop } => {
                if let Some(id) = stop {
                    self.runtime.stop_sandbox(&id).await;
                }
                return Ok(plan::RESYNC);
            }
            SandboxStep::Wait(left) => return Ok(left),
            SandboxStep::Use(id) => id,
            SandboxStep::Create { remove, attempt } => {
                for id in &remove {
                    self.runtime.remove_sandbox(id).await;
                }
                if let Err(retry) = self.create_sandbox(pod, &spec, attempt).await {
                    return Ok(retry);
                }
                match self
                    .runtime
                    .sandboxes(&uid)
                    .await?
                    .into_iter()
                    .find(|s| s.ready)
                {
                    Some(s) => s.id,
                    None => return Ok(Duration::from_secs(1)),
                }
            }
        };
        let sandbox_view = self.runtime.sandbox_view(&sandbox).await;
        self.pod_ip = sandbox_view.ip.clone().unwrap_or_default();
        let runs = self.runtime.containers(&sandbox).await?;
        let probes = self.probe_results.clone();
        let liveness_failed = |id: &str| probes.liveness_failed(id);
        let plan = plan::containers(&plan::Inputs {
            spec: &spec,
            runs: &runs,
            restarts: &self.restarts,
            liveness_failed: &liveness_failed,
            now_nanos: now_nanos(),
        });
        for action in plan.actions {
            self.act(pod, &sandbox, &spec, action).await;
        }
        let runs = self.runtime.containers(&sandbox).await?;
        self.report(pod, Some(sandbox_view), &runs).await;
        Ok(plan.next)
    }

    /// Refreshes projected tokens when due and prepares the volumes once;
    /// when they cannot be prepared, says so and returns when to retry.
    async fn prepare_volumes(&mut self, pod: &Pod, spec: &PodSpec) -> Option<Duration> {
        if self.volumes.is_some()
            && let Some(due) = self.tokens_due
            && Instant::now() >= due
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
                Ok(()) => volumes::token_refresh_after(pod).map(|d| Instant::now() + d),
                Err(e) => {
                    tracing::warn!(err = %e, pod = %pod.metadata.name.as_deref().unwrap_or_default(), "refreshing projected tokens; retrying");
                    Some(Instant::now() + Duration::from_secs(10))
                }
            };
        }
        if self.volumes.is_some() {
            return None;
        }
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
                self.tokens_due = volumes::token_refresh_after(pod).map(|d| Instant::now() + d);
                None
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
                Some(Duration::from_secs(5))
            }
        }
    }

    /// Creates the pod's sandbox, attempt `attempt`; on failure says so and
    /// returns its back-off.
    async fn create_sandbox(
        &mut self,
        pod: &Pod,
        spec: &PodSpec,
        attempt: u32,
    ) -> Result<(), Duration> {
        let config = container::sandbox_config(pod, attempt, &self.ctx.settings);
        let _ = std::fs::create_dir_all(&config.log_directory);
        if let Err(e) = self.runtime.run_sandbox(config).await {
            let delay = self.sandbox_backoff.step(&(), Instant::now());
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
            return Err(delay);
        }
        self.sandbox_backoff.reset(&());
        self.waiting.clear();
        Ok(())
    }

    /// Carries out one step of the containers' plan.
    async fn act(&mut self, pod: &Pod, sandbox: &str, spec: &PodSpec, action: Action) {
        match action {
            Action::Start {
                container,
                attempt,
                restart,
            } => {
                if let Some(restart) = restart {
                    if restart.reset_backoff {
                        self.restarts.reset(&container.name);
                    }
                    self.restarts.step(&container.name, Instant::now());
                }
                self.start(pod, sandbox, &container, attempt).await;
            }
            Action::BackingOff {
                container, delay, ..
            } => {
                let message = format!(
                    "back-off {}s restarting failed container={container} pod={}",
                    delay.as_secs(),
                    pod_ref(pod)
                );
                if self.waiting.get(&container).map(|(r, _)| r.as_str()) != Some("CrashLoopBackOff")
                {
                    self.event(
                        pod,
                        "Warning",
                        "BackOff",
                        "Back-off restarting failed container",
                    )
                    .await;
                }
                self.waiting
                    .insert(container, ("CrashLoopBackOff".into(), message));
            }
            Action::Kill {
                container,
                id,
                reason,
            } => {
                let why = match reason {
                    KillReason::SpecChanged => format!(
                        "Container {} definition changed, will be restarted",
                        container.name
                    ),
                    KillReason::Unhealthy => format!(
                        "Container {} failed liveness probe, will be restarted",
                        container.name
                    ),
                };
                self.event(pod, "Normal", "Killing", &why).await;
                let grace = spec.termination_grace_period_seconds.unwrap_or(30);
                self.stop_container(pod, &container, &id, grace).await;
                self.probe_results.forget(&id);
            }
            Action::Probe { container, id } => {
                let ip = self.probe_ip();
                let labels = super::probes::PodRef {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    container: container.name.clone(),
                };
                self.prober.ensure(&container, &id, &ip, labels);
            }
            Action::Unprobe { id } => self.prober.stop(&id),
            Action::Remove { id } => self.runtime.remove_container(&id).await,
        }
    }

    /// Where probes and hooks connect: the pod IP, or the node's with host networking.
    fn probe_ip(&self) -> String {
        if self.pod_ip.is_empty() {
            self.ctx.settings.node_ip.clone()
        } else {
            self.pod_ip.clone()
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
        let created = self
            .runtime
            .create_container(sandbox, config, sandbox_config)
            .await;
        let id = match created {
            Ok(id) => id,
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
        if let Err(e) = self.runtime.start_container(&id).await {
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
        let present = self.runtime.image_present(image).await;
        if present && policy != "Always" {
            return Ok(());
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            return Err(("ErrImageNeverPull".into(), message));
        }
        if self.pulls.left(&c.name, Instant::now()).is_some() {
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
        let started = Instant::now();
        match self.runtime.pull_image(image).await {
            Ok(()) => {
                self.pulls.reset(&c.name);
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
                self.pulls.step(&c.name, Instant::now());
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
        let started = Instant::now();
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
        if let Err(e) = self.runtime.stop_container(id, left).await {
            tracing::warn!(pod = %pod_ref(pod), container = %c.name, err = %e.message(), "stopping container");
        }
    }

    /// Computes the status and writes it when it changed.
    async fn report(&mut self, pod: &Pod, sandbox: Option<SandboxView>, runs: &Runs) {
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
        let now = crate::api::values::meta::now();
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
        let Ok(sandboxes) = self.runtime.sandboxes(&uid).await else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        for sandbox in &sandboxes {
            if let Ok(runs) = self.runtime.containers(&sandbox.id).await {
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
            self.runtime.remove_sandbox(&sandbox.id).await;
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
