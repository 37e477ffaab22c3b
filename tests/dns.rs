//! End-to-end tests of the built-in cluster DNS (root; a real node): names
//! of Services, headless Services' pods and the zone's negative answers,
//! from a pod (busybox nslookup at the bridge address, with and without the
//! search path) and from the host (UDP and TCP); other names forwarded to
//! the node's resolv.conf upstream (a fake one on loopback); the kube-dns
//! Service and this node's EndpointSlice; malformed packets survive.
//!
//! Run as `flock /tmp/kelp-node.lock cargo test --test dns`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{BUSYBOX, NODE, Server, dns_query, http_get};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The fake upstream resolver's address (loopback only).
const UPSTREAM: &str = "127.0.0.153";
/// The one name it knows, and its answer (documentation range: never contacted).
const OUTSIDE_NAME: &str = "outside.example.";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

/// A tiny upstream DNS on 127.0.0.153:53/udp: `outside.example.` A, NXDOMAIN
/// for anything else. Stops when dropped.
struct FakeUpstream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start() -> Self {
        let socket = UdpSocket::bind((UPSTREAM, 53)).expect("bind the fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(question) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let mut answer = Message::response(question.metadata.id, OpCode::Query);
                answer.metadata.recursion_desired = question.metadata.recursion_desired;
                answer.metadata.recursion_available = true;
                for query in &question.queries {
                    answer.add_query(query.clone());
                    let known = query.name().to_ascii().eq_ignore_ascii_case(OUTSIDE_NAME);
                    if known && query.query_type() == RecordType::A {
                        answer.answers.push(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::A(A(OUTSIDE_IP)),
                        ));
                    } else if !known {
                        answer.metadata.response_code = ResponseCode::NXDomain;
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn addresses(message: &Message) -> Vec<String> {
    message
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect()
}

/// Asks until the answer satisfies `done` (the DNS index follows the API
/// within milliseconds, but the test must not race it).
fn query_until(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    tcp: bool,
    done: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = dns_query(server, name, qtype, tcp);
        match answer {
            Some(a) if done(&a) => return a,
            other if std::time::Instant::now() > deadline => {
                panic!("{name} {qtype}: no satisfying answer; last: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `nslookup` in a pod (busybox), stdout and stderr together.
fn nslookup(kubectl: &common::Kubectl, pod: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", pod, "--", "nslookup"];
    all.extend(args);
    let out = kubectl.run(&all);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cluster_dns_answers_pods_and_the_host_and_forwards_the_rest() {
    let _upstream = FakeUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {UPSTREAM}\n")).expect("resolv.conf");
    let server = Server::start_node(&["--resolv-conf", resolv_conf.to_str().expect("path")]);
    let kubectl = server.kubectl("kubectl");
    let manifests = server.path("manifests");

    // The node's DNS address: its bridge's, the first of its pod CIDR.
    let cidr = kubectl.ok(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"]);
    let base: Ipv4Addr = cidr.split('/').next().expect("cidr").parse().expect("ip");
    let bridge = Ipv4Addr::from(u32::from(base) + 1);
    let dns = SocketAddr::new(IpAddr::V4(bridge), 53);

    // The kube-dns Service (no selector, node-local traffic) and this node's slice.
    let svc = kubectl.wait_for(
        &["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP} {.spec.internalTrafficPolicy} {.spec.selector} {.spec.ports[*].name}"],
        30,
        |out| !out.is_empty(),
    );
    assert_eq!(svc.trim(), "10.43.0.10 Local  dns dns-tcp metrics");
    let slice = kubectl.wait_for(
        &["get", "endpointslices", "-n", "kube-system", "-l", "kubernetes.io/service-name=kube-dns", "-o", "jsonpath={.items[*].endpoints[*].addresses[0]} {.items[*].endpoints[*].nodeName} {.items[*].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}"],
        30,
        |out| !out.trim().is_empty(),
    );
    assert_eq!(slice.trim(), format!("{bridge} {NODE} dns.kelp.io"));
    // The endpoints controller leaves the selector-less Service alone.
    assert!(
        kubectl
            .run(&["get", "endpoints", "-n", "kube-system", "kube-dns"])
            .stdout
            .is_empty()
    );

    // A Service with a Deployment behind it, and a StatefulSet's headless Service.
    kubectl.apply(
        &manifests,
        "web.yaml",
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: my-svc}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: my-svc}}}}
  template:
    metadata: {{labels: {{app: my-svc}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: web, image: "kelp.test/nginx:1.14.2", ports: [{{name: http, containerPort: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: my-svc}}
spec:
  selector: {{app: my-svc}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: web, port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: nginx
  replicas: 1
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: nginx, image: "kelp.test/nginx:1.14.2", ports: [{{name: web, containerPort: 80}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: dns-client}}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: None
  dnsConfig:
    nameservers: ["{bridge}"]
    searches: [default.svc.cluster.local, svc.cluster.local, cluster.local]
    options: [{{name: ndots, value: "5"}}]
  containers:
  - {{name: c, image: "{BUSYBOX}", command: [sleep, "3600"]}}
"#
        ),
    );
    for target in ["deployment/my-svc", "statefulset/web"] {
        kubectl.ok(&["rollout", "status", target, "--timeout=120s"]);
    }
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/dns-client",
        "--timeout=90s",
    ]);
    let cluster_ip = kubectl.ok(&["get", "svc", "my-svc", "-o", "jsonpath={.spec.clusterIP}"]);
    let web0_ip = kubectl.ok(&["get", "pod", "web-0", "-o", "jsonpath={.status.podIP}"]);

    // From the host, over UDP and TCP.
    for tcp in [false, true] {
        let answer = query_until(
            dns,
            "my-svc.default.svc.cluster.local.",
            RecordType::A,
            tcp,
            |m| !m.answers.is_empty(),
        );
        assert_eq!(addresses(&answer), [cluster_ip.as_str()], "tcp={tcp}");
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.answers[0].ttl, 5);
    }
    let answer = query_until(
        dns,
        "web-0.nginx.default.svc.cluster.local.",
        RecordType::A,
        false,
        |m| !m.answers.is_empty(),
    );
    assert_eq!(addresses(&answer), [web0_ip.as_str()]);
    let srv = dns_query(
        dns,
        "_http._tcp.my-svc.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .expect("srv answer");
    assert_eq!(
        srv.answers[0].data.to_string(),
        "0 100 80 my-svc.default.svc.cluster.local."
    );
    let reverse: Vec<&str> = cluster_ip.split('.').rev().collect();
    let ptr = dns_query(
        dns,
        &format!("{}.in-addr.arpa.", reverse.join(".")),
        RecordType::PTR,
        false,
    )
    .expect("ptr answer");
    assert_eq!(
        ptr.answers[0].data.to_string(),
        "my-svc.default.svc.cluster.local."
    );
    // Unknown names in the zone: NXDOMAIN with the SOA; known name, other type: empty NOERROR.
    let nx = dns_query(dns, "nope.default.svc.cluster.local.", RecordType::A, false).expect("nx");
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = dns_query(
        dns,
        "my-svc.default.svc.cluster.local.",
        RecordType::AAAA,
        false,
    )
    .expect("nodata");
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    // CoreDNS's metrics on 9153 of the DNS address count what was asked.
    let families = common::metrics::parse(&http_get(&format!("http://{bridge}:9153/metrics")));
    let count = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        common::metrics::sum(&families, family, sample, labels)
    };
    assert!(
        count(
            "coredns_dns_requests",
            "coredns_dns_requests_total",
            &[("proto", "tcp"), ("type", "A"), ("zone", ".")]
        ) >= 1.0
    );
    assert!(
        count(
            "coredns_dns_requests",
            "coredns_dns_requests_total",
            &[("type", "SRV")]
        ) >= 1.0
    );
    assert!(
        count(
            "coredns_dns_responses",
            "coredns_dns_responses_total",
            &[("rcode", "NXDOMAIN"), ("plugin", "kubernetes")]
        ) >= 1.0,
        "{families:?}"
    );
    assert!(
        count(
            "coredns_dns_request_duration_seconds",
            "coredns_dns_request_duration_seconds_count",
            &[("type", "PTR")]
        ) >= 1.0
    );
    // Outside names go to the upstream in --resolv-conf.
    let outside = dns_query(dns, OUTSIDE_NAME, RecordType::A, false).expect("forwarded");
    assert_eq!(addresses(&outside), [OUTSIDE_IP.to_string()]);
    let missing = dns_query(dns, "missing.example.", RecordType::A, false).expect("forwarded nx");
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);

    // Malformed packets get no crash: garbage over UDP and TCP, then a real question.
    let garbage = UdpSocket::bind("0.0.0.0:0").expect("udp");
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xc0\x0c",
        &[0x41; 600],
    ] {
        let _ = garbage.send_to(junk, dns);
    }
    if let Ok(mut stream) = std::net::TcpStream::connect(dns) {
        use std::io::Write;
        let _ =
            stream.write_all(b"\x00\x10\x12\x34\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    }
    let again = dns_query(
        dns,
        "my-svc.default.svc.cluster.local.",
        RecordType::A,
        false,
    )
    .expect("answers after garbage");
    assert_eq!(addresses(&again), [cluster_ip.as_str()]);

    // From a pod, at the bridge address: full names, the search path, NXDOMAIN, forwarding.
    let out = nslookup(
        &kubectl,
        "dns-client",
        &["my-svc.default.svc.cluster.local", &bridge.to_string()],
    );
    assert!(out.contains(&format!("Address: {cluster_ip}")), "{out}");
    let out = nslookup(&kubectl, "dns-client", &["my-svc"]);
    assert!(
        out.contains(&format!("Address: {cluster_ip}")),
        "search path: {out}"
    );
    let out = nslookup(
        &kubectl,
        "dns-client",
        &["web-0.nginx.default.svc.cluster.local", &bridge.to_string()],
    );
    assert!(out.contains(&format!("Address: {web0_ip}")), "{out}");
    let out = nslookup(
        &kubectl,
        "dns-client",
        &["nope.default.svc.cluster.local.", &bridge.to_string()],
    );
    assert!(out.contains("NXDOMAIN"), "{out}");
    let out = nslookup(&kubectl, "dns-client", &[OUTSIDE_NAME, &bridge.to_string()]);
    assert!(out.contains(&format!("Address: {OUTSIDE_IP}")), "{out}");

    // A ClusterFirst pod is pointed at the kube-dns Service with the namespace's search path.
    let pod = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        "app=my-svc",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let resolv = kubectl.ok(&["exec", &pod, "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    // Deleted, the kube-dns Service comes back.
    kubectl.ok(&["delete", "svc", "-n", "kube-system", "kube-dns"]);
    kubectl.wait_for(
        &[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        60,
        |out| out == "10.43.0.10",
    );
}
