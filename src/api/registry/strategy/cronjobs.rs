//! CronJobs: upstream's defaults, a schedule and time zone that parse, a
//! Job template that passes a Job's rules.

use serde_json::{Value, json};

use super::jobs::{default_job_spec, validate_template};
use super::{Strategy, default_field};
use crate::api::FieldError;
use crate::api::values::cron::{parse_schedule, time_zone};

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

/// CronJobs.
#[derive(Debug)]
pub struct CronJobs;

impl Strategy for CronJobs {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "/spec/concurrencyPolicy", json!("Allow"));
        default_field(obj, "/spec/suspend", json!(false));
        default_field(obj, "/spec/successfulJobsHistoryLimit", json!(3));
        default_field(obj, "/spec/failedJobsHistoryLimit", json!(1));
        default_job_spec(obj.pointer_mut("/spec/jobTemplate/spec"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_cronjob(obj)
    }
}
