//! Object metadata as values: accessors, upstream's time format, DNS-1123
//! name rules, generated-name suffixes and the "default class" pick.
//! What every component reads; the rules a write must pass are
//! `registry::object`'s.

use rand::Rng;
use serde_json::{Map, Value, json};

/// `metadata` of an object (empty if missing).
pub fn metadata(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata`, created if missing. `obj` must be an object (callers check bodies first).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Invariant: the lines above made `metadata` an object.
        _ => unreachable!("metadata was just set to an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    metadata(obj)
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// Current time as upstream formats `metav1.Time`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Upstream's message for a name that is not a DNS-1123 label.
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// Upstream's message for a name that is not a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// A DNS-1123 label: lower-case alphanumerics and '-', at most 63.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Upstream's DNS-1123 label rule, as an error message.
pub fn dns_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!is_label(s)).then(|| DNS1123_LABEL_MSG.to_string())
}

/// Upstream's DNS-1123 subdomain rule, as an error message.
pub fn dns_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    (s.is_empty() || !s.split('.').all(is_label)).then(|| DNS1123_SUBDOMAIN_MSG.to_string())
}

/// Five characters from upstream's alphabet (no vowels, no confusables).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Among `objects` (classes), the newest one an annotation of `marks`
/// says is the default (`"true"`), ties by name: how upstream picks the
/// default StorageClass and IngressClass.
pub fn newest_default<'a>(objects: &'a [Value], marks: &[&str]) -> Option<&'a Value> {
    let text = |c: &Value, field: &str| c["metadata"][field].as_str().unwrap_or("").to_string();
    objects
        .iter()
        .filter(|c| {
            marks
                .iter()
                .any(|a| c["metadata"]["annotations"][*a].as_str() == Some("true"))
        })
        .min_by(|a, b| {
            text(b, "creationTimestamp")
                .cmp(&text(a, "creationTimestamp"))
                .then_with(|| text(a, "name").cmp(&text(b, "name")))
        })
}
