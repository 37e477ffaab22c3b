//! The garbage collector, for the workload kinds (pods, ReplicaSets,
//! Deployments, DaemonSets, StatefulSets, ControllerRevisions, Jobs,
//! CronJobs, Services and their EndpointSlices; Nodes as owners): an object whose owners are all gone is deleted (background
//! cascading); while an owner is deleted with `propagationPolicy: Foreground`
//! its dependents are deleted first and its `foregroundDeletion` finalizer
//! goes when none is left; with `Orphan` the dependents lose their owner
//! reference and the `orphan` finalizer goes. Watch caches of those kinds
//! drive passes after changes and every few seconds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Context;

/// Kinds whose owner references the collector follows: group, version, kind, plural.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("", "v1", "Service", "services"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    // Owners only: each node's slice of the kube-dns Service (src/dns/service.rs).
    ("", "v1", "Node", "nodes"),
];
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
const PASS_EVERY: Duration = Duration::from_secs(5);

/// Runs the collector.
pub async fn run(context: Arc<Context>) {
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for (group, version, kind, plural) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(context.client.clone(), &resource);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed();
        streams.push(stream);
        stores.push((resource, store));
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
        let Some((group, version, _, plural)) =
            KINDS.iter().find(|(_, _, kind, _)| *kind == r.kind)
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

fn finalizers(object: &DynamicObject) -> Vec<String> {
    object.metadata.finalizers.clone().unwrap_or_default()
}

async fn pass(client: &kube::Client, stores: &[(ApiResource, Store<DynamicObject>)]) {
    let objects: Vec<(&ApiResource, Arc<DynamicObject>)> = stores
        .iter()
        .flat_map(|(resource, store)| store.state().into_iter().map(move |o| (resource, o)))
        .collect();
    // Decide only from complete caches: a kind not listed yet would make
    // every owner of that kind look gone (upstream waits for its informers
    // to sync too).
    let all_listed = stores.iter().all(|(_, store)| {
        futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
    });
    if objects.is_empty() || !all_listed {
        return;
    }
    let by_uid: HashMap<String, &DynamicObject> = objects
        .iter()
        .filter_map(|(_, o)| Some((o.metadata.uid.clone()?, o.as_ref())))
        .collect();
    let tracked_kinds: HashSet<&str> = KINDS.iter().map(|(_, _, kind, _)| *kind).collect();
    let mut referenced: HashSet<String> = HashSet::new();
    for (resource, object) in &objects {
        let refs = object.metadata.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            continue;
        }
        for r in &refs {
            referenced.insert(r.uid.clone());
        }
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, *resource);
        let name = object.name_any();
        let owner_of = |uid: &str| by_uid.get(uid).copied();
        // Owners being deleted with Orphan: let go of them.
        let orphaned: Vec<&str> = refs
            .iter()
            .filter(|r| {
                owner_of(&r.uid).is_some_and(|o| {
                    o.metadata.deletion_timestamp.is_some()
                        && finalizers(o).iter().any(|f| f == ORPHAN)
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
                o.metadata.deletion_timestamp.is_some()
                    && finalizers(o).iter().any(|f| f == FOREGROUND)
            })
        });
        // An owner the caches miss is looked up once more before its
        // dependents go (upstream's collector asks the API too).
        let gone = gone && owners_absent(client, &namespace, &refs).await;
        if (gone || owner_in_foreground) && object.metadata.deletion_timestamp.is_none() {
            let params = DeleteParams {
                propagation_policy: Some(if owner_in_foreground {
                    kube::api::PropagationPolicy::Foreground
                } else {
                    kube::api::PropagationPolicy::Background
                }),
                preconditions: Some(Preconditions {
                    uid: object.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api.delete(&name, &params).await;
        }
    }
    // Owners whose cascading is done lose their GC finalizer (and then go).
    for (resource, object) in &objects {
        let uid = object.metadata.uid.clone().unwrap_or_default();
        let current = finalizers(object);
        if object.metadata.deletion_timestamp.is_none()
            || !current.iter().any(|f| f == FOREGROUND || f == ORPHAN)
            || referenced.contains(&uid)
        {
            continue;
        }
        let remaining: Vec<&String> = current
            .iter()
            .filter(|f| *f != FOREGROUND && *f != ORPHAN)
            .collect();
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, *resource);
        let patch = json!({"metadata": {"finalizers": remaining}});
        let _ = api
            .patch(
                &object.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
    }
}
