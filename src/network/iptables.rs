//! The nat table through the `iptables` command (what every distribution's
//! iptables, legacy or nft, accepts), used by masquerade.rs and hostport.rs.

use std::process::Command;

/// Runs `iptables -w -t nat ARGS`.
pub fn iptables(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("iptables")
        .arg("-w")
        .args(["-t", "nat"])
        .args(args)
        .output()
}

/// Appends the rule to `chain` unless it is there.
pub fn ensure_rule(chain: &str, args: &[&str]) -> Result<(), String> {
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
