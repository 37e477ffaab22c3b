//! Nodes.

use super::Strategy;

/// Nodes: deleted at once, answered with the object.
#[derive(Debug)]
pub struct Nodes;

impl Strategy for Nodes {
    fn returns_deleted_object(&self) -> bool {
        true
    }
}
