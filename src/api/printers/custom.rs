//! Printers for custom resources, from a CRD version's `additionalPrinterColumns`
//! (apiextensions-apiserver's tableconvertor).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{go_json, name, opt_int, parse_time, since, str_at};
use super::jsonpath::{self, Step};
use super::{CREATED_DESC, ColumnDefinition, NAME, Printer};

/// The printer for a custom resource from its CRD version's additionalPrinterColumns (JSON array as in the CRD).
///
/// As upstream: the Name column comes first; a version without columns gets a
/// single `Age` date column on `.metadata.creationTimestamp`; a column whose
/// JSONPath does not parse ends the list (the columns before it are kept).
pub fn custom_printer(additional_printer_columns: &Value) -> Box<dyn Printer> {
    let specs: Vec<&Value> = additional_printer_columns
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let default_age = serde_json::json!({
        "name": "Age", "type": "date", "description": CREATED_DESC, "jsonPath": ".metadata.creationTimestamp"
    });
    let specs = if specs.is_empty() {
        vec![&default_age]
    } else {
        specs
    };
    let mut columns = Vec::new();
    for spec in specs {
        let json_path = str_at(spec, "/jsonPath");
        let Ok(path) = jsonpath::parse(json_path) else {
            break;
        };
        let description = match str_at(spec, "/description") {
            "" => format!("Custom resource definition column (in JSONPath format): {json_path}"),
            d => d.to_string(),
        };
        let definition = ColumnDefinition {
            name: str_at(spec, "/name").to_string(),
            type_: str_at(spec, "/type").to_string(),
            format: str_at(spec, "/format").to_string(),
            description,
            priority: opt_int(spec, "/priority")
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
        };
        columns.push(CustomColumn { definition, path });
    }
    Box::new(CustomPrinter { columns })
}

struct CustomColumn {
    definition: ColumnDefinition,
    path: Vec<Step>,
}

struct CustomPrinter {
    columns: Vec<CustomColumn>,
}

impl Printer for CustomPrinter {
    fn columns(&self) -> Vec<ColumnDefinition> {
        let name_column = NAME.definition();
        std::iter::once(name_column)
            .chain(self.columns.iter().map(|c| c.definition.clone()))
            .collect()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let mut cells = vec![name(obj)];
        for column in &self.columns {
            let first = jsonpath::find(obj, &column.path)
                .ok()
                .and_then(|found| found.first().copied());
            let cell = match (first, column.definition.type_.as_str()) {
                (None, _) => Value::Null,
                (Some(v), "string") => print_result(v).into(),
                (Some(v), kind) => typed_cell(kind, v, now),
            };
            cells.push(cell);
        }
        cells
    }
}

/// A JSONPath result as `kubectl -o jsonpath` prints it: strings raw, numbers
/// and booleans as Go prints them, objects and arrays as compact JSON.
fn print_result(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => crate::gofmt::float(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => go_json(v),
    }
}

/// A cell of a non-string column: the value when it has the column's type, else null.
fn typed_cell(kind: &str, v: &Value, now: DateTime<Utc>) -> Value {
    match (kind, v) {
        ("integer", Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).into(),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => (*b).into(),
        ("date", Value::String(s)) => date_cell(s, now).into(),
        _ => Value::Null,
    }
}

/// A date column renders as an age ("5m"), "<unknown>" for an empty or zero time,
/// and "<invalid>" for text that is not RFC 3339.
fn date_cell(s: &str, now: DateTime<Utc>) -> String {
    if !s.is_empty() && s != "null" && DateTime::parse_from_rfc3339(s).is_err() {
        return "<invalid>".to_string();
    }
    since(parse_time(s), now)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ago, now};
    use super::*;
    use serde_json::json;

    fn crd_columns() -> Value {
        json!([
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "description": "Desired replicas"},
            {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name", "priority": 1},
            {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
            {"name": "Labels", "type": "string", "jsonPath": ".metadata.labels"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ])
    }

    #[test]
    fn columns_follow_the_crd_after_name() {
        let p = custom_printer(&crd_columns());
        let cols = p.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Name", "Ready", "Replicas", "First", "Ratio", "Paused", "Labels", "Age"
            ]
        );
        assert_eq!(cols[0].format, "name");
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type==\"Ready\")].status"
        );
        assert_eq!(cols[2].description, "Desired replicas");
        assert_eq!(cols[3].priority, 1);
        assert_eq!(cols[7].type_, "date");
    }

    #[test]
    fn cells_are_typed_like_upstream() {
        let obj = json!({
            "metadata": {"name": "db-1", "creationTimestamp": ago(300), "labels": {"z": "1", "a": "<2>"}},
            "spec": {"replicas": 3, "items": [{"name": "first"}, {"name": "second"}], "paused": true},
            "status": {"ratio": 0.5, "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let cells = custom_printer(&crd_columns()).cells(&obj, now());
        assert_eq!(
            cells,
            [
                json!("db-1"),
                json!("True"),
                json!(3),
                json!("first"),
                json!(0.5),
                json!(true),
                json!(r#"{"a":"\u003c2\u003e","z":"1"}"#),
                json!("5m")
            ]
        );
    }

    #[test]
    fn missing_or_mistyped_values_are_null() {
        let obj = json!({"metadata": {"name": "x"}, "spec": {"replicas": "three", "paused": "yes"},
                         "status": {"ratio": 2}});
        let cells = custom_printer(&crd_columns()).cells(&obj, now());
        assert_eq!(
            cells,
            [
                json!("x"),
                Value::Null,
                Value::Null,
                Value::Null,
                json!(2.0),
                Value::Null,
                Value::Null,
                Value::Null
            ]
        );
    }

    #[test]
    fn strings_render_numbers_like_go() {
        let cols = json!([{"name": "N", "type": "string", "jsonPath": ".spec.n"},
                          {"name": "F", "type": "string", "jsonPath": ".spec.f"},
                          {"name": "B", "type": "string", "jsonPath": ".spec.b"},
                          {"name": "Z", "type": "string", "jsonPath": ".spec.z"},
                          {"name": "I", "type": "integer", "jsonPath": ".spec.f"}]);
        let obj = json!({"spec": {"n": 42, "f": 2.75, "b": false, "z": null}});
        let cells = custom_printer(&cols).cells(&obj, now());
        assert_eq!(
            cells[1..],
            [
                json!("42"),
                json!("2.75"),
                json!("false"),
                json!("<no value>"),
                json!(2)
            ]
        );
    }

    #[test]
    fn dates_render_as_ages() {
        let cols = json!([{"name": "Started", "type": "date", "jsonPath": ".status.started"}]);
        let p = custom_printer(&cols);
        let at = |v: Value| p.cells(&json!({"status": {"started": v}}), now())[1].clone();
        assert_eq!(at(json!(ago(3 * 3600 + 600))), json!("3h10m"));
        assert_eq!(at(json!("yesterday")), json!("<invalid>"));
        assert_eq!(at(json!("")), json!("<unknown>"));
        assert_eq!(at(json!("0001-01-01T00:00:00Z")), json!("<unknown>"));
        assert_eq!(at(json!(5)), Value::Null);
    }

    #[test]
    fn no_columns_means_name_and_age() {
        for empty in [json!([]), json!(null)] {
            let p = custom_printer(&empty);
            let names: Vec<String> = p.columns().into_iter().map(|c| c.name).collect();
            assert_eq!(names, ["Name", "Age"]);
            assert_eq!(p.columns()[1].description, CREATED_DESC);
            let obj = json!({"metadata": {"name": "n", "creationTimestamp": ago(2 * 86400)}});
            assert_eq!(p.cells(&obj, now()), [json!("n"), json!("2d")]);
        }
    }

    #[test]
    fn an_unparsable_path_ends_the_columns() {
        let cols = json!([{"name": "A", "type": "string", "jsonPath": ".spec.a"},
                          {"name": "Bad", "type": "string", "jsonPath": ".spec[oops"},
                          {"name": "C", "type": "string", "jsonPath": ".spec.c"}]);
        let p = custom_printer(&cols);
        assert_eq!(p.columns().len(), 2);
        assert_eq!(
            p.cells(&json!({"spec": {"a": "x"}}), now()),
            [json!(""), json!("x")]
        );
    }
}
