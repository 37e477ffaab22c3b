//! ClusterRole aggregation (upstream's clusterrole-aggregation controller):
//! a ClusterRole with an `aggregationRule` gets, as its rules, the rules of
//! every ClusterRole its selectors match, so `admin`, `edit` and `view`
//! grow with the `aggregate-to-*` roles add-ons and CRDs bring.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::Context;
use crate::api::values::selectors::LabelSelector;

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let api = Api::<ClusterRole>::all(context.client.clone());
    let (roles, changes) = context.informers.cache::<ClusterRole>();
    let mut passes =
        crate::runtime::passes(changes, Duration::from_secs(300), Duration::from_millis(10));
    while passes.next().await.is_some() {
        pass(&api, &roles).await;
    }
}

async fn pass(api: &Api<ClusterRole>, roles: &Store<ClusterRole>) {
    let all = roles.state();
    for role in &all {
        let Some(want) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.as_deref().unwrap_or_default() == want.as_slice() {
            continue;
        }
        let patch = json!({"rules": want});
        if let Err(e) = api
            .patch(
                &role.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(err = %e, role = %role.name_any(), "aggregating cluster role");
        }
    }
}

/// The rules an aggregated role should hold: those of the roles its
/// selectors match, in name order, without repeats. None if not aggregated.
fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .clone()?;
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .map(|s| LabelSelector::from_object(&s))
        .collect();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.name_any() != role.name_any())
        .filter(|r| {
            let labels = serde_json::to_value(r.labels()).ok();
            selectors.iter().any(|s| s.matches(labels.as_ref()))
        })
        .collect();
    sources.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for source in sources {
        for rule in source.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).expect("role"))
    }

    #[test]
    fn aggregates_matching_roles_in_name_order() {
        let view = role(
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}, "rules": []}),
        );
        let b = role(
            json!({"metadata": {"name": "b", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        );
        let a = role(
            json!({"metadata": {"name": "a", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": ["x.io"], "resources": ["widgets"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        );
        let other = role(
            json!({"metadata": {"name": "c"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
        );
        let all = vec![view.clone(), b.clone(), a, other];
        let rules = aggregated_rules(&view, &all).expect("aggregated");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["widgets".to_string()][..])
        );
        assert_eq!(aggregated_rules(&b, &all), None);
    }
}
