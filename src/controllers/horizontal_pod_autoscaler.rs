//! HorizontalPodAutoscalers (autoscaling/v2), as upstream's controller:
//! every sync period (15 s, `--horizontal-pod-autoscaler-sync-period`) each
//! autoscaler reads its target's `scale` subresource, the usage of the
//! target's pods from `metrics.k8s.io` (Resource and ContainerResource
//! metrics, Utilization against requests or AverageValue), proposes a
//! replica count per metric (`replicas.rs`), takes the highest, stabilizes
//! and rate-limits it (`normalize.rs`: `behavior` or the older defaults),
//! bounds it by min/max, writes the scale and reports status (current and
//! desired replicas, current metrics, last scale time, the AbleToScale,
//! ScalingActive and ScalingLimited conditions) and events
//! (`SuccessfulRescale`, failures as warnings).

mod normalize;
mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use self::normalize::{Behavior, Bounds, DEFAULT_DOWNSCALE_STABILIZATION, History};
use self::replicas::{PodFacts, PodMetric, Target, Tolerances};
use super::Error;
use crate::api::values::selectors::LabelSelector;
use crate::api::values::{conditions, quantity};
use crate::telemetry::events::Recorder;

/// Upstream's `--horizontal-pod-autoscaler-sync-period` default.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// What the reconciler shares: the client, a cache of pods, and what each
/// autoscaler recommended and did recently (kept in memory, as upstream).
struct Ctx {
    client: kube::Client,
    recorder: Recorder,
    sync_period: Duration,
    pods: Store<Pod>,
    // A std mutex: held only to read or swap an entry, never across an await.
    autoscalers: Mutex<HashMap<String, Memory>>,
}

/// One autoscaler's memory between syncs.
#[derive(Debug, Clone, Default)]
struct Memory {
    history: History,
    /// Generation and time of the last sync.
    synced: Option<(Option<i64>, Instant)>,
    /// The warnings of the last sync: a lasting failure is one event, not
    /// one per sync.
    last_warnings: Vec<String>,
}

/// Runs the controller: an autoscaler is synced when its spec changes and
/// every sync period.
pub async fn run(context: Arc<super::Context>) {
    let client = context.client.clone();
    let pods = context.informers.informer::<Pod>();
    if !pods.ready().await {
        return;
    }
    let Some(controller) =
        crate::runtime::shared_controller::<HorizontalPodAutoscaler>(&context.informers).await
    else {
        return;
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), COMPONENT, None),
        sync_period: context.hpa_sync_period,
        pods: pods.store,
        autoscalers: Mutex::new(HashMap::new()),
    });
    controller
        .run(
            super::workqueue::queued(context.queue.clone(), reconcile),
            retry,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = hpa.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", hpa.name_any());
    let now = Instant::now();
    let mut memory = {
        let mut all = ctx
            .autoscalers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Autoscalers gone for a long while are forgotten.
        all.retain(|_, m| {
            m.synced
                .is_none_or(|(_, at)| now.saturating_duration_since(at) < Duration::from_secs(3600))
        });
        all.get(&key).cloned().unwrap_or_default()
    };
    // Our own status writes wake the controller too; between spec changes an
    // autoscaler syncs once per period, as upstream's queue paces it.
    if let Some((generation, at)) = memory.synced {
        let elapsed = now.saturating_duration_since(at);
        if generation == hpa.metadata.generation && elapsed < ctx.sync_period {
            return Ok(Action::requeue(ctx.sync_period - elapsed));
        }
    }
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut autoscaling = Autoscaling::new(&hpa, &ctx, &mut memory.history, now);
    autoscaling.run().await;
    let Autoscaling { status, events, .. } = autoscaling;
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
    let written =
        super::write_status(&api, &hpa, &hpa.status.clone().unwrap_or_default(), &status).await;
    let mut warnings = Vec::new();
    for (kind, reason, message) in events {
        if kind == "Warning" {
            let text = format!("{reason}: {message}");
            let repeated = memory.last_warnings.contains(&text);
            warnings.push(text);
            if repeated {
                continue;
            }
        }
        ctx.recorder
            .record(hpa.as_ref(), kind, reason, &message)
            .await;
    }
    memory.last_warnings = warnings;
    memory.synced = Some((hpa.metadata.generation, now));
    ctx.autoscalers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, memory);
    written?;
    Ok(Action::requeue(ctx.sync_period))
}

fn retry(_: Arc<HorizontalPodAutoscaler>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::debug!(err = %error, "horizontal pod autoscaler");
    Action::requeue(ctx.sync_period)
}

/// An event to record: type, reason, message.
type Event = (&'static str, &'static str, String);

/// One sync of one autoscaler: reads, decides, scales; collects the status
/// and events for the caller to write.
struct Autoscaling<'a> {
    hpa: &'a HorizontalPodAutoscaler,
    ctx: &'a Ctx,
    history: &'a mut History,
    now: Instant,
    status: HorizontalPodAutoscalerStatus,
    events: Vec<Event>,
}

/// A metric's failure: the condition reason and the error text.
struct MetricError {
    reason: &'static str,
    message: String,
}

/// A metric's proposal.
struct MetricProposal {
    replicas: i32,
    name: String,
    status: MetricStatus,
}

impl<'a> Autoscaling<'a> {
    fn new(
        hpa: &'a HorizontalPodAutoscaler,
        ctx: &'a Ctx,
        history: &'a mut History,
        now: Instant,
    ) -> Self {
        Autoscaling {
            hpa,
            ctx,
            history,
            now,
            status: hpa.status.clone().unwrap_or_default(),
            events: Vec::new(),
        }
    }

    fn condition(&mut self, kind: &str, status: bool, reason: &str, message: String) {
        set_condition(
            self.status.conditions.get_or_insert_with(Vec::new),
            kind,
            status,
            reason,
            message,
            Timestamp::now(),
        );
    }

    fn warn(&mut self, reason: &'static str, message: String) {
        self.events.push(("Warning", reason, message));
    }

    async fn run(&mut self) {
        let spec = self.hpa.spec.clone().unwrap_or_default();
        let namespace = self.hpa.namespace().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let api = match scale_api(&self.ctx.client, &namespace, target) {
            Ok(api) => api,
            Err(e) => return self.failed_get_scale(e),
        };
        let scale = match api.get_scale(&target.name).await {
            Ok(scale) => scale,
            Err(e) => return self.failed_get_scale(api_message(&e)),
        };
        self.condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        self.history.start(current, self.now);
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut desired = 0;
        let mut reason = String::new();
        let mut metric_statuses = self.status.current_metrics.clone().unwrap_or_default();
        if current == 0 && min != 0 {
            self.condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let specs = spec.metrics.clone().unwrap_or_else(default_metrics);
            let (proposal, statuses) = self.compute(&specs, current, &selector).await;
            metric_statuses = statuses;
            let Some((proposed, metric)) = proposal else {
                self.status.current_replicas = Some(current);
                self.status.current_metrics = Some(metric_statuses);
                return;
            };
            desired = proposed;
            if desired > current {
                reason = format!("{metric} above target");
            } else if desired < current {
                reason = "All metrics below target".into();
            }
            let bounds = Bounds {
                current,
                desired,
                min,
                max,
            };
            let behavior =
                Behavior::from_spec(spec.behavior.as_ref(), DEFAULT_DOWNSCALE_STABILIZATION);
            let outcome = match &behavior {
                Some(b) => normalize::normalize_with_behavior(self.history, b, bounds, self.now),
                None => normalize::normalize(
                    self.history,
                    DEFAULT_DOWNSCALE_STABILIZATION,
                    bounds,
                    self.now,
                ),
            };
            let (able, able_message) = outcome.able_to_scale;
            self.condition("AbleToScale", true, able, able_message.into());
            let (limited, limited_reason, limited_message) = outcome.scaling_limited;
            self.condition(
                "ScalingLimited",
                limited,
                limited_reason,
                limited_message.into(),
            );
            desired = outcome.replicas;
        }
        let rescale = desired != current;
        if rescale {
            // An update of the Scale read above (upstream's HPA holds
            // `update` on */scale, not `patch`); a conflict retries next sync.
            let mut resized = scale.clone();
            resized.spec.get_or_insert_default().replicas = Some(desired);
            if let Err(e) = api
                .replace_scale(&target.name, &PostParams::default(), &resized)
                .await
            {
                let e = api_message(&e);
                self.warn(
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                self.condition(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                self.status.current_replicas = Some(current);
                self.status.current_metrics = Some(metric_statuses);
                return;
            }
            self.condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.events.push((
                "Normal",
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {reason}"),
            ));
            let behavior =
                Behavior::from_spec(spec.behavior.as_ref(), DEFAULT_DOWNSCALE_STABILIZATION);
            self.history
                .record_scale(behavior.as_ref(), current, desired, self.now);
            self.status.last_scale_time = Some(Time(Timestamp::now()));
            tracing::info!(hpa = %format!("{}/{}", self.hpa.namespace().unwrap_or_default(), self.hpa.name_any()), from = current, to = desired, reason = %reason, "rescaled");
        } else {
            desired = current;
        }
        self.status.current_replicas = Some(current);
        self.status.desired_replicas = desired;
        self.status.current_metrics = Some(metric_statuses);
    }

    fn failed_get_scale(&mut self, error: String) {
        self.warn("FailedGetScale", error.clone());
        self.condition(
            "AbleToScale",
            false,
            "FailedGetScale",
            format!("the HPA controller was unable to get the target's current scale: {error}"),
        );
    }

    /// The highest proposal of the metrics and its metric's name, or None
    /// when none can be computed (or some failed and the rest would scale
    /// down); the metrics' statuses either way.
    async fn compute(
        &mut self,
        specs: &[MetricSpec],
        current: i32,
        selector: &str,
    ) -> (Option<(i32, String)>, Vec<MetricStatus>) {
        let empty = || {
            specs
                .iter()
                .map(|_| MetricStatus::default())
                .collect::<Vec<_>>()
        };
        if selector.is_empty() {
            self.warn("SelectorRequired", "selector is required".into());
            self.condition(
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            );
            return (None, empty());
        }
        let parsed = match LabelSelector::parse(selector) {
            Ok(parsed) => parsed,
            Err(e) => {
                let message = format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                );
                self.warn("InvalidSelector", message.clone());
                self.condition("ScalingActive", false, "InvalidSelector", message);
                return (None, empty());
            }
        };
        let namespace = self.hpa.namespace().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .ctx
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|p| {
                let labels = serde_json::to_value(p.metadata.labels.clone().unwrap_or_default());
                parsed.matches(labels.ok().as_ref())
            })
            .collect();
        let usage = self.pod_usage(&namespace, selector).await;
        let mut statuses = Vec::with_capacity(specs.len());
        let mut best: Option<(i32, String)> = None;
        let mut failures: Vec<MetricError> = Vec::new();
        for spec in specs {
            match self.compute_one(spec, current, &pods, &usage) {
                Ok(proposal) => {
                    statuses.push(proposal.status);
                    if best.as_ref().is_none_or(|(r, _)| proposal.replicas > *r) {
                        best = Some((proposal.replicas, proposal.name));
                    }
                }
                Err(e) => {
                    statuses.push(MetricStatus::default());
                    self.warn(e.reason, e.message.clone());
                    failures.push(e);
                }
            }
        }
        let invalid = failures.len();
        if let Some(first) = failures.into_iter().next()
            && (invalid >= specs.len() || best.as_ref().is_some_and(|(r, _)| *r < current))
        {
            self.condition(
                "ScalingActive",
                false,
                first.reason,
                format!(
                    "the HPA was unable to compute the replica count: {}",
                    first.message
                ),
            );
            self.warn(
                "FailedComputeMetricsReplicas",
                format!(
                    "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                    specs.len(),
                    first.message
                ),
            );
            return (None, statuses);
        }
        if let Some((_, metric)) = &best {
            self.condition(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!("the HPA was able to successfully calculate a replica count from {metric}"),
            );
        }
        (best, statuses)
    }

    /// The pods' metrics from `metrics.k8s.io`, or why there are none.
    async fn pod_usage(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<DynamicObject>, String> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
            "pods",
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.client.clone(), namespace, &resource);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                format!(
                    "unable to fetch metrics from resource metrics API: {}",
                    api_message(&e)
                )
            })?;
        if list.items.is_empty() {
            return Err("no metrics returned from resource metrics API".into());
        }
        Ok(list.items)
    }

    /// One metric's proposal.
    fn compute_one(
        &self,
        spec: &MetricSpec,
        current: i32,
        pods: &[Arc<Pod>],
        usage: &Result<Vec<DynamicObject>, String>,
    ) -> Result<MetricProposal, MetricError> {
        let (resource, container, target) = match spec.type_.as_str() {
            "Resource" => {
                let source = spec.resource.as_ref().ok_or_else(|| MetricError {
                    reason: "FailedGetResourceMetric",
                    message: "failed to get resource metric value: no resource metric source"
                        .into(),
                })?;
                (source.name.clone(), None, &source.target)
            }
            "ContainerResource" => {
                let source = spec.container_resource.as_ref().ok_or_else(|| MetricError {
                    reason: "FailedGetContainerResourceMetric",
                    message: "failed to get container resource metric value: no container resource metric source".into(),
                })?;
                (
                    source.name.clone(),
                    Some(source.container.clone()),
                    &source.target,
                )
            }
            "Pods" | "Object" => {
                return Err(MetricError {
                    reason: if spec.type_ == "Pods" {
                        "FailedGetPodsMetric"
                    } else {
                        "FailedGetObjectMetric"
                    },
                    message: "unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered".into(),
                });
            }
            "External" => {
                return Err(MetricError {
                    reason: "FailedGetExternalMetric",
                    message: "unable to fetch metrics from external metrics API: no external metrics API (external.metrics.k8s.io) registered".into(),
                });
            }
            other => {
                return Err(MetricError {
                    reason: "InvalidMetricSourceType",
                    message: format!("unknown metric source type {other:?}"),
                });
            }
        };
        let reason = if container.is_some() {
            "FailedGetContainerResourceMetric"
        } else {
            "FailedGetResourceMetric"
        };
        let failed = |message: String| MetricError {
            reason,
            message: if container.is_some() {
                format!("failed to get {resource} container metric value: {message}")
            } else {
                format!("failed to get {resource} resource metric value: {message}")
            },
        };
        let target = parse_target(target).map_err(failed)?;
        let (what, name) = match (target, &container) {
            (Target::AverageValue(_), _) => ("usage", format!("{resource} resource")),
            (Target::Utilization(_), None) => (
                "utilization",
                format!("{resource} resource utilization (percentage of request)"),
            ),
            (Target::Utilization(_), Some(_)) => (
                "utilization",
                format!("{resource} container resource utilization (percentage of request)"),
            ),
        };
        let metrics = usage
            .as_ref()
            .map_err(|e| {
                failed(format!(
                    "failed to get {resource} {what}: unable to get metrics for resource {resource}: {e}"
                ))
            })?;
        let metrics = pod_metrics(metrics, &resource, container.as_deref());
        let facts: Vec<PodFacts> = pods
            .iter()
            .map(|p| pod_facts(p, &resource, container.as_deref()))
            .collect();
        let proposal = replicas::propose(
            current,
            target,
            resource == "cpu",
            &facts,
            metrics,
            tolerances(self.hpa),
            Timestamp::now(),
        )
        .map_err(|e| failed(format!("failed to get {resource} {what}: {e}")))?;
        let current_value = MetricValueStatus {
            average_utilization: proposal.utilization,
            average_value: Some(Quantity(quantity::format_milli(
                proposal.average,
                quantity::Suffixes::Decimal,
            ))),
            value: None,
        };
        let status = match container {
            None => MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: resource,
                    current: current_value,
                }),
                ..Default::default()
            },
            Some(container) => MetricStatus {
                type_: "ContainerResource".into(),
                container_resource: Some(ContainerResourceMetricStatus {
                    container,
                    name: resource,
                    current: current_value,
                }),
                ..Default::default()
            },
        };
        Ok(MetricProposal {
            replicas: proposal.replicas,
            name,
            status,
        })
    }
}

/// The metrics an autoscaler without any uses: CPU at 80% of requests.
fn default_metrics() -> Vec<MetricSpec> {
    serde_json::from_value(json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]))
        .unwrap_or_default()
}

/// A Resource target: AverageValue wins when set, as upstream reads it.
fn parse_target(target: &MetricTarget) -> Result<Target, String> {
    if let Some(value) = &target.average_value {
        return quantity::milli(&value.0)
            .map(Target::AverageValue)
            .ok_or_else(|| format!("invalid averageValue {:?}", value.0));
    }
    target.average_utilization.map(Target::Utilization).ok_or_else(|| {
        "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into()
    })
}

/// The tolerances of the spec's behavior (alpha in upstream), else 10%.
fn tolerances(hpa: &HorizontalPodAutoscaler) -> Tolerances {
    let behavior = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    let of = |rules: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
        rules
            .and_then(|r| r.tolerance.as_ref())
            .and_then(|q| quantity::parse(&q.0))
    };
    let defaults = Tolerances::default();
    Tolerances {
        scale_down: of(behavior.and_then(|b| b.scale_down.as_ref())).unwrap_or(defaults.scale_down),
        scale_up: of(behavior.and_then(|b| b.scale_up.as_ref())).unwrap_or(defaults.scale_up),
    }
}

/// The API of the scale target's kind (its plural from the kinds kelp
/// serves, else the usual English plural).
fn scale_api(
    client: &kube::Client,
    namespace: &str,
    target: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
) -> Result<Api<DynamicObject>, String> {
    let api_version = target.api_version.clone().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version.as_str()),
    };
    if version.is_empty() || target.kind.is_empty() {
        return Err(format!(
            "unable to determine the resource for {api_version:?} {:?}",
            target.kind
        ));
    }
    let gvk = GroupVersionKind::gvk(group, version, &target.kind);
    let resource = match target.kind.as_str() {
        "Deployment" => ApiResource::from_gvk_with_plural(&gvk, "deployments"),
        "ReplicaSet" => ApiResource::from_gvk_with_plural(&gvk, "replicasets"),
        "StatefulSet" => ApiResource::from_gvk_with_plural(&gvk, "statefulsets"),
        "ReplicationController" => {
            ApiResource::from_gvk_with_plural(&gvk, "replicationcontrollers")
        }
        _ => ApiResource::from_gvk(&gvk),
    };
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// An API error as its Status message.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Each pod's usage of `resource` (thousandths), summed over its containers
/// (or the one named); pods with a container unmeasured are left out.
fn pod_metrics(
    items: &[DynamicObject],
    resource: &str,
    container: Option<&str>,
) -> HashMap<String, PodMetric> {
    let mut out = HashMap::new();
    for item in items {
        let containers = item.data["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let chosen: Vec<&Value> = containers
            .iter()
            .filter(|c| container.is_none_or(|name| c["name"] == name))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let values: Option<Vec<i64>> = chosen
            .iter()
            .map(|c| c["usage"][resource].as_str().and_then(quantity::milli))
            .collect();
        let (Some(values), Some(timestamp)) = (
            values,
            item.data["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok()),
        ) else {
            continue;
        };
        let window = item.data["window"]
            .as_str()
            .and_then(|w| w.parse::<SignedDuration>().ok())
            .unwrap_or_default();
        out.insert(
            item.name_any(),
            PodMetric {
                value: values.iter().sum(),
                timestamp,
                window,
            },
        );
    }
    out
}

/// What the calculator needs of a pod: phase, readiness, start, and its
/// request of `resource` (the named container's, or all containers').
fn pod_facts(pod: &Pod, resource: &str, container: Option<&str>) -> PodFacts {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or_default(),
            )
        });
    let name = pod.name_any();
    let mut request = Ok(0);
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if container.is_some_and(|n| n != c.name) {
            continue;
        }
        let value = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .and_then(|q| quantity::milli(&q.0));
        match value {
            Some(v) => request = request.map(|sum| sum + v),
            None => {
                request = Err(format!(
                    "missing request for {resource} in container {} of Pod {name}",
                    c.name
                ));
                break;
            }
        }
    }
    PodFacts {
        name,
        phase: status.phase.unwrap_or_default(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.map(|t| t.0),
        request,
    }
}

/// Sets a condition in place, keeping its transition time while its status
/// holds ([`conditions::upsert`]).
fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    conditions::upsert(
        conditions,
        HorizontalPodAutoscalerCondition {
            last_transition_time: Some(Time(now)),
            message: Some(message),
            reason: Some(reason.into()),
            status: if status { "True" } else { "False" }.into(),
            type_: kind.into(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_sum_their_containers_requests() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "side", "resources": {"requests": {"cpu": "50m"}}},
            ]},
            "status": {"phase": "Running", "startTime": "2024-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:05Z"}]},
        }))
        .expect("pod");
        let cpu = pod_facts(&pod, "cpu", None);
        assert_eq!(cpu.request, Ok(150));
        assert_eq!(cpu.phase, "Running");
        assert_eq!(
            cpu.ready.map(|(r, t)| (r, t.to_string())),
            Some((true, "2024-01-01T00:00:05Z".into()))
        );
        assert_eq!(
            pod_facts(&pod, "memory", None).request,
            Err("missing request for memory in container side of Pod p".into())
        );
        assert_eq!(
            pod_facts(&pod, "memory", Some("app")).request,
            Ok(64 * 1024 * 1024 * 1000)
        );
    }

    #[test]
    fn pod_metrics_sum_containers_and_skip_incomplete_pods() {
        let item = |name: &str, containers: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "timestamp": "2024-01-01T00:00:10Z",
                "window": "10s",
                "containers": containers,
            }))
            .expect("item")
        };
        let items = [
            item(
                "a",
                json!([{"name": "app", "usage": {"cpu": "250000000n", "memory": "1Ki"}},
                       {"name": "side", "usage": {"cpu": "5m", "memory": "1Ki"}}]),
            ),
            item("b", json!([{"name": "app", "usage": {"memory": "1Ki"}}])),
        ];
        let cpu = pod_metrics(&items, "cpu", None);
        assert_eq!(cpu.len(), 1);
        assert_eq!(cpu["a"].value, 255);
        assert_eq!(cpu["a"].window, SignedDuration::from_secs(10));
        assert_eq!(pod_metrics(&items, "cpu", Some("side"))["a"].value, 5);
        assert_eq!(pod_metrics(&items, "memory", None)["b"].value, 1_024_000);
    }

    #[test]
    fn targets_and_defaults() {
        let target: MetricTarget =
            serde_json::from_value(json!({"type": "AverageValue", "averageValue": "100Mi"}))
                .expect("target");
        assert_eq!(
            parse_target(&target),
            Ok(Target::AverageValue(104_857_600_000))
        );
        let target: MetricTarget =
            serde_json::from_value(json!({"type": "Utilization", "averageUtilization": 50}))
                .expect("target");
        assert_eq!(parse_target(&target), Ok(Target::Utilization(50)));
        assert!(parse_target(&MetricTarget::default()).is_err());
        let default = default_metrics();
        assert_eq!(default.len(), 1);
        assert_eq!(
            default[0].resource.as_ref().map(|r| r.name.as_str()),
            Some("cpu")
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_status_holds() {
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("time");
        let mut conditions = Vec::new();
        set_condition(&mut conditions, "AbleToScale", true, "A", "a".into(), t(0));
        set_condition(&mut conditions, "AbleToScale", true, "B", "b".into(), t(10));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason.as_deref(), Some("B"));
        assert_eq!(conditions[0].last_transition_time, Some(Time(t(0))));
        set_condition(
            &mut conditions,
            "AbleToScale",
            false,
            "C",
            "c".into(),
            t(20),
        );
        assert_eq!(conditions[0].last_transition_time, Some(Time(t(20))));
    }
}
