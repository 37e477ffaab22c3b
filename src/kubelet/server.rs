//! The kubelet API on port 10250 (HTTPS; callers present a client
//! certificate from the cluster CA): container logs and exec.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::mpsc;

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;

use super::container::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE};
use super::cri::{Cri, api};
use super::exec::{ExecOptions, ExecProcess, error_status};
use super::logs::{self, LogOptions};
use super::streaming;
use crate::apiserver::authn::ConnectionIdentity;

/// The kubelet's port (upstream's).
pub const PORT: i32 = 10250;

/// What the handlers need.
pub struct KubeletApi {
    /// The runtime.
    pub cri: Cri,
    /// containerd's API (exec runs through its task service).
    pub containerd: tonic::transport::Channel,
}

/// The 10250 router.
pub fn router(state: Arc<KubeletApi>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .layer(axum::middleware::from_fn(require_client_certificate))
        .with_state(state)
}

async fn require_client_certificate(req: Request, next: Next) -> Response {
    if req.extensions().get::<ConnectionIdentity>().is_none() {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    next.run(req).await
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// A container of a pod, found in the runtime: newest attempt first.
async fn attempts(
    cri: &Cri,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Vec<api::ContainerStatus> {
    let mut runtime = cri.runtime.clone();
    let filter = api::ContainerFilter {
        label_selector: HashMap::from([
            (POD_NAMESPACE.to_string(), namespace.to_string()),
            (POD_NAME.to_string(), pod.to_string()),
            (CONTAINER_NAME.to_string(), container.to_string()),
        ]),
        ..Default::default()
    };
    let Ok(list) = runtime
        .list_containers(api::ListContainersRequest {
            filter: Some(filter),
        })
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in list.into_inner().containers {
        if let Ok(s) = runtime
            .container_status(api::ContainerStatusRequest {
                container_id: c.id,
                verbose: false,
            })
            .await
            && let Some(s) = s.into_inner().status
        {
            out.push(s);
        }
    }
    out.sort_by_key(|s| {
        std::cmp::Reverse((s.created_at, s.metadata.as_ref().map_or(0, |m| m.attempt)))
    });
    out
}

async fn container_logs(
    State(state): State<Arc<KubeletApi>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let number = |k: &str| query.get(k).and_then(|v| v.parse::<i64>().ok());
    let since = match (number("sinceSeconds"), query.get("sinceTime")) {
        (Some(s), _) => Some(chrono::Utc::now() - chrono::Duration::seconds(s)),
        (None, Some(t)) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.to_utc()),
            Err(_) => return bad_request(format!("invalid sinceTime {t:?}")),
        },
        _ => None,
    };
    let opts = LogOptions {
        follow: flag("follow"),
        tail_lines: number("tailLines").filter(|n| *n >= 0).map(|n| n as usize),
        timestamps: flag("timestamps"),
        since,
        limit_bytes: number("limitBytes").filter(|n| *n > 0).map(|n| n as usize),
    };
    let previous = flag("previous");
    let all = attempts(&state.cri, &namespace, &pod, &container).await;
    let chosen = if previous {
        match all.get(1) {
            Some(c) => c.clone(),
            None => {
                return bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ));
            }
        }
    } else {
        match all.first() {
            Some(c) => c.clone(),
            None => {
                return bad_request(format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ));
            }
        }
    };
    let path = std::path::PathBuf::from(&chosen.log_path);
    let id = chosen.id.clone();
    let cri = state.cri.clone();
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let running = || {
            let cri = cri.clone();
            let id = id.clone();
            async move {
                let mut runtime = cri.runtime.clone();
                runtime
                    .container_status(api::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()
                    .and_then(|s| s.into_inner().status)
                    .is_some_and(|s| s.state == api::ContainerState::ContainerRunning as i32)
            }
        };
        logs::stream(path, opts, running, tx).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Exec options from the query: upstream's kubelet names (`input`, `output`,
/// `error`) or the API's (`stdin`, `stdout`, `stderr`), repeated `command`.
pub fn exec_options(query: &str) -> ExecOptions {
    let mut options = ExecOptions::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let on = v == "1" || v == "true";
        match k.as_ref() {
            "command" => options.command.push(v.into_owned()),
            "input" | "stdin" => options.stdin = on,
            "output" | "stdout" => options.stdout = on,
            "error" | "stderr" => options.stderr = on,
            "tty" => options.tty = on,
            _ => {}
        }
    }
    options
}

async fn exec(
    State(state): State<Arc<KubeletApi>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let options = exec_options(req.uri().query().unwrap_or_default());
    let running = attempts(&state.cri, &namespace, &pod, &container)
        .await
        .into_iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32);
    let Some(target) = running else {
        return bad_request(format!("container {container} is not running in pod {pod}"));
    };
    let (mut parts, _body) = req.into_parts();
    let websocket = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if websocket {
        let offered = parts
            .headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(str::trim))
            .any(|p| p == streaming::V5);
        if !offered {
            return bad_request(format!(
                "the websocket protocol {} is required",
                streaming::V5
            ));
        }
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => u.protocols([streaming::V5]),
            Err(e) => return e.into_response(),
        };
        let channel = state.containerd.clone();
        return upgrade.on_upgrade(move |socket| async move {
            match ExecProcess::start(&channel, &target.id, &options).await {
                Ok(process) => streaming::exec_websocket(socket, process, options.command).await,
                Err(e) => streaming::fail_websocket(socket, error_status(&format!("{e:#}"))).await,
            }
        });
    }
    (
        StatusCode::BAD_REQUEST,
        "exec needs a WebSocket (v5.channel.k8s.io) or SPDY/3.1 upgrade\n",
    )
        .into_response()
}
