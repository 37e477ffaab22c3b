//! Role-based access control, as upstream's RBAC authorizer: the stored
//! Roles, ClusterRoles and their bindings decide; nothing is allowed that a
//! rule bound to the user does not name. Pure decisions over a [`Policy`]
//! snapshot; the mirror that keeps it current is in `super::policy`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{Attributes, Decision};
use crate::apiserver::authn::User;

/// The RBAC objects in force, indexed for lookups by namespace.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
    role_bindings: HashMap<String, BTreeMap<String, Binding>>,
}

/// One binding: the role it grants and to whom.
#[derive(Debug, Clone)]
struct Binding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// One of the four RBAC kinds, decoded.
#[derive(Debug, Clone)]
pub enum Object {
    /// A ClusterRole.
    ClusterRole(ClusterRole),
    /// A namespaced Role.
    Role(Role),
    /// A ClusterRoleBinding.
    ClusterRoleBinding(ClusterRoleBinding),
    /// A namespaced RoleBinding.
    RoleBinding(RoleBinding),
}

impl Object {
    /// Decodes a stored object of `resource` (plural, as in store keys).
    pub fn decode(resource: &str, bytes: &[u8]) -> Option<Object> {
        Some(match resource {
            "clusterroles" => Object::ClusterRole(serde_json::from_slice(bytes).ok()?),
            "roles" => Object::Role(serde_json::from_slice(bytes).ok()?),
            "clusterrolebindings" => {
                Object::ClusterRoleBinding(serde_json::from_slice(bytes).ok()?)
            }
            "rolebindings" => Object::RoleBinding(serde_json::from_slice(bytes).ok()?),
            _ => return None,
        })
    }
}

/// Where a rule came from, for "allowed by" reasons and rule listings.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    binding_kind: &'static str,
    binding: &'a str,
    namespace: Option<&'a str>,
    role_ref: &'a RoleRef,
    subject: &'a Subject,
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let binding = match self.namespace {
            Some(ns) => format!("{}/{ns}", self.binding),
            None => self.binding.to_string(),
        };
        let subject = match self.subject.kind.as_str() {
            "ServiceAccount" => format!(
                "ServiceAccount \"{}/{}\"",
                self.subject.name,
                self.subject
                    .namespace
                    .as_deref()
                    .or(self.namespace)
                    .unwrap_or("")
            ),
            kind => format!("{kind} \"{}\"", self.subject.name),
        };
        write!(
            f,
            "{} \"{binding}\" of {} \"{}\" to {subject}",
            self.binding_kind, self.role_ref.kind, self.role_ref.name
        )
    }
}

impl Policy {
    /// Adds or replaces one object.
    pub fn insert(&mut self, object: Object) {
        match object {
            Object::ClusterRole(role) => {
                let name = role.metadata.name.unwrap_or_default();
                self.cluster_roles
                    .insert(name, role.rules.unwrap_or_default());
            }
            Object::Role(role) => {
                let key = (
                    role.metadata.namespace.unwrap_or_default(),
                    role.metadata.name.unwrap_or_default(),
                );
                self.roles.insert(key, role.rules.unwrap_or_default());
            }
            Object::ClusterRoleBinding(b) => {
                let binding = Binding {
                    role_ref: b.role_ref,
                    subjects: b.subjects.unwrap_or_default(),
                };
                self.cluster_role_bindings
                    .insert(b.metadata.name.unwrap_or_default(), binding);
            }
            Object::RoleBinding(b) => {
                let binding = Binding {
                    role_ref: b.role_ref,
                    subjects: b.subjects.unwrap_or_default(),
                };
                self.role_bindings
                    .entry(b.metadata.namespace.unwrap_or_default())
                    .or_default()
                    .insert(b.metadata.name.unwrap_or_default(), binding);
            }
        }
    }

    /// Removes one object of `resource` by namespace and name.
    pub fn remove(&mut self, resource: &str, namespace: &str, name: &str) {
        match resource {
            "clusterroles" => {
                self.cluster_roles.remove(name);
            }
            "roles" => {
                self.roles
                    .remove(&(namespace.to_string(), name.to_string()));
            }
            "clusterrolebindings" => {
                self.cluster_role_bindings.remove(name);
            }
            "rolebindings" => {
                if let Some(bindings) = self.role_bindings.get_mut(namespace) {
                    bindings.remove(name);
                }
            }
            _ => {}
        }
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace`
    /// (cluster-wide bindings first), until it returns false. Bindings whose
    /// role is missing are reported as errors, as upstream.
    pub fn visit_rules(
        &self,
        user: &User,
        namespace: Option<&str>,
        visit: &mut dyn FnMut(Source<'_>, &PolicyRule) -> bool,
        errors: &mut Vec<String>,
    ) {
        for (name, binding) in &self.cluster_role_bindings {
            let Some(subject) = binding.subjects.iter().find(|s| applies(s, user, "")) else {
                continue;
            };
            let Some(rules) = self.role_rules(&binding.role_ref, None) else {
                errors.push(missing_role(&binding.role_ref, None));
                continue;
            };
            let source = Source {
                binding_kind: "ClusterRoleBinding",
                binding: name,
                namespace: None,
                role_ref: &binding.role_ref,
                subject,
            };
            for rule in rules {
                if !visit(source, rule) {
                    return;
                }
            }
        }
        let Some(ns) = namespace.filter(|ns| !ns.is_empty()) else {
            return;
        };
        let Some(bindings) = self.role_bindings.get(ns) else {
            return;
        };
        for (name, binding) in bindings {
            let Some(subject) = binding.subjects.iter().find(|s| applies(s, user, ns)) else {
                continue;
            };
            let Some(rules) = self.role_rules(&binding.role_ref, Some(ns)) else {
                errors.push(missing_role(&binding.role_ref, Some(ns)));
                continue;
            };
            let source = Source {
                binding_kind: "RoleBinding",
                binding: name,
                namespace: Some(ns),
                role_ref: &binding.role_ref,
                subject,
            };
            for rule in rules {
                if !visit(source, rule) {
                    return;
                }
            }
        }
    }

    /// The rules of the role a binding names (a RoleBinding may name a ClusterRole).
    fn role_rules(&self, role_ref: &RoleRef, namespace: Option<&str>) -> Option<&[PolicyRule]> {
        match (role_ref.kind.as_str(), namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&role_ref.name).map(Vec::as_slice),
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.to_string(), role_ref.name.clone()))
                .map(Vec::as_slice),
            _ => None,
        }
    }

    /// The rules of a ClusterRole, if it exists.
    pub fn cluster_role(&self, name: &str) -> Option<&[PolicyRule]> {
        self.cluster_roles.get(name).map(Vec::as_slice)
    }

    /// The rules of a Role, if it exists.
    pub fn role(&self, namespace: &str, name: &str) -> Option<&[PolicyRule]> {
        self.roles
            .get(&(namespace.to_string(), name.to_string()))
            .map(Vec::as_slice)
    }

    /// Decides a request: allowed if any rule bound to the user allows it;
    /// no opinion otherwise (another authorizer may still allow).
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        let mut reason = None;
        let mut errors = Vec::new();
        let namespace = attrs.resource.as_ref().map(|r| r.namespace.as_str());
        self.visit_rules(
            attrs.user,
            namespace,
            &mut |source, rule| {
                if rule_allows(attrs, rule) {
                    reason = Some(format!("RBAC: allowed by {source}"));
                    return false;
                }
                true
            },
            &mut errors,
        );
        match reason {
            Some(reason) => Decision::Allow(reason),
            None if errors.is_empty() => Decision::NoOpinion(String::new()),
            None => Decision::NoOpinion(format!("RBAC: {}", aggregate(&errors))),
        }
    }

    /// Every rule bound to `user` in `namespace`, and whether some binding
    /// could not be read (the review's `incomplete`).
    pub fn rules_for(
        &self,
        user: &User,
        namespace: Option<&str>,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules(
            user,
            namespace,
            &mut |_, rule| {
                rules.push(rule.clone());
                true
            },
            &mut errors,
        );
        (rules, errors)
    }
}

fn missing_role(role_ref: &RoleRef, namespace: Option<&str>) -> String {
    match role_ref.kind.as_str() {
        "Role" if namespace.is_some() => format!(
            "role.rbac.authorization.k8s.io \"{}\" not found",
            role_ref.name
        ),
        _ => format!(
            "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
            role_ref.name
        ),
    }
}

/// Upstream's aggregate error text: one error alone, several in brackets.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Whether a binding's subject is `user` (`namespace`: the binding's, the
/// default for service-account subjects).
fn applies(subject: &Subject, user: &User, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty()
                && user
                    .name
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(sa_ns, name)| sa_ns == ns && name == subject.name)
        }
        _ => false,
    }
}

/// Whether one rule allows the request.
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    if !has(&rule.verbs, attrs.verb) {
        return false;
    }
    match &attrs.resource {
        Some(r) => {
            let groups = rule.api_groups.as_deref().unwrap_or_default();
            let resources = rule.resources.as_deref().unwrap_or_default();
            has(groups, &r.group)
                && resource_matches(resources, &r.resource, &r.subresource)
                && names_match(rule.resource_names.as_deref().unwrap_or_default(), &r.name)
        }
        None => url_matches(
            rule.non_resource_urls.as_deref().unwrap_or_default(),
            attrs.path,
        ),
    }
}

fn has(values: &[String], wanted: &str) -> bool {
    values.iter().any(|v| v == "*" || v == wanted)
}

/// `*`, the exact resource or `resource/subresource`, or `*/subresource`.
fn resource_matches(rule: &[String], resource: &str, subresource: &str) -> bool {
    rule.iter().any(|r| {
        if r == "*" {
            return true;
        }
        if subresource.is_empty() {
            return r == resource;
        }
        r.split_once('/')
            .is_some_and(|(res, sub)| sub == subresource && (res == resource || res == "*"))
    })
}

/// No names in the rule: any object; else only the named ones.
fn names_match(rule: &[String], name: &str) -> bool {
    rule.is_empty() || (!name.is_empty() && rule.iter().any(|n| n == name))
}

/// `*`, the exact path, or a prefix ending in `*`.
fn url_matches(rule: &[String], path: &str) -> bool {
    rule.iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// The parts of `requested` that `owner` does not cover: a user may only
/// grant (in a role or, through a binding, a role's) rules it holds itself.
/// Each requested rule is split into single verb/group/resource/name pieces
/// and each piece must be covered by one owner rule, as upstream.
pub fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in requested {
        for piece in breakdown(rule) {
            if !owner.iter().any(|o| covers(o, &piece)) {
                missing.push(piece);
            }
        }
    }
    missing
}

/// Splits a rule into rules of one verb, one group, one resource, one name, one URL.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| Some(vec![s.clone()]);
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                let names = rule.resource_names.as_deref().unwrap_or_default();
                if names.is_empty() {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: one(group),
                        resources: one(resource),
                        ..Default::default()
                    });
                }
                for name in names {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..Default::default()
                    });
                }
            }
        }
        for url in rule.non_resource_urls.as_deref().unwrap_or_default() {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: one(url),
                ..Default::default()
            });
        }
    }
    out
}

/// Whether `owner` grants everything `piece` (a broken-down rule) does.
fn covers(owner: &PolicyRule, piece: &PolicyRule) -> bool {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let verbs_ok = piece.verbs.iter().all(|v| has(&owner.verbs, v));
    if !verbs_ok {
        return false;
    }
    let urls = list(&piece.non_resource_urls);
    if !urls.is_empty() {
        let owner_urls = list(&owner.non_resource_urls);
        return urls.iter().all(|u| {
            owner_urls.iter().any(|o| {
                o == "*"
                    || o == u
                    || o.strip_suffix('*')
                        .is_some_and(|p| u.strip_suffix('*').unwrap_or(u).starts_with(p))
            })
        });
    }
    let groups_ok = list(&piece.api_groups)
        .iter()
        .all(|g| has(&list(&owner.api_groups), g));
    let owner_resources = list(&owner.resources);
    let resources_ok = list(&piece.resources).iter().all(|r| {
        owner_resources.iter().any(|o| {
            o == "*"
                || o == r
                || o.strip_prefix("*/")
                    .is_some_and(|sub| r.split_once('/').is_some_and(|(_, rsub)| rsub == sub))
        })
    });
    let owner_names = list(&owner.resource_names);
    let names_ok = owner_names.is_empty()
        || list(&piece.resource_names)
            .iter()
            .all(|n| owner_names.contains(n))
            && !list(&piece.resource_names).is_empty();
    groups_ok && resources_ok && names_ok
}

#[cfg(test)]
mod tests {
    use super::super::ResourceAttributes;
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        let objects = [
            (
                "clusterroles",
                json!({"metadata": {"name": "view-pods"}, "rules": [
                    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
                    {"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]}]}),
            ),
            (
                "roles",
                json!({"metadata": {"name": "cm", "namespace": "team"}, "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get", "update"]}]}),
            ),
            (
                "clusterrolebindings",
                json!({"metadata": {"name": "ops"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view-pods"},
                    "subjects": [{"kind": "Group", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ),
            (
                "rolebindings",
                json!({"metadata": {"name": "sa", "namespace": "team"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
                    "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
            ),
            (
                "rolebindings",
                json!({"metadata": {"name": "dangling", "namespace": "team"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                    "subjects": [{"kind": "User", "name": "eve"}]}),
            ),
        ];
        for (resource, obj) in objects {
            p.insert(Object::decode(resource, obj.to_string().as_bytes()).expect("decode"));
        }
        p
    }

    fn resource(
        verb: &str,
        ns: &str,
        res: &str,
        sub: &str,
        name: &str,
    ) -> (String, ResourceAttributes) {
        (
            verb.into(),
            ResourceAttributes {
                group: String::new(),
                version: "v1".into(),
                resource: res.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            },
        )
    }

    fn decide(p: &Policy, u: &User, (verb, r): (String, ResourceAttributes)) -> Decision {
        p.authorize(&Attributes {
            user: u,
            verb: &verb,
            resource: Some(r),
            path: "",
        })
    }

    #[test]
    fn bindings_grant_their_roles() {
        let p = policy();
        let ops = user("ann", &["ops"]);
        let allowed = decide(&p, &ops, resource("list", "any", "pods", "", ""));
        assert_eq!(
            allowed,
            Decision::Allow(
                "RBAC: allowed by ClusterRoleBinding \"ops\" of ClusterRole \"view-pods\" to Group \"ops\"".into()
            )
        );
        assert!(decide(&p, &ops, resource("get", "x", "pods", "log", "p")).allowed());
        assert!(!decide(&p, &ops, resource("get", "x", "pods", "exec", "p")).allowed());
        assert!(!decide(&p, &ops, resource("delete", "x", "pods", "", "p")).allowed());
        let sa = user("system:serviceaccount:team:app", &[]);
        assert!(
            decide(
                &p,
                &sa,
                resource("get", "team", "configmaps", "", "settings")
            )
            .allowed()
        );
        assert!(!decide(&p, &sa, resource("get", "team", "configmaps", "", "other")).allowed());
        assert!(!decide(&p, &sa, resource("list", "team", "configmaps", "", "")).allowed());
        assert!(
            !decide(
                &p,
                &sa,
                resource("get", "prod", "configmaps", "", "settings")
            )
            .allowed()
        );
        let other_ns = user("system:serviceaccount:prod:app", &[]);
        assert!(
            !decide(
                &p,
                &other_ns,
                resource("get", "team", "configmaps", "", "settings")
            )
            .allowed()
        );
    }

    #[test]
    fn missing_roles_are_reported() {
        let p = policy();
        let eve = user("eve", &[]);
        assert_eq!(
            decide(&p, &eve, resource("get", "team", "pods", "", "x")),
            Decision::NoOpinion(
                "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into()
            )
        );
    }

    #[test]
    fn non_resource_urls() {
        let p = policy();
        let ops = user("ann", &["ops"]);
        let get = |path: &str| {
            p.authorize(&Attributes {
                user: &ops,
                verb: "get",
                resource: None,
                path,
            })
            .allowed()
        };
        assert!(get("/healthz"));
        assert!(get("/api/v1"));
        assert!(!get("/apis"));
        assert!(!get("/metrics"));
    }

    #[test]
    fn escalation_needs_every_piece_covered() {
        let rule =
            |v: serde_json::Value| -> PolicyRule { serde_json::from_value(v).expect("rule") };
        let owner = vec![
            rule(
                json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]}),
            ),
            rule(
                json!({"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["*"]}),
            ),
            rule(json!({"nonResourceURLs": ["/logs/*"], "verbs": ["get"]})),
        ];
        let ok = [
            rule(
                json!({"apiGroups": [""], "resources": ["pods", "services/status"], "verbs": ["get"]}),
            ),
            rule(
                json!({"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["delete"]}),
            ),
            rule(json!({"nonResourceURLs": ["/logs/a"], "verbs": ["get"]})),
        ];
        assert!(uncovered(&owner, &ok).is_empty());
        let too_much = [
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]})),
            rule(json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]})),
            rule(json!({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]})),
        ];
        let missing = uncovered(&owner, &too_much);
        assert_eq!(missing.len(), 3, "{missing:?}");
    }
}
