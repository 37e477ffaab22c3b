//! Pod networking: the CNI plugin (kelp invoked as `kelp-cni`) and its IP
//! address management. The bridge, veth and masquerade work come with the
//! node issue.

pub mod bridge;
pub mod cidr;
pub mod cni;
pub mod ipam;
pub mod masquerade;
