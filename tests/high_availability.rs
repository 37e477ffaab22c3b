//! High availability: two kelp servers on one shared datastore (a real
//! etcd, then a real PostgreSQL, on loopback). The second joins with the
//! first's token and gets the cluster's credentials from the datastore;
//! the controllers run on one of them at a time (Lease elections); after a
//! `kill -9` of the leader the survivor takes over within the lease
//! period, keeps reconciling what was created before, and no write the
//! dead server acknowledged is lost.

mod common;

use std::time::{Duration, Instant};

use common::Server;

/// The join token both servers are given (a bootstrap token's form).
const TOKEN: &str = "kelpha.0123456789abcdef";

#[test]
fn two_servers_on_one_etcd() {
    let etcd = common::datastores::Etcd::start(1);
    two_servers_on(&etcd.endpoint());
}

#[test]
fn two_servers_on_one_postgres() {
    let postgres = common::datastores::Postgres::start();
    two_servers_on(&postgres.url("kelp"));
}

/// Whether `server` logged that it leads `lease`.
fn leads(server: &Server, lease: &str) -> bool {
    server
        .log()
        .contains(&format!("\"became the leader\" lease=\"{lease}\""))
}

fn two_servers_on(endpoint: &str) {
    let first = Server::start_with(&["--datastore-endpoint", endpoint, "--token", TOKEN]);
    let joined_url = format!("https://127.0.0.1:{}", first.port);
    let second = Server::start_with(&[
        "--datastore-endpoint",
        endpoint,
        "--token",
        TOKEN,
        "--server",
        &joined_url,
    ]);
    let mut servers = [first, second];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exercise(&mut servers);
    }));
    if let Err(panic) = outcome {
        for (i, server) in servers.iter().enumerate() {
            common::print_log_tail(&format!("server {i}"), &server.log());
        }
        std::panic::resume_unwind(panic);
    }
}

fn exercise(servers: &mut [Server; 2]) {
    // One cluster: the joined server serves with the same CA, and what one
    // writes the other reads.
    assert_eq!(servers[0].ca_pem(), servers[1].ca_pem());
    let kubectl: Vec<_> = servers.iter().map(|s| s.kubectl("kubectl")).collect();
    kubectl[1].ok(&[
        "create",
        "deployment",
        "web",
        "--image=kelp.test/busybox:1",
        "--replicas=2",
    ]);
    kubectl[0].wait_for(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.replicas}",
        ],
        30,
        |out| out == "2",
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
        "failover: the survivor leads the controllers {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let survivor_kubectl = &kubectl[survivor];
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
    // What was created before is still reconciled: a scale takes effect.
    survivor_kubectl.ok(&["scale", "deployment", "web", "--replicas=3"]);
    survivor_kubectl.wait_for(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.replicas}",
        ],
        30,
        |out| out == "3",
    );
}
