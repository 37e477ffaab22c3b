//! The audit middleware (`--audit-policy-file`, `--audit-log-path`): after
//! authentication, each request the policy selects is written to the log
//! as upstream's `audit.k8s.io/v1` events, one JSON line per stage, with the
//! authorization decision, and the request and response bodies at the
//! Request and RequestResponse levels. The policy and the events are built
//! in `audit.rs`; this file is the I/O at the edge.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;

use super::ApiState;
use super::audit::{
    self, AuthorizationDecision, EventBuilder, Level, LogWriter, Policy, RequestAttributes, Stage,
    UserInfo,
};
use super::authn::{Impersonator, User};
use super::authz::Verdict;
use super::request::RequestInfo;

/// Bodies larger than this are not copied into events.
const MAX_LOGGED_BODY: usize = 3 * 1024 * 1024;

/// The policy and the log it writes to.
pub struct Auditor {
    policy: Policy,
    log: Mutex<LogWriter>,
}

impl Auditor {
    /// Reads the policy and opens the log (`-` for standard output).
    pub fn open(
        policy_file: &Path,
        log_path: &Path,
        max_size_mb: u64,
        max_backups: usize,
        max_age_days: u64,
    ) -> anyhow::Result<Auditor> {
        let policy = Policy::from_file(policy_file)?;
        let log =
            LogWriter::open(log_path, max_size_mb, max_backups)?.with_max_age_days(max_age_days);
        Ok(Auditor {
            policy,
            log: Mutex::new(log),
        })
    }

    fn write(&self, event: Option<Value>) {
        let Some(event) = event else {
            return;
        };
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.write_event(&event) {
            tracing::warn!(err = %e, "writing the audit log");
        }
    }
}

/// An event for `req` with its metadata (id, URI, user agent, addresses).
fn new_event(
    req: &Request,
    attrs: &RequestAttributes,
    config: &audit::RequestAuditConfig,
) -> EventBuilder {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut event = EventBuilder::new(audit_id(req), config, Utc::now());
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    event.log_request_metadata(
        attrs,
        &uri,
        header("user-agent").unwrap_or(""),
        audit::source_ips(header("x-forwarded-for"), header("x-real-ip"), peer),
    );
    event
}

/// The request's audit ID: the client's `Audit-ID` header, else a new one.
fn audit_id(req: &Request) -> String {
    let given = req
        .headers()
        .get(audit::HEADER_AUDIT_ID)
        .and_then(|v| v.to_str().ok());
    audit::new_audit_id(given)
}

/// Middleware: every response carries its request's `Audit-ID` header, as
/// upstream's (audited or not), so a client's report can be found in the log.
pub async fn tag(mut req: Request, next: Next) -> Response {
    let id = audit_id(&req);
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        req.headers_mut()
            .insert(audit::HEADER_AUDIT_ID, value.clone());
        let mut response = next.run(req).await;
        response.headers_mut().insert(audit::HEADER_AUDIT_ID, value);
        return response;
    }
    next.run(req).await
}

/// Audits a request that failed authentication, as upstream's
/// WithFailedAuthenticationAudit: no user, one ResponseStarted event with
/// the 401 and the methods tried.
pub fn record_unauthenticated(state: &ApiState, req: &Request) {
    let (Some(auditor), Some(info)) = (&state.auditor, req.extensions().get::<Arc<RequestInfo>>())
    else {
        return;
    };
    let nobody = User {
        name: String::new(),
        groups: vec![],
    };
    let attrs = attributes(&nobody, info);
    let config = auditor.policy.evaluate_config(&attrs);
    if config.level == Level::None {
        return;
    }
    let mut event = new_event(req, &attrs, &config);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut methods = Vec::new();
    match header("authorization").map(|a| {
        a.trim()
            .split_once(' ')
            .map(|(s, _)| s.to_ascii_lowercase())
    }) {
        Some(Some(scheme)) if scheme == "basic" => methods.push("basic"),
        Some(Some(scheme)) if scheme == "bearer" => methods.push("bearer"),
        _ => {}
    }
    let message = match methods.is_empty() {
        true => String::new(),
        false => format!("Authentication failed, attempted: {}", methods.join(", ")),
    };
    event.set_response_status(audit::ResponseStatus {
        code: 401,
        message,
        ..Default::default()
    });
    auditor.write(event.event(Stage::ResponseStarted, Utc::now()));
}

/// Middleware: audits the request as the policy says.
pub async fn record(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(auditor) = state.auditor.clone() else {
        return next.run(req).await;
    };
    let (Some(user), Some(info)) = (
        req.extensions().get::<User>().cloned(),
        req.extensions().get::<Arc<RequestInfo>>().cloned(),
    ) else {
        return next.run(req).await;
    };
    let attrs = attributes(&user, &info);
    let config = auditor.policy.evaluate_config(&attrs);
    if config.level == Level::None {
        return next.run(req).await;
    }
    let mut event = new_event(&req, &attrs, &config);
    if let Some(Impersonator(by)) = req.extensions().get::<Impersonator>() {
        event.set_user(UserInfo::new(by.name.clone(), by.groups.clone()));
        event.log_impersonated_user(UserInfo::new(user.name.clone(), user.groups.clone()));
    }
    let long_running = info.is_long_running();
    let req = if config.level >= Level::Request && !long_running {
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return axum::response::IntoResponse::into_response(
                    crate::api::ApiError::bad_request(e.to_string()),
                );
            }
        };
        if bytes.len() <= MAX_LOGGED_BODY {
            if parts.method == axum::http::Method::PATCH {
                if let Ok(patch) = serde_json::from_slice::<Value>(&bytes) {
                    event.log_request_patch(&patch);
                }
            } else if !bytes.is_empty()
                && let Ok((object, _)) = super::body::decode_object(&parts.headers, &bytes)
            {
                // JSON, YAML or protobuf, as the handlers read it.
                event.log_request_object(&object);
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    auditor.write(event.event(Stage::RequestReceived, Utc::now()));
    let response = next.run(req).await;
    if let Some(verdict) = response.extensions().get::<Verdict>() {
        let decision = match verdict.allowed {
            true => AuthorizationDecision::Allow,
            false => AuthorizationDecision::Forbid,
        };
        event.log_authorization(decision, &verdict.reason);
    }
    event.set_response_code(response.status().as_u16());
    if long_running {
        // Watches and streams: started now, complete when the body ends.
        auditor.write(event.event(Stage::ResponseStarted, Utc::now()));
        let (parts, body) = response.into_parts();
        let complete = CompleteOnDrop {
            auditor,
            event: Some(event),
        };
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &complete;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let keep =
        is_json && (config.level >= Level::RequestResponse || !response.status().is_success());
    let response = if keep {
        let (parts, body) = response.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => bytes::Bytes::new(),
        };
        if bytes.len() <= MAX_LOGGED_BODY
            && let Ok(body) = serde_json::from_slice::<Value>(&bytes)
        {
            event.log_response_object(&body);
        }
        Response::from_parts(parts, Body::from(bytes))
    } else {
        response
    };
    auditor.write(event.event(Stage::ResponseComplete, Utc::now()));
    response
}

/// Writes a long-running request's ResponseComplete event when its
/// response body ends (or the client goes).
struct CompleteOnDrop {
    auditor: Arc<Auditor>,
    event: Option<EventBuilder>,
}

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.auditor
                .write(event.event(Stage::ResponseComplete, Utc::now()));
        }
    }
}

/// What the policy matches on.
fn attributes(user: &User, info: &RequestInfo) -> RequestAttributes {
    RequestAttributes {
        user: user.name.clone(),
        groups: user.groups.clone(),
        verb: info.verb.clone(),
        resource: info.resource_attributes(),
        path: info.path.clone(),
    }
}
