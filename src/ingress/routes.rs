//! The routing table of the ingress proxy (pure: built from caches, looked
//! up per request). Ingresses of kelp's class merge into one table, as
//! upstream's controllers merge them: an exact host beats a wildcard one
//! (`*.example.com` matches one label), which beats no host; among the
//! paths of a host the longest match wins, an Exact path before a Prefix
//! one of the same length; Prefix matches whole path elements (`/foo`
//! matches `/foo` and `/foo/bar`, not `/foobar`); ImplementationSpecific
//! is a Prefix here. Backends resolve to their Service's cluster IP and
//! port, so the node's service proxy spreads requests over the endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use kube::ResourceExt;

/// kelp's ingress controller name (`spec.controller` of its IngressClass).
pub const CONTROLLER: &str = "kelp.io/ingress";
/// The IngressClass the server creates.
pub const CLASS: &str = "kelp";
/// The default-class annotation.
const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The Service's cluster IP and port.
    Address(SocketAddr),
    /// The backend Service (or its port) does not exist: 503.
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Host {
    Exact(String),
    /// The suffix after `*` (`.example.com`).
    Wildcard(String),
    Any,
}

impl Host {
    fn parse(host: Option<&str>) -> Self {
        match host.filter(|h| !h.is_empty()) {
            None => Host::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => Host::Wildcard(suffix.to_ascii_lowercase()),
                None => Host::Exact(h.to_ascii_lowercase()),
            },
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(h) => h == host,
            // One label: `*.example.com` matches `a.example.com`, not `a.b.example.com`.
            Host::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            Host::Any => true,
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> u8 {
        match self {
            Host::Exact(_) => 2,
            Host::Wildcard(_) => 1,
            Host::Any => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Route {
    host: Host,
    path: String,
    exact: bool,
    target: Target,
}

/// Whether `prefix` matches `path` element-wise.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The routes of every Ingress of kelp's class, and the TLS secrets by host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    routes: Vec<Route>,
    default: Option<Target>,
    /// Host (lower case, may be a wildcard) → (namespace, secret name).
    pub tls: BTreeMap<String, (String, String)>,
}

/// Whether `ingress` is kelp's: its class names a class of kelp's
/// controller, or it names none and kelp's class is the default.
pub fn is_ours(ingress: &Ingress, classes: &[IngressClass]) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ingress
                .annotations()
                .get("kubernetes.io/ingress.class")
                .cloned()
        });
    let ours = |c: &IngressClass| {
        c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
    };
    match named {
        Some(name) => classes.iter().any(|c| c.name_any() == name && ours(c)),
        None => classes.iter().any(|c| {
            ours(c) && c.annotations().get(DEFAULT_CLASS).map(String::as_str) == Some("true")
        }),
    }
}

fn resolve(
    backend: &IngressBackend,
    namespace: &str,
    services: &BTreeMap<(String, String), &Service>,
) -> Target {
    let Some(service) = &backend.service else {
        return Target::Unavailable("resource backends are not supported".into());
    };
    let Some(found) = services.get(&(namespace.to_string(), service.name.clone())) else {
        return Target::Unavailable(format!("service {namespace}/{} not found", service.name));
    };
    let spec = found.spec.clone().unwrap_or_default();
    let Some(ip) = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .and_then(|ip| ip.parse().ok())
    else {
        return Target::Unavailable(format!(
            "service {namespace}/{} has no cluster IP",
            service.name
        ));
    };
    let wanted = service.port.as_ref();
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| match wanted {
            Some(w) if w.number.is_some() => Some(p.port) == w.number,
            Some(w) => p.name.is_some() && p.name == w.name,
            None => false,
        });
    match port {
        Some(p) => Target::Address(SocketAddr::new(ip, p.port as u16)),
        None => Target::Unavailable(format!(
            "service {namespace}/{} has no such port",
            service.name
        )),
    }
}

impl Table {
    /// The table for `ingresses` (kelp's only) over `services`.
    pub fn build(ingresses: &[Ingress], classes: &[IngressClass], services: &[Service]) -> Self {
        let by_name: BTreeMap<(String, String), &Service> = services
            .iter()
            .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
            .collect();
        let mut ours: Vec<&Ingress> = ingresses.iter().filter(|i| is_ours(i, classes)).collect();
        // Older first: on equal routes the first made wins.
        ours.sort_by_key(|i| {
            (
                i.metadata.creation_timestamp.clone().map(|t| t.0),
                i.name_any(),
            )
        });
        let mut table = Table::default();
        for ingress in ours {
            let namespace = ingress.namespace().unwrap_or_default();
            let spec = ingress.spec.clone().unwrap_or_default();
            if table.default.is_none()
                && let Some(backend) = &spec.default_backend
            {
                table.default = Some(resolve(backend, &namespace, &by_name));
            }
            for tls in spec.tls.unwrap_or_default() {
                let Some(secret) = tls.secret_name.filter(|s| !s.is_empty()) else {
                    continue;
                };
                for host in tls.hosts.unwrap_or_default() {
                    table
                        .tls
                        .entry(host.to_ascii_lowercase())
                        .or_insert_with(|| (namespace.clone(), secret.clone()));
                }
            }
            for rule in spec.rules.unwrap_or_default() {
                let host = Host::parse(rule.host.as_deref());
                for path in rule.http.map(|h| h.paths).unwrap_or_default() {
                    table.routes.push(Route {
                        host: host.clone(),
                        path: path.path.clone().unwrap_or_else(|| "/".into()),
                        exact: path.path_type == "Exact",
                        target: resolve(&path.backend, &namespace, &by_name),
                    });
                }
            }
        }
        // Most specific first; the sort is stable, so older ingresses win ties.
        table.routes.sort_by(|a, b| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then_with(|| {
                    b.path
                        .trim_end_matches('/')
                        .len()
                        .cmp(&a.path.trim_end_matches('/').len())
                })
                .then_with(|| b.exact.cmp(&a.exact))
        });
        table
    }

    /// Where a request for `host` (without port) and `path` goes; None: 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Target> {
        let host = host.to_ascii_lowercase();
        // Hosts by rank: a request matching an exact host uses only that
        // host's paths (upstream: rules of one host, then the default).
        let best = self
            .routes
            .iter()
            .filter(|r| r.host.matches(&host))
            .map(|r| r.host.rank())
            .max();
        self.routes
            .iter()
            .filter(|r| Some(r.host.rank()) == best && r.host.matches(&host))
            .find(|r| {
                if r.exact {
                    r.path == path
                } else {
                    prefix_matches(&r.path, path)
                }
            })
            .map(|r| &r.target)
            .or(self.default.as_ref())
    }

    /// The TLS secret for a server name: its exact host, else a wildcard.
    pub fn secret_for(&self, server_name: &str) -> Option<&(String, String)> {
        let name = server_name.to_ascii_lowercase();
        self.tls.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.tls.get(&format!("*.{parent}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class() -> IngressClass {
        serde_json::from_value(
            json!({"metadata": {"name": CLASS, "annotations": {DEFAULT_CLASS: "true"}},
            "spec": {"controller": CONTROLLER}}),
        )
        .unwrap()
    }

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}))
        .unwrap()
    }

    fn ingress(name: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn path(p: &str, kind: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    fn addr(ip: &str) -> Option<Target> {
        Some(Target::Address(format!("{ip}:80").parse().unwrap()))
    }

    #[test]
    fn hosts_and_paths_pick_the_most_specific_route() {
        let services = [
            service("a", "10.43.0.10"),
            service("b", "10.43.0.11"),
            service("c", "10.43.0.12"),
        ];
        let ingresses = [
            ingress(
                "one",
                json!({"rules": [
                {"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "a"), path("/api", "Prefix", "b"), path("/api/exact", "Exact", "c")]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "c")]}}]}),
            ),
            ingress(
                "two",
                json!({"defaultBackend": {"service": {"name": "b", "port": {"name": "http"}}},
                "rules": [{"http": {"paths": [path("/only", "Exact", "a")]}}]}),
            ),
        ];
        let table = Table::build(&ingresses, &[class()], &services);
        let route = |h: &str, p: &str| table.route(h, p).cloned();
        assert_eq!(route("a.example.com", "/"), addr("10.43.0.10"));
        assert_eq!(route("A.Example.com", "/api"), addr("10.43.0.11"));
        assert_eq!(route("a.example.com", "/api/v1"), addr("10.43.0.11"));
        assert_eq!(route("a.example.com", "/apiary"), addr("10.43.0.10"));
        assert_eq!(route("a.example.com", "/api/exact"), addr("10.43.0.12"));
        assert_eq!(route("z.example.com", "/x"), addr("10.43.0.12"));
        assert_eq!(route("z.y.example.com", "/only"), addr("10.43.0.10"));
        assert_eq!(
            route("other", "/only/x"),
            addr("10.43.0.11"),
            "default backend"
        );
    }

    #[test]
    fn other_classes_missing_services_and_tls_hosts() {
        let services = [service("a", "10.43.0.10")];
        let theirs = ingress(
            "theirs",
            json!({"ingressClassName": "nginx", "rules": [{"http": {"paths": [path("/", "Prefix", "a")]}}]}),
        );
        let missing = ingress(
            "missing",
            json!({"tls": [{"hosts": ["*.example.com", "a.example.com"], "secretName": "cert"}],
            "rules": [{"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "nope")]}}]}),
        );
        let table = Table::build(&[theirs, missing], &[class()], &services);
        assert_eq!(table.route("x", "/"), None);
        assert!(matches!(
            table.route("a.example.com", "/"),
            Some(Target::Unavailable(_))
        ));
        assert_eq!(
            table.secret_for("b.example.com"),
            Some(&("default".to_string(), "cert".to_string()))
        );
        assert_eq!(
            table.secret_for("a.example.com").map(|s| s.1.as_str()),
            Some("cert")
        );
        assert_eq!(table.secret_for("example.org"), None);
        assert!(prefix_matches("/foo/", "/foo"));
        assert!(!prefix_matches("/foo", "/foobar"));
    }
}
