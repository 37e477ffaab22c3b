//! Review kinds answered in place and never stored: access reviews (every
//! authenticated user is allowed until RBAC exists), self-subject review, token review.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::body::{decode_object, json_response};
use super::handlers::Request;
use crate::api::ApiError;

/// Answers a review POST.
pub async fn create(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (mut review, _) = decode_object(&req.headers, body)?;
    let user = &req.user;
    review["apiVersion"] = json!(req.rt.api_version());
    review["kind"] = json!(req.rt.kind);
    match req.rt.kind.as_str() {
        "SelfSubjectAccessReview" | "SubjectAccessReview" => {
            review["status"] = json!({"allowed": true, "reason": "kelp allows every authenticated user (RBAC is not enforced yet)"});
        }
        "SelfSubjectRulesReview" => {
            review["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        "SelfSubjectReview" => {
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        "TokenReview" => {
            let token = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            review["status"] = match state.tokens.verify(token) {
                Ok(claims) => json!({
                    "authenticated": true,
                    "user": {"username": claims.sub, "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", claims.kubernetes.namespace), "system:authenticated"]},
                    "audiences": claims.aud,
                }),
                Err(e) => json!({"authenticated": false, "error": e.to_string()}),
            };
        }
        _ => return Err(ApiError::MethodNotAllowed),
    }
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(json_response(StatusCode::CREATED, &review))
}
