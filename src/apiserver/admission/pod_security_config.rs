//! Pod Security admission's configuration (upstream's
//! `PodSecurityConfiguration` inside an `AdmissionConfiguration` file,
//! `--admission-control-config-file`): the levels of namespaces without
//! labels (`defaults`) and who is exempt (`exemptions`: usernames,
//! runtimeClasses, namespaces), as k3s's hardened set-ups use it.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::pod_security::Policy;

/// The configuration in force (upstream's built-in: privileged everywhere, no exemptions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSecurityConfig {
    /// The policy of namespaces without (some) pod-security labels.
    pub defaults: Policy,
    /// Requests by these users are not checked.
    pub usernames: Vec<String>,
    /// Pods with these runtime classes are not checked.
    pub runtime_classes: Vec<String>,
    /// Pods in these namespaces are not checked.
    pub namespaces: Vec<String>,
}

#[derive(Deserialize)]
struct AdmissionConfiguration {
    #[serde(default)]
    plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
struct Plugin {
    name: String,
    #[serde(default)]
    configuration: Option<Value>,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Exemptions {
    #[serde(default)]
    usernames: Vec<String>,
    #[serde(default)]
    runtime_classes: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
}

impl PodSecurityConfig {
    /// Reads an AdmissionConfiguration file's PodSecurity plugin (a
    /// configuration inline or at `path`, relative to the file).
    pub fn from_admission_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: AdmissionConfiguration =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some(plugin) = config.plugins.into_iter().find(|p| p.name == "PodSecurity") else {
            return Ok(Self::default());
        };
        let configuration = match (plugin.configuration, plugin.path) {
            (Some(inline), _) => inline,
            (None, Some(relative)) => {
                let file = path
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join(relative);
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?
            }
            (None, None) => return Ok(Self::default()),
        };
        Self::from_configuration(&configuration)
            .map_err(|e| format!("{}: PodSecurity: {e}", path.display()))
    }

    /// Reads a PodSecurityConfiguration object.
    pub fn from_configuration(configuration: &Value) -> Result<Self, String> {
        let kind = configuration["kind"].as_str().unwrap_or_default();
        if kind != "PodSecurityConfiguration" {
            return Err(format!(
                "kind must be PodSecurityConfiguration, not {kind:?}"
            ));
        }
        // defaults use the namespace labels' words: enforce, enforce-version, …
        let mut labels = Map::new();
        if let Some(defaults) = configuration["defaults"].as_object() {
            for (key, value) in defaults {
                labels.insert(format!("pod-security.kubernetes.io/{key}"), value.clone());
            }
        }
        let (defaults, errors) = Policy::from_labels(&labels);
        if let Some(error) = errors.first() {
            return Err(format!("defaults: {}", error.body()));
        }
        let exemptions: Exemptions =
            serde_json::from_value(configuration["exemptions"].clone()).unwrap_or_default();
        Ok(PodSecurityConfig {
            defaults,
            usernames: exemptions.usernames,
            runtime_classes: exemptions.runtime_classes,
            namespaces: exemptions.namespaces,
        })
    }

    /// Whether a write of `pod` (or a template) by `user` in `namespace` is exempt.
    pub fn exempt(&self, user: &str, namespace: &str, pod_spec: &Value) -> bool {
        self.usernames.iter().any(|u| u == user)
            || self.namespaces.iter().any(|n| n == namespace)
            || pod_spec["runtimeClassName"]
                .as_str()
                .is_some_and(|rc| self.runtime_classes.iter().any(|r| r == rc))
    }

    /// The namespace object as admission should judge it: its labels over
    /// the configured defaults.
    pub fn effective_namespace(&self, namespace: &Value) -> Value {
        if self.defaults == Policy::default() {
            return namespace.clone();
        }
        let mut labels = self.default_labels();
        if let Some(own) = namespace
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
        {
            for (k, v) in own {
                labels.insert(k.clone(), v.clone());
            }
        }
        let mut effective = namespace.clone();
        effective["metadata"]["labels"] = Value::Object(labels);
        effective
    }

    fn default_labels(&self) -> Map<String, Value> {
        let mut labels = Map::new();
        for (mode, level) in [
            ("enforce", &self.defaults.enforce),
            ("audit", &self.defaults.audit),
            ("warn", &self.defaults.warn),
        ] {
            labels.insert(
                format!("pod-security.kubernetes.io/{mode}"),
                json!(level.level.as_str()),
            );
            labels.insert(
                format!("pod-security.kubernetes.io/{mode}-version"),
                json!(level.version.to_string()),
            );
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: "restricted"
      enforce-version: "latest"
      warn: "restricted"
    exemptions:
      usernames: [system:serviceaccount:ci:deployer]
      runtimeClasses: [kata]
      namespaces: [kube-system]
"#;

    #[test]
    fn defaults_and_exemptions_as_k3s_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admission.yaml");
        std::fs::write(&path, FILE).expect("write");
        let config = PodSecurityConfig::from_admission_file(&path).expect("parses");
        assert_eq!(config.defaults.enforce.level.as_str(), "restricted");
        assert!(config.exempt("system:serviceaccount:ci:deployer", "default", &json!({})));
        assert!(config.exempt("jane", "kube-system", &json!({})));
        assert!(config.exempt("jane", "default", &json!({"runtimeClassName": "kata"})));
        assert!(!config.exempt("jane", "default", &json!({})));
        let bare = config.effective_namespace(&json!({"metadata": {"name": "team"}}));
        assert_eq!(
            bare["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let own = config.effective_namespace(&json!({"metadata": {"name": "t", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}));
        assert_eq!(
            own["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
        assert!(PodSecurityConfig::from_configuration(&json!({"kind": "Other"})).is_err());
        let bad = json!({"kind": "PodSecurityConfiguration", "defaults": {"enforce": "strictest"}});
        assert!(
            PodSecurityConfig::from_configuration(&bad)
                .unwrap_err()
                .contains("defaults")
        );
    }
}
