//! Observability benchmark (root: runs a node). Prints, per metrics
//! endpoint, the time and bytes of a scrape (median of 20, with 10 pods on
//! the node); then, for `kelp server --disable-agent` without tracing and
//! with a tracing configuration at samplingRatePerMillion 0 and 1000000
//! (spans exported to an OTLP receiver in this process), the RSS after
//! 3,000 requests and the GET p50/p99. Figures go to docs/PERFORMANCE.md by
//! hand.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::Server;
use common::otlp::Receiver;
use support::{Client, ms, percentile, rss_kib, tls_connector};

const SCRAPES: usize = 20;

/// A plain-HTTP GET (the proxy's and the DNS's metrics ports): the body.
fn http_get(address: &str, path: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| i + 4);
    response.split_off(at)
}

fn report(name: &str, mut times: Vec<Duration>, bytes: usize) {
    times.sort();
    println!(
        "scrape {name:<28} median {:>8}  p90 {:>8}  {:>7} bytes",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        bytes
    );
}

async fn scrape_costs() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&[
        "create",
        "deployment",
        "sleepers",
        &format!("--image={}", common::BUSYBOX),
        "--replicas=10",
        "--",
        "sleep",
        "3600",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/sleepers", "--timeout=180s"]);
    // Two stats rounds, so cAdvisor's series and the rates exist.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let tls = tls_connector(&server);
    for (name, port, path) in [
        ("apiserver /metrics", server.port(), "/metrics"),
        ("controller-manager /metrics", 10257, "/metrics"),
        ("scheduler /metrics", 10259, "/metrics"),
        ("kubelet /metrics", 10250, "/metrics"),
        ("kubelet /metrics/cadvisor", 10250, "/metrics/cadvisor"),
        ("kubelet /metrics/resource", 10250, "/metrics/resource"),
        ("kubelet /metrics/probes", 10250, "/metrics/probes"),
    ] {
        let mut client = Client::connect(&tls, port).await;
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..SCRAPES {
            let t = Instant::now();
            let (status, body) = client.request("GET", path, None).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{name}");
            bytes = body.len();
        }
        report(name, times, bytes);
    }
    let cidr = kubectl.ok(&[
        "get",
        "node",
        server.node_name(),
        "-o",
        "jsonpath={.spec.podCIDR}",
    ]);
    let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let bridge = std::net::Ipv4Addr::from(u32::from(base) + 1);
    for (name, address) in [
        ("proxy :10249/metrics", "127.0.0.1:10249".to_string()),
        ("dns :9153/metrics", format!("{bridge}:9153")),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..SCRAPES {
            let t = Instant::now();
            bytes = http_get(&address, "/metrics").len();
            times.push(t.elapsed());
        }
        report(name, times, bytes);
    }
}

/// RSS and GET latency of a server-only kelp after 3,000 requests.
async fn tracing_cost(label: &str, args: &[&str], receiver: &Receiver) {
    let before = receiver.spans().len();
    let server = Server::start_with(args);
    let tls = tls_connector(&server);
    let mut client = Client::connect(&tls, server.port()).await;
    for i in 0..500 {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},"data":{{"k":"v"}}}}"#
        );
        let (status, _) = client
            .request("POST", "/api/v1/namespaces/default/configmaps", Some(body))
            .await;
        assert_eq!(status, 201);
    }
    let mut times = Vec::new();
    for i in 0..2500 {
        let t = Instant::now();
        let (status, _) = client
            .request(
                "GET",
                &format!("/api/v1/namespaces/default/configmaps/cm-{}", i % 500),
                None,
            )
            .await;
        times.push(t.elapsed());
        assert_eq!(status, 200);
    }
    // Let the exporter's batches (every 5 s) go out before measuring.
    tokio::time::sleep(Duration::from_secs(6)).await;
    times.sort();
    println!(
        "{label:<34} RSS {:>6.1} MiB  GET p50 {:>8}  p99 {:>8}  spans received {}",
        rss_kib(server.pid()) as f64 / 1024.0,
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        receiver.spans().len() - before
    );
}

#[tokio::main]
async fn main() {
    scrape_costs().await;

    let receiver = Receiver::default();
    let port = common::free_port();
    tokio::spawn(receiver.clone().serve(port));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |rate: u32| {
        common::write(
            dir.path(),
            &format!("tracing-{rate}.yaml"),
            &format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\n\
                 endpoint: 127.0.0.1:{port}\nsamplingRatePerMillion: {rate}\n"
            ),
        )
    };
    let (off, all) = (config(0), config(1_000_000));
    // A first run settles the machine after the node's teardown; not reported.
    tracing_cost("(warm-up, not a figure)", &[], &receiver).await;
    tracing_cost("no tracing configuration", &[], &receiver).await;
    tracing_cost(
        "samplingRatePerMillion: 0",
        &["--tracing-config-file", off.to_str().unwrap()],
        &receiver,
    )
    .await;
    tracing_cost(
        "samplingRatePerMillion: 1000000",
        &["--tracing-config-file", all.to_str().unwrap()],
        &receiver,
    )
    .await;
}
