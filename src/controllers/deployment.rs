//! Deployments: one ReplicaSet per pod template (named by the template's
//! hash), rolled from the old ones to the new one as the strategy says
//! (RollingUpdate within maxSurge/maxUnavailable, or Recreate), with
//! revision annotations for `kubectl rollout history/undo`, history
//! trimmed to revisionHistoryLimit, and the status and conditions
//! (Available, Progressing with progressDeadlineSeconds) that `kubectl
//! rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{Context, Error};
use crate::api::values::{conditions, pods};
use crate::telemetry::events::{self, Source};

/// The revision a ReplicaSet (and its Deployment) is at.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells one template's pods from another's.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Deployment annotations that stay off its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];
const COMPONENT: &str = "deployment-controller";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    let owning = crate::runtime::shared_controller_owning::<Deployment, ReplicaSet>;
    if let Some(controller) = owning(&context.informers).await {
        super::drive(controller, context, reconcile).await;
    }
}

/// The template without the hash label, for comparing a ReplicaSet's
/// template with its Deployment's.
fn unhashed(template: Option<&PodTemplateSpec>) -> Value {
    let mut value = serde_json::to_value(template.cloned().unwrap_or_default()).unwrap_or_default();
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    value
}

/// A number or a percentage of `total`, rounded up or down.
fn resolve(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = percent * i64::from(total);
            let n = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            n as i32
        }
        None => 0,
    }
}

/// maxSurge and maxUnavailable as pod counts (Recreate: 0 and all); both
/// zero would stall a rollout, so upstream makes maxUnavailable 1 then.
pub fn surge_and_unavailable(spec: &DeploymentSpec) -> (i32, i32) {
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, replicas);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

/// One ReplicaSet as a rollout counts it: its wanted size and its pods.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Size {
    /// `spec.replicas`.
    pub spec: i32,
    /// Pods neither terminating nor finished.
    pub active: i32,
    /// Of those, Ready.
    pub ready: i32,
    /// Of those, Ready for minReadySeconds.
    pub available: i32,
    /// Pods still running, terminating ones included (Recreate waits for them).
    pub running: i32,
}

/// The new ReplicaSet's size in a rolling update: up toward `replicas`
/// while all ReplicaSets together stay within `replicas + surge`.
pub fn rolling_new_size(replicas: i32, surge: i32, new: i32, all: i32) -> i32 {
    if new >= replicas {
        return replicas;
    }
    let room = replicas + surge - all;
    if room <= 0 {
        return new;
    }
    new + room.min(replicas - new)
}

/// The old ReplicaSets' sizes (oldest first) in a rolling update: first
/// drop their unavailable pods, then available ones while at least
/// `replicas - unavailable` pods stay available in all.
pub fn rolling_old_sizes(replicas: i32, unavailable: i32, new: Size, olds: &[Size]) -> Vec<i32> {
    let mut sizes: Vec<i32> = olds.iter().map(|o| o.spec).collect();
    let min_available = replicas - unavailable;
    let all: i32 = new.spec + sizes.iter().sum::<i32>();
    let new_unavailable = (new.spec - new.available).max(0);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return sizes;
    }
    let mut cleaned = 0;
    for (size, old) in sizes.iter_mut().zip(olds) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = *size - old.available.min(*size);
        if unhealthy <= 0 {
            continue;
        }
        let drop = unhealthy.min(max_scaled_down - cleaned);
        *size -= drop;
        cleaned += drop;
    }
    let available: i32 = new.available + olds.iter().map(|o| o.available).sum::<i32>();
    let mut to_drop = available - min_available;
    for size in sizes.iter_mut() {
        if to_drop <= 0 {
            break;
        }
        let drop = (*size).min(to_drop);
        *size -= drop;
        to_drop -= drop;
    }
    sizes
}

/// Sizes after `replicas` changed while several ReplicaSets are active: the
/// difference shared in proportion to their sizes, the rest to the largest.
pub fn proportional_sizes(allowed: i32, sizes: &[i32]) -> Vec<i32> {
    let total: i32 = sizes.iter().sum();
    let delta = allowed - total;
    if total == 0 || delta == 0 {
        return sizes.to_vec();
    }
    let mut out: Vec<i32> = sizes
        .iter()
        .map(|s| (s + (i64::from(delta) * i64::from(*s) / i64::from(total)) as i32).max(0))
        .collect();
    let rest = allowed - out.iter().sum::<i32>();
    if let Some(largest) = (0..out.len()).max_by_key(|i| (sizes[*i], *i)) {
        out[largest] = (out[largest] + rest).max(0);
    }
    out
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// What one pass works with.
struct Rollout<'a> {
    d: &'a Deployment,
    spec: DeploymentSpec,
    replicas: i32,
    rs_api: Api<ReplicaSet>,
    context: &'a Context,
}

impl Rollout<'_> {
    /// Sets a ReplicaSet's size (and the annotations saying what the
    /// Deployment wanted), with a ScalingReplicaSet event.
    async fn scale(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, Error> {
        let current = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let (surge, _) = surge_and_unavailable(&self.spec);
        let desired = self.replicas.to_string();
        let max = (self.replicas + surge).to_string();
        let annotations = rs.annotations();
        if current == size
            && annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && annotations.get(MAX_REPLICAS) == Some(&max)
        {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": size},
        });
        *rs = self
            .rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        if current != size {
            let direction = if size > current { "up" } else { "down" };
            self.event(&format!(
                "Scaled {direction} replica set {} from {current} to {size}",
                rs.name_any()
            ))
            .await;
        }
        Ok(true)
    }

    async fn event(&self, message: &str) {
        let source = Source {
            component: COMPONENT.into(),
            host: None,
        };
        events::record(
            &self.context.client,
            &source,
            self.d,
            "Normal",
            "ScalingReplicaSet",
            message,
        )
        .await;
    }

    /// The ReplicaSet for the current template, made if missing (unless
    /// `create` is false), at the newest revision and carrying the
    /// Deployment's annotations.
    async fn new_replica_set(
        &self,
        existing: Option<ReplicaSet>,
        max_old_revision: i64,
        initial: i32,
    ) -> Result<(ReplicaSet, bool), Error> {
        let mut annotations: BTreeMap<String, String> = self
            .d
            .annotations()
            .iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let next = (max_old_revision + 1).to_string();
        if let Some(rs) = existing {
            let mut patch = serde_json::Map::new();
            let current = revision(&rs);
            if current <= max_old_revision {
                annotations.insert(REVISION.into(), next);
                if current > 0 {
                    let mut history: Vec<String> = rs
                        .annotations()
                        .get(REVISION_HISTORY)
                        .map(|h| h.split(',').map(String::from).collect())
                        .unwrap_or_default();
                    history.push(current.to_string());
                    annotations.insert(REVISION_HISTORY.into(), history.join(","));
                }
            }
            annotations.retain(|k, v| rs.annotations().get(k) != Some(v));
            if !annotations.is_empty() {
                patch.insert("metadata".into(), json!({"annotations": annotations}));
            }
            let min_ready = self.spec.min_ready_seconds;
            if rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready {
                patch.insert("spec".into(), json!({"minReadySeconds": min_ready}));
            }
            if patch.is_empty() {
                return Ok((rs, false));
            }
            let rs = self
                .rs_api
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&Value::Object(patch)),
                )
                .await?;
            return Ok((rs, false));
        }
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = self.spec.template.clone();
        let hash = super::history::hash(&template, collision_count);
        let meta = template.metadata.get_or_insert_default();
        meta.labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = self.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let (surge, _) = surge_and_unavailable(&self.spec);
        annotations.insert(REVISION.into(), next);
        annotations.insert(DESIRED_REPLICAS.into(), self.replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (self.replicas + surge).to_string());
        let name = format!("{}-{hash}", self.d.name_any());
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": self.d.namespace(),
                "labels": meta.labels,
                "annotations": annotations,
                "ownerReferences": [crate::runtime::controller_ref(self.d)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": self.spec.min_ready_seconds,
                "selector": selector,
                "template": template,
            },
        }))
        .expect("a ReplicaSet");
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(rs) => {
                if initial > 0 {
                    self.event(&format!("Scaled up replica set {name} from 0 to {initial}"))
                        .await;
                }
                Ok((rs, true))
            }
            Err(e) if crate::runtime::already_exists(&e) => {
                // Ours, seen before the cache caught up, or a hash collision:
                // then count it so the next name differs.
                let found = self.rs_api.get(&name).await?;
                let ours = pods::controller_of(&found.metadata)
                    .is_some_and(|o| Some(&o.uid) == self.d.metadata.uid.as_ref());
                if ours
                    && unhashed(found.spec.as_ref().and_then(|s| s.template.as_ref()))
                        == unhashed(Some(&self.spec.template))
                {
                    return Ok((found, false));
                }
                let api: Api<Deployment> = Api::namespaced(
                    self.context.client.clone(),
                    &self.d.namespace().unwrap_or_default(),
                );
                let mut bumped = self.d.clone();
                bumped.status.get_or_insert_default().collision_count =
                    Some(collision_count.unwrap_or(0) + 1);
                api.replace_status(&self.d.name_any(), &PostParams::default(), &bumped)
                    .await?;
                Err(Error::Api(e))
            }
            Err(e) => Err(Error::Api(e)),
        }
    }
}

async fn reconcile(d: Arc<Deployment>, context: Arc<Context>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let pods = context.informers.informer::<Pod>();
    let replica_sets = context.informers.informer::<ReplicaSet>();
    // A restart must change nothing that runs: act only on full caches.
    if !pods.filled() || !replica_sets.filled() {
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }
    let rollout = Rollout {
        d: &d,
        replicas: spec.replicas.unwrap_or(1),
        spec,
        rs_api,
        context: &context,
    };
    let spec = &rollout.spec;

    // The ReplicaSets it controls (adopting orphans its selector matches),
    // oldest first.
    let mut owned = super::claim_from(
        &rollout.rs_api,
        super::selected(&replica_sets, &namespace, &spec.selector),
        &crate::runtime::controller_ref(d.as_ref()),
    )
    .await;
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));

    // Their pods, counted per ReplicaSet.
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let pod_list = super::selected(&pods, &namespace, &spec.selector);
    let size_of = |rs: &ReplicaSet| -> Size {
        let rs_uid = rs.metadata.uid.as_deref();
        let mut size = Size {
            spec: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            ..Size::default()
        };
        for pod in &pod_list {
            if pods::controller_of(&pod.metadata).map(|o| o.uid.as_str()) != rs_uid {
                continue;
            }
            if !pods::is_terminal(pod) {
                size.running += 1;
            }
            if pods::is_active(pod) {
                size.active += 1;
                size.ready += i32::from(pods::is_ready(pod));
                size.available += i32::from(pods::is_available(pod, min_ready, now));
            }
        }
        size
    };

    let template = unhashed(Some(&spec.template));
    let new_index = owned
        .iter()
        .position(|rs| unhashed(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == template);
    let mut new = new_index.map(|i| owned.remove(i));
    let has_new = new.is_some();
    let mut olds = owned;
    let max_old_revision = olds.iter().map(revision).max().unwrap_or(0);
    let paused = spec.paused == Some(true);
    let (surge, unavailable) = surge_and_unavailable(spec);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut created = false;
    let mut requeue = None;

    let scaling = has_new
        && std::iter::once(new.as_ref().expect("checked"))
            .chain(olds.iter())
            .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .any(|rs| {
                rs.annotations().get(DESIRED_REPLICAS) != Some(&rollout.replicas.to_string())
            });
    if paused || scaling {
        // Only follow `replicas`: no rollout while paused.
        if let Some(rs) = new.as_mut() {
            let (rs2, _) = rollout
                .new_replica_set(Some(rs.clone()), max_old_revision, 0)
                .await?;
            *rs = rs2;
        }
        let mut all: Vec<&mut ReplicaSet> = new.iter_mut().chain(olds.iter_mut()).collect();
        let sizes: Vec<i32> = all
            .iter()
            .map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .collect();
        let active = sizes.iter().filter(|s| **s > 0).count();
        let only = sizes.iter().position(|s| *s > 0).or(has_new.then_some(0));
        let targets = if active <= 1
            && let Some(i) = only
        {
            let mut t = vec![0; sizes.len()];
            t[i] = rollout.replicas;
            t
        } else {
            let allowed = rollout.replicas + if recreate { 0 } else { surge };
            proportional_sizes(allowed, &sizes)
        };
        for (rs, size) in all.iter_mut().zip(targets) {
            rollout.scale(rs, size).await?;
        }
    } else {
        let created_rs;
        (created_rs, created) = match new.take() {
            Some(rs) => {
                rollout
                    .new_replica_set(Some(rs), max_old_revision, 0)
                    .await?
            }
            None => {
                let all: i32 = olds.iter().map(|rs| size_of(rs).spec).sum();
                let initial = if recreate {
                    0
                } else {
                    rolling_new_size(rollout.replicas, surge, 0, all)
                };
                rollout
                    .new_replica_set(None, max_old_revision, initial)
                    .await?
            }
        };
        let mut new_rs = created_rs;
        if recreate {
            let mut old_left = false;
            for rs in olds.iter_mut() {
                rollout.scale(rs, 0).await?;
                old_left |= size_of(rs).running > 0;
            }
            if old_left {
                requeue = Some(Duration::from_secs(1));
            } else {
                rollout.scale(&mut new_rs, rollout.replicas).await?;
            }
        } else {
            let old_sizes: Vec<Size> = olds.iter().map(size_of).collect();
            let all: i32 = size_of(&new_rs).spec + old_sizes.iter().map(|s| s.spec).sum::<i32>();
            let target = rolling_new_size(rollout.replicas, surge, size_of(&new_rs).spec, all);
            rollout.scale(&mut new_rs, target).await?;
            let new_size = Size {
                spec: target,
                ..size_of(&new_rs)
            };
            let targets = rolling_old_sizes(rollout.replicas, unavailable, new_size, &old_sizes);
            for (rs, size) in olds.iter_mut().zip(targets) {
                rollout.scale(rs, size).await?;
            }
        }
        new = Some(new_rs);
    }

    // Status, as `kubectl rollout status` reads it.
    let sizes: Vec<Size> = new.iter().chain(olds.iter()).map(size_of).collect();
    let new_size = new.as_ref().map(size_of).unwrap_or_default();
    let available: i32 = sizes.iter().map(|s| s.available).sum();
    let total_spec: i32 = sizes.iter().map(|s| s.spec).sum();
    let previous = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sizes.iter().map(|s| s.active).sum()),
        updated_replicas: Some(new_size.active),
        ready_replicas: Some(sizes.iter().map(|s| s.ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        collision_count: previous.collision_count,
        conditions: previous.conditions.clone(),
        ..Default::default()
    };
    let new_name = new.as_ref().map(|rs| rs.name_any()).unwrap_or_default();
    if available >= rollout.replicas - unavailable {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        );
    }
    let progressing = condition(&status, "Progressing").cloned();
    let complete = status.updated_replicas == Some(rollout.replicas)
        && status.replicas == Some(rollout.replicas)
        && status.available_replicas == Some(rollout.replicas);
    if paused {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now,
        );
    } else if progressing
        .as_ref()
        .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"))
    {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed",
            now,
        );
    } else if complete {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
        );
    } else if created {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{new_name}\""),
            now,
        );
    } else if made_progress(&previous, &status) || progressing.is_none() {
        status
            .conditions
            .get_or_insert_default()
            .retain(|c| c.type_ != "Progressing");
        let since = progressing
            .as_ref()
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.clone());
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{new_name}\" is progressing."),
            now,
        );
        if let (Some(since), Some(c)) = (
            since,
            status
                .conditions
                .iter_mut()
                .flatten()
                .find(|c| c.type_ == "Progressing"),
        ) {
            c.last_transition_time = Some(since);
        }
    } else if let Some(deadline) = spec.progress_deadline_seconds
        && let Some(c) = progressing
            .as_ref()
            .filter(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
        && let Some(updated) = c.last_update_time.as_ref()
    {
        let due = updated.0.as_second() + i64::from(deadline);
        if due <= now.as_second() {
            set_condition(
                &mut status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                now,
            );
        } else {
            let wait = Duration::from_secs((due - now.as_second()) as u64 + 1);
            requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
        }
    }
    // Pods turning available after minReadySeconds change nothing we watch.
    if min_ready > 0 && !complete {
        requeue = Some(requeue.map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))));
    }

    // The Deployment carries its new ReplicaSet's revision.
    if let Some(rs) = new.as_ref()
        && let Some(rev) = rs.annotations().get(REVISION)
        && d.annotations().get(REVISION) != Some(rev)
    {
        // An update, not a patch: upstream's deployment controller holds only `update`.
        let api: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
        let mut annotated = (*d).clone();
        annotated
            .annotations_mut()
            .insert(REVISION.to_string(), rev.clone());
        api.replace(&d.name_any(), &PostParams::default(), &annotated)
            .await?;
    }
    let api: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    super::write_status(&api, &d, &previous, &status).await?;
    if complete && !paused {
        cleanup(&rollout, &olds).await;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
async fn cleanup(rollout: &Rollout<'_>, olds: &[ReplicaSet]) {
    let limit = rollout.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut candidates: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    if candidates.len() <= limit {
        return;
    }
    candidates.sort_by_key(|rs| revision(rs));
    let excess = candidates.len() - limit;
    for rs in candidates.into_iter().take(excess) {
        let idle = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
            && rs.status.as_ref().map_or(0, |s| s.replicas) == 0;
        if idle {
            let _ = rollout
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::background())
                .await;
        }
    }
}

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Sets a condition as upstream's deployment controller does
/// ([`conditions::set`]).
fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    conditions::set(
        status.conditions.get_or_insert_default(),
        DeploymentCondition {
            type_: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        },
    );
}

/// Whether the rollout moved since the last status: more updated, ready or
/// available pods, or fewer old ones.
fn made_progress(before: &DeploymentStatus, after: &DeploymentStatus) -> bool {
    let old = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    after.updated_replicas > before.updated_replicas
        || after.ready_replicas > before.ready_replicas
        || after.available_replicas > before.available_replicas
        || old(after) < old(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(strategy: Value) -> DeploymentSpec {
        serde_json::from_value(json!({
            "replicas": 4,
            "selector": {},
            "template": {},
            "strategy": strategy,
        }))
        .unwrap()
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let d = spec(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        assert_eq!(surge_and_unavailable(&d), (1, 1));
        let d = spec(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "10%", "maxUnavailable": "10%"}}),
        );
        assert_eq!(surge_and_unavailable(&d), (1, 0));
        let d = spec(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
        );
        assert_eq!(surge_and_unavailable(&d), (0, 1));
        assert_eq!(
            surge_and_unavailable(&spec(json!({"type": "Recreate"}))),
            (0, 4)
        );
    }

    /// Steps a rolling update of 3 replicas (surge 1, unavailable 0) the way
    /// the controller does, every pod turning available at once, and checks
    /// the bounds at each step.
    #[test]
    fn a_rolling_update_stays_within_its_bounds() {
        let (replicas, surge, unavailable) = (3, 1, 0);
        let mut new = 0;
        let mut old = 3;
        for _ in 0..10 {
            new = rolling_new_size(replicas, surge, new, new + old);
            assert!(new + old <= replicas + surge);
            let avail = |n| Size {
                spec: n,
                active: n,
                ready: n,
                available: n,
                running: n,
            };
            old = rolling_old_sizes(replicas, unavailable, avail(new), &[avail(old)])[0];
            assert!(new + old >= replicas - unavailable);
        }
        assert_eq!((new, old), (3, 0));
    }

    #[test]
    fn unavailable_old_pods_go_first() {
        let new = Size {
            spec: 1,
            available: 0,
            ..Size::default()
        };
        let broken = Size {
            spec: 2,
            available: 0,
            ..Size::default()
        };
        let healthy = Size {
            spec: 3,
            available: 3,
            ..Size::default()
        };
        // 4 wanted, 1 may be unavailable: the broken pods go, the healthy stay.
        assert_eq!(rolling_old_sizes(4, 1, new, &[broken, healthy]), vec![0, 3]);
    }

    #[test]
    fn scaling_shares_the_change_in_proportion() {
        assert_eq!(proportional_sizes(10, &[2, 3]), vec![4, 6]);
        assert_eq!(proportional_sizes(1, &[2, 2]), vec![1, 0]);
        assert_eq!(proportional_sizes(3, &[3]), vec![3]);
    }
}
