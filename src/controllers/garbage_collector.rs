//! The garbage collector, for the workload kinds (pods, ReplicaSets,
//! Deployments, DaemonSets, StatefulSets, ControllerRevisions, Jobs,
//! CronJobs, Services and their EndpointSlices; Nodes as owners): an object whose owners are all gone is deleted (background
//! cascading); while an owner is deleted with `propagationPolicy: Foreground`
//! its dependents are deleted first and its `foregroundDeletion` finalizer
//! goes when none is left; with `Orphan` the dependents lose their owner
//! reference and the `orphan` finalizer goes. The process's shared caches
//! of those kinds (read as metadata only, as upstream's collector does)
//! drive passes after changes and every few seconds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
};
use serde_json::json;

use super::Context;
use crate::runtime::{Informers, Shareable};

/// Kinds whose owner references the collector follows: group, version,
/// kind, plural, and how to read the process's shared cache of them.
const KINDS: &[(&str, &str, &str, &str, Reader)] = &[
    ("", "v1", "Pod", "pods", shared::<Pod>),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        shared::<ReplicaSet>,
    ),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        shared::<Deployment>,
    ),
    ("apps", "v1", "DaemonSet", "daemonsets", shared::<DaemonSet>),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        shared::<StatefulSet>,
    ),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        shared::<ControllerRevision>,
    ),
    ("batch", "v1", "Job", "jobs", shared::<Job>),
    ("batch", "v1", "CronJob", "cronjobs", shared::<CronJob>),
    ("", "v1", "Service", "services", shared::<Service>),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        shared::<EndpointSlice>,
    ),
    // Owners only: each node's slice of the kube-dns Service (src/dns/service.rs).
    ("", "v1", "Node", "nodes", shared::<Node>),
];

/// What the collector reads of an object: its metadata.
trait Metadata: Send + Sync {
    fn metadata(&self) -> &ObjectMeta;
}

impl<K: kube::Resource + Send + Sync> Metadata for K {
    fn metadata(&self) -> &ObjectMeta {
        self.meta()
    }
}

/// One kind's cache as the collector reads it: every object, or None
/// until the cache holds a full list.
type Objects = Box<dyn Fn() -> Option<Vec<Arc<dyn Metadata>>> + Send + Sync>;

/// Opens a kind's shared cache: its objects and its change stream.
type Reader = fn(&Informers) -> (Objects, BoxStream<'static, ()>);

fn shared<K: Shareable>(informers: &Informers) -> (Objects, BoxStream<'static, ()>) {
    let informer = informers.informer::<K>();
    let (store, changes) = informers.cache::<K>();
    let objects: Objects = Box::new(move || {
        informer.filled().then(|| {
            store
                .state()
                .into_iter()
                .map(|o| o as Arc<dyn Metadata>)
                .collect()
        })
    });
    (objects, changes)
}
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
const PASS_EVERY: Duration = Duration::from_secs(5);

/// Runs the collector.
pub async fn run(context: Arc<Context>) {
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for (group, version, kind, plural, read) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let (objects, changes) = read(&context.informers);
        streams.push(changes);
        stores.push((resource, objects));
    }
    let changes = futures::stream::select_all(streams).boxed();
    let mut passes = crate::runtime::passes(changes, PASS_EVERY, Duration::from_millis(20));
    while passes.next().await.is_some() {
        pass(&context.client, &stores).await;
    }
}

/// Whether none of `refs` exists with its uid, asked of the API server.
async fn owners_absent(
    client: &kube::Client,
    namespace: &str,
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
) -> bool {
    for r in refs {
        let Some((group, version, _, plural, _)) =
            KINDS.iter().find(|(_, _, kind, _, _)| *kind == r.kind)
        else {
            continue;
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &r.kind),
            plural,
        );
        let api: Api<DynamicObject> = if r.kind == "Node" {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(client.clone(), namespace, &resource)
        };
        match api.get_opt(&r.name).await {
            Ok(Some(owner)) if owner.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                return false;
            }
            Ok(_) => {}
            // Unsure: keep the dependent.
            Err(_) => return false,
        }
    }
    true
}

fn finalizers(object: &ObjectMeta) -> Vec<String> {
    object.finalizers.clone().unwrap_or_default()
}

async fn pass(client: &kube::Client, stores: &[(ApiResource, Objects)]) {
    let mut objects: Vec<(&ApiResource, Arc<dyn Metadata>)> = Vec::new();
    for (resource, read) in stores {
        // Decide only from complete caches: a kind not listed yet would make
        // every owner of that kind look gone (upstream waits for its
        // informers to sync too).
        let Some(listed) = read() else {
            return;
        };
        objects.extend(listed.into_iter().map(|o| (resource, o)));
    }
    if objects.is_empty() {
        return;
    }
    let by_uid: HashMap<String, &ObjectMeta> = objects
        .iter()
        .filter_map(|(_, o)| Some((o.metadata().uid.clone()?, o.metadata())))
        .collect();
    let tracked_kinds: HashSet<&str> = KINDS.iter().map(|(_, _, kind, _, _)| *kind).collect();
    let mut referenced: HashSet<String> = HashSet::new();
    for (resource, object) in &objects {
        let object = object.metadata();
        let refs = object.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            continue;
        }
        for r in &refs {
            referenced.insert(r.uid.clone());
        }
        let namespace = object.namespace.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, *resource);
        let name = object.name.clone().unwrap_or_default();
        let owner_of = |uid: &str| by_uid.get(uid).copied();
        // Owners being deleted with Orphan: let go of them.
        let orphaned: Vec<&str> = refs
            .iter()
            .filter(|r| {
                owner_of(&r.uid).is_some_and(|o| {
                    o.deletion_timestamp.is_some() && finalizers(o).iter().any(|f| f == ORPHAN)
                })
            })
            .map(|r| r.uid.as_str())
            .collect();
        if !orphaned.is_empty() {
            let kept: Vec<_> = refs
                .iter()
                .filter(|r| !orphaned.contains(&r.uid.as_str()))
                .collect();
            // None left: the field goes, as upstream's objects show it.
            let kept = if kept.is_empty() {
                json!(null)
            } else {
                json!(kept)
            };
            let patch = json!({"metadata": {"ownerReferences": kept}});
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            continue;
        }
        let gone = refs
            .iter()
            .all(|r| tracked_kinds.contains(r.kind.as_str()) && owner_of(&r.uid).is_none());
        let owner_in_foreground = refs.iter().any(|r| {
            owner_of(&r.uid).is_some_and(|o| {
                o.deletion_timestamp.is_some() && finalizers(o).iter().any(|f| f == FOREGROUND)
            })
        });
        // An owner the caches miss is looked up once more before its
        // dependents go (upstream's collector asks the API too).
        let gone = gone && owners_absent(client, &namespace, &refs).await;
        if (gone || owner_in_foreground) && object.deletion_timestamp.is_none() {
            let params = DeleteParams {
                propagation_policy: Some(if owner_in_foreground {
                    kube::api::PropagationPolicy::Foreground
                } else {
                    kube::api::PropagationPolicy::Background
                }),
                preconditions: Some(Preconditions {
                    uid: object.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api.delete(&name, &params).await;
        }
    }
    // Owners whose cascading is done lose their GC finalizer (and then go).
    for (resource, object) in &objects {
        let object = object.metadata();
        let uid = object.uid.clone().unwrap_or_default();
        let current = finalizers(object);
        if object.deletion_timestamp.is_none()
            || !current.iter().any(|f| f == FOREGROUND || f == ORPHAN)
            || referenced.contains(&uid)
        {
            continue;
        }
        let remaining: Vec<&String> = current
            .iter()
            .filter(|f| *f != FOREGROUND && *f != ORPHAN)
            .collect();
        let namespace = object.namespace.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, *resource);
        let patch = json!({"metadata": {"finalizers": remaining}});
        let _ = api
            .patch(
                object.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
    }
}
