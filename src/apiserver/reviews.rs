//! Review kinds answered in place and never stored: access and rules
//! reviews (answered by the authorizer), self-subject review, token review.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::User;
use super::authz::{Attributes, Decision, ResourceAttributes};
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
        "SelfSubjectAccessReview" => {
            review["status"] = access(state, user, &review["spec"], None);
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec = &review["spec"];
            let subject = User {
                name: spec["user"].as_str().unwrap_or("").to_string(),
                groups: strings(&spec["groups"]),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(ApiError::invalid(
                    &req.rt.group,
                    &req.rt.kind,
                    "",
                    vec![crate::api::FieldError::invalid(
                        "spec.user",
                        &json!(""),
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            let local = req.namespace();
            if let Some(ns) = local
                && spec
                    .pointer("/resourceAttributes/namespace")
                    .and_then(Value::as_str)
                    != Some(ns)
            {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
            review["status"] = access(state, &subject, spec, local);
        }
        "SelfSubjectRulesReview" => {
            let namespace = review
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rules = state.authorizer.rules_for(user, namespace);
            let mut status = json!({
                "resourceRules": rules.resource_rules.iter().map(|r| json!({
                    "verbs": r.verbs,
                    "apiGroups": r.api_groups.clone().unwrap_or_default(),
                    "resources": r.resources.clone().unwrap_or_default(),
                    "resourceNames": r.resource_names.clone().unwrap_or_default(),
                })).collect::<Vec<_>>(),
                "nonResourceRules": rules.non_resource_rules.iter().map(|r| json!({
                    "verbs": r.verbs,
                    "nonResourceURLs": r.non_resource_urls.clone().unwrap_or_default(),
                })).collect::<Vec<_>>(),
                "incomplete": rules.incomplete,
            });
            if !rules.evaluation_error.is_empty() {
                status["evaluationError"] = json!(rules.evaluation_error);
            }
            review["status"] = status;
        }
        "SelfSubjectReview" => {
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        "TokenReview" => {
            let token = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            let bootstrap = crate::pki::bootstrap_token::BootstrapToken::parse(token);
            review["status"] = match bootstrap {
                Some(bootstrap) => {
                    match super::authn::verify_bootstrap_token(state, &bootstrap).await {
                        Ok(user) => json!({
                            "authenticated": true,
                            "user": {"username": user.name, "groups": user.groups},
                        }),
                        Err(e) => json!({"authenticated": false, "error": e}),
                    }
                }
                None => match super::authn::verify_token(state, token).await {
                    Ok(claims) => json!({
                        "authenticated": true,
                        "user": {"username": claims.sub, "groups": super::authn::service_account_groups(&claims.kubernetes.namespace)},
                        "audiences": claims.aud,
                    }),
                    Err(e) => json!({"authenticated": false, "error": e.to_string()}),
                },
            };
        }
        _ => return Err(ApiError::MethodNotAllowed),
    }
    if review.get("metadata").is_none() || review["metadata"].is_null() {
        review["metadata"] = json!({});
    }
    Ok(json_response(StatusCode::CREATED, &review))
}

/// The status of an access review of `spec` for `user`.
fn access(state: &ApiState, user: &User, spec: &Value, namespace: Option<&str>) -> Value {
    let resource = spec.get("resourceAttributes").filter(|r| r.is_object());
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_string();
    let (verb, path, resource) = match resource {
        Some(r) => (
            text(r, "verb"),
            String::new(),
            Some(ResourceAttributes {
                group: text(r, "group"),
                version: text(r, "version"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                namespace: namespace
                    .map(String::from)
                    .unwrap_or_else(|| text(r, "namespace")),
                name: text(r, "name"),
                field_selector: text(&r["fieldSelector"], "rawSelector"),
            }),
        ),
        None => {
            let n = &spec["nonResourceAttributes"];
            (text(n, "verb"), text(n, "path"), None)
        }
    };
    let decision = state.authorizer.authorize(&Attributes {
        user,
        verb: &verb,
        resource,
        path: &path,
    });
    match decision {
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::NoOpinion(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
