//! Pod and pod-template rules: defaults, initial status, validation.

use serde_json::{Value, json};

use super::{Strategy, default_field};
use crate::api::FieldError;
use crate::api::values::meta::dns_label;

/// Defaults of a pod spec, also inside templates.
pub fn default_spec(spec: &mut Value) {
    default_field(spec, "/restartPolicy", json!("Always"));
    default_field(spec, "/terminationGracePeriodSeconds", json!(30));
    default_field(spec, "/dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "/securityContext", json!({}));
    default_field(spec, "/schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(default_container);
        }
    }
}

/// Defaults a pod gets but a template does not (set by admission upstream).
pub fn default_pod_only(spec: &mut Value) {
    default_field(spec, "/enableServiceLinks", json!(true));
    default_field(spec, "/serviceAccountName", json!("default"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        default_field(spec, "/serviceAccount", sa);
    }
    default_field(spec, "/priority", json!(0));
    default_field(spec, "/preemptionPolicy", json!("PreemptLowerPriority"));
    default_field(spec, "/tolerations", json!([]));
    if let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !tolerations
                .iter()
                .any(|t| t.get("key").and_then(Value::as_str) == Some(key))
            {
                tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
}

fn default_container(container: &mut Value) {
    default_field(
        container,
        "/terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default_field(container, "/terminationMessagePolicy", json!("File"));
    default_field(container, "/resources", json!({}));
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    default_field(container, "/imagePullPolicy", json!(pull_policy(image)));
    if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default_field(port, "/protocol", json!("TCP"));
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (digests included).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// The grace period of a pod's deletion: none for pods no node runs (not
/// scheduled, or finished), else the requested one or the pod's
/// `terminationGracePeriodSeconds` (30 by default).
pub fn deletion_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let on_node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !on_node || finished {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// A new pod starts Pending with its QoS class.
pub fn prepare_for_create(pod: &mut Value) {
    let qos = pod.get("spec").map(qos_class).unwrap_or("BestEffort");
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// Upstream's QoS classes from requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// A `pods/ephemeralcontainers` write: `old` with the ephemeral containers
/// of `new`, which may only add to those `old` has (upstream: existing ones
/// can be neither changed nor removed), named apart from every other
/// container, and without ports, probes, lifecycle or resources.
pub fn with_ephemeral_containers(old: &Value, new: &Value) -> Result<Value, Vec<FieldError>> {
    let field = "spec.ephemeralContainers";
    let empty = Vec::new();
    let given = new
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let before = old
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut causes = Vec::new();
    for existing in before {
        let name = existing["name"].as_str().unwrap_or_default();
        match given.iter().find(|c| c["name"] == name) {
            Some(same) if same == existing => {}
            Some(_) => causes.push(FieldError::forbidden(
                field,
                &format!("existing ephemeral containers \"{name}\" may not be changed"),
            )),
            None => causes.push(FieldError::forbidden(
                field,
                &format!("existing ephemeral containers \"{name}\" may not be removed"),
            )),
        }
    }
    let mut names: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| old["spec"][*list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, c) in given.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let name = c["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(FieldError::required(format!("{at}.name"), ""));
        } else if names.contains(&name) {
            causes.push(FieldError::duplicate(format!("{at}.name"), &c["name"]));
        } else {
            names.push(name);
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(FieldError::required(format!("{at}.image"), ""));
        }
        for forbidden in [
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
        ] {
            if c.get(forbidden)
                .is_some_and(|v| !v.is_null() && v != &json!({}) && v != &json!([]))
            {
                causes.push(FieldError::forbidden(
                    format!("{at}.{forbidden}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let mut out = old.clone();
    out["spec"]["ephemeralContainers"] = Value::Array(given.clone());
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        out["metadata"]["resourceVersion"] = rv.clone();
    }
    Ok(out)
}

/// Validates a pod spec found at `path`.
pub fn validate_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        causes.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push(FieldError::required(format!("{at}.name"), ""));
            } else if let Some(problem) = dns_label(name) {
                causes.push(FieldError::invalid(
                    format!("{at}.name"),
                    &json!(name),
                    &problem,
                ));
            } else if names.contains(&name) {
                causes.push(FieldError::duplicate(format!("{at}.name"), &json!(name)));
            }
            names.push(name);
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(|i| i.trim().is_empty())
            {
                causes.push(FieldError::required(format!("{at}.image"), ""));
            }
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let port = p.get("containerPort");
                if !port
                    .and_then(Value::as_i64)
                    .is_some_and(|n| (1..=65535).contains(&n))
                {
                    causes.push(FieldError::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        port.unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy")
        && !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never"))
    {
        causes.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    causes
}

/// Pods.
#[derive(Debug)]
pub struct Pods;

impl Strategy for Pods {
    fn prepare_for_create(&self, obj: &mut Value) {
        prepare_for_create(obj);
    }

    fn deletion_grace(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        Some(deletion_grace(obj, requested))
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_spec(spec);
            default_pod_only(spec);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        obj.get("spec")
            .map(|s| validate_spec(s, "spec"))
            .unwrap_or_else(|| vec![FieldError::required("spec.containers", "")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_pull_policy() {
        let mut spec = json!({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "reg:5000/x:1.2", "ports": [{"containerPort": 80}]}]});
        default_spec(&mut spec);
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][1]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn validation_finds_missing_and_duplicate() {
        let spec = json!({"containers": [{"name": "a", "image": "x"}, {"name": "a"}]});
        let causes = validate_spec(&spec, "spec");
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.containers[1].name", "spec.containers[1].image"]
        );
        assert_eq!(
            validate_spec(&json!({}), "spec")[0].field,
            "spec.containers"
        );
    }

    #[test]
    fn ephemeral_containers_are_only_added() {
        let debugger = json!({"name": "debugger", "image": "busybox"});
        let old = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}, "status": {"phase": "Running"}});
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!([debugger]);
        new["spec"]["containers"][0]["image"] = json!("changed");
        let merged = with_ephemeral_containers(&old, &new).expect("added");
        assert_eq!(merged["spec"]["ephemeralContainers"][0]["name"], "debugger");
        assert_eq!(
            merged["spec"]["containers"][0]["image"], "nginx",
            "only ephemeral containers change"
        );
        let mut removed = merged.clone();
        removed["spec"]["ephemeralContainers"] = json!([]);
        let causes = with_ephemeral_containers(&merged, &removed).expect_err("removed");
        assert!(causes[0].message.contains("may not be removed"));
        let mut clash = old.clone();
        clash["spec"]["ephemeralContainers"] =
            json!([{"name": "web", "image": "busybox", "ports": [{"containerPort": 80}]}]);
        let causes = with_ephemeral_containers(&old, &clash).expect_err("invalid");
        assert!(causes.iter().any(|c| c.reason == "FieldValueDuplicate"));
        assert!(causes.iter().any(|c| c.field.ends_with(".ports")));
    }
}
