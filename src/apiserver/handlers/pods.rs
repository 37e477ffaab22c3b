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
                           "lastTransitionTime": crate::api::object::now()}),
    );
    bound["status"]["conditions"] = json!(conditions);
    write_update(state, req, bound, &pod, kv.mod_revision, false).await?;
    Ok(json_response(StatusCode::CREATED, &success()))
}

/// Evicts the pod: deletes it as a graceful delete would. (Disruption budgets
/// are checked once the disruption controller exists.)
pub async fn evict(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    delete_one(state, req, &DeleteOptions::default()).await?;
    Ok(json_response(StatusCode::CREATED, &success()))
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}
