//! Real external datastores for the tests: a PostgreSQL server (Debian's
//! `postgresql`) and etcd members (Debian's `etcd-server`) on loopback,
//! each in a temporary directory, stopped and removed on drop.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A PostgreSQL server of its own on a free loopback port.
pub struct Postgres {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Its TLS files, if it takes TLS connections only.
    pub tls: Option<DatastoreTls>,
    /// Its `-c` settings.
    settings: Vec<String>,
}

/// The directory of PostgreSQL's programs (the newest installed major).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/deps.sh installs postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres")
}

/// The `postgres` account's uid and gid (the server refuses to run as root).
fn postgres_account() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres account (made by the postgresql package)")
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    /// initdb, then start the server and wait until it takes connections.
    /// fsync is off: a test kills kelp, never the database's machine.
    pub fn start() -> Self {
        Self::start_with_fsync(false)
    }

    /// As [`Postgres::start`], with fsync as asked (benchmarks keep it on).
    pub fn start_with_fsync(fsync: bool) -> Self {
        Self::start_with(fsync, false)
    }

    /// A server that takes TLS connections only (`hostssl` in pg_hba.conf).
    pub fn start_tls() -> Self {
        Self::start_with(false, true)
    }

    fn start_with(fsync: bool, tls: bool) -> Self {
        let bin = postgres_bin();
        let (uid, gid) = postgres_account();
        let dir = tempfile::Builder::new()
            .prefix("kelp-test-pg-")
            .tempdir()
            .expect("tempdir");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        let data = dir.path().join("data");
        let out = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            format!("fsync={}", if fsync { "on" } else { "off" }),
        ];
        let tls = tls.then(|| {
            let files = DatastoreTls::make(dir.path());
            for (from, to) in [
                (&files.serving.0, "server.crt"),
                (&files.serving.1, "server.key"),
            ] {
                let target = data.join(to);
                std::fs::copy(from, &target).expect("copy");
                std::os::unix::fs::chown(&target, Some(uid), Some(gid)).expect("chown");
                std::fs::set_permissions(
                    &target,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod");
            }
            settings.push("ssl=on".into());
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf");
            files
        });
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            tls,
            settings,
        };
        server.spawn();
        server
    }

    /// Starts the server process on its data and waits until it takes
    /// connections.
    fn spawn(&mut self) {
        let bin = postgres_bin();
        let (uid, gid) = postgres_account();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("log");
        std::os::unix::fs::chown(self.dir.path().join("postgres.log"), Some(uid), Some(gid))
            .expect("chown log");
        let child = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(
                self.settings
                    .iter()
                    .flat_map(|setting| ["-c", setting.as_str()]),
            )
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if Instant::now() > deadline
                || self
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                panic!("postgres did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (every connection to it ends) and starts it again.
    pub fn restart(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, nix::sys::signal::Signal::SIGINT);
        }
        self.spawn();
    }

    /// The endpoint of database `db` (created by kelp if missing).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, nix::sys::signal::Signal::SIGINT);
        }
    }
}

/// Asks a server to stop with `signal`, then kills it if it has not in 10 s.
fn stop(child: Child, signal: nix::sys::signal::Signal) {
    super::stop_child(child, signal, Duration::from_secs(10));
}

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of its own: `n` members on loopback.
pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    /// Clients must speak TLS and show a certificate of [`DatastoreTls::ca`].
    tls: Option<DatastoreTls>,
}

/// The files of a datastore that serves clients over TLS: a CA, the
/// server's pair (127.0.0.1; also a client certificate, as etcd's gateway
/// dials etcd with it) and a client pair.
pub struct DatastoreTls {
    /// The CA (PEM file) of both pairs.
    pub ca: PathBuf,
    serving: (PathBuf, PathBuf),
    /// A client certificate and key (PEM files) the CA signed.
    pub client: (PathBuf, PathBuf),
}

impl DatastoreTls {
    fn make(dir: &std::path::Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "kelp-test-datastore-ca");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let ca_path = write("datastore-ca.crt", ca_cert.pem());
        let issuer = Issuer::new(ca, ca_key);
        let pair = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.extended_key_usages = usages;
            // A subject of its own: one equal to the CA's reads as self-signed.
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (
                write(&format!("{name}.crt"), cert.pem()),
                write(&format!("{name}.key"), key.serialize_pem()),
            )
        };
        let serving = pair(
            "datastore-serving",
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let client = pair(
            "datastore-client",
            vec![],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        Self {
            ca: ca_path,
            serving,
            client,
        }
    }
}

impl Etcd {
    /// Starts `n` members and waits until each answers /health.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, false)
    }

    /// One member serving clients over TLS, asking for their certificates.
    pub fn start_tls() -> Self {
        Self::start_with(1, true)
    }

    fn start_with(n: usize, tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kelp-test-etcd-")
            .tempdir()
            .expect("tempdir");
        let tls = tls.then(|| DatastoreTls::make(dir.path()));
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut etcd = Self { members, dir, tls };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        etcd
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let cluster = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("log");
        let client = self.client_url(i);
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &self.tls {
            tls_args.extend(["--cert-file".into(), tls.serving.0.clone().into()]);
            tls_args.extend(["--key-file".into(), tls.serving.1.clone().into()]);
            tls_args.extend(["--trusted-ca-file".into(), tls.ca.clone().into()]);
            tls_args.push("--client-cert-auth".into());
        }
        let member = &mut self.members[i];
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &member.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "kelp-test"])
            .args(&tls_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (scripts/deps.sh installs etcd-server)");
        member.child = Some(child);
    }

    fn wait_healthy(&mut self, i: usize) {
        let url = format!("{}/health", self.client_url(i));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut curl = Command::new("curl");
            curl.args(["-s", "--max-time", "2", &url]);
            if let Some(tls) = &self.tls {
                curl.arg("--cacert")
                    .arg(&tls.ca)
                    .arg("--cert")
                    .arg(&tls.client.0)
                    .arg("--key")
                    .arg(&tls.client.1);
            }
            let out = curl.output().expect("run curl");
            if String::from_utf8_lossy(&out.stdout).contains("\"true\"") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} did not become healthy:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The TLS files, if it serves over TLS.
    pub fn tls(&self) -> Option<&DatastoreTls> {
        self.tls.as_ref()
    }

    /// Every member's client URL, comma-separated (`--datastore-endpoint`).
    pub fn endpoint(&self) -> String {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` at once.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again (after [`Etcd::kill`]) on its data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Starts member `i` again without waiting (a member alone cannot be
    /// healthy: it waits for a quorum).
    pub fn respawn(&mut self, i: usize) {
        self.spawn(i);
    }

    /// What etcdctl reads at `key` (with `prefix`, under it): (key, value)
    /// pairs in key order.
    pub fn etcdctl_get(&self, key: &str, prefix: bool) -> Vec<(String, Vec<u8>)> {
        use base64::Engine as _;
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.client_url(0),
            "get",
            key,
            "-w",
            "json",
        ]);
        if prefix {
            command.arg("--prefix");
        }
        if let Some(tls) = &self.tls {
            command.arg("--cacert").arg(&tls.ca);
            command.arg("--cert").arg(&tls.client.0);
            command.arg("--key").arg(&tls.client.1);
        }
        let out = command.output().expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl get {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let base64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .expect("base64")
        };
        answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let key = String::from_utf8(base64(&kv["key"])).expect("utf-8 key");
                (key, base64(&kv["value"]))
            })
            .collect()
    }

    /// Member `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.take() {
                stop(child, nix::sys::signal::Signal::SIGTERM);
            }
        }
    }
}
