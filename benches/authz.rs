//! Authorization cost: GET latency for a service account whose Role allows
//! the read, with `--authorization-mode Node,RBAC` (the default) and with
//! `AlwaysAllow`, in one run, over the same requests (bearer token, so
//! authentication costs the same in both). Also the policy's size: the
//! bootstrap roles plus 200 extra bindings, as a busy cluster might hold.
//! Figures go to docs/PERFORMANCE.md by hand.

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::Server;
use support::{Client, ms, percentile, tls_connector, tls_connector_without_certificate};

const SAMPLES: usize = 5000;
const EXTRA_BINDINGS: usize = 200;
const CMS: &str = "/api/v1/namespaces/default/configmaps";

const READER: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: bench
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: bench-reads-configmaps
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: bench-reads-configmaps
subjects:
- kind: ServiceAccount
  name: bench
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: bench-reads-configmaps
"#;

/// GET latencies (sorted) of one ConfigMap by a service account's token.
async fn measure(mode: &str) -> Vec<Duration> {
    let server = Server::start_with(&["--authorization-mode", mode]);
    let kubectl = server.kubectl("kubectl");
    kubectl.apply(server.dir.path(), "reader.yaml", READER);
    let mut admin = Client::connect(&tls_connector(&server), server.port).await;
    let cm =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"target"},"data":{"k":"v"}}"#;
    let (status, _) = admin.request("POST", CMS, Some(cm.into())).await;
    assert_eq!(status, 201);
    // Other people's bindings the authorizer has to look past.
    for i in 0..EXTRA_BINDINGS {
        let (kind, path) = if i % 2 == 0 {
            (
                "RoleBinding",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            )
        } else {
            (
                "ClusterRoleBinding",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            )
        };
        let binding = format!(
            r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"{kind}","metadata":{{"name":"other-{i}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"}},"subjects":[{{"kind":"User","name":"user-{i}"}},{{"kind":"Group","name":"team-{i}"}}]}}"#
        );
        let (status, body) = admin.request("POST", path, Some(binding)).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }
    let token = kubectl.ok(&["create", "token", "bench"]);
    let token = token.trim();
    let mut client =
        Client::connect(&tls_connector_without_certificate(&server), server.port).await;
    let path = format!("{CMS}/target");
    for _ in 0..200 {
        let (status, _) = client.request_with("GET", &path, None, Some(token)).await;
        assert_eq!(status, 200);
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let (status, _) = client.request_with("GET", &path, None, Some(token)).await;
        samples.push(t.elapsed());
        assert_eq!(status, 200);
    }
    // The token's rights end at its Role: a read elsewhere is refused.
    let (status, _) = client
        .request_with(
            "GET",
            "/api/v1/namespaces/kube-system/configmaps",
            None,
            Some(token),
        )
        .await;
    assert_eq!(status, if mode == "AlwaysAllow" { 200 } else { 403 });
    samples.sort();
    samples
}

/// The decision alone, in process: the bootstrap policy plus the extra
/// bindings, a service account allowed by a RoleBinding (found last) and
/// one denied (every binding looked at).
fn decisions_per_second() {
    use kelp::apiserver::authn::User;
    use kelp::apiserver::authz::rbac::{Object, Policy};
    use kelp::apiserver::authz::{Attributes, ResourceAttributes};
    let mut policy = Policy::default();
    let resource_of = |kind: &str| match kind {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        "ClusterRoleBinding" => "clusterrolebindings",
        _ => "rolebindings",
    };
    for o in kelp::apiserver::authz::bootstrap::objects() {
        let kind = o["kind"].as_str().unwrap_or("");
        if let Some(object) = Object::decode(resource_of(kind), o.to_string().as_bytes()) {
            policy.insert(object);
        }
    }
    for doc in READER.split("---").skip(1) {
        let mut value: serde_json::Value = serde_yaml_ng::from_str(doc).expect("yaml");
        value["metadata"]["namespace"] = "default".into();
        let kind = value["kind"].as_str().unwrap_or("").to_string();
        policy.insert(
            Object::decode(resource_of(&kind), value.to_string().as_bytes()).expect("rbac object"),
        );
    }
    for i in 0..EXTRA_BINDINGS {
        let kind = if i % 2 == 0 {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        let binding = serde_json::json!({"kind": kind, "metadata": {"name": format!("other-{i}"), "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}, {"kind": "Group", "name": format!("team-{i}")}]});
        policy.insert(
            Object::decode(resource_of(kind), binding.to_string().as_bytes()).expect("binding"),
        );
    }
    let user = User::service_account("default", "bench");
    let ask = |verb: &'static str| Attributes {
        user: &user,
        verb,
        resource: Some(ResourceAttributes {
            version: "v1".into(),
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: "target".into(),
            ..Default::default()
        }),
        path: "",
    };
    for (verb, expect) in [("get", true), ("delete", false)] {
        let attrs = ask(verb);
        assert_eq!(policy.authorize(&attrs).allowed(), expect);
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(policy.authorize(std::hint::black_box(&attrs)));
        }
        let each = t.elapsed() / n;
        println!(
            "RBAC decision in process ({} {verb}): {:.2} µs each ({} bootstrap objects + {EXTRA_BINDINGS} bindings)",
            if expect { "allowed" } else { "denied" },
            each.as_secs_f64() * 1e6,
            kelp::apiserver::authz::bootstrap::objects().len()
        );
    }
}

#[tokio::main]
async fn main() {
    decisions_per_second();
    let mut rows = Vec::new();
    // Alternate to spread any drift of the machine over both modes.
    for round in 0..2 {
        for mode in ["Node,RBAC", "AlwaysAllow"] {
            let samples = measure(mode).await;
            println!(
                "round {round}: GET by a service account, --authorization-mode {mode}: p50 {} p99 {}",
                ms(percentile(&samples, 0.5)),
                ms(percentile(&samples, 0.99))
            );
            rows.push((mode, samples));
        }
    }
    for mode in ["Node,RBAC", "AlwaysAllow"] {
        let mut all: Vec<Duration> = rows
            .iter()
            .filter(|(m, _)| *m == mode)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        all.sort();
        println!(
            "all rounds, {mode}: p50 {} p99 {} ({} samples; {EXTRA_BINDINGS} extra bindings besides the bootstrap policy)",
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            all.len()
        );
    }
}
