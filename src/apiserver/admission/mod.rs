//! Admission: checks and changes a write goes through after authorization
//! and before storage. Each plugin is a pure decision here; `ApiState`'s
//! admit hooks call them.

pub mod certificates;
pub mod limit_ranger;
pub mod node_restriction;
pub mod pod_security;
pub mod pod_security_config;
pub mod service_account;
pub mod storage;
pub mod webhook;

use serde_json::Value;

use crate::api::ApiError;

/// Pod Security admission for one write: a pod the namespace's `enforce`
/// level forbids is refused with upstream's message; `warn` violations,
/// and any violation of a workload's pod template, come back as warnings.
/// `namespace` is the namespace object (its labels choose the levels).
pub fn pod_security(
    kind: &str,
    name: &str,
    namespace: &Value,
    new: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let (metadata, spec, enforce) = if kind == "Pod" {
        if old.is_some_and(|old| !pod_security::is_significant_pod_update(new, old)) {
            return Ok(vec![]);
        }
        (&new["metadata"], &new["spec"], true)
    } else {
        match pod_security::pod_template_of(kind, new) {
            Some((metadata, spec)) => (metadata, spec, false),
            None => return Ok(vec![]),
        }
    };
    let (policy, errors) = pod_security::Policy::from_namespace(namespace);
    let evaluation = pod_security::evaluate(
        &policy,
        &errors,
        metadata,
        spec,
        enforce,
        &pod_security::CheckOptions::default(),
    );
    match evaluation.denial {
        Some(denial) if !evaluation.allowed => Err(ApiError::forbidden("", "pods", name, denial)),
        _ => Ok(evaluation.warnings),
    }
}

/// Pod Security labels on a namespace must name a level and version
/// (422 otherwise, as upstream's admission answers).
pub fn pod_security_labels(namespace: &Value) -> Result<(), ApiError> {
    let (_, errors) = pod_security::Policy::from_namespace(namespace);
    if errors.is_empty() {
        return Ok(());
    }
    let causes = errors
        .iter()
        .map(|e| crate::api::FieldError {
            reason: "FieldValueInvalid",
            field: e.field(),
            message: e.body(),
        })
        .collect();
    Err(ApiError::invalid(
        "",
        "namespaces",
        crate::api::values::meta::name(namespace),
        causes,
    ))
}
