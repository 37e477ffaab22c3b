//! The RBAC policy in force: the stored Roles, ClusterRoles and bindings,
//! mirrored in memory from the store's watch.

use std::sync::{Arc, OnceLock, RwLock};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::rbac::{Object, Policy};
use super::{Attributes, Decision};
use crate::apiserver::authn::User;
use crate::apiserver::mirror::{self, Mirror};
use crate::store::{Event, EventKind, KeyValue, Revision, Store};

/// Where the four RBAC resources live in the store.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The four resources' ranges, mirrored one by one.
const RANGES: [&str; 4] = [
    "/registry/rbac.authorization.k8s.io/clusterrolebindings/",
    "/registry/rbac.authorization.k8s.io/clusterroles/",
    "/registry/rbac.authorization.k8s.io/rolebindings/",
    "/registry/rbac.authorization.k8s.io/roles/",
];

/// The mirrored policy.
#[derive(Default)]
pub struct RbacPolicy {
    policy: RwLock<Policy>,
    mirror: OnceLock<Mirror>,
}

impl RbacPolicy {
    /// Starts mirroring the store's RBAC objects (listed before it returns).
    pub async fn start(store: Arc<dyn Store>) -> crate::store::Result<Arc<RbacPolicy>> {
        let policy = Arc::new(RbacPolicy::default());
        let mirror = Mirror::start(store, &RANGES, policy.clone()).await?;
        let _ = policy.mirror.set(mirror);
        Ok(policy)
    }

    /// Waits until a write at `revision` under `key` is part of the policy.
    pub async fn caught_up(&self, key: &str, revision: Revision) {
        if let Some(mirror) = self.mirror.get() {
            mirror.caught_up(key, revision).await;
        }
    }

    /// RBAC's decision.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        self.read().authorize(attrs)
    }

    /// Rules bound to `user` in `namespace`, and errors met on the way.
    pub fn rules_for(
        &self,
        user: &User,
        namespace: Option<&str>,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        self.read().rules_for(user, namespace)
    }

    /// A snapshot reader (held briefly; never across an await).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Policy> {
        self.policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Policy> {
        self.policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// (resource, namespace, name) of a key under [`PREFIX`].
fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let mut parts = rest.split('/');
    let resource = parts.next()?;
    match (parts.next()?, parts.next()) {
        (ns, Some(name)) => Some((resource, ns, name)),
        (name, None) => Some((resource, "", name)),
    }
}

impl mirror::Sink for RbacPolicy {
    fn reset(&self, items: &[KeyValue]) {
        let mut policy = Policy::default();
        for kv in items {
            if let Some((resource, _, _)) = parse_key(&kv.key)
                && let Some(object) = Object::decode(resource, &kv.value)
            {
                policy.insert(object);
            }
        }
        *self.write() = policy;
    }

    fn apply(&self, event: &Event) {
        let Some((resource, ns, name)) = parse_key(&event.kv.key) else {
            return;
        };
        let mut policy = self.write();
        match event.kind {
            EventKind::Deleted => policy.remove(resource, ns, name),
            EventKind::Created | EventKind::Updated => {
                match Object::decode(resource, &event.kv.value) {
                    Some(object) => policy.insert(object),
                    None => tracing::warn!(key = %event.kv.key, "unreadable RBAC object ignored"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            parse_key("/registry/rbac.authorization.k8s.io/roles/team/cm"),
            Some(("roles", "team", "cm"))
        );
        assert_eq!(
            parse_key("/registry/rbac.authorization.k8s.io/clusterroles/view"),
            Some(("clusterroles", "", "view"))
        );
        assert_eq!(parse_key("/registry/core/pods/a/b"), None);
    }
}
