//! The appliance side of `kelp server`, end to end with the real binary and
//! kubectl: the config file with its drop-ins (and their precedence against
//! the environment and flags), add-on manifests, and systemd's notify socket.
//! API-only servers (`--disable-agent`): no node lock needed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, kelp_bin, write};

/// Starts `kelp server ARGS` with `envs`, stderr to `log`.
fn spawn(args: &[&str], envs: &[(&str, &str)], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(kelp_bin());
    cmd.arg("server").args(args);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.env_remove("KELP_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kelp server")
}

/// Waits until `https://127.0.0.1:port/readyz` answers ok.
fn wait_ready(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (code, body) = common::https_get_anonymous(port, "/readyz");
        if code == 200 && body == "ok" {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "kelp server did not serve on port {port}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().expect("dir"))
        .args(args)
        .output()
        .expect("run kubectl")
}

/// SIGTERM, then the exit status (SIGKILL after 15 s).
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("wait")
}

/// Kills the child when dropped (a failed assertion must not leave servers).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// The CA certificate (PEM) of a kubeconfig.
fn ca_pem(kubeconfig: &Path) -> Vec<u8> {
    use base64::Engine;
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("certificate-authority-data"))
        .expect("certificate-authority-data");
    base64::engine::general_purpose::STANDARD
        .decode(line.split_once(':').expect("value").1.trim())
        .expect("base64")
}

/// Whether a TLS client trusting `ca` accepts the server's certificate for `name`.
fn certificate_names(ca: &Path, name: &str, port: u16) -> bool {
    Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/readyz"))
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"ok")
}

#[test]
fn config_file_drop_ins_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    let port = free_port();
    let kubeconfig = tmp.join("admin.yaml");
    let config = write(
        tmp,
        "config.yaml",
        &format!(
            "# kelp's configuration\n\
             data-dir: {data}\n\
             bind-address: 127.0.0.1\n\
             disable-agent: true\n\
             https-listen-port: {unused}\n\
             write-kubeconfig: {kubeconfig}\n\
             write-kubeconfig-mode: \"0600\"\n\
             service-cidr: 10.96.0.0/16\n\
             tls-san:\n  - kelp-a.example\n  - 10.9.8.7\n",
            data = tmp.join("data").display(),
            unused = free_port(),
            kubeconfig = kubeconfig.display(),
        ),
    );
    // Drop-ins, read in name order: the later wins, `KEY+` appends.
    write(
        tmp,
        "config.yaml.d/10-port.yaml",
        &format!("https-listen-port: {port}\nwrite-kubeconfig-mode: \"0644\"\n"),
    );
    write(
        tmp,
        "config.yaml.d/20-san.yaml",
        "tls-san+: [kelp-b.example]\n",
    );
    write(tmp, "config.yaml.d/README", "not: yaml: at all\n");
    let log = tmp.join("server.log");
    let _server = Running(spawn(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--service-cidr",
            "10.100.0.0/16",
        ],
        &[("KELP_WRITE_KUBECONFIG_MODE", "0640")],
        &log,
    ));
    // The port from the drop-in, not config.yaml's.
    wait_ready(port, &log);
    // The kubeconfig where config.yaml says, with the environment's mode
    // (over both files).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kubeconfig.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&kubeconfig)
        .expect("kubeconfig written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // The flag's service CIDR, not the file's: the kubernetes Service's IP.
    let out = kubectl(
        &kubeconfig,
        &[
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "10.100.0.1");
    // `kelp kubectl` finds the admin kubeconfig where the files put it.
    let out = Command::new(kelp_bin())
        .args(["kubectl", "get", "namespace", "default", "-o", "name"])
        .env("KELP_CONFIG", &config)
        .env_remove("KUBECONFIG")
        .env("HOME", tmp)
        .output()
        .expect("kelp kubectl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );
    // List values from YAML lists, appended to by a drop-in.
    let ca = tmp.join("ca.pem");
    std::fs::write(&ca, ca_pem(&kubeconfig)).expect("ca");
    assert!(certificate_names(&ca, "kelp-a.example", port));
    assert!(certificate_names(&ca, "kelp-b.example", port));
    assert!(
        !certificate_names(&ca, "kelp-c.example", port),
        "a name not in tls-san must not be in the certificate"
    );
}

/// Runs `kelp server --config CONFIG` and returns its stderr; it must fail fast.
fn refused(config: &Path) -> String {
    let log = config.with_extension("log");
    let mut child = spawn(&["--config", config.to_str().expect("utf-8")], &[], &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kelp server started despite a bad config:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    std::fs::read_to_string(&log).expect("log")
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    let data = tmp.join("data");
    let config = write(
        tmp,
        "config.yaml",
        &format!(
            "data-dir: {}\ndisable-agent: true\nbind-address: 127.0.0.1\nhttps-listen-port: {}\n",
            data.display(),
            free_port()
        ),
    );
    let drop_in = write(
        tmp,
        "config.yaml.d/10-x.yaml",
        "# a typo below\nnode-label: [a=b]\nfoo: 1\n",
    );
    let stderr = refused(&config);
    let want = format!(
        "{}:3: unknown key \"foo\": kelp server has no --foo flag",
        drop_in.display()
    );
    assert!(stderr.contains(&want), "{stderr}");

    std::fs::write(&drop_in, "\nhttps-listen-port: lots\n").expect("write");
    let stderr = refused(&config);
    let want = format!(
        "{}:2: invalid value 'lots' for '--https-listen-port",
        drop_in.display()
    );
    assert!(stderr.contains(&want), "{stderr}");

    std::fs::write(&drop_in, "disable-agent: maybe\n").expect("write");
    let stderr = refused(&config);
    assert!(
        stderr.contains(&format!(
            "{}:1: key \"disable-agent\" takes true or false, not a string",
            drop_in.display()
        )),
        "{stderr}"
    );
    assert!(!data.join("server/db").exists(), "nothing was started");
}

fn manifest_dir(server: &Server) -> PathBuf {
    server.path("data/server/manifests")
}

fn config_map(namespace: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  key: {value}\n"
    )
}

#[test]
fn addon_manifests_are_applied_updated_recorded_and_skipped() {
    // A fresh data dir whose manifests are there before the first start.
    let mut server = Server::start();
    server.stop();
    std::fs::remove_dir_all(server.path("data")).expect("wipe data dir");
    let manifests = manifest_dir(&server);
    write(
        &manifests,
        "first.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: addon-test\n---\n{}",
            config_map("addon-test", "first", "one")
        ),
    );
    write(&manifests, "broken.yaml", "apiVersion: v1\nkind: [oops\n");
    write(
        &manifests,
        "unknown-kind.json",
        r#"{"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}"#,
    );
    server.spawn();
    let kubectl = server.kubectl("kubectl");
    let cm = [
        "get",
        "configmap",
        "first",
        "-n",
        "addon-test",
        "-o",
        "jsonpath={.data.key}",
    ];
    kubectl.wait_for(&cm, 20, |out| out == "one");
    // Recorded: an Addon per file, with the checksum of what was applied.
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(manifests.join("first.yaml")).expect("read"),
        ))
    };
    let addon = kubectl.ok(&[
        "get",
        "addons.kelp.io",
        "first",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.source} {.spec.checksum}",
    ]);
    assert_eq!(
        addon,
        format!("{} {sum}", manifests.join("first.yaml").display())
    );
    let fields = kubectl.ok(&[
        "get",
        "configmap",
        "first",
        "-n",
        "addon-test",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(fields.contains("kelp-addons"), "{fields}");
    // Broken files are reported and do not stop the others.
    kubectl.wait_for(
        &[
            "get",
            "events",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.involvedObject.name}{\"\\n\"}{end}",
        ],
        20,
        |out| {
            out.contains("ApplyManifestFailed broken")
                && out.contains("ApplyManifestFailed unknown-kind")
        },
    );
    assert!(server.log().contains("applying add-on manifest"));

    // An edit is applied within a few seconds.
    let started = Instant::now();
    write(
        &manifests,
        "first.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: addon-test\n---\n{}",
            config_map("addon-test", "first", "two")
        ),
    );
    kubectl.wait_for(&cm, 10, |out| out == "two");
    eprintln!("edit applied after {:?}", started.elapsed());

    // A .skip file keeps its manifest out; the scan is in name order, so
    // once `third` exists, `second` was looked at and left alone.
    write(&manifests, "second.yaml.skip", "");
    write(
        &manifests,
        "second.yaml",
        &config_map("addon-test", "second", "x"),
    );
    write(
        &manifests,
        "third.yaml",
        &config_map("addon-test", "third", "x"),
    );
    kubectl.wait_for(
        &[
            "get",
            "configmap",
            "third",
            "-n",
            "addon-test",
            "-o",
            "name",
        ],
        10,
        |out| out.contains("third"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = kubectl.run(&["get", "configmap", "second", "-n", "addon-test"]);
    assert!(!out.status.success(), "a skipped manifest was applied");
    assert!(
        !kubectl
            .ok(&["get", "addons.kelp.io", "-n", "kube-system", "-o", "name"])
            .contains("second")
    );

    // An unchanged file is not applied again after a restart: a change made
    // through the API stays.
    kubectl.ok(&[
        "patch",
        "configmap",
        "first",
        "-n",
        "addon-test",
        "--type",
        "merge",
        "-p",
        r#"{"data": {"key": "by-hand"}}"#,
    ]);
    server.stop();
    server.spawn();
    write(
        &manifests,
        "fourth.yaml",
        &config_map("addon-test", "fourth", "x"),
    );
    kubectl.wait_for(
        &[
            "get",
            "configmap",
            "fourth",
            "-n",
            "addon-test",
            "-o",
            "name",
        ],
        20,
        |out| out.contains("fourth"),
    );
    assert_eq!(kubectl.ok(&cm), "by-hand");
    // ... and an edit after the restart is.
    write(
        &manifests,
        "first.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: addon-test\n---\n{}",
            config_map("addon-test", "first", "three")
        ),
    );
    kubectl.wait_for(&cm, 10, |out| out == "three");
}

#[test]
fn systemd_is_told_when_the_server_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path();
    let socket_path = tmp.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let port = free_port();
    let log = tmp.join("server.log");
    let port_text = port.to_string();
    let data = tmp.join("data");
    let kubeconfig = tmp.join("admin.yaml");
    let mut child = Running(spawn(
        &[
            "--config",
            "/dev/null",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port_text,
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--write-kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
        ],
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))],
        &log,
    ));
    let mut buffer = [0u8; 512];
    let n = socket.recv(&mut buffer).unwrap_or_else(|e| {
        panic!(
            "no READY=1 ({e}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(message.starts_with("READY=1\n"), "{message:?}");
    // Ready means serving: the API answers right away.
    let (code, body) = common::https_get_anonymous(port, "/readyz");
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert!(kubeconfig.exists());

    let _ = Command::new("kill").arg(child.0.id().to_string()).status();
    let n = socket.recv(&mut buffer).expect("STOPPING=1");
    assert_eq!(&buffer[..n], b"STOPPING=1\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // Nothing else was sent (containerd and others do not report as kelp).
    socket.set_nonblocking(true).expect("nonblocking");
    assert!(socket.recv(&mut buffer).is_err());
}
