//! Cluster DNS benchmark (root: runs the node): starts `kelp server` with
//! its node, creates 100 Services (and a headless one over a pod, which
//! also brings the bridge up), then sends a dnsperf-like closed-loop load
//! from the host to the DNS at the bridge address over UDP: CONCURRENCY
//! clients, each with one question in flight, for SECONDS, cycling over the
//! Service names (A), the headless name (A, pod address) and an unknown
//! name (NXDOMAIN). Prints queries per second, latency percentiles, lost
//! answers and kelp's RSS. `KELP_BENCH_SECONDS` and
//! `KELP_BENCH_CONCURRENCY` override 20 s and 32.
//!
//! The load generator runs on the same machine, so it shares the CPU with
//! kelp. Figures go to docs/PERFORMANCE.md by hand.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{BUSYBOX, NODE, Server, dns_query, dns_question};
use hickory_proto::rr::RecordType;
use support::{ms, percentile, rss_kib};

const SERVICES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let seconds = env_or("KELP_BENCH_SECONDS", 20);
    let concurrency = env_or("KELP_BENCH_CONCURRENCY", 32) as usize;
    // An upstream nobody serves: the load asks cluster names only, and no
    // question may leave the machine.
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.153\n").expect("resolv.conf");
    let server = Server::start_node(&["--resolv-conf", resolv_conf.to_str().expect("path")]);
    let kubectl = server.kubectl("kubectl");
    let mut manifest = String::new();
    for i in 0..SERVICES {
        manifest.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80}}]\n---\n"
        ));
    }
    manifest.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: headless}}\nspec:\n  clusterIP: None\n  selector: {{app: bench}}\n  ports: [{{name: web, port: 80}}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: bench, labels: {{app: bench}}}}\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{BUSYBOX}\", command: [sleep, \"3600\"]}}\n"
    ));
    kubectl.apply(&server.path("manifests"), "bench.yaml", &manifest);
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/bench",
        "--timeout=90s",
    ]);
    let cidr = kubectl.ok(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"]);
    let base: Ipv4Addr = cidr.split('/').next().expect("cidr").parse().expect("ip");
    let dns = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from(base) + 1)), 53);

    let mut names: Vec<String> = (0..SERVICES)
        .map(|i| format!("svc-{i}.default.svc.cluster.local."))
        .collect();
    names.push("headless.default.svc.cluster.local.".into());
    names.push("nope.default.svc.cluster.local.".into());
    // Wait until the last objects are in the DNS's index.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dns_query(dns, &names[SERVICES], RecordType::A, false)
        .is_none_or(|m| m.answers.is_empty())
    {
        if Instant::now() > deadline {
            let slices = kubectl.run(&["get", "endpointslices", "-o", "yaml"]);
            panic!(
                "the DNS does not answer {}; slices:\n{}\nlog:\n{}",
                names[SERVICES],
                String::from_utf8_lossy(&slices.stdout),
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.pid();
    let rss_before = rss_kib(pid);

    let questions: Arc<Vec<Vec<u8>>> = Arc::new(
        names
            .iter()
            .map(|n| dns_question(0, n, RecordType::A))
            .collect(),
    );
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..concurrency {
        let questions = questions.clone();
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("udp");
            socket.connect(dns).await.expect("connect");
            let mut samples = Vec::new();
            let mut lost = 0u64;
            let mut buffer = [0u8; 1500];
            let mut id: u16 = (client as u16).wrapping_mul(7919);
            let mut next = client;
            while Instant::now() < until {
                id = id.wrapping_add(1);
                let mut question = questions[next % questions.len()].clone();
                next += 1;
                question[..2].copy_from_slice(&id.to_be_bytes());
                let sent = Instant::now();
                socket.send(&question).await.expect("send");
                let answered = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        let n = socket.recv(&mut buffer).await.expect("recv");
                        // A late answer to an earlier question is skipped.
                        if n >= 2 && buffer[..2] == id.to_be_bytes() {
                            return;
                        }
                    }
                })
                .await;
                match answered {
                    Ok(()) => samples.push(sent.elapsed()),
                    Err(_) => lost += 1,
                }
            }
            (samples, lost)
        }));
    }
    let mut samples = Vec::new();
    let mut lost = 0;
    for task in tasks {
        let (s, l) = task.await.expect("client");
        samples.extend(s);
        lost += l;
    }
    let elapsed = started.elapsed();
    samples.sort();
    let rss_after = rss_kib(pid);
    println!(
        "cluster DNS, UDP at {dns}, {concurrency} clients, {:.1} s, {} names ({SERVICES} Services, 1 headless, 1 unknown)",
        elapsed.as_secs_f64(),
        names.len()
    );
    println!(
        "answered: {} ({:.0} queries/s), lost: {lost}",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64()
    );
    if !samples.is_empty() {
        println!(
            "latency p50 {} p99 {} p99.9 {} max {}",
            ms(percentile(&samples, 0.50)),
            ms(percentile(&samples, 0.99)),
            ms(percentile(&samples, 0.999)),
            ms(samples[samples.len() - 1])
        );
    }
    println!(
        "kelp RSS before {:.1} MiB, after {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
}
