//! Shared helpers of the end-to-end tests: start `kelp server` on a free port in
//! a temporary data dir, run the real kubectl against it, clean up on drop.

#![allow(dead_code)]

pub mod datastores;
pub mod durability;
pub mod join;
pub mod metrics;
pub mod otlp;
pub mod rng;
pub mod webhook;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kelp binary cargo built for these tests.
pub fn kelp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kelp"))
}

/// A running `kelp server` (API only unless started with [`Server::start_node`]).
pub struct Server {
    /// The process.
    pub child: Option<Child>,
    /// Temporary directory holding data dir, kubeconfig, kubectl's HOME.
    pub dir: tempfile::TempDir,
    /// API port.
    pub port: u16,
    /// Extra `kelp server` arguments.
    pub args: Vec<String>,
    /// Runs the local node (containerd, pods); cleaned up with kelp-killall.sh.
    pub node: bool,
    /// Entries of /var/log/pods before the server started (the rest are ours).
    pod_logs_before: Vec<PathBuf>,
}

/// The node name node tests use.
pub const NODE: &str = "kelp-e2e";

/// The test image tarball (built by scripts/build-test-images.sh).
pub fn test_image_tarball() -> PathBuf {
    test_images_dir().join("busybox.tar")
}

/// Where scripts/build-test-images.sh puts the test images (built on first use).
pub fn test_images_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images");
    if !dir.join("busybox-docker.tar").exists() {
        let status = Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-images.sh"),
        )
        .arg(&dir)
        .status()
        .expect("run build-test-images.sh");
        assert!(status.success(), "building test images failed");
    }
    dir
}

/// Prints the last 200 lines of a log a failing test leaves behind (its
/// temp dir goes with it; cargo test shows a failed test's output).
pub fn print_log_tail(name: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(200)..];
    eprintln!("--- the last {} lines of {name} ---", tail.len());
    for line in tail {
        eprintln!("{line}");
    }
}

/// The test image's reference.
pub const BUSYBOX: &str = "kelp.test/busybox:1";

fn pod_log_dirs() -> Vec<PathBuf> {
    std::fs::read_dir("/var/log/pods")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Removes the pod log directories not in `before` (pods outlive kelp; a
/// test removes the logs of the pods it ran once they are stopped).
fn remove_pod_logs_except(before: &[PathBuf]) {
    for dir in pod_log_dirs() {
        if !before.contains(&dir) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The pod log directories that appear while it lives (an agent's pods,
/// whose node no [`Server`] runs) are removed when it is dropped: declare
/// it before whatever runs the pods.
pub struct PodLogs(Vec<PathBuf>);

impl PodLogs {
    /// Remembers the directories there now.
    pub fn record() -> Self {
        Self(pod_log_dirs())
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        remove_pod_logs_except(&self.0);
    }
}

/// Asks `child` to stop with `signal` and waits for it; kills it if it
/// has not stopped within `grace`.
pub fn stop_child(mut child: Child, signal: nix::sys::signal::Signal, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `kelp secrets-encrypt VERB` against `server`, as it ran.
pub fn secrets_encrypt_run(server: &Server, verb: &str) -> std::process::Output {
    std::process::Command::new(kelp_bin())
        .args(["secrets-encrypt", verb])
        .env("KELP_WRITE_KUBECONFIG", server.kubeconfig())
        .env("KELP_CONFIG", "/dev/null")
        .output()
        .expect("kelp secrets-encrypt")
}

/// `kelp secrets-encrypt VERB` against `server`, which must succeed; its stdout.
pub fn secrets_encrypt(server: &Server, verb: &str) -> String {
    let out = secrets_encrypt_run(server, verb);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP port on loopback nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Server {
    /// Starts a server and waits for /readyz.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `kelp server` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(free_port(), args)
    }

    /// Starts a server on API port `port` with extra arguments.
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut server = Self {
            child: None,
            dir,
            port,
            args,
            node: false,
            pod_logs_before: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts a server that also runs the local node (`NODE`, with the test
    /// image imported) and waits until the Node is Ready.
    pub fn start_node(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("data/agent/images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::copy(test_image_tarball(), images.join("busybox.tar")).expect("copy test image");
        let mut all = Vec::new();
        for (flag, default) in [("--node-name", NODE), ("--node-ip", "127.0.0.1")] {
            if !args.contains(&flag) {
                all.extend([flag.to_string(), default.to_string()]);
            }
        }
        if !args.contains(&"--resolv-conf") {
            // Names the cluster DNS forwards, and pods' host search domains,
            // must never reach the machine's real resolvers: a loopback
            // address nothing answers on, and no search domains.
            let resolv_conf = dir.path().join("resolv.conf");
            std::fs::write(&resolv_conf, "nameserver 127.0.0.154\n").expect("resolv.conf");
            all.push("--resolv-conf".into());
            all.push(resolv_conf.display().to_string());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = Self {
            child: None,
            dir,
            port: free_port(),
            args: all,
            node: true,
            pod_logs_before: pod_log_dirs(),
        };
        server.spawn();
        server.wait_node_ready();
        server
    }

    /// [`Server::start_node`] with the ingress proxy on two free ports;
    /// returns the server and its HTTP and HTTPS ports.
    pub fn start_node_with_ingress() -> (Self, u16, u16) {
        let (http, https) = (free_port(), free_port());
        let server = Self::start_node(&[
            "--ingress-http-port",
            &http.to_string(),
            "--ingress-https-port",
            &https.to_string(),
        ]);
        (server, http, https)
    }

    /// The local node's name.
    pub fn node_name(&self) -> &str {
        self.flag("--node-name").unwrap_or(NODE)
    }

    /// The value of one of the extra flags the server was started with.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Changes (or adds) one extra flag for the next [`Server::spawn`].
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(at) => self.args[at + 1] = value.to_string(),
            None => self.args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until the Node reports Ready.
    pub fn wait_node_ready(&self) {
        if !self
            .kubectl("kubectl")
            .node_ready_within(self.node_name(), 60)
        {
            panic!("node did not become Ready; log:\n{}", self.log());
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(
                child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(15),
            );
        }
    }

    /// Starts (again) on the same data dir and port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .expect("log file");
        let mut cmd = Command::new(kelp_bin());
        cmd.args(["server", "--config", "/dev/null"]);
        if self.flag("--bind-address").is_none() {
            cmd.args(["--bind-address", "127.0.0.1"]);
        }
        if !self.node {
            cmd.arg("--disable-agent");
        }
        let child = cmd
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kelp server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// A path inside the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.path("kubeconfig.yaml")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = Command::new("curl")
                .args([
                    "-sk",
                    "--max-time",
                    "1",
                    &format!("https://{}:{}/readyz", self.local_address(), self.port),
                ])
                .output();
            if out.is_ok_and(|o| o.stdout == b"ok") && self.kubeconfig().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("kelp server did not become ready; log:\n{}", self.log());
    }

    /// Where the server takes connections from this machine: the address
    /// it binds, if one, else loopback.
    pub fn local_address(&self) -> String {
        match self.flag("--bind-address") {
            Some(ip) if ip != "0.0.0.0" && ip != "::" => ip.to_string(),
            _ => "127.0.0.1".into(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// CA certificate, client certificate and client key (PEM) of the admin kubeconfig.
    pub fn admin_credentials(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        use base64::Engine;
        let kubeconfig = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let field = |name: &str| {
            let line = kubeconfig
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .expect("kubeconfig field");
            let b64 = line.split_once(':').expect("value").1.trim();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64")
        };
        (
            field("certificate-authority-data"),
            field("client-certificate-data"),
            field("client-key-data"),
        )
    }

    /// The admin's client certificate and key (PEM) as files in the
    /// server's directory, for clients that read them from files.
    pub fn admin_cert_files(&self) -> (PathBuf, PathBuf) {
        let (_, cert, key) = self.admin_credentials();
        let dir = self.path("");
        (
            write(&dir, "admin.crt", &String::from_utf8_lossy(&cert)),
            write(&dir, "admin.key", &String::from_utf8_lossy(&key)),
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A kubectl acting with a bearer token (no client certificate).
    pub fn kubectl_with_token(&self, name: &str, token: &str) -> Kubectl {
        self.kubectl_with_user(name, &format!("    token: {token}\n"))
    }

    /// A client certificate and key (PEM) for `user` in `groups`, signed by
    /// the cluster CA (as a kubelet or another component would hold).
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> (String, String) {
        let tls = self.path("data/server/tls");
        let ca_cert = std::fs::read_to_string(tls.join("server-ca.crt")).expect("CA cert");
        let ca_key = std::fs::read_to_string(tls.join("server-ca.key")).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &ca_cert,
            rcgen::KeyPair::from_pem(&ca_key).expect("CA key"),
        )
        .expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A kubectl acting as `user` in `groups`, with a client certificate the
    /// cluster CA signed (as a kubelet or another component would hold).
    pub fn kubectl_with_certificate(&self, user: &str, groups: &[&str]) -> Kubectl {
        use base64::Engine;
        let (cert, key) = self.client_certificate(user, groups);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kubectl_with_user(
            &user.replace(':', "_"),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&cert),
                b64(&key)
            ),
        )
    }

    /// A kubectl whose kubeconfig has the admin's cluster entry and `user_yaml` as its user.
    fn kubectl_with_user(&self, name: &str, user_yaml: &str) -> Kubectl {
        let admin = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        let cluster: String = admin
            .lines()
            .skip_while(|l| !l.starts_with("clusters:"))
            .take_while(|l| !l.starts_with("contexts:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = format!(
            "apiVersion: v1\nkind: Config\n{cluster}contexts:\n- context:\n    cluster: default\n    user: {name}\n  name: default\ncurrent-context: default\nusers:\n- name: {name}\n  user:\n{user_yaml}"
        );
        let path = self.path(&format!("kubeconfig-{name}.yaml"));
        std::fs::write(&path, config).expect("kubeconfig");
        let home = self.path(&format!("home-{name}"));
        std::fs::create_dir_all(&home).expect("kubectl home");
        Kubectl {
            binary: "kubectl".into(),
            kubeconfig: path,
            home,
        }
    }

    /// A kube-rs client of this server with a client certificate (inside a
    /// tokio runtime).
    pub fn client_as(&self, cert_pem: &str, key_pem: &str) -> kube::Client {
        client(self.port, &self.ca_pem(), cert_pem, key_pem)
    }

    /// The CA the kubeconfig trusts for the server's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        String::from_utf8(self.admin_credentials().0).expect("utf-8 PEM")
    }

    /// A kubectl bound to this server.
    pub fn kubectl(&self, binary: &str) -> Kubectl {
        let home = self.path(&format!("home-{}", binary.replace('/', "_")));
        std::fs::create_dir_all(&home).expect("kubectl home");
        Kubectl {
            binary: binary.to_string(),
            kubeconfig: self.kubeconfig(),
            home,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test's server log goes with its temp dir: show its tail
        // (cargo test prints a failed test's output) to tell why.
        if std::thread::panicking() {
            print_log_tail("server.log", &self.log());
        }
        // SIGTERM first so the server shuts down cleanly; SIGKILL if it lingers.
        self.stop();
        if self.node {
            // Pods outlive kelp by design: kelp-killall.sh is what stops them.
            let status =
                Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kelp-killall.sh"))
                    .env("KELP_DATA_DIR", self.path("data"))
                    .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("kelp-killall.sh failed");
            }
            remove_pod_logs_except(&self.pod_logs_before);
        }
    }
}

/// A kubectl binary with its own HOME (fresh discovery cache) and kubeconfig.
pub struct Kubectl {
    /// Binary name or path.
    pub binary: String,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    /// A command ready to take arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    /// Runs kubectl with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run kubectl")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.binary,
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `args` until its stdout satisfies `done` (returned), or panics
    /// after `seconds` with the last output.
    pub fn wait_for(&self, args: &[&str], seconds: u64, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.run(args);
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && done(&String::from_utf8_lossy(&out.stdout)) {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting on kubectl {args:?}; last output:\n{last}");
    }

    /// Whether `node` reports Ready within `seconds`.
    pub fn node_ready_within(&self, node: &str, seconds: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let out = self.run(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if out.stdout == b"True" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Applies a manifest given as text.
    pub fn apply(&self, dir: &Path, name: &str, manifest: &str) -> String {
        let path = write(dir, name, manifest);
        self.ok(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{} {:?} should have failed:\n{}",
            self.binary,
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The body curl gets from `url` (empty on failure), within 5 s.
pub fn http_get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Status and body of an HTTPS GET on 127.0.0.1:`port` without
/// credentials (the serving certificate is not checked), within 5 s.
pub fn https_get_anonymous(port: u16, path: &str) -> (u16, String) {
    https_get(port, path, None)
}

/// Status and body of an HTTPS GET on 127.0.0.1:`port`, with a bearer
/// token if given (the serving certificate is not checked), within 5 s.
pub fn https_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        cmd.arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()));
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.parse().unwrap_or(0), body.to_string())
}

/// A busybox pod on the test node: `labels` and `ports` are YAML flow
/// items (`app: web`, `{containerPort: 80}`), `command` runs under `sh -c`.
pub fn busybox_pod(name: &str, labels: &str, command: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, '{command}']
    ports: [{ports}]
"
    )
}

/// Writes `content` to `dir/name`, creating directories.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write manifest");
    path
}

/// `/usr/lib/google-cloud-sdk/bin/kubectl.1.NN` (or on PATH), which must exist.
pub fn versioned_kubectl(minor: u32) -> String {
    let name = format!("kubectl.1.{minor}");
    for dir in [
        "/usr/lib/google-cloud-sdk/bin",
        "/usr/local/bin",
        "/usr/bin",
    ] {
        let path = Path::new(dir).join(&name);
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!("{name} is not installed; the end-to-end tests run against it by name");
}

/// A DNS question for `name` (recursion desired), as sent on the wire.
pub fn dns_question(id: u16, name: &str, qtype: hickory_proto::rr::RecordType) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii(name).expect("dns name"),
        qtype,
    ));
    message.to_vec().expect("encode dns question")
}

/// Asks `server` about `name` over UDP, or TCP with `tcp`; None when no
/// answer came within 3 s.
pub fn dns_query(
    server: std::net::SocketAddr,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
    tcp: bool,
) -> Option<hickory_proto::op::Message> {
    use std::io::{Read, Write};
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let question = dns_question(id, name, qtype);
    let timeout = Some(Duration::from_secs(3));
    let bytes = if tcp {
        let mut stream =
            std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3)).ok()?;
        stream.set_read_timeout(timeout).ok()?;
        let mut framed = (question.len() as u16).to_be_bytes().to_vec();
        framed.extend(&question);
        stream.write_all(&framed).ok()?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).ok()?;
        let mut body = vec![0u8; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut body).ok()?;
        body
    } else {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(timeout).ok()?;
        socket.send_to(&question, server).ok()?;
        let mut buffer = [0u8; 4096];
        let (n, _) = socket.recv_from(&mut buffer).ok()?;
        buffer[..n].to_vec()
    };
    let answer = hickory_proto::op::Message::from_vec(&bytes).ok()?;
    (answer.metadata.id == id).then_some(answer)
}

/// A kube-rs client of the server on `port` with a client certificate
/// (inside a tokio runtime).
pub fn client(port: u16, ca_pem: &str, cert_pem: &str, key_pem: &str) -> kube::Client {
    let identity = kelp::http::client::Identity::Certificate(
        kelp::pki::reloadable::ReloadableCert::from_pem(cert_pem, key_pem).expect("cert"),
    );
    kelp::http::client::remote(&format!("https://127.0.0.1:{port}"), ca_pem, identity)
        .expect("client")
}
