//! CertificateSigningRequests: the approver (upstream's csrapproving, plus
//! kelp's rules for what a joined node needs) and the signer (upstream's
//! csrsigning with the cluster CA), both as `certificate-controller`.
//!
//! Approved automatically, as upstream: node client certificates asked for
//! by a bootstrap token allowed `certificatesigningrequests/nodeclient`
//! (kelp also wants a recent proof of the node password by the same
//! requestor, so a token holder cannot take over a joined node's name) and
//! renewals a node asks for itself (`…/selfnodeclient`). Approved by kelp,
//! as k3s issues them to its agents: a node's own kubelet serving
//! certificate naming only itself, and the client certificates of a node's
//! components ([`crate::pki::identity::node_components`]: its shared
//! caches' reader, cluster DNS, local-path provisioner and ingress proxy).
//! Anything else waits for
//! `kubectl certificate approve|deny`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{PostParams, ResourceExt};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{Context, Error};
use crate::pki::csr;

/// Lifetime of issued certificates (kube-controller-manager's
/// `--cluster-signing-duration` default).
const SIGNING_DURATION: time::Duration = time::Duration::days(365);

/// Runs approver and signer.
pub async fn run(context: Arc<Context>) {
    if let Some(controller) =
        crate::runtime::shared_controller::<CertificateSigningRequest>(&context.informers).await
    {
        super::drive(controller, context, reconcile).await;
    }
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

async fn reconcile(
    object: Arc<CertificateSigningRequest>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let issued = object
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued || condition(&object, "Denied") || condition(&object, "Failed") {
        return Ok(Action::await_change());
    }
    // spec.request is the PEM itself (base64 only on the wire).
    let pem = object.spec.request.0.clone();
    let Ok(request) = csr::parse(&pem) else {
        return Ok(Action::await_change());
    };
    let api: Api<CertificateSigningRequest> = Api::all(context.client.clone());
    if !condition(&object, "Approved") {
        if let Some(message) = approval(&object, &request, &context).await? {
            approve(&api, &object, message).await?;
        }
        return Ok(Action::await_change());
    }
    sign(&api, &object, &pem, &request, &context).await?;
    Ok(Action::await_change())
}

/// Why kelp approves the request, if it does.
async fn approval(
    object: &CertificateSigningRequest,
    request: &csr::ParsedRequest,
    context: &Context,
) -> Result<Option<String>, Error> {
    let spec = &object.spec;
    let signer = spec.signer_name.as_str();
    let usages = spec.usages.clone().unwrap_or_default();
    let username = spec.username.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    if csr::is_self_node_client(signer, request, &usages, &username) {
        if allowed(context, &username, &groups, "selfnodeclient").await? {
            return Ok(Some(
                "Auto approving self kubelet client certificate after SubjectAccessReview.".into(),
            ));
        }
        return Ok(None);
    }
    if csr::is_node_client(signer, request, &usages) {
        if !allowed(context, &username, &groups, "nodeclient").await? {
            return Ok(None);
        }
        let node = csr::node_name(request).unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(context.client.clone(), "kube-system");
        let proof =
            super::read_named(&secrets, &crate::pki::node_password::secret_name(node)).await?;
        let proven = proof.is_some_and(|s| {
            let value = serde_json::to_value(&s).unwrap_or(Value::Null);
            crate::pki::node_password::recently_verified(&value, &username, chrono::Utc::now())
        });
        if !proven {
            tracing::info!(csr = %object.name_any(), node, "node client certificate waits: no recent node-password proof by its requestor");
            return Ok(None);
        }
        return Ok(Some(
            "Auto approving kubelet client certificate after SubjectAccessReview.".into(),
        ));
    }
    let from_node =
        groups.iter().any(|g| g == csr::NODES_GROUP) && username.starts_with(csr::NODE_USER_PREFIX);
    if signer == csr::KUBELET_SERVING
        && from_node
        && username == request.common_name
        && csr::validate_kubelet_serving(request, &usages).is_ok()
        && request
            .dns_names
            .iter()
            .all(|d| Some(d.as_str()) == csr::node_name(request))
    {
        return Ok(Some(
            "kelp approves the kubelet serving certificate a node asks for itself.".into(),
        ));
    }
    if signer == csr::KUBE_APISERVER_CLIENT
        && from_node
        && crate::pki::identity::node_components::ALL.contains(&request.common_name.as_str())
        && request.organizations.is_empty()
        && request.dns_names.is_empty()
        && request.ip_addresses.is_empty()
        && csr::check_signer(signer, request, &usages).is_ok()
    {
        return Ok(Some(format!(
            "kelp approves {} for a joined node's component.",
            request.common_name
        )));
    }
    Ok(None)
}

/// Whether the requestor may `create certificatesigningrequests/<subresource>` (a SubjectAccessReview).
async fn allowed(
    context: &Context,
    user: &str,
    groups: &[String],
    subresource: &str,
) -> Result<bool, Error> {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "certificatesigningrequests",
                "verb": "create",
                "subresource": subresource,
            },
        },
    }))
    .unwrap_or_default();
    let api: Api<SubjectAccessReview> = Api::all(context.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// A CSR condition of `kind` that holds from now on.
fn true_condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "type": kind, "status": "True", "reason": reason,
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now,
    })
}

async fn approve(
    api: &Api<CertificateSigningRequest>,
    object: &CertificateSigningRequest,
    message: String,
) -> Result<(), Error> {
    let mut approved = serde_json::to_value(object).unwrap_or(Value::Null);
    approved["status"]["conditions"] =
        json!([true_condition("Approved", "AutoApproved", &message)]);
    api.replace_subresource(
        "approval",
        &object.name_any(),
        &PostParams::default(),
        &approved,
    )
    .await?;
    tracing::info!(csr = %object.name_any(), "certificate signing request approved");
    Ok(())
}

async fn sign(
    api: &Api<CertificateSigningRequest>,
    object: &CertificateSigningRequest,
    pem: &[u8],
    request: &csr::ParsedRequest,
    context: &Context,
) -> Result<(), Error> {
    let spec = &object.spec;
    let usages = spec.usages.clone().unwrap_or_default();
    let mut updated = serde_json::to_value(object).unwrap_or(Value::Null);
    match csr::check_signer(&spec.signer_name, request, &usages) {
        Err(csr::SignerRefusal::NotOurs(_)) => return Ok(()),
        Err(csr::SignerRefusal::Invalid(message)) => {
            let mut conditions = updated["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.push(true_condition(
                "Failed",
                "SignerValidationFailure",
                &message,
            ));
            updated["status"]["conditions"] = Value::Array(conditions);
        }
        Ok(()) => {
            let certificate = match csr::sign(
                &context.ca_pem,
                &context.ca_key_pem,
                pem,
                &usages,
                spec.expiration_seconds.map(i64::from),
                SIGNING_DURATION,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(err = %e, csr = %object.name_any(), "signing");
                    return Ok(());
                }
            };
            use base64::Engine;
            let chained = format!("{certificate}{}", context.ca_chain_pem);
            updated["status"]["certificate"] =
                json!(base64::engine::general_purpose::STANDARD.encode(chained));
        }
    }
    api.replace_subresource(
        "status",
        &object.name_any(),
        &PostParams::default(),
        &updated,
    )
    .await?;
    tracing::info!(csr = %object.name_any(), signer = %spec.signer_name, "certificate signing request handled");
    Ok(())
}

/// The longest the token cleaner waits between looks (a token made
/// meanwhile with a shorter life is deleted at most this late).
const TOKEN_CLEANER_PERIOD: Duration = Duration::from_secs(10);

/// Upstream's tokencleaner (as `token-cleaner`): deletes bootstrap token
/// Secrets once past their expiration.
pub async fn clean_tokens(context: Arc<Context>) {
    let api: Api<Secret> = Api::namespaced(context.client.clone(), "kube-system");
    loop {
        let mut wait = TOKEN_CLEANER_PERIOD;
        if let Ok(list) = api.list(&kube::api::ListParams::default()).await {
            let now = chrono::Utc::now();
            for secret in list.items {
                let value = serde_json::to_value(&secret).unwrap_or(Value::Null);
                if value["type"] != crate::pki::bootstrap_token::SECRET_TYPE {
                    continue;
                }
                let Some(expiration) = crate::pki::bootstrap_token::expiration(&value) else {
                    continue;
                };
                if expiration > now {
                    let left = (expiration - now).to_std().unwrap_or_default();
                    wait = wait.min(left + Duration::from_millis(100));
                    continue;
                }
                match api.delete(&secret.name_any(), &Default::default()).await {
                    Ok(_) => {
                        tracing::info!(secret = %secret.name_any(), "deleted an expired bootstrap token")
                    }
                    Err(e) => {
                        tracing::warn!(err = %e, secret = %secret.name_any(), "deleting an expired bootstrap token")
                    }
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}
