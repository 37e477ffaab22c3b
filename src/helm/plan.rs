//! What a HelmChart needs, decided without I/O: the Job and the objects it
//! mounts (k3s's names, labels, environment, mounts and security defaults),
//! the config hash that says when the chart must run again, and what to do
//! with the Job that exists.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{CONFIG_HASH, HelmChart, HelmChartConfig, LABEL_CHART, VALUES_SECRET_TYPE};

/// Job `backoffLimit` unless the chart sets `backOffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 1000;
/// The ClusterRole the job's ServiceAccount is bound to (k3s's choice).
pub const JOB_CLUSTER_ROLE: &str = "cluster-admin";
/// Proxy variables handed on from the controller's environment.
pub const PROXY_ENV: [&str; 8] = [
    "all_proxy",
    "ALL_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// What the plan is made from besides the chart.
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// The HelmChartConfig of the same name, if any.
    pub config: Option<&'a HelmChartConfig>,
    /// The data of the value Secrets whose changes re-run the chart.
    pub secrets: BTreeMap<String, BTreeMap<String, ByteString>>,
    /// The job image when the chart names none.
    pub default_image: &'a str,
    /// The API server's port, for bootstrap charts (host network).
    pub api_port: u16,
    /// Proxy variables of the controller's environment.
    pub proxy_env: Vec<(String, String)>,
}

/// The objects one HelmChart needs.
#[derive(Debug, Clone)]
pub struct Desired {
    /// `helm-install-NAME` or, for a chart being deleted, `helm-delete-NAME`.
    pub job: Job,
    /// `helm-NAME`.
    pub service_account: ServiceAccount,
    /// `helm-NS-NAME` to the job cluster role.
    pub binding: ClusterRoleBinding,
    /// `chart-values-NAME` (not for a delete job).
    pub values: Option<Secret>,
    /// `chart-content-NAME` (not for a delete job).
    pub content: Option<ConfigMap>,
    /// The config hash as the release label holds it (hex, at most 63).
    pub hash: String,
}

/// The name of the chart's job.
pub fn job_name(chart: &HelmChart) -> String {
    let name = chart.metadata.name.as_deref().unwrap_or_default();
    if chart.metadata.deletion_timestamp.is_some() {
        format!("helm-delete-{name}")
    } else {
        format!("helm-install-{name}")
    }
}

/// The namespace the release lives in.
pub fn target_namespace(chart: &HelmChart) -> String {
    if chart.spec.target_namespace.is_empty() {
        chart.metadata.namespace.clone().unwrap_or_default()
    } else {
        chart.spec.target_namespace.clone()
    }
}

/// Whether `--set` (typed) rather than `--set-string` carries the value.
fn typed(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(_) => true,
        IntOrString::String(s) => matches!(s.to_lowercase().as_str(), "true" | "false" | "null"),
    }
}

/// Escapes each comma not already escaped (an odd run of backslashes
/// before it counts as escaped once more), so helm keeps it in the value.
fn escape_commas(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut backslashes = 0;
    for c in value.chars() {
        if c == ',' && backslashes % 2 == 0 {
            out.push('\\');
        }
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        out.push(c);
    }
    out
}

/// The job container's arguments.
pub fn args(chart: &HelmChart) -> Vec<String> {
    if chart.metadata.deletion_timestamp.is_some() {
        return vec!["delete".into()];
    }
    let spec = &chart.spec;
    let mut args = vec!["install".to_string()];
    if !spec.target_namespace.is_empty() {
        args.extend(["--namespace".into(), spec.target_namespace.clone()]);
    }
    if spec.create_namespace {
        args.push("--create-namespace".into());
    }
    if spec.take_ownership {
        args.push("--take-ownership".into());
    }
    if !spec.version.is_empty() {
        args.extend(["--version".into(), spec.version.clone()]);
    }
    for (key, value) in &spec.set {
        let text = match value {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::String(s) => s.clone(),
        };
        if typed(value) {
            args.extend(["--set".into(), format!("{key}={text}")]);
        } else {
            args.extend([
                "--set-string".into(),
                format!("{key}={}", escape_commas(&text)),
            ]);
        }
    }
    args
}

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

fn yaml(value: &Value) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_else(|_| value.to_string())
}

fn is_empty(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    }
}

/// The projected items of `valuesSecrets` for stage `stage` (0: the
/// chart's, 1: the config's), numbered from 002 as k3s numbers them.
fn secret_sources(chart_name: &str, stage: u8, secrets: &[super::ValuesSecret]) -> Vec<Value> {
    let mut item = 1;
    let mut sources = Vec::new();
    for secret in secrets {
        if secret.keys.is_empty() || secret.name == format!("chart-values-{chart_name}") {
            continue;
        }
        let kind = if stage == 0 {
            "HelmChart"
        } else {
            "HelmChartConfig"
        };
        let items: Vec<Value> = secret
            .keys
            .iter()
            .map(|key| {
                item += 1;
                json!({"key": key, "path": format!("values-{stage}-{item:03}-{kind}-ValuesSecret.yaml")})
            })
            .collect();
        sources.push(json!({"secret": {"name": secret.name, "optional": secret.ignore_updates, "items": items}}));
    }
    sources
}

/// The Secrets whose data the hash covers: the values Secrets not marked
/// `ignoreUpdates`, from the chart and its config.
pub fn watched_secrets(chart: &HelmChart, config: Option<&HelmChartConfig>) -> Vec<String> {
    let name = chart.metadata.name.as_deref().unwrap_or_default();
    let own = format!("chart-values-{name}");
    let mut names: Vec<String> = chart
        .spec
        .values_secrets
        .iter()
        .chain(config.iter().flat_map(|c| c.spec.values_secrets.iter()))
        .filter(|s| !s.ignore_updates && s.name != own)
        .map(|s| s.name.clone())
        .collect();
    names.dedup();
    names
}

/// Every object the chart needs now.
pub fn desired(chart: &HelmChart, inputs: &Inputs) -> Desired {
    let name = chart.metadata.name.clone().unwrap_or_default();
    let namespace = chart.metadata.namespace.clone().unwrap_or_default();
    let spec = &chart.spec;
    let deleting = chart.metadata.deletion_timestamp.is_some();
    let config = inputs.config.filter(|_| !deleting);
    let chart_ref = if spec.repo.is_empty() {
        spec.chart.clone()
    } else {
        format!("{name}/{}", spec.chart)
    };
    let driver = if spec.driver.is_empty() {
        "secret"
    } else {
        spec.driver.as_str()
    };
    let mut env_vars = vec![
        env("NAME", &name),
        env("VERSION", &spec.version),
        env("REPO", &spec.repo),
        env("HELM_DRIVER", driver),
        env("CHART_NAMESPACE", &namespace),
        env("CHART", chart_ref),
        env("HELM_VERSION", &spec.helm_version),
        env("TARGET_NAMESPACE", target_namespace(chart)),
        env(
            "AUTH_PASS_CREDENTIALS",
            spec.auth_pass_credentials.to_string(),
        ),
        env(
            "INSECURE_SKIP_TLS_VERIFY",
            spec.insecure_skip_tls_verify.to_string(),
        ),
        env("PLAIN_HTTP", spec.plain_http.to_string()),
    ];
    if let Some(timeout) = &spec.timeout {
        env_vars.push(env("TIMEOUT", timeout));
    }
    let mut node_selector = json!({"kubernetes.io/os": "linux"});
    let mut tolerations = Value::Null;
    let mut host_network = Value::Null;
    if spec.bootstrap {
        node_selector["node-role.kubernetes.io/control-plane"] = json!("true");
        host_network = json!(true);
        tolerations = json!([
            {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"},
            {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "node-role.kubernetes.io/etcd", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        ]);
        env_vars.push(env("KUBERNETES_SERVICE_HOST", "127.0.0.1"));
        env_vars.push(env("KUBERNETES_SERVICE_PORT", inputs.api_port.to_string()));
        env_vars.push(env("BOOTSTRAP", "true"));
    }
    for (key, value) in &inputs.proxy_env {
        env_vars.push(env(key, value));
    }
    let memory = json!({"emptyDir": {"medium": "Memory"}});
    let mut volumes = vec![
        json!({"name": "klipper-helm", "emptyDir": memory["emptyDir"]}),
        json!({"name": "klipper-cache", "emptyDir": memory["emptyDir"]}),
        json!({"name": "klipper-config", "emptyDir": memory["emptyDir"]}),
        json!({"name": "tmp", "emptyDir": memory["emptyDir"]}),
    ];
    let mut mounts = vec![
        json!({"name": "klipper-helm", "mountPath": "/home/klipper-helm/.helm"}),
        json!({"name": "klipper-cache", "mountPath": "/home/klipper-helm/.cache"}),
        json!({"name": "klipper-config", "mountPath": "/home/klipper-helm/.config"}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    if let Some(auth) = &spec.auth_secret {
        volumes.push(
            json!({"name": "auth", "secret": {"secretName": auth.name, "defaultMode": 0o644}}),
        );
        mounts.push(json!({"name": "auth", "mountPath": "/auth"}));
    }
    if let Some(docker) = &spec.docker_registry_secret {
        volumes.push(json!({"name": "dockerconfig", "secret": {"secretName": docker.name, "defaultMode": 0o644,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}));
        mounts.push(json!({"name": "dockerconfig", "mountPath": "/home/klipper-helm/.docker"}));
    }
    if let Some(ca) = &spec.repo_ca_config_map {
        volumes.push(
            json!({"name": "ca-files", "configMap": {"name": ca.name, "defaultMode": 0o644}}),
        );
        mounts.push(json!({"name": "ca-files", "mountPath": "/ca-files"}));
    }

    // The values Secret and its projection, then the chart's content.
    let mut values_data: BTreeMap<String, String> = BTreeMap::new();
    let mut content_data: BTreeMap<String, String> = BTreeMap::new();
    if !deleting {
        let mut items = Vec::new();
        if !spec.values_content.is_empty() {
            values_data.insert("HelmChartValuesContent".into(), spec.values_content.clone());
            items.push(json!({"key": "HelmChartValuesContent", "path": "values-0-000-HelmChart-ValuesContent.yaml"}));
        }
        if !is_empty(&spec.values) {
            values_data.insert(
                "HelmChartValues".into(),
                yaml(spec.values.as_ref().unwrap_or(&Value::Null)),
            );
            items.push(
                json!({"key": "HelmChartValues", "path": "values-0-001-HelmChart-Values.yaml"}),
            );
        }
        if !spec.repo_ca.is_empty() {
            values_data.insert("RepoCA".into(), spec.repo_ca.clone());
            items.push(json!({"key": "RepoCA", "path": "ca-file.pem"}));
        }
        let mut sources = Vec::new();
        sources.extend(secret_sources(&name, 0, &spec.values_secrets));
        if let Some(config) = config {
            if !config.spec.values_content.is_empty() {
                values_data.insert(
                    "HelmChartConfigValuesContent".into(),
                    config.spec.values_content.clone(),
                );
                items.push(json!({"key": "HelmChartConfigValuesContent", "path": "values-1-000-HelmChartConfig-ValuesContent.yaml"}));
            }
            if !is_empty(&config.spec.values) {
                values_data.insert(
                    "HelmChartConfigValues".into(),
                    yaml(config.spec.values.as_ref().unwrap_or(&Value::Null)),
                );
                items.push(json!({"key": "HelmChartConfigValues", "path": "values-1-001-HelmChartConfig-Values.yaml"}));
            }
            sources.extend(secret_sources(&name, 1, &config.spec.values_secrets));
        }
        let mut own = json!({"name": format!("chart-values-{name}")});
        if !items.is_empty() {
            own["items"] = Value::Array(items);
        }
        sources.insert(0, json!({"secret": own}));
        volumes.push(
            json!({"name": "values", "projected": {"defaultMode": 0o644, "sources": sources}}),
        );
        mounts.push(json!({"name": "values", "mountPath": "/config"}));
        if !spec.chart_content.is_empty() {
            content_data.insert(format!("{name}.tgz.base64"), spec.chart_content.clone());
        }
        volumes.push(json!({"name": "content", "configMap": {"name": format!("chart-content-{name}"), "defaultMode": 0o644}}));
        mounts.push(json!({"name": "content", "mountPath": "/chart"}));
    }

    // Policies, the config's overriding the chart's.
    let mut failure_policy = if spec.failure_policy.is_empty() {
        "reinstall".to_string()
    } else {
        spec.failure_policy.clone()
    };
    let mut server_side = if spec.server_side.is_empty() {
        "auto".to_string()
    } else {
        spec.server_side.clone()
    };
    let mut force_conflicts = spec.force_conflicts;
    if let Some(config) = config {
        if !config.spec.failure_policy.is_empty() {
            failure_policy = config.spec.failure_policy.clone();
        }
        if !config.spec.server_side.is_empty() {
            server_side = config.spec.server_side.clone();
        }
        if let Some(force) = config.spec.force_conflicts {
            force_conflicts = force;
        }
    }
    env_vars.push(env("FAILURE_POLICY", failure_policy));
    env_vars.push(env("SERVER_SIDE", server_side));
    env_vars.push(env("FORCE_CONFLICTS", force_conflicts.to_string()));

    let pod_security = match &spec.pod_security_context {
        Some(custom) => serde_json::to_value(custom).unwrap_or_default(),
        None => json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
    };
    let security = match &spec.security_context {
        Some(custom) => serde_json::to_value(custom).unwrap_or_default(),
        None => json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                       "readOnlyRootFilesystem": true}),
    };
    let image = if spec.job_image.is_empty() {
        inputs.default_image
    } else {
        spec.job_image.as_str()
    };
    let backoff_limit = spec.back_off_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let mut pod_spec = json!({
        "restartPolicy": "OnFailure",
        "serviceAccountName": format!("helm-{name}"),
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": node_selector,
        "securityContext": pod_security,
        "containers": [{
            "name": "helm",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "args": args(chart),
            "env": env_vars,
            "securityContext": security,
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    if !host_network.is_null() {
        pod_spec["hostNetwork"] = host_network;
        pod_spec["tolerations"] = tolerations;
    }
    let mut template = json!({
        "metadata": {"labels": {LABEL_CHART: &name}, "annotations": {}},
        "spec": pod_spec,
    });

    // The hash: the back-off limit, the template, and every value's data.
    let mut hasher = Sha256::new();
    hasher.update(backoff_limit.to_string());
    hasher.update(serde_json::to_vec(&template).unwrap_or_default());
    let mut hash_data = |data: &BTreeMap<String, String>| {
        for (key, value) in data {
            hasher.update(key);
            hasher.update(value);
        }
    };
    hash_data(&content_data);
    hash_data(&values_data);
    for data in inputs.secrets.values() {
        let text: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        hash_data(&text);
    }
    let full = hex::encode_upper(hasher.finalize());
    template["metadata"]["annotations"][CONFIG_HASH] = json!(format!("SHA256={full}"));
    let hash: String = full.chars().take(63).collect();

    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(chart), "namespace": namespace, "labels": {LABEL_CHART: &name}},
        "spec": {"backoffLimit": backoff_limit, "template": template},
    });
    let service_account = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": format!("helm-{name}"), "namespace": namespace},
        "automountServiceAccountToken": true,
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("helm-{namespace}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": JOB_CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": format!("helm-{name}"), "namespace": namespace}],
    });
    let values = (!deleting).then(|| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("chart-values-{name}"), "namespace": namespace},
            "type": VALUES_SECRET_TYPE,
            "stringData": values_data,
        })
    });
    let content = (!deleting).then(|| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("chart-content-{name}"), "namespace": namespace},
            "data": content_data,
        })
    });
    Desired {
        job: from(job),
        service_account: from(service_account),
        binding: from(binding),
        values: values.map(from),
        content: content.map(from),
        hash,
    }
}

/// An object built above (well-formed by construction).
fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

/// The newest helm release record of a chart, read from its labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Release {
    /// `version` (0: no release).
    pub revision: i64,
    /// `status` (deployed, failed, pending-upgrade, ...).
    pub status: String,
    /// The config hash label the job wrote.
    pub hash: String,
}

/// The newest release among release records' labels.
pub fn newest_release<'a>(
    labels: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> Release {
    labels
        .into_iter()
        .filter_map(|l| {
            Some(Release {
                revision: l.get("version")?.parse().ok()?,
                status: l.get("status").cloned().unwrap_or_default(),
                hash: l.get(CONFIG_HASH).cloned().unwrap_or_default(),
            })
        })
        .max_by_key(|r| r.revision)
        .unwrap_or_default()
}

/// What to do about the chart's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No job yet: create it.
    Create,
    /// The job is stale: delete it (and create the new one once it is gone).
    Replace,
    /// The job is running or done and current: leave it.
    Keep,
    /// A delete job finished and no release is left: remove everything.
    Removed,
}

fn condition_true(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the job gave up (its Failed condition).
pub fn job_failed(job: &Job) -> bool {
    condition_true(job, "Failed")
}

fn template_hash(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH)
        .map(String::as_str)
}

/// Decides about the `existing` job given the one `desired` and the release.
pub fn step(desired: &Desired, existing: Option<&Job>, release: &Release, deleting: bool) -> Step {
    let Some(job) = existing else {
        return Step::Create;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Step::Keep;
    }
    if condition_true(job, "Complete") {
        if deleting {
            return if release.revision == 0 {
                Step::Removed
            } else {
                Step::Replace
            };
        }
        if release.status == "deployed" && release.hash == desired.hash {
            return Step::Keep;
        }
        return Step::Replace;
    }
    if template_hash(job) == template_hash(&desired.job) {
        Step::Keep
    } else {
        Step::Replace
    }
}

/// Adds what the job learns only after hashing: the release it expects to
/// find and the hash it labels the release with.
pub fn stamp(job: &mut Job, release: &Release, hash: &str) {
    if let Some(container) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|s| s.containers.first_mut())
    {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in [
            ("EXPECTED_RELEASE_REVISION", release.revision.to_string()),
            ("CONFIG_HASH", hash.to_string()),
        ] {
            env.push(k8s_openapi::api::core::v1::EnvVar {
                name: name.into(),
                value: Some(value),
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::{HelmChartConfigSpec, HelmChartSpec, ValuesSecret};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn chart(spec: HelmChartSpec) -> HelmChart {
        HelmChart {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    fn inputs() -> Inputs<'static> {
        Inputs {
            default_image: "kelp.local/klipper-helm:1",
            api_port: 6443,
            ..Default::default()
        }
    }

    fn env_of(job: &Job) -> BTreeMap<String, String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn set_values_are_typed_sorted_and_commas_escaped() {
        let mut spec = HelmChartSpec {
            target_namespace: "web".into(),
            create_namespace: true,
            version: "1.2.3".into(),
            ..Default::default()
        };
        spec.set.insert("z".into(), IntOrString::Int(3));
        spec.set
            .insert("b".into(), IntOrString::String("TRUE".into()));
        spec.set
            .insert("a".into(), IntOrString::String("x,y\\,z".into()));
        spec.set
            .insert("n".into(), IntOrString::String("null".into()));
        assert_eq!(
            args(&chart(spec)),
            [
                "install",
                "--namespace",
                "web",
                "--create-namespace",
                "--version",
                "1.2.3",
                "--set-string",
                "a=x\\,y\\,z",
                "--set",
                "b=TRUE",
                "--set",
                "n=null",
                "--set",
                "z=3",
            ]
        );
        let mut deleting = chart(HelmChartSpec::default());
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(args(&deleting), ["delete"]);
        assert_eq!(job_name(&deleting), "helm-delete-web");
    }

    #[test]
    fn the_job_has_k3s_names_env_and_defaults() {
        let c = chart(HelmChartSpec {
            chart: "nginx".into(),
            repo: "https://charts.example".into(),
            values_content: "a: 1\n".into(),
            chart_content: "dGd6".into(),
            ..Default::default()
        });
        let d = desired(&c, &inputs());
        assert_eq!(d.job.metadata.name.as_deref(), Some("helm-install-web"));
        let env = env_of(&d.job);
        assert_eq!(env["CHART"], "web/nginx");
        assert_eq!(env["TARGET_NAMESPACE"], "kube-system");
        assert_eq!(env["HELM_DRIVER"], "secret");
        assert_eq!(env["FAILURE_POLICY"], "reinstall");
        assert_eq!(env["SERVER_SIDE"], "auto");
        assert!(!env.contains_key("TIMEOUT") && !env.contains_key("BOOTSTRAP"));
        let spec = d.job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(DEFAULT_BACKOFF_LIMIT));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("helm-web"));
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let values = d.values.unwrap();
        assert_eq!(values.type_.as_deref(), Some(VALUES_SECRET_TYPE));
        assert_eq!(
            values.string_data.unwrap()["HelmChartValuesContent"],
            "a: 1\n"
        );
        assert_eq!(d.content.unwrap().data.unwrap()["web.tgz.base64"], "dGd6");
        assert_eq!(
            d.binding.metadata.name.as_deref(),
            Some("helm-kube-system-web")
        );
        assert_eq!(d.hash.len(), 63);
    }

    #[test]
    fn config_values_and_secrets_are_projected_in_precedence_order() {
        let c = chart(HelmChartSpec {
            chart: "x".into(),
            values_content: "a: 1".into(),
            values: Some(json!({"b": 2})),
            values_secrets: vec![ValuesSecret {
                name: "s1".into(),
                keys: vec!["k1".into(), "k2".into()],
                ignore_updates: false,
            }],
            ..Default::default()
        });
        let config = HelmChartConfig {
            metadata: c.metadata.clone(),
            spec: HelmChartConfigSpec {
                values_content: "c: 3".into(),
                values_secrets: vec![ValuesSecret {
                    name: "s2".into(),
                    keys: vec!["k".into()],
                    ignore_updates: true,
                }],
                failure_policy: "abort".into(),
                ..Default::default()
            },
        };
        let d = desired(
            &c,
            &Inputs {
                config: Some(&config),
                ..inputs()
            },
        );
        let pod = serde_json::to_value(d.job.spec.clone().unwrap().template.spec.unwrap()).unwrap();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "values")
            .unwrap();
        let paths: Vec<&str> = volume["projected"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["secret"]["items"].as_array().unwrap().iter())
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "values-0-000-HelmChart-ValuesContent.yaml",
                "values-0-001-HelmChart-Values.yaml",
                "values-1-000-HelmChartConfig-ValuesContent.yaml",
                "values-0-002-HelmChart-ValuesSecret.yaml",
                "values-0-003-HelmChart-ValuesSecret.yaml",
                "values-1-002-HelmChartConfig-ValuesSecret.yaml",
            ]
        );
        // helm reads them in name order: the precedence is in the names.
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(sorted[5], "values-1-002-HelmChartConfig-ValuesSecret.yaml");
        assert_eq!(env_of(&d.job)["FAILURE_POLICY"], "abort");
        assert_eq!(watched_secrets(&c, Some(&config)), ["s1"]);
    }

    #[test]
    fn the_hash_follows_values_and_secrets_but_not_the_stamp() {
        let c = chart(HelmChartSpec {
            chart: "x".into(),
            values_content: "a: 1".into(),
            ..Default::default()
        });
        let first = desired(&c, &inputs());
        let mut changed = c.clone();
        changed.spec.values_content = "a: 2".into();
        assert_ne!(desired(&changed, &inputs()).hash, first.hash);
        let mut with_secret = inputs();
        with_secret.secrets.insert(
            "s".into(),
            [("k".to_string(), ByteString(b"v".to_vec()))].into(),
        );
        assert_ne!(desired(&c, &with_secret).hash, first.hash);
        let mut stamped = first.job.clone();
        stamp(&mut stamped, &Release::default(), &first.hash);
        assert_eq!(
            step(&first, Some(&stamped), &Release::default(), false),
            Step::Keep
        );
    }

    #[test]
    fn steps_follow_the_job_and_the_release() {
        let c = chart(HelmChartSpec {
            chart: "x".into(),
            ..Default::default()
        });
        let d = desired(&c, &inputs());
        let none = Release::default();
        assert_eq!(step(&d, None, &none, false), Step::Create);
        let mut complete = d.job.clone();
        complete.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Complete", "status": "True"}]}))
                .unwrap(),
        );
        let deployed = Release {
            revision: 1,
            status: "deployed".into(),
            hash: d.hash.clone(),
        };
        assert_eq!(step(&d, Some(&complete), &deployed, false), Step::Keep);
        let stale = Release {
            hash: "other".into(),
            ..deployed.clone()
        };
        assert_eq!(step(&d, Some(&complete), &stale, false), Step::Replace);
        assert_eq!(step(&d, Some(&complete), &none, true), Step::Removed);
        assert_eq!(step(&d, Some(&complete), &deployed, true), Step::Replace);
        let mut changed = c.clone();
        changed.spec.version = "2".into();
        assert_eq!(
            step(&desired(&changed, &inputs()), Some(&d.job), &none, false),
            Step::Replace
        );
        let labels: Vec<BTreeMap<String, String>> = vec![
            [
                ("version".to_string(), "1".to_string()),
                ("status".to_string(), "superseded".to_string()),
            ]
            .into(),
            [
                ("version".to_string(), "2".to_string()),
                ("status".to_string(), "deployed".to_string()),
            ]
            .into(),
        ];
        assert_eq!(newest_release(&labels).status, "deployed");
        assert_eq!(newest_release(&labels).revision, 2);
    }
}
