//! kelp: a whole Kubernetes cluster in one binary for small machines.
//!
//! Layout (see docs/DESIGN.md): `cli` parses flags and runs commands, `store`
//! keeps state, `api` knows the resources and their rules, `apiserver` serves
//! them, `pki` makes certificates, `telemetry` logs and counts; `agent` runs
//! a node's components and joins nodes to a server.

#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod cli;
pub mod controllers;
pub mod dns;
pub mod gofmt;
pub mod helm;
pub mod http;
pub mod ingress;
pub mod kubelet;
pub mod local_storage;
pub mod netpol;
pub mod network;
pub mod pki;
pub mod platform;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod telemetry;
