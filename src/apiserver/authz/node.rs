//! The node authorizer (upstream's): a kubelet, `system:node:<name>` in
//! `system:nodes`, may read only the secrets, config maps and claims of pods
//! bound to its node, get tokens only for their service accounts, touch only
//! its own Lease; everything else it may do is the fixed `system:node` rule
//! set. What each pod uses is mirrored from the store's pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::{Attributes, Decision, rbac};
use crate::apiserver::authn::User;
use crate::apiserver::mirror::{self, Mirror};
use crate::store::{Event, EventKind, KeyValue, Store};

/// The group every kubelet is in.
pub const NODES_GROUP: &str = "system:nodes";

/// Where pods live in the store.
const PODS: &str = "/registry/core/pods/";

/// The node name of a kubelet identity.
pub fn node_name(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// What one pod bound to a node uses.
#[derive(Debug, Default, Clone, PartialEq)]
struct PodUses {
    namespace: String,
    secrets: HashSet<String>,
    config_maps: HashSet<String>,
    claims: HashSet<String>,
    service_account: String,
}

/// Pods by node, with what each uses.
#[derive(Default)]
pub struct NodeGraph {
    state: RwLock<Graph>,
    mirror: OnceLock<Mirror>,
}

#[derive(Default)]
struct Graph {
    /// node -> pod key -> uses.
    by_node: HashMap<String, HashMap<String, PodUses>>,
    /// pod key -> node.
    node_of: HashMap<String, String>,
}

/// The kinds of object a node reaches through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uses {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

impl NodeGraph {
    /// Starts mirroring pods (listed before it returns).
    pub async fn start(store: Arc<dyn Store>) -> crate::store::Result<Arc<NodeGraph>> {
        let graph = Arc::new(NodeGraph::default());
        let mirror = Mirror::start(store, &[PODS], graph.clone()).await?;
        let _ = graph.mirror.set(mirror);
        Ok(graph)
    }

    /// Waits until a pod write at `revision` is part of the graph.
    pub async fn caught_up(&self, revision: crate::store::Revision) {
        if let Some(mirror) = self.mirror.get() {
            mirror.caught_up(PODS, revision).await;
        }
    }

    /// Whether a pod on `node` in `namespace` uses the named object.
    fn reaches(&self, node: &str, uses: Uses, namespace: &str, name: &str) -> bool {
        let graph = self.state.read().unwrap_or_else(|p| p.into_inner());
        graph.by_node.get(node).is_some_and(|pods| {
            pods.values().any(|pod| {
                pod.namespace == namespace
                    && match uses {
                        Uses::Secret => pod.secrets.contains(name),
                        Uses::ConfigMap => pod.config_maps.contains(name),
                        Uses::Claim => pod.claims.contains(name),
                        Uses::ServiceAccount => pod.service_account == name,
                    }
            })
        })
    }

    /// The node a pod (namespace/name) is bound to, if any.
    pub fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String> {
        let graph = self.state.read().unwrap_or_else(|p| p.into_inner());
        graph
            .node_of
            .get(&format!("{PODS}{namespace}/{name}"))
            .cloned()
    }

    fn put(&self, key: &str, pod: Option<&[u8]>) {
        let parsed = pod
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
            .and_then(|pod| {
                let node = pod.pointer("/spec/nodeName")?.as_str()?.to_string();
                (!node.is_empty()).then(|| (node, uses_of(&pod)))
            });
        let mut graph = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = graph.node_of.remove(key)
            && let Some(pods) = graph.by_node.get_mut(&old)
        {
            pods.remove(key);
            if pods.is_empty() {
                graph.by_node.remove(&old);
            }
        }
        if let Some((node, uses)) = parsed {
            graph.node_of.insert(key.to_string(), node.clone());
            graph
                .by_node
                .entry(node)
                .or_default()
                .insert(key.to_string(), uses);
        }
    }
}

impl mirror::Sink for NodeGraph {
    fn reset(&self, items: &[KeyValue]) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Graph::default();
        for kv in items {
            self.put(&kv.key, Some(&kv.value));
        }
    }

    fn apply(&self, event: &Event) {
        match event.kind {
            EventKind::Deleted => self.put(&event.kv.key, None),
            _ => self.put(&event.kv.key, Some(&event.kv.value)),
        }
    }
}

/// The secrets, config maps, claims and service account a pod uses (what
/// the kubelet has to read to run it).
fn uses_of(pod: &Value) -> PodUses {
    let mut uses = PodUses {
        namespace: pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        service_account: pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
        ..Default::default()
    };
    let spec = &pod["spec"];
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let add = |set: &mut HashSet<String>, v: &Value| {
        if let Some(name) = v.as_str().filter(|n| !n.is_empty()) {
            set.insert(name.to_string());
        }
    };
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(&mut uses.secrets, &s["name"]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(&mut uses.secrets, &v["secret"]["secretName"]);
        add(&mut uses.config_maps, &v["configMap"]["name"]);
        add(&mut uses.claims, &v["persistentVolumeClaim"]["claimName"]);
        if v.get("ephemeral").is_some()
            && let Some(vol) = v["name"].as_str()
        {
            uses.claims.insert(format!("{pod_name}-{vol}"));
        }
        for source in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(&mut uses.secrets, &source["secret"]["name"]);
            add(&mut uses.config_maps, &source["configMap"]["name"]);
        }
        // Volume plugins that take credentials from a secret.
        for plugin in [
            "csi",
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
        ] {
            let field = if plugin == "csi" {
                "nodePublishSecretRef"
            } else {
                "secretRef"
            };
            add(&mut uses.secrets, &v[plugin][field]["name"]);
        }
        add(&mut uses.secrets, &v["azureFile"]["secretName"]);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for env in c["env"].as_array().into_iter().flatten() {
                add(&mut uses.secrets, &env["valueFrom"]["secretKeyRef"]["name"]);
                add(
                    &mut uses.config_maps,
                    &env["valueFrom"]["configMapKeyRef"]["name"],
                );
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                add(&mut uses.secrets, &from["secretRef"]["name"]);
                add(&mut uses.config_maps, &from["configMapRef"]["name"]);
            }
        }
    }
    uses
}

/// The rules every kubelet holds (the bootstrap `system:node` role's).
fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| super::bootstrap::cluster_role_rules("system:node"))
}

/// The node authorizer's decision.
pub fn authorize(graph: &NodeGraph, attrs: &Attributes) -> Decision {
    let Some(node) = node_name(attrs.user) else {
        return Decision::NoOpinion(String::new());
    };
    if node.is_empty() {
        return Decision::NoOpinion("unknown node".into());
    }
    if let Some(r) = &attrs.resource {
        let uses = match (r.group.as_str(), r.resource.as_str()) {
            ("", "secrets") => Some(Uses::Secret),
            ("", "configmaps") => Some(Uses::ConfigMap),
            ("", "persistentvolumeclaims") if r.subresource.is_empty() => Some(Uses::Claim),
            ("", "serviceaccounts") => Some(Uses::ServiceAccount),
            ("coordination.k8s.io", "leases") => return lease(node, attrs.verb, r),
            ("", "pods") if r.subresource.is_empty() => {
                if let Some(decision) = read_pods(graph, node, attrs.verb, r) {
                    return decision;
                }
                None
            }
            _ => None,
        };
        if let Some(uses) = uses {
            return related(graph, node, uses, attrs.verb, r);
        }
    }
    let rules = node_rules();
    if rules.iter().any(|rule| rbac::rule_allows(attrs, rule)) {
        return Decision::Allow(String::new());
    }
    Decision::NoOpinion(String::new())
}

/// Reads of objects a pod on the node uses; tokens for its service accounts.
fn related(
    graph: &NodeGraph,
    node: &str,
    uses: Uses,
    verb: &str,
    r: &super::ResourceAttributes,
) -> Decision {
    if uses == Uses::ServiceAccount {
        if verb != "create" || r.subresource != "token" || r.name.is_empty() {
            return Decision::NoOpinion(
                "can only create tokens for individual service accounts".into(),
            );
        }
    } else {
        if !matches!(verb, "get" | "list" | "watch") {
            return Decision::NoOpinion("can only read resources of this type".into());
        }
        if !r.subresource.is_empty() {
            return Decision::NoOpinion("cannot read subresource".into());
        }
        if r.name.is_empty() {
            return Decision::NoOpinion("can only read individual resources of this type".into());
        }
    }
    if r.namespace.is_empty() {
        return Decision::NoOpinion("can only read namespaced object of this type".into());
    }
    if graph.reaches(node, uses, &r.namespace, &r.name) {
        Decision::Allow(String::new())
    } else {
        Decision::NoOpinion(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

/// Reads of pods (upstream's AuthorizeNodeWithSelectors, on by default
/// since 1.32): a pod bound to the node by name, and lists and watches
/// only with the `spec.nodeName=<node>` field selector. None for other
/// verbs (the node's rules and NodeRestriction decide those).
fn read_pods(
    graph: &NodeGraph,
    node: &str,
    verb: &str,
    r: &super::ResourceAttributes,
) -> Option<Decision> {
    match verb {
        "get" if graph.node_of_pod(&r.namespace, &r.name).as_deref() == Some(node) => {
            Some(Decision::Allow(String::new()))
        }
        "get" => Some(Decision::NoOpinion(format!(
            "no relationship found between node '{node}' and this object"
        ))),
        "list" | "watch" => {
            let own = r.field_selector.split(',').any(|term| {
                term.trim()
                    .strip_prefix("spec.nodeName")
                    .and_then(|rest| rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')))
                    == Some(node)
            });
            Some(match own {
                true => Decision::Allow(String::new()),
                false => Decision::NoOpinion(
                    "can only list/watch pods with spec.nodeName field selector".into(),
                ),
            })
        }
        _ => None,
    }
}

/// A kubelet's own heartbeat Lease, in kube-node-lease.
fn lease(node: &str, verb: &str, r: &super::ResourceAttributes) -> Decision {
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return Decision::NoOpinion(
            "can only get, create, update, patch, or delete a node lease".into(),
        );
    }
    if r.namespace != "kube-node-lease" {
        return Decision::NoOpinion(
            "can only access leases in the kube-node-lease namespace".into(),
        );
    }
    if verb != "create" && r.name != node {
        return Decision::NoOpinion(
            "can only access node lease with the same name as the requesting node".into(),
        );
    }
    Decision::Allow(String::new())
}

#[cfg(test)]
mod tests {
    use super::super::ResourceAttributes;
    use super::*;
    use crate::apiserver::mirror::Sink;
    use serde_json::json;

    fn kubelet(node: &str) -> User {
        User {
            name: format!("system:node:{node}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn graph() -> NodeGraph {
        let graph = NodeGraph::default();
        let pod = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {
            "nodeName": "edge-1", "serviceAccountName": "app",
            "volumes": [{"name": "tls", "secret": {"secretName": "tls"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
            "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}]}});
        let unbound = json!({"metadata": {"name": "pending", "namespace": "shop"}, "spec": {
            "volumes": [{"name": "s", "secret": {"secretName": "other"}}], "containers": []}});
        graph.reset(&[
            KeyValue {
                key: format!("{PODS}shop/web"),
                value: pod.to_string().into_bytes(),
                create_revision: 1,
                mod_revision: 1,
            },
            KeyValue {
                key: format!("{PODS}shop/pending"),
                value: unbound.to_string().into_bytes(),
                create_revision: 2,
                mod_revision: 2,
            },
        ]);
        graph
    }

    fn ask(
        graph: &NodeGraph,
        node: &str,
        verb: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Decision {
        ask_selected(graph, node, verb, (resource, sub), ns, name, "")
    }

    fn ask_selected(
        graph: &NodeGraph,
        node: &str,
        verb: &str,
        (resource, sub): (&str, &str),
        ns: &str,
        name: &str,
        field_selector: &str,
    ) -> Decision {
        let user = kubelet(node);
        authorize(
            graph,
            &Attributes {
                user: &user,
                verb,
                resource: Some(ResourceAttributes {
                    resource: resource.into(),
                    subresource: sub.into(),
                    namespace: ns.into(),
                    name: name.into(),
                    field_selector: field_selector.into(),
                    group: if resource == "leases" {
                        "coordination.k8s.io".into()
                    } else {
                        String::new()
                    },
                    version: "v1".into(),
                }),
                path: "",
            },
        )
    }

    #[test]
    fn kubelets_read_only_what_their_pods_use() {
        let g = graph();
        assert!(ask(&g, "edge-1", "get", "secrets", "", "shop", "tls").allowed());
        assert!(ask(&g, "edge-1", "watch", "secrets", "", "shop", "db").allowed());
        assert!(
            ask(
                &g,
                "edge-1",
                "get",
                "configmaps",
                "",
                "shop",
                "kube-root-ca.crt"
            )
            .allowed()
        );
        assert!(
            ask(
                &g,
                "edge-1",
                "create",
                "serviceaccounts",
                "token",
                "shop",
                "app"
            )
            .allowed()
        );
        assert_eq!(
            ask(&g, "edge-2", "get", "secrets", "", "shop", "tls"),
            Decision::NoOpinion(
                "no relationship found between node 'edge-2' and this object".into()
            )
        );
        assert!(!ask(&g, "edge-1", "get", "secrets", "", "shop", "other").allowed());
        assert!(!ask(&g, "edge-1", "list", "secrets", "", "shop", "").allowed());
        assert!(!ask(&g, "edge-1", "update", "secrets", "", "shop", "tls").allowed());
        assert!(!ask(&g, "edge-1", "get", "secrets", "", "default", "tls").allowed());
    }

    #[test]
    fn own_lease_only() {
        let g = graph();
        assert!(
            ask(
                &g,
                "edge-1",
                "update",
                "leases",
                "",
                "kube-node-lease",
                "edge-1"
            )
            .allowed()
        );
        assert!(
            !ask(
                &g,
                "edge-1",
                "update",
                "leases",
                "",
                "kube-node-lease",
                "edge-2"
            )
            .allowed()
        );
        assert!(!ask(&g, "edge-1", "get", "leases", "", "default", "edge-1").allowed());
    }

    #[test]
    fn pods_leave_the_graph_when_deleted() {
        let g = graph();
        g.put(&format!("{PODS}shop/web"), None);
        assert!(!ask(&g, "edge-1", "get", "secrets", "", "shop", "tls").allowed());
        assert_eq!(g.node_of_pod("shop", "web"), None);
    }

    #[test]
    fn only_node_identities() {
        let user = User {
            name: "system:node:edge-1".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert_eq!(node_name(&user), None);
        assert_eq!(node_name(&kubelet("edge-1")), Some("edge-1"));
    }

    #[test]
    fn kubelets_read_their_own_pods_only() {
        let g = graph();
        let get = |node: &str, name: &str| ask(&g, node, "get", "pods", "", "shop", name);
        assert!(get("edge-1", "web").allowed());
        assert_eq!(
            get("edge-2", "web"),
            Decision::NoOpinion(
                "no relationship found between node 'edge-2' and this object".into()
            )
        );
        let list = |verb: &str, selector: &str| {
            ask_selected(&g, "edge-1", verb, ("pods", ""), "", "", selector)
        };
        assert!(list("list", "spec.nodeName=edge-1").allowed());
        assert!(list("watch", "status.phase!=Failed,spec.nodeName==edge-1").allowed());
        assert_eq!(
            list("list", ""),
            Decision::NoOpinion(
                "can only list/watch pods with spec.nodeName field selector".into()
            )
        );
        assert!(!list("watch", "spec.nodeName=edge-2").allowed());
        // Status writes are the node's rules' (and NodeRestriction's) to judge.
        assert!(ask(&g, "edge-1", "patch", "pods", "status", "shop", "web").allowed());
    }
}
