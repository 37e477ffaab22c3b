//! The API server's side of node subresources: finds the pod's node, calls
//! its kubelet API over HTTPS (client certificate from the cluster CA) and
//! streams the answer back (`pods/log`); also fetches kubelets' JSON
//! (`/stats/summary` for `metrics.k8s.io`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::ApiState;
use super::handlers::{Request, load};
use super::request::ResourcePath;
use crate::api::ApiError;
use crate::pki::ClusterPki;

/// TLS settings for calling kubelets: trust the cluster CA, present the
/// admin client certificate (group system:masters).
pub fn client_config(
    pki: &ClusterPki,
    client: Arc<crate::pki::reloadable::ReloadableCert>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    crate::pki::tls::client_config(&pki.ca_cert, Some(client))
}

/// The container a request names (or the pod's only one), validated as upstream does.
fn container_of(pod: &Value, pod_name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    let containers: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => {
            let regular: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match regular.as_slice() {
                [only] => Ok(only.to_string()),
                many => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    many.join(" ")
                ))),
            }
        }
    }
}

/// Host and port of a node's kubelet API (also where `nodes/proxy` goes).
pub(crate) async fn kubelet_address(
    state: &ApiState,
    node: &str,
) -> Result<(String, u16), ApiError> {
    let rt = state
        .registry
        .lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let kv = state
        .store
        .get(&rt.key(None, node))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found("", "nodes", node))?;
    let obj: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let addresses = obj["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| addresses.iter().find(|a| a["type"] == *kind))
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::ServiceUnavailable(format!("node {node:?} has no address yet")))?;
    let port = obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(10250) as u16;
    Ok((address.to_string(), port))
}

/// GET `path` on the node's kubelet; the response streams.
async fn kubelet_get(
    state: &ApiState,
    node: &str,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let request = hyper::Request::get(path)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    kubelet_request(state, node, request).await
}

/// GETs `path` on the node's kubelet and decodes its JSON answer, within
/// `timeout` (a node that is down must not hold up a request about others).
pub async fn kubelet_json<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    node: &str,
    path: &str,
    timeout: std::time::Duration,
) -> Result<T, ApiError> {
    let fetch = async {
        let response = kubelet_get(state, node, path).await?;
        if response.status() != StatusCode::OK {
            return Err(kubelet_error(response).await);
        }
        response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| ApiError::ServiceUnavailable(format!("reading from kubelet: {e}")))
    };
    let body = tokio::time::timeout(timeout, fetch).await.map_err(|_| {
        ApiError::ServiceUnavailable(format!("the kubelet of node {node:?} did not answer"))
    })??;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::Internal(format!(
            "the kubelet of node {node:?} answered {path} with bad JSON: {e}"
        ))
    })
}

/// Sends `request` to the node's kubelet on a fresh connection (which stays
/// usable for an upgrade).
async fn kubelet_request(
    state: &ApiState,
    node: &str,
    mut request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let tls = state.kubelet_tls.clone().ok_or_else(|| {
        ApiError::ServiceUnavailable("this server does not reach kubelets".into())
    })?;
    let (host, port) = kubelet_address(state, node).await?;
    let unreachable =
        |e: String| ApiError::ServiceUnavailable(format!("error dialing backend: {e}"));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| unreachable(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let host_header = format!("{host}:{port}")
        .parse()
        .map_err(|_| ApiError::Internal("kubelet address".into()))?;
    request.headers_mut().insert(header::HOST, host_header);
    crate::telemetry::traces::propagate(request.headers_mut());
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// The API error for a kubelet's refusal: its text, as BadRequest when the
/// request was at fault.
async fn kubelet_error(response: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::bad_request(message),
        _ => ApiError::Internal(format!("kubelet answered {status}: {message}")),
    }
}

/// `GET pods/{name}/log`.
pub async fn pod_log(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    let (pod, _) = load(state, req).await?;
    let container = container_of(&pod, req.name(), req.query.get("container"))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            req.name()
        )));
    }
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for key in [
            "follow",
            "previous",
            "timestamps",
            "tailLines",
            "sinceSeconds",
            "sinceTime",
            "limitBytes",
        ] {
            if let Some(v) = req.query.get(key) {
                query.append_pair(key, v);
            }
        }
        query.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{container}?{query}",
        req.path.namespace.as_deref().unwrap_or_default(),
        req.name(),
    );
    let response = kubelet_get(state, node, &path).await?;
    if response.status() != StatusCode::OK {
        return Err(kubelet_error(response).await);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(response.into_body()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whether the path is a streaming pod subresource.
pub fn is_stream(path: &ResourcePath) -> bool {
    path.group.is_empty()
        && path.resource == "pods"
        && path.name.is_some()
        && matches!(
            path.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
}

/// The kubelet path for a streaming request (upstream's names: `input`,
/// `output`, `error` for the stdio switches).
fn kubelet_stream_path(path: &ResourcePath, container: &str, query: Option<&str>) -> String {
    let namespace = path.namespace.as_deref().unwrap_or_default();
    let pod = path.name.as_deref().unwrap_or_default();
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let key = match k.as_ref() {
            "stdin" => "input",
            "stdout" => "output",
            "stderr" => "error",
            // PodPortForwardOptions' `ports`, the kubelet's `port`.
            "ports" => "port",
            "container" => continue,
            other => other,
        };
        out.append_pair(key, &v);
    }
    let query = out.finish();
    match path.subresource.as_deref() {
        Some("portforward") => format!("/portForward/{namespace}/{pod}?{query}"),
        Some(kind) => format!("/{kind}/{namespace}/{pod}/{container}?{query}"),
        None => String::new(),
    }
}

/// Relays an exec, attach or port-forward request to the pod's kubelet: the
/// handshake goes through, then bytes flow both ways until either side closes.
pub async fn stream(
    state: &ApiState,
    user: crate::apiserver::authn::User,
    path: ResourcePath,
    parts: &axum::http::request::Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    let rt = state
        .registry
        .lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
    let req = Request {
        rt,
        path: path.clone(),
        query: crate::apiserver::request::Query::parse(parts.uri.query()),
        headers: parts.headers.clone(),
        user,
        warnings: Default::default(),
    };
    let (pod, _) = load(state, &req).await?;
    let container = if path.subresource.as_deref() == Some("portforward") {
        String::new()
    } else {
        container_of(&pod, req.name(), req.query.get("container"))?
    };
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            req.name()
        )));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let request = crate::http::upgrade::backend_request(
        parts.method.clone(),
        &kubelet_stream_path(&path, &container, parts.uri.query()),
        &parts.headers,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = kubelet_request(state, node, request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_error(response).await);
    }
    let client =
        upgrade.ok_or_else(|| ApiError::bad_request("this request must be an HTTP/1.1 upgrade"))?;
    crate::http::upgrade::splice(&mut response, client)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_defaults_only_when_there_is_one() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container_of(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(container_of(&pod, "p", Some("i")).unwrap(), "i");
        assert_eq!(
            container_of(&pod, "p", None).unwrap_err().to_string(),
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            container_of(&pod, "p", Some("z")).unwrap_err().to_string(),
            "container z is not valid for pod p"
        );
        let single = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&single, "p", Some("")).unwrap(), "only");
    }
}
