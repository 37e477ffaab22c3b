//! Control loops, each its own file, all kube-rs controllers over the
//! in-process client (user `system:kube-controller-manager`).

pub mod deployment;
pub mod garbage_collector;
pub mod namespace;
pub mod replicaset;
pub mod root_ca;
pub mod serviceaccount;

use std::sync::Arc;

/// What the controllers are given.
#[derive(Clone)]
pub struct Context {
    /// In-process API client.
    pub client: kube::Client,
    /// The cluster CA certificate (PEM), published in every namespace.
    pub ca_pem: String,
}

/// Starts every controller; they run until the process ends.
pub fn start(context: Context) {
    let context = Arc::new(context);
    tokio::spawn(serviceaccount::run(context.clone()));
    tokio::spawn(root_ca::run(context.clone()));
    tokio::spawn(namespace::run(context.clone()));
    tokio::spawn(replicaset::run(context.clone()));
    tokio::spawn(deployment::run(context.clone()));
    tokio::spawn(garbage_collector::run(context));
}

/// Errors a reconcile reports (retried after a pause).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
}

/// A controller over namespaces that also wakes for a namespace when its
/// object of kind `K` named `name` changes (or goes): the shape of the
/// "one object in every namespace" controllers.
pub fn per_namespace<K>(
    client: &kube::Client,
    name: &'static str,
) -> kube::runtime::Controller<k8s_openapi::api::core::v1::Namespace>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
{
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;
    kube::runtime::Controller::new(
        kube::Api::all(client.clone()),
        kube::runtime::watcher::Config::default(),
    )
    .watches(
        kube::Api::<K>::all(client.clone()),
        kube::runtime::watcher::Config::default(),
        move |object: K| {
            (object.name_any() == name)
                .then(|| ObjectRef::new(&object.namespace().unwrap_or_default()))
        },
    )
}

/// Whether an API error says the object already exists (a race with
/// another writer, harmless for "ensure" loops).
pub fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
