//! Helpers every API client component shares (controllers, the service
//! proxy, the cluster DNS, the kubelet): watch caches with a change stream,
//! shared by kind across a process ([`Informers`]), the passes of a loop
//! that recomputes from caches, controller references, reading API
//! errors, the keyed back-off every retry uses ([`Backoff`]), and the one
//! lifecycle of components ([`Components`], [`Shutdown`]). A leaf over
//! kube-rs: it knows no component.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::Store;

mod backoff;
pub mod leader;
mod lifecycle;
pub use backoff::Backoff;
pub use lifecycle::{Components, Shutdown};

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

/// A kind's shared cache: the objects, a change counter (for loops that
/// recompute from caches), the newest revision it has taken in, and each
/// change as an object (for loops that act per object).
pub struct Informer<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The objects.
    pub store: Store<K>,
    changed: tokio::sync::watch::Receiver<u64>,
    revision: tokio::sync::watch::Receiver<u64>,
    /// Whether the first list is in. Not the store's own
    /// `wait_until_ready`: that wakes only the last of its waiters (one
    /// oneshot receiver behind every clone of the store), and a probe of it
    /// with a no-op waker (`now_or_never`) takes the wake-up from whoever
    /// waits; a shared cache has many waiters and probes.
    filled: tokio::sync::watch::Receiver<bool>,
    subscribers: Subscribers<K>,
}

/// The queues of a cache's per-object subscribers.
type Subscribers<K> = Arc<Mutex<Vec<Subscriber<K>>>>;

/// One subscriber's queue: it holds memory only for the changes not taken
/// yet (a broadcast channel would hold a slot for the whole backlog per
/// kind, taken or not: about 200 kB for each of some thirty kinds).
struct Subscriber<K> {
    queue: tokio::sync::mpsc::Sender<Change<K>>,
    /// It missed a change: it is told [`Change::Relisted`] next.
    behind: bool,
}

/// Hands `change` to every subscriber: one whose queue is full misses it
/// and is told [`Change::Relisted`] once it has room; the gone are dropped.
fn publish<K>(subscribers: &Subscribers<K>, change: Change<K>) {
    use tokio::sync::mpsc::error::TrySendError;
    let mut subscribers = subscribers.lock().expect("subscribers");
    subscribers.retain_mut(|subscriber| {
        let offer = |change: Change<K>| match subscriber.queue.try_send(change) {
            Ok(()) => Some(true),
            Err(TrySendError::Full(_)) => Some(false),
            Err(TrySendError::Closed(_)) => None,
        };
        if subscriber.behind {
            match offer(Change::Relisted) {
                Some(true) => subscriber.behind = false,
                Some(false) => return true,
                None => return false,
            }
        }
        match offer(change.clone()) {
            Some(taken) => {
                subscriber.behind = !taken;
                true
            }
            None => false,
        }
    });
}

impl<K: kube::Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changed: self.changed.clone(),
            revision: self.revision.clone(),
            filled: self.filled.clone(),
            subscribers: self.subscribers.clone(),
        }
    }
}

/// One change in a shared cache, as its subscribers see it.
#[derive(Debug)]
pub enum Change<K> {
    /// An object was added, updated or deleted (its last state).
    Object(Arc<K>),
    /// The cache was (re)filled from a list, or this subscriber fell
    /// behind: anything may have changed.
    Relisted,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Object(o) => Change::Object(o.clone()),
            Change::Relisted => Change::Relisted,
        }
    }
}

/// Changes a subscriber may fall behind by before it is told
/// [`Change::Relisted`] instead (the cache itself never waits for one).
const SUBSCRIBER_BACKLOG: usize = 4096;

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
    /// yields after changes (bursts may count once).
    /// Whether it is filled: [`Informer::filled`] and [`Informer::ready`],
    /// never the store's own readiness (see [`Informer`]).
    pub fn cache<K: Shareable>(&self) -> (Store<K>, futures::stream::BoxStream<'static, ()>) {
        use futures::StreamExt;
        let informer = self.informer::<K>();
        let changes = futures::stream::unfold(informer.changed, |mut changed| async move {
            changed.changed().await.ok()?;
            Some(((), changed))
        })
        .boxed();
        (informer.store, changes)
    }

    /// The shared cache of every `K` in the cluster, with its per-object
    /// changes and the revision it has reached.
    pub fn informer<K: Shareable>(&self) -> Informer<K> {
        let mut caches = self.caches.lock().expect("informers");
        caches
            .entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(start_shared::<K>(self.client.clone())))
            .downcast_ref::<Informer<K>>()
            .expect("one cache type per kind")
            .clone()
    }
}

impl<K: Shareable> Informer<K> {
    /// Each change from now on; a subscriber that falls behind is told
    /// [`Change::Relisted`] rather than holding the cache up.
    pub fn changes(&self) -> futures::stream::BoxStream<'static, Change<K>> {
        use futures::StreamExt;
        let (queue, taken) = tokio::sync::mpsc::channel(SUBSCRIBER_BACKLOG);
        self.subscribers
            .lock()
            .expect("subscribers")
            .push(Subscriber {
                queue,
                behind: false,
            });
        futures::stream::unfold(taken, |mut taken| async move {
            let change = taken.recv().await?;
            Some((change, taken))
        })
        .boxed()
    }

    /// The objects of kind `O` whose controlled objects changed, each time
    /// one of them changes (for `Controller::reconcile_on`).
    pub fn owners<O>(
        &self,
    ) -> futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<O>>
    where
        O: kube::Resource<DynamicType = ()>,
    {
        use futures::StreamExt;
        self.changes()
            .filter_map(|change| async move {
                let Change::Object(object) = change else {
                    return None;
                };
                let meta = object.meta();
                let owner = meta
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true))?;
                let ours = owner.kind == O::kind(&()) && owner.api_version == O::api_version(&());
                ours.then(|| {
                    kube::runtime::reflector::ObjectRef::new(&owner.name)
                        .within(meta.namespace.as_deref().unwrap_or_default())
                })
            })
            .boxed()
    }

    /// Each object as it changes (a deleted one in its last state), for
    /// kube-runtime's `Controller::owns_shared_stream` and
    /// `watches_shared_stream`; a refill shows in [`Informer::relists`].
    pub fn objects(&self) -> futures::stream::BoxStream<'static, Arc<K>> {
        use futures::StreamExt;
        self.changes()
            .filter_map(|change| async move {
                match change {
                    Change::Object(object) => Some(object),
                    Change::Relisted => None,
                }
            })
            .boxed()
    }

    /// Yields whenever the cache was refilled or a subscriber fell behind
    /// (for `Controller::reconcile_all_on`).
    pub fn relists(&self) -> futures::stream::BoxStream<'static, ()> {
        use futures::StreamExt;
        self.changes()
            .filter_map(|change| async move { matches!(change, Change::Relisted).then_some(()) })
            .boxed()
    }

    /// Whether the cache holds a full list yet: nothing may act on it before.
    pub fn filled(&self) -> bool {
        *self.filled.borrow()
    }

    /// Waits until the cache holds a full list; false if its watch ended
    /// first. Any number of tasks may wait at once.
    pub async fn ready(&self) -> bool {
        self.filled.clone().wait_for(|filled| *filled).await.is_ok()
    }

    /// Whether the cache has taken in every change up to `revision`, so a
    /// write answered at that revision is in it. (kelp's resourceVersions
    /// are its store's revisions: one sequence for every kind, delivered in
    /// order on each watch.)
    pub fn has_seen(&self, revision: u64) -> bool {
        *self.revision.borrow() >= revision
    }
}

/// A kube-runtime controller of every `K` over the process's shared cache
/// of `K` (kube-runtime's shared streams), instead of a watch of its own:
/// each `K` is reconciled when it changes, once at the start and after
/// every refill. It waits until the cache is filled (`None` if its watch
/// ended first), because the controller's runner waits on the store's own
/// readiness, which wakes only the last of its waiters (see [`Informer`]);
/// once the store is ready, that wait returns at once.
pub async fn shared_controller<K: Shareable>(
    informers: &Informers,
) -> Option<kube::runtime::Controller<K>> {
    use futures::StreamExt;
    let informer = informers.informer::<K>();
    let changed = informer.objects();
    let refilled = informer.relists();
    if !informer.ready().await {
        return None;
    }
    let at_start = futures::stream::once(async {});
    Some(
        kube::runtime::Controller::for_shared_stream(changed, informer.store.clone())
            .reconcile_all_on(at_start.chain(refilled)),
    )
}

/// [`shared_controller`] of `K`, also woken for each `K` that controls a
/// `Child` that changed (every `K` after a refill of the `Child` cache).
pub async fn shared_controller_owning<K: Shareable, Child: Shareable>(
    informers: &Informers,
) -> Option<kube::runtime::Controller<K>> {
    let children = informers.informer::<Child>();
    Some(
        shared_controller::<K>(informers)
            .await?
            .owns_shared_stream(children.objects())
            .reconcile_all_on(children.relists()),
    )
}

/// [`shared_controller`] of `K`, also woken for the `K`s `relate` names
/// when an `Other` changes (every `K` after a refill of the `Other` cache).
pub async fn shared_controller_watching<K, Other, I>(
    informers: &Informers,
    relate: impl Fn(Arc<Other>) -> I + Send + Sync + 'static,
) -> Option<kube::runtime::Controller<K>>
where
    K: Shareable,
    Other: Shareable,
    I: IntoIterator<Item = kube::runtime::reflector::ObjectRef<K>> + 'static,
    I::IntoIter: Send,
{
    let others = informers.informer::<Other>();
    Some(
        shared_controller::<K>(informers)
            .await?
            .watches_shared_stream(others.objects(), relate)
            .reconcile_all_on(others.relists()),
    )
}

/// Starts the watch that fills a shared cache.
fn start_shared<K: Shareable>(client: kube::Client) -> Informer<K> {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::Event;
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let mut events = kube::runtime::reflector::reflector(
        writer,
        kube::runtime::watcher(kube::Api::<K>::all(client), Default::default()),
    )
    .default_backoff()
    .boxed();
    let (count, changed) = tokio::sync::watch::channel(0u64);
    let (newest, revision) = tokio::sync::watch::channel(0u64);
    let (listed, filled) = tokio::sync::watch::channel(false);
    let subscribers: Subscribers<K> = Arc::default();
    let sender = subscribers.clone();
    tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(event) = events.next().await {
            let (object, announce) = match event {
                Ok(Event::Apply(o) | Event::Delete(o)) => (o, true),
                Ok(Event::InitApply(o)) => (o, false),
                Ok(Event::InitDone) => {
                    // The reflector has swapped the list into the store.
                    listed.send_replace(true);
                    publish(&sender, Change::Relisted);
                    seen += 1;
                    count.send_replace(seen);
                    continue;
                }
                Ok(Event::Init) | Err(_) => continue,
            };
            let rev = revision_of(&object);
            newest.send_if_modified(|n| {
                let newer = rev > *n;
                *n = (*n).max(rev);
                newer
            });
            if announce {
                publish(&sender, Change::Object(Arc::new(object)));
                seen += 1;
                count.send_replace(seen);
            }
        }
    });
    Informer {
        store,
        changed,
        revision,
        filled,
        subscribers,
    }
}

/// An object's resourceVersion as kelp's store revision (0 if none).
fn revision_of<K: kube::Resource>(object: &K) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What a controller has written and not yet seen in its cache (upstream's
/// ControllerExpectations): until the cache has taken in the objects an
/// owner made and deleted, a reconcile must not count without them, or a
/// lagging cache makes it create or delete twice.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Expected>>,
}

/// One owner's writes not yet seen.
struct Expected {
    /// The newest revision its writes were answered at.
    revision: u64,
    /// The objects it deleted (namespace, name, uid): seen once gone or
    /// terminating.
    deleted: Vec<(String, String, String)>,
    /// When the first was recorded: after [`EXPECTATIONS_TIMEOUT`] the
    /// owner syncs anyway (a change a relist folded away must not stall it).
    since: std::time::Instant,
}

/// Upstream's ExpectationsTimeout.
const EXPECTATIONS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl Expectations {
    /// Records that `owner` made `object` (as the API answered), or
    /// deleted it when `deleted`.
    pub fn wrote<K: kube::Resource>(&self, owner: &str, object: &K, deleted: bool) {
        let mut pending = self.pending.lock().expect("expectations");
        let entry = pending
            .entry(owner.to_string())
            .or_insert_with(|| Expected {
                revision: 0,
                deleted: Vec::new(),
                since: std::time::Instant::now(),
            });
        entry.revision = entry.revision.max(revision_of(object));
        if deleted {
            let meta = object.meta();
            entry.deleted.push((
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
                meta.uid.clone().unwrap_or_default(),
            ));
        }
    }

    /// Whether `owner` may act on `informer`'s objects: every write it
    /// recorded is in the cache (or they timed out). A satisfied owner is
    /// forgotten.
    pub fn satisfied<K: Shareable>(&self, owner: &str, informer: &Informer<K>) -> bool {
        let mut pending = self.pending.lock().expect("expectations");
        let Some(expected) = pending.get(owner) else {
            return true;
        };
        let live = |(namespace, name, uid): &(String, String, String)| {
            let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
            informer.store.get(&key).is_some_and(|o| {
                o.meta().uid.as_ref() == Some(uid) && o.meta().deletion_timestamp.is_none()
            })
        };
        let seen = informer.has_seen(expected.revision) && !expected.deleted.iter().any(live);
        if seen || expected.since.elapsed() > EXPECTATIONS_TIMEOUT {
            pending.remove(owner);
            return true;
        }
        false
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::Event;

    fn pod(name: &str, uid: &str, rev: u64, terminating: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rev.to_string()},
        }))
        .unwrap();
        if terminating {
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        pod
    }

    /// An informer fed by hand: its writer and the revision it has seen.
    fn informer() -> (
        Informer<Pod>,
        kube::runtime::reflector::store::Writer<Pod>,
        tokio::sync::watch::Sender<u64>,
    ) {
        let (store, mut writer) = kube::runtime::reflector::store::<Pod>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let (_, changed) = tokio::sync::watch::channel(0);
        let (seen, revision) = tokio::sync::watch::channel(0);
        let (_, filled) = tokio::sync::watch::channel(true);
        let informer = Informer {
            store,
            changed,
            revision,
            filled,
            subscribers: Arc::default(),
        };
        (informer, writer, seen)
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_relisted_and_a_gone_one_is_dropped() {
        let subscribers: Subscribers<u32> = Arc::default();
        let (queue, mut taken) = tokio::sync::mpsc::channel(2);
        let (gone, _) = tokio::sync::mpsc::channel(2);
        subscribers.lock().unwrap().extend([
            Subscriber {
                queue,
                behind: false,
            },
            Subscriber {
                queue: gone,
                behind: false,
            },
        ]);
        for n in 1..=3 {
            publish(&subscribers, Change::Object(Arc::new(n)));
        }
        assert_eq!(
            subscribers.lock().unwrap().len(),
            1,
            "the gone one is dropped"
        );
        let mut next = || match taken.try_recv() {
            Ok(Change::Object(n)) => Some(*n),
            Ok(Change::Relisted) => Some(0),
            Err(_) => None,
        };
        assert_eq!((next(), next(), next()), (Some(1), Some(2), None));
        // 3 was missed: the next change comes after a Relisted.
        publish(&subscribers, Change::Object(Arc::new(4)));
        assert_eq!((next(), next(), next()), (Some(0), Some(4), None));
    }

    #[tokio::test]
    async fn every_waiter_on_a_shared_cache_wakes_when_it_fills_whatever_probes_it_meanwhile() {
        let (mut informer, _writer, _seen) = informer();
        let (listed, filled) = tokio::sync::watch::channel(false);
        informer.filled = filled;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let informer = informer.clone();
                tokio::spawn(async move { informer.ready().await })
            })
            .collect();
        tokio::task::yield_now().await;
        // A controller's reconcile probes the cache while the others wait
        // (with the store's own readiness, this took the wake-up).
        assert!(!informer.filled());
        tokio::task::yield_now().await;
        listed.send_replace(true);
        for waiter in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(true))), "a waiter was not woken");
        }
        assert!(informer.filled());
    }

    #[test]
    fn an_owner_waits_until_the_cache_shows_what_it_made_and_deleted() {
        let (informer, mut writer, seen) = informer();
        assert!(informer.filled());
        let expectations = Expectations::default();
        assert!(
            expectations.satisfied("ns/rs", &informer),
            "nothing written"
        );

        let old = pod("old", "u-old", 3, false);
        writer.apply_watcher_event(&Event::Apply(old.clone()));
        seen.send_replace(3);
        // Made one (answered at revision 5), deleted another (answered at 6).
        expectations.wrote("ns/rs", &pod("new", "u-new", 5, false), false);
        expectations.wrote("ns/rs", &pod("old", "u-old", 6, true), true);
        assert!(!expectations.satisfied("ns/rs", &informer));
        assert!(expectations.satisfied("ns/other", &informer), "per owner");

        // The create is in the cache, the delete not yet.
        seen.send_replace(5);
        assert!(!expectations.satisfied("ns/rs", &informer));
        // The delete shows as terminating: both seen, and then forgotten.
        writer.apply_watcher_event(&Event::Apply(pod("old", "u-old", 6, true)));
        seen.send_replace(6);
        assert!(expectations.satisfied("ns/rs", &informer));
        assert!(expectations.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn a_deleted_object_counts_as_seen_once_gone_even_if_its_answer_had_no_newer_revision() {
        let (informer, mut writer, seen) = informer();
        let expectations = Expectations::default();
        let doomed = pod("p", "u-p", 7, false);
        writer.apply_watcher_event(&Event::Apply(doomed.clone()));
        seen.send_replace(7);
        // Deleted at once (the API answered with a Status): only its uid says
        // whether the cache caught up.
        expectations.wrote("ns/rs", &doomed, true);
        assert!(!expectations.satisfied("ns/rs", &informer));
        writer.apply_watcher_event(&Event::Delete(doomed));
        assert!(expectations.satisfied("ns/rs", &informer));
    }
}
