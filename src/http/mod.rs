//! HTTP plumbing the servers (API server, kubelet, ingress proxy) use: the
//! TLS listener that serves a router with each connection's client
//! certificate identity (`serve`), relaying upgraded connections (exec,
//! attach, port-forward, proxies) between a client and a backend
//! (`upgrade`), the header rules of reverse proxies (`headers`), and
//! kube-rs clients of a remote API server (`client`: agents, the helm
//! job's entry). A leaf: it knows nothing of any server.

pub mod client;
pub mod headers;
pub mod serve;
pub mod upgrade;
