//! The `kube-root-ca.crt` ConfigMap in every namespace (upstream's
//! root-ca-cert-publisher): the cluster CA, for clients in pods to verify
//! the API server; kept equal to the CA, re-created if deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::runtime::already_exists;

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Runs the controller.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) = super::per_namespace::<ConfigMap>(&context, NAME).await {
        super::drive(controller, context, reconcile).await;
    }
}

fn desired(ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(NAME.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())])),
        ..Default::default()
    }
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, Error> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace.name_any());
    let want = desired(&context.ca_pem);
    match super::read_named(&api, NAME).await? {
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(e) if already_exists(&e) => {}
            Err(e) => return Err(e.into()),
        },
        Some(mut found) if found.data != want.data => {
            // Upstream's publisher may create and update, not patch.
            found.data = want.data;
            api.replace(NAME, &PostParams::default(), &found).await?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_carries_the_ca_under_ca_crt() {
        let cm = desired("-----BEGIN CERTIFICATE-----\n...");
        assert_eq!(
            cm.data.unwrap()["ca.crt"],
            "-----BEGIN CERTIFICATE-----\n..."
        );
        assert!(
            cm.metadata
                .annotations
                .unwrap()
                .contains_key("kubernetes.io/description")
        );
    }
}
