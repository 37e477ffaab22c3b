//! Node benchmark (root; real containerd + runc): starts `kelp server` with
//! its node (the release binary under `cargo bench`), then prints
//! - pod start latency, create to Running, p50 and p99 over 30 pods created one
//!   after another (image present), beside the time of a bare
//!   `ctr run --rm` of the same image against the same containerd;
//! - kelp's resident memory with 0 and with 30 pods running.
//!
//! Figures go to docs/PERFORMANCE.md by hand.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{BUSYBOX, NODE, Server};
use support::{Client, ms, percentile, rss_kib, tls_connector};

const PODS: usize = 30;
const CTR_RUNS: usize = 10;
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";

fn pod(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"nodeName":"{NODE}","terminationGracePeriodSeconds":1,"containers":[{{"name":"c","image":"{BUSYBOX}","command":["sleep","3600"]}}]}}}}"#
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let server = Server::start_node(&[]);
    let pid = server.pid();
    let tls = tls_connector(&server);
    let mut client = Client::connect(&tls, server.port).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_kib(pid);

    // Warm-up: the first pod unpacks the image into a snapshot.
    let (status, _) = client.request("POST", PODS_PATH, Some(pod("warmup"))).await;
    assert_eq!(status, 201);
    wait_running(&mut client, "warmup").await;

    let mut samples = Vec::new();
    for i in 0..PODS {
        let name = format!("bench-{i}");
        let started = Instant::now();
        let (status, body) = client.request("POST", PODS_PATH, Some(pod(&name))).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        wait_running(&mut client, &name).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let loaded = rss_kib(pid);

    let mut bare = Vec::new();
    for i in 0..CTR_RUNS {
        let started = Instant::now();
        let status = Command::new("ctr")
            .args([
                "-a",
                "/run/kelp/containerd/containerd.sock",
                "-n",
                "k8s.io",
                "run",
                "--rm",
                BUSYBOX,
                &format!("kelp-bench-ctr-{i}"),
                "true",
            ])
            .status()
            .expect("ctr run");
        assert!(status.success());
        bare.push(started.elapsed());
    }
    bare.sort();

    println!("pod start, create to Running ({PODS} pods, one at a time, image present):");
    println!(
        "  p50 {}  p99 {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
    println!("bare `ctr run --rm {BUSYBOX} true` against the same containerd ({CTR_RUNS} runs):");
    println!(
        "  p50 {}  p99 {}",
        ms(percentile(&bare, 0.5)),
        ms(percentile(&bare, 0.99))
    );
    println!(
        "kelp RSS: {} with 0 pods, {} with {} pods running ({:.0} KiB per pod)",
        mib(idle),
        mib(loaded),
        PODS + 1,
        (loaded.saturating_sub(idle)) as f64 / (PODS + 1) as f64
    );
}

async fn wait_running(client: &mut Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (status, body) = client
            .request("GET", &format!("{PODS_PATH}/{name}"), None)
            .await;
        if status == 200 {
            let pod: serde_json::Value = serde_json::from_slice(&body).expect("pod json");
            if pod["status"]["phase"] == "Running" {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("pod {name} did not start");
}
