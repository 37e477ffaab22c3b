//! The pure parts of the proxy subresources: which object a proxy path
//! names, the `[scheme:]name[:port]` id, the path sent to the backend, and
//! the rewriting of redirects so they lead back through the proxy
//! (upstream's `SplitSchemeNamePort`, `JoinPreservingTrailingSlash` and the
//! proxy transport's `rewriteURL`).

/// A request under `…/{services|pods|nodes}/{id}/proxy[/rest]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyPath {
    /// Namespace (services, pods); None for nodes.
    pub namespace: Option<String>,
    /// `services`, `pods` or `nodes`.
    pub resource: String,
    /// The decoded `[scheme:]name[:port]` segment.
    pub id: String,
    /// The raw request path up to and including `/proxy`: what redirects
    /// from the backend are prefixed with.
    pub prefix: String,
    /// The raw rest of the path after `/proxy` ("" or starting with `/`).
    pub rest: String,
}

/// Parses a raw (still percent-encoded) request path; None unless it is a
/// core/v1 proxy subresource path of the right shape.
pub fn parse(raw: &str) -> Option<ProxyPath> {
    // "", api, v1, namespaces, NS, services|pods, ID, proxy[, rest]
    let parts: Vec<&str> = raw.splitn(9, '/').collect();
    if parts.len() >= 8
        && parts[..4] == ["", "api", "v1", "namespaces"]
        && matches!(parts[5], "services" | "pods")
        && parts[7] == "proxy"
        && !parts[4].is_empty()
    {
        return build(raw, &parts[..8], Some(parts[4]), parts[5], parts[6]);
    }
    // "", api, v1, nodes, ID, proxy[, rest]
    let parts: Vec<&str> = raw.splitn(7, '/').collect();
    if parts.len() >= 6 && parts[..4] == ["", "api", "v1", "nodes"] && parts[5] == "proxy" {
        return build(raw, &parts[..6], None, "nodes", parts[4]);
    }
    None
}

fn build(
    raw: &str,
    head: &[&str],
    namespace: Option<&str>,
    resource: &str,
    id: &str,
) -> Option<ProxyPath> {
    let prefix = head.join("/");
    let id = decode(id);
    if id.is_empty() {
        return None;
    }
    Some(ProxyPath {
        namespace: namespace.map(decode),
        resource: resource.to_string(),
        id,
        rest: raw[prefix.len()..].to_string(),
        prefix,
    })
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// `[scheme:]name[:port]` split as upstream's `SplitSchemeNamePort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeNamePort {
    /// "", `http` or `https`.
    pub scheme: String,
    /// The object name (never empty).
    pub name: String,
    /// The port as given: a number, a port name, or "".
    pub port: String,
}

/// Splits `name`, `name:port` or `scheme:name:port`; None when the name is
/// empty, the scheme is not http(s), or there are more parts.
pub fn split_scheme_name_port(id: &str) -> Option<SchemeNamePort> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return None;
    }
    Some(SchemeNamePort {
        scheme: scheme.to_string(),
        name: name.to_string(),
        port: port.to_string(),
    })
}

/// The backend path for the rest after `/proxy`: "" when nothing follows
/// (GET/HEAD are then redirected to `…/proxy/`, as upstream), otherwise a
/// cleaned absolute path (`.`/`..`/empty segments resolved, never above the
/// root) that keeps a trailing slash. Segments stay percent-encoded.
pub fn backend_path(rest: &str) -> String {
    if rest.is_empty() {
        return String::new();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in rest.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path: String = segments.iter().map(|s| format!("/{s}")).collect();
    if rest.ends_with('/') || path.is_empty() {
        path.push('/');
    }
    path
}

/// `X-Forwarded-Uri`: the path the client asked for, as the backend's path
/// appended to the proxy prefix (upstream sets it so backends can build
/// their own links).
pub fn forwarded_uri(prefix: &str, backend_path: &str) -> String {
    format!("{prefix}{backend_path}")
}

/// Rewrites a backend's `Location` so it leads back through the proxy, as
/// upstream's proxy transport does: an absolute path (or a URL on the
/// backend's own or the request's host) becomes `prefix` + path, without
/// scheme and host; relative references and other hosts are left alone, as
/// are paths already under `prefix`.
pub fn rewrite_location(
    location: &str,
    backend: &str,
    default_port: u16,
    request_host: Option<&str>,
    prefix: &str,
) -> String {
    let (host, rest) = split_authority(location);
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        let same_backend = host == backend
            || backend
                .strip_suffix(&format!(":{default_port}"))
                .is_some_and(|bare| bare == host);
        if !same_backend && Some(host) != request_host {
            return location.to_string();
        }
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(path_end);
    if !path.starts_with('/') {
        return location.to_string();
    }
    if path.starts_with(prefix) {
        return rest.to_string();
    }
    format!("{prefix}{}{tail}", backend_path(path))
}

/// Splits `scheme://authority/rest` or `//authority/rest` into the authority
/// and the rest; (None, whole) for references without an authority.
fn split_authority(reference: &str) -> (Option<&str>, &str) {
    let after = match reference.find("://") {
        Some(i)
            if i > 0
                && reference[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            &reference[i + 3..]
        }
        _ => match reference.strip_prefix("//") {
            Some(after) => after,
            None => return (None, reference),
        },
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    (Some(&after[..end]), &after[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snp(scheme: &str, name: &str, port: &str) -> Option<SchemeNamePort> {
        Some(SchemeNamePort {
            scheme: scheme.into(),
            name: name.into(),
            port: port.into(),
        })
    }

    #[test]
    fn scheme_name_port_as_upstream_splits_it() {
        assert_eq!(split_scheme_name_port("web"), snp("", "web", ""));
        assert_eq!(split_scheme_name_port("web:80"), snp("", "web", "80"));
        assert_eq!(split_scheme_name_port("web:http"), snp("", "web", "http"));
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            snp("https", "web", "443")
        );
        assert_eq!(split_scheme_name_port("http:web:"), snp("http", "web", ""));
        // Two parts are always name:port, so a lone scheme prefix is a name.
        assert_eq!(split_scheme_name_port("https:web"), snp("", "https", "web"));
        assert_eq!(split_scheme_name_port(""), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[test]
    fn proxy_paths_of_services_pods_and_nodes() {
        let p = parse("/api/v1/namespaces/default/services/http:web:80/proxy/a/b%20c/")
            .expect("service path");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(
            (p.resource.as_str(), p.id.as_str()),
            ("services", "http:web:80")
        );
        assert_eq!(
            p.prefix,
            "/api/v1/namespaces/default/services/http:web:80/proxy"
        );
        assert_eq!(p.rest, "/a/b%20c/");
        let p = parse("/api/v1/namespaces/default/pods/web-0%3A8080/proxy").expect("pod path");
        assert_eq!((p.id.as_str(), p.rest.as_str()), ("web-0:8080", ""));
        let p = parse("/api/v1/nodes/edge:10250/proxy/healthz").expect("node path");
        assert_eq!(
            (p.namespace, p.id.as_str(), p.rest.as_str()),
            (None, "edge:10250", "/healthz")
        );
        assert_eq!(p.prefix, "/api/v1/nodes/edge:10250/proxy");
        for other in [
            "/api/v1/namespaces/default/services/web",
            "/api/v1/namespaces/default/services/web/status",
            "/api/v1/namespaces/default/configmaps/web/proxy",
            "/api/v1/services/web/proxy",
            "/api/v1/nodes//proxy",
            "/apis/apps/v1/namespaces/default/deployments/web/proxy",
            "/api/v1/namespaces/default/services/web/proxyx",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn backend_paths_are_clean_and_keep_the_trailing_slash() {
        assert_eq!(backend_path(""), "");
        assert_eq!(backend_path("/"), "/");
        assert_eq!(backend_path("/a/b"), "/a/b");
        assert_eq!(backend_path("/a/b/"), "/a/b/");
        assert_eq!(backend_path("//a/./b//c"), "/a/b/c");
        assert_eq!(backend_path("/a/../../etc"), "/etc");
        assert_eq!(backend_path("/.."), "/");
        assert_eq!(backend_path("/%2e%2e/x"), "/%2e%2e/x");
    }

    #[test]
    fn redirects_lead_back_through_the_proxy() {
        let prefix = "/api/v1/namespaces/d/services/web:80/proxy";
        let rewrite =
            |l: &str| rewrite_location(l, "10.42.0.5:80", 80, Some("127.0.0.1:6443"), prefix);
        assert_eq!(rewrite("/login?next=/"), format!("{prefix}/login?next=/"));
        assert_eq!(rewrite("/dir/"), format!("{prefix}/dir/"));
        assert_eq!(
            rewrite("http://10.42.0.5:80/x#top"),
            format!("{prefix}/x#top")
        );
        assert_eq!(rewrite("http://10.42.0.5/x"), format!("{prefix}/x"));
        assert_eq!(rewrite("https://127.0.0.1:6443/"), format!("{prefix}/"));
        assert_eq!(
            rewrite(&format!("{prefix}/already")),
            format!("{prefix}/already")
        );
        // Other hosts and relative references are the client's business.
        assert_eq!(rewrite("https://example.com/x"), "https://example.com/x");
        assert_eq!(rewrite("next/page"), "next/page");
        assert_eq!(rewrite("?page=2"), "?page=2");
        assert_eq!(forwarded_uri(prefix, "/x/"), format!("{prefix}/x/"));
    }
}
