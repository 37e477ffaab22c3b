//! The `default` ServiceAccount in every namespace (upstream's
//! serviceaccounts-controller): created with the namespace, re-created if
//! deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::runtime::already_exists;

/// The account every pod runs as unless it names another.
pub const DEFAULT: &str = "default";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) = super::per_namespace::<ServiceAccount>(&context, DEFAULT).await {
        super::drive(controller, context, reconcile).await;
    }
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &namespace.name_any());
    if super::read_named(&api, DEFAULT).await?.is_none() {
        let account = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(DEFAULT.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(e) if already_exists(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
