//! End-to-end test of the ingress proxy (root: real containerd + runc and
//! the service proxy's iptables): an Ingress of the default class with two
//! hosts and TLS answers curl `--resolve` on loopback with the right
//! backend and certificate, reports the node as its address, and follows
//! a backend change.

mod common;

use common::{Server, busybox_pod};

fn backend(name: &str) -> String {
    format!(
        "{}---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
",
        busybox_pod(
            name,
            &format!("app: {name}"),
            &format!("mkdir -p /www; echo {name} > /www/index.html; exec httpd -f -p 8080 -h /www"),
            "",
        )
    )
}

fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn an_ingress_routes_two_hosts_over_http_and_tls() {
    let (server, http, https) = Server::start_node_with_ingress();
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    assert!(
        kubectl
            .ok(&["get", "ingressclass"])
            .contains("kelp.io/ingress")
    );
    kubectl.apply(
        &dir,
        "backends.yaml",
        &[backend("blue"), backend("green")].join("---\n"),
    );
    for pod in ["blue", "green"] {
        kubectl.ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=90s",
        ]);
    }

    // A certificate for both hosts, from a CA of the test's own.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingress test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![
        "blue.example.test".into(),
        "green.example.test".into(),
    ])
    .expect("params");
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).expect("issuer");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let ca_file = common::write(&dir, "ca.pem", &ca.pem());
    let cert_file = common::write(&dir, "tls.crt", &cert.pem());
    let key_file = common::write(&dir, "tls.key", &key.serialize_pem());
    kubectl.ok(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        "--cert",
        cert_file.to_str().expect("path"),
        "--key",
        key_file.to_str().expect("path"),
    ]);
    let ingress = |blue_backend: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  tls:
  - hosts: [blue.example.test, green.example.test]
    secretName: web-tls
  rules:
  - host: blue.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {blue_backend}, port: {{name: http}}}}}}
  - host: green.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: green, port: {{number: 80}}}}}}
"
        )
    };
    kubectl.apply(&dir, "ingress.yaml", &ingress("blue"));
    let resolve = |host: &str, port: u16| format!("{host}:{port}:127.0.0.1");
    let get = |host: &str| {
        curl(&[
            "--resolve",
            &resolve(host, http),
            &format!("http://{host}:{http}/"),
        ])
    };
    let answered = std::time::Instant::now();
    while get("blue.example.test").0 != "blue" {
        assert!(
            answered.elapsed().as_secs() < 30,
            "blue never answered: {:?}",
            get("blue.example.test")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(get("green.example.test").0, "green");
    assert_eq!(get("nobody.example.test").0, "404 page not found");

    // HTTPS: the Secret's certificate for each name, verified against the CA.
    for host in ["blue.example.test", "green.example.test"] {
        let (body, err) = curl(&[
            "--cacert",
            ca_file.to_str().expect("path"),
            "--resolve",
            &resolve(host, https),
            &format!("https://{host}:{https}/"),
        ]);
        assert_eq!(body, host.split('.').next().unwrap_or_default(), "{err}");
    }
    // A name no Ingress covers gets the self-signed default certificate.
    let (_, err) = curl(&[
        "--cacert",
        ca_file.to_str().expect("path"),
        "--resolve",
        &resolve("other.example.test", https),
        &format!("https://other.example.test:{https}/"),
    ]);
    assert!(err.contains("certificate"), "{err}");

    // The node is the Ingress's address, and kubectl shows it all.
    kubectl.wait_for(
        &[
            "get",
            "ingress",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        30,
        |ip| ip == "127.0.0.1",
    );
    let listed = kubectl.ok(&["get", "ingress", "web"]);
    assert!(
        listed.contains("kelp")
            && listed.contains("blue.example.test,green.example.test")
            && listed.contains("127.0.0.1")
            && listed.contains("80, 443"),
        "{listed}"
    );

    // A backend change takes effect without restarting anything.
    kubectl.apply(&dir, "ingress.yaml", &ingress("green"));
    let changed = std::time::Instant::now();
    while get("blue.example.test").0 != "green" {
        assert!(
            changed.elapsed().as_secs() < 10,
            "the change did not reach the proxy"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("backend change served after {:?}", changed.elapsed());
}
