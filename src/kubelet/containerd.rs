//! The supervised containerd: its configuration under `<data-dir>/agent/containerd/`,
//! the process (restarted when it dies, stopped with kelp; pods live on in their
//! shims), and the gRPC channel both CRI and the containerd API use.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::runtime::Backoff;

/// The socket of the containerd kelp supervises (default data dir).
pub const SOCKET: &str = "/run/kelp/containerd/containerd.sock";

/// The supervised containerd's socket for a data dir: [`SOCKET`] for the
/// default one; for another (a second kelp on the machine, as tests run
/// agents) `/run/kelp/containerd/<8 hex of SHA-256 of its real path>/`,
/// short enough for a socket path wherever the data dir is.
pub fn socket_for(data_dir: &Path) -> PathBuf {
    if data_dir == Path::new("/var/lib/kelp") {
        return PathBuf::from(SOCKET);
    }
    use sha2::{Digest, Sha256};
    let real = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = hex::encode(Sha256::digest(real.as_os_str().as_encoded_bytes()));
    PathBuf::from(format!(
        "/run/kelp/containerd/{}/containerd.sock",
        &digest[..8]
    ))
}

/// The containerd namespace CRI keeps pods and images in.
pub const NAMESPACE: &str = "k8s.io";

/// Paths of the node's containerd and CNI set-up.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<data-dir>/agent/containerd`: config, root, state, log.
    pub dir: PathBuf,
    /// Directory containerd execs CNI plugins from (`kelp-cni` links to kelp).
    pub cni_bin: PathBuf,
    /// Directory containerd reads the CNI network configuration from.
    pub cni_conf: PathBuf,
    /// Where `kelp-cni` keeps its address allocations.
    pub cni_state: PathBuf,
    /// The socket containerd listens on.
    pub socket: PathBuf,
}

impl Layout {
    /// The layout for a data dir.
    pub fn new(data_dir: &Path) -> Self {
        let agent = data_dir.join("agent");
        Layout {
            dir: agent.join("containerd"),
            cni_bin: agent.join("cni").join("bin"),
            cni_conf: agent.join("cni").join("conf"),
            cni_state: agent.join("cni").join("networks"),
            socket: socket_for(data_dir),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }

    /// Directory of per-registry `hosts.toml` files (mirrors, credentials).
    pub fn registry_hosts(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    /// containerd's configuration: CRI on, kelp's CNI plugin and pause image.
    /// Without CAP_SYS_RESOURCE (some VMs and containers), pods may not get a
    /// lower oom_score_adj than containerd's own, so CRI is told to restrict it.
    pub fn config(&self, sandbox_image: &str, restrict_oom_score_adj: bool) -> String {
        format!(
            r#"# Written by kelp at every start; edits are lost.
version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = {restrict_oom_score_adj}
  # Pod network namespaces under the state dir: kelp-killall.sh finds and
  # removes exactly kelp's, even those of sandboxes that never started.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
"#,
            root = self.dir.join("root").display(),
            state = self.dir.join("state").display(),
            socket = self.socket.display(),
            cni_bin = self.cni_bin.display(),
            cni_conf = self.cni_conf.display(),
            hosts = self.registry_hosts().display(),
        )
    }

    /// Writes the config (with the registries' credentials), the registry
    /// hosts files and the CNI plugin links (`kelp-cni`, `loopback`).
    pub fn prepare(
        &self,
        sandbox_image: &str,
        registries: &super::registries::Registries,
    ) -> Result<()> {
        for dir in [
            &self.dir,
            &self.cni_bin,
            &self.cni_conf,
            &self.cni_state,
            &self.registry_hosts(),
        ] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Some(parent) = self.socket.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let restrict = !has_capability(CAP_SYS_RESOURCE);
        if restrict {
            tracing::info!(
                "no CAP_SYS_RESOURCE: pods keep containerd's oom_score_adj as their lowest"
            );
        }
        let mut config = self.config(sandbox_image, restrict);
        config.push_str(&registries.auth_config());
        std::fs::write(self.config_path(), config).context("writing containerd config")?;
        registries.write_hosts(&self.registry_hosts())?;
        // The CNI plugins containerd runs are kelp itself, by name.
        let exe = std::env::current_exe().context("locating the kelp binary")?;
        for plugin in ["kelp-cni", "loopback"] {
            let link = self.cni_bin.join(plugin);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&exe, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(())
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds the capability (bit of CapEff in /proc/self/status).
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Runs containerd until `stop` turns true, restarting it when it exits.
/// A containerd left behind by a kelp that was killed is stopped first.
pub async fn supervise(layout: Layout, mut stop: watch::Receiver<bool>) {
    stop_stale(&layout).await;
    // Restarts wait 1 s, doubling to 30 s; a run of 30 s forgets the back-off.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let started = Instant::now();
        let mut child = match spawn(&layout) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(err = %format!("{e:#}"), "starting containerd");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step(&(), Instant::now())) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        if let Some(pid) = child.id() {
            let _ = std::fs::write(layout.pid_path(), pid.to_string());
            tracing::info!(pid, "containerd started");
        }
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(status = ?status, "containerd exited; restarting");
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset(&());
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step(&(), Instant::now())) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => {
                terminate(&mut child).await;
                let _ = std::fs::remove_file(layout.pid_path());
                tracing::info!("containerd stopped");
                return;
            }
        }
    }
}

fn spawn(layout: &Layout) -> Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.dir.join("containerd.log"))
        .context("opening containerd.log")?;
    let mut cmd = Command::new("containerd");
    cmd.arg("--config")
        .arg(layout.config_path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: a Ctrl-C at kelp's terminal is kelp's to handle.
        .process_group(0);
    cmd.spawn()
        .context("running containerd (apt-get install containerd)")
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Stops the containerd a previous kelp started (its pid file names it and
/// its command line still points at our config).
async fn stop_stale(layout: &Layout) {
    let Ok(pid) = std::fs::read_to_string(layout.pid_path()) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = layout.config_path();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy());
    if !ours {
        return;
    }
    tracing::info!(pid, "stopping the containerd a previous kelp left running");
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Connects to containerd's socket, waiting up to `timeout` for it to answer.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Channel> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let channel = containerd_client::connect(socket).await?;
            let mut version = containerd_client::services::v1::version_client::VersionClient::new(
                channel.clone(),
            );
            version.version(()).await?;
            anyhow::Ok(channel)
        };
        match attempt.await {
            Ok(channel) => return Ok(channel),
            Err(e) if std::time::Instant::now() > deadline => {
                bail!("containerd at {} did not answer: {e:#}", socket.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Adds the containerd namespace header to a request.
pub fn namespaced<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NAMESPACE),
    );
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_containerd_at_kelps_paths() {
        let layout = Layout::new(Path::new("/var/lib/kelp"));
        let config = layout.config("kelp.local/pause:1", true);
        assert!(config.contains("restrict_oom_score_adj = true"));
        assert!(config.contains(r#"root = "/var/lib/kelp/agent/containerd/root""#));
        assert!(config.contains(r#"address = "/run/kelp/containerd/containerd.sock""#));
        assert!(config.contains(r#"sandbox_image = "kelp.local/pause:1""#));
        assert!(config.contains(r#"bin_dir = "/var/lib/kelp/agent/cni/bin""#));
        assert!(config.contains(r#"conf_dir = "/var/lib/kelp/agent/cni/conf""#));
    }
}
