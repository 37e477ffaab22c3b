//! The service proxy, kube-proxy's iptables mode: watch caches of Services
//! and EndpointSlices over the in-process client; after any change (a
//! burst makes one pass) and every 30 s the whole rule set is rebuilt
//! (`rules.rs`) and applied with one `iptables-restore --noflush`, which
//! touches only the KUBE-* chains it declares and deletes the per-Service
//! chains no longer used, left over from an earlier run too. Metrics on
//! 127.0.0.1:10249, `/healthz` on 127.0.0.1:10256 (`server.rs`).

pub mod rules;
mod server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::network::iptables;
use crate::runtime::{Informers, Shutdown};
use crate::telemetry::{Descriptor, Metrics};

/// How often the rules are rebuilt without any change (kube-proxy's
/// `--iptables-sync-period`).
const RESYNC: Duration = Duration::from_secs(30);

/// What the proxy needs to know about its node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's name (which endpoints are local).
    pub node_name: String,
    /// The cluster's pod CIDR (traffic from outside it is masqueraded).
    pub cluster_cidr: String,
    /// The pod bridge (node ports reached at 127.0.0.1 leave through it).
    pub bridge: String,
}

/// When the rules were last applied (Unix milliseconds; 0: never).
#[derive(Debug, Default)]
struct LastSync(AtomicI64);

impl LastSync {
    fn set_now(&self) {
        self.0
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    fn get(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => chrono::DateTime::from_timestamp_millis(ms),
        }
    }
}

/// kube-proxy's sync series.
#[derive(Debug, Clone)]
struct ProxyMetrics {
    duration: Histogram,
    last: Gauge<f64, std::sync::atomic::AtomicU64>,
    rules: Family<TableLabel, Gauge>,
    failures: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

impl ProxyMetrics {
    fn new(metrics: &Metrics) -> Self {
        let this = Self {
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last: Gauge::default(),
            rules: Family::default(),
            failures: Counter::default(),
        };
        metrics.register(
            Descriptor::new(
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
            ),
            this.duration.clone(),
        );
        metrics.register(
            Descriptor::new(
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
            ),
            this.last.clone(),
        );
        metrics.register(
            Descriptor::new(
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
            ),
            this.rules.clone(),
        );
        metrics.register(
            Descriptor::new(
                "kubeproxy_sync_proxy_rules_iptables_restore_failures",
                "Cumulative proxy iptables restore failures",
            ),
            this.failures.clone(),
        );
        this
    }
}

/// Runs the proxy and its metrics and health ports until `shutdown`,
/// reading the node's shared caches.
pub async fn run(
    informers: Informers,
    config: ProxyConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let proxy_metrics = ProxyMetrics::new(&metrics);
    let last_sync = Arc::new(LastSync::default());
    let serving = server::serve(metrics, last_sync.clone());
    let syncing = sync_rules(informers, config, proxy_metrics, last_sync);
    shutdown
        .until(async { tokio::join!(serving, syncing) })
        .await;
    Ok(())
}

/// Keeps the rules in step with the Services and their endpoints.
async fn sync_rules(
    informers: Informers,
    config: ProxyConfig,
    metrics: ProxyMetrics,
    last_sync: Arc<LastSync>,
) {
    let (services, service_changes) = informers.cache::<Service>();
    let (slices, slice_changes) = informers.cache::<EndpointSlice>();
    let changes = futures::stream::select_all([service_changes, slice_changes]);
    // Rules written from a half-filled cache would cut live Services off.
    if !informers.informer::<Service>().ready().await
        || !informers.informer::<EndpointSlice>().ready().await
    {
        return;
    }
    prepare_host(&config.bridge, true);
    let mut existing: BTreeSet<String> = tokio::task::spawn_blocking(|| iptables::chains("nat"))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| rules::PER_SERVICE_PREFIXES.iter().any(|p| c.starts_with(p)))
        .collect();
    let mut jumps_checked: Option<Instant> = None;
    // What the last successful pass wrote: a change that leaves the rules as
    // they were (a pod's readiness elsewhere) writes nothing, and a resync
    // first looks whether they are still in place.
    let mut written: Option<String> = None;
    let mut passes = crate::runtime::passes(changes.boxed(), RESYNC, Duration::from_millis(10));
    while let Some(due) = passes.next().await {
        if due == crate::runtime::Due::Resync {
            jumps_checked = None;
        }
        let started = Instant::now();
        // The bridge appears with the first pod: checked at every pass.
        prepare_host(&config.bridge, false);
        let ports = rules::all_service_ports(&services.state(), &slices.state(), &config.node_name);
        let rendered = rules::render(&ports, &config.cluster_cidr, &existing);
        let resync = due == crate::runtime::Due::Resync;
        if iptables::unchanged(written.as_deref(), &rendered.text, resync, |text| {
            iptables::still_in_place(text, &rules::JUMPS.map(rules::jump))
        })
        .await
        {
            last_sync.set_now();
            metrics
                .last
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            continue;
        }
        let text = rendered.text.clone();
        let check_jumps = jumps_checked.is_none();
        let applied = tokio::task::spawn_blocking(move || {
            iptables::restore(&text)?;
            if check_jumps {
                for (table, chain, rule) in rules::JUMPS {
                    iptables::ensure_rule_in(table, chain, rule, true)?;
                }
            }
            Ok::<_, String>(())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match applied {
            Ok(()) => {
                if check_jumps {
                    jumps_checked = Some(Instant::now());
                }
                existing = rendered.chains;
                written = Some(rendered.text.clone());
                metrics.duration.observe(started.elapsed().as_secs_f64());
                metrics
                    .last
                    .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                for table in ["nat", "filter"] {
                    let count = count_rules(&rendered.text, table);
                    metrics
                        .rules
                        .get_or_create(&TableLabel { table })
                        .set(count);
                }
                last_sync.set_now();
                tracing::debug!(
                    services = ports.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "service rules synced"
                );
            }
            Err(e) => {
                metrics.failures.inc();
                tracing::warn!(err = %e, "writing service rules failed; retrying at the next change or resync");
            }
        }
    }
}

/// The number of rules `text` adds to `table`.
fn count_rules(text: &str, table: &str) -> i64 {
    text.split(&format!("*{table}\n"))
        .nth(1)
        .and_then(|t| t.split("COMMIT").next())
        .map_or(0, |t| {
            t.lines().filter(|l| l.starts_with("-A ")).count() as i64
        })
}

/// What the rules rely on from the kernel: bridged pod traffic passing
/// through iptables (br_netfilter, so a pod reaching a Service backed by a
/// pod on the same bridge gets its replies un-DNATed), and the bridge
/// accepting 127.0.0.1 as a source (node ports reached at localhost), as
/// k3s and kube-proxy set them.
fn prepare_host(bridge: &str, load_modules: bool) {
    let bridge_nf = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if load_modules && !bridge_nf.exists() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .is_ok_and(|s| s.success());
        if !loaded {
            tracing::warn!(
                "br_netfilter is not loaded and modprobe failed: pods cannot reach Services backed by pods on the same node"
            );
        }
    }
    for (path, what) in [
        (
            bridge_nf.to_path_buf(),
            "net.bridge.bridge-nf-call-iptables",
        ),
        (
            std::path::PathBuf::from(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet")),
            "route_localnet on the pod bridge",
        ),
    ] {
        if path.exists()
            && std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "1")
            && let Err(e) = std::fs::write(&path, "1")
        {
            tracing::warn!(err = %e, setting = what, "cannot enable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_counted_per_table() {
        let text = "*nat\n:A - [0:0]\n-A A -j RETURN\n-A A -j RETURN\nCOMMIT\n*filter\n-A B -j DROP\nCOMMIT\n";
        assert_eq!(count_rules(text, "nat"), 2);
        assert_eq!(count_rules(text, "filter"), 1);
        assert_eq!(count_rules(text, "mangle"), 0);
    }
}
