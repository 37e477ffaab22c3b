//! MASQUERADE for pod traffic leaving the cluster CIDR, in kelp's own nat
//! chain (`KELP-POSTROUTING`, jumped to from POSTROUTING). Only this chain and
//! the one jump rule are ever touched.

use std::process::Command;

/// kelp's nat chain.
pub const CHAIN: &str = "KELP-POSTROUTING";
const COMMENT: &str = "kelp pod masquerade";

fn iptables(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("iptables")
        .arg("-w")
        .args(["-t", "nat"])
        .args(args)
        .output()
}

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
fn ensure_rule(chain: &str, args: &[&str]) -> Result<(), String> {
    let mut check = vec!["-C", chain];
    check.extend_from_slice(args);
    if iptables(&check)
        .map_err(|e| format!("running iptables: {e}"))?
        .status
        .success()
    {
        return Ok(());
    }
    let mut append = vec!["-A", chain];
    append.extend_from_slice(args);
    let out = iptables(&append).map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables -t nat -A {chain}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes traffic from `cluster_cidr` to outside it leave with the node's address.
/// Idempotent. Callers serialise concurrent calls (the plugin holds its lock).
pub fn ensure(cluster_cidr: &str) -> Result<(), String> {
    // Creating an existing chain fails harmlessly; the checks below decide.
    let _ = iptables(&["-N", CHAIN]);
    ensure_rule("POSTROUTING", &jump())?;
    ensure_rule(CHAIN, &rule(cluster_cidr))
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
