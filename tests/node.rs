//! End-to-end tests of the node (root: real containerd + runc, real bridge,
//! veths and iptables): pods run, get addresses from the node's podCIDR,
//! talk to each other, log, restart, back off, are probed, survive a kelp
//! restart, and kelp-killall.sh removes everything kelp made.

mod common;

use std::process::Command;

use common::{BUSYBOX, NODE, Server, http_get};

fn pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 2\n{spec}"
    )
}

fn jsonpath(kubectl: &common::Kubectl, pod: &str, path: &str) -> String {
    kubectl.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

fn wait_ready(kubectl: &common::Kubectl, pod: &str) {
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=90s",
    ]);
}

#[test]
fn pods_run_with_addresses_logs_and_traffic_and_survive_a_restart() {
    let mut server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");

    // A web server pod: Running, with an address from the node's podCIDR.
    kubectl.apply(&dir, "web.yaml", &pod("web", &format!(
        "  containers:\n  - name: web\n    image: {BUSYBOX}\n    command: [sh, -c, 'echo hello-from-web > /var/www/index.html; exec httpd -f -p 8080 -h /var/www']\n"
    )));
    wait_ready(&kubectl, "web");
    let cidr = kubectl.ok(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"]);
    let ip = jsonpath(&kubectl, "web", "{.status.podIP}");
    let prefix = cidr.rsplit_once('.').expect("cidr").0;
    assert!(
        ip.starts_with(&format!("{prefix}.")),
        "pod IP {ip} outside the node's podCIDR {cidr}"
    );
    assert_eq!(jsonpath(&kubectl, "web", "{.status.phase}"), "Running");
    assert_eq!(jsonpath(&kubectl, "web", "{.status.hostIP}"), "127.0.0.1");

    // Node to pod, by pod IP.
    assert_eq!(
        http_get(&format!("http://{ip}:8080/")).trim(),
        "hello-from-web"
    );

    // kubectl cp (tar over exec), both ways.
    let local = dir.join("copied.txt");
    std::fs::write(&local, "copied-in\n").expect("write");
    kubectl.ok(&["cp", local.to_str().expect("path"), "web:/tmp/copied.txt"]);
    assert_eq!(
        kubectl.ok(&["exec", "web", "--", "cat", "/tmp/copied.txt"]),
        "copied-in\n"
    );
    let back = dir.join("back.txt");
    kubectl.ok(&["cp", "web:/tmp/copied.txt", back.to_str().expect("path")]);
    assert_eq!(std::fs::read_to_string(&back).expect("read"), "copied-in\n");

    // kubectl debug: an ephemeral container joins the running pod.
    kubectl.ok(&[
        "debug",
        "web",
        "--image",
        BUSYBOX,
        "-c",
        "debugger",
        "--",
        "sh",
        "-c",
        "echo debugging",
    ]);
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[0].state.terminated.exitCode}",
        ],
        60,
        |code| code == "0",
    );
    assert_eq!(
        kubectl.ok(&["logs", "web", "-c", "debugger"]).trim(),
        "debugging"
    );

    // Pod to pod, by pod IP.
    kubectl.apply(&dir, "client.yaml", &pod("client", &format!(
        "  containers:\n  - name: client\n    image: {BUSYBOX}\n    command: [sh, -c, 'until wget -qO- http://{ip}:8080/; do sleep 0.5; done; sleep 3600']\n"
    )));
    kubectl.wait_for(&["logs", "client"], 60, |out| {
        out.contains("hello-from-web")
    });

    // Two containers of one pod over localhost.
    kubectl.apply(&dir, "duo.yaml", &pod("duo", &format!(
        "  containers:\n  - name: server\n    image: {BUSYBOX}\n    command: [sh, -c, 'echo duo-ok > /tmp/index.html; exec httpd -f -p 8081 -h /tmp']\n  - name: caller\n    image: {BUSYBOX}\n    command: [sh, -c, 'until wget -qO- http://127.0.0.1:8081/; do sleep 0.5; done; sleep 3600']\n"
    )));
    kubectl.wait_for(&["logs", "duo", "-c", "caller"], 60, |out| {
        out.contains("duo-ok")
    });
    let no_container = kubectl.fails(&["get", "--raw", "/api/v1/namespaces/default/pods/duo/log"]);
    assert!(
        no_container.contains(
            "a container name must be specified for pod duo, choose one of: [server caller]"
        ),
        "{no_container}"
    );

    // The guide's counter pod.
    kubectl.apply(&dir, "counter.yaml", &pod("counter", &format!(
        "  containers:\n  - name: count\n    image: {BUSYBOX}\n    args: [/bin/sh, -c, 'i=0; while true; do echo \"$i: $(date)\"; i=$((i+1)); sleep 1; done']\n"
    )));
    let logs = kubectl.wait_for(&["logs", "counter"], 60, |out| out.contains("1: "));
    assert!(logs.starts_with("0: "), "{logs}");
    let tail = kubectl.ok(&["logs", "counter", "--tail", "1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let stamped = kubectl.ok(&["logs", "counter", "--tail", "1", "--timestamps"]);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z "),
        "{stamped}"
    );
    let follow = Command::new("timeout")
        .args(["3", "kubectl", "logs", "-f", "--tail", "1", "counter"])
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("kubectl logs -f");
    let followed = String::from_utf8_lossy(&follow.stdout);
    assert!(
        followed.lines().count() >= 2,
        "-f streams new lines: {followed:?}"
    );

    // The kubelet API itself: 401 without credentials; a token the API
    // server vouches for gets 403 until RBAC grants nodes/proxy, then logs.
    let kubelet_logs = "https://127.0.0.1:10250/containerLogs/default/counter/count?tailLines=1";
    let anonymous = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", kubelet_logs])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
    kubectl.ok(&["create", "serviceaccount", "log-reader"]);
    let token = kubectl.ok(&["create", "token", "log-reader"]);
    let with_token = || {
        Command::new("curl")
            .args([
                "-sk",
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
                kubelet_logs,
            ])
            .output()
            .expect("curl")
    };
    let denied = with_token();
    assert!(
        String::from_utf8_lossy(&denied.stdout).starts_with(
            "Forbidden (user=system:serviceaccount:default:log-reader, verb=get, resource=nodes, subresource(s)=[proxy])"
        ),
        "{denied:?}"
    );
    kubectl.ok(&[
        "create",
        "clusterrole",
        "node-logs",
        "--verb=get",
        "--resource=nodes/proxy",
    ]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "log-reader-node-logs",
        "--clusterrole=node-logs",
        "--serviceaccount=default:log-reader",
    ]);
    let with_token = with_token();
    assert!(
        String::from_utf8_lossy(&with_token.stdout).contains(": "),
        "{:?}",
        with_token
    );

    // kubectl attach joins the running container's output.
    let attached = Command::new("timeout")
        .args(["4", "kubectl", "attach", "counter"])
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("kubectl attach");
    let attached = String::from_utf8_lossy(&attached.stdout);
    assert!(
        attached.lines().any(|l| l.contains(": ")),
        "attach shows new lines: {attached:?}"
    );

    // The guide's counter with two sidecars tailing files in an emptyDir.
    let sidecars = format!(
        "  containers:\n  - name: count\n    image: {BUSYBOX}\n    args: [/bin/sh, -c, 'i=0; while true; do echo \"$i: $(date)\" >> /var/log/1.log; echo \"$(date) INFO $i\" >> /var/log/2.log; i=$((i+1)); sleep 1; done']\n    volumeMounts:\n    - name: varlog\n      mountPath: /var/log\n  - name: count-log-1\n    image: {BUSYBOX}\n    args: [/bin/sh, -c, 'tail -n+1 -F /var/log/1.log']\n    volumeMounts:\n    - name: varlog\n      mountPath: /var/log\n  - name: count-log-2\n    image: {BUSYBOX}\n    args: [/bin/sh, -c, 'tail -n+1 -F /var/log/2.log']\n    volumeMounts:\n    - name: varlog\n      mountPath: /var/log\n  volumes:\n  - name: varlog\n    emptyDir: {{}}\n"
    );
    kubectl.apply(&dir, "sidecars.yaml", &pod("counter-sidecars", &sidecars));
    kubectl.wait_for(&["logs", "counter-sidecars", "count-log-1"], 60, |out| {
        out.starts_with("0: ")
    });
    kubectl.wait_for(
        &["logs", "counter-sidecars", "-c", "count-log-2"],
        60,
        |out| out.contains("INFO 0"),
    );

    // Log files where upstream puts them.
    let uid = jsonpath(&kubectl, "counter", "{.metadata.uid}");
    let log_file = format!("/var/log/pods/default_counter_{uid}/count/0.log");
    let raw = std::fs::read_to_string(&log_file).expect("CRI log file");
    assert!(
        raw.lines()
            .next()
            .is_some_and(|l| l.contains(" stdout F 0: ")),
        "{raw}"
    );

    // kubectl exec, over WebSocket (v5) and over the SPDY fallback: output,
    // stdin, and exit codes.
    for websockets in ["true", "false"] {
        let exec = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = kubectl.command();
            cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
                .args(args);
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl exec");
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("write stdin");
            } else {
                drop(child.stdin.take());
            }
            child.wait_with_output().expect("kubectl exec output")
        };
        let ok = exec(&["exec", "web", "--", "sh", "-c", "echo ok"], None);
        assert!(
            ok.status.success(),
            "websockets={websockets}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
        let failed = exec(
            &["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"],
            None,
        );
        assert_eq!(failed.status.code(), Some(3), "websockets={websockets}");
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains("oops") && stderr.contains("command terminated with exit code 3"),
            "{stderr}"
        );
        let echoed = exec(
            &["exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z"],
            Some("piped input\n"),
        );
        assert_eq!(
            String::from_utf8_lossy(&echoed.stdout),
            "PIPED INPUT\n",
            "websockets={websockets}"
        );
    }

    // kubectl port-forward, tunnelled in a WebSocket and over plain SPDY.
    for (websockets, local) in [("true", "18480"), ("false", "18481")] {
        let mut forward = kubectl
            .command()
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .args(["port-forward", "pod/web", &format!("{local}:8080")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl port-forward");
        let mut body = String::new();
        for _ in 0..50 {
            body = http_get(&format!("http://127.0.0.1:{local}/"));
            if !body.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = forward.kill();
        let _ = forward.wait();
        assert_eq!(
            body.trim(),
            "hello-from-web",
            "port-forward, websockets={websockets}"
        );
    }

    // A Deployment's pod that has just become Ready ...
    kubectl.ok(&[
        "create",
        "deployment",
        "keeper",
        &format!("--image={BUSYBOX}"),
        "--",
        "sleep",
        "3600",
    ]);
    kubectl.ok(&["rollout", "status", "deployment/keeper", "--timeout=90s"]);
    let keeper = || {
        kubectl.ok(&[
            "get",
            "pods",
            "-l",
            "app=keeper",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID} {.status.startTime} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
    };
    let keeper_before = keeper();
    assert_eq!(keeper_before.lines().count(), 1, "{keeper_before}");

    // A kelp restart keeps the running pod: same container, IP, restart count.
    let before = jsonpath(
        &kubectl,
        "web",
        "{.status.containerStatuses[0].containerID} {.status.podIP} {.status.containerStatuses[0].restartCount}",
    );
    server.stop();
    assert_eq!(
        http_get(&format!("http://{ip}:8080/")).trim(),
        "hello-from-web",
        "pods run on while kelp is down"
    );
    server.spawn();
    server.wait_node_ready();
    // Give the pod worker a sync round after the restart.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = jsonpath(
        &kubectl,
        "web",
        "{.status.containerStatuses[0].containerID} {.status.podIP} {.status.containerStatuses[0].restartCount}",
    );
    assert_eq!(before, after);
    assert_eq!(jsonpath(&kubectl, "web", "{.status.phase}"), "Running");
    // ... is still the only one 30 s after the restart: no controller acted
    // on a half-synced view (the same name, container and start time).
    std::thread::sleep(std::time::Duration::from_secs(30));
    assert_eq!(keeper(), keeper_before, "the Deployment's pod was replaced");

    // Graceful deletion: the pod is Terminating, then gone, and so are its containers.
    kubectl.ok(&["delete", "pod", "web", "--wait=false"]);
    kubectl.wait_for(&["get", "pods", "-o", "name"], 60, |out| {
        !out.contains("pod/web\n")
    });
    assert_eq!(
        http_get(&format!("http://{ip}:8080/")),
        "",
        "web's container is gone"
    );
}

/// Debian's docker-registry on loopback, holding the test image as
/// `kelp/busybox:1`; stopped on drop.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = common::write(
            dir.path(),
            "config.yml",
            &format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        );
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = LocalRegistry {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if !http_get(&format!("http://127.0.0.1:{port}/v2/")).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry.push_test_image();
        registry
    }

    /// Pushes the OCI layout's blobs and manifest with the registry HTTP API.
    fn push_test_image(&self) {
        let layout = self._dir.path().join("layout");
        std::fs::create_dir_all(&layout).expect("layout dir");
        let status = Command::new("tar")
            .arg("-xf")
            .arg(common::test_image_tarball())
            .arg("-C")
            .arg(&layout)
            .status()
            .expect("tar");
        assert!(status.success());
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
                .expect("json");
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        let blob = |digest: &str| {
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).expect("manifest"))
                .expect("json");
        let mut digests = vec![
            manifest["config"]["digest"]
                .as_str()
                .expect("config")
                .to_string(),
        ];
        digests.extend(
            manifest["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .map(|l| l["digest"].as_str().expect("layer").to_string()),
        );
        let base = format!("http://127.0.0.1:{}/v2/kelp/busybox", self.port);
        for digest in digests {
            // Start an upload, then finish it in one PUT carrying the blob.
            let started = Command::new("curl")
                .args(["-sf", "-D", "-", "-o", "/dev/null", "-X", "POST"])
                .arg(format!("{base}/blobs/uploads/"))
                .output()
                .expect("curl");
            let headers = String::from_utf8_lossy(&started.stdout).into_owned();
            let location = headers
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Location: ")
                        .or_else(|| l.strip_prefix("location: "))
                })
                .expect("upload location")
                .trim()
                .to_string();
            let separator = if location.contains('?') { '&' } else { '?' };
            let url = format!("{location}{separator}digest={digest}");
            curl_put("application/octet-stream", &blob(&digest), &url);
        }
        curl_put(
            "application/vnd.oci.image.manifest.v1+json",
            &blob(&manifest_digest),
            &format!("{base}/manifests/1"),
        );
    }
}

/// PUTs a file's contents to a URL, asserting success.
fn curl_put(content_type: &str, file: &std::path::Path, url: &str) {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .expect("curl");
    assert!(out.status.success(), "PUT {url}");
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn images_pull_through_registry_mirrors_and_failing_containers_back_off_and_probes_act() {
    let registry = LocalRegistry::start();
    let config = tempfile::tempdir().expect("tempdir");
    let registries = common::write(
        config.path(),
        "registries.yaml",
        &format!(
            "mirrors:\n  mirror.test:\n    endpoint: [\"http://127.0.0.1:{}\"]\n",
            registry.port
        ),
    );
    let server = Server::start_node(&[
        "--private-registry",
        registries.to_str().expect("path"),
        "--container-log-max-size",
        "2Ki",
        "--container-log-max-files",
        "2",
    ]);
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");

    // A pull (imagePullPolicy Always) that registries.yaml sends to the local registry.
    kubectl.apply(&dir, "pulled.yaml", &pod("pulled", "  containers:\n  - name: c\n    image: mirror.test/kelp/busybox:1\n    imagePullPolicy: Always\n    command: [sleep, '3600']\n"));
    wait_ready(&kubectl, "pulled");
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pulled",
    ]);
    assert!(
        events.contains("Successfully pulled image \"mirror.test/kelp/busybox:1\""),
        "{events}"
    );
    assert!(
        jsonpath(&kubectl, "pulled", "{.status.containerStatuses[0].imageID}").contains("sha256:")
    );
    // A missing image fails to pull and backs off.
    kubectl.apply(
        &dir,
        "missing.yaml",
        &pod(
            "missing",
            "  containers:\n  - name: c\n    image: mirror.test/kelp/nothing:1\n",
        ),
    );
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "missing",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        60,
        |r| r == "ErrImagePull" || r == "ImagePullBackOff",
    );

    // `kelp images import` loads a docker-archive tarball; the crashing pod runs it.
    let import = Command::new(common::kelp_bin())
        .args(["images", "import", "--data-dir"])
        .arg(server.path("data"))
        .arg(common::test_images_dir().join("busybox-docker.tar"))
        .output()
        .expect("kelp images import");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&import.stdout),
        "imported kelp.test/busybox-docker:1\n"
    );
    kubectl.apply(&dir, "crash.yaml", &pod("crash",
        "  containers:\n  - name: crash\n    image: kelp.test/busybox-docker:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'echo crashed-at-$(date +%s); exit 3']\n"
    ));
    kubectl.apply(&dir, "live.yaml", &pod("live", &format!(
        "  containers:\n  - name: live\n    image: {BUSYBOX}\n    command: [sh, -c, 'touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600']\n    livenessProbe:\n      exec:\n        command: [cat, /tmp/healthy]\n      periodSeconds: 1\n      failureThreshold: 2\n"
    )));
    kubectl.apply(&dir, "ready.yaml", &pod("ready", &format!(
        "  containers:\n  - name: ready\n    image: {BUSYBOX}\n    command: [sh, -c, 'touch /tmp/ready; sleep 6; rm /tmp/ready; sleep 3600']\n    readinessProbe:\n      exec:\n        command: [cat, /tmp/ready]\n      periodSeconds: 1\n      failureThreshold: 1\n"
    )));

    // A crashing container: restarted, then CrashLoopBackOff, with its last state.
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        60,
        |r| r == "CrashLoopBackOff",
    );
    assert_eq!(
        jsonpath(
            &kubectl,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    let restarts: u32 = jsonpath(
        &kubectl,
        "crash",
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .expect("count");
    assert!(restarts >= 1);
    // Each restart repeats the Started event: one Event, counted.
    let counts = kubectl.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash,reason=Started",
            "-o",
            "jsonpath={.items[*].count}",
        ],
        30,
        |c| c.parse::<u32>().is_ok_and(|n| n >= 2),
    );
    assert!(
        !counts.contains(' '),
        "one Started event, counted: {counts}"
    );
    let table = kubectl.ok(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let previous = kubectl.ok(&["logs", "crash", "--previous"]);
    assert!(previous.starts_with("crashed-at-"), "{previous}");

    // The readiness probe passes, then fails: Ready turns False, no restart.
    wait_ready(&kubectl, "ready");
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        60,
        |s| s == "False",
    );
    assert_eq!(
        jsonpath(
            &kubectl,
            "ready",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    assert_eq!(jsonpath(&kubectl, "ready", "{.status.phase}"), "Running");
    // The kubelet counts every probe by result (`/metrics/probes`, through
    // the API server's node proxy): the failures keep coming.
    let failed = || -> f64 {
        let text = kubectl.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{NODE}/proxy/metrics/probes"),
        ]);
        assert!(
            text.contains("# HELP prober_probe_total [ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result."),
            "{text}"
        );
        text.lines()
            .filter(|l| {
                l.starts_with("prober_probe_total{")
                    && l.contains("pod=\"ready\"")
                    && l.contains("probe_type=\"Readiness\"")
                    && l.contains("result=\"failed\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = failed();
    assert!(before >= 1.0, "{before}");
    let kubelet = kubectl.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/metrics"),
    ]);
    assert!(
        kubelet.contains(&format!("kubelet_node_name{{node=\"{NODE}\"}} 1")),
        "{kubelet}"
    );
    let families = common::metrics::parse(&kubelet);
    let running_pods = common::metrics::sum(
        &families,
        "kubelet_running_pods",
        "kubelet_running_pods",
        &[],
    );
    assert!(running_pods >= 3.0, "{kubelet}");
    // Every CRI call is counted by operation; pods' start times are observed.
    for (sample, labels) in [
        (
            "kubelet_runtime_operations_total",
            &[("operation_type", "run_podsandbox")][..],
        ),
        (
            "kubelet_runtime_operations_duration_seconds_count",
            &[("operation_type", "create_container")][..],
        ),
        ("kubelet_pod_start_duration_seconds_count", &[][..]),
    ] {
        let family = sample.trim_end_matches("_count").trim_end_matches("_total");
        assert!(
            common::metrics::sum(&families, family, sample, labels) >= 1.0,
            "{sample} in {kubelet}"
        );
    }
    for page in ["metrics/probes", "metrics/resource", "metrics/cadvisor"] {
        common::metrics::parse(&kubectl.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{NODE}/proxy/{page}"),
        ]));
    }
    // The node log query answers with kelp's own lines (this server logs
    // to a file), filtered as asked; bad parameters get upstream's errors.
    let since = (chrono::Utc::now() - chrono::Duration::minutes(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let logs = kubectl.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/logs/?query=kelp&sinceTime={since}&pattern=server%20is%20ready"),
    ]);
    assert!(
        logs.lines().count() == 1 && logs.contains("kelp server is ready"),
        "{logs}"
    );
    let tail = kubectl.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/logs/?query=kelp&tailLines=3"),
    ]);
    assert_eq!(tail.lines().count(), 3, "{tail}");
    let refused = kubectl.fails(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE}/proxy/logs/?query=kelp&tailLines=100001"),
    ]);
    // kubectl shows a plain-text refusal by its code only, as upstream's.
    assert!(refused.contains("(BadRequest)"), "{refused}");
    let listing = kubectl.ok(&["get", "--raw", &format!("/api/v1/nodes/{NODE}/proxy/logs/")]);
    assert!(
        listing.starts_with("<pre>") && listing.contains("pods/"),
        "{listing}"
    );
    // cAdvisor's container series, once the stats collector has read them.
    kubectl.wait_for(
        &["get", "--raw", &format!("/api/v1/nodes/{NODE}/proxy/metrics/cadvisor")],
        60,
        |text| {
            text.contains("# TYPE container_cpu_usage_seconds_total counter")
                && text.lines().any(|l| {
                    l.starts_with("container_memory_working_set_bytes{container=\"ready\",namespace=\"default\",pod=\"ready\"} ")
                })
                // The pod's traffic from its network namespace, its layer from CRI.
                && text.lines().any(|l| {
                    l.starts_with("container_network_receive_bytes_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"ready\"} ")
                })
                && text.lines().any(|l| {
                    l.starts_with("container_fs_usage_bytes{container=\"ready\",namespace=\"default\",pod=\"ready\"} ")
                })
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(failed() > before);

    // The liveness probe fails: the container is restarted.
    kubectl.wait_for(
        &[
            "get",
            "pod",
            "live",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        60,
        |c| c.parse::<u32>().unwrap_or(0) >= 1,
    );
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(events.contains("failed liveness probe"), "{events}");

    // Settings from the spec reach the container: user, read-only root,
    // memory limit, env from a ConfigMap and the downward API, a downward
    // API volume.
    kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello-from-cm",
    ]);
    kubectl.apply(&dir, "settings.yaml", &pod("settings", &format!(
        "  securityContext:\n    runAsUser: 1000\n    runAsGroup: 3000\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n    securityContext:\n      readOnlyRootFilesystem: true\n    resources:\n      limits:\n        memory: 64Mi\n    env:\n    - name: GREETING\n      valueFrom:\n        configMapKeyRef: {{name: settings, key: greeting}}\n    - name: MY_POD\n      valueFrom:\n        fieldRef: {{fieldPath: metadata.name}}\n    - name: COMBINED\n      value: $(MY_POD)-$(GREETING)\n    volumeMounts:\n    - {{name: info, mountPath: /etc/podinfo}}\n  volumes:\n  - name: info\n    downwardAPI:\n      items:\n      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}\n      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}\n"
    )));
    wait_ready(&kubectl, "settings");
    let run = |script: &str| kubectl.ok(&["exec", "settings", "--", "sh", "-c", script]);
    assert_eq!(run("id -u; id -g").trim(), "1000\n3000");
    assert_eq!(
        run("touch /newfile 2>/dev/null && echo writable || echo read-only").trim(),
        "read-only"
    );
    let limit = run(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    );
    assert_eq!(limit.trim(), "67108864");
    assert_eq!(run("echo $COMBINED").trim(), "settings-hello-from-cm");
    assert_eq!(run("cat /etc/podinfo/name"), "settings");

    // Logs rotate by size (--container-log-max-size 2Ki, max-files 2) and
    // kubectl logs still reads the live file.
    kubectl.apply(&dir, "chatty.yaml", &pod("chatty", &format!(
        "  containers:\n  - name: c\n    image: {BUSYBOX}\n    command: [sh, -c, 'i=0; while true; do echo \"line $i ........................................\"; i=$((i+1)); sleep 0.05; done']\n"
    )));
    wait_ready(&kubectl, "chatty");
    let uid = jsonpath(&kubectl, "chatty", "{.metadata.uid}");
    let log_dir = format!("/var/log/pods/default_chatty_{uid}/c");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let mut files = Vec::new();
    while std::time::Instant::now() < deadline {
        files = std::fs::read_dir(&log_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if files.iter().any(|f| f.starts_with("0.log.")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        files.iter().any(|f| f.starts_with("0.log.")),
        "rotated: {files:?}"
    );
    assert!(files.len() <= 2, "at most max-files: {files:?}");
    let tail = kubectl.ok(&["logs", "chatty", "--tail", "1"]);
    assert!(tail.starts_with("line "), "{tail}");
}

fn netns_list() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns")
            .stdout,
    )
    .into_owned()
}

#[test]
fn pods_deleted_while_the_node_was_down_are_torn_down_and_killall_leaves_nothing() {
    let netns_before = netns_list();
    let data_dir;
    {
        let mut server = Server::start_node(&[]);
        data_dir = server.path("data");
        let kubectl = server.kubectl("kubectl");
        let dir = server.path("manifests");
        for name in ["keep", "gone"] {
            kubectl.apply(&dir, &format!("{name}.yaml"), &pod(name, &format!(
                "  containers:\n  - name: c\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n"
            )));
        }
        // hostPort (DNAT from the node) and hostNetwork (the node's address).
        kubectl.apply(&dir, "ports.yaml", &pod("ports", &format!(
            "  containers:\n  - name: web\n    image: {BUSYBOX}\n    command: [sh, -c, 'echo via-hostport > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']\n    ports:\n    - containerPort: 8080\n      hostPort: 18090\n"
        )));
        kubectl.apply(&dir, "hostnet.yaml", &pod("hostnet", &format!(
            "  hostNetwork: true\n  containers:\n  - name: web\n    image: {BUSYBOX}\n    command: [sh, -c, 'echo via-host-network > /tmp/index.html; exec httpd -f -p 18091 -h /tmp']\n"
        )));
        wait_ready(&kubectl, "keep");
        wait_ready(&kubectl, "gone");
        wait_ready(&kubectl, "ports");
        wait_ready(&kubectl, "hostnet");
        assert_eq!(http_get("http://127.0.0.1:18090/").trim(), "via-hostport");
        assert_eq!(
            jsonpath(&kubectl, "hostnet", "{.status.podIP}"),
            "127.0.0.1"
        );
        assert_eq!(
            http_get("http://127.0.0.1:18091/").trim(),
            "via-host-network"
        );
        let gone_ip = jsonpath(&kubectl, "gone", "{.status.podIP}");

        // A preStop hook runs before the container is stopped; the pod is
        // Terminating meanwhile, then gone.
        let hook_dir = server.path("hook");
        std::fs::create_dir_all(&hook_dir).expect("hook dir");
        kubectl.apply(&dir, "hooked.yaml", &pod("hooked", &format!(
            "  containers:\n  - name: c\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n    lifecycle:\n      preStop:\n        exec:\n          command: [sh, -c, 'echo ran-before-stop > /out/prestop']\n    volumeMounts:\n    - {{name: out, mountPath: /out}}\n  volumes:\n  - name: out\n    hostPath: {{path: {}}}\n",
            hook_dir.display()
        )));
        wait_ready(&kubectl, "hooked");
        kubectl.ok(&["delete", "pod", "hooked", "--wait=false"]);
        let terminating = kubectl.ok(&[
            "get",
            "pod",
            "hooked",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        assert!(
            !terminating.is_empty(),
            "graceful deletion marks the pod first"
        );
        kubectl.wait_for(&["get", "pods", "-o", "name"], 60, |out| {
            !out.contains("pod/hooked\n")
        });
        assert_eq!(
            std::fs::read_to_string(hook_dir.join("prestop"))
                .expect("preStop output")
                .trim(),
            "ran-before-stop"
        );

        // Delete `gone` while no node runs (the API alone, force: grace 0).
        server.stop();
        let node_args = server.args.clone();
        server.args.clear();
        server.node = false;
        server.spawn();
        kubectl.ok(&["delete", "pod", "gone", "--grace-period=0", "--force"]);
        server.stop();
        server.args = node_args;
        server.node = true;
        server.spawn();
        server.wait_node_ready();
        let out = Command::new("ping")
            .args(["-c", "1", "-W", "1", &gone_ip])
            .output()
            .expect("ping");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut alive = out.status.success();
        while alive && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(500));
            alive = Command::new("ping")
                .args(["-c", "1", "-W", "1", &gone_ip])
                .output()
                .expect("ping")
                .status
                .success();
        }
        assert!(
            !alive,
            "the sandbox of the pod deleted while the node was down is gone"
        );
        assert_eq!(jsonpath(&kubectl, "keep", "{.status.phase}"), "Running");
    }
    // Dropping the server ran kelp-killall.sh.
    let shims = Command::new("pgrep")
        .args([
            "-f",
            "containerd-shim-runc-v2 .*-address /run/kelp/containerd",
        ])
        .output()
        .expect("pgrep");
    assert!(
        shims.stdout.is_empty(),
        "shims left: {}",
        String::from_utf8_lossy(&shims.stdout)
    );
    let kelp = Command::new("pgrep")
        .args(["-x", "kelp"])
        .output()
        .expect("pgrep");
    assert!(kelp.stdout.is_empty(), "kelp left running");
    assert_eq!(netns_list(), netns_before, "pod network namespaces left");
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-br", "link"])
            .output()
            .expect("ip link")
            .stdout,
    )
    .into_owned();
    assert!(!links.contains("cni0"), "bridge left: {links}");
    let nat = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .expect("iptables")
            .stdout,
    )
    .into_owned();
    assert!(!nat.contains("KELP"), "chains left: {nat}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !mounts.contains(&*data_dir.to_string_lossy()),
        "mounts left under the data dir"
    );
    assert!(!mounts.contains("/run/kelp"), "mounts left under /run/kelp");
}
