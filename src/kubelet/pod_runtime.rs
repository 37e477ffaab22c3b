//! The runtime as a pod worker drives it: a small trait over the CRI calls
//! a sync makes, answering in the planner's terms ([`SandboxSeen`],
//! [`Runs`]). [`Cri`] implements it over containerd.

use std::collections::HashMap;

use async_trait::async_trait;
use tonic::Status;

use super::container::{CONTAINER_HASH, CONTAINER_NAME, POD_UID};
use super::cri::{Cri, api};
use super::plan::{Runs, SandboxSeen};
use super::status::{ContainerRun, RunState, SandboxView};

/// Sandboxes, containers and images of the pods on this node.
#[async_trait]
pub trait PodRuntime: Send + Sync {
    /// The pod's sandboxes, newest first.
    async fn sandboxes(&self, pod_uid: &str) -> Result<Vec<SandboxSeen>, Status>;
    /// A sandbox's readiness and IP (default when the runtime cannot say).
    async fn sandbox_view(&self, id: &str) -> SandboxView;
    /// Creates and starts a sandbox.
    async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<(), Status>;
    /// Stops a sandbox (its containers and network).
    async fn stop_sandbox(&self, id: &str);
    /// Stops and removes a sandbox and its containers.
    async fn remove_sandbox(&self, id: &str);
    /// The containers of a sandbox by name, attempts newest first.
    async fn containers(&self, sandbox: &str) -> Result<Runs, Status>;
    /// Whether the image is present.
    async fn image_present(&self, image: &str) -> bool;
    /// Pulls the image.
    async fn pull_image(&self, image: &str) -> Result<(), Status>;
    /// Creates a container in a sandbox; its id.
    async fn create_container(
        &self,
        sandbox: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, Status>;
    /// Starts a created container.
    async fn start_container(&self, id: &str) -> Result<(), Status>;
    /// Stops a container: SIGTERM, SIGKILL after `timeout` seconds.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status>;
    /// Removes a container (best effort).
    async fn remove_container(&self, id: &str);
}

fn run_of(s: &api::ContainerStatus) -> ContainerRun {
    ContainerRun {
        id: s.id.clone(),
        attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
        state: match api::ContainerState::try_from(s.state) {
            Ok(api::ContainerState::ContainerCreated) => RunState::Created,
            Ok(api::ContainerState::ContainerRunning) => RunState::Running,
            Ok(api::ContainerState::ContainerExited) => RunState::Exited,
            _ => RunState::Unknown,
        },
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason.clone(),
        message: s.message.clone(),
        image_ref: s.image_ref.clone(),
    }
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

#[async_trait]
impl PodRuntime for Cri {
    async fn sandboxes(&self, pod_uid: &str) -> Result<Vec<SandboxSeen>, Status> {
        let filter = api::PodSandboxFilter {
            label_selector: HashMap::from([(POD_UID.to_string(), pod_uid.to_string())]),
            ..Default::default()
        };
        let mut items = self
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner()
            .items;
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(items
            .into_iter()
            .map(|s| SandboxSeen {
                ready: s.state == api::PodSandboxState::SandboxReady as i32,
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                id: s.id,
            })
            .collect())
    }

    async fn sandbox_view(&self, id: &str) -> SandboxView {
        match self
            .runtime
            .clone()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
        {
            Ok(s) => {
                let s = s.into_inner().status.unwrap_or_default();
                SandboxView {
                    ready: s.state == api::PodSandboxState::SandboxReady as i32,
                    ip: s.network.map(|n| n.ip).filter(|ip| !ip.is_empty()),
                }
            }
            Err(_) => SandboxView::default(),
        }
    }

    async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<(), Status> {
        self.runtime
            .clone()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|_| ())
    }

    async fn stop_sandbox(&self, id: &str) {
        let _ = self
            .runtime
            .clone()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
    }

    async fn remove_sandbox(&self, id: &str) {
        self.stop_sandbox(id).await;
        let _ = self
            .runtime
            .clone()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
    }

    async fn containers(&self, sandbox: &str) -> Result<Runs, Status> {
        let mut runtime = self.runtime.clone();
        let filter = api::ContainerFilter {
            pod_sandbox_id: sandbox.to_string(),
            ..Default::default()
        };
        let list = runtime
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner()
            .containers;
        let mut by_name = Runs::new();
        for c in list {
            let status = match runtime
                .container_status(api::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(s) => s.into_inner().status.unwrap_or_default(),
                Err(_) => continue,
            };
            let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
            let hash = c
                .annotations
                .get(CONTAINER_HASH)
                .cloned()
                .unwrap_or_default();
            by_name
                .entry(name)
                .or_default()
                .push((run_of(&status), hash));
        }
        for runs in by_name.values_mut() {
            runs.sort_by_key(|(r, _)| std::cmp::Reverse(r.attempt));
        }
        Ok(by_name)
    }

    async fn image_present(&self, image: &str) -> bool {
        self.images
            .clone()
            .image_status(api::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image.is_some())
            .unwrap_or(false)
    }

    async fn pull_image(&self, image: &str) -> Result<(), Status> {
        self.images
            .clone()
            .pull_image(api::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map(|_| ())
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, Status> {
        self.runtime
            .clone()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), Status> {
        self.runtime
            .clone()
            .start_container(api::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        self.runtime
            .clone()
            .stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    async fn remove_container(&self, id: &str) {
        let _ = self
            .runtime
            .clone()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await;
    }
}
