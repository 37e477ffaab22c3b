//! The k3s-style add-ons (issue 17), measured (root; real containerd + runc):
//! - the ingress proxy: requests/s and latency percentiles of a closed
//!   loop (`KELP_BENCH_CONNECTIONS` clients, default 8, each a new HTTP/1.1
//!   connection per request — busybox httpd closes them — for
//!   `KELP_BENCH_SECONDS`, default 10) through the ingress beside the
//!   same loop straight to the pod, in the same run;
//! - resident memory of an idle `kelp server` with its node, with every
//!   add-on, with none, and with each one disabled alone (settled 30 s;
//!   `KELP_BENCH_RSS=0` skips it; `KELP_BENCH_INGRESS=0` skips the first).
//!   `KELP_BENCH_RSS_RUNS=N` measures every add-on and none N times each
//!   (the median and the range) and skips the per-add-on rows, to tell a
//!   change of a few MB from the run-to-run spread;
//! - the watches open at that idle moment with every add-on, by resource
//!   (`apiserver_longrunning_requests{verb="WATCH"}`: the process's own
//!   components watch through the same API), the first run's.
//!
//! Run: `cargo bench --bench addons`. Figures go to docs/PERFORMANCE.md by hand.

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::{BUSYBOX, NODE, Server, free_port};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A closed loop of `connections` clients sending `GET /` with `host` to
/// `address`; returns requests/s and sorted latencies (connect included).
async fn closed_loop(
    address: std::net::SocketAddr,
    host: &str,
    connections: usize,
    seconds: u64,
) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                // busybox httpd closes every connection: one per request,
                // the same for both paths.
                let started = Instant::now();
                let tcp = tokio::net::TcpStream::connect(address)
                    .await
                    .expect("connect");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let request = hyper::Request::get("/")
                    .header("host", &host)
                    .header("connection", "close")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                assert!(response.status().is_success(), "{}", response.status());
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort();
    (all.len() as f64 / seconds as f64, all)
}

fn report(what: &str, (rate, latencies): &(f64, Vec<Duration>)) {
    println!(
        "{what:<28} {rate:>9.0} req/s  p50 {}  p99 {}",
        support::ms(support::percentile(latencies, 0.50)),
        support::ms(support::percentile(latencies, 0.99)),
    );
}

fn ingress_throughput() {
    let (server, http, _) = Server::start_node_with_ingress();
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    kubectl.apply(
        &dir,
        "web.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    command: [sh, -c, 'mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 8080 -h /www']\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\nspec:\n  rules:\n  - host: web.example.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ),
    );
    kubectl.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=90s"]);
    let ip = kubectl.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    let connections = env("KELP_BENCH_CONNECTIONS", 8) as usize;
    let seconds = env("KELP_BENCH_SECONDS", 10);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ingress: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().expect("address");
    // The proxy learns the Ingress within a second; wait for a 200.
    let started = Instant::now();
    while std::process::Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-H",
            "host: web.example.test",
            &format!("http://{ingress}/"),
        ])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the ingress never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "closed loop: {connections} clients, {seconds} s each, a connection per GET / (6-byte page, busybox httpd)"
    );
    let direct = runtime.block_on(closed_loop(
        format!("{ip}:8080").parse().expect("pod"),
        "web",
        connections,
        seconds,
    ));
    report("direct to the pod", &direct);
    let proxied = runtime.block_on(closed_loop(
        ingress,
        "web.example.test",
        connections,
        seconds,
    ));
    report("through the ingress", &proxied);
}

/// The add-ons `--disable` takes.
const ADD_ONS: [&str; 4] = [
    "local-storage",
    "network-policy",
    "ingress",
    "helm-controller",
];

/// kelp's resident memory, idle with its node, settled 30 s, and the
/// watches open then (resource → count).
fn idle_rss(disable: &str) -> (u64, std::collections::BTreeMap<String, u64>) {
    let mut args = vec![
        "--ingress-http-port".to_string(),
        free_port().to_string(),
        "--ingress-https-port".to_string(),
        free_port().to_string(),
    ];
    if !disable.is_empty() {
        args.extend(["--disable".to_string(), disable.to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_node(&refs);
    std::thread::sleep(Duration::from_secs(30));
    let rss = support::rss_kib(server.pid());
    let metrics = server.kubectl("kubectl").ok(&["get", "--raw", "/metrics"]);
    (rss, open_watches(&metrics))
}

/// `apiserver_longrunning_requests` of verb WATCH, by resource.
fn open_watches(metrics: &str) -> std::collections::BTreeMap<String, u64> {
    let mut watches = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some(labels) = line.strip_prefix("apiserver_longrunning_requests{") else {
            continue;
        };
        if !labels.contains("verb=\"WATCH\"") {
            continue;
        }
        let resource = labels
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let count: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        *watches.entry(resource.to_string()).or_insert(0) += count;
    }
    watches
}

fn print_watches(watches: &std::collections::BTreeMap<String, u64>) {
    let total: u64 = watches.values().sum();
    let each: Vec<String> = watches
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(resource, n)| format!("{resource} {n}"))
        .collect();
    println!(
        "  watches open, every add-on: {total} ({})",
        each.join(", ")
    );
}

fn main() {
    if env("KELP_BENCH_INGRESS", 1) != 0 {
        ingress_throughput();
    }
    if env("KELP_BENCH_RSS", 1) == 0 {
        return;
    }
    println!("idle RSS of kelp server with its node (KiB):");
    let runs = env("KELP_BENCH_RSS_RUNS", 1);
    if runs > 1 {
        let mut first_watches = None;
        for (label, disable) in [("every add-on", String::new()), ("none", ADD_ONS.join(","))] {
            let mut readings: Vec<u64> = (0..runs)
                .map(|_| {
                    let (rss, watches) = idle_rss(&disable);
                    first_watches.get_or_insert(watches);
                    rss
                })
                .collect();
            readings.sort_unstable();
            println!(
                "  {label:<17} median {}   range {}..{}   ({runs} runs: {readings:?})",
                readings[readings.len() / 2],
                readings[0],
                readings[readings.len() - 1],
            );
        }
        print_watches(&first_watches.unwrap_or_default());
        return;
    }
    let (all, watches) = idle_rss("");
    let (none, _) = idle_rss(&ADD_ONS.join(","));
    println!("  every add-on      {all}");
    println!(
        "  none              {none}   (all of them add {} KiB)",
        all as i64 - none as i64
    );
    print_watches(&watches);
    for add_on in ADD_ONS {
        let (without, _) = idle_rss(add_on);
        println!(
            "  without {add_on:<15} {without}   ({add_on} adds {} KiB)",
            all as i64 - without as i64
        );
    }
}
