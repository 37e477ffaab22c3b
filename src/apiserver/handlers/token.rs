//! `serviceaccounts/token` (TokenRequest): a signed, expiring service-account
//! token, optionally bound to a pod or secret.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Request, load};
use crate::api::{ApiError, FieldError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::body::{decode_object, json_response};
use crate::pki::serviceaccount::{Claims, ISSUER, KubernetesClaims, Ref};

/// Upstream's default token lifetime (1 hour) and its minimum (10 minutes).
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;

/// Issues a token for the named service account.
/// How long an extended kube-api-access token is valid (upstream's year).
const EXTENDED_SECONDS: i64 = 365 * 24 * 60 * 60;

pub async fn create(state: &ApiState, req: &Request, body: &Bytes) -> Result<Response, ApiError> {
    let (mut request, _) = decode_object(&req.headers, body)?;
    let (account, _) = load(state, req).await?;
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_SECONDS);
    if seconds < MIN_SECONDS {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            req.name(),
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                &json!(seconds),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()]);
    let pod = request
        .pointer("/spec/boundObjectRef")
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
        .map(|r| Ref {
            name: r.get("name").and_then(Value::as_str).unwrap_or("").into(),
            uid: r.get("uid").and_then(Value::as_str).unwrap_or("").into(),
        });
    let namespace = meta::namespace(&account).to_string();
    if let Some(node) = crate::apiserver::authz::node::node_name(&req.user) {
        let kind = request
            .pointer("/spec/boundObjectRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let bound = pod
            .as_ref()
            .and_then(|p| state.authorizer.nodes().node_of_pod(&namespace, &p.name));
        crate::apiserver::admission::node_restriction::admit_token(node, bound.as_deref(), kind)?;
    }
    let now = chrono::Utc::now();
    // Tokens of the kube-api-access volume (bound to a pod, 3607 s) are
    // valid for a year, as upstream's extended expiration makes them, so
    // clients that never reread the file keep working.
    let valid = if pod.is_some()
        && seconds == crate::apiserver::admission::service_account::TOKEN_SECONDS
    {
        EXTENDED_SECONDS
    } else {
        seconds
    };
    let claims = Claims {
        sub: format!("system:serviceaccount:{namespace}:{}", req.name()),
        iss: ISSUER.into(),
        aud: audiences.clone(),
        exp: now.timestamp() + valid,
        iat: now.timestamp(),
        nbf: now.timestamp(),
        kubernetes: KubernetesClaims {
            namespace,
            serviceaccount: Ref {
                name: req.name().into(),
                uid: meta::meta_str(&account, "uid").into(),
            },
            pod,
        },
    };
    let token = state.tokens.sign(&claims).map_err(ApiError::internal)?;
    let expires = (now + chrono::Duration::seconds(valid))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    let metadata = meta::metadata_mut(&mut request);
    metadata.insert("name".into(), json!(req.name()));
    metadata.insert("namespace".into(), json!(meta::namespace(&account)));
    metadata.insert("creationTimestamp".into(), Value::Null);
    Ok(json_response(StatusCode::CREATED, &request))
}
