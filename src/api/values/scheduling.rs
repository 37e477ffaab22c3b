//! Where a pod may run, as upstream's scheduling helpers decide it
//! (k8s.io/component-helpers/scheduling): node selector terms, label
//! selectors, taints and tolerations, and the node filter both the
//! scheduler and the DaemonSet controller apply. Pure functions over API
//! values.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why a node was filtered out (counted per reason in the pod's condition).
pub type Reason = String;

/// A toleration matching a taint (empty key with Exists matches every taint).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn requirement_matches(operator: &str, values: &[String], value: Option<&String>) -> bool {
    match operator {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A node selector term: all its expressions and fields hold.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let no_labels = BTreeMap::new();
    let node_labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let expressions = term.match_expressions.iter().flatten().all(|r| {
        requirement_matches(
            &r.operator,
            r.values.as_deref().unwrap_or_default(),
            node_labels.get(&r.key),
        )
    });
    let name = node.metadata.name.clone().unwrap_or_default();
    let fields = term.match_fields.iter().flatten().all(|r| {
        let value = (r.key == "metadata.name").then(|| name.clone());
        requirement_matches(
            &r.operator,
            r.values.as_deref().unwrap_or_default(),
            value.as_ref(),
        )
    });
    (term.match_expressions.is_some() || term.match_fields.is_some()) && expressions && fields
}

/// A label selector matching labels (empty selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    super::selectors::LabelSelector::from_typed(selector).matches_labels(labels)
}

/// Whether `pod` may go to `node` at all: the node is schedulable and
/// ready (or the pod tolerates that), matches the pod's node selector and
/// required node affinity, and has no taint the pod does not tolerate.
/// Resources aside, this is also where a DaemonSet's pods may run.
pub fn node_allows(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let default_spec = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let default_node_spec = Default::default();
    let node_spec = node.spec.as_ref().unwrap_or(&default_node_spec);
    let no_tolerations = Vec::new();
    let tolerations = spec.tolerations.as_ref().unwrap_or(&no_tolerations);
    let tolerated = |key: &str, effect: &str| {
        let taint = Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        tolerations.iter().any(|t| tolerates(t, &taint))
    };
    if node_spec.unschedulable == Some(true)
        && !tolerated("node.kubernetes.io/unschedulable", "NoSchedule")
    {
        return Err("node(s) were unschedulable".into());
    }
    let ready = crate::api::values::nodes::is_ready(node);
    if !ready && !tolerated("node.kubernetes.io/not-ready", "NoSchedule") {
        return Err("node(s) were not ready".into());
    }
    let no_labels = BTreeMap::new();
    let node_labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    if let Some(selector) = &spec.node_selector
        && !selector.iter().all(|(k, v)| node_labels.get(k) == Some(v))
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required
        && !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    for taint in node_spec.taints.iter().flatten() {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
        {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(())
}
