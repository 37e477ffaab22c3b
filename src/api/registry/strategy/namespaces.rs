//! Namespaces: Active from the start, emptied by the namespace controller
//! before the server removes them.

use serde_json::{Value, json};

use super::{Strategy, default_field};

/// Namespaces: Active from the start, the `kubernetes` finalizer.
#[derive(Debug)]
pub struct Namespaces;

impl Strategy for Namespaces {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }

    fn default(&self, obj: &mut Value) {
        default_field(obj, "/spec/finalizers", json!(["kubernetes"]));
    }

    fn finalized_by_server(&self) -> bool {
        true
    }

    fn mark_deleting(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Terminating"});
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }
}
