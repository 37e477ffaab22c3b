//! What a joining node asks the server before it has credentials of its own
//! (k3s's `/cacerts` and node-password scheme):
//! - `GET /cacerts`, public: the CA bundle, which the node checks against the
//!   hash in its `K10…` token before it sends anything secret;
//! - `GET /v1-kelp/config`: the cluster settings a node runs with;
//! - `POST /v1-kelp/node-password`: the node proves the secret it keeps
//!   (`<data-dir>/agent/node-password`), so that a second machine cannot
//!   take over an existing node's name. The first join records a salted
//!   hash in the Secret `kube-system/<node>.node-password.kelp`; a rejoin
//!   must present the same secret unless an admin deleted the Node (see
//!   [`crate::pki::node_password`]). The certificate approver issues a node
//!   its client certificate only after a recent proof by the same requestor.
//!
//! Who may call the last two is RBAC's decision (the `system:kelp:node-join`
//! role, bound to bootstrappers and nodes).

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::authn::User;
use super::body::json_response;
use super::handlers;
use crate::api::ApiError;
use crate::api::values::meta;
use crate::pki::node_password::{self, VERIFIED_AT, VERIFIED_BY, hash};

/// The public CA bundle.
pub const CACERTS_PATH: &str = "/cacerts";
/// Cluster settings for nodes.
pub const CONFIG_PATH: &str = crate::pki::node_password::CONFIG_PATH;
/// The node-password proof.
pub const NODE_PASSWORD_PATH: &str = crate::pki::node_password::PROOF_PATH;

/// `GET /cacerts`.
pub async fn cacerts(State(state): State<Arc<ApiState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.config.ca_pem.clone(),
    )
        .into_response()
}

/// `GET /v1-kelp/config`.
pub async fn config(State(state): State<Arc<ApiState>>) -> Response {
    let c = &state.config;
    json_response(
        StatusCode::OK,
        &json!({
            "clusterCIDR": c.cluster_cidr.to_string(),
            "serviceCIDR": c.service_cidr.to_string(),
            "clusterDNS": c.cluster_dns,
            "clusterDomain": c.cluster_domain,
            "localStorage": c.local_storage,
            "networkPolicy": c.network_policy,
            "ingress": c.ingress,
        }),
    )
}

/// `POST /v1-kelp/node-password` with `{"node": NAME, "password": SECRET}`.
pub async fn node_password(
    State(state): State<Arc<ApiState>>,
    Extension(user): Extension<User>,
    body: Bytes,
) -> Response {
    match verify_node_password(&state, &user, &body).await {
        Ok(()) => json_response(StatusCode::OK, &json!({"verified": true})),
        Err(e) => e.into_response(),
    }
}

async fn verify_node_password(state: &ApiState, user: &User, body: &[u8]) -> Result<(), ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?;
    let node = request["node"].as_str().unwrap_or_default();
    let password = request["password"].as_str().unwrap_or_default();
    if meta::dns_subdomain(node).is_some() {
        return Err(ApiError::bad_request(format!(
            "{node:?} is not a valid node name"
        )));
    }
    if password.len() < 16 {
        return Err(ApiError::bad_request(
            "the node password must be at least 16 characters",
        ));
    }
    let is_bootstrapper = user
        .name
        .starts_with(crate::pki::bootstrap_token::USER_PREFIX);
    if !is_bootstrapper && user.name != format!("system:node:{node}") {
        return Err(ApiError::forbidden(
            "",
            "nodes",
            node,
            format!(
                "user \"{}\" may not prove the password of node {node:?}",
                user.name
            ),
        ));
    }
    let secret_name = node_password::secret_name(node);
    let secrets = handlers::system_request(
        state,
        "",
        "secrets",
        Some("kube-system"),
        Some(&secret_name),
    )
    .ok_or_else(|| ApiError::internal("secrets are not served"))?;
    let nodes = handlers::system_request(state, "", "nodes", None, Some(node))
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node_exists = state
        .store
        .get(&nodes.key())
        .await
        .map_err(ApiError::internal)?
        .is_some();
    let stored = match handlers::load(state, &secrets).await {
        Ok(found) => Some(found),
        Err(ApiError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let annotations = json!({VERIFIED_BY: user.name, VERIFIED_AT: now});
    match stored {
        None => {
            let salt = node_password::generate();
            let mut secret = json!({
                "apiVersion": "v1", "kind": "Secret", "type": node_password::SECRET_TYPE,
                "metadata": {"name": secret_name, "namespace": "kube-system", "annotations": annotations},
                "stringData": {"salt": salt, "hash": hash(&salt, password)},
            });
            handlers::create::create_object(state, &secrets, &mut secret).await?;
        }
        Some((old, kv)) => {
            let matches = node_password::matches(&old, password);
            if !matches && node_exists {
                return Err(ApiError::forbidden(
                    "",
                    "nodes",
                    node,
                    format!(
                        "node {node:?} already joined with a different node password: if this machine is that node (reinstalled, new disk), restore its node-password file or delete the node first (kubectl delete node {node}); if it is another machine, give it a unique --node-name"
                    ),
                ));
            }
            let mut new = old.clone();
            meta::metadata_mut(&mut new).insert("annotations".into(), annotations);
            if !matches {
                // The Node was deleted: the name is free, the new password counts.
                tracing::info!(node, "node password replaced for a node that was deleted");
                let salt = node_password::generate();
                new["data"] = json!({});
                new["stringData"] = json!({"salt": salt, "hash": hash(&salt, password)});
            }
            handlers::update::write_update(state, &secrets, new, &old, kv.mod_revision, false)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::router;
    use crate::apiserver::tests::{call, state};

    fn proof(node: &str, password: &str) -> Vec<u8> {
        json!({"node": node, "password": password})
            .to_string()
            .into_bytes()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_node_password_binds_the_name_until_the_node_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let app = router(state.clone());
        call(
            &app,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "kube-system"}})),
        )
        .await;
        let bootstrapper = User {
            name: "system:bootstrap:abcdef".into(),
            groups: vec!["system:bootstrappers".into()],
        };
        let first = "a".repeat(32);
        let second = "b".repeat(32);
        let add_node = || {
            call(
                &app,
                "POST",
                "/api/v1/nodes",
                Some(json!({"metadata": {"name": "edge-1"}})),
            )
        };
        verify_node_password(&state, &bootstrapper, &proof("edge-1", &first))
            .await
            .expect("first join");
        verify_node_password(&state, &bootstrapper, &proof("edge-1", &first))
            .await
            .expect("same password again");
        let (status, body) = call(
            &app,
            "GET",
            "/api/v1/namespaces/kube-system/secrets/edge-1.node-password.kelp",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let secret: Value = serde_json::from_slice(&body).expect("json");
        assert!(node_password::recently_verified(
            &secret,
            &bootstrapper.name,
            chrono::Utc::now()
        ));
        assert!(
            !String::from_utf8_lossy(&body).contains(&first),
            "only a hash is stored"
        );

        // While the Node exists, another password is refused, saying why.
        add_node().await;
        let refused = verify_node_password(&state, &bootstrapper, &proof("edge-1", &second))
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("already joined with a different node password"),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("kubectl delete node edge-1"),
            "{refused}"
        );

        // Another node may not prove this one's password.
        let other = User {
            name: "system:node:edge-2".into(),
            groups: vec!["system:nodes".into()],
        };
        assert!(
            verify_node_password(&state, &other, &proof("edge-1", &first))
                .await
                .is_err()
        );
        let itself = User {
            name: "system:node:edge-1".into(),
            groups: vec!["system:nodes".into()],
        };
        verify_node_password(&state, &itself, &proof("edge-1", &first))
            .await
            .expect("the node itself");

        // An admin deleting the Node frees the name for a new password.
        call(&app, "DELETE", "/api/v1/nodes/edge-1", None).await;
        verify_node_password(&state, &bootstrapper, &proof("edge-1", &second))
            .await
            .expect("rejoin after delete");
        add_node().await;
        assert!(
            verify_node_password(&state, &bootstrapper, &proof("edge-1", &first))
                .await
                .is_err()
        );

        for bad in [
            proof("Edge_1", &first),
            proof("edge-3", "short"),
            b"not json".to_vec(),
        ] {
            let e = verify_node_password(&state, &bootstrapper, &bad)
                .await
                .unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
        }
    }
}
