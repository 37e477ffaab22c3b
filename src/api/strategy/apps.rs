//! apps/v1 rules: Deployment, ReplicaSet, StatefulSet, DaemonSet.

use serde_json::{Value, json};

use super::{default_field, default_template, validate_non_negative, validate_selector_matches};
use crate::api::FieldError;
use crate::api::strategy::pod;

/// Upstream defaults per workload.
pub fn default(resource: &str, obj: &mut Value) {
    match resource {
        "deployments" => {
            default_field(obj, "/spec/replicas", json!(1));
            default_field(obj, "/spec/strategy/type", json!("RollingUpdate"));
            if obj.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
                default_field(
                    obj,
                    "/spec/strategy/rollingUpdate/maxUnavailable",
                    json!("25%"),
                );
                default_field(obj, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
            }
            default_field(obj, "/spec/revisionHistoryLimit", json!(10));
            default_field(obj, "/spec/progressDeadlineSeconds", json!(600));
        }
        "replicasets" => default_field(obj, "/spec/replicas", json!(1)),
        "statefulsets" => {
            default_field(obj, "/spec/replicas", json!(1));
            default_field(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
            default_field(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if obj
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                == Some("RollingUpdate")
            {
                default_field(
                    obj,
                    "/spec/updateStrategy/rollingUpdate/partition",
                    json!(0),
                );
            }
            default_field(obj, "/spec/revisionHistoryLimit", json!(10));
            default_field(
                obj,
                "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
                json!("Retain"),
            );
            default_field(
                obj,
                "/spec/persistentVolumeClaimRetentionPolicy/whenScaled",
                json!("Retain"),
            );
        }
        "daemonsets" => {
            default_field(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
            if obj
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                == Some("RollingUpdate")
            {
                default_field(
                    obj,
                    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                    json!(1),
                );
                default_field(obj, "/spec/updateStrategy/rollingUpdate/maxSurge", json!(0));
            }
            default_field(obj, "/spec/revisionHistoryLimit", json!(10));
        }
        _ => return,
    }
    default_template(obj.pointer_mut("/spec/template"));
}

/// Selector, template and replica checks shared by the workloads.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut causes = validate_selector_matches(obj);
    causes.extend(validate_non_negative(
        obj,
        "/spec/replicas",
        "spec.replicas",
    ));
    match obj.pointer("/spec/template/spec") {
        Some(spec) => causes.extend(pod::validate_spec(spec, "spec.template.spec")),
        None => causes.push(FieldError::required("spec.template.spec.containers", "")),
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        default("deployments", &mut d);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        default("deployments", &mut r);
        assert!(r.pointer("/spec/strategy/rollingUpdate").is_none());
    }

    #[test]
    fn negative_replicas_rejected() {
        let d = json!({"spec": {"replicas": -1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        assert_eq!(validate(&d)[0].field, "spec.replicas");
    }
}
