//! High availability: two kelp servers on one shared datastore (a real
//! etcd, then a real PostgreSQL, on loopback) and an agent in a network
//! namespace of its own. The second server joins with the first's token
//! and gets the cluster's credentials from the datastore; the controllers
//! run on one server at a time (Lease elections); the agent reaches the
//! servers through its load balancer. After a `kill -9` of the leader the
//! survivor takes over within the lease period and keeps reconciling and
//! serving what was created before, the agent goes on through it, and no
//! write the dead server acknowledged is lost; the agent restarted then
//! comes back through the survivor it remembered. Secrets are encrypted at
//! rest: the key is rotated only once the survivor is alone, and the dead
//! server started again takes the new key from the datastore. On etcd, what
//! the servers left reads as a kube-apiserver's data.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::join::{Agent, JoinNetwork, SERVER_IP, SERVER_LINK, must, wait_ready};

/// The join token the servers and the agent are given (a bootstrap token's form).
const TOKEN: &str = "kelpha.0123456789abcdef";
/// The second server's address, beside the first's on the test link.
const SECOND_IP: &str = "10.99.7.200";
/// The agent's node name.
const AGENT: &str = "ha-agent";

#[test]
fn two_servers_on_one_etcd() {
    let etcd = common::datastores::Etcd::start(1);
    two_servers_on(&etcd.endpoint());
    laid_out_as_upstream(&etcd);
}

/// What the servers left in etcd reads as a kube-apiserver's data does:
/// upstream's keys, and built-in objects in upstream's protobuf envelope.
fn laid_out_as_upstream(etcd: &common::datastores::Etcd) {
    let keys = |prefix: &str| -> Vec<String> {
        etcd.etcdctl_get(prefix, true)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    };
    for key in [
        "/registry/deployments/default/web",
        "/registry/services/specs/default/kubernetes",
        "/registry/services/endpoints/default/kubernetes",
        "/registry/minions/ha-agent",
        "/registry/leases/kube-system/kube-controller-manager",
        "/registry/configmaps/default/acked-0",
        "/registry/namespaces/kube-system",
    ] {
        assert_eq!(keys(key), [key], "{key}");
    }
    let pods = keys("/registry/pods/default/");
    assert!(
        pods.iter()
            .any(|k| k.starts_with("/registry/pods/default/web-")),
        "{pods:?}"
    );
    // kelp's own layout is nowhere.
    assert!(keys("/registry/core/").is_empty());
    assert!(keys("/registry/apps/").is_empty());

    let stored = etcd.etcdctl_get("/registry/deployments/default/web", false);
    let value = &stored[0].1;
    // `k8s\0`, then runtime.Unknown: field 1 typeMeta {apiVersion, kind}.
    let type_meta = [b"\x0a\x07apps/v1".as_slice(), b"\x12\x0aDeployment"].concat();
    assert!(value.starts_with(b"k8s\0\x0a"), "{value:?}");
    assert_eq!(usize::from(value[5]), type_meta.len());
    assert_eq!(&value[6..6 + type_meta.len()], type_meta.as_slice());
    let object = kelp::api::codec::protobuf::decode(value).expect("upstream's protobuf");
    assert_eq!(object["metadata"]["name"], "web");
    assert_eq!(object["spec"]["replicas"], 4);
    assert!(object["metadata"].get("resourceVersion").is_none());
}

#[test]
fn two_servers_on_one_postgres() {
    let postgres = common::datastores::Postgres::start();
    two_servers_on(&postgres.url("kelp"));
}

/// Waits until the `web` Deployment has `n` ready replicas.
fn ready_replicas(kubectl: &common::Kubectl, n: &str) {
    kubectl.wait_for(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        120,
        |out| out == n,
    );
}

/// `leader_election_master_status{name=lease}` as `kubectl` reads it from
/// its server's /metrics.
fn leader_status(kubectl: &common::Kubectl, lease: &str) -> f64 {
    let page = kubectl.ok(&["get", "--raw", "/metrics"]);
    let families = common::metrics::parse(&page);
    common::metrics::sum(
        &families,
        "leader_election_master_status",
        "leader_election_master_status",
        &[("name", lease)],
    )
}

/// Whether `server` logged that it leads `lease`.
fn leads(server: &Server, lease: &str) -> bool {
    server
        .log()
        .contains(&format!("\"became the leader\" lease=\"{lease}\""))
}

fn two_servers_on(endpoint: &str) {
    let _network = JoinNetwork::new(1);
    let _pod_logs = common::PodLogs::record();
    must(&[
        "ip",
        "addr",
        "add",
        &format!("{SECOND_IP}/24"),
        "dev",
        SERVER_LINK,
    ]);
    // Both on one port, each on its own address, as two machines would be.
    let port = common::free_port();
    let args = |ip: &str| {
        vec![
            "--datastore-endpoint".to_string(),
            endpoint.to_string(),
            "--token".into(),
            TOKEN.into(),
            "--bind-address".into(),
            ip.into(),
            "--advertise-address".into(),
            ip.into(),
            "--node-ip".into(),
            ip.into(),
            "--secrets-encryption".into(),
        ]
    };
    fn strs(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }
    let first = Server::start_on(port, &strs(&args(SERVER_IP)));
    let mut second_args = args(SECOND_IP);
    second_args.extend(["--server".into(), format!("https://{SERVER_IP}:{port}")]);
    let second = Server::start_on(port, &strs(&second_args));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::new(dir.path(), 1, AGENT, &first, TOKEN, "host-gw");
    let mut servers = [first, second];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exercise(&mut servers, &mut agent);
    }));
    if let Err(panic) = outcome {
        for (i, server) in servers.iter().enumerate() {
            common::print_log_tail(&format!("server {i}"), &server.log());
        }
        common::print_log_tail("agent", &agent.log());
        std::panic::resume_unwind(panic);
    }
    // On etcd every built-in object the cluster wrote had a protobuf form.
    for server in &servers {
        assert!(
            !server.log().contains("stored as JSON"),
            "an object fell back to JSON:\n{}",
            server.log()
        );
    }
}

fn exercise(servers: &mut [Server; 2], agent: &mut Agent) {
    // One cluster: the joined server serves with the same CA, and what one
    // writes the other reads.
    assert_eq!(servers[0].ca_pem(), servers[1].ca_pem());
    let kubectl: Vec<_> = servers.iter().map(|s| s.kubectl("kubectl")).collect();
    agent.start();
    wait_ready(&kubectl[1], AGENT, agent, 120);
    kubectl[1].ok(&[
        "create",
        "deployment",
        "web",
        "--image=kelp.test/busybox:1",
        "--replicas=2",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    ]);
    ready_replicas(&kubectl[0], "2");
    // The agent learned both servers from the kubernetes Service's endpoints.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !agent.log().contains(&format!("{SECOND_IP}:")) {
        assert!(
            Instant::now() < deadline,
            "the agent did not learn the second server"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Encryption at rest: its key is rotated only with one server running
    // (the other would go on with the old key).
    kubectl[1].ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal",
        "password=kelp-ha-secret",
    ]);
    let refused = common::secrets_encrypt_run(&servers[0], "rotate-keys");
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("2 servers are running"),
        "{refused:?}"
    );
    // One controller-manager and one scheduler in the cluster.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let leading: Vec<usize> = (0..2)
            .filter(|&i| leads(&servers[i], "kube-controller-manager"))
            .collect();
        if leading.len() == 1 {
            break leading[0];
        }
        assert!(
            leading.len() < 2,
            "both servers lead the controller-manager"
        );
        assert!(Instant::now() < deadline, "no server leads the controllers");
        std::thread::sleep(Duration::from_millis(200));
    };
    let survivor = 1 - leader;
    assert_eq!(
        (
            leader_status(&kubectl[leader], "kube-controller-manager"),
            leader_status(&kubectl[survivor], "kube-controller-manager")
        ),
        (1.0, 0.0)
    );
    assert!(
        !leads(&servers[survivor], "kube-scheduler") || !leads(&servers[leader], "kube-scheduler")
    );

    // Writes acknowledged by the leader up to the moment it is killed.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let kubectl = servers[leader].kubectl("kubectl");
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for i in 0..1000 {
                let name = format!("acked-{i}");
                let out = kubectl.run(&["create", "configmap", &name, "--request-timeout=5s"]);
                if !out.status.success() {
                    return;
                }
                acknowledged.lock().expect("acknowledged").push(name);
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    servers[leader].kill9();
    writer.join().expect("writer");
    let acknowledged = acknowledged.lock().expect("acknowledged").clone();
    assert!(!acknowledged.is_empty(), "the leader acknowledged no write");

    // The survivor takes the controllers over within the lease period
    // (15 s without renewal, seen at its next 2 s look).
    while !leads(&servers[survivor], "kube-controller-manager") {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "the survivor did not take the controllers over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "failover: server {survivor} leads the controllers {:.1} s after server {leader} was killed",
        killed.elapsed().as_secs_f64()
    );
    let survivor_kubectl = &kubectl[survivor];
    assert_eq!(
        leader_status(survivor_kubectl, "kube-controller-manager"),
        1.0
    );
    let names = survivor_kubectl.ok(&[
        "get",
        "configmaps",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let present: std::collections::HashSet<&str> = names.split_whitespace().collect();
    for name in &acknowledged {
        assert!(
            present.contains(name.as_str()),
            "acknowledged {name} is lost"
        );
    }
    // What was created before is still reconciled and served: a scale
    // takes effect on the agent, which goes on through the survivor, and
    // a pod answers through it.
    survivor_kubectl.ok(&["scale", "deployment", "web", "--replicas=3"]);
    ready_replicas(survivor_kubectl, "3");
    let page = survivor_kubectl.ok(&[
        "exec",
        "deploy/web",
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:8080/hostname",
    ]);
    assert!(page.starts_with("web-"), "{page}");
    assert!(survivor_kubectl.node_ready_within(AGENT, 60));

    // The agent restarted while the server it was told to join is dead
    // comes back through a server it remembered.
    agent.stop();
    agent.start();
    let deadline = Instant::now() + Duration::from_secs(90);
    while agent.log().matches("kelp agent is running").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted agent did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    survivor_kubectl.ok(&["scale", "deployment", "web", "--replicas=4"]);
    ready_replicas(survivor_kubectl, "4");

    // Alone now (once the dead server's Lease has lapsed), the survivor
    // rotates the key; the dead server started again takes the new key
    // from the datastore and reads the secret re-encrypted under it.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let out = common::secrets_encrypt_run(&servers[survivor], "rotate-keys");
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("servers are running") && Instant::now() < deadline,
            "{err}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    servers[leader].spawn();
    let password = kubectl[leader].ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(password, "a2VscC1oYS1zZWNyZXQ=");
}
