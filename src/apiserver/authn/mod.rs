//! Authentication: client certificates signed by the cluster CA (verified in the
//! TLS handshake), bootstrap tokens (joining nodes) and service-account bearer tokens. Anything else gets 401,
//! except the public health and version endpoints. Impersonation headers are
//! honoured here, once the real user is known.

pub mod impersonation;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::api::ApiError;
use crate::pki::bootstrap_token::BootstrapToken;
pub use crate::pki::identity::{
    ConnectionIdentity, User, service_account_groups, user_from_certificate,
};

/// The user who impersonates, on requests made as someone else.
#[derive(Debug, Clone)]
pub struct Impersonator(pub User);

/// Paths anyone may read (upstream's system:public-info-viewer).
/// `/cacerts` is public as in k3s: joining nodes pin it by hash; so are
/// the files under `/static/` (k3s's chart files for HelmChart jobs).
const PUBLIC: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/cacerts"];

/// Middleware: resolves the request's [`User`] or answers 401.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let connection = req.extensions().get::<ConnectionIdentity>().cloned();
    let token = bearer(&req).map(String::from);
    let user = if let Some(ConnectionIdentity(user)) = connection {
        Some(user)
    } else if let Some(token) = &token
        && let Some(bootstrap) = BootstrapToken::parse(token)
    {
        match verify_bootstrap_token(&state, &bootstrap).await {
            Ok(user) => Some(user),
            Err(e) => {
                tracing::debug!(err = %e, token = %bootstrap.id, "bootstrap token rejected");
                None
            }
        }
    } else if let Some(token) = token {
        match verify_token(&state, &token).await {
            Ok(claims) => Some(User {
                groups: service_account_groups(&claims.kubernetes.namespace),
                name: claims.sub,
            }),
            Err(e) => {
                tracing::debug!(err = %e, "bearer token rejected");
                None
            }
        }
    } else {
        None
    };
    match user {
        Some(user) if impersonation::requested(req.headers()) => {
            match impersonation::impersonate(&state.authorizer, &user, req.headers()) {
                Ok(acting) => {
                    tracing::debug!(user = %user.name, as_user = %acting.name, "impersonating");
                    let headers = req.headers_mut();
                    let names: Vec<_> = headers
                        .keys()
                        .filter(|k| k.as_str().starts_with("impersonate-"))
                        .cloned()
                        .collect();
                    for name in names {
                        headers.remove(name);
                    }
                    req.extensions_mut().insert(acting);
                    req.extensions_mut().insert(Impersonator(user));
                    next.run(req).await
                }
                Err(e) => e.into_response(),
            }
        }
        Some(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        None if PUBLIC.contains(&req.uri().path())
            || req.uri().path().starts_with(super::static_files::PREFIX) =>
        {
            req.extensions_mut().insert(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            });
            next.run(req).await
        }
        None => {
            super::audit_log::record_unauthenticated(&state, &req);
            ApiError::Unauthorized.into_response()
        }
    }
}

/// Checks a service-account token: its signature and expiry, and that the
/// account — and the pod it is bound to, if any — still exist with the
/// uids it names (a deleted pod's tokens stop working, as upstream).
pub async fn verify_token(
    state: &ApiState,
    token: &str,
) -> Result<crate::pki::serviceaccount::Claims, String> {
    let claims = state.tokens.verify(token).map_err(|e| e.to_string())?;
    let k8s = &claims.kubernetes;
    let mut objects = vec![("serviceaccounts", &k8s.serviceaccount)];
    if let Some(pod) = &k8s.pod {
        objects.push(("pods", pod));
    }
    for (resource, reference) in objects {
        let Some(rt) = state.registry.lookup("", "v1", resource) else {
            continue;
        };
        let stored = state
            .store
            .get(&rt.key(Some(&k8s.namespace), &reference.name))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok());
        let uid = stored
            .as_ref()
            .and_then(|o| o.pointer("/metadata/uid"))
            .and_then(serde_json::Value::as_str);
        let gone = match uid {
            None => true,
            Some(uid) => !reference.uid.is_empty() && uid != reference.uid,
        };
        if gone {
            return Err(format!(
                "{resource} \"{}\" bound to the token no longer exists",
                reference.name
            ));
        }
    }
    Ok(claims)
}

/// Checks a bootstrap token against its Secret in kube-system (upstream's
/// bootstrap token authenticator).
pub async fn verify_bootstrap_token(
    state: &ApiState,
    token: &BootstrapToken,
) -> Result<User, String> {
    let rt = state
        .registry
        .lookup("", "v1", "secrets")
        .ok_or("secrets are not served")?;
    let secret: serde_json::Value = state
        .store
        .get(&rt.key(Some("kube-system"), &token.secret_name()))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .ok_or_else(|| format!("no secret {}", token.secret_name()))?;
    let (name, groups) =
        crate::pki::bootstrap_token::authenticate(token, &secret, chrono::Utc::now())?;
    Ok(User { name, groups })
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}
