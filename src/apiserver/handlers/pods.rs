//! `pods/binding` (the scheduler's write) and `pods/eviction`.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::delete::{DeleteOptions, delete_one};
use super::update::write_update;
use super::{Request, load};
use crate::api::{ApiError, FieldError};
use crate::apiserver::ApiState;
use crate::apiserver::body::{decode_object, json_response};

/// Binds the pod to `target.name`: sets `spec.nodeName` once.
pub async fn bind(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (binding, _) = decode_object(&req.headers, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            req.name(),
            vec![FieldError::required("target.name", "")],
        ));
    }
    let (pod, kv) = load(state, req).await?;
    if let Some(current) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::Conflict {
            group: String::new(),
            resource: "pods".into(),
            name: req.name().into(),
            detail: format!(
                "pod {} is already assigned to node \"{current}\"",
                req.name()
            ),
            causes: vec![],
        });
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Conflict {
            group: String::new(),
            resource: "pods".into(),
            name: req.name().into(),
            detail: format!(
                "pod {} is being deleted, cannot be assigned to a host",
                req.name()
            ),
            causes: vec![],
        });
    }
    let mut bound = pod.clone();
    bound["spec"]["nodeName"] = json!(node);
    // As upstream's binding storage: the pod is now scheduled.
    let mut conditions: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "PodScheduled");
    conditions.push(
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                           "lastTransitionTime": crate::api::values::meta::now()}),
    );
    bound["status"]["conditions"] = json!(conditions);
    write_update(state, req, bound, &pod, kv.mod_revision, false).await?;
    Ok(json_response(StatusCode::CREATED, &success()))
}

/// Evicts the pod (upstream's eviction subresource): a graceful delete,
/// unless the PodDisruptionBudget covering it allows no more disruptions
/// (429, as upstream); an allowed one is spent first (`disruptionsAllowed`
/// decremented, the pod recorded in `disruptedPods`) so two evictions
/// cannot both take the last one.
pub async fn evict(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    const CONFLICT_RETRIES: usize = 5;
    for _ in 0..CONFLICT_RETRIES {
        let (pod, _) = load(state, req).await?;
        match spend_budget(state, req, &pod).await {
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
            Ok(()) => {
                delete_one(state, req, &DeleteOptions::default()).await?;
                return Ok(json_response(StatusCode::CREATED, &success()));
            }
        }
    }
    Err(ApiError::TooManyRequests {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        retry_after_seconds: Some(1),
        causes: vec![],
    })
}

/// Checks the pod's disruption budget and takes one disruption from it
/// (a Conflict when the budget changed meanwhile: the caller retries).
async fn spend_budget(state: &ApiState, req: &Request, pod: &Value) -> Result<(), ApiError> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    if pod.pointer("/metadata/deletionTimestamp").is_some()
        || matches!(phase, "Succeeded" | "Failed" | "Pending")
    {
        return Ok(());
    }
    let Some(budgets_rt) = state
        .registry
        .lookup("policy", "v1", "poddisruptionbudgets")
    else {
        return Ok(());
    };
    let namespace = req.namespace().unwrap_or("default");
    let labels = pod.pointer("/metadata/labels");
    let covering: Vec<Value> = state
        .stored_objects(&budgets_rt.key_prefix(Some(namespace)))
        .await?
        .into_iter()
        .filter(|b| {
            b.pointer("/spec/selector").is_some_and(|s| {
                !s.is_null()
                    && crate::api::values::selectors::LabelSelector::from_object(s).matches(labels)
            })
        })
        .collect();
    let budget = match covering.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let name = crate::api::values::meta::name(budget).to_string();
    let status = &budget["status"];
    let number = |field: &str| status[field].as_i64().unwrap_or(0);
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    if !ready {
        let always =
            budget.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
        let healthy_enough =
            number("currentHealthy") >= number("desiredHealthy") && number("desiredHealthy") > 0;
        if always || healthy_enough {
            return Ok(());
        }
    }
    let refused = |cause: String| ApiError::TooManyRequests {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        retry_after_seconds: None,
        causes: vec![FieldError {
            reason: "DisruptionBudget",
            field: String::new(),
            message: cause,
        }],
    };
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
        return Err(refused(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = number("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudgets",
            &name,
            "pdb disruptions allowed is negative",
        ));
    }
    if allowed == 0 {
        return Err(refused(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            number("desiredHealthy"),
            number("currentHealthy")
        )));
    }
    // Spend one: a status update at the revision read (Conflict if it moved).
    let Some(mut status_req) = super::system_request(
        state,
        "policy",
        "poddisruptionbudgets",
        Some(namespace),
        Some(&name),
    ) else {
        return Ok(());
    };
    status_req.path.subresource = Some("status".into());
    let (current, kv) = load(state, &status_req).await?;
    if current["status"] != *status {
        return Err(ApiError::conflict("policy", "poddisruptionbudgets", &name));
    }
    let mut updated = current.clone();
    updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
    updated["status"]["disruptedPods"][crate::api::values::meta::name(pod)] =
        json!(crate::api::values::meta::now());
    if allowed == 1
        && let Some(conditions) = updated["status"]["conditions"].as_array_mut()
    {
        for condition in conditions
            .iter_mut()
            .filter(|c| c["type"] == "DisruptionAllowed")
        {
            condition["status"] = json!("False");
            condition["reason"] = json!("InsufficientPods");
            condition["lastTransitionTime"] = json!(crate::api::values::meta::now());
        }
    }
    write_update(state, &status_req, updated, &current, kv.mod_revision, true).await?;
    Ok(())
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}
