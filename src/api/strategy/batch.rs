//! batch/v1 rules: Job (generated selector), CronJob.

use serde_json::{Value, json};

use super::{
    Strategy, default_field, default_template, validate_non_negative, validate_selector_matches,
};
use crate::api::FieldError;
use crate::api::strategy::pod;

/// The label a Job's generated selector uses.
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";

/// Defaults for jobs and cron jobs.
pub fn default(resource: &str, obj: &mut Value) {
    match resource {
        "jobs" => default_job_spec(obj.pointer_mut("/spec")),
        "cronjobs" => {
            default_field(obj, "/spec/concurrencyPolicy", json!("Allow"));
            default_field(obj, "/spec/suspend", json!(false));
            default_field(obj, "/spec/successfulJobsHistoryLimit", json!(3));
            default_field(obj, "/spec/failedJobsHistoryLimit", json!(1));
            default_job_spec(obj.pointer_mut("/spec/jobTemplate/spec"));
        }
        _ => {}
    }
}

fn default_job_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec else {
        return;
    };
    let neither = spec.get("completions").is_none() && spec.get("parallelism").is_none();
    if neither {
        default_field(spec, "/completions", json!(1));
    }
    default_field(spec, "/parallelism", json!(1));
    default_field(spec, "/backoffLimit", json!(6));
    default_field(spec, "/completionMode", json!("NonIndexed"));
    default_field(spec, "/suspend", json!(false));
    default_field(spec, "/podReplacementPolicy", json!("TerminatingOrFailed"));
    default_field(spec, "/manualSelector", Value::Null);
    if spec.get("manualSelector").is_some_and(Value::is_null)
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("manualSelector");
    }
    default_template(spec.get_mut("template"));
}

/// Unless `manualSelector`, a job selects its pods by its own uid.
pub fn prepare_job_for_create(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = job
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    default_field(job, "/spec/selector/matchLabels", json!({}));
    if let Some(labels) = job
        .pointer_mut("/spec/selector/matchLabels")
        .and_then(Value::as_object_mut)
    {
        labels.insert(CONTROLLER_UID.into(), uid.clone());
    }
    default_field(job, "/spec/template/metadata/labels", json!({}));
    if let Some(labels) = job
        .pointer_mut("/spec/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        for (key, value) in [
            (CONTROLLER_UID, uid.clone()),
            ("batch.kubernetes.io/job-name", name.clone()),
            ("controller-uid", uid),
            ("job-name", name),
        ] {
            labels.insert(key.into(), value);
        }
    }
}

/// The generated selector and template labels may not change.
pub fn prepare_job_for_update(new: &mut Value, old: &Value) {
    if let Some(selector) = old.pointer("/spec/selector").cloned() {
        default_field(new, "/spec/selector", selector);
    }
}

/// Job checks.
pub fn validate_job(job: &Value) -> Vec<FieldError> {
    let mut causes = validate_selector_matches(job);
    for (pointer, field) in [
        ("/spec/parallelism", "spec.parallelism"),
        ("/spec/completions", "spec.completions"),
        ("/spec/backoffLimit", "spec.backoffLimit"),
    ] {
        causes.extend(validate_non_negative(job, pointer, field));
    }
    causes.extend(validate_template(
        job.pointer("/spec/template/spec"),
        "spec.template.spec",
    ));
    causes
}

/// A CronJob's schedule as upstream's standard parser reads it: five
/// fields (minute hour day-of-month month day-of-week; day-of-month and
/// day-of-week match either) or a macro such as `@hourly`.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| format!("unparseable schedule: {e}"))
}

/// A CronJob's `timeZone` (unset: the node's local time).
pub fn time_zone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match name {
        None => Ok(jiff::tz::TimeZone::system()),
        Some(name) => {
            jiff::tz::TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))
        }
    }
}

/// CronJob checks.
pub fn validate_cronjob(cj: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    match cj.pointer("/spec/schedule").and_then(Value::as_str) {
        None | Some("") => causes.push(FieldError::required("spec.schedule", "")),
        Some(schedule) => {
            if let Err(e) = parse_schedule(schedule) {
                causes.push(FieldError::invalid("spec.schedule", &json!(schedule), &e));
            }
        }
    }
    if let Some(zone) = cj.pointer("/spec/timeZone").and_then(Value::as_str)
        && let Err(e) = time_zone(Some(zone))
    {
        causes.push(FieldError::invalid("spec.timeZone", &json!(zone), &e));
    }
    causes.extend(validate_template(
        cj.pointer("/spec/jobTemplate/spec/template/spec"),
        "spec.jobTemplate.spec.template.spec",
    ));
    causes
}

fn validate_template(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let Some(spec) = spec else {
        return vec![FieldError::required(format!("{path}.containers"), "")];
    };
    let mut causes = pod::validate_spec(spec, path);
    let policy = spec
        .get("restartPolicy")
        .cloned()
        .unwrap_or(json!("Always"));
    if !matches!(policy.as_str(), Some("OnFailure" | "Never")) {
        causes.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            &policy,
            &["OnFailure", "Never"],
        ));
    }
    causes
}

/// Jobs: a generated selector, upstream's defaults.
#[derive(Debug)]
pub struct Jobs;

impl Strategy for Jobs {
    fn prepare_for_create(&self, obj: &mut Value) {
        prepare_job_for_create(obj);
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        prepare_job_for_update(new, old);
    }

    fn default(&self, obj: &mut Value) {
        default("jobs", obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_job(obj)
    }
}

/// CronJobs.
#[derive(Debug)]
pub struct CronJobs;

impl Strategy for CronJobs {
    fn default(&self, obj: &mut Value) {
        default("cronjobs", obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_cronjob(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_gets_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}}});
        default("jobs", &mut job);
        prepare_job_for_create(&mut job);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"][CONTROLLER_UID],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(job["spec"]["completions"], 1);
        assert!(validate_job(&job).is_empty());
    }

    #[test]
    fn schedules_parse_as_standard_cron() {
        assert!(parse_schedule("*/1 * * * *").is_ok());
        assert!(parse_schedule("0 3 * * MON-FRI").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(
            parse_schedule("* * * * * *").is_err(),
            "seconds are not standard"
        );
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("TZ=UTC * * * * *").is_err());
        assert!(time_zone(Some("Etc/UTC")).is_ok());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn job_needs_terminating_restart_policy() {
        let mut job = json!({"metadata": {"uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        default("jobs", &mut job);
        prepare_job_for_create(&mut job);
        assert_eq!(
            validate_job(&job)[0].field,
            "spec.template.spec.restartPolicy"
        );
    }
}
