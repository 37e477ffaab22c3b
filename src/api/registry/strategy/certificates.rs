//! CertificateSigningRequest rules (upstream's certificates strategy): the
//! spec is fixed at create and names who asked; `/approval` writes only the
//! Approved/Denied conditions, `/status` only the certificate and the other
//! conditions; a certificate is issued once, and only to an approved request.

use base64::Engine;
use serde_json::{Value, json};

use super::Strategy;
use crate::api::FieldError;

/// Condition types only `/approval` may write.
const APPROVAL_CONDITIONS: &[&str] = &["Approved", "Denied"];

/// Records who asked (upstream takes it from the request, never from the body).
pub fn set_requestor(obj: &mut Value, user: &str, groups: &[String]) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    spec["username"] = json!(user);
    spec["groups"] = json!(groups);
    if let Some(map) = spec.as_object_mut() {
        map.remove("uid");
        map.remove("extra");
    }
}

/// A main-resource update keeps the spec (immutable) and, as every
/// resource with a status, the status.
pub fn prepare_for_update(new: &mut Value, old: &Value) {
    match old.get("spec") {
        Some(spec) => new["spec"] = spec.clone(),
        None => {
            if let Some(map) = new.as_object_mut() {
                map.remove("spec");
            }
        }
    }
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_approval(condition: &Value) -> bool {
    condition["type"]
        .as_str()
        .is_some_and(|t| APPROVAL_CONDITIONS.contains(&t))
}

fn set_conditions(obj: &mut Value, conditions: Vec<Value>) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if conditions.is_empty() {
        if let Some(map) = obj["status"].as_object_mut() {
            map.remove("conditions");
        }
    } else {
        obj["status"]["conditions"] = Value::Array(conditions);
    }
}

/// `/status` (already merged onto the old object): the signer's write
/// keeps the old Approved/Denied conditions and an issued certificate.
pub fn prepare_for_status_update(new: &mut Value, old: &Value) {
    let mut kept: Vec<Value> = conditions(old).into_iter().filter(is_approval).collect();
    kept.extend(conditions(new).into_iter().filter(|c| !is_approval(c)));
    set_conditions(new, kept);
    if let Some(certificate) = old.pointer("/status/certificate").filter(|c| !c.is_null()) {
        new["status"]["certificate"] = certificate.clone();
    }
}

/// `/approval`: only the requested Approved/Denied conditions change; the
/// rest of the status is the old one's. `requested` is the body's status.
pub fn prepare_for_approval_update(new: &mut Value, requested: &Value, old: &Value) {
    new["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut merged: Vec<Value> = requested
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| is_approval(c))
        .cloned()
        .collect();
    merged.extend(conditions(old).into_iter().filter(|c| !is_approval(c)));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for condition in &mut merged {
        for field in ["lastUpdateTime", "lastTransitionTime"] {
            if condition.get(field).is_none_or(Value::is_null) {
                condition[field] = json!(now);
            }
        }
        if condition.get("status").is_none_or(Value::is_null) {
            condition["status"] = json!("True");
        }
    }
    set_conditions(new, merged);
}

/// The PEM bytes of `spec.request` (base64 in JSON), if it decodes.
pub fn request_pem(obj: &Value) -> Option<Vec<u8>> {
    let encoded = obj.pointer("/spec/request")?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

/// Whether a condition of `kind` is true.
pub fn has_condition(obj: &Value, kind: &str) -> bool {
    conditions(obj)
        .iter()
        .any(|c| c["type"] == kind && c["status"] != "False")
}

/// Field checks on every write.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match request_pem(obj) {
        None => errors.push(FieldError::required("spec.request", "")),
        Some(pem) => {
            if let Err(e) = crate::pki::csr::parse(&pem) {
                errors.push(FieldError::invalid(
                    "spec.request",
                    &json!([]),
                    &e.to_string(),
                ));
            }
        }
    }
    let signer = obj.pointer("/spec/signerName").and_then(Value::as_str);
    match signer {
        None | Some("") => errors.push(FieldError::required("spec.signerName", "")),
        Some(signer) if !valid_signer_name(signer) => errors.push(FieldError::invalid(
            "spec.signerName",
            &json!(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        )),
        Some(_) => {}
    }
    let usages = obj.pointer("/spec/usages").and_then(Value::as_array);
    if usages.is_none_or(|u| u.is_empty()) {
        errors.push(FieldError::required("spec.usages", ""));
    }
    if let Some(seconds) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        && seconds < 600
    {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let (approved, denied) = (has_condition(obj, "Approved"), has_condition(obj, "Denied"));
    if approved && denied {
        errors.push(FieldError::invalid(
            "status.conditions",
            &json!("Denied"),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    let certificate = obj
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty());
    if certificate.is_some() && (!approved || has_condition(obj, "Failed")) {
        errors.push(FieldError::invalid(
            "status.certificate",
            &json!("<certificate data>"),
            "may only be set when the request is approved and has not failed",
        ));
    }
    errors
}

/// Update-only: an issued certificate does not change.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let old_cert = old.pointer("/status/certificate").and_then(Value::as_str);
    let new_cert = new.pointer("/status/certificate").and_then(Value::as_str);
    match old_cert {
        Some(old_cert) if !old_cert.is_empty() && new_cert != Some(old_cert) => {
            vec![FieldError::invalid(
                "status.certificate",
                &json!("<certificate data>"),
                "updates may not modify existing certificate content",
            )]
        }
        _ => vec![],
    }
}

/// `example.com/name`: a DNS subdomain, a slash, a path.
fn valid_signer_name(name: &str) -> bool {
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    !path.is_empty()
        && domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// CertificateSigningRequests.
#[derive(Debug)]
pub struct SigningRequests;

impl Strategy for SigningRequests {
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        prepare_for_update(new, old);
    }

    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        prepare_for_status_update(new, old);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        validate_update(new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Value {
        let (pem, _) = crate::pki::csr::new_request("jane", &["dev"], &[], &[]).expect("request");
        json!({
            "metadata": {"name": "node-csr-1"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
        })
    }

    #[test]
    fn requests_are_validated() {
        assert!(validate(&csr()).is_empty(), "{:?}", validate(&csr()));
        let mut bad = csr();
        bad["spec"]["signerName"] = json!("nodomain");
        bad["spec"]["usages"] = json!([]);
        bad["spec"]["expirationSeconds"] = json!(60);
        let fields: Vec<String> = validate(&bad).iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            ["spec.signerName", "spec.usages", "spec.expirationSeconds"]
        );
        let mut no_request = csr();
        no_request["spec"]["request"] = json!("!!");
        assert_eq!(validate(&no_request)[0].field, "spec.request");
    }

    #[test]
    fn requestor_comes_from_the_caller() {
        let mut obj = csr();
        obj["spec"]["username"] = json!("system:admin");
        obj["spec"]["uid"] = json!("forged");
        set_requestor(
            &mut obj,
            "system:bootstrap:abcdef",
            &["system:bootstrappers".into()],
        );
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
        assert!(obj["spec"].get("uid").is_none());
    }

    #[test]
    fn approval_writes_only_approval_conditions_and_status_only_the_rest() {
        let old = csr();
        let mut new = old.clone();
        let requested = json!({
            "conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"},
                           {"type": "Failed", "status": "True"}],
            "certificate": "Zm9v",
        });
        prepare_for_approval_update(&mut new, &requested, &old);
        assert!(has_condition(&new, "Approved"));
        assert!(!has_condition(&new, "Failed"), "not an approval condition");
        assert!(new["status"].get("certificate").is_none());
        assert!(new["status"]["conditions"][0]["lastUpdateTime"].is_string());
        assert!(validate(&new).is_empty());

        // The signer's /status write cannot undo the approval.
        let approved = new.clone();
        let mut signed = approved.clone();
        signed["status"] = json!({"certificate": "Zm9v", "conditions": []});
        prepare_for_status_update(&mut signed, &approved);
        assert!(has_condition(&signed, "Approved"));
        assert_eq!(signed["status"]["certificate"], "Zm9v");
        assert!(validate(&signed).is_empty());
        let mut changed = signed.clone();
        changed["status"]["certificate"] = json!("YmFy");
        assert_eq!(
            validate_update(&changed, &signed)[0].field,
            "status.certificate"
        );
    }

    #[test]
    fn certificates_need_approval_and_exclusive_conditions() {
        let mut obj = csr();
        obj["status"] = json!({"certificate": "Zm9v"});
        assert_eq!(validate(&obj)[0].field, "status.certificate");
        obj["status"]["conditions"] =
            json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
        assert!(
            validate(&obj)
                .iter()
                .any(|e| e.field == "status.conditions")
        );
    }

    #[test]
    fn main_updates_keep_the_spec() {
        let old = csr();
        let mut new = csr();
        new["spec"]["signerName"] = json!("example.com/other");
        prepare_for_update(&mut new, &old);
        assert_eq!(new["spec"], old["spec"]);
    }
}
