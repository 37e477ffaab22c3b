//! ReplicationControllers (the API only: kelp runs no controller for them).

use serde_json::{Value, json};

use super::{Strategy, default_field, default_template};

/// ReplicationControllers: one replica, their template defaulted.
#[derive(Debug)]
pub struct ReplicationControllers;

impl Strategy for ReplicationControllers {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "/spec/replicas", json!(1));
        default_template(obj.pointer_mut("/spec/template"));
    }
}
