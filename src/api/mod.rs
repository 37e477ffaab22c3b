//! What the API serves, in four parts that import downwards only:
//! `registry` (the resource table, strategies, CRDs, schemas) uses
//! `codec` (protobuf, strategic merge, managed fields), `printers`
//! (table columns) and `values`; `values` (Kubernetes value semantics:
//! metadata, quantities, selectors, conditions, pod and node facts) uses
//! nothing of the others. Client-side components import only `values`;
//! `error` is the one HTTP error shape.

pub mod codec;
pub mod error;
pub mod printers;
pub mod registry;
pub mod values;

pub use error::{ApiError, FieldError};
