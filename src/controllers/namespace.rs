//! Namespace lifecycle (upstream's namespace controller): a namespace being
//! deleted (Terminating) has every namespaced object in it deleted; once
//! none is left, its `kubernetes` finalizer is removed through
//! `namespaces/{name}/finalize` and the namespace is gone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error};

/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) =
        crate::runtime::shared_controller::<Namespace>(&context.informers).await
    {
        super::drive(controller, context, reconcile).await;
    }
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    let finalizers = namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let remaining = delete_contents(&context.client, &name).await?;
    if remaining > 0 {
        // Graceful deletions (pods on nodes) take a while; look again soon.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut finalized = (*namespace).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let namespaces: Api<Namespace> = Api::all(context.client.clone());
    namespaces
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await?;
    Ok(Action::await_change())
}

/// Deletes every namespaced object in the namespace; returns how many were
/// still there (deleting, or just deleted).
async fn delete_contents(client: &kube::Client, namespace: &str) -> Result<usize, Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut remaining = 0;
    for group in discovery.groups() {
        // The preferred version of each group is enough: versions share storage.
        for (resource, capabilities) in group.recommended_resources() {
            if capabilities.scope != Scope::Namespaced
                || !capabilities.supports_operation(verbs::LIST)
                || !capabilities.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let objects = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(_) => continue,
            };
            for object in objects {
                remaining += 1;
                if object.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let _ = api
                    .delete(&object.name_any(), &DeleteParams::background())
                    .await;
            }
        }
    }
    Ok(remaining)
}
