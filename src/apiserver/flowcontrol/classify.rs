//! Which FlowSchema a request matches: subjects (user, group, service
//! account), then resource or non-resource rules, as upstream's rule
//! matching (the first schema in precedence order wins).

use std::sync::Arc;

use k8s_openapi::api::flowcontrol::v1::{
    NonResourcePolicyRule, PolicyRulesWithSubjects, ResourcePolicyRule, Subject,
};

use crate::apiserver::authn::User;
use crate::apiserver::request::RequestInfo;

/// What classification reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Digest<'a> {
    /// The user (after impersonation).
    pub user: &'a User,
    /// The request.
    pub info: &'a Arc<RequestInfo>,
}

impl Digest<'_> {
    /// The namespace ByNamespace distinguishes by ("" for none).
    pub fn namespace(&self) -> &str {
        self.info
            .resource
            .as_ref()
            .and_then(|p| p.namespace.as_deref())
            .unwrap_or("")
    }
}

/// Whether any of `rules` matches.
pub fn matches(rules: &[PolicyRulesWithSubjects], digest: &Digest<'_>) -> bool {
    rules.iter().any(|rule| {
        rule.subjects
            .iter()
            .any(|s| subject_matches(s, digest.user))
            && match &digest.info.resource {
                Some(_) => rule
                    .resource_rules
                    .iter()
                    .flatten()
                    .any(|r| resource_rule_matches(r, digest.info)),
                None => rule
                    .non_resource_rules
                    .iter()
                    .flatten()
                    .any(|r| non_resource_rule_matches(r, digest.info)),
            }
    })
}

fn subject_matches(subject: &Subject, user: &User) -> bool {
    match subject.kind.as_str() {
        "User" => subject
            .user
            .as_ref()
            .is_some_and(|u| u.name == "*" || u.name == user.name),
        "Group" => subject
            .group
            .as_ref()
            .is_some_and(|g| g.name == "*" || user.groups.contains(&g.name)),
        "ServiceAccount" => subject.service_account.as_ref().is_some_and(|sa| {
            let name = user
                .name
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.strip_prefix(sa.namespace.as_str()))
                .and_then(|rest| rest.strip_prefix(':'));
            name.is_some_and(|name| sa.name == "*" || sa.name == name)
        }),
        _ => false,
    }
}

/// A list holding `*` matches everything; otherwise an exact member.
fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn resource_rule_matches(rule: &ResourcePolicyRule, info: &RequestInfo) -> bool {
    let Some(path) = &info.resource else {
        return false;
    };
    if !has(&rule.verbs, &info.verb) || !has(&rule.api_groups, &path.group) {
        return false;
    }
    let resource = match &path.subresource {
        Some(sub) => format!("{}/{sub}", path.resource),
        None => path.resource.clone(),
    };
    if !has(&rule.resources, &resource) {
        return false;
    }
    match path.namespace.as_deref() {
        None | Some("") => rule.cluster_scope.unwrap_or(false),
        Some(ns) => rule.namespaces.as_deref().is_some_and(|n| has(n, ns)),
    }
}

fn non_resource_rule_matches(rule: &NonResourcePolicyRule, info: &RequestInfo) -> bool {
    has(&rule.verbs, &info.verb)
        && rule
            .non_resource_urls
            .iter()
            .any(|u| url_matches(u, &info.path))
}

/// `*`, the path itself, or a prefix: `u` without a trailing `*`, ending
/// in `/` (so `/healthz` covers `/healthz/etcd` and `/apis/*` not `/apis`).
fn url_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" || pattern == path {
        return true;
    }
    let mut prefix = pattern.strip_suffix('*').unwrap_or(pattern).to_string();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    path.starts_with(&prefix)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn rules(value: serde_json::Value) -> Vec<PolicyRulesWithSubjects> {
        serde_json::from_value(value).unwrap()
    }

    fn info(method: Method, uri: &str) -> Arc<RequestInfo> {
        Arc::new(RequestInfo::new(&method, &uri.parse().unwrap()))
    }

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn service_account_subjects() {
        let r = rules(json!([{
            "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": "*"}}],
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": true}]
        }]));
        let list = info(Method::GET, "/api/v1/pods");
        let sa = user("system:serviceaccount:kube-system:coredns", &[]);
        assert!(matches(
            &r,
            &Digest {
                user: &sa,
                info: &list
            }
        ));
        let other = user("system:serviceaccount:default:coredns", &[]);
        assert!(!matches(
            &r,
            &Digest {
                user: &other,
                info: &list
            }
        ));
    }

    #[test]
    fn resource_rules_need_verb_group_resource_and_scope() {
        let r = rules(json!([{
            "subjects": [{"kind": "Group", "group": {"name": "system:nodes"}}],
            "resourceRules": [
                {"verbs": ["*"], "apiGroups": [""], "resources": ["nodes", "nodes/status"], "clusterScope": true},
                {"verbs": ["get", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "namespaces": ["*"]}
            ]
        }]));
        let node = user("system:node:a", &["system:nodes", "system:authenticated"]);
        let check = |method, uri| {
            matches(
                &r,
                &Digest {
                    user: &node,
                    info: &info(method, uri),
                },
            )
        };
        assert!(check(Method::PUT, "/api/v1/nodes/a/status"));
        assert!(check(Method::GET, "/api/v1/nodes"));
        assert!(!check(Method::GET, "/api/v1/pods"));
        assert!(check(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/a"
        ));
        assert!(!check(
            Method::DELETE,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/a"
        ));
        // Leases across all namespaces are cluster scope, which that rule does not cover.
        assert!(!check(Method::GET, "/apis/coordination.k8s.io/v1/leases"));
        let admin = user("admin", &["system:masters"]);
        assert!(!matches(
            &r,
            &Digest {
                user: &admin,
                info: &info(Method::GET, "/api/v1/nodes")
            }
        ));
    }

    #[test]
    fn non_resource_urls() {
        assert!(url_matches("/healthz", "/healthz/etcd"));
        assert!(url_matches("/apis/*", "/apis/apps"));
        assert!(!url_matches("/apis/*", "/apis"));
        assert!(url_matches("*", "/anything"));
        let r = rules(json!([{
            "subjects": [{"kind": "User", "user": {"name": "*"}}],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez"]}]
        }]));
        let anyone = user("x", &[]);
        assert!(matches(
            &r,
            &Digest {
                user: &anyone,
                info: &info(Method::GET, "/livez")
            }
        ));
        assert!(!matches(
            &r,
            &Digest {
                user: &anyone,
                info: &info(Method::POST, "/livez")
            }
        ));
        assert!(!matches(
            &r,
            &Digest {
                user: &anyone,
                info: &info(Method::GET, "/api/v1/pods")
            }
        ));
    }
}
