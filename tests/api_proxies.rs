//! End-to-end test of the API server's proxy subresources on a real node
//! (root; run under `flock /tmp/kelp-node.lock`): `services/proxy` to a
//! Deployment's pods by port number, port name and `http:` scheme,
//! `pods/proxy`, `nodes/proxy` to the kubelet, all through `kubectl get
//! --raw` and through `kubectl proxy`; and the Status errors for a Service
//! without ready endpoints and for a missing one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{Server, http_get};

/// The guide's nginx app, with the Service port named so it can be picked by name.
const NGINX_APP: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: my-nginx-svc
  labels: {app: nginx}
spec:
  ports:
  - name: http
    port: 80
    targetPort: 80
  selector: {app: nginx}
---
apiVersion: v1
kind: Service
metadata:
  name: idle-svc
spec:
  ports:
  - port: 80
  selector: {app: nobody}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
  labels: {app: nginx}
spec:
  replicas: 2
  selector:
    matchLabels: {app: nginx}
  template:
    metadata:
      labels: {app: nginx}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: kelp.test/nginx:1.14.2
        ports:
        - containerPort: 80
"#;

/// The page the test image serves.
const PAGE: &str = "nginx 1.14.2";

/// A `kubectl proxy` on a port it picks, stopped on drop.
struct KubectlProxy {
    child: Child,
    port: u16,
}

impl KubectlProxy {
    fn start(kubectl: &common::Kubectl) -> Self {
        let mut child = kubectl
            .command()
            .args(["proxy", "--port=0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl proxy");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read");
        // "Starting to serve on 127.0.0.1:PORT"
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kubectl proxy said {line:?}"));
        Self { child, port }
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn services_pods_and_nodes_proxies() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.apply(server.dir.path(), "nginx-app.yaml", NGINX_APP);

    // Once both pods are ready, the Service proxy reaches them.
    let svc = "/api/v1/namespaces/default/services";
    kubectl.wait_for(
        &[
            "get",
            "deployment",
            "my-nginx",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        60,
        |out| out == "2",
    );
    let page = kubectl.wait_for(
        &["get", "--raw", &format!("{svc}/my-nginx-svc:80/proxy/")],
        30,
        |out| out.contains(PAGE),
    );
    assert!(page.contains(PAGE), "{page}");
    for id in ["my-nginx-svc:http", "http:my-nginx-svc:80"] {
        let page = kubectl.ok(&["get", "--raw", &format!("{svc}/{id}/proxy/")]);
        assert!(page.contains(PAGE), "{id}: {page}");
    }
    // Every request lands on some ready pod (the load is spread over both).
    for _ in 0..6 {
        let page = kubectl.ok(&["get", "--raw", &format!("{svc}/my-nginx-svc:80/proxy/")]);
        assert!(page.contains(PAGE), "{page}");
    }

    // pods/proxy: the pod's first declared port when none is given.
    let pod = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    for id in [pod.clone(), format!("{pod}:80")] {
        let page = kubectl.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{id}/proxy/"),
        ]);
        assert!(page.contains(PAGE), "{id}: {page}");
    }

    // nodes/proxy: the kubelet on 10250, with kelp's client certificate.
    let node = format!("/api/v1/nodes/{}/proxy", common::NODE);
    assert_eq!(
        kubectl.ok(&["get", "--raw", &format!("{node}/healthz")]),
        "ok"
    );
    let summary = kubectl.ok(&["get", "--raw", &format!("{node}/stats/summary")]);
    assert!(
        summary.contains(&format!("\"nodeName\":\"{}\"", common::NODE))
            || summary.contains(&format!("\"nodeName\": \"{}\"", common::NODE)),
        "{summary}"
    );

    // Unchanged `kubectl proxy` in front: plain HTTP to the same paths.
    let proxy = KubectlProxy::start(&kubectl);
    let local = format!("http://127.0.0.1:{}", proxy.port);
    let page = http_get(&format!("{local}{svc}/my-nginx-svc:80/proxy/"));
    assert!(page.contains(PAGE), "through kubectl proxy: {page:?}");
    // `/proxy` without the slash is redirected to `/proxy/`, as upstream.
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("{local}{svc}/my-nginx-svc:80/proxy"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("301 {local}{svc}/my-nginx-svc:80/proxy/")
    );
    drop(proxy);

    // Discovery lists the three subresources with upstream's verbs and kinds.
    let discovery: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/api/v1"])).expect("discovery");
    for (name, kind) in [
        ("services/proxy", "ServiceProxyOptions"),
        ("pods/proxy", "PodProxyOptions"),
        ("nodes/proxy", "NodeProxyOptions"),
    ] {
        let entry = discovery["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in discovery"));
        assert_eq!(entry["kind"], kind);
        assert_eq!(
            entry["verbs"],
            serde_json::json!(["create", "delete", "get", "patch", "update"])
        );
    }

    // Errors: no ready endpoint (503) and no such Service (404).
    let err = kubectl.fails(&["get", "--raw", &format!("{svc}/idle-svc:80/proxy/")]);
    assert!(
        err.contains("ServiceUnavailable")
            && err.contains("no endpoints available for service \"idle-svc\""),
        "{err}"
    );
    let err = kubectl.fails(&["get", "--raw", &format!("{svc}/missing:80/proxy/")]);
    assert!(
        err.contains("NotFound") && err.contains("services \"missing\" not found"),
        "{err}"
    );
}
