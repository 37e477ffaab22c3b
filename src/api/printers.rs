//! Server-side printing columns (placeholder until the per-kind printers land).

use serde_json::{Value, json};

/// One column definition as in meta.k8s.io/v1 TableColumnDefinition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnDefinition {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Format.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 = always shown).
    pub priority: i32,
}

/// A kind's columns and cells.
pub trait Printer: Send + Sync {
    /// Columns.
    fn columns(&self) -> Vec<ColumnDefinition>;
    /// Cells of one row.
    fn cells(&self, obj: &Value, now: chrono::DateTime<chrono::Utc>) -> Vec<Value>;
}

struct Default;

impl Printer for Default {
    fn columns(&self) -> Vec<ColumnDefinition> {
        vec![
            ColumnDefinition {
                name: "Name".into(),
                type_: "string".into(),
                format: "name".into(),
                description: "Name".into(),
                priority: 0,
            },
            ColumnDefinition {
                name: "Created At".into(),
                type_: "date".into(),
                format: "".into(),
                description: "Creation".into(),
                priority: 0,
            },
        ]
    }
    fn cells(&self, obj: &Value, _now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
        vec![
            obj.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            obj.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        ]
    }
}

/// The printer for a kind.
pub fn printer_for(_group: &str, _kind: &str) -> Box<dyn Printer> {
    Box::new(Default)
}

/// The printer for a custom resource.
pub fn custom_printer(_columns: &Value) -> Box<dyn Printer> {
    Box::new(Default)
}
