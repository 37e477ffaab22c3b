//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket) and
//! lifecycle hooks. One task per running container with probes; results are
//! shared with the pod worker, which restarts containers and reports Ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

use super::cri::{Cri, api};

/// Labels of `prober_probe_total`, as upstream's kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ProbeLabels {
    probe_type: String,
    result: String,
    container: String,
    pod: String,
    namespace: String,
    pod_uid: String,
}

/// The kubelet's probe metrics (`/metrics/probes`).
#[derive(Debug)]
pub struct ProbeMetrics {
    registry: prometheus_client::registry::Registry,
    probes: prometheus_client::metrics::family::Family<
        ProbeLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let probes = prometheus_client::metrics::family::Family::default();
        crate::telemetry::register_in(
            &mut registry,
            &crate::telemetry::Descriptor::new(
                "prober_probe",
                "Cumulative number of a liveness, readiness or startup probe for a container by result",
            ),
            probes.clone(),
        );
        ProbeMetrics { registry, probes }
    }
}

impl ProbeMetrics {
    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        crate::telemetry::prometheus_text(&self.registry)
    }

    fn count(&self, pod: &PodRef, probe_type: &str, ok: bool) {
        self.probes
            .get_or_create(&ProbeLabels {
                probe_type: probe_type.into(),
                result: if ok { "successful" } else { "failed" }.into(),
                container: pod.container.clone(),
                pod: pod.name.clone(),
                namespace: pod.namespace.clone(),
                pod_uid: pod.uid.clone(),
            })
            .inc();
    }
}

/// Which container of which pod a probe is for (metric labels).
#[derive(Debug, Clone, Default)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod uid.
    pub uid: String,
    /// Container name.
    pub container: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Verdicts {
    ready: bool,
    started: bool,
    liveness_failed: bool,
}

/// Probe verdicts per CRI container id.
#[derive(Debug, Clone, Default)]
pub struct ProbeResults(Arc<Mutex<HashMap<String, Verdicts>>>);

impl ProbeResults {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Verdicts>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ready: no readiness probe, or its last verdict was success.
    pub fn ready(&self, id: &str, has_probe: bool) -> bool {
        !has_probe || self.with(|m| m.get(id).is_some_and(|v| v.ready))
    }

    /// Started: no startup probe, or it has succeeded.
    pub fn started(&self, id: &str, has_probe: bool) -> bool {
        !has_probe || self.with(|m| m.get(id).is_some_and(|v| v.started))
    }

    /// The liveness (or startup) probe gave up on the container.
    pub fn liveness_failed(&self, id: &str) -> bool {
        self.with(|m| m.get(id).is_some_and(|v| v.liveness_failed))
    }

    /// Drops what is known about a container.
    pub fn forget(&self, id: &str) {
        self.with(|m| m.remove(id));
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Verdicts)) -> bool {
        self.with(|m| {
            let v = m.entry(id.to_string()).or_default();
            let before = (v.ready, v.started, v.liveness_failed);
            f(v);
            before != (v.ready, v.started, v.liveness_failed)
        })
    }
}

/// Runs the probes of a pod's containers.
pub struct Prober {
    cri: Cri,
    results: ProbeResults,
    wake: Arc<Notify>,
    metrics: Arc<ProbeMetrics>,
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// Where a probe connects.
#[derive(Debug, Clone)]
struct Target {
    id: String,
    ip: String,
    ports: HashMap<String, i32>,
    pod: PodRef,
}

impl Prober {
    /// A prober reporting into `results` (and counting into `metrics`) and
    /// waking the worker on changes.
    pub fn new(
        cri: Cri,
        results: ProbeResults,
        wake: Arc<Notify>,
        metrics: Arc<ProbeMetrics>,
    ) -> Self {
        Prober {
            cri,
            results,
            wake,
            metrics,
            tasks: HashMap::new(),
        }
    }

    /// Starts probing a running container (once).
    pub fn ensure(&mut self, c: &Container, id: &str, pod_ip: &str, pod: PodRef) {
        if self.tasks.contains_key(id) {
            return;
        }
        let has_probes =
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some();
        if !has_probes {
            return;
        }
        let target = Target {
            id: id.to_string(),
            ip: pod_ip.to_string(),
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect(),
            pod,
        };
        let task = tokio::spawn(probe_container(
            self.metrics.clone(),
            self.cri.clone(),
            self.results.clone(),
            self.wake.clone(),
            target,
            (
                c.startup_probe.clone(),
                c.liveness_probe.clone(),
                c.readiness_probe.clone(),
            ),
        ));
        self.tasks.insert(id.to_string(), task);
    }

    /// Stops probing a container.
    pub fn stop(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            t.abort();
        }
    }

    /// Stops all probes.
    pub fn stop_all(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }

    /// Runs a postStart or preStop hook; failures are logged.
    pub async fn run_hook(
        &self,
        id: &str,
        hook: &LifecycleHandler,
        timeout: Duration,
        pod_ip: &str,
    ) {
        let target = Target {
            id: id.into(),
            ip: pod_ip.into(),
            ports: HashMap::new(),
            pod: PodRef::default(),
        };
        let outcome = if let Some(exec) = &hook.exec {
            run_exec(&self.cri, &target, exec, timeout).await
        } else if let Some(http) = &hook.http_get {
            run_http(&target, http, timeout).await
        } else if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
            Ok(())
        } else {
            Ok(())
        };
        if let Err(e) = outcome {
            tracing::info!(container = id, err = %e, "lifecycle hook failed");
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn run_exec(
    cri: &Cri,
    t: &Target,
    exec: &ExecAction,
    timeout: Duration,
) -> Result<(), String> {
    let mut runtime = cri.runtime.clone();
    let response = runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: t.id.clone(),
            cmd: exec.command.clone().unwrap_or_default(),
            timeout: timeout.as_secs().max(1) as i64,
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    if response.exit_code == 0 {
        Ok(())
    } else {
        Err(format!(
            "command exited with {}: {}",
            response.exit_code,
            String::from_utf8_lossy(&response.stdout).trim()
        ))
    }
}

fn port(t: &Target, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => Ok(*p as u16),
        IntOrString::String(name) => t
            .ports
            .get(name)
            .map(|p| *p as u16)
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

async fn run_tcp(t: &Target, tcp: &TCPSocketAction, timeout: Duration) -> Result<(), String> {
    let host = tcp.host.clone().unwrap_or_else(|| t.ip.clone());
    let addr = format!("{host}:{}", port(t, &tcp.port)?);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
        Err(_) => Err(format!("dial tcp {addr}: timeout")),
    }
}

async fn run_http(t: &Target, http: &HTTPGetAction, timeout: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if http.scheme.as_deref() == Some("HTTPS") {
        return Err("HTTPS probes are not supported by kelp yet".into());
    }
    let host = http.host.clone().unwrap_or_else(|| t.ip.clone());
    let port = port(t, &http.port)?;
    let path = http.path.clone().unwrap_or_else(|| "/".into());
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in http.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&head[..n]).to_string();
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("malformed HTTP response")?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get \"http://{host}:{port}{path}\": context deadline exceeded"
        )),
    }
}

async fn run_probe(cri: &Cri, t: &Target, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        run_exec(cri, t, exec, timeout).await
    } else if let Some(http) = &probe.http_get {
        run_http(t, http, timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        run_tcp(t, tcp, timeout).await
    } else {
        Err("this probe type is not supported by kelp".into())
    }
}

/// Repeats a probe, calling `verdict` with true/false once the success or
/// failure threshold is crossed; returns when `verdict` says stop.
async fn repeat(
    metrics: &ProbeMetrics,
    kind: &str,
    cri: &Cri,
    t: &Target,
    probe: &Probe,
    mut verdict: impl FnMut(bool) -> bool,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut successes, mut failures) = (0, 0);
    loop {
        let outcome = run_probe(cri, t, probe).await;
        metrics.count(&t.pod, kind, outcome.is_ok());
        match outcome {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= success_threshold && verdict(true) {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(container = %t.id, err = %e, "probe failed");
                failures += 1;
                successes = 0;
                if failures >= failure_threshold && verdict(false) {
                    return;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn probe_container(
    metrics: Arc<ProbeMetrics>,
    cri: Cri,
    results: ProbeResults,
    wake: Arc<Notify>,
    target: Target,
    (startup, liveness, readiness): (Option<Probe>, Option<Probe>, Option<Probe>),
) {
    let id = target.id.clone();
    let changed = |f: &dyn Fn(&mut Verdicts)| {
        if results.update(&id, f) {
            wake.notify_one();
        }
    };
    if let Some(startup) = &startup {
        let mut failed = false;
        repeat(&metrics, "Startup", &cri, &target, startup, |ok| {
            failed = !ok;
            true
        })
        .await;
        if failed {
            changed(&|v| v.liveness_failed = true);
            return;
        }
    }
    changed(&|v| v.started = true);
    let live = async {
        if let Some(p) = &liveness {
            repeat(&metrics, "Liveness", &cri, &target, p, |ok| {
                if !ok {
                    changed(&|v| v.liveness_failed = true);
                }
                !ok
            })
            .await;
        }
    };
    let ready = async {
        match &readiness {
            Some(p) => {
                repeat(&metrics, "Readiness", &cri, &target, p, |ok| {
                    changed(&|v| v.ready = ok);
                    false
                })
                .await
            }
            None => changed(&|v| v.ready = true),
        }
    };
    tokio::join!(live, ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_a_passing_probe_and_liveness_failure_is_sticky() {
        let r = ProbeResults::default();
        assert!(r.ready("c", false), "no probe: ready once running");
        assert!(!r.ready("c", true), "a probe that has not passed");
        r.update("c", |v| {
            v.started = true;
            v.ready = true;
        });
        assert!(r.ready("c", true));
        assert!(r.started("c", true));
        r.update("c", |v| v.liveness_failed = true);
        assert!(r.liveness_failed("c"));
        r.forget("c");
        assert!(!r.liveness_failed("c"));
    }
}
