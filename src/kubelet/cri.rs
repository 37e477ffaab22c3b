//! The CRI client: runtime and image services of containerd's CRI plugin,
//! over the same gRPC channel as the containerd API.

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub use k8s_cri::v1 as api;

/// The CRI services of one runtime endpoint.
#[derive(Clone)]
pub struct Cri {
    /// Sandboxes, containers, exec, logs reopen.
    pub runtime: RuntimeServiceClient<Channel>,
    /// Image status and pulls.
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// CRI over an established channel.
    pub fn new(channel: Channel) -> Self {
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
