//! Jobs: run pods from the template until `completions` of them have
//! succeeded (NonIndexed) or every index 0..completions has (Indexed), at
//! most `parallelism` at a time; fail after `backoffLimit` failures (with
//! upstream's doubling back-off between new pods) or `activeDeadlineSeconds`;
//! stop the pods while suspended; delete a finished Job once its
//! `ttlSecondsAfterFinished` has passed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::api::values::{conditions, pods};
use crate::telemetry::events::Recorder;

/// Annotation and label naming an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const COMPONENT: &str = "job-controller";
/// Upstream's pod-failure back-off: 10 s, doubling, at most 6 min.
const BACKOFF_BASE: u64 = 10;
const BACKOFF_MAX: u64 = 360;

/// Runs the controller: woken by its Jobs and by changes to the pods
/// they control, which it reads from the shared pod cache.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) = super::over_owned_pods::<Job>(&context).await {
        super::drive(controller, context, reconcile).await;
    }
}

/// The job has a Complete or Failed condition: it is done.
pub fn finished(status: Option<&JobStatus>) -> Option<(&'static str, Option<Timestamp>)> {
    status?.conditions.iter().flatten().find_map(|c| {
        let kind = match c.type_.as_str() {
            "Complete" => "Complete",
            "Failed" => "Failed",
            _ => return None,
        };
        (c.status == "True").then(|| (kind, c.last_transition_time.as_ref().map(|t| t.0)))
    })
}

/// The index an Indexed Job's pod runs.
fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

/// Indexes as upstream's `completedIndexes` writes them: "0-2,5".
pub fn index_ranges(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// How many pods should run now, given what has succeeded.
pub fn wanted_active(spec: &JobSpec, succeeded: i32) -> i32 {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    match spec.completions {
        Some(completions) => parallelism.min((completions - succeeded).max(0)),
        // A work queue: done once one pod has succeeded.
        None if succeeded > 0 => 0,
        None => parallelism,
    }
}

/// The delay before replacing the `failures`th failed pod.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(failures - 1).unwrap_or(0).min(16);
    Duration::from_secs((BACKOFF_BASE << exp).min(BACKOFF_MAX))
}

/// When a failed pod finished (its last container's end, else its creation).
fn failed_at(pod: &Pod) -> Option<Timestamp> {
    let ended = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    ended.or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets `type_` (replacing one of the same type unless it already says the
/// same: [`conditions::set`]).
fn set_condition(status: &mut JobStatus, new: JobCondition) {
    conditions::set(status.conditions.get_or_insert_default(), new);
}

async fn reconcile(job: Arc<Job>, context: Arc<Context>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let now = Timestamp::now();
    if let Some((_, at)) = finished(job.status.as_ref()) {
        // Upstream's TTL-after-finished controller deletes Jobs, with its own rights.
        let ttl = Api::namespaced(
            (context.identities)("ttl-after-finished-controller"),
            &namespace,
        );
        return expire(&ttl, &job, at.unwrap_or(now), now).await;
    }
    let spec = job.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let selector = spec.selector.clone().unwrap_or_default();
    let owner = crate::runtime::controller_ref(job.as_ref());
    // Act only on a full cache, and only once it shows this Job's own
    // last creates and deletes (else it would count without them).
    let key = format!("{namespace}/{}", job.name_any());
    let Some((cache, in_sync)) = super::pod_cache(&context, &key) else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let candidates = super::selected(&cache, &namespace, &selector);
    let owned = super::claim_from(&pods_api, candidates, &owner).await;
    let recorder = Recorder::new(context.client.clone(), COMPONENT, None);

    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    let mut active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let succeeded_pods: Vec<&Pod> = owned
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Succeeded"))
        .collect();
    let failed_pods: Vec<&Pod> = owned
        .iter()
        .filter(|p| phase(p).as_deref() == Some("Failed"))
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completed_indexes: BTreeSet<i32> =
        succeeded_pods.iter().filter_map(|p| index_of(p)).collect();
    let succeeded = if indexed {
        completed_indexes.len() as i32
    } else {
        succeeded_pods.len() as i32
    };
    let restarts: i32 = if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure")
    {
        active
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let failures = failed_pods.len() as i32 + restarts;

    let previous = job.status.clone().unwrap_or_default();
    let mut status = JobStatus {
        conditions: previous.conditions.clone(),
        start_time: previous.start_time.clone(),
        completed_indexes: indexed.then(|| index_ranges(&completed_indexes)),
        ..Default::default()
    };
    let suspended = spec.suspend == Some(true);
    let mut requeue: Option<Duration> = None;
    let mut stop_all = false;

    let deadline_passed = spec
        .active_deadline_seconds
        .zip(status.start_time.as_ref())
        .is_some_and(|(d, start)| now.as_second() - start.0.as_second() >= d);
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if complete {
        let reason = "CompletionsReached";
        let message = "Reached expected number of succeeded pods";
        set_condition(
            &mut status,
            condition("SuccessCriteriaMet", reason, message, now),
        );
        set_condition(&mut status, condition("Complete", reason, message, now));
        status.completion_time = Some(Time(now));
        stop_all = true;
        recorder
            .record(job.as_ref(), "Normal", "Completed", "Job completed")
            .await;
    } else if let Some((reason, message)) = if failures > spec.backoff_limit.unwrap_or(6) {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline_passed && !suspended {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    } {
        set_condition(
            &mut status,
            condition("FailureTarget", reason, message, now),
        );
        set_condition(&mut status, condition("Failed", reason, message, now));
        stop_all = true;
        recorder
            .record(job.as_ref(), "Warning", reason, message)
            .await;
    } else if suspended {
        set_condition(
            &mut status,
            condition("Suspended", "JobSuspended", "Job suspended", now),
        );
        status.start_time = None;
        stop_all = true;
    } else {
        if status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        if let Some(c) = status
            .conditions
            .iter_mut()
            .flatten()
            .find(|c| c.type_ == "Suspended" && c.status == "True")
        {
            *c = JobCondition {
                status: "False".into(),
                ..condition("Suspended", "JobResumed", "Job resumed", now)
            };
        }
        let wanted = wanted_active(&spec, succeeded) as usize;
        // After a failure, new pods wait out the back-off.
        let wait = failed_pods
            .iter()
            .filter_map(|p| failed_at(p))
            .max()
            .map(|last| {
                let due =
                    last.as_millisecond() + backoff(failed_pods.len() as i32).as_millis() as i64;
                Duration::from_millis(u64::try_from(due - now.as_millisecond()).unwrap_or(0))
            })
            .filter(|d| !d.is_zero());
        if !in_sync {
            // The cache's news of those writes wakes it; this is the fallback.
            requeue = Some(Duration::from_secs(1));
        } else if active.len() < wanted
            && let Some(wait) = wait
        {
            requeue = Some(wait);
        } else if active.len() < wanted {
            let mut free: Vec<Option<i32>> = if indexed {
                let busy: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                (0..spec.completions.unwrap_or(0))
                    .filter(|i| !completed_indexes.contains(i) && !busy.contains(i))
                    .map(Some)
                    .collect()
            } else {
                vec![None; wanted]
            };
            free.truncate(wanted - active.len());
            for index in free {
                let pod = job_pod(&job, &owner, &namespace, index);
                let created = pods_api.create(&PostParams::default(), &pod).await?;
                context.expectations.wrote(&key, &created, false);
                recorder
                    .record(
                        job.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", created.name_any()),
                    )
                    .await;
            }
        } else if active.len() > wanted {
            // The newest go first.
            active.sort_by_key(|p| {
                std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0))
            });
            for pod in active.drain(..active.len() - wanted) {
                super::delete_owned(&context, &key, &pods_api, pod).await;
            }
        }
        if let Some(d) = spec.active_deadline_seconds
            && let Some(start) = status.start_time.as_ref()
        {
            let left = (start.0.as_second() + d - now.as_second()).max(0) as u64;
            requeue = Some(requeue.map_or(Duration::from_secs(left), |r| {
                r.min(Duration::from_secs(left))
            }));
        }
    }
    if stop_all {
        for pod in active.drain(..) {
            let _ = pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await;
        }
    }
    status.active = Some(active.len() as i32).filter(|n| *n > 0);
    status.ready = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
    status.succeeded = Some(succeeded_pods.len() as i32).filter(|n| *n > 0);
    status.failed = Some(failed_pods.len() as i32).filter(|n| *n > 0);
    status.terminating = Some(
        owned
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !pods::is_terminal(p))
            .count() as i32,
    );
    super::write_status(&jobs, &job, &previous, &status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// A pod for the job; Indexed pods carry their index (annotation, label,
/// `JOB_COMPLETION_INDEX`) and a hostname made of it.
fn job_pod(
    job: &Job,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    namespace: &str,
    index: Option<i32>,
) -> Pod {
    let spec = job.spec.as_ref();
    let mut pod = super::pod_from_template(spec.map(|s| &s.template), owner.clone(), namespace);
    if let Some(index) = index {
        let name = job.name_any();
        pod.metadata.generate_name = Some(format!("{name}-{index}-"));
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(COMPLETION_INDEX.into(), index.to_string());
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert(COMPLETION_INDEX.into(), index.to_string());
        if let Some(pod_spec) = pod.spec.as_mut() {
            pod_spec.hostname.get_or_insert(format!("{name}-{index}"));
            let env: k8s_openapi::api::core::v1::EnvVar = serde_json::from_value(json!({
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}},
            }))
            .expect("an EnvVar");
            for c in pod_spec
                .containers
                .iter_mut()
                .chain(pod_spec.init_containers.iter_mut().flatten())
            {
                c.env.get_or_insert_default().push(env.clone());
            }
        }
    }
    pod
}

/// Deletes a finished job once its ttlSecondsAfterFinished has passed
/// (foreground, so its pods go first), as upstream's TTL controller does.
async fn expire(
    jobs: &Api<Job>,
    job: &Job,
    finished_at: Timestamp,
    now: Timestamp,
) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let due = finished_at.as_second() + i64::from(ttl);
    if due > now.as_second() {
        return Ok(Action::requeue(Duration::from_secs(
            (due - now.as_second()) as u64,
        )));
    }
    let params = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
        preconditions: Some(kube::api::Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_read_as_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 5, 7, 8].into();
        assert_eq!(index_ranges(&set), "0-2,5,7-8");
        assert_eq!(index_ranges(&BTreeSet::new()), "");
    }

    #[test]
    fn parallelism_is_capped_by_what_is_left() {
        let spec = |completions: Option<i32>| JobSpec {
            parallelism: Some(2),
            completions,
            ..Default::default()
        };
        assert_eq!(wanted_active(&spec(Some(3)), 0), 2);
        assert_eq!(wanted_active(&spec(Some(3)), 2), 1);
        assert_eq!(wanted_active(&spec(Some(3)), 3), 0);
        assert_eq!(wanted_active(&spec(None), 0), 2);
        assert_eq!(wanted_active(&spec(None), 1), 0);
    }

    #[test]
    fn back_off_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), Duration::from_secs(360));
    }
}
