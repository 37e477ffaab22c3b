//! The resource table: every served resource as data (group, version, kind,
//! scope, names, subresources). Routing, discovery, OpenAPI and printing all
//! read it; a new built-in resource is one row here plus, if it needs one, a
//! strategy in `strategy/`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::strategy::{self, Plain, Strategy};

/// A subresource served under `<resource>/<name>/<subresource>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: get, update, patch of `.status` only.
    Status,
    /// `/scale`: autoscaling/v1 Scale view of `.spec.replicas`.
    Scale,
    /// `pods/binding`: create only.
    Binding,
    /// `pods/eviction`: create only.
    Eviction,
    /// `serviceaccounts/token`: create only.
    Token,
    /// `pods/log` (served by the node).
    Log,
    /// `pods/exec`, `pods/attach`, `pods/portforward` (served by the node).
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
    /// `services|pods|nodes/proxy`.
    Proxy,
    /// `pods/ephemeralcontainers`.
    EphemeralContainers,
    /// `namespaces/finalize`: update of `.spec.finalizers` only.
    Finalize,
    /// `certificatesigningrequests/approval`: update of the Approved/Denied conditions.
    Approval,
}

impl Subresource {
    /// The path segment.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
            Self::Binding => "binding",
            Self::Eviction => "eviction",
            Self::Token => "token",
            Self::Log => "log",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
            Self::Proxy => "proxy",
            Self::EphemeralContainers => "ephemeralcontainers",
            Self::Finalize => "finalize",
            Self::Approval => "approval",
        }
    }

    /// Parses a path segment.
    pub fn parse(segment: &str) -> Option<Self> {
        ALL_SUBRESOURCES
            .iter()
            .copied()
            .find(|s| s.name() == segment)
    }

    /// Verbs as discovery lists them.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Self::Status | Self::Scale | Self::EphemeralContainers | Self::Approval => {
                &["get", "patch", "update"]
            }
            Self::Binding | Self::Eviction | Self::Token => &["create"],
            Self::Log => &["get"],
            Self::Exec | Self::Attach | Self::PortForward => &["create", "get"],
            Self::Proxy => &["create", "delete", "get", "patch", "update"],
            Self::Finalize => &["update"],
        }
    }

    /// group, version, kind of what the subresource returns.
    pub fn response_kind(self, parent: &ResourceType) -> (String, String, String) {
        match self {
            Self::Scale => ("autoscaling".into(), "v1".into(), "Scale".into()),
            Self::Binding => (String::new(), "v1".into(), "Binding".into()),
            Self::Eviction => ("policy".into(), "v1".into(), "Eviction".into()),
            Self::Token => (
                "authentication.k8s.io".into(),
                "v1".into(),
                "TokenRequest".into(),
            ),
            Self::Log => (String::new(), "v1".into(), "Pod".into()),
            // Connect subresources answer with their options kind, as upstream's discovery lists them.
            Self::Exec => (String::new(), "v1".into(), "PodExecOptions".into()),
            Self::Attach => (String::new(), "v1".into(), "PodAttachOptions".into()),
            Self::PortForward => (String::new(), "v1".into(), "PodPortForwardOptions".into()),
            Self::Proxy => (
                String::new(),
                "v1".into(),
                format!("{}ProxyOptions", parent.kind),
            ),
            _ => (
                parent.group.clone(),
                parent.version.clone(),
                parent.kind.clone(),
            ),
        }
    }
}

const ALL_SUBRESOURCES: &[Subresource] = &[
    Subresource::Status,
    Subresource::Scale,
    Subresource::Binding,
    Subresource::Eviction,
    Subresource::Token,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
    Subresource::Proxy,
    Subresource::EphemeralContainers,
    Subresource::Finalize,
    Subresource::Approval,
];

/// Which verbs a resource serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbs {
    /// create, delete, deletecollection, get, list, patch, update, watch.
    All,
    /// Only create (reviews, bindings).
    CreateOnly,
    /// get and list: figures computed at request time (`metrics.k8s.io`).
    GetList,
}

impl Verbs {
    /// Verbs as discovery lists them.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::All => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            Self::CreateOnly => &["create"],
            Self::GetList => &["get", "list"],
        }
    }
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Plural resource name (path segment).
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Subresources served.
    pub subresources: Vec<Subresource>,
    /// Verbs served.
    pub verbs: Verbs,
    /// Whether `metadata.generation` tracks spec changes.
    pub tracks_generation: bool,
    /// The group whose storage holds the objects (versions of a resource share it).
    pub storage_group: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// For custom resources: the CRD version's schema, printer columns, scale paths.
    pub custom: Option<Arc<CustomResource>>,
    /// The resource's own rules (`strategy/`).
    pub strategy: &'static dyn Strategy,
}

/// What a CRD says about one of its versions.
#[derive(Debug, Clone, Default)]
pub struct CustomResource {
    /// `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns`.
    pub printer_columns: Value,
    /// `subresources.scale` paths: spec replicas, status replicas, label selector.
    pub scale: Option<(String, String, Option<String>)>,
    /// Whether the CRD's version is served.
    pub served: bool,
}

impl ResourceType {
    /// `apiVersion` of objects served here.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `sub` is served.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store key prefix of all objects (trailing slash), or of a namespace's.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.storage_group.is_empty() {
            "core"
        } else {
            &self.storage_group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.resource),
            _ => format!("/registry/{group}/{}/", self.resource),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}

/// A built-in row: group, version, resource, kind, namespaced, short names,
/// categories, subresources, and its rules (`strategy/`; `Plain` for none).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [Subresource],
    &'static dyn Strategy,
);

use Subresource::*;

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every built-in resource.
const BUILTIN: &[Row] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        NONE,
        &[Status, Finalize],
        &strategy::namespaces::Namespaces,
    ),
    (
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        ALL,
        &[
            Status,
            Binding,
            Eviction,
            Log,
            Exec,
            Attach,
            PortForward,
            Proxy,
            EphemeralContainers,
        ],
        &strategy::pods::Pods,
    ),
    (
        "",
        "v1",
        "bindings",
        "Binding",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        ALL,
        &[Status, Proxy],
        &strategy::services::Services,
    ),
    (
        "",
        "v1",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        NONE,
        &[],
        &strategy::configmaps::ConfigMaps,
    ),
    (
        "",
        "v1",
        "secrets",
        "Secret",
        true,
        NONE,
        NONE,
        &[],
        &strategy::secrets::Secrets,
    ),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        NONE,
        &[Token],
        &Plain,
    ),
    (
        "",
        "v1",
        "nodes",
        "Node",
        false,
        &["no"],
        NONE,
        &[Status, Proxy],
        &strategy::nodes::Nodes,
    ),
    (
        "",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        NONE,
        &[Status],
        &strategy::persistent_volumes::PersistentVolumes,
    ),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        NONE,
        &[Status],
        &strategy::persistent_volume_claims::PersistentVolumeClaims,
    ),
    (
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        &["rc"],
        ALL,
        &[Status, Scale],
        &strategy::replication_controllers::ReplicationControllers,
    ),
    (
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["quota"],
        NONE,
        &[Status],
        &Plain,
    ),
    (
        "",
        "v1",
        "limitranges",
        "LimitRange",
        true,
        &["limits"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "",
        "v1",
        "podtemplates",
        "PodTemplate",
        true,
        NONE,
        NONE,
        &[],
        &strategy::pod_templates::PodTemplates,
    ),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        &[Status, Scale],
        &strategy::apps::Workload("deployments"),
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        &[Status, Scale],
        &strategy::apps::Workload("replicasets"),
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        ALL,
        &[Status, Scale],
        &strategy::apps::Workload("statefulsets"),
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        &[Status],
        &strategy::apps::Workload("daemonsets"),
    ),
    (
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "batch",
        "v1",
        "jobs",
        "Job",
        true,
        NONE,
        ALL,
        &[Status],
        &strategy::jobs::Jobs,
    ),
    (
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        &["cj"],
        ALL,
        &[Status],
        &strategy::cronjobs::CronJobs,
    ),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        &[Status],
        &Plain,
    ),
    (
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        &[Status],
        &Plain,
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        NONE,
        &[Status],
        &Plain,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        NONE,
        NONE,
        &[],
        &strategy::leases::Leases,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        &["ing"],
        NONE,
        &[Status],
        &Plain,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        NONE,
        &[],
        &strategy::storage_classes::StorageClasses,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        NONE,
        &[],
        &Plain,
    ),
    (
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        &["csr"],
        NONE,
        &[Status, Approval],
        &strategy::certificates::SigningRequests,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        NONE,
        &["api-extensions"],
        &[],
        &strategy::admissionregistration::Webhooks(true),
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        NONE,
        &["api-extensions"],
        &[],
        &strategy::admissionregistration::Webhooks(false),
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "flowschemas",
        "FlowSchema",
        false,
        NONE,
        NONE,
        &[Status],
        &strategy::flowcontrol::FlowSchemas,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        false,
        NONE,
        NONE,
        &[Status],
        &strategy::flowcontrol::PriorityLevels,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        NONE,
        &[Status],
        &Plain,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "metrics.k8s.io",
        "v1beta1",
        "nodes",
        "NodeMetrics",
        false,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
    (
        "metrics.k8s.io",
        "v1beta1",
        "pods",
        "PodMetrics",
        true,
        NONE,
        NONE,
        &[],
        &Plain,
    ),
];

/// Kinds computed from the nodes' kubelets at each request, never stored.
const METRICS_KINDS: &[&str] = &["NodeMetrics", "PodMetrics"];

/// Kinds whose objects are requests answered in place, never stored.
const REVIEW_KINDS: &[&str] = &[
    "Binding",
    "TokenReview",
    "SelfSubjectReview",
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
];

/// Resources whose `metadata.generation` follows spec changes.
const GENERATION_TRACKED: &[&str] = &[
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "replicationcontrollers",
    "customresourcedefinitions",
    "ingresses",
    "networkpolicies",
    "flowschemas",
    "prioritylevelconfigurations",
];

fn builtin(row: &Row) -> ResourceType {
    let (group, version, resource, kind, namespaced, short, categories, subresources, strategy) =
        *row;
    // Versions of one resource share storage in the group's first listed (preferred) version.
    let storage_version = BUILTIN
        .iter()
        .find(|r| r.0 == group && r.2 == resource)
        .map(|r| r.1)
        .unwrap_or(version);
    // events.k8s.io/v1 Events are core Events in another shape, stored once (as upstream).
    let (storage_group, storage_version) = match (group, resource) {
        ("events.k8s.io", "events") => ("", "v1"),
        _ => (group, storage_version),
    };
    ResourceType {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        subresources: subresources.to_vec(),
        verbs: if REVIEW_KINDS.contains(&kind) {
            Verbs::CreateOnly
        } else if METRICS_KINDS.contains(&kind) {
            Verbs::GetList
        } else {
            Verbs::All
        },
        tracks_generation: GENERATION_TRACKED.contains(&resource),
        storage_group: storage_group.into(),
        storage_version: storage_version.into(),
        custom: None,
        strategy,
    }
}

/// The live set of served resources: the built-ins plus custom resources from CRDs.
#[derive(Debug)]
pub struct Registry {
    inner: RwLock<Vec<Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in resources.
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(BUILTIN.iter().map(|row| Arc::new(builtin(row))).collect()),
        }
    }

    /// All served resources, in table order.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.inner.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The resource served at group/version/resource.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
    }

    /// The resource serving `kind` at group/version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Group → versions in preference order (first is preferred).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.all() {
            let versions = groups.entry(r.group.clone()).or_default();
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
        groups
    }

    /// Group names in the order discovery lists them (built-ins first, then custom).
    pub fn group_order(&self) -> Vec<String> {
        let mut order: Vec<String> = Vec::new();
        for r in self.all() {
            if !order.contains(&r.group) {
                order.push(r.group.clone());
            }
        }
        order
    }

    /// Replaces the custom resources of one CRD (`group`, plural `resource`).
    pub fn set_custom(&self, group: &str, resource: &str, versions: Vec<ResourceType>) {
        if let Ok(mut inner) = self.inner.write() {
            inner.retain(|r| !(r.custom.is_some() && r.group == group && r.resource == resource));
            inner.extend(versions.into_iter().map(Arc::new));
        }
    }

    /// Whether requests for `kind` are answered without storing anything.
    pub fn is_review(kind: &str) -> bool {
        REVIEW_KINDS.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_share_storage() {
        let registry = Registry::new();
        let v1 = registry
            .lookup("autoscaling", "v1", "horizontalpodautoscalers")
            .expect("v1");
        let v2 = registry
            .lookup("autoscaling", "v2", "horizontalpodautoscalers")
            .expect("v2");
        assert_eq!(v1.key(Some("default"), "x"), v2.key(Some("default"), "x"));
        assert_eq!(v1.storage_version, "v2");
    }

    #[test]
    fn both_event_apis_share_storage() {
        let registry = Registry::new();
        let core = registry.lookup("", "v1", "events").expect("core");
        let events = registry
            .lookup("events.k8s.io", "v1", "events")
            .expect("events.k8s.io");
        assert_eq!(
            core.key(Some("default"), "e"),
            events.key(Some("default"), "e")
        );
    }

    #[test]
    fn keys_by_scope() {
        let registry = Registry::new();
        let pods = registry.lookup("", "v1", "pods").expect("pods");
        assert_eq!(
            pods.key(Some("default"), "a"),
            "/registry/core/pods/default/a"
        );
        assert_eq!(pods.key_prefix(None), "/registry/core/pods/");
        let ns = registry.lookup("", "v1", "namespaces").expect("ns");
        assert_eq!(ns.key(Some("ignored"), "a"), "/registry/core/namespaces/a");
    }

    #[test]
    fn connect_subresources_answer_with_their_options_kinds() {
        let registry = Registry::new();
        for (resource, kind) in [
            ("services", "ServiceProxyOptions"),
            ("pods", "PodProxyOptions"),
            ("nodes", "NodeProxyOptions"),
        ] {
            let rt = registry.lookup("", "v1", resource).expect(resource);
            assert!(rt.has(Subresource::Proxy), "{resource}");
            assert_eq!(Subresource::Proxy.response_kind(&rt).2, kind);
        }
        let pods = registry.lookup("", "v1", "pods").expect("pods");
        assert_eq!(Subresource::Exec.response_kind(&pods).2, "PodExecOptions");
        assert_eq!(Subresource::Log.response_kind(&pods).2, "Pod");
        assert_eq!(
            Subresource::Proxy.verbs(),
            ["create", "delete", "get", "patch", "update"]
        );
    }

    #[test]
    fn preferred_version_first() {
        let groups = Registry::new().groups();
        assert_eq!(groups["autoscaling"], ["v2", "v1"]);
        assert_eq!(groups[""], ["v1"]);
    }
}
