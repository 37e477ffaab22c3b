//! LimitRanger (upstream's admission plugin): the LimitRanges of a
//! namespace give containers default requests and limits and bound what a
//! container, a pod or a claim may ask for. Pure: the caller passes the
//! namespace's LimitRanges.

use serde_json::{Map, Value, json};

use crate::api::values::quantity;

/// The annotation recording what defaults were set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Sets default requests and limits on the pod's containers from the
/// Container items of `ranges` (a LimitRange's `default` and
/// `defaultRequest`; a missing defaultRequest falls back to `default`, as
/// the API defaults LimitRanges). Records what it set in [`ANNOTATION`].
pub fn default_pod(pod: &mut Value, ranges: &[Value]) {
    let mut set = Vec::new();
    for item in container_items(ranges) {
        let limits = item["default"].as_object().cloned().unwrap_or_default();
        let requests = item["defaultRequest"]
            .as_object()
            .cloned()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| limits.clone());
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("").to_string();
                let mut set_requests = Vec::new();
                let mut set_limits = Vec::new();
                fill(c, "requests", &requests, &mut set_requests);
                fill(c, "limits", &limits, &mut set_limits);
                set_requests.sort();
                set_limits.sort();
                if !set_requests.is_empty() {
                    set.push(format!(
                        "{} request for {list_kind} {name}",
                        set_requests.join(", "),
                        list_kind = kind(list)
                    ));
                }
                if !set_limits.is_empty() {
                    set.push(format!(
                        "{} limit for {list_kind} {name}",
                        set_limits.join(", "),
                        list_kind = kind(list)
                    ));
                }
            }
        }
    }
    if set.is_empty() {
        return;
    }
    if !pod["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = json!({});
    }
    pod["metadata"]["annotations"][ANNOTATION] =
        json!(format!("LimitRanger plugin set: {}", set.join("; ")));
}

fn kind(list: &str) -> &'static str {
    if list == "initContainers" {
        "init container"
    } else {
        "container"
    }
}

/// Copies the resources of `defaults` the container's `field` lacks.
fn fill(container: &mut Value, field: &str, defaults: &Map<String, Value>, set: &mut Vec<String>) {
    if defaults.is_empty() {
        return;
    }
    if !container["resources"].is_object() {
        container["resources"] = json!({});
    }
    if !container["resources"][field].is_object() {
        container["resources"][field] = json!({});
    }
    let Some(current) = container["resources"][field].as_object_mut() else {
        return;
    };
    for (resource, value) in defaults {
        if !current.contains_key(resource) {
            current.insert(resource.clone(), value.clone());
            set.push(resource.clone());
        }
    }
}

fn container_items(ranges: &[Value]) -> impl Iterator<Item = &Value> {
    items(ranges, "Container")
}

fn items<'a>(ranges: &'a [Value], kind: &'static str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| {
            r.pointer("/spec/limits")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(move |item| item["type"] == kind)
}

/// The violations of the pod against the Container and Pod items of
/// `ranges`, in upstream's words (`maximum cpu usage per Container is 1,
/// but limit is 2`).
pub fn validate_pod(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .collect();
    for item in container_items(ranges) {
        for c in &containers {
            let requests = c["resources"]["requests"].as_object();
            let limits = c["resources"]["limits"].as_object();
            check(item, "Container", requests, limits, &mut errors);
        }
    }
    for item in items(ranges, "Pod") {
        let sum = |field: &str| -> Map<String, Value> {
            let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                for (k, v) in c["resources"][field].as_object().into_iter().flatten() {
                    *totals.entry(k.clone()).or_default() +=
                        v.as_str().and_then(quantity::parse).unwrap_or(0.0);
                }
            }
            totals
                .into_iter()
                .map(|(k, v)| (k, json!(format_number(v))))
                .collect()
        };
        let (requests, limits) = (sum("requests"), sum("limits"));
        check(item, "Pod", Some(&requests), Some(&limits), &mut errors);
    }
    errors
}

/// The violations of a PersistentVolumeClaim's storage request.
pub fn validate_claim(claim: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items(ranges, "PersistentVolumeClaim") {
        let requests = claim["spec"]["resources"]["requests"].as_object();
        let limits = claim["spec"]["resources"]["limits"].as_object();
        check(item, "PersistentVolumeClaim", requests, limits, &mut errors);
    }
    errors
}

/// min, max and maxLimitRequestRatio of one LimitRange item.
fn check(
    item: &Value,
    kind: &str,
    requests: Option<&Map<String, Value>>,
    limits: Option<&Map<String, Value>>,
    errors: &mut Vec<String>,
) {
    let amount = |map: Option<&Map<String, Value>>, resource: &str| {
        map.and_then(|m| m.get(resource))
            .and_then(Value::as_str)
            .map(|s| (s.to_string(), quantity::parse(s).unwrap_or(0.0)))
    };
    for (resource, min) in item["min"].as_object().into_iter().flatten() {
        let Some(min_text) = min.as_str() else {
            continue;
        };
        let min_value = quantity::parse(min_text).unwrap_or(0.0);
        match amount(requests, resource) {
            None => errors.push(format!(
                "minimum {resource} usage per {kind} is {min_text}.  No request is specified"
            )),
            Some((text, v)) if v < min_value => errors.push(format!(
                "minimum {resource} usage per {kind} is {min_text}, but request is {text}"
            )),
            _ => {}
        }
        if let Some((text, v)) = amount(limits, resource)
            && v < min_value
        {
            errors.push(format!(
                "minimum {resource} usage per {kind} is {min_text}, but limit is {text}"
            ));
        }
    }
    for (resource, max) in item["max"].as_object().into_iter().flatten() {
        let Some(max_text) = max.as_str() else {
            continue;
        };
        let max_value = quantity::parse(max_text).unwrap_or(0.0);
        match amount(limits, resource) {
            None if kind != "PersistentVolumeClaim" => errors.push(format!(
                "maximum {resource} usage per {kind} is {max_text}.  No limit is specified"
            )),
            Some((text, v)) if v > max_value => errors.push(format!(
                "maximum {resource} usage per {kind} is {max_text}, but limit is {text}"
            )),
            _ => {}
        }
        if let Some((text, v)) = amount(requests, resource)
            && v > max_value
        {
            errors.push(format!(
                "maximum {resource} usage per {kind} is {max_text}, but request is {text}"
            ));
        }
    }
    for (resource, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Some(ratio_text) = ratio.as_str() else {
            continue;
        };
        let ratio_value = quantity::parse(ratio_text).unwrap_or(0.0);
        if let (Some((_, limit)), Some((_, request))) =
            (amount(limits, resource), amount(requests, resource))
            && request > 0.0
            && limit / request > ratio_value
        {
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {ratio_text}, but provided ratio is {:.6}",
                limit / request
            ));
        }
    }
}

/// A sum as a quantity string (plain number).
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Upstream's joined message: one error alone, several in brackets.
pub fn message(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"metadata": {"name": "limits"}, "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1", "memory": "256Mi"},
            "min": {"cpu": "50m"},
        }]}})
    }

    #[test]
    fn containers_get_defaults_and_the_pod_says_so() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "800m"}}}]}});
        default_pod(&mut pod, &[range()]);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["requests"]["cpu"], "100m");
        assert_eq!(a["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"]["cpu"],
            "800m"
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container a; cpu, memory limit for container a; cpu request for container b; memory limit for container b"
        );
        assert!(validate_pod(&pod, &[range()]).is_empty());
    }

    #[test]
    fn bounds_are_enforced_in_upstreams_words() {
        let pod = json!({"spec": {"containers": [{"name": "big", "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}}}]}});
        let errors = validate_pod(&pod, &[range()]);
        assert_eq!(
            message(&errors),
            "[minimum cpu usage per Container is 50m, but request is 10m, maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 256Mi, but limit is 512Mi]"
        );
        let ratio = json!({"spec": {"limits": [{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]}});
        let pod = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "400m"}}}]}});
        assert_eq!(
            message(&validate_pod(&pod, &[ratio])),
            "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
        );
        let claims = json!({"spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}]}});
        let claim = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            validate_claim(&claim, &[claims]),
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
    }
}
