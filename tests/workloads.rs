//! End-to-end tests of the workload controllers on a real node (root):
//! the Cluster Administration guide's Deployment update flow, rollbacks and
//! cascading deletion.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{BUSYBOX, Kubectl, Server, http_get};

const NGINX_1: &str = "kelp.test/nginx:1.14.2";
const NGINX_2: &str = "kelp.test/nginx:1.16.1";

/// What every running pod of `selector` in `namespace` answers on port 80.
fn pages(kubectl: &Kubectl, namespace: &str, selector: &str) -> Vec<String> {
    let ips = kubectl.ok(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        selector,
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    ips.split_whitespace()
        .map(|ip| http_get(&format!("http://{ip}/")).trim().to_string())
        .collect()
}

/// Checks a `kubectl get pods --watch` transcript (name, deletion time,
/// Ready per line) against the rollout's bounds: once all `replicas` pods
/// were available, never fewer than `replicas - unavailable` available and
/// never more than `replicas + surge` pods (terminating ones aside).
fn check_bounds(transcript: &str, replicas: usize, surge: usize, unavailable: usize) -> usize {
    let mut pods: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut started = false;
    let mut events = 0;
    for line in transcript.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [name, deleted, ready] = fields[..] else {
            panic!("unexpected watch line {line:?}");
        };
        pods.insert(name.to_string(), (!deleted.is_empty(), ready == "True"));
        let live = pods
            .values()
            .filter(|(terminating, _)| !terminating)
            .count();
        let available = pods
            .values()
            .filter(|(terminating, ready)| !terminating && *ready)
            .count();
        started |= available == replicas;
        if started {
            events += 1;
            assert!(
                available >= replicas - unavailable,
                "only {available} available at {line:?}:\n{transcript}"
            );
            assert!(
                live <= replicas + surge,
                "{live} pods at {line:?}:\n{transcript}"
            );
        }
    }
    events
}

#[test]
fn the_guides_deployment_update_flow_rolls_out_within_bounds_and_back() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["create", "deployment", "my-nginx", "--image", NGINX_1]);
    kubectl.ok(&[
        "scale",
        "deployment",
        "my-nginx",
        "--current-replicas=1",
        "--replicas=3",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    assert_eq!(
        pages(&kubectl, "default", "app=my-nginx"),
        ["nginx 1.14.2"; 3]
    );

    // Image changed with `kubectl edit`, watched throughout the rollout.
    let mut watch = kubectl
        .command()
        .args([
            "get",
            "pods",
            "-l",
            "app=my-nginx",
            "--watch",
            "-o",
            r#"jsonpath={.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl get --watch");
    let stdout = watch.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let edited = kubectl
        .command()
        .env("KUBE_EDITOR", format!("sed -i s|{NGINX_1}|{NGINX_2}|"))
        .args(["edit", "deployment", "my-nginx"])
        .output()
        .expect("kubectl edit");
    assert!(edited.status.success(), "{edited:?}");
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    // Let the old pods' deletions reach the watch.
    kubectl.wait_for(
        &["get", "pods", "-l", "app=my-nginx", "-o", "name"],
        60,
        |o| o.lines().count() == 3,
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let transcript = reader.join().expect("watch reader");
    // 25% of 3: maxSurge rounds up to 1, maxUnavailable down to 0.
    let events = check_bounds(&transcript, 3, 1, 0);
    assert!(events > 6, "the watch saw too little:\n{transcript}");
    assert_eq!(
        pages(&kubectl, "default", "app=my-nginx"),
        ["nginx 1.16.1"; 3]
    );

    let history = kubectl.ok(&["rollout", "history", "deployment/my-nginx"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let first = kubectl.ok(&["rollout", "history", "deployment/my-nginx", "--revision=1"]);
    assert!(first.contains(NGINX_1), "{first}");

    // Undo returns to the first image, as revision 3.
    kubectl.ok(&["rollout", "undo", "deployment/my-nginx"]);
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    assert_eq!(
        kubectl.ok(&[
            "get",
            "deployment",
            "my-nginx",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]),
        format!("{NGINX_1} 3")
    );
    kubectl.wait_for(
        &["get", "pods", "-l", "app=my-nginx", "-o", "name"],
        60,
        |o| o.lines().count() == 3,
    );
    assert_eq!(
        pages(&kubectl, "default", "app=my-nginx"),
        ["nginx 1.14.2"; 3]
    );

    // Paused, a template change waits; resumed, it rolls out.
    kubectl.ok(&["rollout", "pause", "deployment/my-nginx"]);
    kubectl.ok(&[
        "set",
        "image",
        "deployment/my-nginx",
        &format!("nginx={NGINX_2}"),
    ]);
    let paused = kubectl.wait_for(
        &[
            "get",
            "deployment",
            "my-nginx",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ],
        30,
        |o| o == "DeploymentPaused",
    );
    assert_eq!(paused, "DeploymentPaused");
    assert_eq!(
        pages(&kubectl, "default", "app=my-nginx"),
        ["nginx 1.14.2"; 3]
    );
    kubectl.ok(&["rollout", "resume", "deployment/my-nginx"]);
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    kubectl.ok(&["rollout", "restart", "deployment/my-nginx"]);
    kubectl.ok(&["rollout", "status", "deployment/my-nginx", "--timeout=90s"]);
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment,reason=ScalingReplicaSet",
        "-o",
        "name",
    ]);
    assert!(events.lines().count() >= 6, "{events}");

    // Deleting with --cascade=orphan keeps the ReplicaSets and pods; a plain
    // delete of a Deployment takes both.
    let replica_sets = kubectl.ok(&["get", "rs", "-l", "app=my-nginx", "-o", "name"]);
    kubectl.ok(&["delete", "deployment", "my-nginx", "--cascade=orphan"]);
    kubectl.wait_for(
        &[
            "get",
            "rs",
            "-l",
            "app=my-nginx",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ],
        30,
        |o| o.is_empty(),
    );
    assert_eq!(
        kubectl.ok(&["get", "rs", "-l", "app=my-nginx", "-o", "name"]),
        replica_sets
    );
    assert_eq!(pages(&kubectl, "default", "app=my-nginx").len(), 3);
    kubectl.ok(&["delete", "rs", "-l", "app=my-nginx"]);
    kubectl.ok(&[
        "create",
        "deployment",
        "gone",
        "--image",
        NGINX_1,
        "--replicas=2",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/gone", "--timeout=90s"]);
    kubectl.ok(&["delete", "deployment", "gone"]);
    kubectl.wait_for(
        &["get", "rs,pods", "-l", "app=gone", "-o", "name"],
        60,
        |o| o.is_empty(),
    );

    drain_respects_disruption_budgets(&server, &kubectl);
}

/// The maintenance flow: a PodDisruptionBudget's status kept by the
/// disruption controller, `kubectl drain` cordoning the node and evicting
/// what the budget allows (the rest refused with upstream's 429), then
/// `kubectl uncordon` letting the held-back replacement run.
fn drain_respects_disruption_budgets(server: &Server, kubectl: &Kubectl) {
    kubectl.ok(&[
        "create",
        "deployment",
        "kept",
        "--image",
        NGINX_1,
        "--replicas=2",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/kept", "--timeout=90s"]);
    kubectl.ok(&[
        "create",
        "poddisruptionbudget",
        "kept",
        "--selector=app=kept",
        "--min-available=1",
    ]);
    kubectl.wait_for(
        &[
            "get",
            "pdb",
            "kept",
            "-o",
            "jsonpath={.status.disruptionsAllowed}/{.status.currentHealthy}",
        ],
        30,
        |o| o == "1/2",
    );
    let node = server.node_name();
    let out = kubectl.run(&[
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--pod-selector=app=kept",
        "--timeout=15s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the budget holds the second pod back"
    );
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    assert_eq!(
        kubectl.ok(&["get", "node", node, "-o", "jsonpath={.spec.unschedulable}"]),
        "true"
    );
    // One pod was evicted; its replacement waits for a schedulable node.
    let phases = kubectl.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=kept",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        30,
        |o| {
            let mut phases: Vec<&str> = o.split_whitespace().collect();
            phases.sort();
            phases == ["Pending", "Running"]
        },
    );
    assert!(!phases.is_empty());
    kubectl.ok(&["uncordon", node]);
    kubectl.ok(&["rollout", "status", "deployment/kept", "--timeout=90s"]);
    kubectl.wait_for(
        &[
            "get",
            "pdb",
            "kept",
            "-o",
            "jsonpath={.status.disruptionsAllowed}",
        ],
        30,
        |o| o == "1",
    );
    kubectl.ok(&["delete", "deployment,pdb", "kept"]);
}

#[test]
fn daemon_sets_stateful_sets_jobs_and_cron_jobs_reach_their_documented_state() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    // The CronJob first: its first run waits for the next minute.
    kubectl.apply(
        &dir,
        "cronjob.yaml",
        &format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: hello}}\nspec:\n  schedule: \"* * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: hello, image: {BUSYBOX}, command: [sh, -c, 'date; echo Hello from the Kubernetes cluster']}}]\n"
        ),
    );
    kubectl.apply(
        &dir,
        "daemonset.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: kube-system}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers: [{{name: agent, image: {NGINX_1}}}]\n"
        ),
    );
    kubectl.apply(
        &dir,
        "statefulset.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: nginx}}\nspec:\n  clusterIP: None\n  selector: {{app: nginx}}\n  ports: [{{port: 80, name: web}}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web}}\nspec:\n  serviceName: nginx\n  replicas: 2\n  selector: {{matchLabels: {{app: nginx}}}}\n  template:\n    metadata: {{labels: {{app: nginx}}}}\n    spec:\n      containers: [{{name: nginx, image: {NGINX_1}, ports: [{{containerPort: 80, name: web}}]}}]\n"
        ),
    );
    kubectl.apply(
        &dir,
        "job.yaml",
        &format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: three}}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: work, image: {BUSYBOX}, command: [sh, -c, 'echo working; sleep 1']}}]\n"
        ),
    );

    // DaemonSet: one pod on the (only) node, rolled to a new image.
    kubectl.ok(&[
        "rollout",
        "status",
        "ds/agent",
        "-n",
        "kube-system",
        "--timeout=90s",
    ]);
    let placed = kubectl.ok(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert_eq!(placed, common::NODE);
    kubectl.ok(&[
        "set",
        "image",
        "ds/agent",
        "-n",
        "kube-system",
        &format!("agent={NGINX_2}"),
    ]);
    kubectl.ok(&[
        "rollout",
        "status",
        "ds/agent",
        "-n",
        "kube-system",
        "--timeout=90s",
    ]);
    assert_eq!(
        pages(&kubectl, "kube-system", "app=agent"),
        ["nginx 1.16.1"]
    );
    let history = kubectl.ok(&["rollout", "history", "ds/agent", "-n", "kube-system"]);
    assert_eq!(
        history.lines().skip(2).filter(|l| !l.is_empty()).count(),
        2,
        "{history}"
    );

    // StatefulSet: web-0, then web-1 once web-0 is Ready; stable hostnames.
    kubectl.ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    let timing =
        |pod: &str, path: &str| kubectl.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    let web0_ready = timing(
        "web-0",
        r#"{.status.conditions[?(@.type=="Ready")].lastTransitionTime}"#,
    );
    let web1_created = timing("web-1", "{.metadata.creationTimestamp}");
    assert!(
        web1_created >= web0_ready,
        "web-1 made at {web1_created}, web-0 ready at {web0_ready}"
    );
    let hostname = kubectl.ok(&["exec", "web-1", "--", "hostname"]);
    assert_eq!(hostname.trim(), "web-1");
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=SuccessfulCreate",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.starts_with("create Pod web-0 in StatefulSet web successful create Pod web-1"),
        "{events}"
    );

    // Job: three completions, at most two at a time.
    kubectl.ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=90s",
    ]);
    assert_eq!(
        kubectl.ok(&["get", "job", "three", "-o", "jsonpath={.status.succeeded}"]),
        "3"
    );
    let logs = kubectl.ok(&["logs", "-l", "job-name=three"]);
    assert_eq!(logs.matches("working").count(), 3, "{logs}");

    // CronJob: a Job at the minute, completed, listed as the last schedule.
    let jobs = kubectl.wait_for(&["get", "jobs", "-o", "name"], 90, |o| {
        o.contains("job.batch/hello-")
    });
    let job = jobs
        .lines()
        .filter_map(|l| l.strip_prefix("job.batch/"))
        .find(|j| j.starts_with("hello-"))
        .expect("the CronJob's job")
        .to_string();
    kubectl.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ]);
    let out = kubectl.ok(&["logs", &format!("job/{job}")]);
    assert!(out.contains("Hello from the Kubernetes cluster"), "{out}");
    let last = kubectl.ok(&[
        "get",
        "cronjob",
        "hello",
        "-o",
        "jsonpath={.status.lastScheduleTime}",
    ]);
    assert!(last.ends_with(":00Z"), "{last}");
}

#[test]
fn the_canary_layout_gives_endpoints_from_both_tracks() {
    let server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let track = |name: &str, track: &str, replicas: u32, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: guestbook, tier: frontend, track: {track}}}\n  template:\n    metadata:\n      labels: {{app: guestbook, tier: frontend, track: {track}}}\n    spec:\n      containers: [{{name: php-redis, image: {image}, ports: [{{name: http, containerPort: 80}}]}}]\n---\n"
        )
    };
    let manifest = format!(
        "{}{}apiVersion: v1\nkind: Service\nmetadata: {{name: frontend}}\nspec:\n  selector: {{app: guestbook, tier: frontend}}\n  ports: [{{port: 80, targetPort: http}}]\n",
        track("frontend-stable", "stable", 3, NGINX_1),
        track("frontend-canary", "canary", 1, NGINX_2),
    );
    kubectl.apply(&server.path("manifests"), "guestbook.yaml", &manifest);
    kubectl.ok(&[
        "rollout",
        "status",
        "deployment/frontend-stable",
        "--timeout=90s",
    ]);
    kubectl.ok(&[
        "rollout",
        "status",
        "deployment/frontend-canary",
        "--timeout=90s",
    ]);
    let targets = kubectl.wait_for(
        &[
            "get",
            "endpoints",
            "frontend",
            "-o",
            "jsonpath={.subsets[*].addresses[*].targetRef.name}",
        ],
        30,
        |o| o.split_whitespace().count() == 4,
    );
    let stable = targets
        .split_whitespace()
        .filter(|n| n.starts_with("frontend-stable-"))
        .count();
    let canary = targets
        .split_whitespace()
        .filter(|n| n.starts_with("frontend-canary-"))
        .count();
    assert_eq!((stable, canary), (3, 1), "{targets}");
    let port = kubectl.ok(&[
        "get",
        "endpoints",
        "frontend",
        "-o",
        "jsonpath={.subsets[0].ports[0].port}",
    ]);
    assert_eq!(port, "80");
    // Every address answers, and both versions are among them.
    let ips = kubectl.ok(&[
        "get",
        "endpoints",
        "frontend",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    let mut answers: Vec<String> = ips
        .split_whitespace()
        .map(|ip| http_get(&format!("http://{ip}/")).trim().to_string())
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        [
            "nginx 1.14.2",
            "nginx 1.14.2",
            "nginx 1.14.2",
            "nginx 1.16.1"
        ]
    );
    // The EndpointSlice says the same, with conditions.
    let slice = kubectl.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=frontend",
        "-o",
        "jsonpath={.items[0].endpoints[*].conditions.ready}",
    ]);
    assert_eq!(slice, "true true true true");
    // Scaled to zero, the canary leaves the Service.
    kubectl.ok(&["scale", "deployment/frontend-canary", "--replicas=0"]);
    kubectl.wait_for(
        &[
            "get",
            "endpoints",
            "frontend",
            "-o",
            "jsonpath={.subsets[*].addresses[*].targetRef.name}",
        ],
        30,
        |o| o.split_whitespace().count() == 3 && !o.contains("canary"),
    );
    kubectl.ok(&["delete", "service", "frontend"]);
    kubectl.wait_for(
        &["get", "endpoints,endpointslices", "-o", "name"],
        30,
        |o| !o.contains("frontend"),
    );
}
