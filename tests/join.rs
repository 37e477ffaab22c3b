//! End-to-end: a server and two agents on this machine, each agent in a
//! network namespace of its own (own data dir and containerd) joined to the
//! server by a bridge the test makes, all addresses inside 10.99.7.0/24 and
//! the cluster's CIDRs. Agents join with tokens (`kelp token create`, the
//! server's own), a token pinning another CA is refused before any secret
//! is sent, pods spread over the three nodes reach each other, Services,
//! NodePorts and DNS work from every node, `kubectl logs/exec` reach an
//! agent's pod, an agent restarted keeps its pods and name, a second
//! machine cannot take a joined node's name, and both pod network
//! backends (host-gw, then vxlan) carry the traffic.

mod common;

use std::process::Command;

use common::join::{
    Agent, JoinNetwork, SERVER_IP, agent_ip, must, rss_kib, sh, start_server, wait_ready,
};
use common::{Kubectl, kelp_bin};

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - {name: web, image: kelp.test/nginx:1.14.2, imagePullPolicy: Never}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 80, nodePort: 30781}]
"#;

/// `name IP node` of every running web pod.
fn web_pods(kubectl: &Kubectl, expected: usize) -> Vec<(String, String, String)> {
    let out = kubectl.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
        ],
        120,
        |o| o.lines().filter(|l| l.split(' ').count() == 3 && !l.contains("  ")).count() == expected,
    );
    out.lines()
        .map(|l| {
            let mut f = l.split(' ').map(String::from);
            (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// Every web pod answers every other (cross-node pod to pod), the Service
/// by name (cluster DNS) and by ClusterIP, from inside pods. Each path gets
/// a short while to converge (new pods, a restarted agent's tunnel address
/// reaching its peers), as networking conformance tests poll.
fn check_pod_network(kubectl: &Kubectl, pods: &[(String, String, String)]) {
    let fetch = |from: &str, url: &str, expect: &str, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = kubectl.run(&[
                "exec",
                from,
                "--",
                "sh",
                "-c",
                &format!("timeout 5 wget -qO- {url}"),
            ]);
            let page = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && page.contains(expect) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {page:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    };
    for (from, _, from_node) in pods {
        for (_, ip, to_node) in pods {
            fetch(
                from,
                &format!("http://{ip}/"),
                "nginx 1.14.2",
                &format!("{from} on {from_node} -> {ip} on {to_node}"),
            );
        }
        fetch(
            from,
            "http://web.default.svc.cluster.local/",
            "nginx",
            &format!("{from} on {from_node} -> web by name"),
        );
    }
}

/// `kelp token ARGS` against the server (its admin kubeconfig); stdout.
fn kelp_token(server: &common::Server, args: &[&str]) -> String {
    let out = Command::new(kelp_bin())
        .arg("token")
        .args(args)
        .env("KELP_WRITE_KUBECONFIG", server.kubeconfig())
        .output()
        .expect("kelp token");
    assert!(
        out.status.success(),
        "kelp token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The id of a `K10…::<id>.<secret>` token.
fn token_id(token: &str) -> String {
    let credentials = token.rsplit("::").next().unwrap_or_default();
    credentials
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn nodes_join_with_a_token_and_pods_reach_each_other() {
    let network = JoinNetwork::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_server("jt-server", "host-gw");
    let kubectl = server.kubectl("kubectl");

    // `kelp token create` prints a secure token; `list` shows it.
    let token = kelp_token(&server, &["create", "--ttl", "1h", "--description", "e2e"]);
    assert!(token.starts_with("K10") && token.contains("::"), "{token}");
    let id = token_id(&token);
    let listed = kelp_token(&server, &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("e2e")),
        "{listed}"
    );

    // An expired token is deleted by the token cleaner.
    let short = kelp_token(&server, &["create", "--ttl", "2s"]);
    let short_id = token_id(&short);
    assert_eq!(short_id.len(), 6, "{short}");
    kubectl.wait_for(
        &["get", "secrets", "-n", "kube-system", "-o", "name"],
        20,
        |o| !o.contains(&format!("bootstrap-token-{short_id}")),
    );

    // A token naming another CA is refused before the agent sends anything secret.
    let (_, credentials) = token.split_once("::").expect("secure token");
    let foreign = format!("K10{}::{credentials}", "0".repeat(64));
    let impostor = Agent::new(dir.path(), 1, "jt-impostor", &server, &foreign, "host-gw");
    let out = impostor.command().output().expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("refusing to join"),
        "{stderr}"
    );
    let csrs = kubectl.ok(&["get", "csr", "-o", "name"]);
    assert!(
        csrs.trim().is_empty(),
        "no request may come from a refused join: {csrs}"
    );

    // Agent 1 joins with the created token; its certificates come through CSRs.
    let mut a1 = Agent::new(dir.path(), 1, "jt-a1", &server, &token, "host-gw");
    let started = a1.start();
    wait_ready(&kubectl, "jt-a1", &a1, 90);
    let join_time = started.elapsed();
    let csrs = kubectl.ok(&["get", "csr"]);
    assert!(
        csrs.lines()
            .filter(|l| l.contains("Approved,Issued"))
            .count()
            >= 4,
        "kubelet client and serving, proxy and DNS certificates: {csrs}"
    );
    assert!(csrs.contains(&format!("system:bootstrap:{id}")), "{csrs}");

    // A second machine taking the joined node's name is told why it may not.
    let mut thief = Agent::new(dir.path(), 2, "jt-a1", &server, &token, "host-gw");
    thief.use_data_dir(dir.path().join("jt-thief"));
    let out = thief.command().output().expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already joined with a different node password"),
        "{stderr}"
    );

    // host-gw: pods spread over both nodes reach each other, Services and DNS work.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    kubectl.apply(&manifests, "web.yaml", WEB);
    let pods = web_pods(&kubectl, 3);
    let nodes: std::collections::HashSet<&str> = pods.iter().map(|p| p.2.as_str()).collect();
    assert!(
        nodes.contains("jt-a1") && nodes.contains("jt-server"),
        "{pods:?}"
    );
    check_pod_network(&kubectl, &pods);
    let cluster_ip = kubectl.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://{}:30781/", agent_ip(1)),
        format!("http://{SERVER_IP}:30781/"),
    ] {
        let page = a1.exec(&["curl", "-s", "--max-time", "5", &url]);
        assert!(
            String::from_utf8_lossy(&page.stdout).contains("nginx"),
            "from jt-a1: {url}"
        );
        assert!(
            common::http_get(&url).contains("nginx"),
            "from the server's node: {url}"
        );
    }

    // logs and exec reach a pod on the agent (the server dials its kubelet).
    kubectl.apply(
        &manifests,
        "talker.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n  nodeName: jt-a1\n  containers:\n  - {name: talker, image: kelp.test/busybox:1, imagePullPolicy: Never, command: [sh, -c, 'echo hello from the agent; sleep 3600']}\n",
    );
    kubectl.wait_for(&["logs", "talker"], 60, |o| {
        o.contains("hello from the agent")
    });
    assert_eq!(
        kubectl
            .ok(&["exec", "talker", "--", "cat", "/etc/hostname"])
            .trim(),
        "talker"
    );
    let on_agent = pods
        .iter()
        .find(|p| p.2 == "jt-a1")
        .map(|p| p.0.clone())
        .expect("a web pod on jt-a1");
    let mut forward = kubectl
        .command()
        .args(["port-forward", &format!("pod/{on_agent}"), "18781:80"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("port-forward");
    let mut page = String::new();
    for _ in 0..50 {
        page = common::http_get("http://127.0.0.1:18781/");
        if !page.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(
        page.contains("nginx"),
        "port-forward to a pod on the agent: {page:?}"
    );
    let cgroup = kubectl.ok(&["exec", "talker", "--", "cat", "/proc/self/cgroup"]);
    assert!(
        cgroup.contains("/kelp-jt-a1/kubepods/pod"),
        "the agent's own cgroup root: {cgroup}"
    );
    let resolved = kubectl.ok(&[
        "exec",
        "talker",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(
        resolved.contains(&cluster_ip),
        "DNS on the agent: {resolved}"
    );
    let idle_rss = rss_kib(a1.pid());

    // `kubectl certificate approve|deny` for requests kelp does not approve itself.
    for (name, verdict) in [("jane", "approve"), ("mallory", "deny")] {
        let key = dir.path().join(format!("{name}.key"));
        let request = dir.path().join(format!("{name}.csr"));
        must(&[
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}/O=developers"),
            "-keyout",
            key.to_str().expect("utf-8"),
            "-out",
            request.to_str().expect("utf-8"),
        ]);
        use base64::Engine;
        let pem = std::fs::read(&request).expect("request");
        kubectl.apply(
            &manifests,
            &format!("{name}-csr.yaml"),
            &format!(
                "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
        );
        kubectl.wait_for(&["get", "csr", name], 10, |o| o.contains("Pending"));
        kubectl.ok(&["certificate", verdict, name]);
    }
    kubectl.wait_for(&["get", "csr", "jane"], 30, |o| {
        o.contains("Approved,Issued")
    });
    let issued = kubectl.ok(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
    assert!(!issued.is_empty(), "the signer issued jane's certificate");
    kubectl.wait_for(&["get", "csr", "mallory"], 10, |o| o.contains("Denied"));
    let denied = kubectl.ok(&[
        "get",
        "csr",
        "mallory",
        "-o",
        "jsonpath={.status.certificate}",
    ]);
    assert!(denied.is_empty(), "no certificate for a denied request");

    // vxlan: the server and agent 1 restart with the tunnel; agent 1 keeps
    // its pods and name; agent 2 joins with the server's own token.
    let a1_pods = kubectl.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=jt-a1",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    a1.stop();
    server.stop();
    server.set_flag("--pod-network-backend", "vxlan");
    server.spawn();
    a1.set("--pod-network-backend", "vxlan");
    a1.start();
    let server_token =
        std::fs::read_to_string(server.path("data/server/token")).expect("server token");
    let mut a2 = Agent::new(
        dir.path(),
        2,
        "jt-a2",
        &server,
        server_token.trim(),
        "vxlan",
    );
    let started2 = a2.start();
    wait_ready(&kubectl, "jt-a2", &a2, 90);
    let join_time2 = started2.elapsed();
    wait_ready(&kubectl, "jt-a1", &a1, 60);
    let after = kubectl.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=jt-a1",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    assert_eq!(after, a1_pods, "the restarted agent keeps its pods");
    kubectl.ok(&["scale", "deployment", "web", "--replicas", "6"]);
    let pods = web_pods(&kubectl, 6);
    let nodes: std::collections::HashSet<&str> = pods.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(nodes.len(), 3, "spread over the three nodes: {pods:?}");
    let device = sh(&["ip", "-d", "link", "show", "kelp.vxlan"]);
    assert!(
        String::from_utf8_lossy(&device.stdout).contains("vxlan id 1"),
        "the tunnel exists"
    );
    check_pod_network(&kubectl, &pods);
    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://{}:30781/", agent_ip(2)),
    ] {
        let page = a2.exec(&["curl", "-s", "--max-time", "5", &url]);
        assert!(
            String::from_utf8_lossy(&page.stdout).contains("nginx"),
            "from jt-a2: {url}"
        );
    }
    // A network cut: the server marks the silent node Unknown and
    // unreachable; once back, the agent reports Ready again, with its pods.
    let pods_on = |node: &str| {
        kubectl.ok(&[
            "get",
            "pods",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
    };
    let a2_pods = pods_on("jt-a2");
    network.set_link(2, false);
    let ready = [
        "get",
        "node",
        "jt-a2",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ];
    kubectl.wait_for(&ready, 90, |o| o == "Unknown");
    let taints = [
        "get",
        "node",
        "jt-a2",
        "-o",
        "jsonpath={.spec.taints[*].key}",
    ];
    kubectl.wait_for(&taints, 20, |o| {
        o.contains("node.kubernetes.io/unreachable")
    });
    network.set_link(2, true);
    wait_ready(&kubectl, "jt-a2", &a2, 90);
    kubectl.wait_for(&taints, 30, |o| !o.contains("unreachable"));
    assert_eq!(
        pods_on("jt-a2"),
        a2_pods,
        "the agent keeps its pods across the cut"
    );

    // A reinstalled machine (new data dir, new node password) takes its old
    // name back once an admin deleted the Node.
    drop(a2);
    kubectl.ok(&["delete", "node", "jt-a2"]);
    let mut again = Agent::new(
        dir.path(),
        2,
        "jt-a2",
        &server,
        server_token.trim(),
        "vxlan",
    );
    again.use_data_dir(dir.path().join("jt-a2-reinstalled"));
    again.start();
    wait_ready(&kubectl, "jt-a2", &again, 90);

    // The server restarts under running agents: they reconnect, stay up
    // and keep their pods.
    let before = pods_on("jt-a1");
    server.stop();
    std::thread::sleep(std::time::Duration::from_secs(3));
    server.spawn();
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(
        a1.running() && again.running(),
        "agents outlive a server restart"
    );
    wait_ready(&kubectl, "jt-a1", &a1, 60);
    wait_ready(&kubectl, "jt-a2", &again, 60);
    assert_eq!(
        pods_on("jt-a1"),
        before,
        "pods kept across the server's restart"
    );

    println!(
        "join time (agent start -> Ready): {} ms (first join), {} ms (vxlan); agent RSS idle with 2-3 pods: {} KiB",
        join_time.as_millis(),
        join_time2.as_millis(),
        idle_rss
    );
    kubectl.ok(&["delete", "deployment", "web", "--wait=false"]);
    kubectl.ok(&[
        "delete",
        "pod",
        "talker",
        "--wait=false",
        "--grace-period=0",
    ]);
    drop(again);
    drop(a1);
    drop(server);
    drop(network);
    let left = sh(&[
        "sh",
        "-c",
        "find /sys/fs/cgroup -maxdepth 2 -name 'kelp-jt-*'",
    ]);
    assert!(
        left.stdout.is_empty(),
        "cgroups left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
