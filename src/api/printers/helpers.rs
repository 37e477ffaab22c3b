//! Shared helpers for the printers: reading fields out of JSON objects, ages,
//! label and selector formatting, and the placeholder conventions upstream uses.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Map, Value};

use super::human_duration;

/// Placeholder for an empty or missing value.
pub(crate) const NONE: &str = "<none>";
/// Placeholder for an optional field that is not set.
pub(crate) const UNSET: &str = "<unset>";
/// Placeholder for a time or value that cannot be known.
pub(crate) const UNKNOWN: &str = "<unknown>";

static NULL: Value = Value::Null;

/// The value at a JSON pointer (`/spec/replicas`), if present and not null.
pub(crate) fn at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr).filter(|x| !x.is_null())
}

/// The value at a JSON pointer, or JSON null.
pub(crate) fn at_or_null<'a>(v: &'a Value, ptr: &str) -> &'a Value {
    at(v, ptr).unwrap_or(&NULL)
}

/// The string at a pointer, if it is a string.
pub(crate) fn opt_str<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    at(v, ptr).and_then(Value::as_str)
}

/// The string at a pointer, or "" (Go's zero value).
pub(crate) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    opt_str(v, ptr).unwrap_or("")
}

/// The string at a pointer, or `placeholder` when it is missing or empty.
pub(crate) fn str_or(v: &Value, ptr: &str, placeholder: &str) -> String {
    non_empty_or(str_at(v, ptr), placeholder)
}

/// `s`, or `placeholder` when `s` is empty.
pub(crate) fn non_empty_or(s: &str, placeholder: &str) -> String {
    if s.is_empty() { placeholder } else { s }.to_string()
}

/// A JSON number as an integer (whole floats accepted, as Go's decoder does).
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// The integer at a pointer, if present.
pub(crate) fn opt_int(v: &Value, ptr: &str) -> Option<i64> {
    at(v, ptr).and_then(as_int)
}

/// The integer at a pointer, or 0 (Go's zero value).
pub(crate) fn int_at(v: &Value, ptr: &str) -> i64 {
    opt_int(v, ptr).unwrap_or(0)
}

/// The boolean at a pointer, if present.
pub(crate) fn opt_bool(v: &Value, ptr: &str) -> Option<bool> {
    at(v, ptr).and_then(Value::as_bool)
}

/// The array at a pointer, or an empty slice.
pub(crate) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    at(v, ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at a pointer, if present.
pub(crate) fn obj<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    at(v, ptr).and_then(Value::as_object)
}

/// The number of entries of the object (or array) at a pointer.
pub(crate) fn len_at(v: &Value, ptr: &str) -> i64 {
    match at(v, ptr) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

/// A timestamp at a pointer; `None` when missing, unparsable or Go's zero time.
pub(crate) fn time_at(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    opt_str(v, ptr).and_then(parse_time)
}

/// Parses an RFC 3339 timestamp; Go's zero time counts as unset.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    let zero = t.year() == 1
        && t.ordinal() == 1
        && t.num_seconds_from_midnight() == 0
        && t.nanosecond() == 0;
    (!zero).then_some(t)
}

/// Human time elapsed since `t` ("<unknown>" when unset), like translateTimestampSince.
pub(crate) fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| UNKNOWN.to_string(), |t| human_duration(now - t))
}

/// The object's name cell.
pub(crate) fn name(v: &Value) -> Value {
    str_at(v, "/metadata/name").into()
}

/// The object's age cell, from metadata.creationTimestamp.
pub(crate) fn age(v: &Value, now: DateTime<Utc>) -> Value {
    since(time_at(v, "/metadata/creationTimestamp"), now).into()
}

/// True when metadata.deletionTimestamp is set.
pub(crate) fn deleting(v: &Value) -> bool {
    at(v, "/metadata/deletionTimestamp").is_some()
}

/// `key=value` pairs sorted by key and joined with ",", or "<none>" (labels.FormatLabels).
pub(crate) fn format_labels(map: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    non_empty_or(&pairs.join(","), NONE)
}

pub(crate) use crate::api::values::selectors::InvalidSelector;

/// The string form of a metav1 LabelSelector ("" for a nil or empty one).
pub(crate) fn selector_string(sel: Option<&Value>) -> Result<String, InvalidSelector> {
    crate::api::values::selectors::LabelSelector::from_object_checked(sel).map(|s| s.to_query())
}

/// A label selector for display: "<none>" when empty, "<error>" when invalid.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) => non_empty_or(&s, NONE),
        Err(InvalidSelector) => "<error>".to_string(),
    }
}

/// The label selector at a pointer, formatted for display.
pub(crate) fn selector_at(v: &Value, ptr: &str) -> String {
    format_label_selector(at(v, ptr))
}

/// Container names and images of a pod spec, each joined with ",".
pub(crate) fn containers(pod_spec: &Value) -> (Value, Value) {
    let list = arr(pod_spec, "/containers");
    let names: Vec<&str> = list.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(",").into(), images.join(",").into())
}

/// Joins at most `max` items with ",", adding " + N more..." (listWithMoreString).
pub(crate) fn list_with_more(all: &[String], max: usize) -> String {
    let shown = all.iter().take(max).cloned().collect::<Vec<_>>().join(",");
    if all.len() > max {
        format!("{shown} + {} more...", all.len() - max)
    } else {
        non_empty_or(&shown, UNSET)
    }
}

/// An IntOrString value as Go prints it.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => as_int(other).unwrap_or(0).to_string(),
    }
}

/// A resource quantity as text; "<nil>" when absent (a nil *Quantity's String()).
pub(crate) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "<nil>".to_string(),
    }
}

/// A quantity that defaults to zero ("0") when missing, as a map lookup in Go does.
pub(crate) fn quantity_or_zero(v: Option<&Value>) -> String {
    v.map_or_else(|| "0".to_string(), |q| quantity(Some(q)))
}

/// "True"/"False", or "<unset>" for a missing optional bool (printBoolPtr).
pub(crate) fn bool_ptr(v: Option<bool>) -> String {
    match v {
        Some(true) => "True",
        Some(false) => "False",
        None => UNSET,
    }
    .to_string()
}

/// The first condition of `kind` in the array at `ptr`.
pub(crate) fn condition<'a>(v: &'a Value, ptr: &str, kind: &str) -> Option<&'a Value> {
    arr(v, ptr).iter().find(|c| str_at(c, "/type") == kind)
}

/// True when the first condition of `kind` has status "True".
pub(crate) fn condition_true(v: &Value, ptr: &str, kind: &str) -> bool {
    condition(v, ptr, kind).is_some_and(|c| str_at(c, "/status") == "True")
}

/// Serializes like Go's encoding/json: sorted object keys, HTML-safe escaping.
pub(crate) fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_go_json(v, &mut out);
    out
}

fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => {
            out.push_str(&crate::gofmt::json_float(n.as_f64().unwrap_or(0.0)))
        }
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(&map[k], out);
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_sort_keys_and_values() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                  {"key": "gone", "operator": "DoesNotExist"}]});
        assert_eq!(
            selector_string(Some(&sel)).as_deref(),
            Ok("a=1,b=2,env in (dev,prod),!gone")
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        let bad = json!({"matchExpressions": [{"key": "x", "operator": "In", "values": []}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
    }

    #[test]
    fn labels_and_lists() {
        let m = json!({"z": "1", "a": "2"});
        assert_eq!(format_labels(m.as_object()), "a=2,z=1");
        assert_eq!(format_labels(None), "<none>");
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(list_with_more(&items, 3), "1,2,3 + 2 more...");
        assert_eq!(list_with_more(&[], 3), "<unset>");
    }

    #[test]
    fn go_json_sorts_keys_and_escapes_html() {
        assert_eq!(
            go_json(&json!({"b": [1, 2.5e-7], "a": "<x>"})),
            r#"{"a":"\u003cx\u003e","b":[1,2.5e-7]}"#
        );
    }

    #[test]
    fn zero_time_is_unset() {
        assert!(parse_time("0001-01-01T00:00:00Z").is_none());
        assert!(parse_time("2024-01-01T00:00:00Z").is_some());
        assert!(parse_time("garbage").is_none());
    }
}
