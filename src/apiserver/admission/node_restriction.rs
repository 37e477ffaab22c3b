//! NodeRestriction (upstream's admission plugin): what the node authorizer
//! lets a kubelet write, this narrows to its own objects: its own Node (no
//! new taints after registration, no labels outside the kubelet's set), the
//! status of pods bound to it, and tokens bound to those pods.

use serde_json::Value;

use crate::api::ApiError;
use crate::api::values::meta;
use crate::api::values::nodes::kubelet_may_set_label;

/// A write a kubelet makes, as admission sees it.
pub struct Write<'a> {
    /// The kubelet's node.
    pub node: &'a str,
    /// create, update, patch or delete.
    pub verb: &'a str,
    /// Resource and subresource ("" for none).
    pub resource: &'a str,
    /// Subresource ("" for none).
    pub subresource: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object after the write (for deletes: the object deleted).
    pub new: &'a Value,
    /// The object before (updates).
    pub old: Option<&'a Value>,
}

/// Admits or refuses a kubelet's write.
pub fn admit(w: &Write) -> Result<(), ApiError> {
    let node = w.node;
    let deny =
        |resource: &str, detail: String| Err(ApiError::forbidden("", resource, w.name, detail));
    match (w.resource, w.subresource) {
        ("nodes", _) => {
            if w.name != node {
                return deny(
                    "nodes",
                    format!(
                        "node \"{node}\" is not allowed to modify node \"{}\"",
                        w.name
                    ),
                );
            }
            let labels = |v: &Value| {
                v.pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            let new = labels(w.new);
            let old = w.old.map(labels).unwrap_or_default();
            let mut changed: Vec<&String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(v))
                .map(|(k, _)| k)
                .chain(old.keys().filter(|k| !new.contains_key(*k)))
                .filter(|k| !kubelet_may_set_label(k))
                .collect();
            changed.sort();
            changed.dedup();
            if !changed.is_empty() {
                let list = changed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let detail = match w.old {
                    None => format!(
                        "node \"{node}\" is not allowed to set the following labels: {list}"
                    ),
                    Some(_) => format!("node \"{node}\" is not allowed to modify labels: {list}"),
                };
                return deny("nodes", detail);
            }
            if let Some(old) = w.old
                && w.subresource.is_empty()
                && old.pointer("/spec/taints") != w.new.pointer("/spec/taints")
            {
                return deny(
                    "nodes",
                    format!("node \"{node}\" is not allowed to modify taints"),
                );
            }
            Ok(())
        }
        ("pods", "") => match w.verb {
            "create" => {
                let mirror = w
                    .new
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    return deny(
                        "pods",
                        format!(
                            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
                        ),
                    );
                }
                if meta::meta_str(w.new, "namespace").is_empty()
                    || w.new.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node)
                {
                    return deny(
                        "pods",
                        format!(
                            "node \"{node}\" can only create pods with spec.nodeName set to itself"
                        ),
                    );
                }
                Ok(())
            }
            "delete" => bound_here(w, "delete pods"),
            _ => deny(
                "pods",
                format!("node \"{node}\" can only update pod status"),
            ),
        },
        ("pods", "status") => bound_here(w, "update pod status for pods"),
        ("pods", "eviction") => bound_here(w, "evict pods"),
        ("serviceaccounts", "token") => Ok(()),
        _ => Ok(()),
    }
}

fn bound_here(w: &Write, what: &str) -> Result<(), ApiError> {
    let bound = w
        .old
        .unwrap_or(w.new)
        .pointer("/spec/nodeName")
        .and_then(Value::as_str);
    if bound == Some(w.node) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "",
        "pods",
        w.name,
        format!(
            "node \"{}\" can only {what} with spec.nodeName set to itself",
            w.node
        ),
    ))
}

/// Checks a kubelet's token request: bound to a pod, and that pod on its node.
pub fn admit_token(
    node: &str,
    bound_pod_node: Option<&str>,
    bound_kind: &str,
) -> Result<(), ApiError> {
    if bound_kind != "Pod" {
        return Err(ApiError::forbidden(
            "",
            "serviceaccounts",
            "",
            format!("node \"{node}\" requested token not bound to a pod"),
        ));
    }
    if bound_pod_node != Some(node) {
        return Err(ApiError::forbidden(
            "",
            "serviceaccounts",
            "",
            format!("node \"{node}\" requested token bound to a pod scheduled on a different node"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_write<'a>(new: &'a Value, old: Option<&'a Value>, name: &'a str) -> Write<'a> {
        Write {
            node: "edge-1",
            verb: if old.is_some() { "update" } else { "create" },
            resource: "nodes",
            subresource: "",
            name,
            new,
            old,
        }
    }

    #[test]
    fn own_node_only_and_no_role_labels() {
        let node =
            json!({"metadata": {"name": "edge-1", "labels": {"kubernetes.io/hostname": "edge-1"}}});
        assert!(admit(&node_write(&node, None, "edge-1")).is_ok());
        let err = admit(&node_write(&node, None, "edge-2")).expect_err("other node");
        assert_eq!(
            err.to_string(),
            "nodes \"edge-2\" is forbidden: node \"edge-1\" is not allowed to modify node \"edge-2\""
        );
        let role = json!({"metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/control-plane": "true"}}});
        let err = admit(&node_write(&role, Some(&node), "edge-1")).expect_err("role label");
        assert!(
            err.to_string().ends_with(
                "is not allowed to modify labels: node-role.kubernetes.io/control-plane"
            ),
            "{err}"
        );
        // Labels someone else set stay untouched: no complaint.
        assert!(admit(&node_write(&role, Some(&role), "edge-1")).is_ok());
        let tainted = json!({"metadata": {"name": "edge-1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert!(admit(&node_write(&tainted, None, "edge-1")).is_ok());
        assert!(admit(&node_write(&tainted, Some(&node), "edge-1")).is_err());
    }

    #[test]
    fn pods_bound_here_only() {
        let mine =
            json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "edge-1"}});
        let theirs =
            json!({"metadata": {"name": "q", "namespace": "d"}, "spec": {"nodeName": "edge-2"}});
        let status = |pod| Write {
            node: "edge-1",
            verb: "patch",
            resource: "pods",
            subresource: "status",
            name: "p",
            new: pod,
            old: Some(pod),
        };
        assert!(admit(&status(&mine)).is_ok());
        assert!(admit(&status(&theirs)).is_err());
        let create = Write {
            node: "edge-1",
            verb: "create",
            resource: "pods",
            subresource: "",
            name: "p",
            new: &mine,
            old: None,
        };
        assert!(admit(&create).is_err());
        assert!(admit_token("edge-1", Some("edge-1"), "Pod").is_ok());
        assert!(admit_token("edge-1", Some("edge-2"), "Pod").is_err());
        assert!(admit_token("edge-1", None, "Secret").is_err());
    }
}
