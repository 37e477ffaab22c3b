//! MASQUERADE for pod traffic leaving the cluster CIDR, in kelp's own nat
//! chain (`KELP-POSTROUTING`, jumped to from POSTROUTING). Only this chain and
//! the one jump rule are ever touched.

use super::iptables::{ensure_rule, iptables};

/// kelp's nat chain.
pub const CHAIN: &str = "KELP-POSTROUTING";
const COMMENT: &str = "kelp pod masquerade";

fn rule(cluster_cidr: &str) -> Vec<&str> {
    vec![
        "-s",
        cluster_cidr,
        "!",
        "-d",
        cluster_cidr,
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "MASQUERADE",
    ]
}

fn jump() -> Vec<&'static str> {
    vec!["-m", "comment", "--comment", COMMENT, "-j", CHAIN]
}

/// Appends `args` to `chain` unless an identical rule is there.
/// Makes traffic from `cluster_cidr` to outside it leave with the node's address.
/// Idempotent. Callers serialise concurrent calls (the plugin holds its lock).
pub fn ensure(cluster_cidr: &str) -> Result<(), String> {
    ensure_chain()?;
    ensure_rule(CHAIN, &rule(cluster_cidr))
}

/// kelp's chain and the jump to it from POSTROUTING.
fn ensure_chain() -> Result<(), String> {
    // Creating an existing chain fails harmlessly; the checks below decide.
    let _ = iptables(&["-N", CHAIN]);
    ensure_rule("POSTROUTING", &jump())
}

/// Masquerades the node's own connections from 127.0.0.0/8 that DNAT sends
/// out through `bridge` (hostPort reached at 127.0.0.1).
pub fn ensure_localhost(bridge: &str) -> Result<(), String> {
    ensure_chain()?;
    ensure_rule(
        CHAIN,
        &[
            "-s",
            "127.0.0.0/8",
            "-o",
            bridge,
            "-m",
            "comment",
            "--comment",
            COMMENT,
            "-j",
            "MASQUERADE",
        ],
    )
}

/// Removes the rule for `cluster_cidr`; when kelp's chain is left empty, the
/// jump and the chain go too.
pub fn remove(cluster_cidr: &str) -> Result<(), String> {
    let mut delete = vec!["-D", CHAIN];
    let args = rule(cluster_cidr);
    delete.extend_from_slice(&args);
    while iptables(&delete)
        .map_err(|e| e.to_string())?
        .status
        .success()
    {}
    let listing = iptables(&["-S", CHAIN]).map_err(|e| e.to_string())?;
    let rules = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| l.starts_with("-A"))
        .count();
    if listing.status.success() && rules == 0 {
        let mut unjump = vec!["-D", "POSTROUTING"];
        unjump.extend_from_slice(&jump());
        while iptables(&unjump)
            .map_err(|e| e.to_string())?
            .status
            .success()
        {}
        let _ = iptables(&["-X", CHAIN]);
    }
    Ok(())
}
