//! CronJobs: a Job from the template at each scheduled time (in
//! `timeZone`, else the node's local time), as `concurrencyPolicy` allows
//! (Allow, Forbid, Replace), skipped when later than
//! `startingDeadlineSeconds`; finished Jobs beyond the history limits are
//! deleted; the status lists the active Jobs and the last schedule and
//! success times.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::job::finished;
use super::{Context, Error};
use crate::api::values::cron::{parse_schedule, time_zone};
use crate::api::values::pods;
use crate::telemetry::events::Recorder;

/// The annotation holding the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const COMPONENT: &str = "cronjob-controller";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    let owning = crate::runtime::shared_controller_owning::<CronJob, Job>;
    if let Some(controller) = owning(&context.informers).await {
        super::drive(controller, context, reconcile).await;
    }
}

/// The latest scheduled time after `since` and at or before `now`, and the
/// next one after `now`.
pub fn due(
    schedule: &croner::Cron,
    zone: &jiff::tz::TimeZone,
    since: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let now_zoned = now.to_zoned(zone.clone());
    let last = schedule
        .find_previous_occurrence(&now_zoned, true)
        .ok()
        .map(|z| z.timestamp())
        .filter(|t| *t > since);
    let next = schedule
        .find_next_occurrence(&now_zoned, false)
        .ok()
        .map(|z| z.timestamp());
    (last, next)
}

/// A Job's name for a scheduled time: the CronJob's and the minutes since
/// the epoch, as upstream names them (so a time is never run twice).
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second() / 60)
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cj: Arc<CronJob>, context: Arc<Context>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cj.namespace().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let cached = context.informers.informer::<Job>();
    if !cached.filled() {
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let mut jobs: Vec<Job> = cached
        .store
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|j| pods::controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .map(|j| (**j).clone())
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    let recorder = Recorder::new(context.client.clone(), COMPONENT, None);

    // History: the oldest finished Jobs beyond the limits go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs
            .iter()
            .filter(|j| finished(j.status.as_ref()).is_some_and(|(k, _)| k == kind))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        for job in done.into_iter().take(excess) {
            if jobs_api
                .delete(&job.name_any(), &DeleteParams::background())
                .await
                .is_ok()
            {
                recorder
                    .record(
                        cj.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted job {}", job.name_any()),
                    )
                    .await;
            }
        }
    }

    let previous = cj.status.clone().unwrap_or_default();
    let mut active: Vec<ObjectReference> = jobs
        .iter()
        .filter(|j| {
            finished(j.status.as_ref()).is_none() && j.metadata.deletion_timestamp.is_none()
        })
        .map(reference)
        .collect();
    let last_success = jobs
        .iter()
        .filter(|j| finished(j.status.as_ref()).is_some_and(|(k, _)| k == "Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .chain(previous.last_successful_time.clone())
        .max_by_key(|t| t.0);
    let mut status = CronJobStatus {
        active: None,
        last_schedule_time: previous.last_schedule_time.clone(),
        last_successful_time: last_success,
    };

    let mut requeue = None;
    let schedule = parse_schedule(&spec.schedule);
    let zone = time_zone(spec.time_zone.as_deref());
    if spec.suspend != Some(true)
        && let (Ok(schedule), Ok(zone)) = (&schedule, &zone)
    {
        let now = Timestamp::now();
        let since = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        let (last, next) = due(schedule, zone, since, now);
        requeue = next.map(|n| {
            Duration::from_millis(
                u64::try_from(n.as_millisecond() - now.as_millisecond()).unwrap_or(0) + 100,
            )
        });
        if let Some(scheduled) = last {
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|d| scheduled.as_second() + d < now.as_second());
            if too_late {
                recorder
                    .record(
                        cj.as_ref(),
                        "Warning",
                        "MissSchedule",
                        &format!("Missed scheduled time to start a job: {scheduled}"),
                    )
                    .await;
                status.last_schedule_time = Some(Time(scheduled));
            } else if spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty() {
                // Tried again when the running Job finishes (or at the next time).
            } else {
                if spec.concurrency_policy.as_deref() == Some("Replace") {
                    for job in active.drain(..) {
                        let name = job.name.unwrap_or_default();
                        let _ = jobs_api.delete(&name, &DeleteParams::background()).await;
                        recorder
                            .record(
                                cj.as_ref(),
                                "Normal",
                                "SuccessfulDelete",
                                &format!("Deleted job {name}"),
                            )
                            .await;
                    }
                }
                let created = create_job(&jobs_api, &cj, scheduled).await?;
                recorder
                    .record(
                        cj.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created job {}", created.name_any()),
                    )
                    .await;
                status.last_schedule_time = Some(Time(scheduled));
                active.push(reference(&created));
            }
        }
    }
    if let Err(e) = schedule.as_ref().map(|_| ()).and(zone.as_ref().map(|_| ())) {
        tracing::debug!(err = %e, cronjob = %cj.name_any(), "unusable schedule");
    }
    status.active = Some(active).filter(|a| !a.is_empty());
    let api: Api<CronJob> = Api::namespaced(context.client.clone(), &namespace);
    super::write_status(&api, &cj, &previous, &status).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Makes the Job for `scheduled` (already made: that one).
async fn create_job(jobs: &Api<Job>, cj: &CronJob, scheduled: Timestamp) -> Result<Job, Error> {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    let name = job_name(&cj.name_any(), scheduled);
    metadata.name = Some(name.clone());
    metadata.namespace = cj.namespace();
    metadata.owner_references = Some(vec![crate::runtime::controller_ref(cj)]);
    metadata
        .annotations
        .get_or_insert_default()
        .insert(SCHEDULED_TIMESTAMP.into(), scheduled.to_string());
    let job = Job {
        metadata,
        spec: template.spec,
        ..Default::default()
    };
    match jobs.create(&PostParams::default(), &job).await {
        Ok(job) => Ok(job),
        Err(e) if crate::runtime::already_exists(&e) => Ok(jobs.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_missed_time_and_the_next_are_found() {
        let every_minute = parse_schedule("* * * * *").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let (last, next) = due(
            &every_minute,
            &utc,
            t("2026-01-01T00:00:30Z"),
            t("2026-01-01T00:03:10Z"),
        );
        assert_eq!(last, Some(t("2026-01-01T00:03:00Z")));
        assert_eq!(next, Some(t("2026-01-01T00:04:00Z")));
        let (last, _) = due(
            &every_minute,
            &utc,
            t("2026-01-01T00:03:00Z"),
            t("2026-01-01T00:03:10Z"),
        );
        assert_eq!(last, None, "already run");
        let hourly = parse_schedule("0 * * * *").unwrap();
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let (_, next) = due(
            &hourly,
            &berlin,
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:10:00Z"),
        );
        assert_eq!(next, Some(t("2026-01-01T01:00:00Z")));
        assert_eq!(
            job_name("hello", t("2026-01-01T00:03:00Z")),
            "hello-29453763"
        );
    }
}
