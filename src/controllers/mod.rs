//! Control loops, each its own file, all kube-rs controllers over the
//! in-process client (user `system:kube-controller-manager`).

pub mod addons;
pub mod certificates;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbage_collector;
pub mod history;
pub mod horizontal_pod_autoscaler;
pub mod job;
pub mod namespace;
pub mod node_lifecycle;
pub mod persistent_volume;
pub mod pod_gc;
pub mod replicaset;
pub mod resource_quota;
pub mod root_ca;
pub mod service_lb;
pub mod serviceaccount;
pub mod statefulset;
pub mod volume_protection;
pub mod workqueue;

use std::sync::Arc;

use crate::runtime::Shutdown;

/// A client acting as the kube-system service account of the named
/// upstream controller (`deployment-controller`, ...).
pub type Identities = Arc<dyn Fn(&str) -> kube::Client + Send + Sync>;

/// What the controllers are given.
#[derive(Clone)]
pub struct Context {
    /// API client acting as this controller's upstream identity, so it
    /// holds exactly the rights of upstream's `system:controller:*` role.
    pub client: kube::Client,
    /// Clients for the other identities a controller acts as where kelp
    /// folds two upstream controllers into one (endpoints and slices, Jobs
    /// and their TTL).
    pub identities: Identities,
    /// The cluster CA certificate (PEM), published in every namespace.
    pub ca_pem: String,
    /// The cluster CA's key (PEM), for signing approved certificate requests.
    pub ca_key_pem: String,
    /// Sent after each certificate signed (the signing CA cross-signed by
    /// the one it replaced; empty before a CA rotation).
    pub ca_chain_pem: String,
    /// How often each HorizontalPodAutoscaler syncs
    /// (`--horizontal-pod-autoscaler-sync-period`).
    pub hpa_sync_period: std::time::Duration,
    /// The controller's work queue, for its metrics.
    pub queue: workqueue::Queue,
    /// Watch caches shared by every controller (pods, nodes, services).
    pub informers: crate::runtime::Informers,
    /// What this controller wrote and its caches have not shown yet.
    pub expectations: Arc<crate::runtime::Expectations>,
}

/// One controller's loop, given its context.
type Loop = fn(Arc<Context>) -> futures::future::BoxFuture<'static, ()>;

/// Every controller: its upstream name (its identity and its queue's name)
/// and its loop.
const CONTROLLERS: &[(&str, Loop)] = &[
    ("service-account-controller", |c| {
        Box::pin(serviceaccount::run(c))
    }),
    ("root-ca-cert-publisher", |c| Box::pin(root_ca::run(c))),
    ("resourcequota-controller", |c| {
        Box::pin(resource_quota::run(c))
    }),
    ("disruption-controller", |c| Box::pin(disruption::run(c))),
    ("namespace-controller", |c| Box::pin(namespace::run(c))),
    ("replicaset-controller", |c| Box::pin(replicaset::run(c))),
    ("deployment-controller", |c| Box::pin(deployment::run(c))),
    ("job-controller", |c| Box::pin(job::run(c))),
    ("daemon-set-controller", |c| Box::pin(daemonset::run(c))),
    ("statefulset-controller", |c| Box::pin(statefulset::run(c))),
    ("endpoint-controller", |c| Box::pin(endpoints::run(c))),
    ("service-controller", |c| Box::pin(service_lb::run(c))),
    ("node-controller", |c| Box::pin(node_lifecycle::run(c))),
    ("pod-garbage-collector", |c| Box::pin(pod_gc::run(c))),
    ("persistent-volume-binder", |c| {
        Box::pin(persistent_volume::run(c))
    }),
    ("pvc-protection-controller", |c| {
        Box::pin(volume_protection::run_claims(c))
    }),
    ("pv-protection-controller", |c| {
        Box::pin(volume_protection::run_volumes(c))
    }),
    ("cronjob-controller", |c| Box::pin(cronjob::run(c))),
    ("horizontal-pod-autoscaler", |c| {
        Box::pin(horizontal_pod_autoscaler::run(c))
    }),
    ("generic-garbage-collector", |c| {
        Box::pin(garbage_collector::run(c))
    }),
    ("certificate-controller", |c| Box::pin(certificates::run(c))),
    ("token-cleaner", |c| Box::pin(certificates::clean_tokens(c))),
    ("clusterrole-aggregation-controller", |c| {
        Box::pin(clusterrole_aggregation::run(c))
    }),
];

/// The controller-manager: every controller, each as its upstream identity.
#[derive(Clone)]
pub struct ControllerManager {
    identities: Identities,
    ca: (String, String, String),
    hpa_sync_period: std::time::Duration,
    queues: workqueue::WorkQueueMetrics,
    informers: crate::runtime::Informers,
}

impl ControllerManager {
    /// The controllers acting as `identities`, reading the process's
    /// shared caches, signing with the CA's `(certificate, key, chain)`,
    /// their queues' series in `metrics`.
    pub fn new(
        identities: Identities,
        informers: crate::runtime::Informers,
        ca: (String, String, String),
        hpa_sync_period: std::time::Duration,
        metrics: &crate::telemetry::Metrics,
    ) -> Self {
        ControllerManager {
            identities,
            ca,
            hpa_sync_period,
            queues: workqueue::WorkQueueMetrics::new(metrics),
            informers,
        }
    }

    /// The `leader_election_master_status` gauge of Lease `name`.
    pub fn leader_status(&self, name: &'static str) -> prometheus_client::metrics::gauge::Gauge {
        self.queues.leader_status(name)
    }

    /// Runs every controller until `shutdown`, then stops them all. A
    /// controller that ends on its own is logged (they run until stopped).
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let ControllerManager {
            identities,
            ca: (ca_pem, ca_key_pem, ca_chain_pem),
            hpa_sync_period,
            queues,
            informers,
        } = self;
        // The identity each controller acts as, and its queue's upstream name.
        let context = |controller: &str| {
            Arc::new(Context {
                client: identities(controller),
                identities: identities.clone(),
                ca_pem: ca_pem.clone(),
                ca_key_pem: ca_key_pem.clone(),
                ca_chain_pem: ca_chain_pem.clone(),
                hpa_sync_period,
                queue: queues.queue(queue_name(controller)),
                informers: informers.clone(),
                expectations: Arc::default(),
            })
        };
        let mut loops = tokio::task::JoinSet::new();
        for (name, run) in CONTROLLERS {
            let work = run(context(name));
            loops.spawn(async move {
                work.await;
                *name
            });
        }
        loop {
            tokio::select! {
                _ = shutdown.requested() => break,
                ended = loops.join_next() => match ended {
                    Some(Ok(name)) => tracing::error!(controller = name, "controller ended"),
                    Some(Err(e)) => tracing::error!(err = %e, "controller failed"),
                    None => break,
                },
            }
        }
        // The loops hold no state of their own: stopping is dropping them.
        loops.shutdown().await;
        Ok(())
    }
}

/// Runs `controller` until the process ends: each reconcile through the
/// controller's work queue (for its metrics), a failed one retried after 2 s.
pub async fn drive<K, F, Fut>(
    controller: kube::runtime::Controller<K>,
    context: Arc<Context>,
    reconcile: F,
) where
    K: crate::runtime::Shareable,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, Error>>
        + Send
        + 'static,
{
    use futures::StreamExt;
    controller
        .run(
            workqueue::queued(context.queue.clone(), reconcile),
            retry,
            context,
        )
        .for_each(|_| async {})
        .await;
}

/// A controller of every `K`, woken by their changes and by changes to the
/// pods they control, which its reconciles read from the process's shared
/// pod cache (a refill of that cache wakes every `K`).
/// `None` if the cache of `K` ended before it filled.
pub async fn over_owned_pods<K: crate::runtime::Shareable>(
    context: &Context,
) -> Option<kube::runtime::Controller<K>> {
    let pods = context
        .informers
        .informer::<k8s_openapi::api::core::v1::Pod>();
    Some(
        crate::runtime::shared_controller::<K>(&context.informers)
            .await?
            .reconcile_on(pods.owners::<K>())
            .reconcile_all_on(pods.relists()),
    )
}

/// The shared pod cache once it holds a full list (nothing may act on it
/// before: a restart must change nothing that runs), and whether it shows
/// the last creates and deletes of the owner `key` (`namespace/name`).
pub fn pod_cache(
    context: &Context,
    key: &str,
) -> Option<(
    crate::runtime::Informer<k8s_openapi::api::core::v1::Pod>,
    bool,
)> {
    let cache = context
        .informers
        .informer::<k8s_openapi::api::core::v1::Pod>();
    if !cache.filled() {
        return None;
    }
    let in_sync = context.expectations.satisfied(key, &cache);
    Some((cache, in_sync))
}

/// Deletes `pod` for the owner `key`, remembered in the expectations until
/// the cache shows it; whether the API took the delete.
pub async fn delete_owned(
    context: &Context,
    key: &str,
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> bool {
    use kube::ResourceExt;
    match api
        .delete(&pod.name_any(), &kube::api::DeleteParams::default())
        .await
    {
        Ok(gone) => {
            let gone = gone.left_or_else(|_| pod.clone());
            context.expectations.wrote(key, &gone, true);
            true
        }
        Err(_) => false,
    }
}

/// The name upstream gives a controller's work queue.
fn queue_name(controller: &str) -> &'static str {
    match controller {
        "replicaset-controller" => "replicaset",
        "deployment-controller" => "deployment",
        "job-controller" => "job",
        "daemon-set-controller" => "daemonset",
        "statefulset-controller" => "statefulset",
        "cronjob-controller" => "cronjob",
        "namespace-controller" => "namespace",
        "service-account-controller" => "serviceaccount",
        "root-ca-cert-publisher" => "root_ca_cert_publisher",
        "certificate-controller" => "certificate",
        "horizontal-pod-autoscaler" => "horizontalpodautoscaler",
        "disruption-controller" => "disruption",
        "endpoint-controller" => "endpoint",
        "resourcequota-controller" => "resource_quota_controller_resource_changes",
        "node-controller" => "node_lifecycle_controller",
        "service-controller" => "service",
        "generic-garbage-collector" => "garbage_collector_attempt_to_delete",
        "persistent-volume-binder" => "claims",
        "pvc-protection-controller" => "pvcprotection",
        "pv-protection-controller" => "pvprotection",
        _ => "other",
    }
}

/// The error policy of every reconciler: log, look again in 2 s.
pub fn retry<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> kube::runtime::controller::Action {
    tracing::debug!(err = %error, controller = std::any::type_name::<K>(), "reconcile failed");
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2))
}

/// Errors a reconcile reports (retried after a pause).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    /// The object cannot go on until something else changes (retried).
    #[error("{0}")]
    Waiting(String),
}

/// A controller over namespaces that also wakes for a namespace when its
/// object of kind `K` named `name` changes (or goes): the shape of the
/// "one object in every namespace" controllers. Both from the process's
/// shared caches; `None` if the namespaces' cache ended before it filled.
pub async fn per_namespace<K>(
    context: &Context,
    name: &'static str,
) -> Option<kube::runtime::Controller<k8s_openapi::api::core::v1::Namespace>>
where
    K: crate::runtime::Shareable + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;
    let namespace_of = move |object: Arc<K>| {
        (object.name_any() == name).then(|| ObjectRef::new(&object.namespace().unwrap_or_default()))
    };
    crate::runtime::shared_controller_watching(&context.informers, namespace_of).await
}

/// One object by name, read as upstream controllers read: from the
/// controller manager's view of the cluster (a list, which every controller
/// client makes as `system:kube-controller-manager`), not with the
/// controller's own rights, which often do not include `get`.
pub async fn read_named<K>(api: &kube::Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api.list(&params).await?.items.into_iter().next())
}

/// The objects in `namespace` a cache holds that `selector` matches
/// (candidates for [`claim_from`]).
pub fn selected<K: crate::runtime::Shareable>(
    informer: &crate::runtime::Informer<K>,
    namespace: &str,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Vec<K> {
    let selector = crate::api::values::selectors::LabelSelector::from_typed(selector);
    let labels = std::collections::BTreeMap::new();
    informer
        .store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| selector.matches_labels(o.meta().labels.as_ref().unwrap_or(&labels)))
        .map(|o| K::clone(o))
        .collect()
}

/// The objects `owner` controls among candidates its selector matched
/// (read from a cache, [`selected`]), adopting matching orphans (as
/// upstream's controller-ref manager does); objects controlled by someone
/// else are left alone.
pub async fn claim_from<K>(
    api: &kube::Api<K>,
    candidates: impl IntoIterator<Item = K>,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    let mut owned = Vec::new();
    for object in candidates {
        let meta = object.meta();
        match crate::api::values::pods::controller_of(meta) {
            Some(o) if o.uid == owner.uid => owned.push(object),
            Some(_) => {}
            None if meta.deletion_timestamp.is_none() => {
                let mut refs = meta.owner_references.clone().unwrap_or_default();
                refs.push(owner.clone());
                // The uid precondition keeps a replaced object from being adopted.
                let patch =
                    serde_json::json!({"metadata": {"ownerReferences": refs, "uid": meta.uid}});
                if let Ok(adopted) = api
                    .patch(
                        &object.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    owned.push(adopted);
                }
            }
            None => {}
        }
    }
    owned
}

/// A pod made from a workload's template, controlled by `owner`.
pub fn pod_from_template(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    namespace: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let template = template.cloned().unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.generate_name = Some(format!("{}-", owner.name));
    metadata.namespace = Some(namespace.to_string());
    metadata.owner_references = Some(vec![owner]);
    k8s_openapi::api::core::v1::Pod {
        metadata,
        spec: template.spec,
        ..Default::default()
    }
}

/// Replaces `object`'s status with `status` when `previous` differs: a PUT
/// of `/status` at the object's resourceVersion (a stale cache gets 409 and
/// the reconcile runs again), the verb upstream's controller roles hold.
pub async fn write_status<K>(
    api: &kube::Api<K>,
    object: &K,
    previous: &impl serde::Serialize,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if status_patch(previous, status).is_none() {
        return Ok(());
    }
    let mut body = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
    body["status"] = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    let body: K = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    let name = body.meta().name.clone().unwrap_or_default();
    api.replace_status(&name, &kube::api::PostParams::default(), &body)
        .await?;
    Ok(())
}

/// The merge patch from `previous` to `status`, or None when equal.
pub fn status_patch(
    previous: &impl serde::Serialize,
    status: &impl serde::Serialize,
) -> Option<serde_json::Value> {
    let before = serde_json::to_value(previous).ok()?;
    let mut after = serde_json::to_value(status).ok()?;
    if before == after {
        return None;
    }
    if let (Some(before), Some(after)) = (before.as_object(), after.as_object_mut()) {
        for key in before.keys() {
            after.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    Some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patches_remove_what_is_gone() {
        let before = serde_json::json!({"active": 3, "succeeded": 1});
        let after = serde_json::json!({"succeeded": 3});
        assert_eq!(
            status_patch(&before, &after),
            Some(serde_json::json!({"succeeded": 3, "active": null}))
        );
        assert_eq!(status_patch(&after, &after), None);
    }
}
