//! Label selectors (equality- and set-based) and field selectors, parsed from
//! query strings into typed values.

use serde_json::Value;

use crate::api::ApiError;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    /// The label it is about.
    fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Whether it selects everything (no requirement).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `app=web,tier!=db,env in (a,b),!legacy`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{term}', expected: valid label selector"
                ))
            })?);
        }
        Ok(Self(requirements))
    }

    /// Whether `labels` (an object of strings, or absent) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches_labels(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Builds a selector from a typed `metav1.LabelSelector`.
    pub fn from_typed(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Self {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for expr in selector.match_expressions.iter().flatten() {
            let key = expr.key.clone();
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(requirement(&expr.operator, key, values));
        }
        Self(requirements)
    }

    /// Builds a selector from a `metav1.LabelSelector` object, leniently:
    /// an unknown operator matches only objects without the key.
    pub fn from_object(selector: &Value) -> Self {
        Self::read_object(selector, false).unwrap_or_default()
    }

    /// Builds a selector from a `metav1.LabelSelector` object as upstream's
    /// `LabelSelectorAsSelector` does: a label value that is not a string,
    /// an unknown operator, `In`/`NotIn` without values or
    /// `Exists`/`DoesNotExist` with some are refused. Absent or null: empty.
    pub fn from_object_checked(selector: Option<&Value>) -> Result<Self, InvalidSelector> {
        match selector.filter(|s| !s.is_null()) {
            Some(selector) => Self::read_object(selector, true),
            None => Ok(Self::default()),
        }
    }

    /// Reads a `metav1.LabelSelector`; only when `checked` can it fail.
    fn read_object(selector: &Value, checked: bool) -> Result<Self, InvalidSelector> {
        let mut requirements = Vec::new();
        for (k, v) in selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let v = match v.as_str() {
                Some(v) => v,
                None if checked => return Err(InvalidSelector),
                None => "",
            };
            requirements.push(Requirement::Equals(k.clone(), v.into()));
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
            let fits = match operator {
                "In" | "NotIn" => !values.is_empty(),
                "Exists" | "DoesNotExist" => values.is_empty(),
                _ => false,
            };
            if checked && !fits {
                return Err(InvalidSelector);
            }
            requirements.push(requirement(operator, key.into(), values));
        }
        Ok(Self(requirements))
    }

    /// The selector as upstream's `Selector.String()` prints it:
    /// requirements ordered by key, set values sorted (`a=b,c in (d,e),!f`).
    pub fn to_query(&self) -> String {
        let sorted = |vs: &[String]| {
            let mut vs = vs.to_vec();
            vs.sort();
            vs.join(",")
        };
        let mut requirements: Vec<&Requirement> = self.0.iter().collect();
        requirements.sort_by(|a, b| a.key().cmp(b.key()));
        requirements
            .into_iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", sorted(vs)),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", sorted(vs)),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A `metav1.LabelSelector` upstream cannot turn into a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSelector;

/// A `matchExpressions` entry's requirement (an unknown operator matches
/// only objects without the key).
fn requirement(operator: &str, key: String, values: Vec<String>) -> Requirement {
    match operator {
        "In" => Requirement::In(key, values),
        "NotIn" => Requirement::NotIn(key, values),
        "Exists" => Requirement::Exists(key),
        _ => Requirement::DoesNotExist(key),
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_term(term: &str) -> Option<Requirement> {
    if let Some(key) = term.strip_prefix('!') {
        return valid_key(key.trim()).then(|| Requirement::DoesNotExist(key.trim().into()));
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            return (valid_key(k) && valid_value(v)).then(|| make(k.into(), v.into()));
        }
    }
    for (op, set_in) in [(" notin ", false), (" in ", true)] {
        if let Some((k, rest)) = term.split_once(op) {
            let rest = rest.trim();
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let k = k.trim().to_string();
            if !valid_key(&k) || !values.iter().all(|v| valid_value(v)) {
                return None;
            }
            return Some(if set_in {
                Requirement::In(k, values)
            } else {
                Requirement::NotIn(k, values)
            });
        }
    }
    valid_key(term).then(|| Requirement::Exists(term.into()))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn valid_value(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A parsed field selector: `key=value`, `key==value`, `key!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Whether it selects everything (no term).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses and checks every key is among `supported` (plus metadata.name/namespace).
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let key = key.trim();
            if !["metadata.name", "metadata.namespace"].contains(&key) && !supported.contains(&key)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {key}"
                )));
            }
            terms.push((key.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// Whether `obj` satisfies all terms; missing fields compare as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(key, equal, value)| {
            // An Event's `source` selects on its source component (upstream's field label conversion).
            let path = if key == "source" {
                "source.component"
            } else {
                key
            };
            let mut current = Some(obj);
            for part in path.split('.') {
                current = current.and_then(|c| c.get(part));
            }
            let actual = match current {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *value) == *equal
        })
    }

    /// The `metadata.name` an equality term pins, if any (lets a watch skip others cheaply).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, eq, _)| k == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

/// Field selector keys each kind supports beyond metadata.name/namespace (upstream's field label conversions).
pub fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") => &["status.replicas"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_source_selects_the_component() {
        let event = json!({"source": {"component": "default-scheduler"}, "type": "Normal"});
        let fields = supported_fields("", "Event");
        assert!(
            FieldSelector::parse("source=default-scheduler", fields)
                .unwrap()
                .matches(&event)
        );
        assert!(
            !FieldSelector::parse("source=kubelet", fields)
                .unwrap()
                .matches(&event)
        );
    }

    #[test]
    fn label_selectors() {
        let labels = json!({"app": "nginx", "tier": "frontend"});
        let cases = [
            ("app=nginx", true),
            ("app==nginx,tier=frontend", true),
            ("app!=nginx", false),
            ("tier in (frontend, backend)", true),
            ("tier notin (frontend)", false),
            ("app", true),
            ("!app", false),
            ("!role", true),
            ("", true),
        ];
        for (text, want) in cases {
            assert_eq!(
                LabelSelector::parse(text)
                    .expect(text)
                    .matches(Some(&labels)),
                want,
                "{text}"
            );
        }
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("a=b=c").is_err());
    }

    #[test]
    fn from_object_round_trip() {
        let sel = LabelSelector::from_object(
            &json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]}),
        );
        assert_eq!(sel.to_query(), "app=web,env in (a,b)");
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let supported = supported_fields("", "Pod");
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", supported)
                .expect("parse")
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name=b", supported)
                .expect("parse")
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=", supported)
                .expect("parse")
                .matches(&json!({}))
        );
        let err = FieldSelector::parse("spec.bogus=x", supported).expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.bogus");
    }
}
