//! HTTP plumbing both servers (the API server and the kubelet) use: the
//! TLS listener that serves a router with each connection's client
//! certificate identity (`serve`), and relaying upgraded connections
//! (exec, attach, port-forward, proxies) between a client and a backend
//! (`upgrade`). A leaf: it knows nothing of either server.

pub mod serve;
pub mod upgrade;
