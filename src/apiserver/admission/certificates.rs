//! Admission for CertificateSigningRequests (upstream's CertificateApproval,
//! CertificateSigning and CertificateSubjectRestriction plugins): approving
//! or denying needs the `approve` verb on the request's signer, issuing a
//! certificate the `sign` verb (RBAC resource `signers`, named after the
//! signer or `<domain>/*`), and no one may ask the kube-apiserver-client
//! signer for a `system:masters` certificate.

use serde_json::Value;

use crate::api::ApiError;
use crate::apiserver::authn::User;
use crate::apiserver::authz::{Attributes, Authorizer, PRIVILEGED_GROUP, ResourceAttributes};

/// Whether `user` may `verb` (approve, sign) requests for `signer`.
pub fn may(authorizer: &Authorizer, user: &User, verb: &str, signer: &str) -> bool {
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    names.into_iter().any(|name| {
        authorizer
            .authorize(&Attributes {
                user,
                verb,
                resource: Some(ResourceAttributes {
                    group: "certificates.k8s.io".into(),
                    version: "*".into(),
                    resource: "signers".into(),
                    name,
                    ..Default::default()
                }),
                path: "",
            })
            .allowed()
    })
}

/// Checks an `/approval` or `/status` write of `new` over `old`.
pub fn admit_update(
    authorizer: &Authorizer,
    user: &User,
    subresource: &str,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let signer = old
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = old
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let refuse = |verb: &str| {
        ApiError::forbidden(
            "certificates.k8s.io",
            "certificatesigningrequests",
            name,
            format!("user not permitted to {verb} requests with signerName \"{signer}\""),
        )
    };
    match subresource {
        "approval" => {
            let approval = |obj: &Value| {
                obj.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter(|c| c["type"] == "Approved" || c["type"] == "Denied")
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            if approval(new) != approval(old) && !may(authorizer, user, "approve", signer) {
                return Err(refuse("approve"));
            }
        }
        "status" => {
            let certificate = |obj: &Value| obj.pointer("/status/certificate").cloned();
            if certificate(new) != certificate(old) && !may(authorizer, user, "sign", signer) {
                return Err(refuse("sign"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// CertificateSubjectRestriction: `organizations` of a new request for `signer`.
pub fn admit_create(signer: &str, organizations: &[String], name: &str) -> Result<(), ApiError> {
    if signer == "kubernetes.io/kube-apiserver-client"
        && organizations.iter().any(|o| o == PRIVILEGED_GROUP)
    {
        return Err(ApiError::forbidden(
            "certificates.k8s.io",
            "certificatesigningrequests",
            name,
            format!("use of {signer} signer with system:masters group is not allowed"),
        ));
    }
    Ok(())
}
