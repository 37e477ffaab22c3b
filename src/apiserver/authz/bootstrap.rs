//! The default RBAC policy (upstream's bootstrap roles and bindings, plus
//! k3s's for the cluster DNS), reconciled into the store at every start as
//! upstream does: missing objects are created; those annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get back any rule or
//! subject they lost, and keep whatever an administrator added.

use std::sync::OnceLock;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{Value, json};

use crate::api::{ApiError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::handlers::{self, Request};

const POLICY: &str = include_str!("bootstrap_policy.yaml");

/// The annotation that lets the server restore a default object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The default objects, parsed once.
pub fn objects() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        serde_yaml_ng::Deserializer::from_str(POLICY)
            .filter_map(|doc| {
                let value: Value = serde::Deserialize::deserialize(doc).ok()?;
                value.is_object().then_some(value)
            })
            .collect()
    })
}

/// The rules of a default ClusterRole (empty if there is none by that name).
pub fn cluster_role_rules(name: &str) -> Vec<PolicyRule> {
    objects()
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
        .and_then(|o| serde_json::from_value(o["rules"].clone()).ok())
        .unwrap_or_default()
}

fn resource_of(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "RoleBinding" => "rolebindings",
        _ => return None,
    })
}

/// Creates missing defaults and restores what auto-updated ones lost.
pub async fn reconcile(state: &ApiState) -> Result<(), ApiError> {
    let (mut created, mut restored) = (0, 0);
    for expected in objects() {
        let Some(resource) = resource_of(expected["kind"].as_str().unwrap_or("")) else {
            continue;
        };
        let namespace = expected["metadata"]["namespace"].as_str();
        let name = meta::name(expected);
        let Some(req) = handlers::system_request(
            state,
            "rbac.authorization.k8s.io",
            resource,
            namespace,
            Some(name),
        ) else {
            continue;
        };
        match handlers::load(state, &req).await {
            Err(ApiError::NotFound { .. }) => {
                let mut obj = expected.clone();
                handlers::create::create_object(state, &req, &mut obj).await?;
                created += 1;
            }
            Err(e) => return Err(e),
            Ok((current, kv)) => {
                if current["metadata"]["annotations"][AUTOUPDATE] == "false" {
                    continue;
                }
                if let Some(merged) = merge(&current, expected) {
                    update(state, &req, merged, &current, kv.mod_revision).await?;
                    restored += 1;
                }
            }
        }
    }
    if created + restored > 0 {
        tracing::info!(created, restored, "reconciled the default RBAC policy");
    }
    Ok(())
}

async fn update(
    state: &ApiState,
    req: &Request,
    new: Value,
    old: &Value,
    revision: i64,
) -> Result<(), ApiError> {
    handlers::update::write_update(state, req, new, old, revision, false).await?;
    Ok(())
}

/// `current` with what `expected` has and it lacks: rules, subjects,
/// labels, annotations, aggregation selectors. None if nothing is missing.
fn merge(current: &Value, expected: &Value) -> Option<Value> {
    let mut merged = current.clone();
    for list in ["rules", "subjects"] {
        let Some(want) = expected[list].as_array() else {
            continue;
        };
        let have = merged[list].as_array().cloned().unwrap_or_default();
        let mut out = have.clone();
        out.extend(want.iter().filter(|w| !have.contains(w)).cloned());
        if out.len() != have.len() {
            merged[list] = Value::Array(out);
        }
    }
    if let Some(selectors) = expected.pointer("/aggregationRule/clusterRoleSelectors")
        && let Some(want) = selectors.as_array()
    {
        let have = merged
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = have.clone();
        out.extend(want.iter().filter(|w| !have.contains(w)).cloned());
        if out.len() != have.len() {
            merged["aggregationRule"] = json!({"clusterRoleSelectors": out});
        }
    }
    for map in ["labels", "annotations"] {
        for (k, v) in expected["metadata"][map].as_object().into_iter().flatten() {
            if merged["metadata"][map].get(k).is_none() {
                if !merged["metadata"][map].is_object() {
                    merged["metadata"][map] = json!({});
                }
                merged["metadata"][map][k] = v.clone();
            }
        }
    }
    (merged != *current).then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_and_binds_only_known_roles() {
        let objects = objects();
        assert!(objects.len() > 100, "{} objects", objects.len());
        let named = |kind: &str, name: &str| {
            objects
                .iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        };
        for o in objects {
            assert_eq!(o["metadata"]["annotations"][AUTOUPDATE], "true", "{o}");
            if let Some(role) = o.get("roleRef") {
                let kind = role["kind"].as_str().unwrap_or("");
                assert!(named(kind, role["name"].as_str().unwrap_or("")), "{o}");
            }
            if o["kind"] == "ClusterRole" || o["kind"] == "Role" {
                let rules: Result<Vec<PolicyRule>, _> = serde_json::from_value(o["rules"].clone());
                assert!(rules.is_ok(), "{o}");
            }
        }
        assert!(!cluster_role_rules("system:node").is_empty());
        assert!(!cluster_role_rules("cluster-admin").is_empty());
    }

    #[test]
    fn merge_restores_what_was_lost_and_keeps_additions() {
        let expected =
            json!({"metadata": {"name": "r", "labels": {"a": "1"}}, "rules": [{"verbs": ["get"]}]});
        let edited = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["list"]}]});
        let merged = merge(&edited, &expected).expect("changed");
        assert_eq!(
            merged["rules"],
            json!([{"verbs": ["list"]}, {"verbs": ["get"]}])
        );
        assert_eq!(merged["metadata"]["labels"]["a"], "1");
        assert_eq!(merge(&merged, &expected), None);
    }
}
