//! PodTemplates.

use serde_json::Value;

use super::{Strategy, default_template};

/// PodTemplates: their pod spec defaulted.
#[derive(Debug)]
pub struct PodTemplates;

impl Strategy for PodTemplates {
    fn default(&self, obj: &mut Value) {
        default_template(obj.get_mut("template"));
    }
}
