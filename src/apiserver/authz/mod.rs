//! Authorization: after authentication and before admission, every request
//! is judged by the union of upstream's authorizers in upstream's order:
//! members of `system:masters` are always allowed, then the node authorizer
//! (kubelets), then RBAC. Whatever none allows gets a 403 with upstream's
//! message.

pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod policy;
pub mod rbac;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::authn::User;
use super::request::RequestInfo;
use crate::api::ApiError;

/// The group whose members may do anything, whatever the policy says.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// What is asked (upstream's authorizer.Attributes).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a User,
    /// The verb (get, list, watch, create, update, patch, delete,
    /// deletecollection, impersonate, bind, escalate, …; for paths the method).
    pub verb: &'a str,
    /// The resource, for resource requests.
    pub resource: Option<ResourceAttributes>,
    /// The path, for non-resource requests.
    pub path: &'a str,
}

pub use super::request::ResourceAttributes;

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed, and why.
    Allow(String),
    /// Denied outright (no later authorizer is asked), and why.
    Deny(String),
    /// Not this authorizer's to allow; the reason, if any, is kept for the 403.
    NoOpinion(String),
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Rules a user holds in a namespace (SelfSubjectRulesReview).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Rules naming resources.
    pub resource_rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
    /// Rules naming paths.
    pub non_resource_rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
    /// Whether some rules could not be read.
    pub incomplete: bool,
    /// Why they could not.
    pub evaluation_error: String,
}

/// One authorizer of `--authorization-mode` (upstream's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The node authorizer.
    Node,
    /// Role-based access control.
    Rbac,
    /// Everything is allowed (for benchmarks and trusted labs only).
    AlwaysAllow,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Node" => Ok(Mode::Node),
            "RBAC" => Ok(Mode::Rbac),
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            other => Err(format!(
                "unknown authorization mode {other:?}: kelp has Node, RBAC, AlwaysAllow"
            )),
        }
    }
}

/// The union of kelp's authorizers.
pub struct Authorizer {
    rbac: Arc<policy::RbacPolicy>,
    nodes: Arc<node::NodeGraph>,
    modes: Vec<Mode>,
}

impl Authorizer {
    /// Authorizers over the given policy mirrors, Node then RBAC (upstream's
    /// and k3s's default).
    pub fn new(rbac: Arc<policy::RbacPolicy>, nodes: Arc<node::NodeGraph>) -> Self {
        Self {
            rbac,
            nodes,
            modes: vec![Mode::Node, Mode::Rbac],
        }
    }

    /// The same authorizers asked in `modes`' order (`--authorization-mode`).
    pub fn with_modes(self, modes: Vec<Mode>) -> Self {
        Self { modes, ..self }
    }

    /// The RBAC policy in force (escalation checks and reviews read it).
    pub fn rbac(&self) -> &Arc<policy::RbacPolicy> {
        &self.rbac
    }

    /// What pods on each node use (the node authorizer's graph).
    pub fn nodes(&self) -> &Arc<node::NodeGraph> {
        &self.nodes
    }

    /// Decides a request.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            return Decision::Allow(String::new());
        }
        let mut reasons = Vec::new();
        for mode in &self.modes {
            let decision = match mode {
                Mode::Node => node::authorize(&self.nodes, attrs),
                Mode::Rbac => self.rbac.authorize(attrs),
                Mode::AlwaysAllow => Decision::Allow(String::new()),
            };
            match decision {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason)
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    /// The rules `user` holds in `namespace`.
    pub fn rules_for(&self, user: &User, namespace: &str) -> Rules {
        let (rules, errors) = self.rbac.rules_for(user, Some(namespace));
        let mut out = Rules {
            incomplete: !errors.is_empty(),
            evaluation_error: errors.join(", "),
            ..Default::default()
        };
        for rule in rules {
            if rule.resources.as_ref().is_some_and(|r| !r.is_empty()) {
                out.resource_rules.push(rule.clone());
            }
            if rule
                .non_resource_urls
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                out.non_resource_rules.push(rule);
            }
        }
        out
    }
}

/// kelp's in-process components: kube-system service accounts and
/// `system:` users other than anonymous and node identities.
fn is_builtin(user: &User) -> bool {
    user.name.starts_with("system:serviceaccount:kube-system:")
        || (user.name.starts_with("system:")
            && !user.name.starts_with("system:serviceaccount:")
            && !user.name.starts_with("system:node:")
            && user.name != "system:anonymous")
}

/// The attributes of a parsed request.
pub fn attributes<'a>(user: &'a User, info: &'a RequestInfo) -> Attributes<'a> {
    Attributes {
        user,
        verb: &info.verb,
        resource: info.resource_attributes(),
        path: &info.path,
    }
}

/// The 403 for a request no authorizer allowed (upstream's wording).
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let user = &attrs.user.name;
    let mut detail = match &attrs.resource {
        None => format!(
            "User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        ),
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                attrs.verb, r.group
            )
        }
    };
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    match &attrs.resource {
        None => ApiError::forbidden("", "", "", detail),
        Some(r) => ApiError::forbidden(&r.group, &r.resource, &r.name, detail),
    }
}

/// The decision on a request, left on its response for the audit log.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Allowed or forbidden.
    pub allowed: bool,
    /// The authorizer's reason.
    pub reason: String,
}

/// Middleware: lets the request through only if the user may make it.
pub async fn authorize(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let (Some(user), Some(info)) = (
        req.extensions().get::<User>(),
        req.extensions().get::<Arc<RequestInfo>>(),
    ) else {
        return ApiError::Unauthorized.into_response();
    };
    let attrs = attributes(user, info);
    match state.authorizer.authorize(&attrs) {
        Decision::Allow(reason) => {
            let mut response = next.run(req).await;
            response.extensions_mut().insert(Verdict {
                allowed: true,
                reason,
            });
            response
        }
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            if is_builtin(user) {
                // kelp's own components hold upstream's rights; a denial is a bug.
                tracing::warn!(user = %user.name, verb = attrs.verb, path = %info.path, reason, "a built-in component was forbidden");
            } else {
                tracing::debug!(user = %user.name, verb = attrs.verb, path = %info.path, reason, "forbidden");
            }
            let mut response = forbidden(&attrs, &reason).into_response();
            response.extensions_mut().insert(Verdict {
                allowed: false,
                reason,
            });
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_as_upstream() {
        let sa = User {
            name: "system:serviceaccount:default:default".into(),
            groups: vec![],
        };
        let attrs = Attributes {
            user: &sa,
            verb: "list",
            resource: Some(ResourceAttributes {
                resource: "pods".into(),
                namespace: "kube-system".into(),
                ..Default::default()
            }),
            path: "/api/v1/namespaces/kube-system/pods",
        };
        assert_eq!(
            forbidden(&attrs, "").to_string(),
            "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\""
        );
        let attrs = Attributes {
            verb: "get",
            resource: Some(ResourceAttributes {
                group: "apps".into(),
                resource: "deployments".into(),
                subresource: "scale".into(),
                name: "web".into(),
                ..Default::default()
            }),
            ..attrs
        };
        let err = forbidden(&attrs, "");
        assert_eq!(
            err.to_string(),
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:default:default\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(err.status()["details"]["kind"], "deployments");
        let path = Attributes {
            resource: None,
            path: "/metrics",
            ..attrs
        };
        assert_eq!(
            forbidden(&path, "").to_string(),
            "forbidden: User \"system:serviceaccount:default:default\" cannot get path \"/metrics\""
        );
    }
}
