//! How objects travel: Kubernetes' protobuf encoding, strategic merge
//! patches and the managed-fields record of who set what.

pub mod managed_fields;
pub mod protobuf;
pub mod strategic_merge;
