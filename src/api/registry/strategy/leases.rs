//! coordination.k8s.io: Leases.

use serde_json::Value;

use super::Strategy;

/// Whether an update to a Lease only renews it: nothing but `spec.renewTime`
/// (and the bookkeeping every write moves, the resourceVersion and the
/// managed-fields timestamps) differs. Such a write may be coalesced: a
/// crash that loses it leaves the previous renewal, which holders and
/// observers judge by their own clocks (upstream's leader election and node
/// lifecycle), not by how old the stored renewTime is.
pub fn renewal_only(old: &Value, new: &Value) -> bool {
    let strip = |lease: &Value| {
        let mut lease = lease.clone();
        if let Some(spec) = lease.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("renewTime");
        }
        if let Some(meta) = lease.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            for entry in meta
                .get_mut("managedFields")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("time");
                }
            }
        }
        lease
    };
    old.pointer("/spec/renewTime") != new.pointer("/spec/renewTime") && strip(old) == strip(new)
}

/// Leases: a renewal alone may be coalesced.
#[derive(Debug)]
pub struct Leases;

impl Strategy for Leases {
    fn coalescible(&self, new: &Value, old: &Value) -> bool {
        renewal_only(old, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(holder: &str, renewed: &str, managed_at: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": renewed,
                         "managedFields": [{"manager": "kubelet", "operation": "Update", "time": managed_at}]},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40, "renewTime": renewed},
        })
    }

    #[test]
    fn only_a_renewal_may_be_coalesced() {
        let old = lease("n1", "2026-12-05T10:00:00.000000Z", "2026-12-05T10:00:00Z");
        let renewed = lease("n1", "2026-12-05T10:00:10.000000Z", "2026-12-05T10:00:10Z");
        assert!(renewal_only(&old, &renewed));
        // A new holder (leader election changing hands) is a real change.
        let taken = lease(
            "other",
            "2026-12-05T10:00:10.000000Z",
            "2026-12-05T10:00:10Z",
        );
        assert!(!renewal_only(&old, &taken));
        // So is any other field, and a write that renews nothing.
        let mut longer = renewed.clone();
        longer["spec"]["leaseDurationSeconds"] = json!(60);
        assert!(!renewal_only(&old, &longer));
        assert!(!renewal_only(&old, &old));
    }
}
