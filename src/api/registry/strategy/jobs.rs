//! Jobs (upstream's job strategy): upstream's defaults, a selector generated
//! from the Job's uid, a pod template that must not restart forever. The
//! spec defaults and template rules CronJobs share are here.

use serde_json::{Value, json};

use super::pods;
use super::{
    Strategy, default_field, default_template, validate_non_negative, validate_selector_matches,
};
use crate::api::FieldError;

/// The label a Job's generated selector uses.
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";

/// Upstream's defaults for a Job spec (a Job's, or a CronJob's template).
pub(super) fn default_job_spec(spec: Option<&mut Value>) {
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

/// A Job template's pod spec: a pod's rules, restarted only on failure or never.
pub(super) fn validate_template(spec: Option<&Value>, path: &str) -> Vec<FieldError> {
    let Some(spec) = spec else {
        return vec![FieldError::required(format!("{path}.containers"), "")];
    };
    let mut causes = pods::validate_spec(spec, path);
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
        default_job_spec(obj.pointer_mut("/spec"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_job(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_gets_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}}});
        Jobs.default(&mut job);
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
    fn job_needs_terminating_restart_policy() {
        let mut job = json!({"metadata": {"uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        Jobs.default(&mut job);
        prepare_job_for_create(&mut job);
        assert_eq!(
            validate_job(&job)[0].field,
            "spec.template.spec.restartPolicy"
        );
    }
}
