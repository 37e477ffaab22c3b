//! End-to-end tests of the service proxy: the guide's `my-nginx-svc` (type
//! LoadBalancer) reached by cluster IP, node port and load balancer IP, traffic
//! spread over ready endpoints only, readiness and scale-to-zero acting at
//! once, hairpin, ClientIP affinity, the proxy's ports, and rules rebuilt
//! after a restart and gone after cleanup.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BUSYBOX, Server};

/// Three pods answering their own hostname on :80, Ready while /tmp/ready
/// exists, behind the guide's LoadBalancer Service.
fn manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  replicas: 3
  selector:
    matchLabels: {{app: nginx}}
  template:
    metadata:
      labels: {{app: nginx}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: {BUSYBOX}
        command: [sh, -c, "mkdir /www; hostname > /www/index.html; touch /tmp/ready; httpd -f -p 80 -h /www & trap 'exit 0' TERM; wait"]
        ports:
        - containerPort: 80
        readinessProbe:
          exec:
            command: [cat, /tmp/ready]
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: my-nginx-svc
  labels: {{app: nginx}}
spec:
  type: LoadBalancer
  ports:
  - port: 80
  selector:
    app: nginx
"#
    )
}

/// The body of a GET through curl (empty on failure), bounded.
fn get(url: &str) -> String {
    common::http_get(url).trim().to_string()
}

/// Hostnames answering `n` requests to `url`.
fn answers(url: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| get(url)).collect()
}

/// busybox `nslookup NAME` in `pod`: its output (it tries every search
/// domain and exits 1 when any is NXDOMAIN, so the status says nothing).
fn nslookup(kubectl: &common::Kubectl, pod: &str, name: &str) -> String {
    let out = kubectl.run(&["exec", pod, "--", "nslookup", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn iptables_save() -> String {
    let out = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn load_balancer_service_reaches_ready_endpoints_by_every_address() {
    let mut server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let dir = tempfile::tempdir().expect("tempdir");
    kubectl.apply(dir.path(), "nginx.yaml", &manifest());
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    let pods: BTreeSet<String> = kubectl
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=nginx",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(pods.len(), 3);

    // The built-in load balancer gives the node's address as EXTERNAL-IP.
    let external = kubectl.wait_for(
        &[
            "get",
            "svc",
            "my-nginx-svc",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        20,
        |ip| !ip.is_empty(),
    );
    assert_eq!(external, "127.0.0.1");
    let table = kubectl.ok(&["get", "svc", "my-nginx-svc"]);
    assert!(
        table.contains("LoadBalancer") && table.contains("127.0.0.1"),
        "{table}"
    );
    let cluster_ip = kubectl.ok(&[
        "get",
        "svc",
        "my-nginx-svc",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let node_port = kubectl.ok(&[
        "get",
        "svc",
        "my-nginx-svc",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);

    // Every address reaches the pods; the cluster IP spreads over all three.
    let by_cluster_ip = format!("http://{cluster_ip}/");
    let seen: BTreeSet<String> = answers(&by_cluster_ip, 30).into_iter().collect();
    assert_eq!(seen, pods, "30 requests to the cluster IP");
    assert!(pods.contains(&get(&format!("http://127.0.0.1:{node_port}/"))));
    assert!(pods.contains(&get(&format!("http://{external}:80/"))));
    // From a pod, by cluster IP.
    let client = pods.iter().next().expect("pod").clone();
    let from_pod = kubectl.ok(&[
        "exec",
        &client,
        "--",
        "sh",
        "-c",
        &format!("timeout 5 wget -qO- http://{cluster_ip}/"),
    ]);
    assert!(pods.contains(from_pod.trim()), "{from_pod}");

    // By name, through the cluster DNS, itself reached over UDP (and TCP)
    // through the kube-dns Service at 10.43.0.10.
    for name in ["my-nginx-svc", "my-nginx-svc.default.svc.cluster.local"] {
        let answer = kubectl.ok(&[
            "exec",
            &client,
            "--",
            "sh",
            "-c",
            &format!("timeout 5 wget -qO- http://{name}/"),
        ]);
        assert!(pods.contains(answer.trim()), "{name}: {answer}");
    }
    let lookup = nslookup(&kubectl, &client, "my-nginx-svc");
    assert!(
        lookup.contains("10.43.0.10") && lookup.contains(&format!("Address: {cluster_ip}")),
        "{lookup}"
    );
    // A headless StatefulSet's pods by name.
    kubectl.apply(
        dir.path(),
        "web.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: None
  selector: {{app: web}}
  ports:
  - name: web
    port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {BUSYBOX}
        command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
"#
        ),
    );
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/web-0",
        "--timeout=60s",
    ]);
    let web_ip = kubectl.ok(&["get", "pod", "web-0", "-o", "jsonpath={.status.podIP}"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let lookup = loop {
        let lookup = nslookup(&kubectl, &client, "web-0.nginx.default.svc.cluster.local");
        if lookup.contains(&format!("Address: {web_ip}")) || Instant::now() > deadline {
            break lookup;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        lookup.contains("10.43.0.10") && lookup.contains(&format!("Address: {web_ip}")),
        "{lookup}"
    );

    // Hairpin: a pod reaches itself through its Service.
    let mut hairpin = false;
    for _ in 0..30 {
        let answer = kubectl.ok(&[
            "exec",
            &client,
            "--",
            "sh",
            "-c",
            &format!("timeout 5 wget -qO- http://{cluster_ip}/"),
        ]);
        if answer.trim() == client {
            hairpin = true;
            break;
        }
    }
    assert!(hairpin, "{client} never reached itself through the Service");

    // A pod whose readiness fails stops getting traffic within ~2 s of the
    // probe failing (period 1 s).
    let sick = pods.iter().nth(1).expect("pod").clone();
    kubectl.ok(&["exec", &sick, "--", "rm", "/tmp/ready"]);
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(10) {
        if get(&by_cluster_ip) == sick {
            quiet_since = None;
        } else if quiet_since.is_none() {
            quiet_since = Some(Instant::now());
        }
        if quiet_since.is_some_and(|q| q.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let quiet_at = quiet_since.expect("the unready pod kept getting traffic") - started;
    eprintln!("readiness: no traffic to {sick} {quiet_at:?} after its readiness file went");
    assert!(
        quiet_at < Duration::from_secs(3),
        "traffic stopped {quiet_at:?} after the readiness file went"
    );
    assert!(!answers(&by_cluster_ip, 20).contains(&sick));
    kubectl.ok(&["exec", &sick, "--", "touch", "/tmp/ready"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&by_cluster_ip) != sick {
        assert!(Instant::now() < deadline, "{sick} never got traffic back");
    }

    // ClientIP affinity: one client, one endpoint.
    kubectl.ok(&[
        "patch",
        "svc",
        "my-nginx-svc",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let sticky: BTreeSet<String> = answers(&by_cluster_ip, 15).into_iter().collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    kubectl.ok(&[
        "patch",
        "svc",
        "my-nginx-svc",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);

    // The proxy's ports.
    let metrics = get("http://127.0.0.1:10249/metrics");
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"),
        "{metrics}"
    );
    let families = common::metrics::parse(&metrics);
    assert!(
        common::metrics::sum(
            &families,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "kubeproxy_sync_proxy_rules_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    let health = get("http://127.0.0.1:10256/healthz");
    assert!(health.contains("\"lastUpdated\""), "{health}");

    // After a restart the rules are rebuilt and leftovers removed.
    let leftover = "KUBE-SEP-0000000000000000";
    let created = Command::new("iptables")
        .args(["-w", "-t", "nat", "-N", leftover])
        .status()
        .expect("iptables");
    assert!(created.success());
    server.kill9();
    server.spawn();
    server.wait_node_ready();
    let deadline = Instant::now() + Duration::from_secs(20);
    while iptables_save().contains(leftover) {
        assert!(
            Instant::now() < deadline,
            "stale chain {leftover} not removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods.contains(&get(&by_cluster_ip)) {
        assert!(
            Instant::now() < deadline,
            "the Service does not answer after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Scaled to zero: connections fail at once instead of hanging.
    kubectl.ok(&["scale", "deployment/my-nginx", "--replicas=0"]);
    kubectl.wait_for(
        &["get", "pods", "-l", "app=nginx", "-o", "name"],
        60,
        |out| out.trim().is_empty(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", &by_cluster_ip])
            .output()
            .expect("curl");
        // curl exit 7: connection refused (the REJECT rule answered).
        if out.status.code() == Some(7) {
            assert!(started.elapsed() < Duration::from_secs(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fast failure: {:?}",
            out.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Cleanup (kelp-killall.sh, run when the server is dropped) leaves no
    // chain or rule of the proxy.
    drop(server);
    let rules = iptables_save();
    assert!(
        !rules.contains("KUBE-") && !rules.contains("KELP-"),
        "{rules}"
    );
}
