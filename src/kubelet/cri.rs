//! The CRI client: runtime and image services of containerd's CRI plugin,
//! over the same gRPC channel as the containerd API.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::telemetry::traces;

pub use k8s_cri::v1 as api;

/// The CRI services of one runtime endpoint.
#[derive(Clone)]
pub struct Cri {
    /// Sandboxes, containers, exec, logs reopen.
    pub runtime: RuntimeServiceClient<CriChannel>,
    /// Image status and pulls.
    pub images: ImageServiceClient<CriChannel>,
}

impl Cri {
    /// CRI over an established channel, each call counted in `metrics`.
    pub fn new(channel: Channel, metrics: Arc<super::metrics::KubeletMetrics>) -> Self {
        let channel = CriChannel { channel, metrics };
        Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(16 << 20),
        }
    }

    /// `containerd://<version>` and whether runtime and network are ready
    /// (the reason when not), as the Node's Ready condition reports them.
    pub async fn health(&self) -> (String, Result<(), String>) {
        let mut runtime = self.runtime.clone();
        let version = match runtime.version(api::VersionRequest::default()).await {
            Ok(v) => {
                let v = v.into_inner();
                format!("{}://{}", v.runtime_name, v.runtime_version)
            }
            Err(e) => {
                return (
                    String::new(),
                    Err(format!("container runtime is down: {}", e.message())),
                );
            }
        };
        let status = match runtime.status(api::StatusRequest { verbose: false }).await {
            Ok(s) => s.into_inner().status.unwrap_or_default(),
            Err(e) => {
                return (
                    version,
                    Err(format!("container runtime status: {}", e.message())),
                );
            }
        };
        for condition in &status.conditions {
            if !condition.status {
                return (
                    version,
                    Err(format!(
                        "container runtime not ready: {}: {} {}",
                        condition.r#type, condition.reason, condition.message
                    )),
                );
            }
        }
        (version, Ok(()))
    }
}

/// The gRPC channel to the runtime: each call is counted and timed by its
/// method (`kubelet_runtime_operations_*`); with traces on it is also a
/// client span named by its method (`runtime.v1.RuntimeService/RunPodSandbox`,
/// as upstream's otelgrpc names them) that hands its `traceparent` on.
#[derive(Clone)]
pub struct CriChannel {
    channel: Channel,
    metrics: Arc<super::metrics::KubeletMetrics>,
}

impl tower::Service<http::Request<tonic::body::Body>> for CriChannel {
    type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let span = if traces::on() {
            let span = tracing::info_span!(
                target: traces::TARGET,
                "grpc",
                otel.name = path.trim_start_matches('/'),
                otel.kind = "client",
                rpc.system = "grpc",
            );
            span.in_scope(|| traces::propagate(request.headers_mut()));
            span
        } else {
            tracing::Span::none()
        };
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let call = self.channel.call(request);
        Box::pin(
            async move {
                let result = call.await;
                // A unary call's error comes in a trailers-only response.
                let failed = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|s| s.as_bytes() != b"0"),
                    Err(_) => true,
                };
                metrics.runtime_operation(&path, started.elapsed(), failed);
                result
            }
            .instrument(span),
        )
    }
}
