//! Helm charts from manifests (k3s's helm-controller, `helm.cattle.io/v1`):
//! a `HelmChart` names a chart (a repository chart, a URL, or the chart's
//! `.tgz` inline) and its values; the server's [`controller`] turns it into
//! k3s's Job `helm-install-NAME` (on deletion `helm-delete-NAME`), its
//! ServiceAccount and ClusterRoleBinding, a values Secret and a chart
//! ConfigMap, under k3s's names, labels, environment and mounts, so that
//! k3s's own job image (`rancher/klipper-helm`) works as well as kelp's. The
//! Job runs the real `helm`; its release Secrets are helm's own, so a user's
//! `helm list` sees them. What the objects are is decided in [`plan`]
//! (pure); kelp's job image runs [`entry`] (the klipper-helm entry script's
//! decisions) next to a `helm` binary taken from the node.

pub mod controller;
pub mod entry;
pub mod plan;

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, PodSecurityContext, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API group.
pub const GROUP: &str = "helm.cattle.io";
/// kelp's own job image, built on each node that has a `helm` binary.
pub const JOB_IMAGE: &str = concat!("kelp.local/klipper-helm:", env!("CARGO_PKG_VERSION"));
/// The controller's name, written into the managed-by annotation.
pub const MANAGED_BY: &str = "helm-controller";
/// Annotation claiming a chart for one controller.
pub const ANNOTATION_MANAGED_BY: &str = "helmcharts.cattle.io/managed-by";
/// Annotation leaving a chart to someone else.
pub const ANNOTATION_UNMANAGED: &str = "helmcharts.helm.cattle.io/unmanaged";
/// Label on the Job and its pods naming the chart.
pub const LABEL_CHART: &str = "helmcharts.helm.cattle.io/chart";
/// The pod template annotation and the release label holding the config hash.
pub const CONFIG_HASH: &str = "helmcharts.helm.cattle.io/configHash";
/// The finalizer that runs the delete job before a chart goes.
pub const FINALIZER: &str = "wrangler.cattle.io/on-helm-chart-remove";
/// The values Secret's type.
pub const VALUES_SECRET_TYPE: &str = "helmcharts.helm.cattle.io/values";
/// helm's release Secret type.
pub const RELEASE_TYPE: &str = "helm.sh/release.v1";

/// `valuesSecrets[]`: keys of a Secret in the chart's namespace, each a
/// values file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValuesSecret {
    /// The Secret.
    #[serde(default)]
    pub name: String,
    /// Its keys, each a values file, in order.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Optional, and its changes do not re-run the chart.
    #[serde(default)]
    pub ignore_updates: bool,
}

/// `HelmChart.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // the fields are k3s's, documented in DESIGN.md
pub struct HelmChartSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_namespace: String,
    #[serde(default)]
    pub create_namespace: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    #[serde(default, rename = "repoCA", skip_serializing_if = "String::is_empty")]
    pub repo_ca: String,
    #[serde(
        default,
        rename = "repoCAConfigMap",
        skip_serializing_if = "Option::is_none"
    )]
    pub repo_ca_config_map: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helm_version: String,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, IntOrString>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<LocalObjectReference>,
    #[serde(default)]
    pub auth_pass_credentials: bool,
    #[serde(default, rename = "insecureSkipTLSVerify")]
    pub insecure_skip_tls_verify: bool,
    #[serde(default, rename = "plainHTTP")]
    pub plain_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_registry_secret: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub values_content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_secrets: Vec<ValuesSecret>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart_content: String,
    #[serde(default)]
    pub take_ownership: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_side: String,
    #[serde(default)]
    pub force_conflicts: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
}

/// A `HelmChartCondition`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `HelmChart.status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartStatus {
    /// The Job applying (or removing) the chart.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_name: String,
    /// `JobCreated` and `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A `HelmChart`: its name is the helm release's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HelmChart {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What to install.
    #[serde(default)]
    pub spec: HelmChartSpec,
    /// What the controller did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HelmChartStatus>,
}

/// `HelmChartConfig.spec`: values and policies amending the HelmChart of
/// the same name and namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HelmChartConfigSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub values_content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_secrets: Vec<ValuesSecret>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_side: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_conflicts: Option<bool>,
}

/// A `HelmChartConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HelmChartConfig {
    /// Name and namespace: the HelmChart's.
    pub metadata: ObjectMeta,
    /// The amendments.
    #[serde(default)]
    pub spec: HelmChartConfigSpec,
}

macro_rules! custom_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
custom_resource!(HelmChart, "HelmChart", "helmcharts");
custom_resource!(HelmChartConfig, "HelmChartConfig", "helmchartconfigs");

/// The schema of `valuesSecrets`.
fn values_secrets_schema() -> Value {
    json!({"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"},
        "keys": {"type": "array", "items": {"type": "string"}},
        "ignoreUpdates": {"type": "boolean"},
    }}})
}

fn free_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn local_ref() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}}})
}

/// The `helmcharts.helm.cattle.io` and `helmchartconfigs.helm.cattle.io`
/// CustomResourceDefinitions (k3s's fields, short names and columns).
pub fn crds() -> [Value; 2] {
    let failure_policy =
        json!({"type": "string", "enum": ["abort", "reinstall", "retry"], "default": "reinstall"});
    let server_side = json!({"type": "string", "enum": ["true", "false", "auto"]});
    let chart_spec = json!({"type": "object", "properties": {
        "targetNamespace": {"type": "string"},
        "createNamespace": {"type": "boolean"},
        "chart": {"type": "string"},
        "version": {"type": "string"},
        "repo": {"type": "string"},
        "repoCA": {"type": "string"},
        "repoCAConfigMap": local_ref(),
        "helmVersion": {"type": "string"},
        "bootstrap": {"type": "boolean"},
        "set": {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true}},
        "jobImage": {"type": "string"},
        "backOffLimit": {"type": "integer", "format": "int32"},
        "timeout": {"type": "string"},
        "failurePolicy": failure_policy,
        "authSecret": local_ref(),
        "authPassCredentials": {"type": "boolean"},
        "insecureSkipTLSVerify": {"type": "boolean"},
        "plainHTTP": {"type": "boolean"},
        "dockerRegistrySecret": local_ref(),
        "podSecurityContext": free_object(),
        "securityContext": free_object(),
        "valuesContent": {"type": "string"},
        "values": {"x-kubernetes-preserve-unknown-fields": true},
        "valuesSecrets": values_secrets_schema(),
        "chartContent": {"type": "string"},
        "takeOwnership": {"type": "boolean"},
        "serverSide": server_side,
        "forceConflicts": {"type": "boolean"},
        "driver": {"type": "string", "enum": ["secret", "configmap"]},
    }});
    let chart = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("helmcharts.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "helmcharts", "singular": "helmchart", "kind": "HelmChart",
                      "listKind": "HelmChartList", "shortNames": ["hc"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": chart_spec,
                    "status": {"type": "object", "properties": {
                        "jobName": {"type": "string"},
                        "conditions": {"type": "array", "items": {"type": "object", "properties": {
                            "type": {"type": "string"},
                            "status": {"type": "string"},
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                        }}},
                    }},
                }}},
                "additionalPrinterColumns": [
                    {"name": "Repo", "type": "string", "jsonPath": ".spec.repo"},
                    {"name": "Chart", "type": "string", "jsonPath": ".spec.chart"},
                    {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                    {"name": "TargetNamespace", "type": "string", "jsonPath": ".spec.targetNamespace"},
                    {"name": "Bootstrap", "type": "boolean", "jsonPath": ".spec.bootstrap"},
                    {"name": "Failed", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Failed')].status"},
                    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 10},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    });
    let config = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("helmchartconfigs.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "helmchartconfigs", "singular": "helmchartconfig", "kind": "HelmChartConfig",
                      "listKind": "HelmChartConfigList", "shortNames": ["hcc"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "valuesContent": {"type": "string"},
                        "values": {"x-kubernetes-preserve-unknown-fields": true},
                        "valuesSecrets": values_secrets_schema(),
                        "failurePolicy": failure_policy,
                        "serverSide": server_side,
                        "forceConflicts": {"type": "boolean"},
                    }},
                }}},
            }],
        },
    });
    [chart, config]
}
