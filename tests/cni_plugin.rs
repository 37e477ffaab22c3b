//! End-to-end: `kelp-cni` ADD/CHECK/DEL against a real network namespace with
//! real netlink, on a bridge and subnet of the test's own; everything it
//! creates is removed, also when an assertion fails.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

/// The test's own pod network (inside kelp's default 10.42.0.0/16).
const CLUSTER_CIDR: &str = "10.42.250.0/24";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The namespace and bridge of one test run, removed on drop.
struct Fixture {
    /// One namespace per pod.
    netns: Vec<String>,
    bridge: String,
    dir: tempfile::TempDir,
    cni: std::path::PathBuf,
    /// The host's ip_forward before the test (ADD turns it on), restored on drop.
    ip_forward: String,
}

impl Fixture {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let netns: Vec<String> = (0..2).map(|n| format!("kelp-test-{id}-{n}")).collect();
        let bridge = format!("kelptest{id}");
        let dir = tempfile::tempdir().expect("tmp");
        let cni = dir.path().join("kelp-cni");
        std::os::unix::fs::symlink(common::kelp_bin(), &cni).expect("symlink");
        let ip_forward = std::fs::read_to_string(IP_FORWARD).expect("read ip_forward");
        let fixture = Self {
            netns: Vec::new(),
            bridge,
            dir,
            cni,
            ip_forward,
        };
        let mut fixture = fixture;
        for ns in netns {
            let ok = Command::new("ip")
                .args(["netns", "add", &ns])
                .status()
                .expect("ip netns add");
            assert!(
                ok.success(),
                "creating a test network namespace (root needed)"
            );
            fixture.netns.push(ns);
        }
        fixture
    }

    /// Runs the plugin for pod `pod` (its container ID and namespace).
    fn invoke(&self, command: &str, pod: usize) -> (bool, serde_json::Value) {
        let container = format!("pod-{pod}");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "kelp-test", "type": "kelp-cni",
            "bridge": self.bridge, "subnet": "10.42.250.0/24",
            "dataDir": self.dir.path().join("state"),
            "clusterCIDR": CLUSTER_CIDR,
        });
        let mut child = Command::new(&self.cni)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &container)
            .env("CNI_NETNS", format!("/var/run/netns/{}", self.netns[pod]))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("kelp-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write conf");
        let out = child.wait_with_output().expect("kelp-cni output");
        let result = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.success(), result)
    }

    fn in_netns(&self, pod: usize, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns[pod]])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::write(IP_FORWARD, &self.ip_forward);
        let _ = kelp::network::masquerade::remove(CLUSTER_CIDR);
    }
}

#[test]
fn add_check_del_wire_a_pod_to_the_bridge() {
    let fx = Fixture::new();
    let (ok, result) = fx.invoke("ADD", 0);
    assert!(ok, "ADD failed: {result}");
    assert_eq!(result["ips"][0]["address"], "10.42.250.2/24", "{result}");
    assert_eq!(result["ips"][0]["gateway"], "10.42.250.1");
    let host_veth = result["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();

    let addr =
        String::from_utf8_lossy(&fx.in_netns(0, &["ip", "-4", "addr", "show", "eth0"]).stdout)
            .into_owned();
    assert!(addr.contains("10.42.250.2/24"), "{addr}");
    let route = String::from_utf8_lossy(&fx.in_netns(0, &["ip", "route"]).stdout).into_owned();
    assert!(route.contains("default via 10.42.250.1"), "{route}");
    // Node to pod and pod to gateway, by IP, over the bridge.
    let ping = Command::new("ping")
        .args(["-c", "1", "-W", "2", "10.42.250.2"])
        .output()
        .expect("ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(
        fx.in_netns(0, &["ping", "-c", "1", "-W", "2", "10.42.250.1"])
            .status
            .success()
    );

    // Traffic leaving the cluster CIDR is masqueraded, in kelp's own chain.
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", kelp::network::masquerade::CHAIN])
        .output()
        .expect("iptables");
    let rules = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert!(
        rules.contains("-s 10.42.250.0/24 ! -d 10.42.250.0/24") && rules.contains("-j MASQUERADE"),
        "{rules}"
    );

    // A second pod gets the next address; ADD again is idempotent.
    let (ok, second) = fx.invoke("ADD", 1);
    assert!(ok, "{second}");
    assert_eq!(second["ips"][0]["address"], "10.42.250.3/24");
    assert!(fx.invoke("ADD", 1).0, "a repeated ADD succeeds");
    // Pod to pod across the bridge.
    assert!(
        fx.in_netns(1, &["ping", "-c", "1", "-W", "2", "10.42.250.2"])
            .status
            .success()
    );
    assert!(fx.invoke("CHECK", 0).0);

    // DEL removes the veth pair and frees the address; a second DEL still succeeds.
    assert!(fx.invoke("DEL", 0).0);
    assert!(fx.invoke("DEL", 0).0);
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["link", "show"])
            .output()
            .expect("ip link")
            .stdout,
    )
    .into_owned();
    assert!(!links.contains(&host_veth), "{links}");
    let (ok, unknown) = fx.invoke("CHECK", 0);
    assert!(!ok && unknown["code"] == 3, "{unknown}");
    assert!(fx.invoke("DEL", 1).0);
}
