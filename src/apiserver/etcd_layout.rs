//! Objects in etcd as kube-apiserver lays them out, so etcdctl (and tools
//! made for kube-apiserver's data) read a kelp cluster's etcd as they read
//! upstream's: keys `/registry/<resource>/<namespace>/<name>` (with
//! upstream's few exceptions: `services/specs`, `services/endpoints`,
//! `minions`, `controllers`, `ingress`; CRDs and custom resources keep
//! their group), and built-in objects as upstream's protobuf (`k8s\0` and a
//! `runtime.Unknown`); custom resources stay JSON, as upstream keeps them.
//!
//! [`EtcdLayout`] is a [`Store`] in front of the etcd store: everything
//! above it (encryption at rest included) keeps kelp's own keys,
//! `/registry/<group>/<resource>/…`, and JSON. Encrypted values pass as
//! they are; their authenticated data is kelp's key, which for the core
//! resources encryption names (secrets, configmaps) differs from upstream's
//! only by the `core/` segment, and not at all under aescbc (k3s's default),
//! which authenticates no key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::api::codec::protobuf;
use crate::api::registry::resources::{Registry, Verbs};
use crate::store::{Error, Event, KeyValue, ListPage, Result, Revision, Store, WatchStream};

const ROOT: &str = "/registry/";

/// Built-in resources whose etcd prefix is not their resource name.
const RENAMED: &[(&str, &str, &str)] = &[
    ("", "services", "services/specs"),
    ("", "endpoints", "services/endpoints"),
    ("", "nodes", "minions"),
    ("", "replicationcontrollers", "controllers"),
    ("networking.k8s.io", "ingresses", "ingress"),
];

/// Built-in groups whose resources keep the group in their etcd prefix
/// (served by kube-apiserver's extension and aggregation servers).
const GROUP_KEPT: &[&str] = &["apiextensions.k8s.io", "apiregistration.k8s.io"];

/// kelp's keys and upstream's, both ways. Pure: built from the resource
/// table, tested without a store.
#[derive(Debug, Clone, Default)]
pub struct KeyLayout {
    /// kelp's `group/resource` → upstream's prefix segment.
    upstream: HashMap<String, String>,
    /// Upstream's prefix segment → kelp's `group/resource`.
    kelp: HashMap<String, String>,
}

impl KeyLayout {
    /// The layout of the registry's built-in stored resources.
    pub fn of(registry: &Registry) -> Self {
        let mut layout = Self::default();
        for rt in registry.all() {
            let stored = rt.custom.is_none() && matches!(rt.verbs, Verbs::All);
            if !stored || GROUP_KEPT.contains(&rt.storage_group.as_str()) {
                continue;
            }
            let (group, resource) = (rt.storage_group.as_str(), rt.resource.as_str());
            let segment = RENAMED
                .iter()
                .find(|(g, r, _)| *g == group && *r == resource)
                .map_or(resource, |(_, _, segment)| *segment);
            let kelp_group = if group.is_empty() { "core" } else { group };
            let group_resource = format!("{kelp_group}/{resource}");
            layout
                .upstream
                .insert(group_resource.clone(), segment.to_owned());
            layout.kelp.insert(segment.to_owned(), group_resource);
        }
        layout
    }

    /// Upstream's key (or key prefix) for one of kelp's. Keys outside the
    /// built-ins (custom resources, CRDs, `/bootstrap/…`) are the same in
    /// both. A prefix above one resource (a whole built-in group) has no
    /// single upstream prefix: `None`.
    pub fn upstream<'a>(&self, key: &'a str) -> Option<Cow<'a, str>> {
        let Some(rest) = key.strip_prefix(ROOT) else {
            return Some(Cow::Borrowed(key));
        };
        let Some((group, after_group)) = rest.split_once('/') else {
            // `/registry/` itself, or a partial group name.
            return (rest.is_empty() || !self.is_builtin_group(rest)).then_some(Cow::Borrowed(key));
        };
        let Some((resource, tail)) = after_group.split_once('/') else {
            return (!self.is_builtin_group(group)).then_some(Cow::Borrowed(key));
        };
        let group_resource = &rest[..group.len() + 1 + resource.len()];
        match self.upstream.get(group_resource) {
            Some(segment) => Some(Cow::Owned(format!("{ROOT}{segment}/{tail}"))),
            None => Some(Cow::Borrowed(key)),
        }
    }

    /// kelp's key for one of upstream's.
    pub fn kelp<'a>(&self, key: &'a str) -> Cow<'a, str> {
        let Some(rest) = key.strip_prefix(ROOT) else {
            return Cow::Borrowed(key);
        };
        let mut parts = rest.splitn(3, '/');
        let first = parts.next().unwrap_or_default();
        // Two-segment prefixes (`services/specs`) first, then one segment.
        let two = parts
            .next()
            .map(|second| &rest[..first.len() + 1 + second.len()]);
        for segment in two.into_iter().chain([first]) {
            if let Some(kelp) = self.kelp.get(segment)
                && let Some(tail) = rest[segment.len()..].strip_prefix('/')
            {
                return Cow::Owned(format!("{ROOT}{kelp}/{tail}"));
            }
        }
        Cow::Borrowed(key)
    }

    fn is_builtin_group(&self, group: &str) -> bool {
        self.upstream
            .keys()
            .any(|k| k.split_once('/').is_some_and(|(g, _)| g == group))
    }
}

/// The [`Store`] that keeps objects in upstream's layout in the store below.
pub struct EtcdLayout {
    inner: Arc<dyn Store>,
    keys: Arc<KeyLayout>,
}

impl EtcdLayout {
    /// Lays the registry's built-in resources out in `inner` as upstream does.
    pub fn new(inner: Arc<dyn Store>, registry: &Registry) -> Self {
        Self {
            inner,
            keys: Arc::new(KeyLayout::of(registry)),
        }
    }

    fn key<'a>(&self, key: &'a str) -> Result<Cow<'a, str>> {
        self.keys.upstream(key).ok_or_else(|| {
            Error::Database(format!(
                "{key} spans several resources, which etcd keeps under separate prefixes"
            ))
        })
    }

    /// A conflict's current value, in kelp's form.
    fn conflict(&self, e: Error) -> Error {
        match e {
            Error::Conflict { expected, current } => match read(&self.keys, *current) {
                Ok(current) => Error::Conflict {
                    expected,
                    current: Box::new(current),
                },
                Err(e) => e,
            },
            other => other,
        }
    }
}

/// kelp's form of a stored key and value.
fn read(keys: &KeyLayout, kv: KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: keys.kelp(&kv.key).into_owned(),
        value: decoded(&kv.key, kv.value)?,
        ..kv
    })
}

/// kelp's form of a watch event.
fn read_event(keys: &KeyLayout, event: Event) -> Result<Event> {
    let prev = match event.prev {
        Some(prev) => Some(decoded(&event.kv.key, prev)?),
        None => None,
    };
    Ok(Event {
        kind: event.kind,
        kv: read(keys, event.kv)?,
        prev,
    })
}

/// A value as stored: a built-in object (kelp writes JSON objects) as
/// upstream's protobuf; anything else (a custom resource, a sealed value,
/// bootstrap data) as it is.
fn encoded(key: &str, value: Vec<u8>) -> Vec<u8> {
    if !key.starts_with(ROOT) || value.first() != Some(&b'{') {
        return value;
    }
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(&value) else {
        return value;
    };
    match protobuf::encode(&object) {
        Ok(bytes) => bytes,
        Err(protobuf::EncodeError::UnknownKind { .. }) => value,
        Err(e) => {
            // Upstream reads JSON values too: keep the write rather than refuse it.
            tracing::warn!(key, err = %e, "object stored as JSON: no protobuf encoding");
            value
        }
    }
}

/// A stored value in kelp's form: protobuf decoded to JSON, the rest as it is.
fn decoded(key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
    if !value.starts_with(protobuf::MAGIC) {
        return Ok(value);
    }
    let object = protobuf::decode(&value)
        .map_err(|e| Error::Database(format!("value of {key} is not a readable object: {e}")))?;
    serde_json::to_vec(&object).map_err(|e| Error::Database(format!("value of {key}: {e}")))
}

#[async_trait]
impl Store for EtcdLayout {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.inner.get(&self.key(key)?).await? {
            Some(kv) => Ok(Some(read(&self.keys, kv)?)),
            None => Ok(None),
        }
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        let start_after = start_after.map(|k| self.key(k)).transpose()?;
        let page = self
            .inner
            .list_at(&self.key(prefix)?, start_after.as_deref(), limit, revision)
            .await?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(|kv| read(&self.keys, kv))
                .collect::<Result<_>>()?,
            ..page
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let key = self.key(key)?;
        self.inner.create(&key, encoded(&key, value)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let key = self.key(key)?;
        let written = self
            .inner
            .update(&key, encoded(&key, value), expected)
            .await;
        written.map_err(|e| self.conflict(e))
    }

    async fn update_coalesced(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision> {
        let key = self.key(key)?;
        let written = self
            .inner
            .update_coalesced(&key, encoded(&key, value), expected)
            .await;
        written.map_err(|e| self.conflict(e))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let deleted = self.inner.delete(&self.key(key)?, expected).await;
        let (revision, last) = deleted.map_err(|e| self.conflict(e))?;
        Ok((revision, read(&self.keys, last)?))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let events = self.inner.watch(&self.key(prefix)?, after).await?;
        let keys = self.keys.clone();
        Ok(events
            .map(move |event| event.and_then(|e| read_event(&keys, e)))
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        self.inner.count(&self.key(prefix)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use serde_json::json;

    fn layout() -> KeyLayout {
        KeyLayout::of(&Registry::new())
    }

    #[test]
    fn keys_are_upstream_s() {
        let keys = layout();
        for (kelp, upstream) in [
            (
                "/registry/core/pods/default/web",
                "/registry/pods/default/web",
            ),
            (
                "/registry/core/services/default/web",
                "/registry/services/specs/default/web",
            ),
            (
                "/registry/core/endpoints/default/web",
                "/registry/services/endpoints/default/web",
            ),
            ("/registry/core/nodes/n1", "/registry/minions/n1"),
            (
                "/registry/core/replicationcontrollers/a/b",
                "/registry/controllers/a/b",
            ),
            ("/registry/core/events/a/b", "/registry/events/a/b"),
            (
                "/registry/apps/deployments/default/web",
                "/registry/deployments/default/web",
            ),
            (
                "/registry/networking.k8s.io/ingresses/a/b",
                "/registry/ingress/a/b",
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/view",
                "/registry/clusterroles/view",
            ),
            (
                "/registry/coordination.k8s.io/leases/kube-system/x",
                "/registry/leases/kube-system/x",
            ),
            (
                "/registry/flowcontrol.apiserver.k8s.io/flowschemas/a",
                "/registry/flowschemas/a",
            ),
            (
                "/registry/apiextensions.k8s.io/customresourcedefinitions/w.example.com",
                "/registry/apiextensions.k8s.io/customresourcedefinitions/w.example.com",
            ),
            (
                "/registry/example.com/widgets/default/w",
                "/registry/example.com/widgets/default/w",
            ),
            // A CRD's group under k8s.io is a custom resource all the same.
            (
                "/registry/gateway.networking.k8s.io/gateways/a/b",
                "/registry/gateway.networking.k8s.io/gateways/a/b",
            ),
            ("/bootstrap/abc", "/bootstrap/abc"),
            // Prefixes: of a resource, of a namespace, of everything.
            ("/registry/core/pods/", "/registry/pods/"),
            (
                "/registry/core/services/default/",
                "/registry/services/specs/default/",
            ),
            ("/registry/", "/registry/"),
        ] {
            assert_eq!(keys.upstream(kelp).as_deref(), Some(upstream), "{kelp}");
            assert_eq!(keys.kelp(upstream), kelp, "{upstream}");
        }
        // A whole built-in group is several upstream prefixes.
        assert_eq!(keys.upstream("/registry/rbac.authorization.k8s.io/"), None);
        assert_eq!(keys.upstream("/registry/core/"), None);
        // Not stored: reviews and metrics (metrics' pods are not core's).
        assert_eq!(keys.kelp("/registry/pods/a/b"), "/registry/core/pods/a/b");
        // What kube-apiserver keeps that kelp does not know is left alone.
        assert_eq!(
            keys.kelp("/registry/ranges/serviceips"),
            "/registry/ranges/serviceips"
        );
    }

    #[tokio::test]
    async fn objects_are_stored_as_upstream_and_read_as_kelp_s() {
        let dir = tempfile::tempdir().expect("tempdir");
        let below: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("s.db")).expect("open"));
        let store = EtcdLayout::new(below.clone(), &Registry::new());
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let key = "/registry/core/pods/default/web";
        let mut watch = store.watch("/registry/core/pods/", 0).await.expect("watch");
        let r1 = store
            .create(key, serde_json::to_vec(&pod).unwrap())
            .await
            .expect("create");

        let raw = below
            .get("/registry/pods/default/web")
            .await
            .unwrap()
            .expect("stored");
        assert!(raw.value.starts_with(b"k8s\0"), "protobuf below");
        let got = store.get(key).await.unwrap().expect("present");
        assert_eq!(got.key, key);
        let back: serde_json::Value = serde_json::from_slice(&got.value).unwrap();
        assert_eq!(back["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(back["metadata"]["name"], "web");

        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!((event.kv.key.as_str(), event.kv.mod_revision), (key, r1));
        let page = store.list("/registry/core/pods/", None, 0).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(store.count("/registry/core/pods/").await.unwrap(), 1);
        assert!(store.list("/registry/core/", None, 0).await.is_err());

        // A stale update's conflict carries the current object, readable.
        let err = store
            .update(key, serde_json::to_vec(&pod).unwrap(), r1 + 5)
            .await
            .unwrap_err();
        let Error::Conflict { current, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(current.key, key);
        assert!(current.value.starts_with(b"{"));

        // Custom resources stay JSON, under their group; values sealed
        // above (encryption at rest) pass as they are.
        let widget = br#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"}}"#;
        let sealed = b"k8s:enc:aescbc:v1:key:\x00\x01";
        for (key, below_key, value) in [
            (
                "/registry/example.com/widgets/w",
                "/registry/example.com/widgets/w",
                &widget[..],
            ),
            (
                "/registry/core/secrets/default/s",
                "/registry/secrets/default/s",
                &sealed[..],
            ),
        ] {
            store.create(key, value.to_vec()).await.expect("create");
            let raw = below.get(below_key).await.expect("get").expect("stored");
            assert_eq!(raw.value, value, "{key}");
            let got = store.get(key).await.expect("get").expect("present");
            assert_eq!(got.value, value, "{key}");
        }
    }
}
