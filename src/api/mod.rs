//! What the API serves: the resource table, object rules, schemas, patches, errors.

pub mod conditions;
pub mod crd;
pub mod error;
pub mod managed_fields;
pub mod nodes;
pub mod object;
pub mod openapi_v2;
pub mod pods;
pub mod printers;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod scheduling;
pub mod schema;
pub mod selectors;
pub mod storage;
pub mod strategic_merge;
pub mod strategy;
pub mod summary;

pub use error::{ApiError, FieldError};
