//! Parsing request paths and query strings into typed values (upstream's
//! RequestInfo and ListOptions/DeleteOptions).

use std::collections::HashMap;

use axum::http::{Method, Uri};

use crate::api::ApiError;

/// What a request asks for, parsed once from its method, path and query
/// (upstream's RequestInfo); every layer after parsing reads this.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The raw path.
    pub path: String,
    /// The authorization verb: get, list, watch, create, update, patch,
    /// delete, deletecollection for resources; the lower-case method otherwise.
    pub verb: String,
    /// The resource named by the path; None for non-resource paths
    /// (discovery, health, metrics, OpenAPI).
    pub resource: Option<ResourcePath>,
    /// The query string.
    pub query: Query,
}

impl RequestInfo {
    /// Parses a request as upstream's RequestInfoFactory does.
    pub fn new(method: &Method, uri: &Uri) -> Self {
        let query = Query::parse(uri.query());
        let resource = parse_path(uri.path()).filter(|p| !p.resource.is_empty());
        let verb = match &resource {
            None => method.as_str().to_ascii_lowercase(),
            Some(p) => resource_verb(method, p, &query).to_string(),
        };
        Self {
            path: uri.path().to_string(),
            verb,
            resource,
            query,
        }
    }

    /// The object name authorization sees: the path's, or for list and watch
    /// the one a `metadata.name=` field selector pins (as upstream).
    pub fn name(&self) -> Option<&str> {
        let path = self.resource.as_ref()?;
        if let Some(name) = path.name.as_deref() {
            return Some(name);
        }
        if !matches!(self.verb.as_str(), "list" | "watch") {
            return None;
        }
        let selector = self.query.get("fieldSelector")?;
        let mut terms = selector.split(',');
        let only = terms.next()?;
        if terms.next().is_some() {
            return None;
        }
        only.strip_prefix("metadata.name==")
            .or_else(|| only.strip_prefix("metadata.name="))
            .filter(|n| !n.is_empty())
    }

    /// The resource attributes, for resource requests.
    pub fn resource_attributes(&self) -> Option<ResourceAttributes> {
        self.resource.as_ref().map(|p| ResourceAttributes {
            group: p.group.clone(),
            version: p.version.clone(),
            resource: p.resource.clone(),
            subresource: p.subresource.clone().unwrap_or_default(),
            namespace: p.namespace.clone().unwrap_or_default(),
            name: self.name().unwrap_or("").to_string(),
            field_selector: match self.verb.as_str() {
                "list" | "watch" => self.query.get("fieldSelector").unwrap_or("").to_string(),
                _ => String::new(),
            },
        })
    }

    /// Requests that hold their connection open (watches, streams, proxies):
    /// exempt from request timeouts and in-flight limits.
    pub fn is_long_running(&self) -> bool {
        self.verb == "watch"
            || self.resource.as_ref().is_some_and(|p| {
                matches!(
                    p.subresource.as_deref(),
                    Some("proxy" | "log" | "exec" | "attach" | "portforward")
                )
            })
    }
}

/// The resource part of a request, as authorizers and audit policies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource ("" for none).
    pub subresource: String,
    /// Namespace ("" for cluster scope or all namespaces).
    pub namespace: String,
    /// Object name ("" for collections).
    pub name: String,
    /// A list's or watch's `fieldSelector` ("" for none): the node
    /// authorizer lets kubelets list only their own pods.
    pub field_selector: String,
}

/// The verb of a resource request.
fn resource_verb(method: &Method, path: &ResourcePath, query: &Query) -> &'static str {
    let item = path.name.is_some();
    match *method {
        Method::GET | Method::HEAD => {
            // WebSocket exec, attach and port-forward are GETs that act like
            // POSTs; upstream (1.30+) authorizes them as create.
            if matches!(
                path.subresource.as_deref(),
                Some("exec" | "attach" | "portforward")
            ) {
                "create"
            } else if !item && query.flag("watch") {
                "watch"
            } else if !item {
                "list"
            } else {
                "get"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if item => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// What a resource path names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Plural resource.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
    /// What follows the subresource (proxy paths).
    pub rest: Vec<String>,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...`; None for other paths.
pub fn parse_path(path: &str) -> Option<ResourcePath> {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let (group, version, rest) = match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 3 => (String::new(), parts[1].clone(), &parts[2..]),
        Some("apis") if parts.len() >= 4 => (parts[1].clone(), parts[2].clone(), &parts[3..]),
        _ => return None,
    };
    let mut rest = rest.to_vec();
    let mut namespace = None;
    // `namespaces/<ns>/<resource>...` is namespaced unless what follows is a
    // subresource of the namespace object itself.
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && !["status", "finalize"].contains(&rest[2].as_str())
    {
        namespace = Some(rest[1].clone());
        rest.drain(..2);
    }
    let mut it = rest.into_iter();
    let resource = it.next()?;
    let name = it.next();
    let subresource = it.next();
    Some(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        rest: it.collect(),
    })
}

/// The query string as a multimap.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Self(map)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// All values of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A boolean flag (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// A non-negative integer, with a 400 on garbage.
    pub fn number(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.all("dryRun") {
            [] => Ok(false),
            values if values.iter().all(|v| v == "All") => Ok(true),
            values => Err(ApiError::bad_request(format!(
                "Invalid dryRun value: {values:?}; only \"All\" is supported"
            ))),
        }
    }

    /// `fieldValidation` (default Strict for kubectl 1.27+ sends it explicitly; server default is Warn).
    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\"; got \"{other}\""
            ))),
        }
    }
}

/// What to do with unknown or duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject with 400.
    Strict,
    /// Accept with a Warning header.
    Warn,
    /// Accept silently.
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        let p = parse_path("/apis/apps/v1/namespaces/default/deployments/web/scale").expect("path");
        assert_eq!(
            (
                p.group.as_str(),
                p.namespace.as_deref(),
                p.resource.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (
                "apps",
                Some("default"),
                "deployments",
                Some("web"),
                Some("scale")
            )
        );
        let ns = parse_path("/api/v1/namespaces/kube-system").expect("ns");
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref(), ns.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let status = parse_path("/api/v1/namespaces/x/status").expect("status");
        assert_eq!(
            (status.resource.as_str(), status.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let all = parse_path("/api/v1/pods").expect("pods");
        assert_eq!((all.resource.as_str(), all.name), ("pods", None));
        let proxy = parse_path("/api/v1/namespaces/d/services/web:80/proxy/a/b").expect("proxy");
        assert_eq!(proxy.rest, ["a", "b"]);
        assert!(parse_path("/healthz").is_none());
        assert!(parse_path("/apis/apps").is_none());
    }

    #[test]
    fn request_info_verbs() {
        let info = |method: Method, uri: &str| {
            let info = RequestInfo::new(&method, &uri.parse().expect("uri"));
            (info.verb.clone(), info.name().map(String::from))
        };
        assert_eq!(info(Method::GET, "/api/v1/pods").0, "list");
        assert_eq!(info(Method::GET, "/api/v1/pods?watch=1").0, "watch");
        assert_eq!(
            info(
                Method::GET,
                "/api/v1/namespaces/d/secrets?watch=true&fieldSelector=metadata.name%3Ds"
            ),
            ("watch".into(), Some("s".into()))
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/d/pods/p"),
            ("get".into(), Some("p".into()))
        );
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/d/pods").0,
            "deletecollection"
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/d/pods/p/exec").0,
            "create"
        );
        assert_eq!(
            info(Method::PATCH, "/apis/apps/v1/namespaces/d/deployments/x").0,
            "patch"
        );
        let discovery = RequestInfo::new(&Method::GET, &"/apis/apps/v1".parse().expect("uri"));
        assert!(discovery.resource.is_none());
        assert_eq!(discovery.verb, "get");
        let watch = RequestInfo::new(
            &Method::GET,
            &"/api/v1/pods?watch=true".parse().expect("uri"),
        );
        assert!(watch.is_long_running());
    }

    #[test]
    fn query_values() {
        let q = Query::parse(Some(
            "limit=5&dryRun=All&labelSelector=app%3Dweb&watch=true",
        ));
        assert_eq!(q.number("limit").expect("n"), Some(5));
        assert!(q.dry_run().expect("dry"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert!(Query::parse(Some("limit=x")).number("limit").is_err());
        assert!(
            Query::parse(Some("fieldValidation=Bogus"))
                .field_validation()
                .is_err()
        );
    }
}
