//! The CRI client: runtime and image services of containerd's CRI plugin,
//! over the same gRPC channel as the containerd API.

use std::task::{Context, Poll};

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
    /// CRI over an established channel.
    pub fn new(channel: Channel) -> Self {
        let channel = CriChannel(channel);
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

/// The gRPC channel to the runtime. With traces on, each call is a client
/// span named by its method (`runtime.v1.RuntimeService/RunPodSandbox`, as
/// upstream's otelgrpc names them) that hands its `traceparent` on.
#[derive(Clone)]
pub struct CriChannel(Channel);

impl tower::Service<http::Request<tonic::body::Body>> for CriChannel {
    type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if !traces::on() {
            return Box::pin(self.0.call(request));
        }
        let method = request.uri().path().trim_start_matches('/').to_string();
        let span = tracing::info_span!(
            target: traces::TARGET,
            "grpc",
            otel.name = method,
            otel.kind = "client",
            rpc.system = "grpc",
        );
        span.in_scope(|| traces::propagate(request.headers_mut()));
        Box::pin(self.0.call(request).instrument(span))
    }
}
