//! Metadata rules every resource shares (upstream's BeforeCreate/BeforeUpdate):
//! names, namespaces, uid, timestamps, generation. Resource-specific rules are
//! in `strategy`.

use serde_json::{Value, json};

use super::resources::ResourceType;
use super::strategy;
use crate::api::values::meta::{
    DNS1123_SUBDOMAIN_MSG, dns_label, dns_subdomain, metadata, metadata_mut, name, now,
    random_suffix,
};
use crate::api::{ApiError, FieldError};

/// Common rules for a new object, then the resource's strategy: identity,
/// name (or generateName), namespace, timestamps, generation, defaults, validation.
pub fn before_create(
    rt: &ResourceType,
    obj: &mut Value,
    path_namespace: Option<&str>,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    check_type(rt, obj)?;
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    let meta = metadata_mut(obj);
    if rt.namespaced {
        let ns = path_namespace.unwrap_or("default");
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let generated = format!("{}{}", truncate_prefix(prefix), random_suffix());
                meta.insert("name".into(), json!(generated));
            }
            _ => {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    vec![FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
        }
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    if rt.tracks_generation || rt.custom.is_some() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    strategy::prepare_for_create(rt, obj);
    strategy::default(rt, obj);
    validate_created(rt, obj)
}

/// The checks every new object passes (again after an admission webhook changed it).
pub fn validate_created(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let mut causes = validate_metadata(rt, obj);
    causes.extend(strategy::validate(rt, obj));
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, name(obj), causes));
    }
    Ok(())
}

/// The object as `meta.k8s.io/v1` PartialObjectMetadata: its metadata
/// only (metadata-only lists, gets and watches; Table rows).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Common rules for replacing `old` with `new`: identity and system fields carry
/// over, generation follows spec, then the strategy's update rules.
pub fn before_update(
    rt: &ResourceType,
    new: &mut Value,
    old: &Value,
    status_only: bool,
) -> Result<(), ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    check_type(rt, new)?;
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    let old_meta = metadata(old).clone();
    if name(new) != name(old) {
        let given = json!(name(new));
        return Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            name(old),
            vec![FieldError::invalid(
                "metadata.name",
                &given,
                "field is immutable",
            )],
        ));
    }
    let meta = metadata_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("selfLink");
    if status_only {
        strategy::prepare_for_status_update(rt, new, old);
    } else {
        strategy::prepare_for_update(rt, new, old);
        strategy::default(rt, new);
    }
    if (rt.tracks_generation || rt.custom.is_some()) && spec_changed(rt, new, old) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        metadata_mut(new).insert("generation".into(), json!(generation));
    }
    validate_after_strategy(rt, new, old)
}

/// The checks every update ends with (also after a subresource's own rules).
pub fn validate_after_strategy(
    rt: &ResourceType,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let mut causes = validate_metadata(rt, new);
    causes.extend(strategy::validate(rt, new));
    causes.extend(strategy::validate_update(rt, new, old));
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, name(new), causes));
    }
    Ok(())
}

/// Whether what `generation` tracks changed: `spec` for built-ins, everything but
/// metadata and status for custom resources.
fn spec_changed(rt: &ResourceType, new: &Value, old: &Value) -> bool {
    if rt.custom.is_some() {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(map) = v.as_object_mut() {
                map.remove("metadata");
                map.remove("status");
            }
            v
        };
        return strip(new) != strip(old);
    }
    new.get("spec") != old.get("spec")
}

fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(given) = obj.get("apiVersion").and_then(Value::as_str)
        && !given.is_empty()
        && given != rt.api_version()
    {
        // Other served versions of the same group are converted by the caller.
        let same_group = given.split_once('/').map(|(g, _)| g).unwrap_or("") == rt.group;
        if !same_group {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
    }
    if let Some(given) = obj.get("kind").and_then(Value::as_str)
        && !given.is_empty()
        && given != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let name = name(obj);
    let problem = match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "namespaces") | ("", "services") => dns_label(name),
        ("rbac.authorization.k8s.io", _) => path_segment(name),
        _ if rt.custom.is_some() => dns_subdomain(name),
        _ => dns_subdomain(name),
    };
    if let Some(problem) = problem {
        causes.push(FieldError::invalid("metadata.name", &json!(name), &problem));
    }
    for field in ["labels", "annotations"] {
        if let Some(map) = metadata(obj).get(field) {
            match map.as_object() {
                Some(map) => {
                    for (key, value) in map {
                        if !value.is_string() {
                            causes.push(FieldError::invalid(
                                format!("metadata.{field}"),
                                value,
                                "must be a string",
                            ));
                        } else if field == "labels"
                            && let Some(p) = label_value(value.as_str().unwrap_or(""))
                        {
                            causes.push(FieldError::invalid("metadata.labels", value, &p));
                        }
                        if let Some(p) = qualified_name(key) {
                            causes.push(FieldError::invalid(
                                format!("metadata.{field}"),
                                &json!(key),
                                &p,
                            ));
                        }
                    }
                }
                None => causes.push(FieldError::invalid(
                    format!("metadata.{field}"),
                    map,
                    "must be a map",
                )),
            }
        }
    }
    causes
}

fn path_segment(s: &str) -> Option<String> {
    if s.is_empty() || s == "." || s == ".." {
        return Some("may not be '.' or '..'".into());
    }
    (s.contains('/') || s.contains('%')).then(|| "may not contain '/' or '%'".to_string())
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Label and annotation keys: optional DNS-subdomain prefix, then a name.
fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && dns_subdomain(p).is_some()
    {
        return Some("prefix part ".to_string() + DNS1123_SUBDOMAIN_MSG);
    }
    (!is_name_part(name)).then(|| "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string())
}

fn label_value(value: &str) -> Option<String> {
    if value.is_empty() || is_name_part(value) {
        None
    } else {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// generateName prefixes are cut so the name stays within 63 characters.
fn truncate_prefix(prefix: &str) -> &str {
    const MAX: usize = 63 - 5;
    if prefix.len() > MAX {
        &prefix[..MAX]
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::resources::Registry;
    use crate::api::values::meta::namespace;

    fn rt(group: &str, version: &str, resource: &str) -> std::sync::Arc<ResourceType> {
        Registry::new()
            .lookup(group, version, resource)
            .expect("resource")
    }

    #[test]
    fn create_fills_identity_and_generate_name() {
        let deploy = rt("apps", "v1", "deployments");
        let mut obj = json!({"metadata": {"generateName": "web-"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        before_create(&deploy, &mut obj, Some("default")).expect("create");
        assert!(name(&obj).starts_with("web-") && name(&obj).len() == 9);
        assert_eq!(namespace(&obj), "default");
        assert_eq!(metadata(&obj)["generation"], 1);
        assert_eq!(obj["kind"], "Deployment");
        assert!(metadata(&obj).contains_key("uid"));
    }

    #[test]
    fn create_rejects_bad_names_and_namespace_mismatch() {
        let cm = rt("", "v1", "configmaps");
        let mut bad = json!({"metadata": {"name": "Bad_Name"}});
        let err = before_create(&cm, &mut bad, Some("default")).expect_err("invalid");
        assert_eq!(err.code_and_reason(), (422, "Invalid"));
        let mut other = json!({"metadata": {"name": "ok", "namespace": "other"}});
        let err = before_create(&cm, &mut other, Some("default")).expect_err("mismatch");
        assert_eq!(err.code_and_reason().0, 400);
        let mut nameless = json!({"metadata": {}});
        assert_eq!(
            before_create(&cm, &mut nameless, Some("default"))
                .expect_err("no name")
                .code_and_reason()
                .0,
            422
        );
    }

    #[test]
    fn update_keeps_identity_and_bumps_generation_on_spec_change() {
        let deploy = rt("apps", "v1", "deployments");
        let mut old = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        before_create(&deploy, &mut old, Some("default")).expect("create");
        let mut new = old.clone();
        metadata_mut(&mut new).insert("uid".into(), json!("forged"));
        new["metadata"]["labels"] = json!({"x": "y"});
        before_update(&deploy, &mut new, &old, false).expect("update");
        assert_eq!(metadata(&new)["uid"], metadata(&old)["uid"]);
        assert_eq!(metadata(&new)["generation"], 1);
        let mut scaled = new.clone();
        scaled["spec"]["replicas"] = json!(3);
        before_update(&deploy, &mut scaled, &new, false).expect("update");
        assert_eq!(metadata(&scaled)["generation"], 2);
    }
}
