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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn authorizer() -> Authorizer {
        Authorizer::new(Default::default(), Default::default())
    }

    fn csr(conditions: Value, certificate: Option<&str>) -> Value {
        let mut status = json!({"conditions": conditions});
        if let Some(c) = certificate {
            status["certificate"] = json!(c);
        }
        json!({"metadata": {"name": "jane"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client"}, "status": status})
    }

    #[test]
    fn approving_and_signing_need_the_signer_verbs() {
        let old = csr(json!([]), None);
        let approved = csr(json!([{"type": "Approved", "status": "True"}]), None);
        let signed = csr(
            json!([{"type": "Approved", "status": "True"}]),
            Some("Zm9v"),
        );
        let admin = User {
            name: "admin".into(),
            groups: vec![PRIVILEGED_GROUP.into()],
        };
        let jane = User {
            name: "jane".into(),
            groups: vec!["system:authenticated".into()],
        };
        let a = authorizer();
        assert!(admit_update(&a, &admin, "approval", &approved, &old).is_ok());
        let e = admit_update(&a, &jane, "approval", &approved, &old).unwrap_err();
        assert!(
            e.to_string().contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
            "{e}"
        );
        assert!(
            admit_update(&a, &jane, "status", &signed, &approved)
                .unwrap_err()
                .to_string()
                .contains("sign")
        );
        assert!(admit_update(&a, &admin, "status", &signed, &approved).is_ok());
        // Writes that change neither need nothing.
        assert!(admit_update(&a, &jane, "approval", &old, &old).is_ok());
    }

    #[test]
    fn no_one_asks_for_system_masters_certificates() {
        let masters = vec![PRIVILEGED_GROUP.to_string()];
        assert!(admit_create("kubernetes.io/kube-apiserver-client", &masters, "x").is_err());
        assert!(admit_create("kubernetes.io/kube-apiserver-client-kubelet", &masters, "x").is_ok());
        assert!(admit_create("kubernetes.io/kube-apiserver-client", &["dev".into()], "x").is_ok());
    }
}
