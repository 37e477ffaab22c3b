//! The helm job's program in kelp's job image: kelp's binary invoked as
//! `entry`, beside a real `helm`. It keeps klipper-helm's contract (the
//! environment, `/config/*.yaml`, `/chart/NAME.tgz.base64`, `/auth`,
//! `/ca-files`, `/dev/termination-log`, args `install …` or `delete`) and its
//! decisions ([`decide`], pure): install when there is no release, upgrade a
//! deployed one, reset an interrupted one, apply the failure policy to a
//! failed one, never act when the release moved past the revision the
//! controller expected. Where klipper-helm calls the `set-status` plugin,
//! kelp rewrites the newest release record itself; its `mapkubeapis` step is
//! not run (charts' removed APIs are not rewritten).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::ResourceExt as _;

const TERM_LOG: &str = "/dev/termination-log";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The newest release as `helm status -o json` tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseState {
    /// `info.status`.
    pub status: String,
    /// `version`.
    pub revision: i64,
    /// `apply_method` (helm 4: `ssa` or `csa`).
    pub apply_method: String,
}

/// What the job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing; exit with the code, after saying why.
    Exit(i32, String),
    /// `helm install`.
    Install,
    /// `helm upgrade`.
    Upgrade,
    /// `helm uninstall --wait` (the delete job).
    Uninstall,
    /// Mark the interrupted release failed, then upgrade.
    ResetThenUpgrade,
    /// Mark the interrupted release failed, then apply the failure policy.
    ResetThen(Box<Decision>),
    /// `helm uninstall --wait`, then `helm install`.
    Reinstall,
}

/// klipper-helm's decision for `command` (`install` or `delete`) given the
/// release, the revision the controller expected and the failure policy.
pub fn decide(
    command: &str,
    release: Option<&ReleaseState>,
    expected: &str,
    failure_policy: &str,
) -> Decision {
    let stale = |r: &ReleaseState| !expected.is_empty() && expected != r.revision.to_string();
    if command == "delete" {
        return match release {
            None => Decision::Exit(0, "No helm chart installed; nothing to delete".into()),
            Some(r) if stale(r) => Decision::Exit(0, mismatch(r, expected)),
            Some(_) => Decision::Uninstall,
        };
    }
    let Some(release) = release else {
        return Decision::Install;
    };
    if stale(release) {
        return Decision::Exit(0, mismatch(release, expected));
    }
    let by_policy = |status: &str| match failure_policy {
        "abort" => Decision::Exit(
            1,
            format!(
                "Release status is '{status}' and failure policy is '{failure_policy}'; waiting for operator intervention"
            ),
        ),
        "reinstall" | "" => Decision::Reinstall,
        "retry" => Decision::Upgrade,
        other => Decision::Exit(1, format!("Unknown failure policy '{other}'")),
    };
    match release.status.as_str() {
        "pending-upgrade" | "superseded" => Decision::ResetThenUpgrade,
        "pending-install" | "pending-rollback" | "uninstalling" => {
            Decision::ResetThen(Box::new(by_policy("failed")))
        }
        "deployed" => Decision::Upgrade,
        status @ ("deleted" | "failed" | "null" | "unknown") => by_policy(status),
        _ => Decision::Install,
    }
}

fn mismatch(release: &ReleaseState, expected: &str) -> String {
    format!(
        "Current release revision {} does not match expected revision {expected}",
        release.revision
    )
}

/// The `--server-side`/`--force-conflicts` flags (helm 4 only).
pub fn ssa_args(
    release: Option<&ReleaseState>,
    server_side: &str,
    force_conflicts: &str,
) -> Vec<String> {
    let mut server_side = server_side.to_string();
    let mut force = force_conflicts.to_string();
    if release.is_none() && server_side == "auto" {
        server_side = "true".into();
    }
    let ssa_release = release.is_some_and(|r| r.apply_method == "ssa");
    if force == "true" && (server_side == "false" || (server_side == "auto" && !ssa_release)) {
        force = "false".into();
    }
    let mut args = Vec::new();
    if !server_side.is_empty() {
        args.push(format!("--server-side={server_side}"));
    }
    if !force.is_empty() {
        args.push(format!("--force-conflicts={force}"));
    }
    args
}

/// Replaces `%{KUBERNETES_API}%` with the API server's host and port.
pub fn expand_chart(chart: &str, host: &str, port: &str) -> String {
    let api = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    chart.replace("%{KUBERNETES_API}%", &api)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn say(line: &str) {
    println!("{line}");
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(TERM_LOG) {
        let _ = writeln!(log, "{line}");
    }
}

/// The job: runs until helm is done; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    // helm cut off mid-operation leaves the release pending: do not stop.
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) };
    }
    match job(args) {
        Ok(code) => code,
        Err(e) => {
            say(&format!("{e:#}"));
            1
        }
    }
}

struct Helm {
    common: Vec<String>,
    values: Vec<String>,
    name: String,
    chart: String,
    namespace: String,
    major: u32,
}

impl Helm {
    fn run(&self, args: &[String]) -> Result<i32> {
        println!("+ helm {}", args.join(" "));
        let status = Command::new("helm")
            .args(args)
            .status()
            .context("running helm")?;
        Ok(status.code().unwrap_or(1))
    }

    fn status(&self) -> Result<Option<ReleaseState>> {
        let out = Command::new("helm")
            .args([
                "status",
                "--namespace",
                &self.namespace,
                &self.name,
                "--output",
                "json",
            ])
            .output()
            .context("running helm status")?;
        if !out.status.success() {
            return Ok(None);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reading helm status")?;
        Ok(Some(ReleaseState {
            status: doc["info"]["status"].as_str().unwrap_or_default().into(),
            revision: doc["version"].as_i64().unwrap_or_default(),
            apply_method: doc["apply_method"].as_str().unwrap_or_default().into(),
        }))
    }

    /// `install` (args as given: `install [flags]`) or `upgrade` (the
    /// same flags) of the release.
    fn apply(&self, args: &[String], upgrade: bool, release: Option<&ReleaseState>) -> Result<i32> {
        let mut line: Vec<String> = Vec::new();
        if upgrade {
            line.push("upgrade".into());
            line.extend(args.iter().skip(1).cloned());
        } else {
            line.extend(args.iter().cloned());
        }
        line.push(self.name.clone());
        line.push(self.chart.clone());
        line.extend(self.common.iter().cloned());
        if self.major >= 4 {
            line.extend(ssa_args(
                release,
                &var("SERVER_SIDE"),
                &var("FORCE_CONFLICTS"),
            ));
        }
        line.extend(self.values.iter().cloned());
        self.run(&line)
    }

    fn uninstall(&self) -> Result<i32> {
        self.run(&[
            "uninstall".into(),
            self.name.clone(),
            "--namespace".into(),
            self.namespace.clone(),
            "--wait".into(),
        ])
    }
}

fn job(args: &[String]) -> Result<i32> {
    let command = args.first().map(String::as_str).unwrap_or("install");
    let name = var("NAME");
    let namespace = var("TARGET_NAMESPACE");
    let mut chart = expand_chart(
        &var("CHART"),
        &var("KUBERNETES_SERVICE_HOST"),
        &var("KUBERNETES_SERVICE_PORT"),
    );
    if var("HELM_VERSION") == "v2" {
        say("Helm v2 is EOL effective 2020-11-13; upgrade your chart to helm v3");
        return Ok(64);
    }
    // helm trusts the cluster CA for the API and for repositories.
    let sa_ca = format!("{SA_DIR}/ca.crt");
    // SAFETY: single-threaded here, before any helm runs.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &sa_ca);
        std::env::set_var("SSL_CERT_DIR", "/etc/ssl/certs");
        std::env::set_var("HELM_TLS_CA_CERT", &sa_ca);
    }
    let mut common = Vec::new();
    let mut bundle = String::new();
    let ca_files = std::iter::once(PathBuf::from("/config/ca-file.pem"))
        .chain(sorted_files(Path::new("/ca-files"), |_| true));
    for file in ca_files {
        if let Ok(pem) = std::fs::read_to_string(&file) {
            bundle.push('\n');
            bundle.push_str(&pem);
        }
    }
    if !bundle.is_empty() {
        std::fs::write("/tmp/ca-file.pem", bundle).context("writing /tmp/ca-file.pem")?;
        common.extend(["--ca-file".into(), "/tmp/ca-file.pem".into()]);
    }
    if var("INSECURE_SKIP_TLS_VERIFY") == "true" {
        common.push("--insecure-skip-tls-verify".into());
    }
    if var("PLAIN_HTTP") == "true" {
        common.push("--plain-http".into());
    }
    let timeout = var("TIMEOUT");
    if !timeout.is_empty() {
        common.extend(["--timeout".into(), timeout]);
    }
    let hash = var("CONFIG_HASH");
    if !hash.is_empty() {
        common.extend(["--labels".into(), format!("{}={hash}", super::CONFIG_HASH)]);
    }
    let encoded = PathBuf::from(format!("/chart/{name}.tgz.base64"));
    if encoded.exists() {
        let text = std::fs::read_to_string(&encoded).context("reading the chart content")?;
        let tgz = STANDARD
            .decode(text.split_whitespace().collect::<String>())
            .context("decoding the chart content")?;
        let path = format!("/tmp/{name}.tgz");
        std::fs::write(&path, tgz).context("writing the chart")?;
        chart = path;
    }
    let values = sorted_files(Path::new("/config"), |p| {
        p.extension().is_some_and(|e| e == "yaml")
    })
    .flat_map(|p| ["--values".to_string(), p.display().to_string()])
    .collect();
    let helm = Helm {
        common,
        values,
        name: name.clone(),
        chart,
        namespace: namespace.clone(),
        major: helm_major(),
    };
    if command != "delete" {
        repo_init(&helm, &name)?;
    }
    let release = helm.status()?;
    let decision = decide(
        command,
        release.as_ref(),
        &var("EXPECTED_RELEASE_REVISION"),
        &var("FAILURE_POLICY"),
    );
    act(&helm, args, release.as_ref(), decision)
}

fn act(
    helm: &Helm,
    args: &[String],
    release: Option<&ReleaseState>,
    decision: Decision,
) -> Result<i32> {
    match decision {
        Decision::Exit(code, why) => {
            say(&why);
            Ok(code)
        }
        Decision::Install => {
            say("Installing helm chart");
            helm.apply(args, false, None)
        }
        Decision::Upgrade => {
            say("Upgrading helm chart");
            helm.apply(args, true, release)
        }
        Decision::Uninstall => {
            say("Uninstalling helm chart");
            let _ = helm.uninstall();
            Ok(0)
        }
        Decision::Reinstall => {
            say(&format!(
                "Uninstalling {} helm chart",
                release.map(|r| r.status.as_str()).unwrap_or_default()
            ));
            helm.uninstall()?;
            say("Installing helm chart");
            helm.apply(args, false, None)
        }
        Decision::ResetThenUpgrade | Decision::ResetThen(_) => {
            let status = release.map(|r| r.status.clone()).unwrap_or_default();
            say(&format!(
                "Resetting helm release status from '{status}' to 'failed'"
            ));
            mark_failed(&helm.name, &helm.namespace)?;
            match decision {
                Decision::ResetThen(next) => act(helm, args, release, *next),
                _ => {
                    say("Retrying upgrade of helm chart");
                    helm.apply(args, true, release)
                }
            }
        }
    }
}

/// Files of `dir` (none if it is missing) that `keep` accepts, by name.
fn sorted_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> impl Iterator<Item = PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    files.sort();
    files.into_iter()
}

fn helm_major() -> u32 {
    Command::new("helm")
        .args(["version", "--template", "{{.Version}}"])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.trim_start_matches('v').split('.').next()?.parse().ok()
        })
        .unwrap_or(3)
}

fn repo_init(helm: &Helm, name: &str) -> Result<()> {
    if helm.chart.starts_with("http://") || helm.chart.starts_with("https://") {
        return Ok(());
    }
    let ca_and_tls = strip_valued(&helm.common);
    if helm.chart.starts_with("stable/") {
        let mut add = vec!["repo".into(), "add".into()];
        add.extend(ca_and_tls.iter().cloned());
        add.extend([
            "stable".into(),
            std::env::var("STABLE_REPO_URL")
                .unwrap_or_else(|_| "https://charts.helm.sh/stable/".into()),
        ]);
        helm.run(&add)?;
        helm.run(&["repo".into(), "update".into()])?;
    }
    let repo = var("REPO");
    if repo.is_empty() {
        return Ok(());
    }
    let mut add = vec!["repo".into(), "add".into()];
    add.extend(ca_and_tls.iter().cloned());
    if var("AUTH_PASS_CREDENTIALS") == "true" && Path::new("/auth").is_dir() {
        add.push("--pass-credentials".into());
    }
    let user = std::fs::read_to_string("/auth/username").ok();
    let password = std::fs::read_to_string("/auth/password").ok();
    let mut stdin = None;
    if let (Some(user), Some(password)) = (user, password) {
        add.extend([
            "--username".into(),
            user.trim().into(),
            "--password-stdin".into(),
        ]);
        stdin = Some(password);
    } else if Path::new("/auth/tls.crt").exists() && Path::new("/auth/tls.key").exists() {
        add.extend([
            "--cert-file".into(),
            "/auth/tls.crt".into(),
            "--key-file".into(),
            "/auth/tls.key".into(),
        ]);
    }
    add.extend([name.split('/').next().unwrap_or(name).to_string(), repo]);
    println!("+ helm {}", add.join(" "));
    let mut child = Command::new("helm")
        .args(&add)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running helm repo add")?;
    if let (Some(password), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(password.as_bytes());
    }
    if !child.wait()?.success() {
        bail!("helm repo add failed");
    }
    helm.run(&["repo".into(), "update".into()])?;
    Ok(())
}

/// `common` less `--timeout V` and `--labels V` (what `repo add` does not take).
fn strip_valued(common: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in common {
        if skip {
            skip = false;
            continue;
        }
        if arg == "--timeout" || arg == "--labels" {
            skip = true;
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// klipper-helm's `helm set-status NAME failed`: rewrites the newest
/// release record (status in the record and its label) through the API.
fn mark_failed(name: &str, namespace: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let token = std::fs::read_to_string(format!("{SA_DIR}/token"))?;
        let ca = std::fs::read_to_string(format!("{SA_DIR}/ca.crt"))?;
        let host = var("KUBERNETES_SERVICE_HOST");
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let server = format!("https://{host}:{}", var("KUBERNETES_SERVICE_PORT"));
        let client = crate::http::client::remote(
            &server,
            &ca,
            crate::http::client::Identity::Token(token.trim().into()),
        )?;
        let configmaps = var("HELM_DRIVER") == "configmap";
        let params = kube::api::ListParams::default().labels(&format!("owner=helm,name={name}"));
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        use kube::api::{Api, PostParams};
        if configmaps {
            let api: Api<ConfigMap> = Api::namespaced(client, namespace);
            let Some(mut newest) = newest(api.list(&params).await?.items) else {
                return Ok(());
            };
            let data = newest.data.get_or_insert_default();
            let record = data.get("release").cloned().unwrap_or_default();
            data.insert(
                "release".into(),
                String::from_utf8(failed_record(record.as_bytes())?)?,
            );
            newest.labels_mut().insert("status".into(), "failed".into());
            api.replace(
                &kube::ResourceExt::name_any(&newest),
                &PostParams::default(),
                &newest,
            )
            .await?;
        } else {
            let api: Api<Secret> = Api::namespaced(client, namespace);
            let Some(mut newest) = newest(api.list(&params).await?.items) else {
                return Ok(());
            };
            let data = newest.data.get_or_insert_default();
            let record = data.get("release").map(|b| b.0.clone()).unwrap_or_default();
            data.insert(
                "release".into(),
                k8s_openapi::ByteString(failed_record(&record)?),
            );
            newest.labels_mut().insert("status".into(), "failed".into());
            api.replace(
                &kube::ResourceExt::name_any(&newest),
                &PostParams::default(),
                &newest,
            )
            .await?;
        }
        Ok(())
    })
}

/// The record with the highest `version` label.
fn newest<K: kube::Resource>(records: Vec<K>) -> Option<K> {
    records.into_iter().max_by_key(|r| {
        r.meta()
            .labels
            .as_ref()
            .and_then(|l| l.get("version"))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_default()
    })
}

/// A helm release record (base64 of gzipped JSON) with `info.status` failed.
pub fn failed_record(record: &[u8]) -> Result<Vec<u8>> {
    let gz = STANDARD
        .decode(record)
        .context("decoding the release record")?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .context("unpacking the release record")?;
    let mut doc: serde_json::Value = serde_json::from_slice(&json)?;
    doc["info"]["status"] = "failed".into();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&serde_json::to_vec(&doc)?)?;
    Ok(STANDARD.encode(encoder.finish()?).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(status: &str, revision: i64) -> ReleaseState {
        ReleaseState {
            status: status.into(),
            revision,
            apply_method: String::new(),
        }
    }

    #[test]
    fn decisions_follow_klipper_helm() {
        assert_eq!(decide("install", None, "0", "reinstall"), Decision::Install);
        assert_eq!(
            decide("install", Some(&release("deployed", 1)), "1", "reinstall"),
            Decision::Upgrade
        );
        assert!(matches!(
            decide("install", Some(&release("deployed", 2)), "1", "reinstall"),
            Decision::Exit(0, _)
        ));
        assert_eq!(
            decide("install", Some(&release("failed", 1)), "1", "reinstall"),
            Decision::Reinstall
        );
        assert_eq!(
            decide("install", Some(&release("failed", 1)), "1", "retry"),
            Decision::Upgrade
        );
        assert!(matches!(
            decide("install", Some(&release("failed", 1)), "1", "abort"),
            Decision::Exit(1, _)
        ));
        assert_eq!(
            decide(
                "install",
                Some(&release("pending-upgrade", 3)),
                "3",
                "abort"
            ),
            Decision::ResetThenUpgrade
        );
        assert_eq!(
            decide(
                "install",
                Some(&release("pending-install", 1)),
                "1",
                "reinstall"
            ),
            Decision::ResetThen(Box::new(Decision::Reinstall))
        );
        assert!(matches!(
            decide("delete", None, "0", ""),
            Decision::Exit(0, _)
        ));
        assert_eq!(
            decide("delete", Some(&release("deployed", 1)), "1", ""),
            Decision::Uninstall
        );
    }

    #[test]
    fn server_side_flags_as_klipper_helm_sets_them() {
        assert_eq!(
            ssa_args(None, "auto", "true"),
            ["--server-side=true", "--force-conflicts=true"]
        );
        let csa = ReleaseState {
            apply_method: "csa".into(),
            ..release("deployed", 1)
        };
        assert_eq!(
            ssa_args(Some(&csa), "auto", "true"),
            ["--server-side=auto", "--force-conflicts=false"]
        );
        assert_eq!(
            expand_chart("https://%{KUBERNETES_API}%/x.tgz", "fd00::1", "6443"),
            "https://[fd00::1]:6443/x.tgz"
        );
    }

    #[test]
    fn a_release_record_is_marked_failed() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(br#"{"name":"x","info":{"status":"pending-upgrade"},"version":3}"#)
            .unwrap();
        let record = STANDARD.encode(encoder.finish().unwrap());
        let out = failed_record(record.as_bytes()).unwrap();
        let gz = STANDARD.decode(out).unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut json)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["info"]["status"], "failed");
        assert_eq!(doc["version"], 3);
    }
}
