//! The config file and its drop-ins, as k3s reads them: `/etc/kelp/config.yaml`
//! (or `--config` / `KELP_CONFIG`), then `<config>.d/*.yaml` (and `*.yml`) in
//! name order. Keys are the long flag names of the subcommand being run
//! (`write-kubeconfig-mode: "0644"`, `node-label: [a=b, c=d]`,
//! `disable-agent: true`); a later file wins over an earlier one for the same
//! key, and `KEY+:` appends to a list flag's value from the earlier files.
//!
//! The merged values become flags placed in the argument list just after the
//! subcommand, but only for flags neither given on the command line nor set in
//! the environment, so precedence is flag > `KELP_<FLAG>` > files. Keys and
//! values are checked against clap's own definition of the subcommand, so the
//! file and the flags cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde_yaml_ng::Value;

use super::Cli;

/// The config file used when neither `--config` nor `KELP_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/kelp/config.yaml";

/// One key of a config file, where it was last set.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The flag name (without `--`, without a trailing `+`).
    pub key: String,
    /// Its value: a scalar or a list.
    pub value: Value,
    /// The file that set it last.
    pub file: PathBuf,
    /// The line of the key in that file (1-based), when found.
    pub line: Option<usize>,
}

impl Entry {
    /// `FILE:LINE` (or `FILE`) for messages.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// Parses the command line, with the config files' values merged in.
pub fn parse(args: &[String]) -> Result<Cli> {
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => e.exit(),
    };
    let Some((name, _)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    // The subcommand path whose flags the files may set, and whether keys
    // it does not know are refused.
    let (path, strict) = match name {
        "server" => (vec!["server"], true),
        "agent" => (vec!["agent"], true),
        // `kelp images import` takes the keys it shares with the server
        // (data-dir, container-runtime-endpoint) and ignores the others.
        "images" => (vec!["images", "import"], false),
        _ => return Ok(Cli::from_arg_matches(&matches)?),
    };
    let mut command = Cli::command();
    let mut sub_matches: &ArgMatches = &matches;
    for name in &path {
        command = command
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| anyhow!("no subcommand {name}"))?;
        match sub_matches.subcommand_matches(name) {
            Some(m) => sub_matches = m,
            None => return Ok(Cli::from_arg_matches(&matches)?),
        }
    }
    let (config, explicit) = config_path(sub_matches);
    let entries = read_all(&config, explicit)?;
    let extra = to_flags(&command, sub_matches, &entries, strict)?;
    if extra.is_empty() {
        return Ok(Cli::from_arg_matches(&matches)?);
    }
    // Insert after the subcommand's own name(s) in the argument list.
    let mut at = 1;
    for name in &path {
        while at < args.len() && args[at] != *name {
            at += 1;
        }
        at += 1;
    }
    let mut all: Vec<String> = args[..at.min(args.len())].to_vec();
    all.extend(extra);
    all.extend(args[at.min(args.len())..].iter().cloned());
    match Cli::try_parse_from(&all) {
        Ok(cli) => Ok(cli),
        Err(e) => e.exit(),
    }
}

/// The config file and whether it was asked for (a missing one is then an error).
fn config_path(matches: &ArgMatches) -> (PathBuf, bool) {
    let given = matches
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .filter(|_| {
            !matches!(
                matches.value_source("config"),
                Some(ValueSource::DefaultValue) | None
            )
        })
        .cloned()
        .or_else(|| std::env::var_os("KELP_CONFIG").map(PathBuf::from));
    match given {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// A server flag's value as the config files set it (`KELP_CONFIG` or the
/// default file, and drop-ins), for commands that use the server's files
/// without taking its flags: `kelp kubectl` finds the admin kubeconfig so.
pub fn server_setting(key: &str) -> Option<String> {
    let (config, explicit) = match std::env::var_os("KELP_CONFIG") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let entries = read_all(&config, explicit).ok()?;
    entries
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| scalar(&e.value))
}

/// The drop-in directory of a config file: `<config>.d`.
pub fn drop_in_dir(config: &Path) -> PathBuf {
    let mut dir = config.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// Reads the config file and its drop-ins and merges them (later wins).
pub fn read_all(config: &Path, explicit: bool) -> Result<Vec<Entry>> {
    let mut files = Vec::new();
    match std::fs::read_to_string(config) {
        Ok(text) => files.push(parse_file(config, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => bail!("reading config file {}: {e}", config.display()),
    }
    let dir = drop_in_dir(config);
    if let Ok(listing) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                    && p.is_file()
            })
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow!("reading config file {}: {e}", path.display()))?;
            files.push(parse_file(&path, &text)?);
        }
    }
    merge(files)
}

/// The keys of one file, in order; a key ending in `+` keeps its `+`.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Entry>> {
    let value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| anyhow!("{}: invalid YAML: {e}", path.display()))?;
    let mapping = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(mapping) => mapping,
        _ => bail!(
            "{}: expected a mapping of flag names to values",
            path.display()
        ),
    };
    let mut entries = Vec::new();
    for (key, value) in mapping {
        let Value::String(key) = key else {
            bail!("{}: keys must be flag names (strings)", path.display());
        };
        entries.push(Entry {
            line: key_line(text, &key),
            key,
            value,
            file: path.to_path_buf(),
        });
    }
    Ok(entries)
}

/// The 1-based line where top-level `key` is set in `text`.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let rest = if let Some(r) = line.strip_prefix(key) {
                r
            } else if let Some(r) = line
                .strip_prefix('"')
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix('"'))
            {
                r
            } else if let Some(r) = line
                .strip_prefix('\'')
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix('\''))
            {
                r
            } else {
                return false;
            };
            rest.trim_start().starts_with(':')
        })
        .map(|i| i + 1)
}

/// Merges files in order: a later key replaces an earlier one; `KEY+`
/// appends to the list set so far.
pub fn merge(files: Vec<Vec<Entry>>) -> Result<Vec<Entry>> {
    let mut merged: Vec<Entry> = Vec::new();
    for entry in files.into_iter().flatten() {
        let (key, append) = match entry.key.strip_suffix('+') {
            Some(base) => (base.to_string(), true),
            None => (entry.key.clone(), false),
        };
        let existing = merged.iter().position(|e| e.key == key);
        let value = match (append, existing) {
            (true, Some(i)) => {
                let mut items = as_list(&merged[i].value);
                items.extend(as_list(&entry.value));
                Value::Sequence(items)
            }
            (true, None) => Value::Sequence(as_list(&entry.value)),
            (false, _) => entry.value,
        };
        let entry = Entry {
            key,
            value,
            ..entry
        };
        match existing {
            Some(i) => merged[i] = entry,
            None => merged.push(entry),
        }
    }
    Ok(merged)
}

fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Sequence(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// A scalar as the text a flag would take.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flags (`--KEY=VALUE`) that carry the files' values into `command`,
/// leaving out those set on the command line or in the environment. With
/// `strict`, keys `command` has no flag for are refused and every value is
/// checked by clap.
pub fn to_flags(
    command: &clap::Command,
    matches: &ArgMatches,
    entries: &[Entry],
    strict: bool,
) -> Result<Vec<String>> {
    let name = command.get_name().to_string();
    let mut flags = Vec::new();
    for entry in entries {
        let key = &entry.key;
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()));
        let Some(arg) = arg else {
            if strict {
                bail!(
                    "{}: unknown key {key:?}: kelp {name} has no --{key} flag",
                    entry.location()
                );
            }
            continue;
        };
        if key == "config" {
            if strict {
                bail!(
                    "{}: key \"config\" cannot be set in a config file",
                    entry.location()
                );
            }
            continue;
        }
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let mut these = Vec::new();
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match &entry.value {
                Value::Bool(b) => {
                    if *b == matches!(arg.get_action(), ArgAction::SetTrue) {
                        these.push(format!("--{key}"));
                    }
                }
                _ => bail!(
                    "{}: key {key:?} takes true or false, not {}",
                    entry.location(),
                    describe(&entry.value)
                ),
            },
            ArgAction::Append => {
                for item in as_list(&entry.value) {
                    let text = scalar(&item).ok_or_else(|| {
                        anyhow!(
                            "{}: key {key:?} takes a string or a list of strings, not {}",
                            entry.location(),
                            describe(&item)
                        )
                    })?;
                    these.push(format!("--{key}={text}"));
                }
            }
            ArgAction::Set => {
                let text = scalar(&entry.value).ok_or_else(|| {
                    anyhow!(
                        "{}: key {key:?} takes one value, not {}",
                        entry.location(),
                        describe(&entry.value)
                    )
                })?;
                these.push(format!("--{key}={text}"));
            }
            _ => bail!(
                "{}: key {key:?} cannot be set in a config file",
                entry.location()
            ),
        }
        if strict && !these.is_empty() {
            let mut argv = vec![name.clone()];
            argv.extend(these.iter().cloned());
            if let Err(e) = command.clone().try_get_matches_from(argv) {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                bail!(
                    "{}: {}",
                    entry.location(),
                    first.strip_prefix("error: ").unwrap_or(first)
                );
            }
        }
        flags.extend(these);
    }
    Ok(flags)
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> clap::Command {
        Cli::command()
            .find_subcommand("server")
            .expect("server")
            .clone()
    }

    fn flags_for(files: &[(&str, &str)], argv: &[&str]) -> Result<Vec<String>> {
        let parsed = files
            .iter()
            .map(|(path, text)| parse_file(Path::new(path), text))
            .collect::<Result<Vec<_>>>()?;
        let entries = merge(parsed)?;
        let mut full = vec!["server"];
        full.extend(argv);
        let matches = server().try_get_matches_from(full)?;
        to_flags(&server(), &matches, &entries, true)
    }

    #[test]
    fn every_server_flag_has_its_kelp_environment_variable() {
        for arg in server().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            // k3s's one exception: --server is K3S_URL.
            let want = match long {
                "server" => "KELP_URL".to_string(),
                _ => format!("KELP_{}", long.replace('-', "_").to_ascii_uppercase()),
            };
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
        }
    }

    #[test]
    fn later_files_win_and_lists_and_booleans_become_flags() {
        let flags = flags_for(
            &[
                (
                    "/c.yaml",
                    "https-listen-port: 7000\nnode-label:\n  - a=1\n  - b=2\ndisable-agent: true\nwrite-kubeconfig-mode: \"0644\"\n",
                ),
                ("/c.yaml.d/10.yaml", "https-listen-port: 7001\n"),
                ("/c.yaml.d/20.yaml", "node-taint: k=v:NoSchedule\nv: 2\n"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            flags,
            [
                "--https-listen-port=7001",
                "--node-label=a=1",
                "--node-label=b=2",
                "--disable-agent",
                "--write-kubeconfig-mode=0644",
                "--node-taint=k=v:NoSchedule",
                "--v=2",
            ]
        );
    }

    #[test]
    fn appending_with_a_plus_key() {
        let flags = flags_for(
            &[
                ("/c.yaml", "node-label: [a=1]\n"),
                ("/c.yaml.d/10.yaml", "node-label+: [b=2]\n"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(flags, ["--node-label=a=1", "--node-label=b=2"]);
    }

    #[test]
    fn flags_on_the_command_line_win_over_files() {
        let flags = flags_for(
            &[(
                "/c.yaml",
                "https-listen-port: 7000\nnode-label: [a=1]\ndisable-agent: false\n",
            )],
            &["--https-listen-port", "7100", "--node-label", "z=9"],
        )
        .unwrap();
        assert!(flags.is_empty(), "{flags:?}");
    }

    #[test]
    fn unknown_keys_are_refused_with_file_and_line() {
        let err = flags_for(
            &[(
                "/etc/kelp/config.yaml.d/10-x.yaml",
                "# c\ndata-dir: /x\nfoo: 1\n",
            )],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "/etc/kelp/config.yaml.d/10-x.yaml:3: unknown key \"foo\": kelp server has no --foo flag"
        );
    }

    #[test]
    fn wrong_types_are_refused_with_file_and_line() {
        let err = |text: &str| {
            flags_for(&[("/c.yaml", text)], &[])
                .unwrap_err()
                .to_string()
        };
        let e = err("https-listen-port: lots\n");
        assert!(
            e.starts_with("/c.yaml:1: invalid value 'lots' for '--https-listen-port"),
            "{e}"
        );
        assert_eq!(
            err("\ndisable-agent: yes please\n"),
            "/c.yaml:2: key \"disable-agent\" takes true or false, not a string"
        );
        assert_eq!(
            err("bind-address: [a, b]\n"),
            "/c.yaml:1: key \"bind-address\" takes one value, not a list"
        );
        assert_eq!(
            err("config: /x\n"),
            "/c.yaml:1: key \"config\" cannot be set in a config file"
        );
        let e = err("horizontal-pod-autoscaler-sync-period: soon\n");
        assert!(e.contains("invalid duration"), "{e}");
        assert!(err("- a\n").contains("expected a mapping"));
    }

    #[test]
    fn key_lines_are_found() {
        let text = "# x\n\"a\": 1\nb:\n  - c: 2\n'd' : 3\n";
        assert_eq!(key_line(text, "a"), Some(2));
        assert_eq!(key_line(text, "b"), Some(3));
        assert_eq!(key_line(text, "c"), None);
        assert_eq!(key_line(text, "d"), Some(5));
        assert!(parse_file(Path::new("/e.yaml"), "").unwrap().is_empty());
    }

    #[test]
    fn drop_ins_are_read_in_name_order_and_a_missing_default_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        assert!(read_all(&config, false).unwrap().is_empty());
        assert!(read_all(&config, true).is_err());
        std::fs::write(&config, "https-listen-port: 1\nbind-address: a\n").unwrap();
        let d = drop_in_dir(&config);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("20-b.yaml"), "https-listen-port: 3\n").unwrap();
        std::fs::write(d.join("10-a.yml"), "https-listen-port: 2\n").unwrap();
        std::fs::write(d.join("30-ignored.txt"), "https-listen-port: 9\n").unwrap();
        let entries = read_all(&config, false).unwrap();
        let port = entries
            .iter()
            .find(|e| e.key == "https-listen-port")
            .unwrap();
        assert_eq!(port.value, Value::Number(3.into()));
        assert_eq!(
            port.location(),
            format!("{}:1", d.join("20-b.yaml").display())
        );
        assert_eq!(entries.len(), 2);
    }
}
