//! Facts about typed Pods shared by the scheduler, the controllers and the
//! kubelet (what upstream keeps in `pkg/api/v1/pod`).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The pod has finished (Succeeded or Failed) and will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The owner reference marked as the object's controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_conditions_and_controllers_read_as_upstream() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"ownerReferences": [
                {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1"},
                {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": true}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        assert!(!is_terminal(&pod));
        assert!(is_ready(&pod));
        assert_eq!(
            controller_of(&pod.metadata).map(|o| o.uid.as_str()),
            Some("2")
        );
        let done: Pod =
            serde_json::from_value(serde_json::json!({"status": {"phase": "Failed"}})).unwrap();
        assert!(is_terminal(&done));
        assert!(!is_ready(&done));
    }
}
