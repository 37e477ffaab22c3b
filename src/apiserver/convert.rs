//! Conversion between served versions of one resource and its storage version.
//! Most differ only in `apiVersion`; autoscaling/v1 HPAs are converted to and
//! from the stored autoscaling/v2 shape, events.k8s.io/v1 Events to and from
//! the stored core/v1 shape.

use serde_json::{Value, json};

use crate::api::registry::resources::ResourceType;

/// Turns a stored object into the version served at `rt`.
pub fn to_version(rt: &ResourceType, obj: &mut Value) {
    if rt.group == "autoscaling" && rt.version == "v1" {
        hpa_v2_to_v1(obj);
    }
    if rt.group == "events.k8s.io" {
        rename_fields(obj, EVENT_FIELDS, false);
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
}

/// Turns a request body for `rt` into the storage version's shape (but keeps
/// `apiVersion` as served; storage encoding sets it).
pub fn from_request(rt: &ResourceType, obj: &mut Value) {
    if rt.group == "autoscaling"
        && rt.version == "v1"
        && obj.get("apiVersion").and_then(Value::as_str) != Some("autoscaling/v2")
    {
        hpa_v1_to_v2(obj);
    }
    if rt.group == "events.k8s.io" && obj.get("apiVersion").and_then(Value::as_str) != Some("v1") {
        rename_fields(obj, EVENT_FIELDS, true);
    }
}

/// core/v1 Event field ⇄ events.k8s.io/v1 Event field.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Renames top-level fields: core names to events.k8s.io names, or back when `to_core`.
fn rename_fields(obj: &mut Value, fields: &[(&str, &str)], to_core: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    for (core, events) in fields {
        let (from, to) = if to_core {
            (events, core)
        } else {
            (core, events)
        };
        if let Some(value) = map.remove(*from) {
            map.insert((*to).to_string(), value);
        }
    }
}

/// Sets the storage version's `apiVersion`.
pub fn to_storage(rt: &ResourceType, obj: &mut Value) {
    let api_version = if rt.storage_group.is_empty() {
        rt.storage_version.clone()
    } else {
        format!("{}/{}", rt.storage_group, rt.storage_version)
    };
    obj["apiVersion"] = json!(api_version);
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
        );
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
        );
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let cpu = spec.remove("metrics").and_then(|m| {
            m.as_array()?
                .iter()
                .find(|m| m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .and_then(|m| m.pointer("/resource/target/averageUtilization").cloned())
        });
        spec.remove("behavior");
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = status.remove("currentMetrics").and_then(|m| {
            m.as_array()?
                .iter()
                .find(|m| m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .and_then(|m| m.pointer("/resource/current/averageUtilization").cloned())
        });
        status.remove("conditions");
        if let Some(cpu) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_round_trip() {
        let mut event = json!({"regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled"});
        rename_fields(&mut event, EVENT_FIELDS, true);
        assert_eq!(
            event,
            json!({"reason": "Pulled", "involvedObject": {"kind": "Pod", "name": "p"}, "message": "pulled"})
        );
        rename_fields(&mut event, EVENT_FIELDS, false);
        assert_eq!(event["note"], "pulled");
    }

    #[test]
    fn hpa_round_trip() {
        let mut v1 = json!({"spec": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        hpa_v1_to_v2(&mut v1);
        assert_eq!(
            v1["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        hpa_v2_to_v1(&mut v1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    }
}
