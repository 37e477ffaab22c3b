//! Pod networking: the CNI plugin (kelp invoked as `kelp-cni`), its IP
//! address management, the bridge and veth pairs, masquerading, and the
//! host's own addresses and resolver configuration.

pub mod bridge;
pub mod cidr;
pub mod cni;
pub mod host;
pub mod hostport;
pub mod ipam;
pub mod iptables;
pub mod masquerade;
pub mod netns;
pub mod peers;
pub mod resolv;
pub mod routes;
