//! Control loops, each its own file, all kube-rs controllers over the
//! in-process client (user `system:kube-controller-manager`).

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
    tokio::spawn(replicaset::run(context));
}

/// Errors a reconcile reports (retried after a pause).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
}

/// Whether an API error says the object already exists (a race with
/// another writer, harmless for "ensure" loops).
pub fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
