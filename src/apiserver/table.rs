//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with each
//! row's PartialObjectMetadata so `-L` and `--show-labels` work. Rows are added
//! one object at a time so a large LIST never holds every full object at once.

use serde_json::{Value, json};

use super::request::Query;
use crate::api::printers::{self, Printer};
use crate::api::registry::resources::ResourceType;

/// Builds a Table row by row.
pub struct TableBuilder<'a> {
    rt: &'a ResourceType,
    printer: Box<dyn Printer>,
    include_object: String,
    now: chrono::DateTime<chrono::Utc>,
    rows: Vec<Value>,
}

impl<'a> TableBuilder<'a> {
    /// A builder for `rt`, honouring `includeObject` from `query`.
    pub fn new(rt: &'a ResourceType, query: &Query) -> Self {
        let printer = match &rt.custom {
            Some(custom) => printers::custom_printer(&custom.printer_columns),
            None => printers::printer_for(&rt.group, &rt.kind),
        };
        let include_object = query.get("includeObject").unwrap_or("Metadata").to_string();
        Self {
            rt,
            printer,
            include_object,
            now: chrono::Utc::now(),
            rows: Vec::new(),
        }
    }

    /// Adds the row of one object.
    pub fn push(&mut self, obj: &Value) {
        let object = match self.include_object.as_str() {
            "None" => Value::Null,
            "Object" => obj.clone(),
            _ => crate::api::registry::object::partial_metadata(obj),
        };
        let mut row = json!({"cells": self.printer.cells(obj, self.now), "object": object});
        let conditions = printers::row_conditions(&self.rt.group, &self.rt.kind, obj);
        if !conditions.is_empty() {
            row["conditions"] = json!(conditions);
        }
        self.rows.push(row);
    }

    /// The finished Table.
    pub fn finish(mut self, resource_version: &str, continue_token: Option<&str>) -> Value {
        if self.rt.custom.is_none() {
            printers::order_rows(&self.rt.group, &self.rt.kind, &mut self.rows);
        }
        let mut metadata = json!({"resourceVersion": resource_version});
        if let Some(token) = continue_token {
            metadata["continue"] = json!(token);
        }
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "columnDefinitions": self.printer.columns(),
            "rows": self.rows,
        })
    }
}

/// A one-row Table (single GETs and watch events).
pub fn single(rt: &ResourceType, obj: &Value, resource_version: &str, query: &Query) -> Value {
    let mut builder = TableBuilder::new(rt, query);
    builder.push(obj);
    builder.finish(resource_version, None)
}
