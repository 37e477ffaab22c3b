//! Encryption at rest: a [`Store`] in front of another that seals the values
//! of the resources an EncryptionConfiguration names (secrets, by k3s's
//! `--secrets-encryption`) on the way in and opens them on the way out, in
//! upstream's envelope (`k8s:enc:aescbc:v1:<key>:…`), so the database file
//! holds only ciphertext for them. Everything above it sees plain objects.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures::StreamExt;

use super::encryption::{EncryptionConfig, Transformer};
use super::{Error, Event, KeyValue, ListPage, Result, Revision, Store, WatchStream};

/// The encrypting store.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Shared,
}

/// The configuration in force, shared with open watch streams (a rotation
/// reaches them too).
type Shared = Arc<RwLock<Arc<EncryptionConfig>>>;

/// What a pass over the encrypted resources found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Values under the current (first) provider and key.
    pub current: usize,
    /// Values under an older key or provider, or stored in the clear:
    /// readable, but due for rewriting.
    pub stale: usize,
    /// Values rewritten by this pass.
    pub rewritten: usize,
}

impl EncryptedStore {
    /// Wraps `inner` with `config`.
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig) -> Self {
        Self {
            inner,
            config: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// Uses `config` from now on (a rotated key list).
    pub fn reload(&self, config: EncryptionConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<EncryptionConfig> {
        current(&self.config)
    }

    /// Counts the stored values of encrypted resources by key, and with
    /// `rewrite` writes every stale one again under the current key (the
    /// re-encryption after a rotation), without downtime: each rewrite is
    /// an ordinary conditional update.
    pub async fn census(&self, rewrite: bool) -> Result<Census> {
        let mut census = Census::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.inner.list("/registry/", after.as_deref(), 500).await?;
            let config = self.config();
            for kv in &page.items {
                let Some(transformer) = transformer(&config, &kv.key) else {
                    continue;
                };
                let (plain, stale) = transformer
                    .decrypt(&kv.key, &kv.value)
                    .map_err(|e| transform_error(&kv.key, e))?;
                if !stale {
                    census.current += 1;
                    continue;
                }
                census.stale += 1;
                if rewrite {
                    let sealed = transformer
                        .encrypt(&kv.key, &plain)
                        .map_err(|e| transform_error(&kv.key, e))?;
                    match self.inner.update(&kv.key, sealed, kv.mod_revision).await {
                        // A concurrent write already sealed it with the current key.
                        Ok(_) | Err(Error::Conflict { .. }) | Err(Error::NotFound(_)) => {
                            census.rewritten += 1
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if !page.more {
                break;
            }
            after = page.items.last().map(|kv| kv.key.clone());
        }
        Ok(census)
    }
}

fn current(config: &Shared) -> Arc<EncryptionConfig> {
    config.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The transformer of `key`'s resource, if the configuration names it.
fn transformer<'a>(config: &'a EncryptionConfig, key: &str) -> Option<&'a Transformer> {
    let (group, resource) = group_resource(key)?;
    config.transformer_for(group, resource)
}

/// (API group, resource) of a store key: `/registry/core/secrets/ns/name`
/// is ("", "secrets").
fn group_resource(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.strip_prefix("/registry/")?.split('/');
    let group = parts.next()?;
    let resource = parts.next()?;
    Some((if group == "core" { "" } else { group }, resource))
}

fn transform_error(key: &str, e: super::encryption::Error) -> Error {
    Error::Database(format!("value of {key}: {e}"))
}

fn seal(config: &EncryptionConfig, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
    match transformer(config, key) {
        None => Ok(value),
        Some(t) => t.encrypt(key, &value).map_err(|e| transform_error(key, e)),
    }
}

fn open_value(config: &EncryptionConfig, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
    match transformer(config, key) {
        None => Ok(value),
        Some(t) => Ok(t
            .decrypt(key, &value)
            .map_err(|e| transform_error(key, e))?
            .0),
    }
}

fn open(config: &EncryptionConfig, mut kv: KeyValue) -> Result<KeyValue> {
    kv.value = open_value(config, &kv.key, std::mem::take(&mut kv.value))?;
    Ok(kv)
}

fn open_event(config: &EncryptionConfig, mut event: Event) -> Result<Event> {
    if let Some(prev) = event.prev.take() {
        event.prev = Some(open_value(config, &event.kv.key, prev)?);
    }
    event.kv = open(config, event.kv)?;
    Ok(event)
}

#[async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.inner.get(key).await? {
            Some(kv) => Ok(Some(open(&self.config(), kv)?)),
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
        let mut page = self
            .inner
            .list_at(prefix, start_after, limit, revision)
            .await?;
        let config = self.config();
        page.items = page
            .items
            .into_iter()
            .map(|kv| open(&config, kv))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let sealed = seal(&self.config(), key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let sealed = seal(&self.config(), key, value)?;
        self.inner.update(key, sealed, expected).await
    }

    async fn update_coalesced(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision> {
        let sealed = seal(&self.config(), key, value)?;
        self.inner.update_coalesced(key, sealed, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (revision, kv) = self.inner.delete(key, expected).await?;
        Ok((revision, open(&self.config(), kv)?))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let events = self.inner.watch(prefix, after).await?;
        let config = self.config.clone();
        Ok(events
            .map(move |event| event.and_then(|e| open_event(&current(&config), e)))
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        self.inner.count(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test(flavor = "multi_thread")]
    async fn secrets_are_sealed_below_plain_above_and_survive_a_rotation() {
        use super::super::encryption::{generate_config, with_new_first_key, without_stale_keys};
        let dir = tempfile::tempdir().expect("tempdir");
        let raw: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db")).expect("store"));
        let text = generate_config("aescbckey");
        let store =
            EncryptedStore::new(raw.clone(), EncryptionConfig::parse(&text).expect("config"));
        let key = "/registry/core/secrets/default/db";
        let secret = br#"{"data":{"password":"hunter2"}}"#.to_vec();
        store.create(key, secret.clone()).await.expect("create");
        store
            .create("/registry/core/configmaps/default/c", b"{}".to_vec())
            .await
            .expect("create");
        let sealed = raw.get(key).await.expect("get").expect("kv");
        assert!(sealed.value.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
        assert!(!sealed.value.windows(7).any(|w| w == b"hunter2"));
        let plain = raw
            .get("/registry/core/configmaps/default/c")
            .await
            .expect("get")
            .expect("kv");
        assert_eq!(plain.value, b"{}");
        assert_eq!(
            store.get(key).await.expect("get").expect("kv").value,
            secret
        );
        let listed = store
            .list("/registry/core/secrets/", None, 0)
            .await
            .expect("list");
        assert_eq!(listed.items[0].value, secret);
        // Rotation: a new first key; the old value is stale until rewritten.
        let rotated = with_new_first_key(&text, "aescbckey-2").expect("rotate");
        store.reload(EncryptionConfig::parse(&rotated).expect("config"));
        let census = store.census(false).await.expect("census");
        assert_eq!((census.current, census.stale), (0, 1));
        assert_eq!(store.census(true).await.expect("rewrite").rewritten, 1);
        assert_eq!(store.census(false).await.expect("census").stale, 0);
        let resealed = raw.get(key).await.expect("get").expect("kv");
        assert!(
            resealed
                .value
                .starts_with(b"k8s:enc:aescbc:v1:aescbckey-2:")
        );
        store.reload(
            EncryptionConfig::parse(&without_stale_keys(&rotated).expect("drop")).expect("config"),
        );
        assert_eq!(
            store.get(key).await.expect("get").expect("kv").value,
            secret
        );
    }
}
