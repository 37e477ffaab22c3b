//! Hollow nodes (issue 19; kubemark's idea): `cargo bench --bench
//! hollow_nodes` (no root needed). An API-only `kelp server` (its scheduler
//! and controllers, no node of its own) is driven by `KELP_BENCH_HOLLOW_NODES`
//! (100) hollow nodes run in this process. Each is kelp's own kubelet code
//! minus the runtime: Node registration and the heartbeat (Lease every 10 s,
//! status on change or every 5 min) with fixed machine figures, and a pod
//! loop that watches the pods bound to it and writes the status kelp's
//! kubelet computes for them (ContainerCreating, then Running and Ready),
//! and finishes graceful deletions as a kubelet does (a delete with grace 0).
//! Each node holds a node's certificate (`system:node:NAME`), so the node
//! authorizer and NodeRestriction do their real work, and handles its pods
//! one at a time (a kubelet's client is rate-limited too).
//!
//! Then Deployments totalling `KELP_BENCH_HOLLOW_PODS` (3,000) pods are made
//! and, once all run, deleted. Printed:
//! - nodes registered → all Ready; start → all pods Running; the scheduler's
//!   throughput (bindings as the nodes see them arrive);
//! - API latency p99 during the ramp: the server's own
//!   `apiserver_request_duration_seconds` for mutating and read-only verbs
//!   (upstream's SLO: mutating ≤ 1 s), and the pod writes as the nodes saw them;
//! - the server's RSS and CPU: idle with the nodes, peak in the ramp, and
//!   with every pod running;
//! - Deployments deleted → every pod gone.
//!
//! The hollow nodes share this machine's two cores with the server (kubemark
//! runs them elsewhere), so the figures are a floor of what the server does
//! alone. Figures go to docs/PERFORMANCE.md by hand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kelp::kubelet::node::{self, Machine, NodeConfig, Readings};
use kelp::kubelet::status::{self, ContainerRun, ContainerView, Observed, RunState, SandboxView};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{BUSYBOX, Server};
use support::{cpu_seconds, ms, percentile, rss_kib};

const PODS_PER_DEPLOYMENT: usize = 100;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the hollow nodes saw, shared by all of them.
#[derive(Default)]
struct Tally {
    /// When each pod was first seen bound to a node.
    bound: Mutex<Vec<Instant>>,
    /// Pods whose Running status was written.
    running: AtomicUsize,
    /// Pods whose deletion a node finished.
    gone: AtomicUsize,
    /// Latency of the nodes' pod writes (status and final deletes).
    writes: Mutex<Vec<Duration>>,
}

impl Tally {
    fn wrote(&self, since: Instant) {
        self.writes.lock().expect("tally").push(since.elapsed());
    }
}

/// A machine of fixed size whose runtime is always healthy.
struct HollowMachine;

impl Machine for HollowMachine {
    async fn health(&self) -> (String, Result<(), String>) {
        ("hollow://0.0.0".into(), Ok(()))
    }

    fn readings(&self) -> Readings {
        Readings {
            cpus: 8,
            memory_total: 16 << 30,
            memory_available: 12 << 30,
            disk_total: 100 << 30,
            disk_available: 80 << 30,
            pids: (100, 4_194_304),
        }
    }
}

/// One hollow node: registration, heartbeat, then its pods until the
/// process ends.
async fn hollow_node(client: kube::Client, index: usize, tally: Arc<Tally>) {
    let config = NodeConfig {
        name: format!("hollow-{index}"),
        ip: format!("10.250.{}.{}", index / 250, index % 250 + 1),
        labels: Vec::new(),
        taints: Vec::new(),
        control_plane: false,
        data_dir: "/nonexistent".into(),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    node::register(&nodes, None, &config)
        .await
        .expect("registering a hollow node");
    tokio::spawn(node::heartbeat(
        client.clone(),
        config.clone(),
        HollowMachine,
    ));
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", config.name);
    let mut events = watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    let (mut started, mut deleting) = (HashSet::new(), HashSet::new());
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if deleting.insert(uid) {
                finish(&client, &pod, &tally).await;
            }
        } else if started.insert(uid) {
            tally.bound.lock().expect("tally").push(Instant::now());
            let ip = format!(
                "10.{}.{}.{}",
                100 + index / 250,
                index % 250,
                started.len() % 250 + 2
            );
            start(&client, pod, &ip, &config.ip, &tally).await;
        }
    }
}

/// What kelp's kubelet would see of the pod's containers: creating, or
/// running (init containers done).
fn containers(pod: &Pod, running: bool) -> HashMap<String, ContainerView> {
    let spec = pod.spec.clone().unwrap_or_default();
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let run = |name: &str, image: &str, state: RunState| ContainerRun {
        id: format!(
            "hollow-{name}-{}",
            pod.metadata.uid.as_deref().unwrap_or("")
        ),
        attempt: 0,
        state,
        started_at: now,
        finished_at: if state == RunState::Exited { now } else { 0 },
        exit_code: 0,
        reason: if state == RunState::Exited {
            "Completed".into()
        } else {
            String::new()
        },
        message: String::new(),
        image_ref: image.to_string(),
    };
    let view = |c: &k8s_openapi::api::core::v1::Container, state| {
        let image = c.image.as_deref().unwrap_or_default();
        if running {
            ContainerView {
                runs: vec![run(&c.name, image, state)],
                waiting: None,
                ready: state == RunState::Running,
                started: state == RunState::Running,
            }
        } else {
            ContainerView {
                runs: Vec::new(),
                waiting: Some(("ContainerCreating".into(), String::new())),
                ready: false,
                started: false,
            }
        }
    };
    let init = spec.init_containers.iter().flatten();
    init.map(|c| (c.name.clone(), view(c, RunState::Exited)))
        .chain(
            spec.containers
                .iter()
                .map(|c| (c.name.clone(), view(c, RunState::Running))),
        )
        .collect()
}

/// Writes the pod's status as kelp's kubelet would: ContainerCreating, then
/// Running and Ready.
async fn start(client: &kube::Client, mut pod: Pod, ip: &str, host_ip: &str, tally: &Tally) {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    for running in [false, true] {
        let views = containers(&pod, running);
        let now = kelp::api::values::meta::now();
        let computed = status::pod_status(&Observed {
            pod: &pod,
            sandbox: Some(SandboxView {
                ready: true,
                ip: Some(ip.to_string()),
            }),
            containers: &views,
            host_ip,
            now: &now,
        });
        let since = Instant::now();
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": computed})),
            )
            .await
        {
            Ok(written) => {
                tally.wrote(since);
                pod = written;
            }
            Err(e) => {
                eprintln!("hollow: status of {name}: {e}");
                return;
            }
        }
    }
    tally.running.fetch_add(1, Ordering::Relaxed);
}

/// Ends a graceful deletion as a kubelet does once the containers stopped.
async fn finish(client: &kube::Client, pod: &Pod, tally: &Tally) {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = kelp::kubelet::worker::final_delete(pod);
    let since = Instant::now();
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => tally.wrote(since),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            eprintln!("hollow: deleting a pod: {e}");
            return;
        }
    }
    tally.gone.fetch_add(1, Ordering::Relaxed);
}

fn deployment(name: &str, replicas: usize) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": BUSYBOX, "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }]},
            },
        },
    }))
    .expect("deployment")
}

/// A histogram's buckets: upper bound in microseconds → cumulative count.
type Buckets = BTreeMap<u64, f64>;

const MUTATING: &[&str] = &["POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION"];
const READING: &[&str] = &["GET", "LIST"];

/// The server's latency histograms at one moment, each summed per group.
struct Scrape {
    /// `apiserver_request_duration_seconds` (watches aside) per request:
    /// `(verb, resource[/subresource])`.
    requests: BTreeMap<(String, String), Buckets>,
    /// Priority and Fairness: time queued, per priority level.
    waits: BTreeMap<String, Buckets>,
    /// Priority and Fairness: time executing, per priority level.
    executions: BTreeMap<String, Buckets>,
    /// `etcd_request_duration_seconds` (kelp's store) per operation.
    store: BTreeMap<String, Buckets>,
}

async fn scrape(client: &kube::Client) -> Scrape {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let page = client.request_text(request).await.expect("/metrics");
    let families = common::metrics::parse(&page);
    let label = |labels: &BTreeMap<String, String>, key: &str| labels.get(key).cloned();
    Scrape {
        requests: histograms(&families, "apiserver_request_duration_seconds", |labels| {
            let verb = label(labels, "verb")?;
            if !(MUTATING.contains(&verb.as_str()) || READING.contains(&verb.as_str())) {
                return None;
            }
            let resource = label(labels, "resource").unwrap_or_default();
            Some(match label(labels, "subresource").as_deref() {
                None | Some("") => (verb, resource),
                Some(sub) => (verb, format!("{resource}/{sub}")),
            })
        }),
        waits: histograms(
            &families,
            "apiserver_flowcontrol_request_wait_duration_seconds",
            |labels| label(labels, "priority_level"),
        ),
        executions: histograms(
            &families,
            "apiserver_flowcontrol_request_execution_seconds",
            |labels| label(labels, "priority_level"),
        ),
        store: histograms(&families, "etcd_request_duration_seconds", |labels| {
            label(labels, "operation")
        }),
    }
}

/// The buckets of histogram `family`, summed over the samples `group` puts
/// under one key (`None`: left out).
fn histograms<K: Ord>(
    families: &common::metrics::Families,
    family: &str,
    group: impl Fn(&BTreeMap<String, String>) -> Option<K>,
) -> BTreeMap<K, Buckets> {
    let mut grouped: BTreeMap<K, Buckets> = BTreeMap::new();
    let Some((_, _, samples)) = families.get(family) else {
        return grouped;
    };
    for (name, labels, count) in samples {
        let Some(le) = labels.get("le") else { continue };
        if *name != format!("{family}_bucket") {
            continue;
        }
        let Some(key) = group(labels) else { continue };
        let bound = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().unwrap_or(0.0) * 1e6) as u64
        };
        *grouped.entry(key).or_default().entry(bound).or_default() += count;
    }
    grouped
}

/// The buckets of the requests whose verb is one of `verbs`, summed.
fn of_verbs(by_request: &BTreeMap<(String, String), Buckets>, verbs: &[&str]) -> Buckets {
    let mut sum = Buckets::new();
    for ((verb, _), buckets) in by_request {
        if verbs.contains(&verb.as_str()) {
            for (le, n) in buckets {
                *sum.entry(*le).or_default() += n;
            }
        }
    }
    sum
}

/// Per group, the p99 between two readings and the count, most frequent first.
fn p99s_between<K: Ord + Clone>(
    before: &BTreeMap<K, Buckets>,
    after: &BTreeMap<K, Buckets>,
) -> Vec<(K, String, f64)> {
    let empty = Buckets::new();
    let mut rows: Vec<(K, String, f64)> = after
        .iter()
        .map(|(key, buckets)| {
            let (p99, n) = p99_between(before.get(key).unwrap_or(&empty), buckets);
            (key.clone(), p99, n)
        })
        .filter(|(_, _, n)| *n > 0.0)
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

/// The p99 bucket bound of the requests between two readings, and their count.
fn p99_between(before: &Buckets, after: &Buckets) -> (String, f64) {
    let delta: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last().map(|(_, n)| *n).unwrap_or(0.0);
    let bound = delta
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map(|(le, _)| *le)
        .unwrap_or(u64::MAX);
    let shown = if bound == u64::MAX {
        "> largest bucket".to_string()
    } else {
        format!("≤ {} ms", bound as f64 / 1000.0)
    };
    (shown, total)
}

/// The server's CPU use as a share of one core over `window`, and its
/// largest RSS seen meanwhile (KiB).
async fn watch_server(pid: u32, window: Duration) -> (f64, u64) {
    let (cpu, start) = (cpu_seconds(pid), Instant::now());
    let mut peak = rss_kib(pid);
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_kib(pid));
    }
    (
        (cpu_seconds(pid) - cpu) / start.elapsed().as_secs_f64() * 100.0,
        peak,
    )
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool, pid: u32) -> u64 {
    let start = Instant::now();
    let mut peak = 0;
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak
}

fn main() {
    let node_count = setting("KELP_BENCH_HOLLOW_NODES", 100);
    let pod_count = setting("KELP_BENCH_HOLLOW_PODS", 3000);
    let server = Server::start();
    let pid = server.pid();
    let credentials: Vec<(String, String)> = (0..node_count)
        .map(|i| server.client_certificate(&format!("system:node:hollow-{i}"), &["system:nodes"]))
        .collect();
    let (_, admin_cert, admin_key) = server.admin_credentials();
    let text = |b: Vec<u8>| String::from_utf8(b).expect("PEM");
    let (admin_cert, admin_key) = (text(admin_cert), text(admin_key));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let admin = server.client_as(&admin_cert, &admin_key);
        let tally = Arc::new(Tally::default());
        let rss_before = rss_kib(pid);

        // Nodes: registered and Ready.
        let start = Instant::now();
        for (i, (cert, key)) in credentials.iter().enumerate() {
            tokio::spawn(hollow_node(
                server.client_as(cert, key),
                i,
                tally.clone(),
            ));
        }
        let nodes: Api<Node> = Api::all(admin.clone());
        loop {
            let ready = nodes
                .list(&ListParams::default())
                .await
                .expect("nodes")
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            if ready == node_count {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{ready} nodes Ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let nodes_ready = start.elapsed();
        eprintln!("hollow: {node_count} nodes Ready; 30 s idle");
        let (idle_cpu, _) = watch_server(pid, Duration::from_secs(30)).await;
        let rss_nodes = rss_kib(pid);

        // The ramp: Deployments made, every pod Running.
        let before = scrape(&admin).await;
        let cpu_before = cpu_seconds(pid);
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
        let start = Instant::now();
        let mut made = Vec::new();
        let mut left = pod_count;
        while left > 0 {
            let replicas = left.min(PODS_PER_DEPLOYMENT);
            let name = format!("hollow-{}", made.len());
            deployments
                .create(&PostParams::default(), &deployment(&name, replicas))
                .await
                .expect("deployment");
            made.push(name);
            left -= replicas;
        }
        let tally_ = tally.clone();
        let ramp_rss = wait_until(
            "every pod Running",
            Duration::from_secs(900),
            move || tally_.running.load(Ordering::Relaxed) >= pod_count,
            pid,
        )
        .await;
        let all_running = start.elapsed();
        eprintln!("hollow: every pod Running; 60 s steady");
        let ramp_cpu = (cpu_seconds(pid) - cpu_before) / all_running.as_secs_f64() * 100.0;
        let after = scrape(&admin).await;
        let mut bound = tally.bound.lock().expect("tally").clone();
        bound.sort();
        let binding_span = bound[bound.len() - 1] - bound[0];
        let mut writes = std::mem::take(&mut *tally.writes.lock().expect("tally"));
        writes.sort();

        // Steady: every pod running, the nodes heartbeating.
        let (steady_cpu, steady_rss) = watch_server(pid, Duration::from_secs(60)).await;

        // Teardown: Deployments deleted, every pod gone.
        eprintln!("hollow: deleting");
        let start = Instant::now();
        for name in &made {
            deployments
                .delete(name, &DeleteParams::default())
                .await
                .expect("delete deployment");
        }
        let tally_ = tally.clone();
        wait_until(
            "every pod gone",
            Duration::from_secs(900),
            move || tally_.gone.load(Ordering::Relaxed) >= pod_count,
            pid,
        )
        .await;
        let pods: Api<Pod> = Api::all(admin.clone());
        while !pods
            .list(&ListParams::default().limit(1))
            .await
            .expect("pods")
            .items
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all_gone = start.elapsed();

        let (mutating_p99, mutating_n) = p99_between(
            &of_verbs(&before.requests, MUTATING),
            &of_verbs(&after.requests, MUTATING),
        );
        let (reading_p99, reading_n) = p99_between(
            &of_verbs(&before.requests, READING),
            &of_verbs(&after.requests, READING),
        );
        // Which requests make the p99: the five most frequent mutating ones;
        // and where their time goes: queued, executing, in the store.
        let breakdown: Vec<_> = p99s_between(&before.requests, &after.requests)
            .into_iter()
            .filter(|((verb, _), _, _)| MUTATING.contains(&verb.as_str()))
            .collect();
        let waits = p99s_between(&before.waits, &after.waits);
        let executions = p99s_between(&before.executions, &after.executions);
        let store = p99s_between(&before.store, &after.store);
        println!("hollow nodes: {node_count} nodes, {pod_count} pods (Deployments of {PODS_PER_DEPLOYMENT})");
        println!(
            "  nodes registered → all Ready: {:.2} s",
            nodes_ready.as_secs_f64()
        );
        println!(
            "  Deployments made → every pod Running: {:.1} s",
            all_running.as_secs_f64()
        );
        println!(
            "  scheduler: {} bindings in {:.1} s as the nodes saw them: {:.0} pods/s",
            bound.len(),
            binding_span.as_secs_f64(),
            bound.len() as f64 / binding_span.as_secs_f64().max(0.001)
        );
        println!(
            "  API p99 in the ramp (server histogram): mutating {mutating_p99} ({mutating_n:.0} requests), GET/LIST {reading_p99} ({reading_n:.0} requests)"
        );
        for ((verb, resource), p99, n) in breakdown.iter().take(5) {
            let request = format!("{verb} {resource}");
            println!("    {request:<28} {n:>6.0} requests, p99 {p99}");
        }
        for (what, rows) in [
            ("queued (APF wait)", &waits),
            ("executing (APF)", &executions),
            ("store operation", &store),
        ] {
            println!("  {what}, p99 per group in the ramp:");
            for (group, p99, n) in rows.iter().take(6) {
                println!("    {group:<28} {n:>6.0} requests, p99 {p99}");
            }
        }
        println!(
            "  the nodes' pod writes ({} requests): p50 {}, p99 {}, max {}",
            writes.len(),
            ms(percentile(&writes, 0.50)),
            ms(percentile(&writes, 0.99)),
            ms(*writes.last().unwrap_or(&Duration::ZERO)),
        );
        println!(
            "  Deployments deleted → every pod gone: {:.1} s",
            all_gone.as_secs_f64()
        );
        println!(
            "  server RSS: {:.1} MB alone, {:.1} MB with the nodes, peak {:.1} MB in the ramp, {:.1} MB with every pod running",
            rss_before as f64 / 1024.0,
            rss_nodes as f64 / 1024.0,
            ramp_rss as f64 / 1024.0,
            steady_rss as f64 / 1024.0
        );
        println!(
            "  server CPU (share of one core): {idle_cpu:.1} % with idle nodes, {ramp_cpu:.0} % in the ramp, {steady_cpu:.1} % with every pod running"
        );
    });
    drop(server);
}
