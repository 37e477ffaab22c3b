//! Authentication: client certificates signed by the cluster CA (verified in the
//! TLS handshake) and service-account bearer tokens. Anything else gets 401,
//! except the public health and version endpoints.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::api::ApiError;

/// Who is making a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// User name (certificate CN, or `system:serviceaccount:<ns>:<name>`).
    pub name: String,
    /// Groups (certificate O values, service-account groups).
    pub groups: Vec<String>,
}

/// The identity the connection itself proves: a verified TLS client certificate,
/// or an in-process client (see `client.rs`). Never read from the request.
#[derive(Debug, Clone)]
pub struct ConnectionIdentity(pub User);

/// Paths anyone may read (upstream's system:public-info-viewer).
const PUBLIC: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Middleware: resolves the request's [`User`] or answers 401.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = if let Some(ConnectionIdentity(user)) = req.extensions().get::<ConnectionIdentity>()
    {
        Some(user.clone())
    } else if let Some(token) = bearer(&req) {
        match state.tokens.verify(token) {
            Ok(claims) => Some(User {
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", claims.kubernetes.namespace),
                    "system:authenticated".into(),
                ],
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
        Some(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        None if PUBLIC.contains(&req.uri().path()) => {
            req.extensions_mut().insert(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            });
            next.run(req).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

/// Reads user and groups from a verified certificate (DER): CN and O values.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}
