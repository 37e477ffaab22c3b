//! apps/v1 rules: Deployment, ReplicaSet, StatefulSet, DaemonSet.

use serde_json::{Value, json};

use super::pods;
use super::{
    Strategy, default_field, default_template, validate_non_negative, validate_selector_matches,
};
use crate::api::FieldError;

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
            // Stored templates read back as claims with v1 defaults.
            if let Some(templates) = obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for claim in templates {
                    default_field(claim, "/apiVersion", json!("v1"));
                    default_field(claim, "/kind", json!("PersistentVolumeClaim"));
                    super::persistent_volume_claims::default_claim(claim);
                    default_field(claim, "/status/phase", json!("Pending"));
                }
            }
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
        Some(spec) => causes.extend(pods::validate_spec(spec, "spec.template.spec")),
        None => causes.push(FieldError::required("spec.template.spec.containers", "")),
    }
    let templates = obj
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array);
    for (i, claim) in templates.into_iter().flatten().enumerate() {
        causes.extend(super::persistent_volume_claims::validate_claim_spec(
            &claim["spec"],
            &format!("spec.volumeClaimTemplates[{i}].spec"),
        ));
    }
    causes
}

/// The StatefulSet spec fields an update may change (upstream's list).
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// A StatefulSet's identity (selector, service, claim templates, pod
/// management) is fixed at creation.
pub fn validate_statefulset_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let fixed = |set: &Value| {
        let mut spec = set.get("spec").cloned().unwrap_or(json!({}));
        if let Some(map) = spec.as_object_mut() {
            map.retain(|k, v| !STATEFULSET_MUTABLE.contains(&k.as_str()) && !v.is_null());
        }
        spec
    };
    if fixed(new) == fixed(old) {
        return vec![];
    }
    vec![FieldError::forbidden(
        "spec",
        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
    )]
}

/// An apps/v1 workload, by its resource name (`deployments`, …).
#[derive(Debug)]
pub struct Workload(pub &'static str);

impl Strategy for Workload {
    fn default(&self, obj: &mut Value) {
        default(self.0, obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        match self.0 {
            "statefulsets" => validate_statefulset_update(new, old),
            _ => vec![],
        }
    }
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

    #[test]
    fn statefulset_claim_templates_are_fixed() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "s",
                                  "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        let scaled = json!({"spec": {"replicas": 3, "serviceName": "s",
                                     "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        assert!(validate_statefulset_update(&scaled, &old).is_empty());
        let grown = json!({"spec": {"replicas": 1, "serviceName": "s",
                                    "volumeClaimTemplates": [{"metadata": {"name": "data2"}}]}});
        assert_eq!(validate_statefulset_update(&grown, &old)[0].field, "spec");
    }
}
