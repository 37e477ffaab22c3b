//! A server and agents on one machine for join tests and benchmarks: each
//! agent in a network namespace of its own (own data dir and containerd),
//! joined to the server by a bridge the helper makes; all addresses inside
//! 10.99.7.0/24 and the cluster's CIDRs. Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Kubectl, Server, kelp_bin, test_image_tarball};

/// The namespace holding the "switch": a bridge every node's link plugs
/// into. The server's node keeps a plain veth end in the host namespace, as
/// a machine has a NIC: were its address on a bridge there, the service
/// proxy's `bridge-nf-call-iptables` would send a NodePort reply that goes
/// back out the same bridge through conntrack twice and lose about a third
/// of such connections (the test topology's own artefact).
pub const SWITCH: &str = "kelp-jtsw";
/// The server's link in the host namespace.
pub const SERVER_LINK: &str = "kjt0";
pub const SERVER_IP: &str = "10.99.7.1";

/// The test's network: a switch namespace with a bridge, the server's
/// address on a veth into it, and one namespace per agent, veth-attached.
/// Removed on drop, agents first.
pub struct JoinNetwork {
    namespaces: Vec<String>,
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run")
}

pub fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl JoinNetwork {
    pub fn new(agents: usize) -> Self {
        let mut network = JoinNetwork {
            namespaces: Vec::new(),
        };
        network.remove_leftovers(agents);
        must(&["ip", "netns", "add", SWITCH]);
        network.namespaces.push(SWITCH.into());
        must(&["ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", SWITCH, "link", "set", "br0", "up"]);
        must(&[
            "ip",
            "link",
            "add",
            SERVER_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            SWITCH,
        ]);
        must(&[
            "ip", "-n", SWITCH, "link", "set", "up0", "master", "br0", "up",
        ]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            SERVER_LINK,
        ]);
        must(&["ip", "link", "set", SERVER_LINK, "up"]);
        for i in 1..=agents {
            let ns = format!("kelp-jt{i}");
            let port = format!("kjt{i}");
            must(&["ip", "netns", "add", &ns]);
            network.namespaces.push(ns.clone());
            must(&[
                "ip", "-n", SWITCH, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&[
                "ip", "-n", SWITCH, "link", "set", &port, "master", "br0", "up",
            ]);
            let address = format!("{}/24", agent_ip(i));
            must(&["ip", "-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &ns, "route", "add", "default", "via", SERVER_IP]);
        }
        network
    }

    /// Cuts (or restores) agent `i`'s link to the switch.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        must(&["ip", "-n", SWITCH, "link", "set", &format!("kjt{i}"), state]);
    }

    /// What an earlier run that was killed may have left.
    fn remove_leftovers(&self, agents: usize) {
        for i in 1..=agents {
            let _ = sh(&["ip", "netns", "delete", &format!("kelp-jt{i}")]);
        }
        let _ = sh(&["ip", "netns", "delete", SWITCH]);
        let _ = sh(&["ip", "link", "delete", SERVER_LINK]);
    }
}

impl Drop for JoinNetwork {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = sh(&["ip", "netns", "delete", ns]);
        }
        // Gone with its peer in the switch; removed here if it is not yet.
        let _ = sh(&["ip", "link", "delete", SERVER_LINK]);
    }
}

pub fn agent_ip(i: usize) -> String {
    format!("10.99.7.{}", i + 1)
}

/// A `kelp agent` in its namespace.
pub struct Agent {
    netns: String,
    /// The agent's data dir.
    pub data_dir: PathBuf,
    log: PathBuf,
    /// `kelp agent`'s arguments.
    pub args: Vec<String>,
    child: Option<Child>,
    started: bool,
}

impl Agent {
    /// Prepares an agent (its data dir holds the test image for import at start).
    pub fn new(
        dir: &Path,
        i: usize,
        name: &str,
        server: &Server,
        token: &str,
        backend: &str,
    ) -> Self {
        let data_dir = dir.join(name);
        let images = data_dir.join("agent/images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::copy(test_image_tarball(), images.join("busybox.tar")).expect("copy test image");
        let resolv_conf = dir.join(format!("{name}-resolv.conf"));
        std::fs::write(&resolv_conf, "nameserver 127.0.0.154\n").expect("resolv.conf");
        let args = [
            "agent",
            "--config",
            "/dev/null",
            "--server",
            &format!("https://{SERVER_IP}:{}", server.port()),
            "--token",
            token,
            "--data-dir",
            data_dir.to_str().expect("utf-8"),
            "--node-name",
            name,
            "--node-ip",
            &agent_ip(i),
            "--resolv-conf",
            resolv_conf.to_str().expect("utf-8"),
            "--pod-network-backend",
            backend,
            "--cgroup-root",
            &format!("/kelp-{name}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Agent {
            netns: format!("kelp-jt{i}"),
            log: dir.join(format!("{name}.log")),
            data_dir,
            args,
            child: None,
            started: false,
        }
    }

    pub fn command(&self) -> Command {
        // nsenter, not `ip netns exec`: that remounts /sys, which hides the
        // cgroup mounts runc needs; only the network is the agent's own.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(kelp_bin())
            .args(&self.args);
        cmd
    }

    pub fn start(&mut self) -> Instant {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Some(
            self.command()
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start kelp agent"),
        );
        self.started = true;
        Instant::now()
    }

    /// Another data dir (a reinstalled machine, a second one claiming the name).
    pub fn use_data_dir(&mut self, dir: PathBuf) {
        self.set("--data-dir", &dir.display().to_string());
        self.data_dir = dir;
    }

    pub fn set(&mut self, flag: &str, value: &str) {
        let at = self.args.iter().position(|a| a == flag).expect("flag");
        self.args[at + 1] = value.to_string();
    }

    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::stop_child(
                child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(15),
            );
        }
    }

    /// Whether the agent process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a command inside the agent's network namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(args)
            .output()
            .expect("nsenter")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        if std::thread::panicking() {
            // What the pod network looked like from this node, and why.
            for args in [
                &["ip", "route"][..],
                &["bridge", "fdb", "show", "dev", "kelp.vxlan"],
            ] {
                let shown = Command::new("ip")
                    .args(["netns", "exec", &self.netns])
                    .args(args)
                    .output();
                if let Ok(shown) = shown {
                    eprintln!(
                        "--- {} in {}:\n{}",
                        args.join(" "),
                        self.netns,
                        String::from_utf8_lossy(&shown.stdout)
                    );
                }
            }
            let name = self
                .log
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            super::print_log_tail(&name, &self.log());
        }
        self.stop();
        // Pods outlive the agent by design; kelp-killall.sh stops them, in
        // the agent's namespace (its bridge and rules go with the namespace).
        let status = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kelp-killall.sh"))
            .env("KELP_DATA_DIR", &self.data_dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("kelp-killall.sh failed for {}", self.data_dir.display());
        }
    }
}

/// A server with its node on the test bridge (`SERVER_IP`), reachable by the
/// agents, with the pod network `backend`.
pub fn start_server(node: &str, backend: &str) -> Server {
    Server::start_node(&[
        "--node-name",
        node,
        "--node-ip",
        SERVER_IP,
        "--bind-address",
        "0.0.0.0",
        "--pod-network-backend",
        backend,
    ])
}

pub fn wait_ready(kubectl: &Kubectl, node: &str, agent: &Agent, seconds: u64) {
    if !kubectl.node_ready_within(node, seconds) {
        panic!(
            "node {node} did not become Ready; agent log:\n{}",
            agent.log()
        );
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
