//! Admission webhooks (upstream's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook), the pure part: the webhooks a stored
//! configuration declares, which of them a write concerns, the
//! AdmissionReview sent to them and what their answers mean. The calls are
//! made by `apiserver::webhooks`.

use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::ApiError;
use crate::api::values::selectors::LabelSelector;
use crate::pki::identity::User;

/// Which admission phase a webhook takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// May change the object (JSON patches), called one after another.
    Mutating,
    /// May only allow or deny, called together.
    Validating,
}

/// What a write does, as the AdmissionReview names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A replaced (or patched, or applied) object.
    Update,
    /// A removed object.
    Delete,
}

impl Operation {
    /// The name in rules and reviews.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    /// The options kind the review's `options` carries.
    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        }
    }
}

/// Where a webhook listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientConfig {
    /// An `https://` URL.
    Url(String),
    /// A Service's port (its ready endpoints are called, with the
    /// certificate checked for `<name>.<namespace>.svc`).
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Path on the service (default `/`).
        path: String,
        /// The Service's port (default 443).
        port: u16,
    },
}

/// One rule: operations × groups × versions × resources (`res/sub`) × scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    scope: String,
}

/// One webhook of a configuration, with upstream's defaults applied.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The configuration it belongs to (webhooks run in configuration-name order).
    pub configuration: String,
    /// Mutating or validating.
    pub phase: Phase,
    /// The webhook's name (in messages).
    pub name: String,
    /// Where to call.
    pub client: ClientConfig,
    /// CA certificates (PEM) to trust for the webhook; None: the host's.
    pub ca_bundle: Option<String>,
    rules: Vec<Rule>,
    namespace_selector: Value,
    object_selector: Value,
    /// Fail: a webhook that cannot be called refuses the write; Ignore: the write goes on.
    pub fail_closed: bool,
    /// sideEffects None or NoneOnDryRun: it may be called for a dry run.
    dry_run_safe: bool,
    /// The call's limit (timeoutSeconds, default 10).
    pub timeout: Duration,
    /// The AdmissionReview version to send (`v1`, else `v1beta1`).
    pub review_version: &'static str,
    /// reinvocationPolicy IfNeeded: called again when later webhooks changed the object.
    pub reinvoke: bool,
}

/// The webhooks a stored Mutating- or ValidatingWebhookConfiguration declares.
pub fn hooks_of(phase: Phase, configuration: &Value) -> Vec<Hook> {
    let config_name = crate::api::values::meta::name(configuration).to_string();
    let webhooks = configuration["webhooks"].as_array().into_iter().flatten();
    webhooks
        .filter_map(|w| {
            let client = client_config(&w["clientConfig"])?;
            let review_versions = strings(&w["admissionReviewVersions"]);
            let review_version = if review_versions.iter().any(|v| v == "v1") {
                "v1"
            } else {
                "v1beta1"
            };
            Some(Hook {
                configuration: config_name.clone(),
                phase,
                name: w["name"].as_str().unwrap_or_default().to_string(),
                ca_bundle: w["clientConfig"]["caBundle"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|pem| String::from_utf8_lossy(&pem).into_owned()),
                client,
                rules: w["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| Rule {
                        operations: strings(&r["operations"]),
                        groups: strings(&r["apiGroups"]),
                        versions: strings(&r["apiVersions"]),
                        resources: strings(&r["resources"]),
                        scope: r["scope"].as_str().unwrap_or("*").to_string(),
                    })
                    .collect(),
                namespace_selector: w["namespaceSelector"].clone(),
                object_selector: w["objectSelector"].clone(),
                fail_closed: w["failurePolicy"].as_str() != Some("Ignore"),
                dry_run_safe: matches!(w["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")),
                timeout: Duration::from_secs(
                    w["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30),
                ),
                review_version,
                reinvoke: w["reinvocationPolicy"].as_str() == Some("IfNeeded"),
            })
        })
        .collect()
}

fn client_config(config: &Value) -> Option<ClientConfig> {
    if let Some(url) = config["url"].as_str() {
        return Some(ClientConfig::Url(url.to_string()));
    }
    let service = config.get("service")?;
    Some(ClientConfig::Service {
        namespace: service["namespace"].as_str()?.to_string(),
        name: service["name"].as_str()?.to_string(),
        path: service["path"].as_str().unwrap_or("/").to_string(),
        port: service["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443),
    })
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// What admission knows of one write (upstream's admission.Attributes).
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// What the write does.
    pub operation: Operation,
    /// API group.
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource, or "".
    pub subresource: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The object as it will be stored (None for deletes).
    pub object: Option<&'a Value>,
    /// The object as it was (updates and deletes).
    pub old_object: Option<&'a Value>,
    /// Who writes.
    pub user: &'a User,
    /// A dry run: nothing will be stored.
    pub dry_run: bool,
}

/// Objects webhooks are never called for: the admission configurations
/// themselves, so a broken webhook can always be removed (as upstream).
fn exempt(attrs: &Attributes) -> bool {
    attrs.group == "admissionregistration.k8s.io"
}

impl Hook {
    /// Whether the write matches one of the webhook's rules (before
    /// selectors, which may need the namespace's labels).
    pub fn matches_rules(&self, attrs: &Attributes) -> bool {
        !exempt(attrs) && self.rules.iter().any(|rule| rule.matches(attrs))
    }

    /// Whether the webhook's namespace selector needs the labels of the
    /// write's namespace (a namespaced write and a non-empty selector).
    pub fn needs_namespace_labels(&self, attrs: &Attributes) -> bool {
        !attrs.namespace.is_empty()
            && attrs.resource != "namespaces"
            && !selector_is_empty(&self.namespace_selector)
    }

    /// Whether the selectors select the write: the namespace's labels
    /// (`namespace_labels`; a Namespace is selected by its own),
    /// the object's or old object's labels.
    pub fn selects(&self, attrs: &Attributes, namespace_labels: Option<&Value>) -> bool {
        let namespace_ok = if selector_is_empty(&self.namespace_selector) {
            true
        } else if attrs.resource == "namespaces" {
            let own = attrs.object.or(attrs.old_object);
            selector_matches(&self.namespace_selector, own)
        } else if attrs.namespace.is_empty() {
            // Other cluster-scoped objects are never skipped by a namespace selector.
            true
        } else {
            LabelSelector::from_object(&self.namespace_selector).matches(namespace_labels)
        };
        let object_ok = selector_is_empty(&self.object_selector)
            || selector_matches(&self.object_selector, attrs.object)
            || selector_matches(&self.object_selector, attrs.old_object);
        namespace_ok && object_ok
    }

    /// The refusal of a dry run by a webhook that may have side effects.
    pub fn refuses_dry_run(&self, attrs: &Attributes) -> Option<ApiError> {
        (attrs.dry_run && !self.dry_run_safe).then(|| {
            ApiError::bad_request(format!(
                "admission webhook {:?} does not support dry run",
                self.name
            ))
        })
    }
}

fn selector_is_empty(selector: &Value) -> bool {
    selector.is_null()
        || (selector["matchLabels"]
            .as_object()
            .is_none_or(Map::is_empty)
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(Vec::is_empty))
}

fn selector_matches(selector: &Value, object: Option<&Value>) -> bool {
    object.is_some_and(|o| {
        LabelSelector::from_object(selector).matches(o.pointer("/metadata/labels"))
    })
}

impl Rule {
    fn matches(&self, attrs: &Attributes) -> bool {
        let listed = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        listed(&self.operations, attrs.operation.as_str())
            && listed(&self.groups, attrs.group)
            && listed(&self.versions, attrs.version)
            && self.resources.iter().any(|r| {
                let (resource, sub) = r.split_once('/').unwrap_or((r, ""));
                (resource == "*" || resource == attrs.resource)
                    && (sub == "*" || sub == attrs.subresource)
            })
            && match self.scope.as_str() {
                // A Namespace is cluster-scoped, though it names a namespace.
                "Cluster" => attrs.resource == "namespaces" || attrs.namespace.is_empty(),
                "Namespaced" => attrs.resource != "namespaces" && !attrs.namespace.is_empty(),
                _ => true,
            }
    }
}

/// The AdmissionReview sent for `attrs`, with request `uid`.
pub fn review(hook: &Hook, attrs: &Attributes, uid: &str) -> Value {
    let kind = json!({"group": attrs.group, "version": attrs.version, "kind": attrs.kind});
    let resource =
        json!({"group": attrs.group, "version": attrs.version, "resource": attrs.resource});
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "operation": attrs.operation.as_str(),
        "userInfo": {"username": attrs.user.name, "groups": attrs.user.groups},
        "object": attrs.object.cloned().unwrap_or(Value::Null),
        "oldObject": attrs.old_object.cloned().unwrap_or(Value::Null),
        "dryRun": attrs.dry_run,
        "options": {"kind": attrs.operation.options_kind(), "apiVersion": "meta.k8s.io/v1"},
    });
    for (field, value) in [
        ("subResource", attrs.subresource),
        ("requestSubResource", attrs.subresource),
        ("name", attrs.name),
        ("namespace", attrs.namespace),
    ] {
        if !value.is_empty() {
            request[field] = json!(value);
        }
    }
    json!({
        "apiVersion": format!("admission.k8s.io/{}", hook.review_version),
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// A webhook's answer.
#[derive(Debug)]
pub enum Verdict {
    /// The write may go on, changed by these JSON patch operations (mutating only).
    Allowed {
        /// RFC 6902 operations.
        patch: Option<json_patch::Patch>,
        /// Warnings for the client.
        warnings: Vec<String>,
    },
    /// The write is refused.
    Denied {
        /// What the client is told.
        error: ApiError,
        /// Warnings for the client.
        warnings: Vec<String>,
    },
}

/// Reads a webhook's answer to the review with `uid`; an Err is an answer
/// that breaks the protocol (a failed call, as upstream counts it).
pub fn verdict(hook: &Hook, uid: &str, answer: &Value) -> Result<Verdict, String> {
    let expected = format!("admission.k8s.io/{}", hook.review_version);
    if answer["apiVersion"] != expected.as_str() || answer["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of {expected}, Kind=AdmissionReview, got {}, Kind={}",
            answer["apiVersion"].as_str().unwrap_or_default(),
            answer["kind"].as_str().unwrap_or_default()
        ));
    }
    let response = match answer.get("response") {
        Some(response) if response.is_object() => response,
        _ => return Err("webhook response was absent".into()),
    };
    let answered_uid = response["uid"].as_str().unwrap_or_default();
    if answered_uid != uid {
        return Err(format!(
            "expected response.uid={uid:?}, got {answered_uid:?}"
        ));
    }
    let warnings = strings(&response["warnings"]);
    if response["allowed"].as_bool() != Some(true) {
        return Ok(Verdict::Denied {
            error: denial(&hook.name, &response["status"]),
            warnings,
        });
    }
    let patch = match response["patch"].as_str().filter(|p| !p.is_empty()) {
        None => None,
        Some(_) if hook.phase == Phase::Validating => {
            return Err("validating webhooks may not return patches".into());
        }
        Some(encoded) => {
            match response["patchType"].as_str() {
                Some("JSONPatch") => {}
                Some(other) => return Err(format!("unsupported patch type {other:?}")),
                None => {
                    return Err("webhook returned response.patch but not response.patchType".into());
                }
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("decoding the patch: {e}"))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| format!("decoding the patch: {e}"))?)
        }
    };
    Ok(Verdict::Allowed { patch, warnings })
}

/// A webhook's refusal as upstream's apiserver passes it on: the webhook's
/// Status (code at least 400, default 400), its message prefixed.
fn denial(webhook: &str, status: &Value) -> ApiError {
    let denied_by = format!("admission webhook {webhook:?} denied the request");
    let message = status["message"].as_str().filter(|m| !m.is_empty());
    let reason = status["reason"].as_str().unwrap_or_default();
    let message = match (message, reason) {
        (Some(message), _) => format!("{denied_by}: {message}"),
        (None, "") => format!("{denied_by} without explanation"),
        (None, reason) => format!("{denied_by}: {reason}"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400 && *c < 600)
        .unwrap_or(400);
    ApiError::Passed {
        code,
        reason: reason.to_string(),
        message,
        details: status.get("details").filter(|d| d.is_object()).cloned(),
    }
}

/// A webhook that could not be called (or broke the protocol), under failurePolicy Fail.
pub fn call_failed(webhook: &str, reason: &str) -> ApiError {
    ApiError::internal(format!("failed calling webhook {webhook:?}: {reason}"))
}

/// The URL a call goes to: the configured URL or the Service's path, with
/// upstream's `timeout` parameter telling the webhook its deadline.
pub fn call_url(base: &str, timeout: Duration) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}timeout={}s", timeout.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(phase_webhook: Value) -> Value {
        json!({"metadata": {"name": "cfg"}, "webhooks": [phase_webhook]})
    }

    fn admin() -> User {
        User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        }
    }

    fn attrs<'a>(user: &'a User, object: Option<&'a Value>) -> Attributes<'a> {
        Attributes {
            operation: Operation::Create,
            group: "",
            version: "v1",
            resource: "configmaps",
            subresource: "",
            kind: "ConfigMap",
            namespace: "team",
            name: "cm",
            object,
            old_object: None,
            user,
            dry_run: false,
        }
    }

    fn hook(extra: Value) -> Hook {
        let mut w = json!({
            "name": "check.kelp.test",
            "clientConfig": {"url": "https://127.0.0.1:9443/check", "caBundle": "LS0tLQ=="},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        for (k, v) in extra.as_object().expect("object") {
            w[k] = v.clone();
        }
        hooks_of(Phase::Validating, &config(w)).remove(0)
    }

    #[test]
    fn defaults_as_upstream() {
        let h = hook(json!({}));
        assert_eq!(h.configuration, "cfg");
        assert!(h.fail_closed);
        assert_eq!(h.timeout, Duration::from_secs(10));
        assert_eq!(h.review_version, "v1");
        assert_eq!(h.ca_bundle.as_deref(), Some("----"));
        assert!(!h.reinvoke);
        let service =
            hook(json!({"clientConfig": {"service": {"namespace": "w", "name": "hooks"}}}));
        assert_eq!(
            service.client,
            ClientConfig::Service {
                namespace: "w".into(),
                name: "hooks".into(),
                path: "/".into(),
                port: 443
            }
        );
        assert_eq!(service.ca_bundle, None);
        let ignore = hook(json!({"failurePolicy": "Ignore", "timeoutSeconds": 3}));
        assert!(!ignore.fail_closed);
        assert_eq!(ignore.timeout, Duration::from_secs(3));
    }

    #[test]
    fn rules_match_operations_resources_subresources_and_scope() {
        let user = admin();
        let cm = json!({"metadata": {"name": "cm"}});
        let a = attrs(&user, Some(&cm));
        assert!(hook(json!({})).matches_rules(&a));
        let update = Attributes {
            operation: Operation::Update,
            ..a
        };
        assert!(!hook(json!({})).matches_rules(&update));
        let rule = |resources: Value, scope: &str| {
            hook(
                json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": resources, "scope": scope}]}),
            )
        };
        let status = Attributes {
            resource: "pods",
            subresource: "status",
            kind: "Pod",
            ..a
        };
        assert!(!rule(json!(["pods"]), "*").matches_rules(&status));
        assert!(!rule(json!(["*"]), "*").matches_rules(&status));
        assert!(rule(json!(["pods/status"]), "*").matches_rules(&status));
        assert!(rule(json!(["pods/*"]), "*").matches_rules(&status));
        assert!(rule(json!(["*/status"]), "*").matches_rules(&status));
        assert!(rule(json!(["*/*"]), "*").matches_rules(&status));
        assert!(rule(json!(["*"]), "Namespaced").matches_rules(&a));
        assert!(!rule(json!(["*"]), "Cluster").matches_rules(&a));
        let namespace = Attributes {
            resource: "namespaces",
            kind: "Namespace",
            namespace: "team",
            ..a
        };
        assert!(rule(json!(["*"]), "Cluster").matches_rules(&namespace));
        assert!(!rule(json!(["*"]), "Namespaced").matches_rules(&namespace));
        // Never for the admission configurations themselves.
        let own = Attributes {
            group: "admissionregistration.k8s.io",
            resource: "validatingwebhookconfigurations",
            namespace: "",
            ..a
        };
        assert!(!rule(json!(["*"]), "*").matches_rules(&own));
    }

    #[test]
    fn selectors_use_namespace_labels_and_object_labels() {
        let user = admin();
        let labelled = json!({"metadata": {"name": "cm", "labels": {"app": "web"}}});
        let plain = json!({"metadata": {"name": "cm"}});
        let ns_selected = hook(json!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}));
        let a = attrs(&user, Some(&plain));
        assert!(ns_selected.needs_namespace_labels(&a));
        assert!(ns_selected.selects(&a, Some(&json!({"webhooks": "on"}))));
        assert!(!ns_selected.selects(&a, Some(&json!({"webhooks": "off"}))));
        assert!(!ns_selected.selects(&a, None));
        let obj_selected = hook(
            json!({"objectSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}),
        );
        assert!(!obj_selected.needs_namespace_labels(&a));
        assert!(!obj_selected.selects(&a, None));
        assert!(obj_selected.selects(&attrs(&user, Some(&labelled)), None));
        // Either the new or the old object's labels select an update.
        let relabel = Attributes {
            operation: Operation::Update,
            old_object: Some(&labelled),
            ..a
        };
        assert!(obj_selected.selects(&relabel, None));
        // A Namespace is selected by its own labels.
        let ns = json!({"metadata": {"name": "team", "labels": {"webhooks": "on"}}});
        let ns_attrs = Attributes {
            resource: "namespaces",
            kind: "Namespace",
            object: Some(&ns),
            ..a
        };
        assert!(!ns_selected.needs_namespace_labels(&ns_attrs));
        assert!(ns_selected.selects(&ns_attrs, None));
    }

    #[test]
    fn dry_runs_only_for_webhooks_without_side_effects() {
        let user = admin();
        let a = Attributes {
            dry_run: true,
            ..attrs(&user, None)
        };
        assert!(hook(json!({})).refuses_dry_run(&a).is_none());
        let refused = hook(json!({"sideEffects": "Some"}))
            .refuses_dry_run(&a)
            .expect("refused");
        assert_eq!(
            refused.to_string(),
            "admission webhook \"check.kelp.test\" does not support dry run"
        );
        assert_eq!(refused.code_and_reason().0, 400);
    }

    #[test]
    fn review_carries_the_request() {
        let user = admin();
        let cm = json!({"metadata": {"name": "cm"}});
        let review = review(&hook(json!({})), &attrs(&user, Some(&cm)), "u-1");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        let r = &review["request"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["operation"], "CREATE");
        assert_eq!(
            r["kind"],
            json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(r["namespace"], "team");
        assert_eq!(r["object"], cm);
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(r["userInfo"]["username"], "admin");
        assert_eq!(r["options"]["kind"], "CreateOptions");
        assert!(r.get("subResource").is_none());
    }

    fn answer(response: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }

    #[test]
    fn denials_are_passed_on_as_upstream() {
        let h = hook(json!({}));
        let denied = verdict(
            &h,
            "u",
            &answer(json!({"uid": "u", "allowed": false, "status": {"message": "no way"}})),
        )
        .expect("answer");
        let Verdict::Denied { error, .. } = denied else {
            panic!("denied")
        };
        assert_eq!(
            error.to_string(),
            "admission webhook \"check.kelp.test\" denied the request: no way"
        );
        assert_eq!(error.code_and_reason(), (400, ""));
        let forbidden = verdict(
            &h,
            "u",
            &answer(json!({"uid": "u", "allowed": false, "status": {"code": 403, "reason": "Forbidden"}})),
        )
        .expect("answer");
        let Verdict::Denied { error, .. } = forbidden else {
            panic!("denied")
        };
        assert_eq!(
            error.to_string(),
            "admission webhook \"check.kelp.test\" denied the request: Forbidden"
        );
        assert_eq!(error.code_and_reason(), (403, "Forbidden"));
        let bare = verdict(&h, "u", &answer(json!({"uid": "u"}))).expect("answer");
        let Verdict::Denied { error, .. } = bare else {
            panic!("denied")
        };
        assert!(error.to_string().ends_with("without explanation"));
    }

    #[test]
    fn protocol_errors_are_call_failures() {
        let h = hook(json!({}));
        assert_eq!(
            verdict(&h, "u", &answer(json!({"uid": "other", "allowed": true}))).unwrap_err(),
            "expected response.uid=\"u\", got \"other\""
        );
        assert!(verdict(&h, "u", &json!({})).is_err());
        assert_eq!(
            verdict(&h, "u", &answer(Value::Null)).unwrap_err(),
            "webhook response was absent"
        );
        let patch = base64::engine::general_purpose::STANDARD.encode(b"[]");
        assert_eq!(
            verdict(
                &h,
                "u",
                &answer(
                    json!({"uid": "u", "allowed": true, "patch": patch, "patchType": "JSONPatch"})
                )
            )
            .unwrap_err(),
            "validating webhooks may not return patches"
        );
        assert_eq!(
            call_failed("check.kelp.test", "boom").to_string(),
            "Internal error occurred: failed calling webhook \"check.kelp.test\": boom"
        );
    }

    #[test]
    fn mutating_answers_carry_json_patches() {
        let mut w = hook(json!({}));
        w.phase = Phase::Mutating;
        let ops = json!([{"op": "add", "path": "/metadata/labels", "value": {"m": "1"}}]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
        let Verdict::Allowed { patch, warnings } = verdict(
            &w,
            "u",
            &answer(json!({"uid": "u", "allowed": true, "patch": encoded, "patchType": "JSONPatch", "warnings": ["careful"]})),
        )
        .expect("answer") else {
            panic!("allowed")
        };
        let mut obj = json!({"metadata": {"name": "cm"}});
        json_patch::patch_unsafe(&mut obj, &patch.expect("patch")).expect("applies");
        assert_eq!(obj["metadata"]["labels"]["m"], "1");
        assert_eq!(warnings, vec!["careful".to_string()]);
        let missing_type = verdict(
            &w,
            "u",
            &answer(json!({"uid": "u", "allowed": true, "patch": encoded})),
        );
        assert!(missing_type.is_err());
    }

    #[test]
    fn call_urls_carry_the_timeout() {
        assert_eq!(
            call_url("https://h/check", Duration::from_secs(10)),
            "https://h/check?timeout=10s"
        );
        assert_eq!(
            call_url("https://h/check?x=1", Duration::from_secs(3)),
            "https://h/check?x=1&timeout=3s"
        );
    }
}
