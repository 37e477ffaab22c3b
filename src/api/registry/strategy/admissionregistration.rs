//! admissionregistration.k8s.io: Mutating- and ValidatingWebhookConfigurations,
//! with upstream's defaults and validation.

use serde_json::{Value, json};

use super::{Strategy, default_field};
use crate::api::FieldError;

/// Upstream's defaults for each webhook of a configuration.
pub fn default_webhooks(obj: &mut Value, mutating: bool) {
    let Some(webhooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return;
    };
    for webhook in webhooks {
        default_field(webhook, "/failurePolicy", json!("Fail"));
        default_field(webhook, "/matchPolicy", json!("Equivalent"));
        default_field(webhook, "/namespaceSelector", json!({}));
        default_field(webhook, "/objectSelector", json!({}));
        default_field(webhook, "/timeoutSeconds", json!(10));
        if mutating {
            default_field(webhook, "/reinvocationPolicy", json!("Never"));
        }
        if webhook.pointer("/clientConfig/service").is_some() {
            default_field(webhook, "/clientConfig/service/port", json!(443));
        }
        if let Some(rules) = webhook.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules {
                default_field(rule, "/scope", json!("*"));
            }
        }
    }
}

/// Field problems of a webhook configuration.
pub fn validate_webhooks(obj: &Value, mutating: bool) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let mut names = Vec::new();
    let webhooks = obj["webhooks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for (i, webhook) in webhooks.iter().enumerate() {
        let at = |field: &str| format!("webhooks[{i}].{field}");
        let name = &webhook["name"];
        match name.as_str() {
            None | Some("") => causes.push(FieldError::required(at("name"), "")),
            Some(n) if n.split('.').filter(|s| !s.is_empty()).count() < 3 => {
                causes.push(FieldError::invalid(
                    at("name"),
                    name,
                    "should be a domain with at least three segments separated by dots",
                ))
            }
            Some(n) if names.contains(&n) => causes.push(FieldError::duplicate(at("name"), name)),
            Some(n) => names.push(n),
        }
        causes.extend(validate_client_config(
            &webhook["clientConfig"],
            &at("clientConfig"),
        ));
        for (j, rule) in webhook["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            causes.extend(validate_rule(rule, &at(&format!("rules[{j}]"))));
        }
        let one_of = |field: &str, supported: &[&str], causes: &mut Vec<FieldError>| {
            let value = &webhook[field];
            if !value.is_null() && !value.as_str().is_some_and(|v| supported.contains(&v)) {
                causes.push(FieldError::not_supported(at(field), value, supported));
            }
        };
        one_of("failurePolicy", &["Fail", "Ignore"], &mut causes);
        one_of("matchPolicy", &["Equivalent", "Exact"], &mut causes);
        if mutating {
            one_of("reinvocationPolicy", &["IfNeeded", "Never"], &mut causes);
        }
        match &webhook["sideEffects"] {
            Value::Null => causes.push(FieldError::not_supported(
                at("sideEffects"),
                &json!(""),
                &["None", "NoneOnDryRun"],
            )),
            _ => one_of("sideEffects", &["None", "NoneOnDryRun"], &mut causes),
        }
        let timeout = &webhook["timeoutSeconds"];
        if !timeout.is_null() && !timeout.as_i64().is_some_and(|t| (1..=30).contains(&t)) {
            causes.push(FieldError::invalid(
                at("timeoutSeconds"),
                timeout,
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        let versions = webhook["admissionReviewVersions"].as_array();
        let known = versions
            .into_iter()
            .flatten()
            .any(|v| matches!(v.as_str(), Some("v1" | "v1beta1")));
        if !known {
            causes.push(FieldError::required(
                at("admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            ));
        }
        if webhook
            .get("matchConditions")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            // CEL is not evaluated here: refusing is better than calling a
            // webhook for writes its conditions would have left out, or not.
            causes.push(FieldError::forbidden(
                at("matchConditions"),
                "match conditions (CEL) are not supported by this server",
            ));
        }
    }
    causes
}

fn validate_client_config(config: &Value, at: &str) -> Vec<FieldError> {
    match (config.get("url"), config.get("service")) {
        (Some(url), None) => {
            let text = url.as_str().unwrap_or_default();
            match text.parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
                    if uri.query().is_some() {
                        vec![FieldError::invalid(
                            format!("{at}.url"),
                            url,
                            "query parameters are not allowed",
                        )]
                    } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                        vec![FieldError::invalid(
                            format!("{at}.url"),
                            url,
                            "user information is not allowed in the URL",
                        )]
                    } else {
                        vec![]
                    }
                }
                Ok(uri) if uri.scheme_str().is_some_and(|s| s != "https") => {
                    vec![FieldError::invalid(
                        format!("{at}.url"),
                        url,
                        "'https' is the only allowed URL scheme",
                    )]
                }
                _ => vec![FieldError::invalid(
                    format!("{at}.url"),
                    url,
                    "host must be specified",
                )],
            }
        }
        (None, Some(service)) => {
            let mut causes = Vec::new();
            for field in ["namespace", "name"] {
                if service[field].as_str().is_none_or(str::is_empty) {
                    causes.push(FieldError::required(format!("{at}.service.{field}"), ""));
                }
            }
            if let Some(path) = service["path"].as_str()
                && !path.starts_with('/')
            {
                causes.push(FieldError::invalid(
                    format!("{at}.service.path"),
                    &service["path"],
                    "must start with a '/'",
                ));
            }
            let port = &service["port"];
            if !port.is_null() && !port.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
                causes.push(FieldError::invalid(
                    format!("{at}.service.port"),
                    port,
                    "port is not valid: must be between 1 and 65535, inclusive",
                ));
            }
            causes
        }
        _ => vec![FieldError::required(
            at.to_string(),
            "exactly one of url or service is required",
        )],
    }
}

fn validate_rule(rule: &Value, at: &str) -> Vec<FieldError> {
    let mut causes = Vec::new();
    for field in ["operations", "apiGroups", "apiVersions", "resources"] {
        if rule[field].as_array().is_none_or(Vec::is_empty) {
            causes.push(FieldError::required(format!("{at}.{field}"), ""));
        }
    }
    for (k, op) in rule["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let supported = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
        if !op.as_str().is_some_and(|o| supported.contains(&o)) {
            causes.push(FieldError::not_supported(
                format!("{at}.operations[{k}]"),
                op,
                &supported,
            ));
        }
    }
    let scope = &rule["scope"];
    if !scope.is_null() && !matches!(scope.as_str(), Some("*" | "Cluster" | "Namespaced")) {
        causes.push(FieldError::not_supported(
            format!("{at}.scope"),
            scope,
            &["*", "Cluster", "Namespaced"],
        ));
    }
    causes
}

/// Mutating (`true`) or validating webhook configurations.
#[derive(Debug)]
pub struct Webhooks(pub bool);

impl Strategy for Webhooks {
    fn default(&self, obj: &mut Value) {
        default_webhooks(obj, self.0);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_webhooks(obj, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhook: Value) -> Value {
        json!({"metadata": {"name": "c"}, "webhooks": [webhook]})
    }

    fn valid() -> Value {
        json!({
            "name": "check.kelp.test",
            "clientConfig": {"url": "https://127.0.0.1:9443/check"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    }

    fn fields(obj: &Value) -> Vec<String> {
        validate_webhooks(obj, true)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_as_upstream() {
        let mut obj = config(
            json!({"name": "a.b.c", "clientConfig": {"service": {"namespace": "n", "name": "s"}}, "rules": [{}]}),
        );
        default_webhooks(&mut obj, true);
        let w = &obj["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(w["namespaceSelector"], json!({}));
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
        assert_eq!(w["rules"][0]["scope"], "*");
        let mut validating = config(json!({"name": "a.b.c"}));
        default_webhooks(&mut validating, false);
        assert!(
            validating["webhooks"][0]
                .get("reinvocationPolicy")
                .is_none()
        );
    }

    #[test]
    fn a_valid_configuration_passes() {
        assert!(fields(&config(valid())).is_empty());
    }

    #[test]
    fn problems_are_named_as_upstream() {
        let mut w = valid();
        w["name"] = json!("check");
        w["clientConfig"] = json!({"url": "http://127.0.0.1/x"});
        w["sideEffects"] = json!("Some");
        w["timeoutSeconds"] = json!(31);
        w["admissionReviewVersions"] = json!(["v2"]);
        w["rules"][0]["operations"] = json!(["PATCH"]);
        let problems = fields(&config(w)).join("\n");
        for expected in [
            "should be a domain with at least three segments separated by dots",
            "'https' is the only allowed URL scheme",
            "webhooks[0].sideEffects",
            "the timeout value must be between 1 and 30 seconds",
            "must specify one of v1, v1beta1",
            "webhooks[0].rules[0].operations[0]",
        ] {
            assert!(problems.contains(expected), "{expected} in\n{problems}");
        }
        let mut neither = valid();
        neither["clientConfig"] = json!({});
        assert!(
            fields(&config(neither))
                .join("")
                .contains("exactly one of url or service is required")
        );
        let twice = json!({"webhooks": [valid(), valid()]});
        assert!(fields(&twice).join("").contains("Duplicate value"));
        let mut cel = valid();
        cel["matchConditions"] = json!([{"name": "x", "expression": "true"}]);
        assert!(fields(&config(cel)).join("").contains("not supported"));
    }
}
