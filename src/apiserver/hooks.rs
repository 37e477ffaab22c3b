//! What the API server does around one resource's writes beyond the
//! resource's strategy (upstream's per-resource REST storage): allocations
//! made from what is stored, under the allocation lock, before the write
//! (Service IPs and node ports, Node pod CIDRs); checks a CRD's names must
//! pass; and what a committed write changes in the server itself (the CRDs
//! it serves, the node authorizer's graph). One row per resource with any,
//! looked up once per request.

use serde_json::Value;

use super::ApiState;
use super::handlers::Request;
use crate::api::registry::resources::ResourceType;
use crate::api::{ApiError, values::meta};

/// One resource's hooks. Every method defaults to "nothing".
#[async_trait::async_trait]
pub trait StorageHooks: Send + Sync {
    /// Before a create (`old` None) or a main-resource update is written,
    /// after admission.
    async fn before_write(
        &self,
        _state: &ApiState,
        _req: &Request,
        _obj: &mut Value,
        _old: Option<&Value>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// After a committed write; whether it changed the node authorizer's
    /// graph (its writer must not hear back before the graph shows it).
    fn after_write(&self, _state: &ApiState, _obj: &Value) -> bool {
        false
    }

    /// After a committed delete; whether it changed the node graph.
    fn after_delete(&self, _state: &ApiState, _obj: &Value) -> bool {
        false
    }
}

/// One resource's row in the table.
pub struct Row {
    group: &'static str,
    resource: &'static str,
    /// Whether its [`StorageHooks::before_write`] allocates from what is
    /// stored: the write then holds the server's allocation lock, so two
    /// writes cannot take the same free value.
    pub allocates: bool,
    /// What the server does around its writes.
    pub hooks: &'static dyn StorageHooks,
}

/// The row of `rt` (no hooks for most resources).
pub fn of(rt: &ResourceType) -> &'static Row {
    HOOKS
        .iter()
        .find(|row| rt.group == row.group && rt.resource == row.resource)
        .unwrap_or(&NONE)
}

static HOOKS: &[Row] = &[
    Row {
        group: "",
        resource: "services",
        allocates: true,
        hooks: &super::services::Services,
    },
    Row {
        group: "",
        resource: "nodes",
        allocates: true,
        hooks: &super::nodes::Nodes,
    },
    Row {
        group: "",
        resource: "pods",
        allocates: false,
        hooks: &Pods,
    },
    Row {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        allocates: false,
        hooks: &CustomResourceDefinitions,
    },
];

/// A resource without hooks.
struct NoHooks;

impl StorageHooks for NoHooks {}

static NONE: Row = Row {
    group: "",
    resource: "",
    allocates: false,
    hooks: &NoHooks,
};

/// Pods: a newly bound pod (or a deleted one) changes what its node may
/// read.
struct Pods;

#[async_trait::async_trait]
impl StorageHooks for Pods {
    fn after_write(&self, state: &ApiState, pod: &Value) -> bool {
        // Status writes (most pod writes) leave the graph as it is.
        let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str);
        bound.is_some()
            && state
                .authorizer
                .nodes()
                .node_of_pod(meta::namespace(pod), meta::name(pod))
                .as_deref()
                != bound
    }

    fn after_delete(&self, _state: &ApiState, _pod: &Value) -> bool {
        true
    }
}

/// CRDs: names checked and accepted before the write; served (or no
/// longer) once committed.
struct CustomResourceDefinitions;

#[async_trait::async_trait]
impl StorageHooks for CustomResourceDefinitions {
    async fn before_write(
        &self,
        _state: &ApiState,
        req: &Request,
        crd: &mut Value,
        _old: Option<&Value>,
    ) -> Result<(), ApiError> {
        crate::api::registry::crd::prepare(crd).map_err(|causes| {
            ApiError::invalid(&req.rt.group, &req.rt.kind, meta::name(crd), causes)
        })
    }

    fn after_write(&self, state: &ApiState, crd: &Value) -> bool {
        crate::api::registry::crd::register(&state.registry, crd);
        false
    }

    fn after_delete(&self, state: &ApiState, crd: &Value) -> bool {
        crate::api::registry::crd::unregister(&state.registry, crd);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(group: &str, resource: &str) -> std::sync::Arc<ResourceType> {
        crate::api::registry::resources::Registry::new()
            .lookup(group, "v1", resource)
            .expect("a built-in resource")
    }

    #[test]
    fn allocating_resources_are_services_and_nodes_only() {
        assert!(of(&rt("", "services")).allocates);
        assert!(of(&rt("", "nodes")).allocates);
        assert!(!of(&rt("", "pods")).allocates);
        assert!(!of(&rt("", "configmaps")).allocates);
        assert!(!of(&rt("apiextensions.k8s.io", "customresourcedefinitions")).allocates);
    }
}
