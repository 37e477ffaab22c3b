//! End-to-end security: authorization as upstream's RBAC and node authorizer decide
//! it, driven with the real kubectl against `kelp server --disable-agent`:
//! the admin, a service account with a Role, impersonation, `auth can-i`
//! (and `--list`), escalation checks, and a kubelet's client certificate.

mod common;

use common::{Server, write};

const POD_READER: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: team
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  verbs: ["create", "get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: app-reads-pods
  namespace: team
subjects:
- kind: ServiceAccount
  name: app
  namespace: team
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
"#;

#[test]
fn service_accounts_get_what_their_roles_grant_and_nothing_else() {
    let server = Server::start();
    let admin = server.kubectl("kubectl");

    // The admin (system:masters) may do anything; whoami says who that is.
    assert_eq!(admin.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    let whoami = admin.ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("system:admin") && whoami.contains("system:masters"),
        "{whoami}"
    );
    // The default roles are there, and aggregated ones filled in.
    admin.wait_for(
        &[
            "get",
            "clusterrole",
            "admin",
            "-o",
            "jsonpath={.rules[*].resources}",
        ],
        20,
        |rules| rules.contains("deployments") && rules.contains("rolebindings"),
    );
    for role in [
        "cluster-admin",
        "edit",
        "view",
        "system:node",
        "system:kube-scheduler",
    ] {
        admin.ok(&["get", "clusterrole", role]);
    }

    // A service account with no bindings may not create pods.
    let out = admin.run(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--as",
        "system:serviceaccount:default:default",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert!(!out.status.success());

    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["create", "serviceaccount", "app", "-n", "team"]);
    admin.apply(server.dir.path(), "pod-reader.yaml", POD_READER);
    let token = admin.ok(&["create", "token", "app", "-n", "team"]);
    let app = server.kubectl_with_token("app", token.trim());

    // Allowed in its namespace...
    let pods = app.run(&["get", "pods", "-n", "team"]);
    assert!(
        pods.status.success(),
        "{}",
        String::from_utf8_lossy(&pods.stderr)
    );
    let whoami = app.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:serviceaccount:team:app");
    // ...forbidden elsewhere, with upstream's message.
    let denied = app.fails(&["get", "pods", "-n", "default"]);
    assert!(
        denied.contains("Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:team:app\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{denied}"
    );
    let denied = app.fails(&["get", "secret", "anything", "-n", "team"]);
    assert!(
        denied.contains("secrets \"anything\" is forbidden: User \"system:serviceaccount:team:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{denied}"
    );
    let denied = app.fails(&["get", "nodes"]);
    assert!(denied.contains("at the cluster scope"), "{denied}");

    // can-i for itself and the rules it holds.
    assert_eq!(
        app.ok(&["auth", "can-i", "watch", "pods", "-n", "team"])
            .trim(),
        "yes"
    );
    let out = app.run(&["auth", "can-i", "delete", "pods", "-n", "team"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let list = app.ok(&["auth", "can-i", "--list", "-n", "team"]);
    let pods_row = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("no pods row in:\n{list}"));
    assert!(pods_row.contains("[get list watch]"), "{pods_row}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");

    // Impersonation: the admin may act as the service account...
    admin.ok(&[
        "get",
        "pods",
        "-n",
        "team",
        "--as",
        "system:serviceaccount:team:app",
    ]);
    let denied = admin.fails(&[
        "get",
        "pods",
        "-n",
        "default",
        "--as",
        "system:serviceaccount:team:app",
    ]);
    assert!(denied.contains("cannot list resource \"pods\""), "{denied}");
    assert_eq!(
        admin
            .ok(&[
                "auth",
                "can-i",
                "list",
                "pods",
                "-n",
                "team",
                "--as",
                "system:serviceaccount:team:app"
            ])
            .trim(),
        "yes"
    );
    // ...and groups can be impersonated too.
    assert_eq!(
        admin
            .ok(&[
                "auth",
                "can-i",
                "delete",
                "nodes",
                "--as",
                "someone",
                "--as-group",
                "system:masters"
            ])
            .trim(),
        "yes"
    );
    // The service account may not impersonate anyone.
    let denied = app.fails(&["get", "pods", "-n", "team", "--as", "admin"]);
    assert!(
        denied.contains("users \"admin\" is forbidden: User \"system:serviceaccount:team:app\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{denied}"
    );

    // Escalation: it may create roles, but only with rules it holds.
    let held = write(
        server.dir.path(),
        "held.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: readers, namespace: team}\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n  verbs: [get]\n",
    );
    app.ok(&["create", "-f", held.to_str().expect("path")]);
    let more = write(
        server.dir.path(),
        "more.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: thieves, namespace: team}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get]\n",
    );
    let denied = app.fails(&["create", "-f", more.to_str().expect("path")]);
    assert!(
        denied.contains("is attempting to grant RBAC permissions not currently held"),
        "{denied}"
    );

    // Bindings take effect at once: a new RoleBinding lets it read secrets.
    admin.ok(&[
        "create",
        "rolebinding",
        "app-views",
        "-n",
        "team",
        "--clusterrole",
        "view",
        "--serviceaccount",
        "team:app",
    ]);
    admin.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal",
        "k=v",
    ]);
    assert_eq!(
        app.ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
    // view does not include secrets, as upstream.
    app.fails(&["get", "secrets", "-n", "team"]);
    admin.ok(&["delete", "rolebinding", "app-views", "-n", "team"]);
    app.fails(&["get", "configmap", "settings", "-n", "team"]);
}

#[test]
fn a_kubelet_reads_only_what_its_pods_use_and_changes_only_its_node() {
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    for node in ["edge-a", "edge-b"] {
        let manifest = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n");
        admin.apply(server.dir.path(), &format!("{node}.yaml"), &manifest);
    }
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "used",
        "--from-literal",
        "k=v",
    ]);
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "unused",
        "--from-literal",
        "k=v",
    ]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: edge-a\n  containers:\n  - name: c\n    image: kelp.test/busybox:1\n    envFrom:\n    - secretRef:\n        name: used\n";
    admin.apply(server.dir.path(), "pod.yaml", pod);

    let kubelet = server.kubectl_with_certificate("system:node:edge-a", &["system:nodes"]);
    assert_eq!(
        kubelet.ok(&["get", "secret", "used", "-o", "jsonpath={.data.k}"]),
        "dg=="
    );
    let denied = kubelet.fails(&["get", "secret", "unused"]);
    assert!(
        denied.contains("secrets \"unused\" is forbidden: User \"system:node:edge-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'edge-a' and this object"),
        "{denied}"
    );
    kubelet.fails(&["get", "secrets"]);
    // Its own pods, by name or listed with its spec.nodeName selector only.
    kubelet.ok(&["get", "pod", "web"]);
    let listed = kubelet.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=edge-a",
        "-o",
        "name",
    ]);
    assert_eq!(listed.trim(), "pod/web");
    let denied = kubelet.fails(&["get", "pods", "-A"]);
    assert!(
        denied.contains("can only list/watch pods with spec.nodeName field selector"),
        "{denied}"
    );
    kubelet.fails(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=edge-b",
    ]);
    // Its own node, yes; another node or a role label, no.
    kubelet.ok(&["label", "node", "edge-a", "rack=r1"]);
    let denied = kubelet.fails(&["label", "node", "edge-b", "rack=r1"]);
    assert!(
        denied.contains("node \"edge-a\" is not allowed to modify node \"edge-b\""),
        "{denied}"
    );
    let denied = kubelet.fails(&[
        "label",
        "node",
        "edge-a",
        "node-role.kubernetes.io/worker=true",
    ]);
    assert!(
        denied.contains("is not allowed to modify labels: node-role.kubernetes.io/worker"),
        "{denied}"
    );
    // Pods: it reads its own, may not change their spec, nor delete pods elsewhere.
    let denied = kubelet.fails(&["label", "pod", "web", "x=y"]);
    assert!(
        denied.contains("cannot patch resource \"pods\""),
        "{denied}"
    );
    // Once the pod is gone, so is the way to its secret.
    admin.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    kubelet.fails(&["get", "secret", "used"]);
    // Its lease only.
    let lease = |node: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {node}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {node}\n"
        )
    };
    let own = write(server.dir.path(), "lease-a.yaml", &lease("edge-a"));
    kubelet.ok(&["apply", "-f", own.to_str().expect("path")]);
    let other = write(server.dir.path(), "lease-b.yaml", &lease("edge-b"));
    kubelet.fails(&["apply", "-f", other.to_str().expect("path")]);
}

const NGINX_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\nspec:\n  containers:\n  - name: nginx\n    image: kelp.test/nginx:1.14.2\n";

const RESTRICTED_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: careful
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: c
    image: kelp.test/busybox:1
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
"#;

#[test]
fn pod_security_levels_refuse_and_warn_as_upstream() {
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "namespace", "locked"]);
    admin.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let pod = write(server.dir.path(), "nginx.yaml", NGINX_POD);
    let pod = pod.to_str().expect("path");
    let denied = admin.fails(&["create", "-n", "locked", "-f", pod]);
    assert!(
        denied.contains("pods \"nginx\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
        "{denied}"
    );
    let careful = write(server.dir.path(), "careful.yaml", RESTRICTED_POD);
    admin.ok(&[
        "create",
        "-n",
        "locked",
        "-f",
        careful.to_str().expect("path"),
    ]);
    // A workload is admitted with a warning; its pods would be refused.
    let out = admin.run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "locked",
        "--image",
        "kelp.test/nginx:1.14.2",
    ]);
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning: would violate PodSecurity \"restricted:latest\""),
        "{warning}"
    );
    // warn and baseline: admitted, with the warning.
    admin.ok(&["create", "namespace", "watched"]);
    admin.ok(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/warn=baseline",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    let privileged = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: kelp.test/busybox:1\n";
    let privileged = write(server.dir.path(), "root.yaml", privileged);
    let out = admin.run(&[
        "create",
        "-n",
        "watched",
        "-f",
        privileged.to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad level is refused on the namespace, as upstream.
    let bad = admin.fails(&[
        "label",
        "namespace",
        "watched",
        "--overwrite",
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(bad.contains("pod-security.kubernetes.io/enforce"), "{bad}");
}

const READER_POD: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: configmap-reader
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader-reads-configmaps
subjects:
- kind: ServiceAccount
  name: reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: configmap-reader
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  serviceAccountName: reader
  containers:
  - name: c
    image: kelp.test/busybox:1
    command: ["sleep", "3600"]
"#;

#[test]
fn a_pods_mounted_token_carries_its_service_accounts_rights_and_no_more() {
    let server = Server::start_node(&[]);
    let admin = server.kubectl("kubectl");
    admin.apply(server.dir.path(), "reader.yaml", READER_POD);
    admin.wait_for(
        &["get", "pod", "reader", "-o", "jsonpath={.status.phase}"],
        60,
        |phase| phase == "Running",
    );
    // ServiceAccount admission mounted the API access volume.
    let mounts = admin.ok(&[
        "get",
        "pod",
        "reader",
        "-o",
        "jsonpath={.spec.containers[0].volumeMounts[*].mountPath}",
    ]);
    assert!(
        mounts.contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "{mounts}"
    );
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        admin.ok(&["exec", "reader", "--", "cat", &format!("{dir}/namespace")]),
        "default"
    );
    assert!(
        admin
            .ok(&["exec", "reader", "--", "cat", &format!("{dir}/ca.crt")])
            .contains("BEGIN CERTIFICATE")
    );
    let token = admin.ok(&["exec", "reader", "--", "cat", &format!("{dir}/token")]);
    let pod = server.kubectl_with_token("pod-reader", token.trim());
    assert_eq!(
        pod.ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}"
        ]),
        "system:serviceaccount:default:reader"
    );
    pod.ok(&["get", "configmaps"]);
    let denied = pod.fails(&["get", "pods"]);
    assert!(
        denied.contains(
            "User \"system:serviceaccount:default:reader\" cannot list resource \"pods\""
        ),
        "{denied}"
    );
    pod.fails(&["get", "secrets"]);
    // The node's API asks the API server too: the token may not read the
    // pod's logs through the kubelet, the admin may.
    let logs = pod.fails(&["logs", "reader"]);
    assert!(logs.contains("forbidden"), "{logs}");
    let (code, body) = common::https_get(10250, "/containerLogs/default/reader/c", Some(&token));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Forbidden (user=system:serviceaccount:default:reader, verb=get, resource=nodes, subresource(s)=[proxy])"), "{body}");
    admin.ok(&["logs", "reader"]);
    // The token is bound to the pod: once the pod is gone, so is the token.
    admin.ok(&["delete", "pod", "reader", "--grace-period=0", "--force"]);
    admin.wait_for(&["get", "pods", "-o", "name"], 30, |pods| {
        !pods.contains("pod/reader")
    });
    let gone = pod.fails(&["get", "configmaps"]);
    assert!(gone.contains("Unauthorized"), "{gone}");
}

/// Writes `<stem>.crt/.key` in `tls`: a leaf signed by the cluster CA that
/// ends `valid_for` from now.
fn write_leaf(
    tls: &std::path::Path,
    stem: &str,
    subject: (&str, Option<&str>),
    server: bool,
    valid_for: time::Duration,
) -> String {
    let ca_cert = std::fs::read_to_string(tls.join("server-ca.crt")).expect("CA cert");
    let ca_key = std::fs::read_to_string(tls.join("server-ca.key")).expect("CA key");
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_cert, rcgen::KeyPair::from_pem(&ca_key).expect("key"))
            .expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    // A server certificate names what the one it replaces names (else kelp
    // re-issues it at start for the missing names).
    let sans = if server {
        sans_of(&std::fs::read_to_string(tls.join(format!("{stem}.crt"))).expect("cert"))
    } else {
        vec![]
    };
    let mut params = rcgen::CertificateParams::new(sans).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(org) = subject.1 {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject.0);
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + valid_for;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(tls.join(format!("{stem}.crt")), cert.pem()).expect("write");
    std::fs::write(tls.join(format!("{stem}.key")), key.serialize_pem()).expect("write");
    cert.pem()
}

/// The DNS names and IP addresses a certificate names.
fn sans_of(pem: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let cert = pem.parse_x509().expect("x509");
    let san = cert.subject_alternative_name().expect("san").expect("san");
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string())
            }
            _ => None,
        })
        .collect()
}

/// The end of the validity of the certificate the server presents.
fn served_until(port: u16) -> chrono::NaiveDateTime {
    let out = std::process::Command::new("curl")
        .args(["-vsk", "--max-time", "5", "-o", "/dev/null"])
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find_map(|l| {
            l.split_once("expire date: ")
                .map(|(_, d)| d.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no expire date in:\n{text}"));
    chrono::NaiveDateTime::parse_from_str(&line.replace("  ", " "), "%b %d %H:%M:%S %Y GMT")
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn certificates_near_expiry_are_renewed_at_start_and_while_running() {
    let mut server = Server::start();
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["get", "namespaces"]);
    server.stop();
    let tls = server.path("data/server/tls");
    // The serving certificate enters its last 120 days 8 s after the
    // restart; the admin's is already inside them.
    write_leaf(
        &tls,
        "serving-kube-apiserver",
        ("kube-apiserver", None),
        true,
        time::Duration::days(120) + time::Duration::seconds(8),
    );
    let short_admin = write_leaf(
        &tls,
        "client-admin",
        ("system:admin", Some("system:masters")),
        false,
        time::Duration::days(10),
    );
    server.spawn();
    let renewed_admin = std::fs::read_to_string(tls.join("client-admin.crt")).expect("admin cert");
    assert_ne!(renewed_admin, short_admin, "renewed at start");
    kubectl.ok(&["get", "namespaces"]);
    let before = served_until(server.port);
    let in_a_year = chrono::Utc::now().naive_utc() + chrono::Duration::days(300);
    assert!(
        before < in_a_year,
        "the short certificate is served: {before}"
    );
    // A watch open across the renewal keeps its connection.
    let mut watch = kubectl
        .command()
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let until = served_until(server.port);
        if until > in_a_year {
            break until;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not renewed while running; served until {until}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(after > before);
    kubectl.ok(&["create", "configmap", "after-renewal"]);
    kubectl.ok(&["get", "namespaces"]);
    let stdout = watch.stdout.take().expect("stdout");
    let seen = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("after-renewal"))
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.join().expect("reader"),
        "the watch saw the configmap made after the renewal"
    );

    // `kelp certificate rotate`, as k3s's: set aside (backed up), new at the next start.
    server.stop();
    let serving = std::fs::read_to_string(tls.join("serving-kube-apiserver.crt")).expect("cert");
    let out = std::process::Command::new(common::kelp_bin())
        .args([
            "certificate",
            "rotate",
            "--service",
            "api-server",
            "--data-dir",
        ])
        .arg(server.path("data"))
        .output()
        .expect("kelp certificate rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tls.join("serving-kube-apiserver.crt").exists());
    assert!(
        tls.join("client-admin.crt").exists(),
        "only the named service"
    );
    let bad = std::process::Command::new(common::kelp_bin())
        .args(["certificate", "rotate", "--service", "nosuch", "--data-dir"])
        .arg(server.path("data"))
        .output()
        .expect("kelp certificate rotate");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown service \"nosuch\""));
    server.spawn();
    kubectl.ok(&["get", "namespaces"]);
    let new = std::fs::read_to_string(tls.join("serving-kube-apiserver.crt")).expect("cert");
    assert_ne!(new, serving);

    // `kelp certificate rotate-ca`: a new CA, cross-signed by the current
    // one; a kubeconfig that trusts only the current CA (and holds a
    // client certificate it signed) keeps working.
    let before_rotation = server.kubectl_with_certificate("old-admin", &["system:masters"]);
    before_rotation.ok(&["get", "namespaces"]);
    let old_ca = std::fs::read_to_string(tls.join("server-ca.crt")).expect("CA");
    server.stop();
    let out = std::process::Command::new(common::kelp_bin())
        .args(["certificate", "rotate-ca", "--data-dir"])
        .arg(server.path("data"))
        .output()
        .expect("kelp certificate rotate-ca");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.spawn();
    let bundle = std::fs::read_to_string(tls.join("server-ca.crt")).expect("CA");
    assert!(bundle.ends_with(&old_ca) && bundle != old_ca, "{bundle}");
    let serving = std::fs::read_to_string(tls.join("serving-kube-apiserver.crt")).expect("cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(serving.as_bytes()).expect("pem");
    let issuer = pem.parse_x509().expect("x509").issuer().to_string();
    assert!(issuer.contains("kelp-server-ca@"), "{issuer}");
    before_rotation.ok(&["get", "namespaces"]);
    kubectl.ok(&["get", "namespaces"]);
    server
        .kubectl_with_certificate("new-admin", &["system:masters"])
        .ok(&["get", "namespaces"]);
}

/// Every byte of the server's database files (the SQLite file and its WAL).
fn database_bytes(server: &Server) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(server.path("data/server/db")).expect("db dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).unwrap_or_default());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_are_encrypted_at_rest_and_survive_a_key_rotation() {
    use base64::Engine;
    let mut server = Server::start_with(&["--secrets-encryption"]);
    let admin = server.kubectl("kubectl");
    admin.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal",
        "password=kelp-secret-value-0001",
    ]);
    admin.ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal",
        "note=kelp-plain-marker-0001",
    ]);
    // The API stores secret data base64-encoded: that text must not be in the files.
    let stored = base64::engine::general_purpose::STANDARD.encode("kelp-secret-value-0001");
    let plain_marker = base64::engine::general_purpose::STANDARD.encode("kelp-plain-marker-0001");
    let db = database_bytes(&server);
    assert!(
        contains(&db, "kelp-plain-marker-0001") || contains(&db, &plain_marker),
        "the check can see plain text"
    );
    assert!(!contains(&db, &stored), "a secret in the clear");
    assert!(contains(&db, "k8s:enc:aescbc:v1:aescbckey:"));
    let status = common::secrets_encrypt(&server, "status");
    assert!(status.contains("Encryption Status: Enabled"), "{status}");
    assert!(
        status.contains("Active Key: k8s:enc:aescbc:v1:aescbckey:"),
        "{status}"
    );

    let rotated = common::secrets_encrypt(&server, "rotate-keys");
    assert!(rotated.contains("active key aescbckey-"), "{rotated}");
    let status = common::secrets_encrypt(&server, "status");
    assert!(
        status.contains("Active Key: k8s:enc:aescbc:v1:aescbckey-"),
        "{status}"
    );
    assert!(
        status.contains("Secrets under older keys or unencrypted: 0"),
        "{status}"
    );
    let read = admin.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(read, stored);
    let db = database_bytes(&server);
    assert!(!contains(&db, &stored));
    // The old key is gone from the configuration; a restart reads with the new one.
    let config = std::fs::read_to_string(server.path("data/server/cred/encryption-config.json"))
        .expect("config");
    assert!(!config.contains("\"aescbckey\""), "{config}");
    server.stop();
    server.spawn();
    assert_eq!(
        admin.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]),
        stored
    );
}

const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Metadata
"#;

#[test]
fn requests_are_audited_as_the_policy_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "audit-policy.yaml", AUDIT_POLICY);
    let log = dir.path().join("audit/audit.log");
    let server = Server::start_with(&[
        "--audit-policy-file",
        policy.to_str().expect("path"),
        "--audit-log-path",
        log.to_str().expect("path"),
    ]);
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "configmap", "audited", "--from-literal", "k=v"]);
    admin.ok(&["get", "secrets"]);
    admin.fails(&[
        "get",
        "pods",
        "--as",
        "system:serviceaccount:default:default",
    ]);
    server
        .kubectl_with_token("stranger", "not-a-token")
        .fails(&["get", "nodes"]);
    // Every answer names its audit ID.
    let headers = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
        .arg(format!("https://127.0.0.1:{}/version", server.port()))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&headers.stdout).to_ascii_lowercase();
    assert!(headers.contains("audit-id: "), "{headers}");
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["apiVersion"] == "audit.k8s.io/v1" && e["kind"] == "Event")
    );
    assert!(
        events.iter().all(|e| e["stage"] != "RequestReceived"),
        "omitted stage"
    );
    assert!(!events.iter().any(|e| {
        e["requestURI"]
            .as_str()
            .is_some_and(|u| u.starts_with("/readyz"))
    }));
    // The admin's events (kelp's own components are audited too).
    let admins = |verb: &str, resource: &str| {
        events
            .iter()
            .find(|e| {
                e["verb"] == verb
                    && e["objectRef"]["resource"] == resource
                    && e["user"]["username"] == "system:admin"
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {verb} {resource} by the admin audited"))
    };
    let create = admins("create", "configmaps");
    assert_eq!(create["level"], "RequestResponse");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["user"]["username"], "system:admin");
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["requestObject"]["data"]["k"], "v");
    assert_eq!(create["responseObject"]["metadata"]["name"], "audited");
    assert_eq!(
        create["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    let secrets = admins("list", "secrets");
    assert_eq!(secrets["level"], "Metadata");
    assert!(
        secrets.get("responseObject").is_none(),
        "no bodies at Metadata"
    );
    let denied = events
        .iter()
        .find(|e| e["impersonatedUser"]["username"] == "system:serviceaccount:default:default")
        .expect("the impersonated request is audited");
    assert_eq!(denied["user"]["username"], "system:admin");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    // A failed authentication: no user, the 401 and what was tried.
    let unauthenticated = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 401)
        .expect("the failed authentication is audited");
    assert_eq!(unauthenticated["stage"], "ResponseStarted");
    assert_eq!(
        unauthenticated["responseStatus"]["message"],
        "Authentication failed, attempted: bearer"
    );
    assert!(
        unauthenticated["user"]["username"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
}

const LIMIT_RANGE: &str = r#"apiVersion: v1
kind: LimitRange
metadata:
  name: limits
  namespace: bounded
spec:
  limits:
  - type: Container
    default:
      cpu: 500m
      memory: 128Mi
    defaultRequest:
      cpu: 100m
    max:
      cpu: "1"
"#;

#[test]
fn limit_ranges_default_and_bound_containers() {
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "namespace", "bounded"]);
    admin.apply(server.dir.path(), "limits.yaml", LIMIT_RANGE);
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: bounded\nspec:\n  containers:\n  - name: c\n    image: kelp.test/busybox:1\n";
    admin.apply(server.dir.path(), "plain.yaml", plain);
    let resources = admin.ok(&[
        "get",
        "pod",
        "plain",
        "-n",
        "bounded",
        "-o",
        "jsonpath={.spec.containers[0].resources}",
    ]);
    let resources: serde_json::Value = serde_json::from_str(&resources).expect("json");
    assert_eq!(resources["requests"]["cpu"], "100m");
    assert_eq!(resources["limits"]["memory"], "128Mi");
    let note = admin.ok(&[
        "get",
        "pod",
        "plain",
        "-n",
        "bounded",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert_eq!(
        note,
        "LimitRanger plugin set: cpu request for container c; cpu, memory limit for container c"
    );
    let big = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\n  namespace: bounded\nspec:\n  containers:\n  - name: c\n    image: kelp.test/busybox:1\n    resources:\n      limits:\n        cpu: \"2\"\n";
    let path = write(server.dir.path(), "big.yaml", big);
    let denied = admin.fails(&["create", "-f", path.to_str().expect("path")]);
    assert!(
        denied.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{denied}"
    );
}

#[test]
fn resource_quotas_refuse_what_passes_them_and_show_usage() {
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "namespace", "team"]);
    admin.apply(
        server.dir.path(),
        "quota.yaml",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: compute, namespace: team}\nspec:\n  hard: {pods: \"2\", requests.cpu: \"1\", requests.memory: 1Gi, services: \"1\", count/deployments.apps: \"1\"}\n",
    );
    let pod = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team}}\nspec:\n  containers:\n  - name: app\n    image: kelp.test/busybox:1\n    resources: {{requests: {{cpu: {cpu}, memory: 256Mi}}}}\n"
        )
    };
    // Creating `manifest` is refused; the error.
    let refused = |file: &str, manifest: &str| {
        let path = write(server.dir.path(), file, manifest);
        admin.fails(&["create", "-f", path.to_str().expect("path")])
    };
    admin.apply(server.dir.path(), "a.yaml", &pod("a", "600m"));
    let denied = refused("b.yaml", &pod("b", "600m"));
    assert!(
        denied.contains("pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{denied}"
    );
    let denied = refused(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: team}\nspec:\n  containers:\n  - {name: app, image: kelp.test/busybox:1}\n",
    );
    assert!(
        denied.contains(
            "failed quota: compute: must specify requests.cpu for: app; requests.memory for: app"
        ),
        "{denied}"
    );
    admin.apply(server.dir.path(), "d.yaml", &pod("d", "400m"));
    let denied = refused("e.yaml", &pod("e", "0"));
    assert!(
        denied.contains("exceeded quota: compute, requested: pods=1"),
        "{denied}"
    );
    admin.ok(&[
        "create",
        "service",
        "clusterip",
        "one",
        "-n",
        "team",
        "--tcp",
        "80",
    ]);
    let denied = admin.fails(&[
        "create",
        "service",
        "clusterip",
        "two",
        "-n",
        "team",
        "--tcp",
        "80",
    ]);
    assert!(
        denied.contains(
            "exceeded quota: compute, requested: services=1, used: services=1, limited: services=1"
        ),
        "{denied}"
    );
    admin.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image",
        "kelp.test/busybox:1",
    ]);
    let denied = admin.fails(&[
        "create",
        "deployment",
        "web2",
        "-n",
        "team",
        "--image",
        "kelp.test/busybox:1",
    ]);
    assert!(denied.contains("count/deployments.apps=1"), "{denied}");
    // The controller shows what is used; freeing a pod frees its share.
    let used = |seconds: u64, done: &dyn Fn(&str) -> bool| {
        let path = [
            "get",
            "quota",
            "compute",
            "-n",
            "team",
            "-o",
            "jsonpath={.status.used}",
        ];
        admin.wait_for(&path, seconds, done)
    };
    used(20, &|o| {
        o.contains("\"pods\":\"2\"")
            && o.contains("\"requests.cpu\":\"1\"")
            && o.contains("\"requests.memory\":\"512Mi\"")
    });
    let described = admin.ok(&["describe", "quota", "compute", "-n", "team"]);
    let cpu_row: Vec<&str> = described
        .lines()
        .find(|l| l.starts_with("requests.cpu"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(cpu_row, ["requests.cpu", "1", "1"], "{described}");
    admin.ok(&[
        "delete",
        "pod",
        "a",
        "-n",
        "team",
        "--wait=false",
        "--grace-period=0",
        "--force",
    ]);
    used(30, &|o| o.contains("\"pods\":\"1\""));
    admin.apply(server.dir.path(), "b.yaml", &pod("b", "600m"));
}

#[test]
fn pod_security_defaults_and_exemptions_come_from_the_admission_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "admission.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: baseline, enforce-version: latest}\n    exemptions: {usernames: [ops], namespaces: [kube-system]}\n",
    );
    let server = Server::start_with(&[
        "--admission-control-config-file",
        config.to_str().expect("path"),
    ]);
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "namespace", "apps"]);
    let host = "apiVersion: v1\nkind: Pod\nmetadata: {name: host}\nspec:\n  hostNetwork: true\n  containers:\n  - {name: c, image: kelp.test/busybox:1}\n";
    let pod = write(dir.path(), "host.yaml", host);
    let pod = pod.to_str().expect("path");
    // A namespace without labels gets the configured default level.
    let denied = admin.fails(&["create", "-n", "apps", "-f", pod]);
    assert!(
        denied.contains("pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"),
        "{denied}"
    );
    // Exempt namespaces and users are not checked; labels still win.
    admin.ok(&["create", "-n", "kube-system", "-f", pod]);
    admin.ok(&[
        "create",
        "role",
        "pod-maker",
        "-n",
        "apps",
        "--verb",
        "create",
        "--resource",
        "pods",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "ops",
        "-n",
        "apps",
        "--role",
        "pod-maker",
        "--user",
        "ops",
    ]);
    admin.ok(&["create", "-n", "apps", "-f", pod, "--as", "ops"]);
    admin.ok(&["create", "namespace", "lab"]);
    admin.ok(&[
        "label",
        "namespace",
        "lab",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    admin.ok(&["create", "-n", "lab", "-f", pod]);
}

/// A mutating and a validating webhook configuration for ConfigMaps in
/// namespaces labelled `webhooks=on`, calling `port`.
fn webhook_configurations(port: u16, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: label-configmaps
webhooks:
- name: label.kelp.test
  clientConfig:
    url: https://127.0.0.1:{port}/mutate
    caBundle: {ca_bundle}
  rules:
  - operations: ["CREATE", "UPDATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["configmaps"]
  namespaceSelector:
    matchLabels: {{webhooks: "on"}}
  sideEffects: None
  admissionReviewVersions: ["v1"]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: check-configmaps
webhooks:
- name: deny.kelp.test
  clientConfig:
    url: https://127.0.0.1:{port}/validate
    caBundle: {ca_bundle}
  rules:
  - operations: ["*"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["configmaps"]
    scope: Namespaced
  namespaceSelector:
    matchLabels: {{webhooks: "on"}}
  sideEffects: None
  timeoutSeconds: 5
  admissionReviewVersions: ["v1", "v1beta1"]
"#
    )
}

#[test]
fn admission_webhooks_mutate_and_validate_as_configured() {
    use common::webhook::{Answer, Webhook};
    use serde_json::json;

    let webhook = Webhook::start(|path, request| {
        let labels = &request["object"]["metadata"]["labels"];
        if path.starts_with("/service") {
            return match request["name"].as_str() {
                Some("refused-by-service") => {
                    Answer::Deny(json!({"message": "refused", "code": 403, "reason": "Forbidden"}))
                }
                _ => Answer::Allow {
                    patch: None,
                    warnings: vec![],
                },
            };
        }
        if path.starts_with("/mutate") {
            let op = if labels.is_object() {
                json!({"op": "add", "path": "/metadata/labels/mutated-by", "value": "kelp-test"})
            } else {
                json!({"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "kelp-test"}})
            };
            return Answer::Allow {
                patch: Some(json!([op])),
                warnings: vec!["labelled by the test webhook".into()],
            };
        }
        // The mutating webhook ran first: what it added is seen here.
        if request["operation"] != "DELETE" && labels["mutated-by"] != "kelp-test" {
            return Answer::Deny(json!({"message": "not labelled by the mutating webhook"}));
        }
        match labels["deny"].as_str() {
            Some("yes") => {
                Answer::Deny(json!({"message": "configmaps labelled deny=yes are refused"}))
            }
            _ => Answer::Allow {
                patch: None,
                warnings: vec![],
            },
        }
    });
    let server = Server::start();
    let admin = server.kubectl("kubectl");
    admin.ok(&["create", "namespace", "hooked"]);
    admin.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    admin.ok(&["create", "namespace", "plain"]);
    admin.apply(
        server.dir.path(),
        "webhooks.yaml",
        &webhook_configurations(webhook.port, &webhook.ca_bundle),
    );
    let listed = admin.ok(&["get", "validatingwebhookconfigurations"]);
    assert!(
        listed.contains("WEBHOOKS") && listed.contains("check-configmaps"),
        "{listed}"
    );

    // Mutated (with the webhook's warning), then allowed by the validating webhook.
    let out = admin.run(&[
        "create",
        "configmap",
        "a",
        "-n",
        "hooked",
        "--from-literal=k=v",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: labelled by the test webhook"),
        "{stderr}"
    );
    let label = admin.ok(&[
        "get",
        "configmap",
        "a",
        "-n",
        "hooked",
        "-o",
        "jsonpath={.metadata.labels.mutated-by}",
    ]);
    assert_eq!(label, "kelp-test");
    // Namespaces the selector leaves out are not sent to the webhooks.
    admin.ok(&["create", "configmap", "b", "-n", "plain"]);
    let labels = admin.ok(&[
        "get",
        "configmap",
        "b",
        "-n",
        "plain",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert_eq!(labels, "");
    assert!(webhook.operations("/", "b").is_empty());

    // A refusal, passed on as upstream does.
    let refused = admin.fails(&["label", "configmap", "a", "-n", "hooked", "deny=yes"]);
    assert!(
        refused.contains("admission webhook \"deny.kelp.test\" denied the request: configmaps labelled deny=yes are refused"),
        "{refused}"
    );
    assert_eq!(
        admin.ok(&[
            "get",
            "configmap",
            "a",
            "-n",
            "hooked",
            "-o",
            "jsonpath={.metadata.labels.deny}"
        ]),
        ""
    );

    // A server-side dry run calls webhooks without side effects; nothing is stored.
    let dry = admin.ok(&[
        "create",
        "configmap",
        "d",
        "-n",
        "hooked",
        "--dry-run=server",
        "-o",
        "jsonpath={.metadata.labels.mutated-by}",
    ]);
    assert_eq!(dry, "kelp-test");
    assert!(
        !admin
            .run(&["get", "configmap", "d", "-n", "hooked"])
            .status
            .success()
    );

    // Deletes go to the validating webhook too.
    admin.ok(&["delete", "configmap", "a", "-n", "hooked"]);
    assert_eq!(
        webhook.operations("/validate", "a"),
        vec!["CREATE", "UPDATE", "DELETE"]
    );

    // A webhook that cannot be reached: failurePolicy Fail refuses, Ignore lets through.
    let closed = common::free_port();
    let set_validating = |field: &str, value: &str| {
        admin.ok(&[
            "patch",
            "validatingwebhookconfiguration",
            "check-configmaps",
            "--type=json",
            "-p",
            &format!(r#"[{{"op": "replace", "path": "/webhooks/0/{field}", "value": "{value}"}}]"#),
        ])
    };
    set_validating(
        "clientConfig/url",
        &format!("https://127.0.0.1:{closed}/validate"),
    );
    let failed = admin.fails(&["create", "configmap", "e", "-n", "hooked"]);
    assert!(
        failed.contains(&format!(
            "Internal error occurred: failed calling webhook \"deny.kelp.test\": failed to call webhook: Post \"https://127.0.0.1:{closed}/validate?timeout=5s\""
        )),
        "{failed}"
    );
    set_validating("failurePolicy", "Ignore");
    admin.ok(&["create", "configmap", "e", "-n", "hooked"]);
    // Removing the configurations ends the calls.
    admin.ok(&["delete", "mutatingwebhookconfiguration", "label-configmaps"]);
    admin.ok(&["create", "configmap", "f", "-n", "hooked"]);
    assert!(webhook.operations("/mutate", "f").is_empty());

    // A webhook behind a Service is called at the Service's ready endpoint
    // (here the test's own listener), its certificate checked for
    // kelp-webhook.hooked.svc.
    let service = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: kelp-webhook, namespace: hooked}}
spec:
  ports: [{{port: 443, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kelp-webhook-1
  namespace: hooked
  labels: {{kubernetes.io/service-name: kelp-webhook}}
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
ports:
- {{name: "", port: {port}, protocol: TCP}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: by-service}}
webhooks:
- name: service.kelp.test
  clientConfig:
    service: {{namespace: hooked, name: kelp-webhook, path: /service}}
    caBundle: {ca}
  rules:
  - {{operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["configmaps"]}}
  sideEffects: None
  admissionReviewVersions: ["v1"]
"#,
        port = webhook.port,
        ca = webhook.ca_bundle
    );
    admin.apply(server.dir.path(), "by-service.yaml", &service);
    admin.ok(&["create", "configmap", "g", "-n", "hooked"]);
    assert_eq!(webhook.operations("/service", "g"), vec!["CREATE"]);
    let refused = admin.fails(&["create", "configmap", "refused-by-service", "-n", "plain"]);
    assert!(
        refused.contains("admission webhook \"service.kelp.test\" denied the request: refused"),
        "{refused}"
    );

    // Upstream's order: Pod Security judges a pod before the validating
    // webhooks are called.
    admin.ok(&[
        "patch",
        "validatingwebhookconfiguration",
        "by-service",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/webhooks/0/rules/0/resources/-", "value": "pods"}]"#,
    ]);
    admin.ok(&[
        "label",
        "namespace",
        "plain",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let pod = |security: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "refused-by-service", "namespace": "plain"},
            "spec": {"automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "busybox", "securityContext": security}]}})
        .to_string()
    };
    let create = |file: &str, manifest: String| {
        let path = common::write(server.dir.path(), file, &manifest);
        admin.fails(&["create", "-f", path.to_str().expect("utf-8 path")])
    };
    let privileged = create("privileged.json", pod(json!({"privileged": true})));
    assert!(
        privileged.contains("violates PodSecurity \"restricted:latest\""),
        "{privileged}"
    );
    assert_eq!(
        webhook.operations("/service", "refused-by-service").len(),
        1
    );
    let compliant = create(
        "compliant.json",
        pod(
            json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}),
        ),
    );
    assert!(
        compliant.contains("admission webhook \"service.kelp.test\" denied the request: refused"),
        "{compliant}"
    );
}
