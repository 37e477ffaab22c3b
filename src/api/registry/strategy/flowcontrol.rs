//! flowcontrol.apiserver.k8s.io (API Priority and Fairness): the bootstrap
//! FlowSchemas and PriorityLevelConfigurations of kube-apiserver 1.33 as
//! data, the v1 defaults, and upstream's validation (with its guardrail:
//! the mandatory objects' specs are fixed).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::Strategy;
use crate::api::FieldError;
use crate::api::values::meta;

/// The annotation that says whether the server keeps an object's spec
/// equal to its bootstrap value (parsed as Go's `strconv.ParseBool`).
pub const AUTOUPDATE_ANNOTATION: &str = "apf.kubernetes.io/autoupdate-spec";

const API_VERSION: &str = "flowcontrol.apiserver.k8s.io/v1";
const FLOW_SCHEMA: &str = "FlowSchema";
const PRIORITY_LEVEL: &str = "PriorityLevelConfiguration";
/// The one priority level (and FlowSchema) that may be exempt / precedence 1.
const EXEMPT: &str = "exempt";
const CATCH_ALL: &str = "catch-all";
/// Upstream's `FlowSchemaMaxMatchingPrecedence`.
const MAX_MATCHING_PRECEDENCE: i64 = 10_000;
/// Upstream's `priorityLevelConfigurationQueuingMaxQueues` (10^7).
const MAX_QUEUES: i64 = 10_000_000;
/// Upstream's `shufflesharding.MaxHashBits`.
const MAX_HASH_BITS: f64 = 60.0;

const DEFAULT_MATCHING_PRECEDENCE: i64 = 1000;
const DEFAULT_LIMITED_SHARES: i64 = 30;
const DEFAULT_QUEUES: i64 = 64;
const DEFAULT_HAND_SIZE: i64 = 8;
const DEFAULT_QUEUE_LENGTH_LIMIT: i64 = 50;

const SUPPORTED_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "proxy",
    "update",
    "watch",
];

// ---------------------------------------------------------------------------
// Bootstrap objects (upstream's k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap).

fn bootstrap_object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "annotations": {AUTOUPDATE_ANNOTATION: "true"},
        },
        "spec": spec,
    })
}

/// A Limited priority level; `queuing` is (queues, handSize, queueLengthLimit),
/// None for Reject.
fn limited_level(
    name: &str,
    shares: i64,
    lendable: i64,
    queuing: Option<(i64, i64, i64)>,
) -> Value {
    let limit_response = match queuing {
        Some((queues, hand_size, queue_length_limit)) => json!({
            "type": "Queue",
            "queuing": {
                "queues": queues,
                "handSize": hand_size,
                "queueLengthLimit": queue_length_limit,
            },
        }),
        None => json!({"type": "Reject"}),
    };
    bootstrap_object(
        PRIORITY_LEVEL,
        name,
        json!({
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": shares,
                "lendablePercent": lendable,
                "limitResponse": limit_response,
            },
        }),
    )
}

fn flow_schema(
    name: &str,
    level: &str,
    precedence: i64,
    distinguisher: Option<&str>,
    rule: Value,
) -> Value {
    let mut spec = json!({
        "priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence,
        "rules": [rule],
    });
    if let Some(method) = distinguisher {
        spec["distinguisherMethod"] = json!({"type": method});
    }
    bootstrap_object(FLOW_SCHEMA, name, spec)
}

fn groups(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"kind": "Group", "group": {"name": n}}))
        .collect()
}

fn users(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"kind": "User", "user": {"name": n}}))
        .collect()
}

fn kube_system_service_accounts(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            json!({
                "kind": "ServiceAccount",
                "serviceAccount": {"namespace": "kube-system", "name": n},
            })
        })
        .collect()
}

/// A resource rule as Go encodes it: `clusterScope` only when true.
fn resource_rule(
    verbs: &[&str],
    api_groups: &[&str],
    resources: &[&str],
    namespaces: &[&str],
    cluster_scope: bool,
) -> Value {
    let mut rule = json!({
        "verbs": verbs,
        "apiGroups": api_groups,
        "resources": resources,
        "namespaces": namespaces,
    });
    if cluster_scope {
        rule["clusterScope"] = json!(true);
    }
    rule
}

/// Every verb on every resource and every non-resource URL.
fn all_requests(subjects: Vec<Value>) -> Value {
    json!({
        "subjects": subjects,
        "resourceRules": [resource_rule(&["*"], &["*"], &["*"], &["*"], true)],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    })
}

fn resource_requests(subjects: Vec<Value>, rules: Vec<Value>) -> Value {
    json!({"subjects": subjects, "resourceRules": rules})
}

const GET_CREATE_UPDATE: &[&str] = &["get", "create", "update"];
const COORDINATION: &str = "coordination.k8s.io";
const EVERYONE: &[&str] = &["system:unauthenticated", "system:authenticated"];

/// The mandatory priority levels, in upstream's order: `catch-all`, `exempt`.
pub fn mandatory_priority_levels() -> Vec<Value> {
    vec![
        limited_level(CATCH_ALL, 5, 0, None),
        bootstrap_object(
            PRIORITY_LEVEL,
            EXEMPT,
            json!({
                "type": "Exempt",
                "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0},
            }),
        ),
    ]
}

/// The mandatory FlowSchemas, in upstream's order: `exempt`, `catch-all`.
pub fn mandatory_flow_schemas() -> Vec<Value> {
    vec![
        flow_schema(
            EXEMPT,
            EXEMPT,
            1,
            None,
            all_requests(groups(&["system:masters"])),
        ),
        flow_schema(
            CATCH_ALL,
            CATCH_ALL,
            10_000,
            Some("ByUser"),
            all_requests(groups(EVERYONE)),
        ),
    ]
}

/// The suggested priority levels, in upstream's order.
pub fn suggested_priority_levels() -> Vec<Value> {
    vec![
        limited_level("system", 30, 33, Some((64, 6, 50))),
        limited_level("node-high", 40, 25, Some((64, 6, 50))),
        limited_level("leader-election", 10, 0, Some((16, 4, 50))),
        limited_level("workload-high", 40, 50, Some((128, 6, 50))),
        limited_level("workload-low", 100, 90, Some((128, 6, 50))),
        limited_level("global-default", 20, 50, Some((128, 6, 50))),
    ]
}

/// The suggested FlowSchemas of 1.33, in upstream's order.
pub fn suggested_flow_schemas() -> Vec<Value> {
    let leases = |verbs: &[&str]| resource_rule(verbs, &[COORDINATION], &["leases"], &["*"], false);
    vec![
        flow_schema(
            "system-nodes",
            "system",
            500,
            Some("ByUser"),
            all_requests(groups(&["system:nodes"])),
        ),
        flow_schema(
            "system-node-high",
            "node-high",
            400,
            Some("ByUser"),
            resource_requests(
                groups(&["system:nodes"]),
                vec![
                    resource_rule(&["*"], &[""], &["nodes", "nodes/status"], &["*"], true),
                    leases(&["*"]),
                ],
            ),
        ),
        flow_schema(
            "probes",
            EXEMPT,
            2,
            None,
            json!({
                "subjects": groups(EVERYONE),
                "nonResourceRules": [{
                    "verbs": ["get"],
                    "nonResourceURLs": ["/healthz", "/readyz", "/livez"],
                }],
            }),
        ),
        flow_schema(
            "system-leader-election",
            "leader-election",
            100,
            Some("ByUser"),
            resource_requests(
                [
                    users(&["system:kube-controller-manager", "system:kube-scheduler"]),
                    kube_system_service_accounts(&["*"]),
                ]
                .concat(),
                vec![leases(GET_CREATE_UPDATE)],
            ),
        ),
        flow_schema(
            "workload-leader-election",
            "leader-election",
            200,
            Some("ByUser"),
            resource_requests(
                kube_system_service_accounts(&["*"]),
                vec![
                    resource_rule(
                        GET_CREATE_UPDATE,
                        &[""],
                        &["endpoints", "configmaps"],
                        &["*"],
                        false,
                    ),
                    leases(GET_CREATE_UPDATE),
                ],
            ),
        ),
        flow_schema(
            "endpoint-controller",
            "workload-high",
            150,
            Some("ByUser"),
            resource_requests(
                [
                    users(&["system:kube-controller-manager"]),
                    kube_system_service_accounts(&[
                        "endpoint-controller",
                        "endpointslicemirroring-controller",
                    ]),
                ]
                .concat(),
                vec![resource_rule(
                    GET_CREATE_UPDATE,
                    &[""],
                    &["endpoints"],
                    &["*"],
                    false,
                )],
            ),
        ),
        flow_schema(
            "kube-controller-manager",
            "workload-high",
            800,
            Some("ByNamespace"),
            all_requests(users(&["system:kube-controller-manager"])),
        ),
        flow_schema(
            "kube-scheduler",
            "workload-high",
            800,
            Some("ByNamespace"),
            all_requests(users(&["system:kube-scheduler"])),
        ),
        flow_schema(
            "kube-system-service-accounts",
            "workload-high",
            900,
            Some("ByNamespace"),
            all_requests(kube_system_service_accounts(&["*"])),
        ),
        flow_schema(
            "service-accounts",
            "workload-low",
            9000,
            Some("ByUser"),
            all_requests(groups(&["system:serviceaccounts"])),
        ),
        flow_schema(
            "global-default",
            "global-default",
            9900,
            Some("ByUser"),
            all_requests(groups(EVERYONE)),
        ),
    ]
}

fn find_named(objects: Vec<Value>, name: &str) -> Option<Value> {
    objects.into_iter().find(|o| meta::name(o) == name)
}

// ---------------------------------------------------------------------------
// Defaults (upstream's pkg/apis/flowcontrol/v1/defaults.go).

/// Sets `field` of `map` to `value` when absent or null.
fn default_if_null(obj: &mut Value, field: &str, value: i64) {
    if let Some(map) = obj.as_object_mut()
        && map.get(field).is_none_or(Value::is_null)
    {
        map.insert(field.into(), json!(value));
    }
}

/// Sets `field` to `value` when absent, null or 0 (a Go int32 without `omitempty`
/// meaning).
fn default_if_zero(obj: &mut Value, field: &str, value: i64) {
    if let Some(map) = obj.as_object_mut()
        && map
            .get(field)
            .is_none_or(|v| v.is_null() || v.as_i64() == Some(0))
    {
        map.insert(field.into(), json!(value));
    }
}

/// FlowSchema defaults: `matchingPrecedence` 1000.
pub fn default_flow_schema(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    if spec.is_null() {
        *spec = json!({});
    }
    default_if_zero(spec, "matchingPrecedence", DEFAULT_MATCHING_PRECEDENCE);
}

/// PriorityLevelConfiguration defaults: Limited shares 30 and lendable 0;
/// queuing 64 queues, hand size 8, queue length limit 50; Exempt shares and
/// lendable 0.
pub fn default_priority_level(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(limited) = spec.get_mut("limited").filter(|l| l.is_object()) {
        default_if_null(limited, "nominalConcurrencyShares", DEFAULT_LIMITED_SHARES);
        default_if_null(limited, "lendablePercent", 0);
        if let Some(queuing) = limited
            .pointer_mut("/limitResponse/queuing")
            .filter(|q| q.is_object())
        {
            default_if_zero(queuing, "queues", DEFAULT_QUEUES);
            default_if_zero(queuing, "handSize", DEFAULT_HAND_SIZE);
            default_if_zero(queuing, "queueLengthLimit", DEFAULT_QUEUE_LENGTH_LIMIT);
        }
    }
    if let Some(exempt) = spec.get_mut("exempt").filter(|e| e.is_object()) {
        default_if_null(exempt, "nominalConcurrencyShares", 0);
        default_if_null(exempt, "lendablePercent", 0);
    }
}

/// A spec as upstream compares it (`apiequality.Semantic.DeepEqual` of the
/// defaulted Go structs): defaulted, and without what Go cannot tell from
/// absent (null, false, "", empty lists).
pub fn comparable_spec(kind: &str, spec: &Value) -> Value {
    let mut obj = json!({"spec": spec});
    match kind {
        FLOW_SCHEMA => default_flow_schema(&mut obj),
        PRIORITY_LEVEL => default_priority_level(&mut obj),
        _ => {}
    }
    normalize(&obj["spec"])
}

fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !is_go_zero(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn is_go_zero(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Validation (upstream's pkg/apis/flowcontrol/validation/validation.go).

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

fn present(value: &Value) -> bool {
    !value.is_null()
}

/// Field problems of a FlowSchema.
pub fn validate_flow_schema(obj: &Value) -> Vec<FieldError> {
    let name = meta::name(obj);
    let spec = &obj["spec"];
    let mut causes = validate_flow_schema_spec(name, spec);
    if let Some(fixed) = find_named(mandatory_flow_schemas(), name)
        && comparable_spec(FLOW_SCHEMA, spec) != comparable_spec(FLOW_SCHEMA, &fixed["spec"])
    {
        causes.push(FieldError::invalid(
            "spec",
            spec,
            &format!("spec of '{name}' must equal the fixed value"),
        ));
    }
    causes.extend(validate_conditions(&obj["status"]));
    causes
}

fn validate_flow_schema_spec(name: &str, spec: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let precedence = &spec["matchingPrecedence"];
    let value = int(precedence);
    let shown = json!(value);
    if value <= 0 {
        causes.push(FieldError::invalid(
            "spec.matchingPrecedence",
            &shown,
            "must be a positive value",
        ));
    }
    if value > MAX_MATCHING_PRECEDENCE {
        causes.push(FieldError::invalid(
            "spec.matchingPrecedence",
            &shown,
            &format!("must not be greater than {MAX_MATCHING_PRECEDENCE}"),
        ));
    }
    if value == 1 && name != EXEMPT {
        causes.push(FieldError::invalid(
            "spec.matchingPrecedence",
            &shown,
            "only the schema named 'exempt' may have matchingPrecedence 1",
        ));
    }
    let method = &spec["distinguisherMethod"];
    if present(method) && !matches!(text(&method["type"]), "ByNamespace" | "ByUser") {
        causes.push(FieldError::not_supported(
            "spec.distinguisherMethod.type",
            method,
            &["ByNamespace", "ByUser"],
        ));
    }
    let level = &spec["priorityLevelConfiguration"]["name"];
    match text(level) {
        "" => causes.push(FieldError::required(
            "spec.priorityLevelConfiguration.name",
            "must reference a priority level",
        )),
        level_name => {
            if let Some(msg) = meta::dns_subdomain(level_name) {
                causes.push(FieldError::invalid(
                    "spec.priorityLevelConfiguration.name",
                    level,
                    &msg,
                ));
            }
        }
    }
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        causes.extend(validate_rule(rule, &format!("spec.rules[{i}]")));
    }
    causes
}

fn validate_rule(rule: &Value, path: &str) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let subjects = rule["subjects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if subjects.is_empty() {
        causes.push(FieldError::required(
            format!("{path}.subjects"),
            "subjects must contain at least one value",
        ));
    }
    for (i, subject) in subjects.iter().enumerate() {
        causes.extend(validate_subject(subject, &format!("{path}.subjects[{i}]")));
    }
    let resource_rules = rule["resourceRules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let non_resource_rules = rule["nonResourceRules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if resource_rules.is_empty() && non_resource_rules.is_empty() {
        causes.push(FieldError::required(
            path,
            "at least one of resourceRules and nonResourceRules has to be non-empty",
        ));
    }
    for (i, r) in resource_rules.iter().enumerate() {
        causes.extend(validate_resource_rule(
            r,
            &format!("{path}.resourceRules[{i}]"),
        ));
    }
    for (i, r) in non_resource_rules.iter().enumerate() {
        causes.extend(validate_non_resource_rule(
            r,
            &format!("{path}.nonResourceRules[{i}]"),
        ));
    }
    causes
}

fn validate_subject(subject: &Value, path: &str) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let forbid = |causes: &mut Vec<FieldError>, field: &str, kind: &str| {
        if present(&subject[field]) {
            causes.push(FieldError::forbidden(
                format!("{path}.{field}"),
                &format!("{field} is forbidden when subject kind is not '{kind}'"),
            ));
        }
    };
    let kind = &subject["kind"];
    match text(kind) {
        "ServiceAccount" => {
            causes.extend(validate_service_account_subject(
                &subject["serviceAccount"],
                &format!("{path}.serviceAccount"),
            ));
            forbid(&mut causes, "user", "User");
            forbid(&mut causes, "group", "Group");
        }
        "User" => {
            causes.extend(validate_named_subject(
                &subject["user"],
                &format!("{path}.user"),
                "user is required when subject kind is 'User'",
            ));
            forbid(&mut causes, "serviceAccount", "ServiceAccount");
            forbid(&mut causes, "group", "Group");
        }
        "Group" => {
            causes.extend(validate_named_subject(
                &subject["group"],
                &format!("{path}.group"),
                "group is required when subject kind is 'Group'",
            ));
            forbid(&mut causes, "serviceAccount", "ServiceAccount");
            forbid(&mut causes, "user", "User");
        }
        _ => causes.push(FieldError::not_supported(
            format!("{path}.kind"),
            &json!(text(kind)),
            &["Group", "ServiceAccount", "User"],
        )),
    }
    causes
}

fn validate_service_account_subject(sa: &Value, path: &str) -> Vec<FieldError> {
    if !present(sa) {
        return vec![FieldError::required(
            path,
            "serviceAccount is required when subject kind is 'ServiceAccount'",
        )];
    }
    let mut causes = Vec::new();
    match text(&sa["name"]) {
        "" => causes.push(FieldError::required(format!("{path}.name"), "")),
        "*" => {}
        name => {
            if let Some(msg) = meta::dns_subdomain(name) {
                causes.push(FieldError::invalid(
                    format!("{path}.name"),
                    &sa["name"],
                    &msg,
                ));
            }
        }
    }
    match text(&sa["namespace"]) {
        "" => causes.push(FieldError::required(
            format!("{path}.namespace"),
            "must specify namespace for service account",
        )),
        namespace => {
            if let Some(msg) = meta::dns_label(namespace) {
                causes.push(FieldError::invalid(
                    format!("{path}.namespace"),
                    &sa["namespace"],
                    &msg,
                ));
            }
        }
    }
    causes
}

fn validate_named_subject(subject: &Value, path: &str, missing: &str) -> Vec<FieldError> {
    if !present(subject) {
        return vec![FieldError::required(path, missing)];
    }
    if text(&subject["name"]).is_empty() {
        return vec![FieldError::required(format!("{path}.name"), "")];
    }
    vec![]
}

/// The checks of `verbs` both kinds of rule share.
fn validate_verbs(rule: &Value, path: &str) -> Option<FieldError> {
    let verbs = strings(&rule["verbs"]);
    let field = format!("{path}.verbs");
    if verbs.is_empty() {
        return Some(FieldError::required(
            field,
            "verbs must contain at least one value",
        ));
    }
    if verbs.contains(&"*") {
        return (verbs.len() > 1).then(|| {
            FieldError::invalid(
                field,
                &rule["verbs"],
                "if '*' is present, must not specify other verbs",
            )
        });
    }
    (!verbs.iter().all(|v| SUPPORTED_VERBS.contains(v)))
        .then(|| FieldError::not_supported(field, &rule["verbs"], SUPPORTED_VERBS))
}

fn validate_non_resource_rule(rule: &Value, path: &str) -> Vec<FieldError> {
    let mut causes: Vec<FieldError> = validate_verbs(rule, path).into_iter().collect();
    let urls = strings(&rule["nonResourceURLs"]);
    let field = format!("{path}.nonResourceURLs");
    if urls.is_empty() {
        causes.push(FieldError::required(
            field,
            "nonResourceURLs must contain at least one value",
        ));
    } else if urls.contains(&"*") {
        if urls.len() > 1 {
            causes.push(FieldError::invalid(
                field,
                &rule["nonResourceURLs"],
                "if '*' is present, must not specify other non-resource URLs",
            ));
        }
    } else {
        for (i, url) in urls.iter().enumerate() {
            if let Some(msg) = non_resource_url_problem(url) {
                causes.push(FieldError::invalid(
                    format!("{field}[{i}]"),
                    &json!(url),
                    msg,
                ));
            }
        }
    }
    causes
}

/// Upstream's `ValidateNonResourceURLPath`.
fn non_resource_url_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("must not be empty");
    }
    if path == "/" {
        return None;
    }
    if !path.starts_with('/') {
        return Some("must start with slash");
    }
    if path.contains(' ') {
        return Some("must not contain white-space");
    }
    if path.contains("//") {
        return Some("must not contain double slash");
    }
    let wildcards = path.matches('*').count();
    if wildcards > 1 || (wildcards == 1 && !path.ends_with("/*")) {
        return Some("wildcard can only do suffix matching");
    }
    None
}

fn validate_resource_rule(rule: &Value, path: &str) -> Vec<FieldError> {
    let mut causes: Vec<FieldError> = validate_verbs(rule, path).into_iter().collect();
    for (field, what) in [("apiGroups", "api group"), ("resources", "resource")] {
        let values = strings(&rule[field]);
        if values.is_empty() {
            causes.push(FieldError::required(
                format!("{path}.{field}"),
                &format!("resource rules must supply at least one {what}"),
            ));
        } else if values.len() > 1 && values.contains(&"*") {
            causes.push(FieldError::invalid(
                format!("{path}.{field}"),
                &rule[field],
                &format!("if '*' is present, must not specify other {what}s"),
            ));
        }
    }
    let namespaces = strings(&rule["namespaces"]);
    let cluster_scope = rule["clusterScope"].as_bool().unwrap_or(false);
    if namespaces.is_empty() && !cluster_scope {
        causes.push(FieldError::required(
            format!("{path}.namespaces"),
            "resource rules that are not cluster scoped must supply at least one namespace",
        ));
    } else if namespaces.contains(&"*") {
        if namespaces.len() > 1 {
            causes.push(FieldError::invalid(
                format!("{path}.namespaces"),
                &rule["namespaces"],
                "if '*' is present, must not specify other namespaces",
            ));
        }
    } else {
        for (i, namespace) in namespaces.iter().enumerate() {
            if let Some(msg) = meta::dns_label(namespace) {
                causes.push(FieldError::invalid(
                    format!("{path}.namespaces[{i}]"),
                    &json!(namespace),
                    &format!("each member of this list must be '*' or a DNS-1123 label; {msg}"),
                ));
            }
        }
    }
    causes
}

/// `status.conditions`: types present and unique.
fn validate_conditions(status: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let mut seen = HashSet::new();
    for (i, condition) in status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = text(&condition["type"]);
        if !seen.insert(kind) {
            causes.push(FieldError::duplicate(
                format!("status.conditions[{i}].type"),
                &json!(kind),
            ));
        }
        if kind.is_empty() {
            causes.push(FieldError::required(
                format!("status.conditions[{i}].type"),
                "must not be empty",
            ));
        }
    }
    causes
}

/// Field problems of a PriorityLevelConfiguration. A zero `limited`
/// `nominalConcurrencyShares` is refused, as 1.33's strategy does.
pub fn validate_priority_level(obj: &Value) -> Vec<FieldError> {
    let name = meta::name(obj);
    let spec = &obj["spec"];
    let mut causes = validate_priority_level_spec(name, spec);
    if let Some(fixed) = find_named(mandatory_priority_levels(), name) {
        let mut have = comparable_spec(PRIORITY_LEVEL, spec);
        let mut want = comparable_spec(PRIORITY_LEVEL, &fixed["spec"]);
        let message = if name == EXEMPT {
            // Only `spec.exempt` of the exempt level may be changed.
            for s in [&mut have, &mut want] {
                if let Some(map) = s.as_object_mut() {
                    map.remove("exempt");
                }
            }
            format!("spec of '{name}' except the 'spec.exempt' field must equal the fixed value")
        } else {
            format!("spec of '{name}' must equal the fixed value")
        };
        if have != want {
            causes.push(FieldError::invalid("spec", spec, &message));
        }
    }
    causes.extend(validate_conditions(&obj["status"]));
    causes
}

fn validate_priority_level_spec(name: &str, spec: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let kind = &spec["type"];
    if (name == EXEMPT) != (text(kind) == "Exempt") {
        causes.push(FieldError::invalid(
            "spec.type",
            &json!(text(kind)),
            "type must be 'Exempt' if and only if name is 'exempt'",
        ));
    }
    match text(kind) {
        "Exempt" => {
            if present(&spec["limited"]) {
                causes.push(FieldError::forbidden(
                    "spec.limited",
                    "must be nil if the type is not Limited",
                ));
            }
            let exempt = &spec["exempt"];
            if present(exempt) {
                let shares = &exempt["nominalConcurrencyShares"];
                if present(shares) && int(shares) < 0 {
                    causes.push(FieldError::invalid(
                        "spec.exempt.nominalConcurrencyShares",
                        shares,
                        "must be a non-negative integer",
                    ));
                }
                causes.extend(validate_lendable(
                    &exempt["lendablePercent"],
                    "spec.exempt.lendablePercent",
                ));
            }
        }
        "Limited" => {
            if present(&spec["exempt"]) {
                causes.push(FieldError::forbidden(
                    "spec.exempt",
                    "must be nil if the type is Limited",
                ));
            }
            let limited = &spec["limited"];
            if present(limited) {
                causes.extend(validate_limited(limited));
            } else {
                causes.push(FieldError::required(
                    "spec.limited",
                    "must not be empty when type is Limited",
                ));
            }
        }
        _ => causes.push(FieldError::not_supported(
            "spec.type",
            &json!(text(kind)),
            &["Exempt", "Limited"],
        )),
    }
    causes
}

fn validate_lendable(lendable: &Value, field: &str) -> Option<FieldError> {
    (present(lendable) && !(0..=100).contains(&int(lendable)))
        .then(|| FieldError::invalid(field, lendable, "must be between 0 and 100, inclusive"))
}

/// Upstream's error for a count that must be above 0.
fn not_positive(field: impl Into<String>, value: i64) -> FieldError {
    FieldError::invalid(field, &json!(value), "must be positive")
}

fn validate_limited(limited: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let shares = int(&limited["nominalConcurrencyShares"]);
    if shares <= 0 {
        causes.push(not_positive(
            "spec.limited.nominalConcurrencyShares",
            shares,
        ));
    }
    causes.extend(validate_limit_response(&limited["limitResponse"]));
    causes.extend(validate_lendable(
        &limited["lendablePercent"],
        "spec.limited.lendablePercent",
    ));
    let borrowing = &limited["borrowingLimitPercent"];
    if present(borrowing) && int(borrowing) < 0 {
        causes.push(FieldError::invalid(
            "spec.limited.borrowingLimitPercent",
            borrowing,
            "if specified, must be a non-negative integer",
        ));
    }
    causes
}

fn validate_limit_response(response: &Value) -> Vec<FieldError> {
    const PATH: &str = "spec.limited.limitResponse";
    let queuing = &response["queuing"];
    match text(&response["type"]) {
        "Reject" => present(queuing)
            .then(|| {
                FieldError::forbidden(
                    format!("{PATH}.queuing"),
                    "must be nil if limited.limitResponse.type is not Limited",
                )
            })
            .into_iter()
            .collect(),
        "Queue" if !present(queuing) => vec![FieldError::required(
            format!("{PATH}.queuing"),
            "must not be empty if limited.limitResponse.type is Limited",
        )],
        "Queue" => validate_queuing(queuing),
        other => vec![FieldError::not_supported(
            format!("{PATH}.type"),
            &json!(other),
            &["Queue", "Reject"],
        )],
    }
}

fn validate_queuing(queuing: &Value) -> Vec<FieldError> {
    const PATH: &str = "spec.limited.limitResponse.queuing";
    let mut causes = Vec::new();
    let queue_length_limit = int(&queuing["queueLengthLimit"]);
    if queue_length_limit <= 0 {
        causes.push(not_positive(
            format!("{PATH}.queueLengthLimit"),
            queue_length_limit,
        ));
    }
    let queues = int(&queuing["queues"]);
    if queues <= 0 {
        causes.push(not_positive(format!("{PATH}.queues"), queues));
    } else if queues > MAX_QUEUES {
        causes.push(FieldError::invalid(
            format!("{PATH}.queues"),
            &json!(queues),
            &format!("must not be greater than {MAX_QUEUES}"),
        ));
    }
    let hand_size = int(&queuing["handSize"]);
    if hand_size <= 0 {
        causes.push(not_positive(format!("{PATH}.handSize"), hand_size));
    } else if hand_size > queues {
        causes.push(FieldError::invalid(
            format!("{PATH}.handSize"),
            &json!(hand_size),
            &format!("should not be greater than queues ({queues})"),
        ));
    } else if required_entropy_bits(queues, hand_size) > MAX_HASH_BITS {
        causes.push(FieldError::invalid(
            format!("{PATH}.handSize"),
            &json!(hand_size),
            &format!(
                "required entropy bits of deckSize {queues} and handSize {hand_size} should not be greater than {MAX_HASH_BITS}"
            ),
        ));
    }
    causes
}

/// Upstream's `shufflesharding.RequiredEntropyBits`: ceil(log2(deck) × hand).
fn required_entropy_bits(deck_size: i64, hand_size: i64) -> f64 {
    ((deck_size as f64).log2() * hand_size as f64).ceil()
}

/// FlowSchemas.
#[derive(Debug)]
pub struct FlowSchemas;

impl Strategy for FlowSchemas {
    fn default(&self, obj: &mut Value) {
        default_flow_schema(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_flow_schema(obj)
    }
}

/// PriorityLevelConfigurations.
#[derive(Debug)]
pub struct PriorityLevels;

impl Strategy for PriorityLevels {
    fn default(&self, obj: &mut Value) {
        default_priority_level(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_priority_level(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bootstrap() -> Vec<Value> {
        [
            mandatory_priority_levels(),
            mandatory_flow_schemas(),
            suggested_priority_levels(),
            suggested_flow_schemas(),
        ]
        .concat()
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        match obj["kind"].as_str() {
            Some(FLOW_SCHEMA) => validate_flow_schema(obj),
            _ => validate_priority_level(obj),
        }
    }

    fn fields(causes: &[FieldError]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn bootstrap_objects_are_complete_valid_and_already_defaulted() {
        let all = all_bootstrap();
        assert_eq!(all.len(), 2 + 2 + 6 + 11);
        let mut names = HashSet::new();
        for obj in &all {
            assert_eq!(obj["apiVersion"], API_VERSION);
            assert_eq!(
                obj["metadata"]["annotations"][AUTOUPDATE_ANNOTATION],
                "true"
            );
            assert!(
                names.insert((obj["kind"].clone(), meta::name(obj).to_string())),
                "{obj}"
            );
            assert_eq!(validate(obj), vec![], "{}", meta::name(obj));
            let mut defaulted = obj.clone();
            match obj["kind"].as_str() {
                Some(FLOW_SCHEMA) => default_flow_schema(&mut defaulted),
                _ => default_priority_level(&mut defaulted),
            }
            assert_eq!(&defaulted, obj, "defaulting changes {}", meta::name(obj));
        }
    }

    #[test]
    fn bootstrap_objects_decode_as_the_v1_types() {
        use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
        for obj in all_bootstrap() {
            match obj["kind"].as_str() {
                Some(FLOW_SCHEMA) => {
                    serde_json::from_value::<FlowSchema>(obj.clone()).expect("FlowSchema");
                }
                _ => {
                    serde_json::from_value::<PriorityLevelConfiguration>(obj.clone())
                        .expect("PriorityLevelConfiguration");
                }
            }
        }
    }

    #[test]
    fn bootstrap_tables_match_1_33() {
        let levels: Vec<(String, i64, i64)> = suggested_priority_levels()
            .iter()
            .map(|l| {
                let limited = &l["spec"]["limited"];
                (
                    meta::name(l).to_string(),
                    int(&limited["nominalConcurrencyShares"]),
                    int(&limited["lendablePercent"]),
                )
            })
            .collect();
        let expected = [
            ("system", 30, 33),
            ("node-high", 40, 25),
            ("leader-election", 10, 0),
            ("workload-high", 40, 50),
            ("workload-low", 100, 90),
            ("global-default", 20, 50),
        ];
        assert_eq!(
            levels,
            expected
                .iter()
                .map(|(n, s, l)| (n.to_string(), *s, *l))
                .collect::<Vec<_>>()
        );
        let schemas: Vec<(String, String, i64)> =
            [mandatory_flow_schemas(), suggested_flow_schemas()]
                .concat()
                .iter()
                .map(|s| {
                    (
                        meta::name(s).to_string(),
                        text(&s["spec"]["priorityLevelConfiguration"]["name"]).to_string(),
                        int(&s["spec"]["matchingPrecedence"]),
                    )
                })
                .collect();
        for (name, level, precedence) in [
            ("exempt", "exempt", 1),
            ("probes", "exempt", 2),
            ("system-leader-election", "leader-election", 100),
            ("endpoint-controller", "workload-high", 150),
            ("workload-leader-election", "leader-election", 200),
            ("system-node-high", "node-high", 400),
            ("system-nodes", "system", 500),
            ("kube-controller-manager", "workload-high", 800),
            ("kube-scheduler", "workload-high", 800),
            ("kube-system-service-accounts", "workload-high", 900),
            ("service-accounts", "workload-low", 9000),
            ("global-default", "global-default", 9900),
            ("catch-all", "catch-all", 10000),
        ] {
            assert!(
                schemas.contains(&(name.into(), level.into(), precedence)),
                "{name}"
            );
        }
        assert_eq!(schemas.len(), 13);
        let exempt = &mandatory_flow_schemas()[0];
        assert!(exempt["spec"].get("distinguisherMethod").is_none());
        let node_high = find_named(suggested_flow_schemas(), "system-node-high").expect("fs");
        let rules = &node_high["spec"]["rules"][0]["resourceRules"];
        assert_eq!(rules[0]["clusterScope"], true);
        assert!(rules[1].get("clusterScope").is_none());
    }

    #[test]
    fn flow_schema_defaults() {
        let mut fs = json!({"metadata": {"name": "a"}});
        default_flow_schema(&mut fs);
        assert_eq!(fs["spec"]["matchingPrecedence"], 1000);
        let mut fs = json!({"spec": {"matchingPrecedence": 0}});
        default_flow_schema(&mut fs);
        assert_eq!(fs["spec"]["matchingPrecedence"], 1000);
        let mut fs = json!({"spec": {"matchingPrecedence": 7}});
        default_flow_schema(&mut fs);
        assert_eq!(fs["spec"]["matchingPrecedence"], 7);
    }

    #[test]
    fn priority_level_defaults() {
        let mut pl = json!({"spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {}}}}});
        default_priority_level(&mut pl);
        assert_eq!(
            pl["spec"]["limited"],
            json!({
                "nominalConcurrencyShares": 30,
                "lendablePercent": 0,
                "limitResponse": {"type": "Queue", "queuing": {"queues": 64, "handSize": 8, "queueLengthLimit": 50}},
            })
        );
        // An explicit zero share count is kept (and then refused by validation).
        let mut pl = json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "limitResponse": {"type": "Reject"}}}});
        default_priority_level(&mut pl);
        assert_eq!(pl["spec"]["limited"]["nominalConcurrencyShares"], 0);
        assert_eq!(
            fields(&validate_priority_level(&pl)),
            ["spec.limited.nominalConcurrencyShares"]
        );
        let mut pl = json!({"spec": {"type": "Exempt", "exempt": {}}});
        default_priority_level(&mut pl);
        assert_eq!(
            pl["spec"]["exempt"],
            json!({"nominalConcurrencyShares": 0, "lendablePercent": 0})
        );
    }

    fn level(name: &str, spec: Value) -> Value {
        let mut pl = json!({"kind": PRIORITY_LEVEL, "metadata": {"name": name}, "spec": spec});
        default_priority_level(&mut pl);
        pl
    }

    fn schema(name: &str, spec: Value) -> Value {
        let mut fs = json!({"kind": FLOW_SCHEMA, "metadata": {"name": name}, "spec": spec});
        default_flow_schema(&mut fs);
        fs
    }

    #[test]
    fn priority_level_validation_paths() {
        let pl = level(
            "p",
            json!({"type": "Limited", "limited": {"lendablePercent": 101, "borrowingLimitPercent": -1,
                "limitResponse": {"type": "Queue", "queuing": {"queues": 4, "handSize": 5, "queueLengthLimit": -1}}}}),
        );
        assert_eq!(
            fields(&validate_priority_level(&pl)),
            [
                "spec.limited.limitResponse.queuing.queueLengthLimit",
                "spec.limited.limitResponse.queuing.handSize",
                "spec.limited.lendablePercent",
                "spec.limited.borrowingLimitPercent",
            ]
        );
        let causes = validate_priority_level(&level(
            "p",
            json!({"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {"queues": 128, "handSize": 10}}}}),
        ));
        assert_eq!(
            causes[0].message,
            "Invalid value: 10: required entropy bits of deckSize 128 and handSize 10 should not be greater than 60"
        );
        let causes = validate_priority_level(&level(
            "p",
            json!({"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {"queues": 10000001}}}}),
        ));
        assert_eq!(
            fields(&causes),
            [
                "spec.limited.limitResponse.queuing.queues",
                "spec.limited.limitResponse.queuing.handSize",
            ]
        );
        let causes = validate_priority_level(&level("p", json!({"type": "Exempt"})));
        assert_eq!(fields(&causes), ["spec.type"]);
        assert_eq!(
            causes[0].message,
            "Invalid value: \"Exempt\": type must be 'Exempt' if and only if name is 'exempt'"
        );
        assert_eq!(
            fields(&validate_priority_level(&level(
                "p",
                json!({"type": "Limited"})
            ))),
            ["spec.limited"]
        );
        assert_eq!(
            fields(&validate_priority_level(&level(
                "p",
                json!({"type": "Bogus"})
            ))),
            ["spec.type"]
        );
        let causes = validate_priority_level(&level(
            "p",
            json!({"type": "Limited", "limited": {"limitResponse": {"type": "Reject", "queuing": {}}}}),
        ));
        assert_eq!(fields(&causes), ["spec.limited.limitResponse.queuing"]);
        let causes = validate_priority_level(&level(
            "p",
            json!({"type": "Limited", "limited": {"limitResponse": {"type": "Queue"}}}),
        ));
        assert_eq!(fields(&causes), ["spec.limited.limitResponse.queuing"]);
    }

    #[test]
    fn mandatory_levels_are_fixed_but_exempt_may_change_its_exempt_field() {
        let mut exempt = find_named(mandatory_priority_levels(), EXEMPT).expect("exempt");
        exempt["spec"]["exempt"] = json!({"nominalConcurrencyShares": 7, "lendablePercent": 10});
        assert_eq!(validate_priority_level(&exempt), vec![]);
        exempt["spec"]["exempt"]["lendablePercent"] = json!(101);
        assert_eq!(
            fields(&validate_priority_level(&exempt)),
            ["spec.exempt.lendablePercent"]
        );
        exempt["spec"] = json!({"type": "Exempt"});
        assert_eq!(validate_priority_level(&exempt), vec![]);
        exempt["spec"]["limited"] =
            json!({"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}});
        let causes = validate_priority_level(&exempt);
        assert_eq!(fields(&causes), ["spec.limited", "spec"]);
        assert!(causes[1].message.ends_with(
            ": spec of 'exempt' except the 'spec.exempt' field must equal the fixed value"
        ));

        let mut catch_all = find_named(mandatory_priority_levels(), CATCH_ALL).expect("catch-all");
        // Defaulted fields need not be written out.
        catch_all["spec"]["limited"]
            .as_object_mut()
            .expect("limited")
            .remove("lendablePercent");
        assert_eq!(validate_priority_level(&catch_all), vec![]);
        catch_all["spec"]["limited"]["nominalConcurrencyShares"] = json!(6);
        let causes = validate_priority_level(&catch_all);
        assert_eq!(fields(&causes), ["spec"]);
        assert!(
            causes[0]
                .message
                .ends_with(": spec of 'catch-all' must equal the fixed value")
        );
    }

    #[test]
    fn mandatory_flow_schemas_are_fixed() {
        let mut exempt = find_named(mandatory_flow_schemas(), EXEMPT).expect("exempt");
        // What Go cannot tell from absent does not count as a change.
        exempt["spec"]["rules"][0]["subjects"][0]["user"] = Value::Null;
        exempt["spec"]["rules"][0]["resourceRules"][0]["clusterScope"] = json!(true);
        exempt["spec"]["distinguisherMethod"] = Value::Null;
        assert_eq!(validate_flow_schema(&exempt), vec![]);
        exempt["spec"]["matchingPrecedence"] = json!(2);
        assert_eq!(fields(&validate_flow_schema(&exempt)), ["spec"]);
        let mut catch_all = find_named(mandatory_flow_schemas(), CATCH_ALL).expect("catch-all");
        catch_all["spec"]["distinguisherMethod"]["type"] = json!("ByNamespace");
        let causes = validate_flow_schema(&catch_all);
        assert_eq!(fields(&causes), ["spec"]);
        assert!(
            causes[0]
                .message
                .ends_with(": spec of 'catch-all' must equal the fixed value")
        );
    }

    #[test]
    fn flow_schema_validation_paths() {
        let fs = schema(
            "a",
            json!({
                "matchingPrecedence": 1,
                "distinguisherMethod": {"type": "ByGroup"},
                "priorityLevelConfiguration": {"name": ""},
                "rules": [
                    {"subjects": []},
                    {
                        "subjects": [
                            {"kind": "ServiceAccount", "serviceAccount": {"name": "Bad_Name"}, "user": {"name": "u"}},
                            {"kind": "User"},
                            {"kind": "Group", "group": {}},
                            {"kind": "Robot"},
                        ],
                        "resourceRules": [
                            {"verbs": ["get", "*"], "apiGroups": [], "resources": ["*", "pods"], "namespaces": ["Bad"]},
                            {"verbs": ["fly"], "apiGroups": ["*"], "resources": ["*"]},
                        ],
                        "nonResourceRules": [
                            {"verbs": ["*"], "nonResourceURLs": ["healthz", "/a b", "//x", "/a*", "/ok/*", "/"]},
                            {"verbs": ["get"], "nonResourceURLs": ["*", "/x"]},
                        ],
                    },
                ],
            }),
        );
        let causes = validate_flow_schema(&fs);
        assert_eq!(
            fields(&causes),
            [
                "spec.matchingPrecedence",
                "spec.distinguisherMethod.type",
                "spec.priorityLevelConfiguration.name",
                "spec.rules[0].subjects",
                "spec.rules[0]",
                "spec.rules[1].subjects[0].serviceAccount.name",
                "spec.rules[1].subjects[0].serviceAccount.namespace",
                "spec.rules[1].subjects[0].user",
                "spec.rules[1].subjects[1].user",
                "spec.rules[1].subjects[2].group.name",
                "spec.rules[1].subjects[3].kind",
                "spec.rules[1].resourceRules[0].verbs",
                "spec.rules[1].resourceRules[0].apiGroups",
                "spec.rules[1].resourceRules[0].resources",
                "spec.rules[1].resourceRules[0].namespaces[0]",
                "spec.rules[1].resourceRules[1].verbs",
                "spec.rules[1].resourceRules[1].namespaces",
                "spec.rules[1].nonResourceRules[0].nonResourceURLs[0]",
                "spec.rules[1].nonResourceRules[0].nonResourceURLs[1]",
                "spec.rules[1].nonResourceRules[0].nonResourceURLs[2]",
                "spec.rules[1].nonResourceRules[0].nonResourceURLs[3]",
                "spec.rules[1].nonResourceRules[1].nonResourceURLs",
            ]
        );
        let message = |field: &str| {
            causes
                .iter()
                .find(|c| c.field == field)
                .map(|c| c.message.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            message("spec.matchingPrecedence"),
            "Invalid value: 1: only the schema named 'exempt' may have matchingPrecedence 1"
        );
        assert_eq!(
            message("spec.rules[0].subjects"),
            "Required value: subjects must contain at least one value"
        );
        assert_eq!(
            message("spec.rules[1].subjects[0].user"),
            "Forbidden: user is forbidden when subject kind is not 'User'"
        );
        assert_eq!(
            message("spec.rules[1].resourceRules[1].verbs"),
            "Unsupported value: [\"fly\"]: supported values: \"create\", \"delete\", \"deletecollection\", \"get\", \"list\", \"patch\", \"proxy\", \"update\", \"watch\""
        );
        assert_eq!(
            message("spec.rules[1].nonResourceRules[0].nonResourceURLs[3]"),
            "Invalid value: \"/a*\": wildcard can only do suffix matching"
        );
        let too_high = schema(
            "b",
            json!({"matchingPrecedence": 10001, "priorityLevelConfiguration": {"name": "x"}}),
        );
        assert_eq!(
            validate_flow_schema(&too_high)[0].message,
            "Invalid value: 10001: must not be greater than 10000"
        );
    }

    #[test]
    fn condition_types_are_required_and_unique() {
        let mut fs = find_named(suggested_flow_schemas(), "probes").expect("probes");
        fs["status"] =
            json!({"conditions": [{"type": "Dangling"}, {"type": "Dangling"}, {"type": ""}]});
        assert_eq!(
            fields(&validate_flow_schema(&fs)),
            ["status.conditions[1].type", "status.conditions[2].type"]
        );
    }
}
