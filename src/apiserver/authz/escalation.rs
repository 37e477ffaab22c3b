//! RBAC's guard against privilege escalation (upstream's policy-based role
//! and binding storage): a user may write a role only with rules it already
//! holds, and bind a role only if it holds that role's rules, unless it has
//! the `escalate` or `bind` verb, or is in `system:masters`.

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::{Attributes, Authorizer, PRIVILEGED_GROUP, ResourceAttributes};
use crate::api::{ApiError, values::meta};
use crate::apiserver::authn::User;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses a write of a role or binding that would grant `user` more than it has.
pub fn check(
    authorizer: &Authorizer,
    user: &User,
    resource: &str,
    namespace: Option<&str>,
    obj: &Value,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
        return Ok(());
    }
    let ns = namespace.unwrap_or("");
    let name = meta::name(obj);
    let may = |verb: &str, resource: &str, name: &str| {
        authorizer
            .authorize(&Attributes {
                user,
                verb,
                resource: Some(ResourceAttributes {
                    group: GROUP.into(),
                    version: "v1".into(),
                    resource: resource.into(),
                    namespace: ns.into(),
                    name: name.into(),
                    ..Default::default()
                }),
                path: "",
            })
            .allowed()
    };
    let granted: Vec<PolicyRule> = match resource {
        "roles" | "clusterroles" => {
            if may("escalate", resource, name) {
                return Ok(());
            }
            if resource == "clusterroles"
                && obj.get("aggregationRule").is_some_and(|a| !a.is_null())
            {
                return Err(ApiError::forbidden(
                    GROUP,
                    resource,
                    name,
                    "must have cluster-admin privileges to use the aggregationRule",
                ));
            }
            serde_json::from_value(obj["rules"].clone()).unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let role_resource = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if may("bind", role_resource, role) {
                return Ok(());
            }
            let policy = authorizer.rbac().read();
            let rules = match kind {
                "Role" => policy.role(ns, role),
                _ => policy.cluster_role(role),
            };
            match rules {
                Some(rules) => rules.to_vec(),
                None => {
                    return Err(ApiError::forbidden(
                        GROUP,
                        resource,
                        name,
                        format!("{}.{GROUP} \"{role}\" not found", kind.to_ascii_lowercase()),
                    ));
                }
            }
        }
        _ => return Ok(()),
    };
    let (held, _) = authorizer.rbac().rules_for(user, namespace);
    let missing = super::rbac::uncovered(&held, &granted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rules = missing.iter().map(describe).collect::<Vec<_>>().join("\n");
    Err(ApiError::forbidden(
        GROUP,
        resource,
        name,
        format!(
            "user \"{}\" (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{rules}",
            user.name
        ),
    ))
}

/// A rule in upstream's compact form: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
fn describe(rule: &PolicyRule) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", rule.api_groups.as_deref()),
        ("Resources", rule.resources.as_deref()),
        ("ResourceNames", rule.resource_names.as_deref()),
        ("NonResourceURLs", rule.non_resource_urls.as_deref()),
    ] {
        if let Some(values) = values.filter(|v| !v.is_empty()) {
            parts.push(format!("{label}:[{}]", list(values)));
        }
    }
    parts.push(format!("Verbs:[{}]", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_upstream_prints_them() {
        let rule: PolicyRule = serde_json::from_value(serde_json::json!(
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
        ))
        .expect("rule");
        assert_eq!(
            describe(&rule),
            "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}"
        );
    }
}
