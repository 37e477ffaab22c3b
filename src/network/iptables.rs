//! iptables through its commands (what every distribution's iptables,
//! legacy or nft, accepts): single rules for masquerade.rs and hostport.rs,
//! whole rule sets through `iptables-restore` for the service proxy.

use std::process::Command;

/// Runs `iptables -w -t nat ARGS`.
pub fn iptables(args: &[&str]) -> std::io::Result<std::process::Output> {
    in_table("nat", args)
}

/// Runs `iptables -w -t TABLE ARGS`.
pub fn in_table(table: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("iptables")
        .arg("-w")
        .args(["-t", table])
        .args(args)
        .output()
}

/// Appends the rule to `chain` of the nat table unless it is there.
pub fn ensure_rule(chain: &str, args: &[&str]) -> Result<(), String> {
    ensure_rule_in("nat", chain, args, false)
}

/// Adds the rule to `chain` of `table` unless it is there: first in the
/// chain when `first`, else last.
pub fn ensure_rule_in(table: &str, chain: &str, args: &[&str], first: bool) -> Result<(), String> {
    let mut check = vec!["-C", chain];
    check.extend_from_slice(args);
    if in_table(table, &check)
        .map_err(|e| format!("running iptables: {e}"))?
        .status
        .success()
    {
        return Ok(());
    }
    let mut add = vec![if first { "-I" } else { "-A" }, chain];
    add.extend_from_slice(args);
    let out = in_table(table, &add).map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables -t {table} {} {chain}: {}",
            add[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes the rule (recognised by its `marker` comment) the first of
/// `chain` in `table`: rules others insert later at the top would
/// otherwise decide first (kube-proxy's forwarding ACCEPTs, for one).
pub fn ensure_first_in(
    table: &str,
    chain: &str,
    args: &[&str],
    marker: &str,
) -> Result<(), String> {
    let listed = in_table(table, &["-S", chain]).map_err(|e| format!("running iptables: {e}"))?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let first = text.lines().find(|l| l.starts_with("-A "));
    if first.is_some_and(|l| l.contains(marker)) {
        return Ok(());
    }
    let mut delete = vec!["-D", chain];
    delete.extend_from_slice(args);
    while in_table(table, &delete).is_ok_and(|o| o.status.success()) {}
    ensure_rule_in(table, chain, args, true)
}

/// Applies `input` with `iptables-restore --noflush` (chains it declares
/// are flushed; others untouched), all tables in one transaction each.
pub fn restore(input: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("writing to iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The user-defined chains of `table` (from `iptables-save`).
pub fn chains(table: &str) -> Result<Vec<String>, String> {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .map_err(|e| format!("running iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save -t {table}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// The rules of a chain as `iptables -S` prints them, split into arguments
/// (double-quoted comments kept whole).
pub fn rules(chain: &str) -> Vec<Vec<String>> {
    let Ok(out) = iptables(&["-S", chain]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(split_words)
        .collect()
}

fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_rules_split_with_quoted_comments_whole() {
        let words = split_words(
            r#"-A KELP-HOSTPORTS -p tcp -m comment --comment "kelp hostport abc" -j DNAT"#,
        );
        assert_eq!(words[6], "--comment");
        assert_eq!(words[7], "kelp hostport abc");
        assert_eq!(words.len(), 10);
    }
}
