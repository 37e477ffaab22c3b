//! Helpers every API client component shares (controllers, the service
//! proxy, the cluster DNS, the kubelet): watch caches with a change stream,
//! shared by kind across a process ([`Informers`]), the passes of a loop
//! that recomputes from caches, controller references, and reading API
//! errors. A leaf over kube-rs: it knows no component.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::Store;

/// One watch cache per kind for every loop that reads that kind
/// cluster-wide (upstream's shared informers): one watch, one decoding of
/// each event and one copy of the objects, however many loops read them.
/// Each kind's watch starts when it is first asked for.
#[derive(Clone)]
pub struct Informers {
    client: kube::Client,
    caches: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

/// A kind [`Informers`] can cache: a typed, cluster-known Kubernetes object.
pub trait Shareable:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Shareable for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A kind's shared cache and its change counter.
struct Shared<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    changed: tokio::sync::watch::Receiver<u64>,
}

impl<K: kube::Resource + 'static> Clone for Shared<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changed: self.changed.clone(),
        }
    }
}

impl Informers {
    /// Caches whose watches run as `client` (in kelp's server, the
    /// controller-manager's reader identity).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            caches: Arc::default(),
        }
    }

    /// The shared cache of every `K` in the cluster and a stream that
    /// yields after changes (bursts may count once), as [`cache`] gives.
    pub fn cache<K: Shareable>(&self) -> (Store<K>, futures::stream::BoxStream<'static, ()>) {
        use futures::StreamExt;
        let shared = {
            let mut caches = self.caches.lock().expect("informers");
            caches
                .entry(TypeId::of::<K>())
                .or_insert_with(|| Box::new(start_shared::<K>(self.client.clone())))
                .downcast_ref::<Shared<K>>()
                .expect("one cache type per kind")
                .clone()
        };
        let changes = futures::stream::unfold(shared.changed, |mut changed| async move {
            changed.changed().await.ok()?;
            Some(((), changed))
        })
        .boxed();
        (shared.store, changes)
    }
}

/// Starts the watch that fills a shared cache.
fn start_shared<K: Shareable>(client: kube::Client) -> Shared<K> {
    use futures::StreamExt;
    let (store, mut events) = cache(kube::Api::<K>::all(client));
    let (count, changed) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut seen = 0u64;
        while events.next().await.is_some() {
            seen += 1;
            count.send_replace(seen);
        }
    });
    Shared { store, changed }
}

/// A watch cache of `api`'s objects and a stream that yields once per
/// change, for loops that recompute from caches (one pass per burst).
pub fn cache<K>(
    api: kube::Api<K>,
) -> (
    kube::runtime::reflector::Store<K>,
    futures::stream::BoxStream<'static, ()>,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let changes = kube::runtime::reflector::reflector(
        writer,
        kube::runtime::watcher(api, Default::default()),
    )
    .default_backoff()
    // Every event, not only touched objects: the store swaps a (re)list in
    // at its end (InitDone), and a pass must follow that to see it.
    .map(|_| ())
    .boxed();
    (store, changes)
}

/// Whether a cache made by [`cache`] holds a full list yet, without
/// waiting (its change stream fills it while [`passes`] polls that
/// stream): a loop must not act on a half-filled cache.
pub fn filled<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Why a pass of a cache-driven loop is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Something in the caches changed (a burst counts once).
    Change,
    /// The periodic resync.
    Resync,
}

/// When the passes of a loop that recomputes from caches are due: once
/// per burst of `changes` (after `settle`, so a burst makes one pass) and
/// every `resync` (the first at once). Ends when the changes end.
///
/// The change streams (which fill the caches) are polled by a task of
/// their own, not by the loop: a pass that awaits API calls would
/// otherwise leave the caches as they were when it began, and the next
/// pass would redo the same writes from stale state (under load, a storm).
pub fn passes(
    changes: futures::stream::BoxStream<'static, ()>,
    resync: std::time::Duration,
    settle: std::time::Duration,
) -> futures::stream::BoxStream<'static, Due> {
    use futures::StreamExt;
    // One pending token is the whole backlog: a pass sees every change
    // that came before it.
    let (dirty, pending) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut changes = changes;
        while changes.next().await.is_some() {
            let _ = dirty.try_send(());
        }
    });
    let ticker = tokio::time::interval(resync);
    futures::stream::unfold(
        (pending, ticker),
        move |(mut pending, mut ticker)| async move {
            let due = tokio::select! {
                change = pending.recv() => {
                    change?;
                    tokio::time::sleep(settle).await;
                    // What came during the settling is in this pass too.
                    let _ = pending.try_recv();
                    Due::Change
                }
                _ = ticker.tick() => Due::Resync,
            };
            Some((due, (pending, ticker)))
        },
    )
    .boxed()
}

/// The controller reference `owner` puts on what it makes.
pub fn controller_ref<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether an API error says the object already exists (a race with
/// another writer, harmless for "ensure" loops).
pub fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
