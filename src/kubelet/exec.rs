//! Processes started in a running container (`kubectl exec`), through
//! containerd's task API: the container's own process spec with the
//! requested command, stdio over FIFOs kelp owns, exit status from Wait.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use containerd_client::services::v1 as api;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use tokio::net::unix::pipe;
use tonic::transport::Channel;

use super::containerd::namespaced;

/// What to run and which streams to connect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    /// argv.
    pub command: Vec<String>,
    /// Connect stdin.
    pub stdin: bool,
    /// Connect stdout.
    pub stdout: bool,
    /// Connect stderr (ignored with a TTY: the terminal carries both).
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
}

/// A started process; read its output, feed its input, then [`wait`](Self::wait).
pub struct ExecProcess {
    /// Input, when requested.
    pub stdin: Option<pipe::Sender>,
    /// Standard output (the terminal with a TTY).
    pub stdout: Option<pipe::Receiver>,
    /// Standard error, when requested and without a TTY.
    pub stderr: Option<pipe::Receiver>,
    tasks: TasksClient<Channel>,
    container_id: String,
    exec_id: String,
    dir: PathBuf,
}

fn fifo(path: &PathBuf) -> Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("creating {}", path.display()))
}

impl ExecProcess {
    /// Starts `options.command` in the container.
    pub async fn start(
        channel: &Channel,
        container_id: &str,
        options: &ExecOptions,
    ) -> Result<Self> {
        if options.command.is_empty() {
            bail!("you must specify at least one command for the container");
        }
        let mut containers = ContainersClient::new(channel.clone());
        let container = containers
            .get(namespaced(api::GetContainerRequest {
                id: container_id.into(),
            }))
            .await
            .context("looking up the container")?
            .into_inner()
            .container
            .context("container without a record")?;
        let spec = container.spec.context("container without a spec")?;
        let spec: serde_json::Value =
            serde_json::from_slice(&spec.value).context("container spec")?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(options.command);
        process["terminal"] = serde_json::json!(options.tty);
        let exec_id = format!("kelp-exec-{:016x}", rand::random::<u64>());
        let dir = PathBuf::from("/run/kelp/exec").join(&exec_id);
        std::fs::create_dir_all(&dir).context("creating the exec FIFO directory")?;
        let path = |name: &str| dir.join(name);
        let mut stdin = None;
        let mut stdout = None;
        let mut stderr = None;
        if options.stdin {
            fifo(&path("stdin"))?;
            // Read-write so opening does not wait for the shim; dropping it is EOF.
            stdin = Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(path("stdin"))?,
            );
        }
        if options.stdout || options.tty {
            fifo(&path("stdout"))?;
            stdout = Some(pipe::OpenOptions::new().open_receiver(path("stdout"))?);
        }
        let with_stderr = options.stderr && !options.tty;
        if with_stderr {
            fifo(&path("stderr"))?;
            stderr = Some(pipe::OpenOptions::new().open_receiver(path("stderr"))?);
        }
        let name = |on: bool, n: &str| {
            if on {
                path(n).display().to_string()
            } else {
                String::new()
            }
        };
        let mut tasks = TasksClient::new(channel.clone());
        let exec = api::ExecProcessRequest {
            container_id: container_id.into(),
            stdin: name(options.stdin, "stdin"),
            stdout: name(options.stdout || options.tty, "stdout"),
            stderr: name(with_stderr, "stderr"),
            terminal: options.tty,
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process)?,
            }),
            exec_id: exec_id.clone(),
        };
        let started = async {
            tasks
                .exec(namespaced(exec))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            tasks
                .start(namespaced(api::StartRequest {
                    container_id: container_id.into(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            anyhow::Ok(())
        }
        .await;
        let process = ExecProcess {
            stdin,
            stdout,
            stderr,
            tasks,
            container_id: container_id.into(),
            exec_id,
            dir,
        };
        if let Err(e) = started {
            process.cleanup().await;
            return Err(e.context("failed to exec in container"));
        }
        Ok(process)
    }

    /// Resizes the terminal.
    pub async fn resize(&self, width: u32, height: u32) {
        let mut tasks = self.tasks.clone();
        let _ = tasks
            .resize_pty(namespaced(api::ResizePtyRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                width,
                height,
            }))
            .await;
    }

    /// Ends the input: the process reads EOF.
    pub async fn close_stdin(&mut self) {
        if self.stdin.take().is_some() {
            let mut tasks = self.tasks.clone();
            let _ = tasks
                .close_io(namespaced(api::CloseIoRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                    stdin: true,
                }))
                .await;
        }
    }

    /// A future for the exit status (it does not borrow the process, so
    /// its streams stay usable meanwhile).
    pub fn wait(&self) -> impl std::future::Future<Output = Result<u32>> + Send + 'static {
        let mut tasks = self.tasks.clone();
        let request = api::WaitRequest {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        };
        async move {
            let response = tasks
                .wait(namespaced(request))
                .await
                .map_err(|s| anyhow::anyhow!("waiting for the process: {}", s.message()))?;
            Ok(response.into_inner().exit_status)
        }
    }

    /// Kills the process (the client went away).
    pub async fn kill(&self) {
        let mut tasks = self.tasks.clone();
        let _ = tasks
            .kill(namespaced(api::KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal: 9,
                all: false,
            }))
            .await;
    }

    /// Forgets the process in containerd and removes the FIFOs.
    pub async fn cleanup(mut self) {
        self.stdin.take();
        let _ = self
            .tasks
            .delete_process(namespaced(api::DeleteProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Status kubectl expects at the end of a remote command.
pub fn exit_status(command: &[String], code: u32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status for a command that could not run.
pub fn error_status(message: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        assert_eq!(exit_status(&["true".into()], 0)["status"], "Success");
        let failed = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "3"})
        );
    }
}
