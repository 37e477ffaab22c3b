//! What the API server serves and the rules a write passes: the resource
//! table, one strategy per resource, the metadata rules every resource
//! shares, CRDs and the schemas served from them.

pub mod crd;
pub mod object;
pub mod openapi_v2;
pub mod resources;
pub mod schema;
pub mod strategy;
