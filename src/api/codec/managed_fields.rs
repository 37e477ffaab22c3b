//! `metadata.managedFields`: which manager owns which fields (FieldsV1, with
//! lists treated as atomic leaves). Server-side apply reads it for conflicts;
//! every other write records the fields it changed as an `Update` entry.

use serde_json::{Map, Value, json};

use crate::api::values::meta;

/// Records that `manager` changed `changed` (FieldsV1) with an Update: the
/// fields move to its entry and leave every other manager's.
pub fn record_update(
    obj: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    changed: &Value,
) {
    if changed.as_object().is_none_or(Map::is_empty) {
        return;
    }
    let mut managed: Vec<Value> = meta::metadata(obj)
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |m: &Value| {
        m.get("manager").and_then(Value::as_str) == Some(manager)
            && m.get("operation").and_then(Value::as_str) == Some("Update")
            && m.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut mine = managed
        .iter()
        .find(|m| is_mine(m))
        .and_then(|m| m.get("fieldsV1"))
        .cloned()
        .unwrap_or(json!({}));
    for other in managed.iter_mut().filter(|m| !is_mine(m)) {
        if let Some(fields) = other.get_mut("fieldsV1") {
            subtract(fields, changed);
        }
    }
    managed.retain(|m| {
        !is_mine(m)
            && m.get("fieldsV1")
                .and_then(Value::as_object)
                .is_some_and(|f| !f.is_empty())
    });
    union(&mut mine, changed);
    let mut entry = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": meta::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": mine,
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    managed.push(entry);
    meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(managed));
}

/// FieldsV1 of the leaves of `new` that differ from `old` (all of them when
/// `old` is null). `apiVersion`, `kind` and server-set metadata are nobody's.
pub fn changed_fields(new: &Value, old: &Value) -> Value {
    let mut out = Map::new();
    for (key, child) in new.as_object().into_iter().flatten() {
        if matches!(key.as_str(), "apiVersion" | "kind") {
            continue;
        }
        let before = old.get(key).unwrap_or(&Value::Null);
        if key == "metadata" {
            let meta = metadata_changes(child, before);
            if !meta.is_empty() {
                out.insert("f:metadata".into(), Value::Object(meta));
            }
        } else if child != before {
            out.insert(format!("f:{key}"), nested_changes(child, before));
        }
    }
    Value::Object(out)
}

/// The FieldsV1 a whole configuration sets.
pub fn fields_of(value: &Value) -> Value {
    changed_fields(value, &Value::Null)
}

fn metadata_changes(new: &Value, old: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, child) in new.as_object().into_iter().flatten() {
        let before = old.get(key).unwrap_or(&Value::Null);
        if !SERVER_OWNED.contains(&key.as_str()) && child != before {
            out.insert(format!("f:{key}"), nested_changes(child, before));
        }
    }
    out
}

fn nested_changes(new: &Value, old: &Value) -> Value {
    let mut out = Map::new();
    for (key, child) in new.as_object().into_iter().flatten() {
        let before = old.get(key).unwrap_or(&Value::Null);
        if child != before {
            out.insert(format!("f:{key}"), nested_changes(child, before));
        }
    }
    Value::Object(out)
}

/// Metadata the server sets; nobody owns it.
const SERVER_OWNED: &[&str] = &[
    "name",
    "namespace",
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn union(into: &mut Value, from: &Value) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (key, sub) in from {
        match into.get_mut(key) {
            Some(existing) if existing.as_object().is_some_and(|e| !e.is_empty()) => {
                union(existing, sub)
            }
            _ => {
                into.insert(key.clone(), sub.clone());
            }
        }
    }
}

/// Leaf paths of a FieldsV1 set.
pub fn leaves(fields: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match fields.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.trim_start_matches("f:").to_string());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Fields `manager`'s applied configuration would change that other managers own:
/// (other manager, dotted path) pairs.
pub fn conflicts(
    managed: &[Value],
    manager: &str,
    owned: &Value,
    applied: &Value,
    live: &Value,
) -> Vec<(String, String)> {
    let mut mine = Vec::new();
    leaves(owned, &mut Vec::new(), &mut mine);
    let mut found = Vec::new();
    for other in managed {
        let name = other.get("manager").and_then(Value::as_str).unwrap_or("");
        if name == manager {
            continue;
        }
        let mut theirs = Vec::new();
        leaves(
            other.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut theirs,
        );
        for path in &mine {
            if theirs.contains(path) && lookup(applied, path) != lookup(live, path) {
                found.push((name.to_string(), path.join(".")));
            }
        }
    }
    found
}

/// Removes from `obj` the leaves the manager owned before but no longer applies.
pub fn remove_dropped(obj: &mut Value, previous: &Value, now: &Value) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    leaves(previous, &mut Vec::new(), &mut before);
    leaves(now, &mut Vec::new(), &mut after);
    for path in before.into_iter().filter(|p| !after.contains(p)) {
        if let Some((last, parents)) = path.split_last()
            && let Some(parent) = parents
                .iter()
                .try_fold(&mut *obj, |v, k| v.get_mut(k))
                .and_then(Value::as_object_mut)
        {
            parent.remove(last);
        }
    }
}

/// Removes `owned` leaves from another manager's set (force takes ownership).
pub fn subtract(fields: &mut Value, owned: &Value) {
    let (Some(map), Some(owned)) = (fields.as_object_mut(), owned.as_object()) else {
        return;
    };
    for (key, sub) in owned {
        let remove = match map.get_mut(key) {
            Some(child) if sub.as_object().is_some_and(|s| !s.is_empty()) => {
                subtract(child, sub);
                child.as_object().is_some_and(Map::is_empty)
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_conflicts() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v2"}});
        let owned = fields_of(&applied);
        assert_eq!(
            owned,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:data": {"f:k": {}}})
        );
        let live = json!({"metadata": {"name": "x"}, "data": {"k": "v1"}});
        let managed = vec![
            json!({"manager": "other", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}}),
        ];
        assert_eq!(
            conflicts(&managed, "me", &owned, &applied, &live),
            [("other".to_string(), "data.k".to_string())]
        );
        let mut theirs = json!({"f:data": {"f:k": {}, "f:j": {}}});
        subtract(&mut theirs, &owned);
        assert_eq!(theirs, json!({"f:data": {"f:j": {}}}));
    }

    #[test]
    fn dropped_fields_are_removed() {
        let mut obj = json!({"data": {"a": "1", "b": "2"}});
        remove_dropped(
            &mut obj,
            &json!({"f:data": {"f:a": {}, "f:b": {}}}),
            &json!({"f:data": {"f:a": {}}}),
        );
        assert_eq!(obj, json!({"data": {"a": "1"}}));
    }
}
