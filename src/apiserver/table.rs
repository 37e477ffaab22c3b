//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with each
//! row's PartialObjectMetadata so `-L` and `--show-labels` work.

use serde_json::{Value, json};

use super::ApiState;
use super::request::Query;
use crate::api::printers;
use crate::api::resources::ResourceType;

/// A Table of `objects` with the kind's columns.
pub fn table(
    _state: &ApiState,
    rt: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    query: &Query,
) -> Value {
    let printer = match &rt.custom {
        Some(custom) => printers::custom_printer(&custom.printer_columns),
        None => printers::printer_for(&rt.group, &rt.kind),
    };
    let now = chrono::Utc::now();
    let include_object = query.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            let mut row = json!({"cells": printer.cells(obj, now), "object": object});
            let conditions = printers::row_conditions(&rt.group, &rt.kind, obj);
            if !conditions.is_empty() {
                row["conditions"] = json!(conditions);
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": printer.columns(),
        "rows": rows,
    })
}
