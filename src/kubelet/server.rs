//! The kubelet API on port 10250 (HTTPS; callers present a client
//! certificate from the cluster CA): container logs, exec, attach,
//! port-forward, and resource usage (`/stats/summary`, `/metrics/resource`).

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
use super::{portforward, spdy};
use crate::pki::identity::{ConnectionIdentity, User};

/// The kubelet's port (upstream's).
pub const PORT: i32 = 10250;

/// What the handlers need.
pub struct KubeletApi {
    /// The runtime.
    pub cri: Cri,
    /// containerd's API (exec runs through its task service).
    pub containerd: tonic::transport::Channel,
    /// The API, which vouches for bearer tokens (TokenReview).
    pub client: kube::Client,
    /// Resource usage of the node, pods and containers.
    pub stats: Arc<super::stats::Collector>,
    /// This node's name: what callers need rights on (`nodes/<sub>`).
    pub node_name: String,
    /// Probe counts (`/metrics/probes`).
    pub probes: Arc<super::probes::ProbeMetrics>,
    /// Runtime operations and pod start durations (`/metrics`).
    pub metrics: Arc<super::metrics::KubeletMetrics>,
}

/// The 10250 router.
pub fn router(state: Arc<KubeletApi>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats/summary", get(stats_summary))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics/probes", get(probe_metrics))
        .route("/metrics", get(kubelet_metrics))
        .route("/metrics/cadvisor", get(cadvisor_metrics))
        .route("/logs", get(node_logs))
        .route("/logs/", get(node_logs))
        .route("/logs/{*path}", get(node_logs))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach).post(attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward).post(port_forward),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(|req, next| {
            crate::telemetry::traces::serve("KubeletAPI", req, next)
        }))
        .with_state(state)
}

/// `/logs/…`: the node's log files and the node log query.
async fn node_logs(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let path = uri
        .path()
        .trim_start_matches("/logs")
        .trim_start_matches('/');
    let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    super::node_logs::serve(&path, uri.query(), &headers).await
}

/// Callers present a client certificate from the cluster CA, or a bearer
/// token the API server vouches for (TokenReview); then the API server
/// decides (SubjectAccessReview) whether they may use this part of the
/// node's API, as upstream's kubelet with webhook authn/authz.
async fn authenticate(State(state): State<Arc<KubeletApi>>, req: Request, next: Next) -> Response {
    let user = match req.extensions().get::<ConnectionIdentity>() {
        Some(ConnectionIdentity(user)) => Some(user.clone()),
        None => match bearer(&req) {
            Some(token) => token_user(&state.client, token).await,
            None => None,
        },
    };
    let Some(user) = user else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let verb = verb_of(req.method());
    let subresource = subresource_of(req.uri().path());
    if allowed(&state, &user, verb, subresource).await {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])\n",
            user.name
        ),
    )
        .into_response()
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The verb of a request to the node's API, as upstream's kubelet maps methods.
fn verb_of(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    }
}

/// The `nodes` subresource a path falls under (upstream's kubelet's split).
fn subresource_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        "configz" => "configz",
        "healthz" => "healthz",
        "pods" => "pods",
        _ => "proxy",
    }
}

/// The user the API server says a token belongs to.
async fn token_user(client: &kube::Client, token: &str) -> Option<User> {
    use k8s_openapi::api::authentication::v1::TokenReview;
    let review: TokenReview =
        serde_json::from_value(serde_json::json!({"spec": {"token": token}})).ok()?;
    let status = kube::Api::<TokenReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await
        .ok()?
        .status?;
    if status.authenticated != Some(true) {
        return None;
    }
    let info = status.user?;
    Some(User {
        name: info.username?,
        groups: info.groups.unwrap_or_default(),
    })
}

/// Asks the API server whether `user` may `verb` `nodes/<subresource>` of this node.
async fn allowed(state: &KubeletApi, user: &User, verb: &str, subresource: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: Result<SubjectAccessReview, _> = serde_json::from_value(serde_json::json!({
        "spec": {
            "user": user.name,
            "groups": user.groups,
            "resourceAttributes": {
                "verb": verb, "group": "", "version": "v1", "resource": "nodes",
                "subresource": subresource, "name": state.node_name,
            },
        }
    }));
    let Ok(review) = review else {
        return false;
    };
    match kube::Api::<SubjectAccessReview>::all(state.client.clone())
        .create(&Default::default(), &review)
        .await
    {
        Ok(review) => review.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::warn!(err = %e, "asking the API server to authorize a kubelet request");
            false
        }
    }
}

/// The Summary API: CPU and memory of the node, its pods and containers.
async fn stats_summary(State(state): State<Arc<KubeletApi>>) -> Response {
    axum::Json(state.stats.summary()).into_response()
}

/// Upstream's resource metrics (what metrics-server scrapes), Prometheus text.
async fn resource_metrics(State(state): State<Arc<KubeletApi>>) -> Response {
    metrics_text(state.stats.resource_metrics())
}

/// The kubelet's own `/metrics`: what runs on the node, read from the
/// runtime at each scrape.
async fn kubelet_metrics(State(state): State<Arc<KubeletApi>>) -> Response {
    let mut runtime = state.cri.runtime.clone();
    let sandboxes = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    let containers = runtime
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .map(|r| r.into_inner().containers)
        .unwrap_or_default();
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .count();
    let mut states: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for c in &containers {
        let state = match api::ContainerState::try_from(c.state) {
            Ok(api::ContainerState::ContainerCreated) => "created",
            Ok(api::ContainerState::ContainerRunning) => "running",
            Ok(api::ContainerState::ContainerExited) => "exited",
            _ => "unknown",
        };
        *states.entry(state).or_default() += 1;
    }
    let mut text = super::stats::kubelet_metrics(&state.node_name, ready as i64, &states);
    text.push_str(&state.metrics.encode());
    text.push_str(&state.stats.volume_metrics());
    metrics_text(text)
}

async fn cadvisor_metrics(State(state): State<Arc<KubeletApi>>) -> Response {
    metrics_text(state.stats.cadvisor_metrics())
}

async fn probe_metrics(State(state): State<Arc<KubeletApi>>) -> Response {
    metrics_text(state.probes.encode())
}

/// A metrics page in Prometheus' text format.
fn metrics_text(text: String) -> Response {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::PROMETHEUS_TEXT_CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
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

/// The newest running attempt of a container, or the refusal to answer.
async fn running_container(
    state: &KubeletApi,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<api::ContainerStatus, Response> {
    attempts(&state.cri, namespace, pod, container)
        .await
        .into_iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .ok_or_else(|| bad_request(format!("container {container} is not running in pod {pod}")))
}

/// The WebSocket upgrade speaking `protocol`, or the refusal when the client
/// does not offer it.
async fn websocket(
    parts: &mut axum::http::request::Parts,
    protocol: &'static str,
) -> Result<WebSocketUpgrade, Response> {
    let header = axum::http::header::SEC_WEBSOCKET_PROTOCOL.as_str();
    if !offers(&parts.headers, header, protocol) {
        return Err(bad_request(format!(
            "the websocket protocol {protocol} is required"
        )));
    }
    WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map(|u| u.protocols([protocol]))
        .map_err(IntoResponse::into_response)
}

/// Whether the request asks to upgrade to `protocol`.
fn upgrade_to(headers: &axum::http::HeaderMap, protocol: &str) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(protocol.as_bytes()))
}

/// Whether a (repeatable, comma-separated) header offers `value`.
fn offers(headers: &axum::http::HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .any(|v| v == value)
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
    let target = match running_container(&state, &namespace, &pod, &container).await {
        Ok(target) => target,
        Err(refused) => return refused,
    };
    let (mut parts, _body) = req.into_parts();
    if upgrade_to(&parts.headers, "websocket") {
        let upgrade = match websocket(&mut parts, streaming::V5).await {
            Ok(upgrade) => upgrade,
            Err(refused) => return refused,
        };
        let channel = state.containerd.clone();
        return upgrade.on_upgrade(move |socket| async move {
            match ExecProcess::start(&channel, &target.id, &options).await {
                Ok(process) => streaming::exec_websocket(socket, process, options.command).await,
                Err(e) => streaming::fail_websocket(socket, error_status(&format!("{e:#}"))).await,
            }
        });
    }
    let spdy = upgrade_to(&parts.headers, "SPDY/3.1");
    if !spdy {
        return bad_request(
            "exec needs a WebSocket (v5.channel.k8s.io) or SPDY/3.1 upgrade".into(),
        );
    }
    let versions: Vec<&str> = parts
        .headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    if !versions.contains(&streaming::SPDY_V4) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "no supported protocol among {versions:?}; kelp speaks {}\n",
                streaming::SPDY_V4
            ),
        )
            .into_response();
    }
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return bad_request("this request must be an HTTP/1.1 upgrade".into());
    };
    let channel = state.containerd.clone();
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            let session = spdy::Session::serve(hyper_util::rt::TokioIo::new(io));
            streaming::exec_spdy(session, channel, target.id, options).await;
        }
    });
    spdy_switch(streaming::SPDY_V4)
}

/// The 101 answer that turns the connection into a SPDY/3.1 session.
fn spdy_switch(protocol: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "Upgrade")
        .header(axum::http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The network namespace of the pod's running sandbox.
async fn pod_netns(state: &KubeletApi, namespace: &str, pod: &str) -> Option<std::path::PathBuf> {
    let mut runtime = state.cri.runtime.clone();
    let filter = api::PodSandboxFilter {
        state: Some(api::PodSandboxStateValue {
            state: api::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: HashMap::from([
            (POD_NAMESPACE.to_string(), namespace.to_string()),
            (POD_NAME.to_string(), pod.to_string()),
        ]),
        ..Default::default()
    };
    let sandbox = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .ok()?
        .into_inner()
        .items
        .into_iter()
        .max_by_key(|s| s.created_at)?;
    let mut tasks =
        containerd_client::services::v1::tasks_client::TasksClient::new(state.containerd.clone());
    let task = tasks
        .get(super::containerd::namespaced(
            containerd_client::services::v1::GetRequest {
                container_id: sandbox.id,
                exec_id: String::new(),
            },
        ))
        .await
        .ok()?
        .into_inner()
        .process?;
    Some(crate::network::netns::of_process(task.pid))
}

async fn port_forward(
    State(state): State<Arc<KubeletApi>>,
    Path((namespace, pod)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(netns) = pod_netns(&state, &namespace, &pod).await else {
        return bad_request(format!("pod {pod} has no running sandbox"));
    };
    let (mut parts, _body) = req.into_parts();

    let pod_name = format!("{namespace}/{pod}");
    let header = axum::http::header::SEC_WEBSOCKET_PROTOCOL.as_str();
    if upgrade_to(&parts.headers, "websocket")
        && !offers(&parts.headers, header, portforward::TUNNEL_PROTOCOL)
    {
        // The channel protocol of client libraries (Python's, Java's): the
        // ports are named in the query, one data and one error channel each.
        let ports = portforward::query_ports(parts.uri.query().unwrap_or_default());
        if ports.is_empty() {
            return bad_request("query parameter \"port\" is required".into());
        }
        let channel = offers(&parts.headers, header, portforward::CHANNEL_PROTOCOL);
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) if channel => upgrade.protocols([portforward::CHANNEL_PROTOCOL]),
            Ok(upgrade) => upgrade,
            Err(refused) => return refused.into_response(),
        };
        return upgrade.on_upgrade(move |socket| async move {
            portforward::serve_channels(socket, ports, netns, pod_name).await;
        });
    }
    if upgrade_to(&parts.headers, "websocket") {
        let upgrade = match websocket(&mut parts, portforward::TUNNEL_PROTOCOL).await {
            Ok(upgrade) => upgrade,
            Err(refused) => return refused,
        };
        return upgrade.on_upgrade(move |socket| async move {
            let session = spdy::Session::serve(portforward::tunnel(socket));
            portforward::serve(session, netns, pod_name).await;
        });
    }
    if !upgrade_to(&parts.headers, "SPDY/3.1") {
        return bad_request("port-forward needs a SPDY/3.1 or WebSocket upgrade".into());
    }
    let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return bad_request("this request must be an HTTP/1.1 upgrade".into());
    };
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            let session = spdy::Session::serve(hyper_util::rt::TokioIo::new(io));
            portforward::serve(session, netns, pod_name).await;
        }
    });
    spdy_switch(portforward::PROTOCOL)
}

/// Attach joins the container's own stdio, which CRI holds: the SPDY
/// session is relayed to containerd's streaming server (CRI `Attach` gives
/// its URL). WebSocket attempts are refused, so kubectl falls back to SPDY.
async fn attach(
    State(state): State<Arc<KubeletApi>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let options = exec_options(req.uri().query().unwrap_or_default());
    let target = match running_container(&state, &namespace, &pod, &container).await {
        Ok(target) => target,
        Err(refused) => return refused,
    };
    let (mut parts, _body) = req.into_parts();
    let spdy = upgrade_to(&parts.headers, "SPDY/3.1");
    if !spdy {
        return bad_request("attach is served over SPDY/3.1".into());
    }
    let Some(client) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return bad_request("this request must be an HTTP/1.1 upgrade".into());
    };
    let mut runtime = state.cri.runtime.clone();
    let url = match runtime
        .attach(api::AttachRequest {
            container_id: target.id,
            stdin: options.stdin,
            tty: options.tty,
            stdout: options.stdout,
            stderr: options.stderr,
        })
        .await
    {
        Ok(r) => r.into_inner().url,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()).into_response();
        }
    };
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("runtime gave a bad URL {url:?}"),
        )
            .into_response();
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let relayed = async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request =
            crate::http::upgrade::backend_request(parts.method.clone(), path, &parts.headers)
                .map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            axum::http::header::HOST,
            authority.parse().map_err(|_| "bad authority".to_string())?,
        );
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    };
    match relayed.await {
        Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            crate::http::upgrade::splice(&mut response, client)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Ok(response) => (response.status(), "the runtime refused the attach\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("attaching: {e}\n"),
        )
            .into_response(),
    }
}
