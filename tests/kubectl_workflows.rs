//! End-to-end: the "Managing Workloads" / "Cluster Administration" kubectl
//! workflows against a real `kelp server --disable-agent`, with the dispatcher
//! `/usr/bin/kubectl` (which picks kubectl 1.33 for kelp) and kubectl 1.32 by name.

mod common;

use std::time::Duration;

use common::{Kubectl, Server, versioned_kubectl, write};

const NGINX_APP: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: my-nginx-svc
  labels:
    app: nginx
spec:
  type: LoadBalancer
  ports:
  - port: 80
  selector:
    app: nginx
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec: {type: string}
              image: {type: string}
              replicas: {type: integer}
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
"#;

#[test]
fn workflows_with_dispatcher_kubectl() {
    let server = Server::start();
    let k = server.kubectl("kubectl");
    assert!(
        k.ok(&["version"]).contains("Server Version: v1.33"),
        "the dispatcher should run kubectl 1.33 for kelp"
    );
    workflows(&server, &k);
}

#[test]
fn workflows_with_kubectl_1_27() {
    let server = Server::start();
    let k = server.kubectl(&versioned_kubectl(27));
    assert!(k.ok(&["version"]).contains("v1.27."));
    workflows(&server, &k);
}

fn workflows(server: &Server, k: &Kubectl) {
    let dir = server.path("manifests");
    apply_and_delete(k, &dir);
    labels_and_selectors(k, &dir);
    patches_edit_replace(k, &dir);
    scale(k);
    watch_shows_later_change(k);
    discovery_and_explain(k);
    server_side_apply(k, &dir);
    protobuf_creates(k);
    custom_resources(k, &dir);
    lists_round_trip(k, &dir);
    everyday_commands(k, &dir);
    resource_versions(k);
    errors_are_status(k, &dir);
    dry_run_generate_name_and_warnings(k, &dir);
}

fn dry_run_generate_name_and_warnings(k: &Kubectl, dir: &std::path::Path) {
    let cm = write(
        dir,
        "dry.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  a: b\n",
    );
    let out = k.ok(&[
        "create",
        "-f",
        cm.to_str().expect("path"),
        "--dry-run=server",
    ]);
    assert!(
        out.contains("configmap/dry created (server dry run)"),
        "{out}"
    );
    assert!(k.fails(&["get", "cm", "dry"]).contains("NotFound"));
    let generated = write(
        dir,
        "gen.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n",
    );
    let out = k.ok(&["create", "-f", generated.to_str().expect("path")]);
    let name = out
        .trim()
        .trim_start_matches("configmap/")
        .trim_end_matches(" created")
        .to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{out}");
    k.ok(&["delete", "cm", &name]);
    let unknown = write(
        dir,
        "warn.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: warned\nbogus: 1\n",
    );
    let out = k.run(&[
        "create",
        "-f",
        unknown.to_str().expect("path"),
        "--validate=warn",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: unknown field \"bogus\""),
        "{stderr}"
    );
    k.ok(&["delete", "cm", "warned"]);

    // stringData is folded into data; immutable config stays put.
    let secret = write(
        dir,
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  user: admin\nimmutable: true\n",
    );
    k.ok(&["apply", "-f", secret.to_str().expect("path")]);
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.user}|{.stringData}"
        ]),
        "YWRtaW4=|"
    );
    let stderr = k.fails(&[
        "patch",
        "secret",
        "creds",
        "--type=merge",
        "-p",
        r#"{"data":{"user":"cm9vdA=="}}"#,
    ]);
    assert!(
        stderr.contains("field is immutable when `immutable` is set"),
        "{stderr}"
    );
    k.ok(&["delete", "secret", "creds"]);

    // core/v1 and events.k8s.io/v1 Events are one store, two shapes.
    let event = write(
        dir,
        "event.yaml",
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\ninvolvedObject:\n  kind: Deployment\n  name: web\n  namespace: default\nreason: ScalingReplicaSet\nmessage: Scaled up\ntype: Normal\n",
    );
    k.ok(&["create", "-f", event.to_str().expect("path")]);
    let note = k.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "web.1",
        "-o",
        "jsonpath={.note}|{.regarding.name}",
    ]);
    assert_eq!(note, "Scaled up|web");
    assert!(k.ok(&["get", "events"]).contains("ScalingReplicaSet"));
    k.ok(&["delete", "events.v1.events.k8s.io", "web.1"]);
    assert!(k.fails(&["get", "event", "web.1"]).contains("NotFound"));
}

fn apply_and_delete(k: &Kubectl, dir: &std::path::Path) {
    let app = write(dir, "nginx-app.yaml", NGINX_APP);
    let app = app.to_str().expect("path");
    let out = k.ok(&["apply", "-f", app]);
    assert!(out.contains("service/my-nginx-svc created"), "{out}");
    assert!(out.contains("deployment.apps/my-nginx created"), "{out}");
    let svc = k.ok(&[
        "get",
        "svc",
        "my-nginx-svc",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    let (ip, node_port) = svc.split_once(' ').expect("ip and port");
    assert!(ip.starts_with("10.43."), "{svc}");
    assert!(
        node_port
            .parse::<u16>()
            .is_ok_and(|p| (30000..=32767).contains(&p)),
        "{svc}"
    );

    // Re-apply a changed file: a field deleted from the file is removed from the object.
    let changed = NGINX_APP
        .replace("replicas: 3", "replicas: 2")
        .replace("        ports:\n        - containerPort: 80\n", "");
    write(dir, "nginx-app.yaml", &changed);
    let out = k.ok(&["apply", "-f", app]);
    assert!(out.contains("deployment.apps/my-nginx configured"), "{out}");
    assert!(out.contains("service/my-nginx-svc unchanged"), "{out}");
    let spec = k.ok(&[
        "get",
        "deploy",
        "my-nginx",
        "-o",
        "jsonpath={.spec.replicas}|{.spec.template.spec.containers[0].ports}",
    ]);
    assert_eq!(spec, "2|");

    let out = k.ok(&["delete", "-f", app]);
    assert!(
        out.contains("service \"my-nginx-svc\" deleted")
            && out.contains("deployment.apps \"my-nginx\" deleted"),
        "{out}"
    );
    assert!(
        k.fails(&["get", "deploy", "my-nginx"])
            .contains("deployments.apps \"my-nginx\" not found")
    );

    // A directory, recursively.
    let tree = dir.join("tree");
    write(
        &tree,
        "svc.yaml",
        &NGINX_APP
            .split("---")
            .next()
            .expect("service")
            .replace("my-nginx-svc", "tree-svc"),
    );
    write(
        &tree,
        "nested/deeper/deploy.yaml",
        &NGINX_APP
            .split("---")
            .nth(1)
            .expect("deployment")
            .replace("my-nginx", "tree-deploy"),
    );
    let tree_s = tree.to_str().expect("path");
    let out = k.ok(&["apply", "-f", tree_s, "--recursive"]);
    assert!(
        out.contains("service/tree-svc created")
            && out.contains("deployment.apps/tree-deploy created"),
        "{out}"
    );
    let out = k.ok(&["delete", "deployment,services", "-l", "app=nginx"]);
    assert!(
        out.contains("deployment.apps \"tree-deploy\" deleted")
            && out.contains("service \"tree-svc\" deleted"),
        "{out}"
    );
    assert!(!k.ok(&["get", "svc"]).contains("tree-svc"));

    // get $(kubectl create -f DIR -o name | grep service)
    let created = k.ok(&["create", "-f", tree_s, "-R", "-o", "name"]);
    let service = created
        .lines()
        .find(|l| l.contains("service"))
        .expect("a service was created");
    assert_eq!(service, "service/tree-svc");
    let out = k.ok(&["get", service]);
    assert!(
        out.starts_with("NAME") && out.contains("tree-svc") && out.contains("LoadBalancer"),
        "{out}"
    );
    k.ok(&["delete", "-f", tree_s, "-R"]);
}

fn labels_and_selectors(k: &Kubectl, dir: &std::path::Path) {
    let pods = [
        ("guestbook-fe", "guestbook", "frontend", None),
        ("redis-master", "redis", "backend", Some("master")),
        ("redis-replica", "redis", "backend", Some("replica")),
    ];
    let mut docs = Vec::new();
    for (name, app, tier, role) in pods {
        let role = role.map(|r| format!("\n    role: {r}")).unwrap_or_default();
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {app}\n    tier: {tier}{role}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n"
        ));
    }
    let file = write(dir, "pods.yaml", &docs.join("---\n"));
    k.ok(&["apply", "-f", file.to_str().expect("path")]);
    let out = k.ok(&["get", "pods", "-Lapp", "-Ltier", "-Lrole"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "READY", "STATUS", "RESTARTS", "AGE", "APP", "TIER", "ROLE"
        ],
        "{out}"
    );
    let master = out
        .lines()
        .find(|l| l.starts_with("redis-master"))
        .expect("row");
    assert!(
        master.ends_with("redis   backend   master")
            || master.split_whitespace().rev().take(3).collect::<Vec<_>>()
                == ["master", "backend", "redis"],
        "{out}"
    );
    let fe = out
        .lines()
        .find(|l| l.starts_with("guestbook-fe"))
        .expect("row");
    assert!(fe.contains("Pending"), "{out}");

    let out = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=redis,role in (master)",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/redis-master");
    let out = k.ok(&["label", "pods", "-l", "app=redis", "status=healthy"]);
    assert!(
        out.contains("pod/redis-master labeled") && out.contains("pod/redis-replica labeled"),
        "{out}"
    );
    let out = k.ok(&[
        "annotate",
        "pods",
        "-l",
        "tier=backend",
        "description=my frontend running nginx",
    ]);
    // (kubectl before 1.28 prints "annotate" for "annotated")
    assert!(out.contains("pod/redis-replica annotate"), "{out}");
    let ann = k.ok(&[
        "get",
        "pod",
        "redis-master",
        "-o",
        "jsonpath={.metadata.annotations.description}|{.metadata.labels.status}",
    ]);
    assert_eq!(ann, "my frontend running nginx|healthy");
    k.ok(&["label", "pod", "redis-master", "status-"]);
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "redis-master",
            "-o",
            "jsonpath={.metadata.labels.status}"
        ]),
        ""
    );
    let out = k.ok(&[
        "get",
        "pods",
        "--field-selector",
        "metadata.name=guestbook-fe",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/guestbook-fe");
    k.ok(&["delete", "pods", "--all"]);
}

fn deployment(name: &str) -> String {
    NGINX_APP
        .split("---")
        .nth(1)
        .expect("deployment")
        .replace("my-nginx", name)
}

fn patches_edit_replace(k: &Kubectl, dir: &std::path::Path) {
    let file = write(dir, "web.yaml", &deployment("web"));
    let file = file.to_str().expect("path");
    k.ok(&["apply", "-f", file]);
    // strategic merge patch: containers merge by name
    k.ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#]);
    let names = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert!(
        names.contains("nginx") && names.contains("sidecar"),
        "{names}"
    );
    // merge patch replaces lists
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    // json patch
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    let got = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.labels.patched} {.spec.replicas}",
    ]);
    assert_eq!(got, "merge 5");
    let stderr = k.fails(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nosuch"}]"#,
    ]);
    assert!(
        stderr.contains("is invalid") || stderr.contains("Error from server"),
        "{stderr}"
    );

    // edit through KUBE_EDITOR
    let editor = write(
        dir,
        "editor.sh",
        "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 7/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = k
        .command()
        .env("KUBE_EDITOR", &editor)
        .args(["edit", "deployment", "web"])
        .output()
        .expect("edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web edited"));
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );

    // replace --force: delete then create, new uid
    let uid = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]);
    let live = k.ok(&["get", "deploy", "web", "-o", "yaml"]);
    let replaced = write(
        dir,
        "web-live.yaml",
        &live.replace("image: nginx:1.14.2", "image: nginx:1.16.1"),
    );
    let out = k.ok(&["replace", "--force", "-f", replaced.to_str().expect("path")]);
    assert!(
        out.contains("deployment.apps \"web\" deleted")
            && out.contains("deployment.apps/web replaced"),
        "{out}"
    );
    let after = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.uid} {.spec.template.spec.containers[?(@.name==\"nginx\")].image}",
    ]);
    let (new_uid, image) = after.split_once(' ').expect("uid image");
    assert_ne!(new_uid, uid);
    assert_eq!(image, "nginx:1.16.1");
    // plain replace with a stale resourceVersion conflicts
    let stderr = k.fails(&["replace", "-f", replaced.to_str().expect("path")]);
    assert!(stderr.contains("the object has been modified"), "{stderr}");
}

fn scale(k: &Kubectl) {
    k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    let out = k.ok(&[
        "scale",
        "--current-replicas=3",
        "--replicas=4",
        "deployment/web",
    ]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let stderr = k.fails(&[
        "scale",
        "--current-replicas=9",
        "--replicas=1",
        "deployment/web",
    ]);
    assert!(
        stderr.contains("Expected replicas to be 9, was 4"),
        "{stderr}"
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    let scale = k.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]);
    assert!(
        scale.contains("\"kind\":\"Scale\"") && scale.contains("\"selector\":\"app=nginx\""),
        "{scale}"
    );
}

fn watch_shows_later_change(k: &Kubectl) {
    let mut watcher = k
        .command()
        .args([
            "get",
            "deploy",
            "web",
            "-w",
            "-o",
            "jsonpath={.spec.replicas}{\"\\n\"}",
            "--request-timeout=20s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(1500));
    k.ok(&["scale", "deployment", "web", "--replicas=6"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watcher.kill();
    let out = watcher.wait_with_output().expect("watch output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.first().map(String::as_str), Some("4"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "6"),
        "watch did not show the change: {lines:?}"
    );
}

fn discovery_and_explain(k: &Kubectl) {
    let out = k.ok(&["api-resources"]);
    for expected in [
        "deployments",
        "horizontalpodautoscalers",
        "customresourcedefinitions",
        "flowschemas",
        "leases",
    ] {
        assert!(
            out.contains(expected),
            "api-resources lacks {expected}:\n{out}"
        );
    }
    let out = k.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        out.contains("KIND:       Deployment") && out.contains("rollingUpdate"),
        "{out}"
    );
    assert_eq!(k.ok(&["get", "--raw", "/healthz"]), "ok");
    let ns = k.ok(&["get", "ns", "-o", "name"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{name}")), "{ns}");
    }
    assert!(
        k.ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]) == "10.43.0.1"
    );
}

fn server_side_apply(k: &Kubectl, dir: &std::path::Path) {
    let file = write(dir, "ssa.yaml", &deployment("ssa"));
    let file = file.to_str().expect("path");
    let out = k.ok(&["apply", "--server-side", "-f", file]);
    assert!(
        out.contains("deployment.apps/ssa serverside-applied"),
        "{out}"
    );
    let managers = k.ok(&[
        "get",
        "deploy",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
    // Another manager takes spec.replicas; a conflicting apply is refused, --force-conflicts wins.
    let other = write(
        dir,
        "ssa-other.yaml",
        &deployment("ssa").replace("replicas: 3", "replicas: 9"),
    );
    let other = other.to_str().expect("path");
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        other,
    ]);
    let stderr = k.fails(&["apply", "--server-side", "-f", file]);
    assert!(
        stderr.contains("conflict") && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", file]);
    assert_eq!(
        k.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    k.ok(&["delete", "deploy", "ssa"]);
}

/// Typed-client commands send Kubernetes protobuf bodies (kubectl 1.32+).
fn protobuf_creates(k: &Kubectl) {
    let out = k.ok(&[
        "create",
        "deployment",
        "pb-web",
        "--image=nginx:1.27",
        "--replicas=2",
    ]);
    assert!(out.contains("deployment.apps/pb-web created"), "{out}");
    let got = k.ok(&["get", "deploy", "pb-web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.selector.matchLabels.app}"]);
    assert_eq!(got, "2 nginx:1.27 pb-web");
    assert!(
        k.ok(&[
            "create",
            "configmap",
            "pb-cm",
            "--from-literal=color=blue",
            "--from-literal=size=L"
        ])
        .contains("configmap/pb-cm created")
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "pb-cm",
            "-o",
            "jsonpath={.data.color}{.data.size}"
        ]),
        "blueL"
    );
    assert!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "pb-secret",
            "--from-literal=password=s3cret"
        ])
        .contains("secret/pb-secret created")
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "pb-secret",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "czNjcmV0"
    );
    assert!(
        k.ok(&["create", "namespace", "pb-ns"])
            .contains("namespace/pb-ns created")
    );
    assert!(
        k.ok(&[
            "create",
            "job",
            "pb-job",
            "--image=busybox:1.36",
            "-n",
            "pb-ns",
            "--",
            "true"
        ])
        .contains("job.batch/pb-job created")
    );
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    let out = k.ok(&[
        "autoscale",
        "deployment",
        "pb-web",
        "--min=1",
        "--max=3",
        "--cpu-percent=50",
    ]);
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/pb-web autoscaled"),
        "{out}"
    );
    let hpa = k.ok(&[
        "get",
        "hpa",
        "pb-web",
        "-o",
        "jsonpath={.spec.maxReplicas} {.spec.scaleTargetRef.name}",
    ]);
    assert_eq!(hpa, "3 pb-web");
    let v1 = k.ok(&[
        "get",
        "--raw",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/pb-web",
    ]);
    assert!(v1.contains("\"targetCPUUtilizationPercentage\":50"), "{v1}");
    k.ok(&["delete", "hpa", "pb-web"]);
    k.ok(&["delete", "deploy", "pb-web"]);
}

fn custom_resources(k: &Kubectl, dir: &std::path::Path) {
    let crd = write(dir, "crd.yaml", CRD);
    assert!(
        k.ok(&["apply", "-f", crd.to_str().expect("path")])
            .contains(
                "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"
            )
    );
    k.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=10s",
        "crd/crontabs.stable.example.com",
    ]);
    let cr = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: my-cron\nspec:\n  cronSpec: \"* * * * */5\"\n  image: my-cron-image\n";
    let file = write(dir, "cr.yaml", cr);
    let file = file.to_str().expect("path");
    assert!(
        k.ok(&["apply", "-f", file])
            .contains("crontab.stable.example.com/my-cron created")
    );
    write(
        dir,
        "cr.yaml",
        &cr.replace("my-cron-image", "my-cron-image:2"),
    );
    assert!(
        k.ok(&["apply", "-f", file])
            .contains("crontab.stable.example.com/my-cron configured")
    );
    let out = k.ok(&["get", "crontabs"]);
    assert!(
        out.contains("my-cron") && out.contains("* * * * */5"),
        "{out}"
    );
    assert_eq!(
        k.ok(&["get", "ct", "my-cron", "-o", "jsonpath={.spec.image}"]),
        "my-cron-image:2"
    );
    let strict = write(
        dir,
        "cr-bad.yaml",
        &cr.replace("  image:", "  bogus: 1\n  image:")
            .replace("my-cron", "bad-cron"),
    );
    let stderr = k.fails(&["apply", "-f", strict.to_str().expect("path")]);
    assert!(stderr.contains("unknown field \"spec.bogus\""), "{stderr}");
    let explained = k.ok(&["explain", "crontab.spec"]);
    assert!(explained.contains("cronSpec"), "{explained}");
    // The CRD's schema is in the v2 document too.
    let v2: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v2"])).expect("JSON");
    assert_eq!(
        v2["definitions"]["com.example.stable.v1.CronTab"]["x-kubernetes-group-version-kind"][0]["kind"],
        "CronTab"
    );
    assert!(
        k.ok(&["delete", "-f", file])
            .contains("crontab.stable.example.com \"my-cron\" deleted")
    );
    k.ok(&["delete", "-f", crd.to_str().expect("path")]);
}

/// `kubectl get -o yaml` of several objects is a `kind: List`; applying or
/// creating it again validates each item against /openapi/v2 (as kubectl
/// does for Lists) — unknown fields refused client-side, as upstream.
fn lists_round_trip(k: &Kubectl, dir: &std::path::Path) {
    k.ok(&["create", "configmap", "listed-a", "--from-literal=k=a"]);
    k.ok(&["create", "configmap", "listed-b", "--from-literal=k=b"]);
    let yaml = k.ok(&["get", "configmap", "listed-a", "listed-b", "-o", "yaml"]);
    assert!(yaml.contains("kind: List"), "{yaml}");
    let file = write(dir, "list.yaml", &yaml);
    let file = file.to_str().expect("path");
    let applied = k.ok(&["apply", "-f", file]);
    assert!(
        applied.contains("configmap/listed-a configured"),
        "{applied}"
    );
    k.ok(&["delete", "configmap", "listed-a", "listed-b"]);
    let created = k.ok(&["create", "-f", file]);
    assert!(created.contains("configmap/listed-b created"), "{created}");
    let bad = write(
        dir,
        "list-bad.yaml",
        &yaml.replace("    k: a\n", "    k: a\n  bogus: 1\n"),
    );
    let stderr = k.fails(&["apply", "-f", bad.to_str().expect("path")]);
    assert!(
        stderr.contains("unknown field \"bogus\" in io.k8s.api.core.v1.ConfigMap"),
        "{stderr}"
    );
    k.ok(&["delete", "configmap", "listed-a", "listed-b"]);
    // The v2 document itself, as JSON.
    let v2: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/openapi/v2"])).expect("JSON");
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
}

/// The commands of daily work: diff, wait for a JSONPath value, events,
/// watch-only gets, rollout restart, set image/env/resources, label
/// --overwrite, explain.
fn everyday_commands(k: &Kubectl, dir: &std::path::Path) {
    let explained = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(explained.contains("replicas"), "{explained}");
    let manifest = deployment("daily");
    let file = write(dir, "daily.yaml", &manifest);
    let file = file.to_str().expect("path");
    k.ok(&["apply", "-f", file]);
    // diff: nothing to show, then the change (exit 1 when there are differences).
    let same = k.run(&["diff", "-f", file]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    write(
        dir,
        "daily.yaml",
        &manifest.replace("replicas: 3", "replicas: 2"),
    );
    let changed = k.run(&["diff", "-f", file]);
    let shown = String::from_utf8_lossy(&changed.stdout);
    assert_eq!(
        changed.status.code(),
        Some(1),
        "{shown}{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(
        shown.contains("-  replicas: 3") && shown.contains("+  replicas: 2"),
        "{shown}"
    );
    // wait for a JSONPath value.
    k.ok(&["create", "configmap", "daily", "--from-literal=phase=ready"]);
    k.ok(&[
        "wait",
        "--for=jsonpath={.data.phase}=ready",
        "configmap/daily",
        "--timeout=10s",
    ]);
    // get --watch-only shows later changes only.
    let mut watch = k
        .command()
        .args(["get", "configmaps", "--watch-only", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(std::time::Duration::from_secs(1));
    k.ok(&["create", "configmap", "daily-later"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = watch.kill();
    let watched = watch.wait_with_output().expect("watch output");
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.contains("configmap/daily-later"), "{watched}");
    assert!(!watched.contains("configmap/daily\n"), "{watched}");
    // label --overwrite.
    k.ok(&["label", "configmap", "daily", "tier=a"]);
    k.fails(&["label", "configmap", "daily", "tier=b"]);
    k.ok(&["label", "configmap", "daily", "tier=b", "--overwrite"]);
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "daily",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "b"
    );
    // rollout restart and the set commands change the template.
    k.ok(&["rollout", "restart", "deployment/daily"]);
    k.ok(&[
        "set",
        "image",
        "deployment/daily",
        "nginx=kelp.test/nginx:2",
    ]);
    k.ok(&["set", "env", "deployment/daily", "MODE=edge"]);
    k.ok(&[
        "set",
        "resources",
        "deployment/daily",
        "--limits=cpu=200m,memory=64Mi",
    ]);
    let template = k.ok(&[
        "get",
        "deployment",
        "daily",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}|{.spec.template.spec.containers[0].image}|{.spec.template.spec.containers[0].env[0].value}|{.spec.template.spec.containers[0].resources.limits.cpu}",
    ]);
    let parts: Vec<&str> = template.split('|').collect();
    assert!(!parts[0].is_empty(), "{template}");
    assert_eq!(
        &parts[1..],
        ["kelp.test/nginx:2", "edge", "200m"],
        "{template}"
    );
    // events: the deployment controller's scaling events.
    let events = k.wait_for(&["events", "--for", "deployment/daily"], 20, |o| {
        o.contains("ScalingReplicaSet")
    });
    assert!(events.contains("daily"), "{events}");
    k.ok(&["delete", "-f", file]);
    k.ok(&["delete", "configmap", "daily", "daily-later"]);
}

/// resourceVersions as conformance now checks them (KEP-5504): decimal
/// without leading zeros, increasing with every write, a list's the latest
/// revision; a WatchList (`sendInitialEvents`) ends its initial events with
/// the `k8s.io/initial-events-end` bookmark.
fn resource_versions(k: &Kubectl) {
    let rv_of = |json: &str| -> u64 {
        let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
        let rv = value["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion")
            .to_string();
        assert!(
            !rv.is_empty() && !rv.starts_with('0') && rv.bytes().all(|b| b.is_ascii_digit()),
            "resourceVersion {rv:?}"
        );
        rv.parse().expect("decimal")
    };
    let list = "/api/v1/namespaces/default/configmaps";
    let before = rv_of(&k.ok(&["get", "--raw", list]));
    let created = rv_of(&k.ok(&["create", "configmap", "rv-a", "-o", "json"]));
    assert!(created > before, "{created} after {before}");
    k.ok(&["label", "configmap", "rv-a", "step=2"]);
    let updated = rv_of(&k.ok(&["get", "--raw", &format!("{list}/rv-a")]));
    assert!(updated > created, "{updated} after {created}");
    // A list carries the latest revision, even when its newest item is older.
    k.ok(&["create", "secret", "generic", "rv-elsewhere"]);
    let listed = rv_of(&k.ok(&["get", "--raw", list]));
    assert!(listed > updated, "{listed} after {updated}");
    // WatchList: the initial ADDED events, then the end bookmark.
    let stream = k.ok(&[
        "get",
        "--raw",
        &format!("{list}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2"),
    ]);
    let events: Vec<serde_json::Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let end = events
        .iter()
        .position(|e| e["type"] == "BOOKMARK")
        .unwrap_or_else(|| panic!("no bookmark in {stream}"));
    assert_eq!(
        events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(events[..end].iter().all(|e| e["type"] == "ADDED"));
    assert!(
        events[..end]
            .iter()
            .any(|e| e["object"]["metadata"]["name"] == "rv-a")
    );
    k.ok(&["delete", "configmap", "rv-a"]);
    k.ok(&["delete", "secret", "rv-elsewhere"]);
}

fn errors_are_status(k: &Kubectl, dir: &std::path::Path) {
    let stderr = k.fails(&["get", "configmap", "nosuch"]);
    assert!(
        stderr.contains("Error from server (NotFound): configmaps \"nosuch\" not found"),
        "{stderr}"
    );
    let bad = write(
        dir,
        "bad-name.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let stderr = k.fails(&["create", "-f", bad.to_str().expect("path")]);
    assert!(
        stderr.contains("is invalid") && stderr.contains("metadata.name"),
        "{stderr}"
    );
    let unknown = write(
        dir,
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n",
    );
    let stderr = k.fails(&["create", "-f", unknown.to_str().expect("path")]);
    assert!(stderr.contains("unknown field \"bogus\""), "{stderr}");
    let stderr = k.fails(&["delete", "namespace", "kube-system"]);
    assert!(stderr.contains("Error from server (Forbidden): namespaces \"kube-system\" is forbidden: this namespace may not be deleted"), "{stderr}");
    let stderr = k.fails(&["delete", "configmap", "nosuch"]);
    assert!(stderr.contains("NotFound"), "{stderr}");
    let missing_ns = write(
        dir,
        "missing-ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nosuch\n",
    );
    let stderr = k.fails(&["create", "-f", missing_ns.to_str().expect("path")]);
    assert!(
        stderr.contains("namespaces \"nosuch\" not found"),
        "{stderr}"
    );
}
