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
    Ok(saved(&["-t", table])?
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// Every table's rules as `iptables-save` prints them.
pub fn save() -> Result<String, String> {
    saved(&[])
}

/// The output of `iptables-save ARGS`.
fn saved(args: &[&str]) -> Result<String, String> {
    let out = Command::new("iptables-save")
        .args(args)
        .output()
        .map_err(|e| format!("running iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A jump from a built-in chain into a component's own rules.
#[derive(Debug, Clone, Copy)]
pub struct Jump<'a> {
    /// Its table.
    pub table: &'a str,
    /// The built-in chain holding it.
    pub chain: &'a str,
    /// The rule's arguments (after the chain).
    pub args: &'a [&'a str],
    /// Whether it must be the chain's first rule.
    pub first: bool,
}

/// Whether what a component last applied is still in place, judged from one
/// `iptables-save` (`save`): every chain `restore` (the `iptables-restore
/// --noflush` input applied) declares exists with as many rules as it gave
/// it, and every jump is there (first in its chain where it must be). A
/// resync with nothing new to write checks this instead of writing again:
/// a flushed or deleted chain (a firewall reload) is noticed, and costs
/// one command instead of one per rule.
pub fn in_place(save: &str, restore: &str, jumps: &[Jump]) -> bool {
    let saved = tables(save);
    let wanted = tables(restore);
    let chains_ok = wanted.iter().all(|(table, want)| {
        let Some(have) = saved.get(table) else {
            return false;
        };
        want.declared.iter().all(|chain| {
            have.declared.contains(chain) && have.rules(chain).count() == want.rules(chain).count()
        })
    });
    chains_ok
        && jumps.iter().all(|jump| {
            let Some(have) = saved.get(jump.table) else {
                return false;
            };
            // Containment, not equality: iptables-save orders and adds
            // matches its own way (`-p tcp -m tcp`).
            let matches = |rule: &&str| {
                let words = split_words(rule);
                jump.args.iter().all(|w| words.iter().any(|have| have == w))
            };
            let mut rules = have.rules(jump.chain);
            match jump.first {
                true => rules.next().as_ref().is_some_and(matches),
                false => rules.any(|r| matches(&r)),
            }
        })
}

/// [`in_place`] against the rules as they are now; false when they cannot
/// be read (the caller writes them again).
pub fn still_in_place(restore: &str, jumps: &[Jump]) -> bool {
    save().is_ok_and(|saved| in_place(&saved, restore, jumps))
}

/// Whether a pass may leave its rules as they are: `text` is what it last
/// wrote and, at a resync, `check` (given `text`; [`still_in_place`] with
/// the pass's jumps) finds them still in place, run off the async threads.
pub async fn unchanged(
    written: Option<&str>,
    text: &str,
    resync: bool,
    check: impl FnOnce(&str) -> bool + Send + 'static,
) -> bool {
    if written != Some(text) {
        return false;
    }
    if !resync {
        return true;
    }
    let text = text.to_string();
    tokio::task::spawn_blocking(move || check(&text))
        .await
        .unwrap_or(false)
}

/// One table of an `iptables-save` or `iptables-restore` text: the chains
/// it declares and its rule lines.
#[derive(Default)]
struct Table<'a> {
    declared: Vec<&'a str>,
    lines: Vec<&'a str>,
}

impl<'a> Table<'a> {
    /// The rules appended to `chain`, in order, without `-A CHAIN`.
    fn rules(&self, chain: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.lines.iter().filter_map(move |l| {
            l.strip_prefix("-A ")?
                .strip_prefix(chain)?
                .strip_prefix(' ')
                .map(str::trim)
        })
    }
}

fn tables(text: &str) -> std::collections::HashMap<&str, Table<'_>> {
    let mut tables = std::collections::HashMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            current = Some(name.trim());
            tables.entry(name.trim()).or_insert_with(Table::default);
            continue;
        }
        let Some(table) = current.and_then(|t| tables.get_mut(t)) else {
            continue;
        };
        if let Some(chain) = line.strip_prefix(':') {
            if let Some(name) = chain.split_whitespace().next() {
                table.declared.push(name);
            }
        } else if line.starts_with("-A ") {
            table.lines.push(line);
        } else if line.starts_with("COMMIT") {
            current = None;
        }
    }
    tables
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

    const RESTORE: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n\
        -A KUBE-SERVICES -d 10.43.0.1/32 -p tcp -j KUBE-SVC-A\n\
        -A KUBE-SVC-A -j DNAT --to-destination 10.42.0.5:80\n\
        -A KUBE-SVC-A -j DNAT --to-destination 10.42.0.6:80\n\
        -X KUBE-SVC-OLD\nCOMMIT\n";
    const SAVE: &str = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n\
        :FORWARD ACCEPT [0:0]\n\
        -A FORWARD -m comment --comment \"kelp network policies\" -j KELP-NETPOL\n\
        -A FORWARD -j ACCEPT\nCOMMIT\n\
        *nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n\
        -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
        -A KUBE-SERVICES -d 10.43.0.1/32 -p tcp -j KUBE-SVC-A\n\
        -A KUBE-SVC-A -j DNAT --to-destination 10.42.0.5:80\n\
        -A KUBE-SVC-A -j DNAT --to-destination 10.42.0.6:80\nCOMMIT\n";
    // Matched by containment: a jump names the words that identify it.
    const PORTALS: Jump = Jump {
        table: "nat",
        chain: "PREROUTING",
        args: &["kubernetes service portals", "-j", "KUBE-SERVICES"],
        first: false,
    };
    const POLICIES: Jump = Jump {
        table: "filter",
        chain: "FORWARD",
        args: &["kelp network policies", "-j", "KELP-NETPOL"],
        first: true,
    };

    #[test]
    fn applied_rules_and_jumps_are_found_in_place() {
        assert!(in_place(SAVE, RESTORE, &[PORTALS, POLICIES]));
    }

    #[test]
    fn a_flushed_or_deleted_chain_or_a_lost_jump_is_noticed() {
        let flushed = SAVE.replace("-A KUBE-SVC-A -j DNAT --to-destination 10.42.0.6:80\n", "");
        assert!(!in_place(&flushed, RESTORE, &[]));
        let deleted = flushed
            .replace(":KUBE-SVC-A - [0:0]\n", "")
            .replace("-A KUBE-SVC-A -j DNAT --to-destination 10.42.0.5:80\n", "");
        assert!(!in_place(&deleted, RESTORE, &[]));
        let no_nat = SAVE.split("*nat").next().unwrap();
        assert!(!in_place(no_nat, RESTORE, &[]));
        let no_jump = SAVE.replace(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
            "",
        );
        assert!(in_place(&no_jump, RESTORE, &[]));
        assert!(!in_place(&no_jump, RESTORE, &[PORTALS]));
    }

    #[test]
    fn a_jump_that_must_come_first_is_noticed_when_pushed_down() {
        let pushed = SAVE.replace(
            ":FORWARD ACCEPT [0:0]\n",
            ":FORWARD ACCEPT [0:0]\n-A FORWARD -j DOCKER-USER\n",
        );
        assert!(in_place(&pushed, RESTORE, &[PORTALS]));
        assert!(!in_place(&pushed, RESTORE, &[POLICIES]));
        let later = Jump {
            first: false,
            ..POLICIES
        };
        assert!(in_place(&pushed, RESTORE, &[later]));
    }

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
