//! Facts about typed Pods shared by the scheduler, the controllers and the
//! kubelet (what upstream keeps in `pkg/api/v1/pod`).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

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

/// How long until the pod counts as available (Ready for `min_ready_seconds`):
/// `Some(0s)` when it already is, `None` when it is not Ready at all.
pub fn available_in(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    if min_ready_seconds <= 0 {
        return Some(std::time::Duration::ZERO);
    }
    let since = ready.last_transition_time.as_ref().map(|t| t.0)?;
    let at = since.as_millisecond() + i64::from(min_ready_seconds) * 1000;
    let wait = u64::try_from(at - now.as_millisecond()).unwrap_or(0);
    Some(std::time::Duration::from_millis(wait))
}

/// The pod is Ready and has been for `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    available_in(pod, min_ready_seconds, now) == Some(std::time::Duration::ZERO)
}

/// The pod is neither terminating nor finished: it counts toward a
/// controller's replicas.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_terminal(pod)
}

/// The owner reference marked as the object's controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The claims a pod's volumes name (`persistentVolumeClaim.claimName`).
pub fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
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
        let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        assert!(is_available(&pod, 0, now));
        let since: Pod = serde_json::from_value(serde_json::json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": Timestamp::from_second(now.as_second() - 3).unwrap().to_string()}]}}))
        .unwrap();
        assert!(is_available(&since, 2, now));
        assert!(!is_available(&since, 5, now));
        assert_eq!(available_in(&since, 5, now).map(|d| d.as_secs()), Some(2));
        let done: Pod =
            serde_json::from_value(serde_json::json!({"status": {"phase": "Failed"}})).unwrap();
        assert!(is_terminal(&done));
        assert!(!is_ready(&done));
    }
}
