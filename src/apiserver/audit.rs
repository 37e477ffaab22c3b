//! Audit logging as kube-apiserver does it: the `audit.k8s.io/v1` policy
//! (`--audit-policy-file`), the rule matching that picks a [`Level`] and the
//! omitted [`Stage`]s for a request, the JSON of one `Event` per stage, and the
//! log backend (`--audit-log-path`, `--audit-log-maxsize`,
//! `--audit-log-maxbackup`, `--audit-log-maxage`) that writes one event per
//! line into a size-rotated file, naming backups the way lumberjack does.
//!
//! Everything here is pure data in, data out; the HTTP layer maps its own
//! request information into [`RequestAttributes`], asks
//! [`Policy::evaluate_config`], feeds an [`EventBuilder`] while the request is
//! served and hands each [`EventBuilder::event`] to a [`LogWriter`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Duration, Local, NaiveDateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The group/version of audit policies and events.
pub const API_VERSION: &str = "audit.k8s.io/v1";

/// Request (and response) header that carries the audit ID.
pub const HEADER_AUDIT_ID: &str = "Audit-ID";

/// Audit annotation with the authorizer's decision (`allow` or `forbid`).
pub const ANNOTATION_AUTHZ_DECISION: &str = "authorization.k8s.io/decision";

/// Audit annotation with the authorizer's reason.
pub const ANNOTATION_AUTHZ_REASON: &str = "authorization.k8s.io/reason";

// Upstream caps the user agent so a client cannot blow up every event.
const MAX_USER_AGENT_LEN: usize = 1024;
const USER_AGENT_TRUNCATED: &str = "...TRUNCATED";

// lumberjack's defaults and naming.
const DEFAULT_MAX_SIZE_MB: u64 = 100;
const MEGABYTE: u64 = 1024 * 1024;
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";
const COMPRESS_SUFFIX: &str = ".gz";

const VALID_LEVELS: &str = r#""None", "Metadata", "Request", "RequestResponse""#;
const VALID_STAGES: &str = "RequestReceived,ResponseStarted,ResponseComplete,Panic";

/// Errors from loading a policy or writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--audit-policy-file` was empty.
    #[error("file path not specified")]
    PolicyPathEmpty,
    /// The policy file could not be read.
    #[error("failed to read file path {path:?}: {error}")]
    ReadPolicy {
        /// The policy file.
        path: PathBuf,
        /// What the read said.
        error: io::Error,
    },
    /// The policy is not well-formed YAML/JSON of the right shape.
    #[error("failed decoding: {0}")]
    Decode(String),
    /// The policy's `apiVersion` is not `audit.k8s.io/v1`.
    #[error("unknown group version field {0:?} in policy, want \"audit.k8s.io/v1\"")]
    UnknownGroupVersion(String),
    /// Field validation failed; one entry per field error, as upstream words them.
    #[error("{}", aggregate(.0))]
    Invalid(Vec<String>),
    /// The policy has no rules.
    #[error("loaded illegal policy with 0 rules")]
    NoRules,
    /// A policy error, tagged with the file it came from.
    #[error("{error}: from file {}", path.display())]
    InFile {
        /// The policy file.
        path: PathBuf,
        /// The error loading it.
        error: Box<Error>,
    },
    /// A level name other than None, Metadata, Request or RequestResponse.
    #[error("unsupported audit level {0:?}")]
    UnknownLevel(String),
    /// A stage name other than the four upstream stages.
    #[error("unsupported audit stage {0:?}")]
    UnknownStage(String),
    /// `--audit-log-path` was empty.
    #[error("audit log path not specified")]
    LogPathEmpty,
    /// One event line is larger than the whole log file may be.
    #[error("write length {len} exceeds maximum file size {max}")]
    TooLarge {
        /// Bytes in the line.
        len: u64,
        /// The file size limit in bytes.
        max: u64,
    },
    /// A file-system operation on the audit log failed.
    #[error("audit log {}: {error}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operation said.
        error: io::Error,
    },
    /// An event could not be serialised.
    #[error("encoding audit event: {0}")]
    Encode(#[from] serde_json::Error),
}

// Go's utilerrors aggregate: a lone error stands alone, several are bracketed.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        _ => format!("[{}]", errs.join(", ")),
    }
}

/// How much of a request is recorded; ordered from nothing to everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    /// Not audited at all.
    #[default]
    None,
    /// Who did what to which object, without bodies.
    Metadata,
    /// Metadata plus the request body.
    Request,
    /// Metadata plus request and response bodies.
    RequestResponse,
}

impl Level {
    /// The upstream name of the level.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "None" => Ok(Level::None),
            "Metadata" => Ok(Level::Metadata),
            "Request" => Ok(Level::Request),
            "RequestResponse" => Ok(Level::RequestResponse),
            other => Err(Error::UnknownLevel(other.to_string())),
        }
    }
}

/// The point in serving a request at which an event is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// As soon as the request arrives, before it is handled.
    RequestReceived,
    /// Once response headers are sent (long-running requests such as watch).
    ResponseStarted,
    /// Once the response body is complete.
    ResponseComplete,
    /// When serving the request panicked.
    Panic,
}

impl Stage {
    /// The upstream name of the stage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RequestReceived" => Ok(Stage::RequestReceived),
            "ResponseStarted" => Ok(Stage::ResponseStarted),
            "ResponseComplete" => Ok(Stage::ResponseComplete),
            "Panic" => Ok(Stage::Panic),
            other => Err(Error::UnknownStage(other.to_string())),
        }
    }
}

/// Resources of one API group that a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupResources {
    /// The API group; `""` is the core group.
    pub group: String,
    /// `pods`, `pods/log`, `*`, `pods/*` or `*/scale`; empty means every resource of the group.
    pub resources: Vec<String>,
    /// Object names; empty means every object.
    pub resource_names: Vec<String>,
}

/// One policy rule: requests matching every non-empty field get `level`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    /// The level for matching requests.
    pub level: Level,
    /// User names; empty means every user.
    pub users: Vec<String>,
    /// Groups, any of which the user must be in; empty means every group.
    pub user_groups: Vec<String>,
    /// Verbs; empty means every verb.
    pub verbs: Vec<String>,
    /// Resources; empty means every resource.
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""` for cluster-scoped objects); empty means every namespace.
    pub namespaces: Vec<String>,
    /// Non-resource paths, exact or ending in `*`.
    pub non_resource_urls: Vec<String>,
    /// Stages without events for matching requests, on top of the policy's.
    pub omit_stages: Vec<Stage>,
    /// Overrides the policy's `omitManagedFields` when set.
    pub omit_managed_fields: Option<bool>,
}

/// An `audit.k8s.io/v1` `Policy`: ordered rules, the first match wins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// The rules, in order.
    pub rules: Vec<PolicyRule>,
    /// Stages without events for every request.
    pub omit_stages: Vec<Stage>,
    /// Drop `metadata.managedFields` from logged bodies unless a rule says otherwise.
    pub omit_managed_fields: bool,
}

/// The outcome of evaluating the policy for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestAuditConfig {
    /// The level to audit at; [`Level::None`] means no events.
    pub level: Level,
    /// Stages to emit no event for (rule and policy stages combined).
    pub omit_stages: Vec<Stage>,
    /// Whether logged bodies lose `metadata.managedFields`.
    pub omit_managed_fields: bool,
}

/// The object a resource request targets (the request's resource attributes).
pub use super::request::ResourceAttributes as ResourceRef;

/// What the policy looks at for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestAttributes {
    /// Authenticated user name.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Kubernetes verb (`get`, `list`, `watch`, ...) or lower-case HTTP method.
    pub verb: String,
    /// The target for resource requests; `None` for non-resource requests.
    pub resource: Option<ResourceRef>,
    /// The URL path (used by non-resource rules).
    pub path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    rules: Option<Vec<RawRule>>,
    omit_stages: Option<Vec<String>>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    level: Option<String>,
    users: Option<Vec<String>>,
    user_groups: Option<Vec<String>>,
    verbs: Option<Vec<String>>,
    resources: Option<Vec<RawGroupResources>>,
    namespaces: Option<Vec<String>>,
    #[serde(rename = "nonResourceURLs")]
    non_resource_urls: Option<Vec<String>>,
    omit_stages: Option<Vec<String>>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGroupResources {
    group: Option<String>,
    resources: Option<Vec<String>>,
    resource_names: Option<Vec<String>>,
}

impl Policy {
    /// Parses and validates a policy document (YAML or JSON), as
    /// `LoadPolicyFromBytes` does: `apiVersion` must be `audit.k8s.io/v1`,
    /// unknown fields are ignored, field errors are reported together, and a
    /// policy without rules is refused.
    pub fn parse(text: &str) -> Result<Policy, Error> {
        let doc = decode_document(text)?;
        let Value::Object(obj) = &doc else {
            return Err(Error::Decode("object 'Kind' is missing".into()));
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if api_version != API_VERSION {
            return Err(Error::UnknownGroupVersion(api_version.to_string()));
        }
        // A missing kind defaults to Policy upstream (the decode target's kind).
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") | Some("Policy") => {}
            Some(kind) => {
                return Err(Error::Decode(format!(
                    "no kind {kind:?} is registered for version {API_VERSION:?}"
                )));
            }
        }
        let raw: RawPolicy =
            serde_json::from_value(doc).map_err(|e| Error::Decode(e.to_string()))?;

        let mut errs = Vec::new();
        let rules: Vec<PolicyRule> = raw
            .rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, rule)| convert_rule(rule, &format!("rules[{i}]"), &mut errs))
            .collect();
        // Upstream does not validate the policy-wide list; an unknown name
        // there simply never matches a stage, so dropping it is equivalent.
        let omit_stages = raw
            .omit_stages
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if !errs.is_empty() {
            return Err(Error::Invalid(errs));
        }
        if rules.is_empty() {
            return Err(Error::NoRules);
        }
        Ok(Policy {
            rules,
            omit_stages,
            omit_managed_fields: raw.omit_managed_fields.unwrap_or(false),
        })
    }

    /// Reads and parses a policy file, as `LoadPolicyFromFile` does.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Policy, Error> {
        let path = path.as_ref();
        if path.as_os_str().is_empty() {
            return Err(Error::PolicyPathEmpty);
        }
        let text = fs::read_to_string(path).map_err(|error| Error::ReadPolicy {
            path: path.to_path_buf(),
            error,
        })?;
        Policy::parse(&text).map_err(|e| Error::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// The level and omitted stages for a request: the first matching rule's,
    /// or [`Level::None`] with the policy's stages when no rule matches.
    pub fn evaluate(&self, attrs: &RequestAttributes) -> (Level, Vec<Stage>) {
        let config = self.evaluate_config(attrs);
        (config.level, config.omit_stages)
    }

    /// Like [`Policy::evaluate`], also deciding `omitManagedFields`.
    pub fn evaluate_config(&self, attrs: &RequestAttributes) -> RequestAuditConfig {
        match self.rules.iter().find(|rule| rule.matches(attrs)) {
            Some(rule) => RequestAuditConfig {
                level: rule.level,
                omit_stages: union_stages(&self.omit_stages, &rule.omit_stages),
                omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
            None => RequestAuditConfig {
                level: Level::None,
                omit_stages: union_stages(&self.omit_stages, &[]),
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }
}

fn decode_document(text: &str) -> Result<Value, Error> {
    // JSON is tried as JSON so its errors read like JSON errors.
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| Error::Decode(e.to_string()))
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| Error::Decode(e.to_string()))
    }
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

fn convert_rule(raw: RawRule, path: &str, errs: &mut Vec<String>) -> PolicyRule {
    let level = match raw.level.as_deref() {
        None | Some("") => {
            errs.push(format!("{path}.level: Required value"));
            Level::None
        }
        Some(name) => name.parse().unwrap_or_else(|_| {
            errs.push(format!(
                "{path}.level: Unsupported value: {name:?}: supported values: {VALID_LEVELS}"
            ));
            Level::None
        }),
    };

    let non_resource_urls = raw.non_resource_urls.unwrap_or_default();
    for (j, url) in non_resource_urls.iter().enumerate() {
        if url == "*" {
            continue;
        }
        let field = format!("{path}.nonResourceURLs[{j}]");
        if !url.starts_with('/') {
            errs.push(format!(
                "{field}: Invalid value: {url:?}: non-resource URL rules must begin with a '/' character"
            ));
        }
        let before_last = url.char_indices().last().map_or("", |(i, _)| &url[..i]);
        if before_last.contains('*') {
            errs.push(format!(
                "{field}: Invalid value: {url:?}: non-resource URL wildcards '*' must be the final character of the rule"
            ));
        }
    }

    let resources: Vec<GroupResources> = raw
        .resources
        .unwrap_or_default()
        .into_iter()
        .map(|gr| GroupResources {
            group: gr.group.unwrap_or_default(),
            resources: gr.resources.unwrap_or_default(),
            resource_names: gr.resource_names.unwrap_or_default(),
        })
        .collect();
    for gr in &resources {
        // "" is the core group; anything else must be a DNS subdomain, which
        // catches the common mistake of writing "apps/v1".
        if !gr.group.is_empty() {
            let msgs = dns_subdomain_errors(&gr.group);
            if !msgs.is_empty() {
                errs.push(format!(
                    "{path}.resources.group: Invalid value: {:?}: {}",
                    gr.group,
                    msgs.join(",")
                ));
            }
        }
        if !gr.resource_names.is_empty() && gr.resources.is_empty() {
            errs.push(format!(
                "{path}.resources.resourceNames: Invalid value: {}: using resourceNames requires at least one resource",
                json_list(&gr.resource_names)
            ));
        }
    }

    let mut omit_stages = Vec::new();
    for (j, name) in raw.omit_stages.unwrap_or_default().iter().enumerate() {
        match name.parse() {
            Ok(stage) => omit_stages.push(stage),
            Err(_) => errs.push(format!(
                "{path}.omitStages[{j}]: Invalid value: {name:?}: allowed stages are {VALID_STAGES}"
            )),
        }
    }

    let namespaces = raw.namespaces.unwrap_or_default();
    if !non_resource_urls.is_empty() && (!resources.is_empty() || !namespaces.is_empty()) {
        errs.push(format!(
            "{path}.nonResourceURLs: Invalid value: {}: rules cannot apply to both regular resources and non-resource URLs",
            json_list(&non_resource_urls)
        ));
    }

    PolicyRule {
        level,
        users: raw.users.unwrap_or_default(),
        user_groups: raw.user_groups.unwrap_or_default(),
        verbs: raw.verbs.unwrap_or_default(),
        resources,
        namespaces,
        non_resource_urls,
        omit_stages,
        omit_managed_fields: raw.omit_managed_fields,
    }
}

// RFC 1123 subdomain, as NameIsDNSSubdomain checks API group names.
fn dns_subdomain_errors(value: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if value.len() > 253 {
        msgs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    if !value.split('.').all(label_ok) {
        msgs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    msgs
}

// Sorted and de-duplicated so the result does not depend on spelling order.
fn union_stages(a: &[Stage], b: &[Stage]) -> Vec<Stage> {
    a.iter()
        .chain(b)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl PolicyRule {
    /// Whether the request matches every field this rule sets.
    pub fn matches(&self, attrs: &RequestAttributes) -> bool {
        if !self.users.is_empty() && !self.users.contains(&attrs.user) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !attrs.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&attrs.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(attrs);
        }
        if !self.non_resource_urls.is_empty() {
            return self.matches_non_resource(attrs);
        }
        true
    }

    fn matches_resource(&self, attrs: &RequestAttributes) -> bool {
        let Some(target) = &attrs.resource else {
            return false;
        };
        if !self.namespaces.is_empty() && !self.namespaces.contains(&target.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if target.subresource.is_empty() {
            target.resource.clone()
        } else {
            format!("{}/{}", target.resource, target.subresource)
        };
        for gr in self.resources.iter().filter(|gr| gr.group == target.group) {
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.contains(&target.name) {
                continue;
            }
            for spec in &gr.resources {
                if *spec == combined || spec == "*" {
                    return true;
                }
                if !target.subresource.is_empty()
                    && spec.strip_prefix("*/") == Some(target.subresource.as_str())
                {
                    return true;
                }
                // Upstream lets "pods/*" match the pods resource itself too.
                if spec.strip_suffix("/*") == Some(target.resource.as_str()) {
                    return true;
                }
            }
        }
        false
    }

    fn matches_non_resource(&self, attrs: &RequestAttributes) -> bool {
        if attrs.resource.is_some() {
            return false;
        }
        self.non_resource_urls
            .iter()
            .any(|spec| path_matches(&attrs.path, spec))
    }
}

fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || (spec.ends_with('*') && path.starts_with(spec.trim_end_matches('*')))
}

/// Authenticated (or impersonated) user as recorded in an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// User UID, if the authenticator knows one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra authenticator-provided attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups.
    pub fn new(username: impl Into<String>, groups: Vec<String>) -> Self {
        UserInfo {
            username: username.into(),
            groups,
            ..UserInfo::default()
        }
    }

    /// The `authentication.k8s.io/v1` `UserInfo` JSON (empty fields omitted).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.username.is_empty() {
            m.insert("username".into(), self.username.clone().into());
        }
        if !self.uid.is_empty() {
            m.insert("uid".into(), self.uid.clone().into());
        }
        if !self.groups.is_empty() {
            m.insert("groups".into(), self.groups.clone().into());
        }
        if !self.extra.is_empty() {
            let extra: Map<String, Value> = self
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            m.insert("extra".into(), Value::Object(extra));
        }
        Value::Object(m)
    }
}

/// The event's `objectRef`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectReference {
    /// Plural resource name.
    pub resource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Object UID.
    pub uid: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Object resourceVersion.
    pub resource_version: String,
    /// Subresource.
    pub subresource: String,
}

impl From<&ResourceRef> for ObjectReference {
    fn from(r: &ResourceRef) -> Self {
        ObjectReference {
            resource: r.resource.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            api_group: r.group.clone(),
            api_version: r.version.clone(),
            subresource: r.subresource.clone(),
            ..ObjectReference::default()
        }
    }
}

impl ObjectReference {
    /// The JSON of the reference, empty fields omitted, in upstream field order.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, value) in [
            ("resource", &self.resource),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("uid", &self.uid),
            ("apiGroup", &self.api_group),
            ("apiVersion", &self.api_version),
            ("resourceVersion", &self.resource_version),
            ("subresource", &self.subresource),
        ] {
            if !value.is_empty() {
                m.insert(key.into(), value.clone().into());
            }
        }
        Value::Object(m)
    }
}

/// The event's `responseStatus`: the bounded fields of a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponseStatus {
    /// HTTP status code.
    pub code: i32,
    /// `Success` or `Failure`; empty for plain successful responses.
    pub status: String,
    /// Human-readable message.
    pub message: String,
    /// Machine-readable reason, e.g. `Forbidden`.
    pub reason: String,
    /// The Status `details`, if any.
    pub details: Option<Value>,
}

impl ResponseStatus {
    /// Just a code, as recorded for responses that are not Status objects.
    pub fn from_code(code: u16) -> Self {
        ResponseStatus {
            code: i32::from(code),
            ..ResponseStatus::default()
        }
    }

    /// The bounded fields of a `Status` body; `None` when the body is not one.
    pub fn from_status_object(body: &Value) -> Option<Self> {
        if body.get("kind").and_then(Value::as_str) != Some("Status") {
            return None;
        }
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(ResponseStatus {
            code: body
                .get("code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(0),
            status: text("status"),
            message: text("message"),
            reason: text("reason"),
            details: body.get("details").filter(|d| !d.is_null()).cloned(),
        })
    }

    /// The `metav1.Status` JSON, empty fields omitted as upstream does.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("metadata".into(), Value::Object(Map::new()));
        if !self.status.is_empty() {
            m.insert("status".into(), self.status.clone().into());
        }
        if !self.message.is_empty() {
            m.insert("message".into(), self.message.clone().into());
        }
        if !self.reason.is_empty() {
            m.insert("reason".into(), self.reason.clone().into());
        }
        if let Some(details) = &self.details {
            m.insert("details".into(), details.clone());
        }
        if self.code != 0 {
            m.insert("code".into(), self.code.into());
        }
        Value::Object(m)
    }
}

/// What the authorizer decided, for the `authorization.k8s.io/*` annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationDecision {
    /// Allowed: `decision: allow` plus the reason.
    Allow,
    /// Denied: `decision: forbid` plus the reason.
    Forbid,
    /// The authorizer failed: only `reason: internal error` is recorded.
    Error,
}

/// Accumulates one request's audit event and renders it for each stage.
///
/// Mirrors the event upstream keeps in the request context: metadata is set
/// once, bodies and the response status are added as the request is served,
/// and [`EventBuilder::event`] snapshots it for a stage.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    audit_id: String,
    config: RequestAuditConfig,
    request_received: DateTime<Utc>,
    request_uri: String,
    verb: String,
    user: UserInfo,
    impersonated_user: Option<UserInfo>,
    source_ips: Vec<String>,
    user_agent: String,
    object_ref: Option<ObjectReference>,
    response_status: Option<ResponseStatus>,
    request_object: Option<Value>,
    response_object: Option<Value>,
    annotations: BTreeMap<String, String>,
}

impl EventBuilder {
    /// An empty event for a request audited under `config`.
    pub fn new(
        audit_id: impl Into<String>,
        config: &RequestAuditConfig,
        request_received: DateTime<Utc>,
    ) -> Self {
        EventBuilder {
            audit_id: audit_id.into(),
            config: config.clone(),
            request_received,
            request_uri: String::new(),
            verb: String::new(),
            user: UserInfo::default(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The audit ID.
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    /// The level this request is audited at.
    pub fn level(&self) -> Level {
        self.config.level
    }

    /// Records the request metadata (`LogRequestMetadata`): verb, URI, user,
    /// user agent (truncated past 1024 bytes), source IPs, and the objectRef
    /// for resource requests.
    pub fn log_request_metadata(
        &mut self,
        attrs: &RequestAttributes,
        request_uri: &str,
        user_agent: &str,
        source_ips: Vec<String>,
    ) -> &mut Self {
        self.verb = attrs.verb.clone();
        self.request_uri = request_uri.to_string();
        self.user_agent = truncate_user_agent(user_agent);
        self.source_ips = source_ips;
        self.user = UserInfo::new(attrs.user.clone(), attrs.groups.clone());
        self.object_ref = attrs.resource.as_ref().map(ObjectReference::from);
        self
    }

    /// Replaces the recorded user, e.g. to add a UID or extra attributes.
    pub fn set_user(&mut self, user: UserInfo) -> &mut Self {
        self.user = user;
        self
    }

    /// Records the user the request impersonates.
    pub fn log_impersonated_user(&mut self, user: UserInfo) -> &mut Self {
        self.impersonated_user = Some(user);
        self
    }

    /// Replaces the objectRef.
    pub fn set_object_ref(&mut self, object_ref: Option<ObjectReference>) -> &mut Self {
        self.object_ref = object_ref;
        self
    }

    /// Records a resource request's decoded body (`LogRequestObject`): fills
    /// objectRef gaps from its metadata, and keeps the body itself only at
    /// [`Level::Request`] and above, without managedFields if so configured.
    pub fn log_request_object(&mut self, body: &Value) -> &mut Self {
        if self.config.level < Level::Metadata {
            return self;
        }
        let object_ref = self.object_ref.get_or_insert_with(ObjectReference::default);
        if let Some(meta) = body.get("metadata") {
            let fill = |slot: &mut String, key: &str| {
                if slot.is_empty()
                    && let Some(v) = meta.get(key).and_then(Value::as_str)
                {
                    *slot = v.to_string();
                }
            };
            fill(&mut object_ref.namespace, "namespace");
            fill(&mut object_ref.name, "name");
            fill(&mut object_ref.uid, "uid");
            fill(&mut object_ref.resource_version, "resourceVersion");
        }
        if self.config.level < Level::Request {
            return self;
        }
        self.request_object = Some(self.prepare_body(body));
        self
    }

    /// Records a patch body as the request object (`LogRequestPatch`), at
    /// [`Level::Request`] and above; patches are kept verbatim.
    pub fn log_request_patch(&mut self, patch: &Value) -> &mut Self {
        if self.config.level >= Level::Request {
            self.request_object = Some(patch.clone());
        }
        self
    }

    /// Records an encoded response (`LogResponseObject`): a `Status` body sets
    /// the responseStatus from Metadata up; the body itself is kept only at
    /// [`Level::RequestResponse`], without managedFields if so configured.
    pub fn log_response_object(&mut self, body: &Value) -> &mut Self {
        if self.config.level < Level::Metadata {
            return self;
        }
        if let Some(status) = ResponseStatus::from_status_object(body) {
            self.response_status = Some(status);
        }
        if self.config.level < Level::RequestResponse {
            return self;
        }
        self.response_object = Some(self.prepare_body(body));
        self
    }

    /// Records the HTTP status code written, keeping any Status fields already logged.
    pub fn set_response_code(&mut self, code: u16) -> &mut Self {
        self.response_status
            .get_or_insert_with(ResponseStatus::default)
            .code = i32::from(code);
        self
    }

    /// Replaces the responseStatus outright.
    pub fn set_response_status(&mut self, status: ResponseStatus) -> &mut Self {
        self.response_status = Some(status);
        self
    }

    /// Records the 500 status upstream logs when serving panicked.
    pub fn log_panic(&mut self, message: &str) -> &mut Self {
        self.response_status = Some(ResponseStatus {
            code: 500,
            status: "Failure".into(),
            reason: "InternalError".into(),
            message: format!("APIServer panic'd: {message}"),
            details: None,
        });
        self
    }

    /// Adds an annotation; as upstream, a key keeps its first value and
    /// nothing is recorded below [`Level::Metadata`]. Returns whether the
    /// annotation now holds `value`.
    pub fn add_annotation(&mut self, key: impl Into<String>, value: impl Into<String>) -> bool {
        if self.config.level < Level::Metadata {
            return false;
        }
        let value = value.into();
        let current = self
            .annotations
            .entry(key.into())
            .or_insert_with(|| value.clone());
        *current == value
    }

    /// Adds the `authorization.k8s.io/decision` and `/reason` annotations the
    /// authorization filter records.
    pub fn log_authorization(
        &mut self,
        decision: AuthorizationDecision,
        reason: &str,
    ) -> &mut Self {
        match decision {
            AuthorizationDecision::Allow => {
                self.add_annotation(ANNOTATION_AUTHZ_DECISION, "allow");
                self.add_annotation(ANNOTATION_AUTHZ_REASON, reason);
            }
            AuthorizationDecision::Forbid => {
                self.add_annotation(ANNOTATION_AUTHZ_DECISION, "forbid");
                self.add_annotation(ANNOTATION_AUTHZ_REASON, reason);
            }
            AuthorizationDecision::Error => {
                self.add_annotation(ANNOTATION_AUTHZ_REASON, "internal error");
            }
        }
        self
    }

    /// The `audit.k8s.io/v1` Event for `stage`, stamped `now` (the
    /// RequestReceived stage uses the receive time, as upstream). `None` when
    /// the level is [`Level::None`] or the stage is omitted. A response stage
    /// with no recorded status gets upstream's "Connection closed early" 200.
    pub fn event(&self, stage: Stage, now: DateTime<Utc>) -> Option<Value> {
        if self.config.level == Level::None || self.config.omit_stages.contains(&stage) {
            return None;
        }
        let stage_timestamp = if stage == Stage::RequestReceived {
            self.request_received
        } else {
            now
        };
        let status = match (&self.response_status, stage) {
            (None, Stage::ResponseStarted | Stage::ResponseComplete) => Some(ResponseStatus {
                code: 200,
                status: "Success".into(),
                message: "Connection closed early".into(),
                ..ResponseStatus::default()
            }),
            (status, _) => status.clone(),
        };

        let mut m = Map::new();
        m.insert("kind".into(), "Event".into());
        m.insert("apiVersion".into(), API_VERSION.into());
        m.insert("level".into(), self.config.level.as_str().into());
        m.insert("auditID".into(), self.audit_id.clone().into());
        m.insert("stage".into(), stage.as_str().into());
        m.insert("requestURI".into(), self.request_uri.clone().into());
        m.insert("verb".into(), self.verb.clone().into());
        m.insert("user".into(), self.user.to_json());
        if let Some(user) = &self.impersonated_user {
            m.insert("impersonatedUser".into(), user.to_json());
        }
        if !self.source_ips.is_empty() {
            m.insert("sourceIPs".into(), self.source_ips.clone().into());
        }
        if !self.user_agent.is_empty() {
            m.insert("userAgent".into(), self.user_agent.clone().into());
        }
        if let Some(object_ref) = &self.object_ref {
            m.insert("objectRef".into(), object_ref.to_json());
        }
        if let Some(status) = status {
            m.insert("responseStatus".into(), status.to_json());
        }
        if let Some(body) = &self.request_object {
            m.insert("requestObject".into(), body.clone());
        }
        if let Some(body) = &self.response_object {
            m.insert("responseObject".into(), body.clone());
        }
        m.insert(
            "requestReceivedTimestamp".into(),
            micro_time(&self.request_received).into(),
        );
        m.insert("stageTimestamp".into(), micro_time(&stage_timestamp).into());
        if !self.annotations.is_empty() {
            let annotations: Map<String, Value> = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            m.insert("annotations".into(), Value::Object(annotations));
        }
        Some(Value::Object(m))
    }

    fn prepare_body(&self, body: &Value) -> Value {
        if self.config.omit_managed_fields {
            without_managed_fields(body)
        } else {
            body.clone()
        }
    }
}

/// `metav1.MicroTime` text: RFC 3339 in UTC with microseconds.
pub fn micro_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The audit ID for a request: the client's `Audit-ID` header when given,
/// else a new random UUID.
pub fn new_audit_id(header: Option<&str>) -> String {
    match header {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

fn truncate_user_agent(user_agent: &str) -> String {
    if user_agent.len() <= MAX_USER_AGENT_LEN {
        return user_agent.to_string();
    }
    // Cut on a char boundary; upstream cuts bytes, which can split UTF-8.
    let mut end = MAX_USER_AGENT_LEN;
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{USER_AGENT_TRUNCATED}", &user_agent[..end])
}

/// The event's `sourceIPs`, as upstream derives them: the `X-Forwarded-For`
/// chain, then `X-Real-Ip` unless already listed, then the peer address
/// unless it repeats the last entry. Unparsable entries are skipped.
pub fn source_ips(
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    remote: Option<IpAddr>,
) -> Vec<String> {
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let mut ips: Vec<IpAddr> = forwarded_for
        .map(|chain| chain.split(',').filter_map(parse).collect())
        .unwrap_or_default();
    if let Some(ip) = real_ip.and_then(parse)
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    if let Some(ip) = remote.map(|ip| ip.to_canonical())
        && ips.last() != Some(&ip)
    {
        ips.push(ip);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

/// A copy of `body` without `metadata.managedFields`, also for every list
/// item and every Table row object, as upstream's omitManagedFields does.
pub fn without_managed_fields(body: &Value) -> Value {
    let mut copy = body.clone();
    strip_managed_fields(&mut copy);
    copy
}

/// Removes `metadata.managedFields` in place (see [`without_managed_fields`]).
pub fn strip_managed_fields(body: &mut Value) {
    fn strip_one(obj: &mut Value) {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.shift_remove("managedFields");
        }
    }
    strip_one(body);
    if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip_one);
    }
    if body.get("kind").and_then(Value::as_str) == Some("Table")
        && let Some(rows) = body.get_mut("rows").and_then(Value::as_array_mut)
    {
        for row in rows {
            if let Some(object) = row.get_mut("object") {
                strip_one(object);
            }
        }
    }
}

/// One log line for an event: compact JSON escaped as Go's encoder does
/// (`<`, `>`, `&`, U+2028, U+2029 as `\uXXXX`), ending in a newline.
pub fn to_json_line(event: &Value) -> Result<String, Error> {
    let json = serde_json::to_string(event)?;
    let mut line = String::with_capacity(json.len() + 16);
    // These characters only occur inside JSON strings, so escaping the
    // serialised text is the same as escaping every string.
    for c in json.chars() {
        match c {
            '<' => line.push_str("\\u003c"),
            '>' => line.push_str("\\u003e"),
            '&' => line.push_str("\\u0026"),
            '\u{2028}' => line.push_str("\\u2028"),
            '\u{2029}' => line.push_str("\\u2029"),
            c => line.push(c),
        }
    }
    line.push('\n');
    Ok(line)
}

/// The audit log backend: JSON lines to stdout (`-`) or to a file rotated by
/// size the way lumberjack does (`<name>-<UTC 2006-01-02T15-04-05.000><ext>`
/// backups, oldest removed past `max_backups` or `max_age_days`).
#[derive(Debug)]
pub struct LogWriter {
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Stdout,
    File(RotatingFile),
}

#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_backups: usize,
    max_age_days: u64,
    local_time: bool,
    file: Option<File>,
    size: u64,
}

impl LogWriter {
    /// Opens the log at `path` (`-` for stdout), creating it (mode 0600, its
    /// directory 0700) as kube-apiserver does. `max_size_mb` 0 means
    /// lumberjack's 100 MB; `max_backups` 0 keeps every backup.
    pub fn open(
        path: impl AsRef<Path>,
        max_size_mb: u64,
        max_backups: usize,
    ) -> Result<Self, Error> {
        let mb = if max_size_mb == 0 {
            DEFAULT_MAX_SIZE_MB
        } else {
            max_size_mb
        };
        Self::open_with_limit(path.as_ref(), mb.saturating_mul(MEGABYTE), max_backups)
    }

    fn open_with_limit(path: &Path, max_bytes: u64, max_backups: usize) -> Result<Self, Error> {
        if path.as_os_str().is_empty() {
            return Err(Error::LogPathEmpty);
        }
        if path.as_os_str() == "-" {
            return Ok(LogWriter { sink: Sink::Stdout });
        }
        ensure_log_file(path)?;
        Ok(LogWriter {
            sink: Sink::File(RotatingFile {
                path: path.to_path_buf(),
                max_bytes,
                max_backups,
                max_age_days: 0,
                local_time: false,
                file: None,
                size: 0,
            }),
        })
    }

    /// Also removes backups older than `days` days (`--audit-log-maxage`; 0 keeps them).
    pub fn with_max_age_days(mut self, days: u64) -> Self {
        if let Sink::File(f) = &mut self.sink {
            f.max_age_days = days;
        }
        self
    }

    /// Names backups in local time instead of UTC (lumberjack's `LocalTime`;
    /// kube-apiserver leaves it off).
    pub fn with_local_time(mut self, local: bool) -> Self {
        if let Sink::File(f) = &mut self.sink {
            f.local_time = local;
        }
        self
    }

    /// Whether events go to stdout.
    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Stdout)
    }

    /// The log file, unless writing to stdout.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Stdout => None,
            Sink::File(f) => Some(&f.path),
        }
    }

    /// Appends one event as a JSON line, rotating first if it would not fit.
    pub fn write_event(&mut self, event: &Value) -> Result<(), Error> {
        let line = to_json_line(event)?;
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|error| Error::Io {
                        path: PathBuf::from("-"),
                        error,
                    })
            }
            Sink::File(f) => f.write(line.as_bytes()),
        }
    }

    /// Moves the current file to a backup and starts a new one (lumberjack's
    /// `Rotate`, e.g. on SIGHUP); a no-op for stdout.
    pub fn rotate(&mut self) -> Result<(), Error> {
        match &mut self.sink {
            Sink::Stdout => Ok(()),
            Sink::File(f) => f.rotate(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

fn open_options(mode: u32) -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
}

// The file exists, private, before the first event, as upstream's ensureLogFile.
fn ensure_log_file(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    open_options(0o600)
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(io_err(path))
}

// Go's filepath.Ext: from the last dot of the file name, or nothing.
fn split_ext(file_name: &str) -> (&str, &str) {
    match file_name.rfind('.') {
        Some(i) => file_name.split_at(i),
        None => (file_name, ""),
    }
}

// The rotation time as lumberjack stamps it: UTC (or local), to the millisecond.
fn backup_stamp(now: DateTime<Utc>, local: bool) -> NaiveDateTime {
    let naive = if local {
        now.with_timezone(&Local).naive_local()
    } else {
        now.naive_utc()
    };
    naive.trunc_subsecs(3)
}

fn backup_name(path: &Path, stamp: NaiveDateTime) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = split_ext(&file_name);
    let stamp = stamp.format(BACKUP_TIME_FORMAT);
    path.with_file_name(format!("{stem}-{stamp}{ext}"))
}

// The rotation time encoded in a backup's name, if it is one of ours.
fn time_from_name(name: &str, prefix: &str, ext: &str) -> Option<NaiveDateTime> {
    let stamp = name.strip_prefix(prefix)?.strip_suffix(ext)?;
    NaiveDateTime::parse_from_str(stamp, BACKUP_TIME_FORMAT).ok()
}

impl RotatingFile {
    fn write(&mut self, line: &[u8]) -> Result<(), Error> {
        let len = line.len() as u64;
        if len > self.max_bytes {
            return Err(Error::TooLarge {
                len,
                max: self.max_bytes,
            });
        }
        if self.file.is_none() {
            self.open_existing_or_new(len)?;
        }
        if self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Io {
                path: self.path.clone(),
                error: io::Error::other("log file is not open"),
            });
        };
        file.write_all(line).map_err(io_err(&self.path))?;
        self.size += len;
        Ok(())
    }

    fn open_existing_or_new(&mut self, len: u64) -> Result<(), Error> {
        // Cleanup failures must not stop auditing; lumberjack ignores them too.
        let _ = self.mill();
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.open_new(),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if meta.len() + len >= self.max_bytes {
            return self.rotate();
        }
        match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                self.size = meta.len();
                Ok(())
            }
            // An unreadable old file is set aside rather than blocking the log.
            Err(_) => self.open_new(),
        }
    }

    fn rotate(&mut self) -> Result<(), Error> {
        self.file = None;
        self.open_new()?;
        let _ = self.mill();
        Ok(())
    }

    fn open_new(&mut self) -> Result<(), Error> {
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir)?;
        }
        let mut mode = 0o600;
        if let Ok(meta) = fs::metadata(&self.path) {
            #[cfg(unix)]
            {
                mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            }
            #[cfg(not(unix))]
            let _ = meta;
            let backup = self.next_backup_name();
            fs::rename(&self.path, &backup).map_err(io_err(&self.path))?;
        }
        let file = open_options(mode)
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }

    // Two rotations in one millisecond would share a name, and lumberjack
    // would overwrite the older backup. Stamping past the newest existing
    // backup loses none and keeps name order equal to rotation order.
    fn next_backup_name(&self) -> PathBuf {
        let mut stamp = backup_stamp(Utc::now(), self.local_time);
        if let Some((newest, _)) = self.backups().ok().and_then(|b| b.into_iter().next())
            && newest >= stamp
        {
            stamp = newest + Duration::milliseconds(1);
        }
        let mut candidate = backup_name(&self.path, stamp);
        for _ in 0..1000 {
            if !candidate.exists() {
                break;
            }
            stamp += Duration::milliseconds(1);
            candidate = backup_name(&self.path, stamp);
        }
        candidate
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    // Backups of this log, newest first by the time in their names.
    fn backups(&self) -> Result<Vec<(NaiveDateTime, String)>, Error> {
        let dir = self.dir();
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = split_ext(&file_name);
        let prefix = format!("{stem}-");
        let compressed_ext = format!("{ext}{COMPRESS_SUFFIX}");
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let stamp = time_from_name(&name, &prefix, ext)
                .or_else(|| time_from_name(&name, &prefix, &compressed_ext));
            if let Some(stamp) = stamp {
                found.push((stamp, name));
            }
        }
        found.sort_by(|a, b| b.cmp(a));
        Ok(found)
    }

    // lumberjack's mill: keep the newest max_backups, drop those past max_age.
    fn mill(&self) -> Result<(), Error> {
        if self.max_backups == 0 && self.max_age_days == 0 {
            return Ok(());
        }
        let mut backups = self.backups()?;
        let mut remove = Vec::new();
        if self.max_backups > 0 && self.max_backups < backups.len() {
            // A backup and its .gz twin count once.
            let mut preserved = BTreeSet::new();
            let mut keep = Vec::new();
            for backup in backups {
                let base = backup
                    .1
                    .strip_suffix(COMPRESS_SUFFIX)
                    .unwrap_or(&backup.1)
                    .to_string();
                preserved.insert(base);
                if preserved.len() > self.max_backups {
                    remove.push(backup);
                } else {
                    keep.push(backup);
                }
            }
            backups = keep;
        }
        if self.max_age_days > 0 {
            // Capped so the arithmetic cannot overflow; 1000 years keeps everything anyway.
            let days = i64::try_from(self.max_age_days)
                .unwrap_or(i64::MAX)
                .min(365_000);
            if let Some(cutoff) = Utc::now()
                .naive_utc()
                .checked_sub_signed(Duration::days(days))
            {
                remove.extend(backups.into_iter().filter(|(stamp, _)| *stamp < cutoff));
            }
        }
        let dir = self.dir();
        let mut result = Ok(());
        for (_, name) in remove {
            let path = dir.join(&name);
            if let Err(e) = fs::remove_file(&path)
                && result.is_ok()
            {
                result = Err(io_err(&path)(e));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn res(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestAttributes {
        RequestAttributes {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            verb: verb.into(),
            resource: Some(ResourceRef {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            }),
            path: String::new(),
        }
    }

    fn nonres(verb: &str, path: &str) -> RequestAttributes {
        RequestAttributes {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            verb: verb.into(),
            resource: None,
            path: path.into(),
        }
    }

    fn as_user(mut attrs: RequestAttributes, user: &str, groups: &[&str]) -> RequestAttributes {
        attrs.user = user.into();
        attrs.groups = groups.iter().map(|g| g.to_string()).collect();
        attrs
    }

    fn policy(rules: &str) -> Policy {
        let text = format!("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}");
        match Policy::parse(&text) {
            Ok(p) => p,
            Err(e) => panic!("policy should parse: {e}\n{text}"),
        }
    }

    fn level(p: &Policy, attrs: &RequestAttributes) -> Level {
        p.evaluate(attrs).0
    }

    fn metadata_config() -> RequestAuditConfig {
        RequestAuditConfig {
            level: Level::Metadata,
            ..RequestAuditConfig::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn level_order_and_names() {
        assert!(Level::None < Level::Metadata);
        assert!(Level::Metadata < Level::Request);
        assert!(Level::Request < Level::RequestResponse);
        assert_eq!(
            "RequestResponse".parse::<Level>().unwrap(),
            Level::RequestResponse
        );
        assert!("Everything".parse::<Level>().is_err());
        assert_eq!(Stage::ResponseComplete.to_string(), "ResponseComplete");
        assert_eq!("Panic".parse::<Stage>().unwrap(), Stage::Panic);
    }

    #[test]
    fn matches_users_and_groups() {
        let p = policy(
            "- level: Request\n  users: [bob]\n- level: Metadata\n  userGroups: [admins, ops]\n",
        );
        let get = res("get", "", "pods", "", "default", "p");
        assert_eq!(level(&p, &as_user(get.clone(), "bob", &[])), Level::Request);
        assert_eq!(
            level(&p, &as_user(get.clone(), "carol", &["dev", "ops"])),
            Level::Metadata
        );
        assert_eq!(level(&p, &as_user(get, "carol", &["dev"])), Level::None);
    }

    #[test]
    fn matches_verbs() {
        let p = policy("- level: Request\n  verbs: [create, update]\n");
        assert_eq!(
            level(&p, &res("create", "", "pods", "", "default", "")),
            Level::Request
        );
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "default", "p")),
            Level::None
        );
        // Verbs apply to non-resource requests too.
        assert_eq!(level(&p, &nonres("create", "/x")), Level::Request);
    }

    #[test]
    fn matches_resources_and_subresources() {
        let p = policy(concat!(
            "- level: RequestResponse\n  resources:\n  - group: \"\"\n    resources: [pods]\n",
            "- level: Request\n  resources:\n  - group: \"\"\n    resources: [pods/log]\n",
            "- level: Metadata\n  resources:\n  - group: apps\n    resources: [\"*/scale\"]\n",
            "- level: None\n  resources:\n  - group: batch\n    resources: [\"jobs/*\"]\n",
            "- level: Request\n  resources:\n  - group: batch\n",
            "- level: Metadata\n  resources:\n  - group: rbac.authorization.k8s.io\n    resources: [\"*\"]\n",
        ));
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "ns", "p")),
            Level::RequestResponse
        );
        assert_eq!(
            level(&p, &res("get", "", "pods", "log", "ns", "p")),
            Level::Request
        );
        // "pods" alone does not cover other subresources.
        assert_eq!(
            level(&p, &res("create", "", "pods", "exec", "ns", "p")),
            Level::None
        );
        assert_eq!(
            level(
                &p,
                &res("update", "apps", "deployments", "scale", "ns", "d")
            ),
            Level::Metadata
        );
        assert_eq!(
            level(&p, &res("update", "apps", "deployments", "", "ns", "d")),
            Level::None
        );
        // Group must match exactly: core pods rule does not catch apps.
        assert_eq!(
            level(&p, &res("get", "apps", "pods", "", "ns", "p")),
            Level::None
        );
        // "jobs/*" covers subresources and, as upstream, the resource itself.
        assert_eq!(
            level(&p, &res("get", "batch", "jobs", "status", "ns", "j")),
            Level::None
        );
        assert_eq!(
            level(&p, &res("get", "batch", "jobs", "", "ns", "j")),
            Level::None
        );
        // A group with no resources covers all of them.
        assert_eq!(
            level(&p, &res("get", "batch", "cronjobs", "", "ns", "c")),
            Level::Request
        );
        // "*" covers resources and subresources.
        assert_eq!(
            level(
                &p,
                &res("get", "rbac.authorization.k8s.io", "roles", "", "ns", "r")
            ),
            Level::Metadata
        );
        assert_eq!(
            level(
                &p,
                &res(
                    "get",
                    "rbac.authorization.k8s.io",
                    "roles",
                    "status",
                    "ns",
                    "r"
                )
            ),
            Level::Metadata
        );
        // Resource rules never match non-resource requests.
        assert_eq!(level(&p, &nonres("get", "/api/v1/pods")), Level::None);
    }

    #[test]
    fn matches_resource_names() {
        let p = policy(
            "- level: None\n  resources:\n  - group: \"\"\n    resources: [configmaps]\n    resourceNames: [leader]\n- level: Metadata\n",
        );
        assert_eq!(
            level(&p, &res("update", "", "configmaps", "", "ns", "leader")),
            Level::None
        );
        assert_eq!(
            level(&p, &res("update", "", "configmaps", "", "ns", "other")),
            Level::Metadata
        );
        // Lists carry no name, so a named rule does not match them.
        assert_eq!(
            level(&p, &res("list", "", "configmaps", "", "ns", "")),
            Level::Metadata
        );
    }

    #[test]
    fn matches_namespaces_including_cluster_scope() {
        let p = policy(
            "- level: Request\n  namespaces: [kube-system]\n- level: RequestResponse\n  namespaces: [\"\"]\n",
        );
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "kube-system", "p")),
            Level::Request
        );
        assert_eq!(
            level(&p, &res("get", "", "nodes", "", "", "n1")),
            Level::RequestResponse
        );
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "default", "p")),
            Level::None
        );
        // A namespace rule is a resource rule: never a non-resource request.
        assert_eq!(level(&p, &nonres("get", "/healthz")), Level::None);
    }

    #[test]
    fn matches_non_resource_urls() {
        let p = policy(concat!(
            "- level: None\n  nonResourceURLs: [\"/healthz*\", /version]\n",
            "- level: Request\n  nonResourceURLs: [\"/api\"]\n",
            "- level: Metadata\n  nonResourceURLs: [\"*\"]\n",
        ));
        assert_eq!(level(&p, &nonres("get", "/healthz")), Level::None);
        assert_eq!(level(&p, &nonres("get", "/healthz/etcd")), Level::None);
        assert_eq!(level(&p, &nonres("get", "/version")), Level::None);
        assert_eq!(level(&p, &nonres("get", "/version/x")), Level::Metadata);
        assert_eq!(level(&p, &nonres("get", "/api")), Level::Request);
        assert_eq!(level(&p, &nonres("get", "/apis")), Level::Metadata);
        // URL rules never match resource requests, even "*".
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "ns", "p")),
            Level::None
        );
    }

    #[test]
    fn first_matching_rule_wins_and_default_is_none() {
        let p = policy(concat!(
            "- level: None\n  users: [system:kube-proxy]\n",
            "- level: RequestResponse\n  verbs: [delete]\n",
            "- level: Metadata\n  verbs: [delete, get]\n",
        ));
        let del = res("delete", "", "pods", "", "ns", "p");
        assert_eq!(
            level(&p, &as_user(del.clone(), "system:kube-proxy", &[])),
            Level::None
        );
        assert_eq!(level(&p, &del), Level::RequestResponse);
        assert_eq!(
            level(&p, &res("get", "", "pods", "", "ns", "p")),
            Level::Metadata
        );
        assert_eq!(
            level(&p, &res("list", "", "pods", "", "ns", "")),
            Level::None
        );
    }

    #[test]
    fn omit_stages_are_the_union_of_policy_and_rule() {
        let p = Policy::parse(concat!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n",
            "omitStages: [RequestReceived]\n",
            "rules:\n",
            "- level: Metadata\n  verbs: [watch]\n  omitStages: [ResponseStarted, RequestReceived]\n",
            "- level: Request\n  verbs: [get]\n",
        ))
        .unwrap();
        let (lvl, stages) = p.evaluate(&res("watch", "", "pods", "", "ns", ""));
        assert_eq!(lvl, Level::Metadata);
        assert_eq!(stages, vec![Stage::RequestReceived, Stage::ResponseStarted]);
        let (lvl, stages) = p.evaluate(&res("get", "", "pods", "", "ns", "p"));
        assert_eq!(lvl, Level::Request);
        assert_eq!(stages, vec![Stage::RequestReceived]);
        // No match: level None with the policy's stages.
        assert_eq!(
            p.evaluate(&res("list", "", "pods", "", "ns", "")),
            (Level::None, vec![Stage::RequestReceived])
        );
    }

    #[test]
    fn omit_managed_fields_rule_overrides_policy() {
        let p = Policy::parse(concat!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitManagedFields: true\nrules:\n",
            "- level: Request\n  verbs: [create]\n  omitManagedFields: false\n",
            "- level: Request\n",
        ))
        .unwrap();
        assert!(
            !p.evaluate_config(&res("create", "", "pods", "", "ns", ""))
                .omit_managed_fields
        );
        assert!(
            p.evaluate_config(&res("update", "", "pods", "", "ns", "p"))
                .omit_managed_fields
        );
    }

    #[test]
    fn parse_accepts_json_and_ignores_unknown_fields() {
        let p = Policy::parse(
            r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","metadata":{"name":"x"},"bogus":1,
               "rules":[{"level":"Metadata","nonResourceURLs":["/metrics"]}]}"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].non_resource_urls, vec!["/metrics"]);
        // kind may be left out; apiVersion may not.
        assert!(Policy::parse("apiVersion: audit.k8s.io/v1\nrules:\n- level: None\n").is_ok());
    }

    #[test]
    fn parse_rejects_what_upstream_rejects() {
        let err = |text: &str| Policy::parse(text).unwrap_err().to_string();
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";

        assert!(err("kind: Policy\nrules:\n- level: None\n").contains("unknown group version"));
        assert!(
            err("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n")
                .contains("unknown group version")
        );
        assert!(err("apiVersion: audit.k8s.io/v1\nkind: Pod\n").starts_with("failed decoding"));
        assert!(err("").starts_with("failed decoding"));
        assert!(err("{not json").starts_with("failed decoding"));
        assert!(err(&format!("{head}rules: oops\n")).starts_with("failed decoding"));
        assert_eq!(err(head), "loaded illegal policy with 0 rules");
        assert_eq!(
            err(&format!("{head}rules: []\n")),
            "loaded illegal policy with 0 rules"
        );

        assert_eq!(
            err(&format!("{head}rules:\n- verbs: [get]\n")),
            "rules[0].level: Required value"
        );
        assert_eq!(
            err(&format!("{head}rules:\n- level: Everything\n")),
            "rules[0].level: Unsupported value: \"Everything\": supported values: \
             \"None\", \"Metadata\", \"Request\", \"RequestResponse\""
        );
        assert!(
            err(&format!("{head}rules:\n- level: None\n  nonResourceURLs: [healthz]\n"))
                .contains("rules[0].nonResourceURLs[0]: Invalid value: \"healthz\": non-resource URL rules must begin with a '/' character")
        );
        assert!(
            err(&format!(
                "{head}rules:\n- level: None\n  nonResourceURLs: [\"/a*/b\"]\n"
            ))
            .contains("wildcards '*' must be the final character")
        );
        assert!(
            err(&format!(
                "{head}rules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [a]\n"
            ))
            .contains("rules cannot apply to both regular resources and non-resource URLs")
        );
        assert!(
            err(&format!("{head}rules:\n- level: None\n  resources:\n  - group: apps/v1\n"))
                .starts_with("rules[0].resources.group: Invalid value: \"apps/v1\": a lowercase RFC 1123 subdomain")
        );
        assert!(
            err(&format!(
                "{head}rules:\n- level: None\n  resources:\n  - group: \"\"\n    resourceNames: [a]\n"
            ))
            .contains("using resourceNames requires at least one resource")
        );
        assert!(
            err(&format!(
                "{head}rules:\n- level: None\n  omitStages: [Sometime]\n"
            ))
            .contains("rules[0].omitStages[0]: Invalid value: \"Sometime\": allowed stages are")
        );
        // Several errors come back together, bracketed as upstream aggregates them.
        let many = err(&format!("{head}rules:\n- level: Bad\n- {{}}\n"));
        assert!(
            many.starts_with("[rules[0].level: Unsupported value"),
            "{many}"
        );
        assert!(many.ends_with("rules[1].level: Required value]"), "{many}");
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        fs::write(&path, "apiVersion: audit.k8s.io/v1\nkind: Policy\n").unwrap();
        let msg = Policy::from_file(&path).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "loaded illegal policy with 0 rules: from file {}",
                path.display()
            )
        );
        assert!(matches!(Policy::from_file(""), Err(Error::PolicyPathEmpty)));
        let missing = Policy::from_file(dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("failed to read file path"), "{missing}");
    }

    // The example policy from the Kubernetes "Auditing" task page.
    const DOCS_POLICY: &str = r#"
apiVersion: audit.k8s.io/v1 # This is required.
kind: Policy
# Don't generate audit events for all requests in RequestReceived stage.
omitStages:
  - "RequestReceived"
rules:
  # Log pod changes at RequestResponse level
  - level: RequestResponse
    resources:
    - group: ""
      # Resource "pods" doesn't match requests to any subresource of pods,
      # which is consistent with the RBAC policy.
      resources: ["pods"]
  # Log "pods/log", "pods/status" at Metadata level
  - level: Metadata
    resources:
    - group: ""
      resources: ["pods/log", "pods/status"]

  # Don't log requests to a configmap called "controller-leader"
  - level: None
    resources:
    - group: ""
      resources: ["configmaps"]
      resourceNames: ["controller-leader"]

  # Don't log watch requests by the "system:kube-proxy" on endpoints or services
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
    - group: "" # core API group
      resources: ["endpoints", "services"]

  # Don't log authenticated requests to certain non-resource URL paths.
  - level: None
    userGroups: ["system:authenticated"]
    nonResourceURLs:
    - "/api*" # Wildcard matching.
    - "/version"

  # Log the request body of configmap changes in kube-system.
  - level: Request
    resources:
    - group: "" # core API group
      resources: ["configmaps"]
    # This rule only applies to resources in the "kube-system" namespace.
    # The empty string "" can be used to select non-namespaced resources.
    namespaces: ["kube-system"]

  # Log configmap and secret changes in all other namespaces at the Metadata level.
  - level: Metadata
    resources:
    - group: "" # core API group
      resources: ["secrets", "configmaps"]

  # Log all other resources in core and extensions at the Request level.
  - level: Request
    resources:
    - group: "" # core API group
    - group: "extensions" # Version of group should NOT be included.

  # A catch-all rule to log all other requests at the Metadata level.
  - level: Metadata
    # Long-running requests like watches that fall under this rule will not
    # generate an audit event in RequestReceived.
    omitStages:
      - "RequestReceived"
"#;

    #[test]
    fn docs_example_policy_gives_documented_levels() {
        let p = Policy::parse(DOCS_POLICY).unwrap();
        assert_eq!(p.rules.len(), 9);
        assert_eq!(p.omit_stages, vec![Stage::RequestReceived]);
        let cases = [
            (
                res("create", "", "pods", "", "default", ""),
                Level::RequestResponse,
            ),
            (
                res("get", "", "pods", "log", "default", "p"),
                Level::Metadata,
            ),
            (
                res("patch", "", "pods", "status", "default", "p"),
                Level::Metadata,
            ),
            // Other pod subresources fall through to the core-group rule.
            (
                res("create", "", "pods", "exec", "default", "p"),
                Level::Request,
            ),
            (
                res(
                    "update",
                    "",
                    "configmaps",
                    "",
                    "kube-system",
                    "controller-leader",
                ),
                Level::None,
            ),
            (
                as_user(
                    res("watch", "", "endpoints", "", "default", ""),
                    "system:kube-proxy",
                    &[],
                ),
                Level::None,
            ),
            // Only kube-proxy's watches are dropped.
            (
                res("watch", "", "endpoints", "", "default", ""),
                Level::Request,
            ),
            (nonres("get", "/apis/apps/v1"), Level::None),
            (nonres("get", "/version"), Level::None),
            (
                as_user(
                    nonres("get", "/version"),
                    "system:anonymous",
                    &["system:unauthenticated"],
                ),
                Level::Metadata,
            ),
            (nonres("get", "/healthz"), Level::Metadata),
            (
                res("update", "", "configmaps", "", "kube-system", "cfg"),
                Level::Request,
            ),
            (
                res("get", "", "configmaps", "", "default", "cfg"),
                Level::Metadata,
            ),
            (
                res("get", "", "secrets", "", "kube-system", "s"),
                Level::Metadata,
            ),
            (res("list", "", "nodes", "", "", ""), Level::Request),
            (
                res("get", "extensions", "ingresses", "", "default", "i"),
                Level::Request,
            ),
            (
                res("get", "apps", "deployments", "", "default", "d"),
                Level::Metadata,
            ),
        ];
        for (attrs, want) in cases {
            assert_eq!(level(&p, &attrs), want, "{attrs:?}");
        }
        // Every rule also omits the policy-wide RequestReceived stage.
        let (_, stages) = p.evaluate(&res("get", "apps", "deployments", "", "default", "d"));
        assert_eq!(stages, vec![Stage::RequestReceived]);
        let (_, stages) = p.evaluate(&res("get", "", "pods", "", "default", "p"));
        assert_eq!(stages, vec![Stage::RequestReceived]);
    }

    fn forbidden_builder() -> EventBuilder {
        let attrs = as_user(
            res("list", "", "pods", "", "default", ""),
            "system:anonymous",
            &["system:unauthenticated"],
        );
        let mut b = EventBuilder::new(
            "8b2b5e6c-0f29-4d61-9a59-6f1f2c4a7c11",
            &metadata_config(),
            at("2024-05-01T10:00:00.123456789Z"),
        );
        b.log_request_metadata(
            &attrs,
            "/api/v1/namespaces/default/pods?limit=500",
            "curl/8.5.0",
            vec!["10.0.0.7".into()],
        );
        b
    }

    #[test]
    fn metadata_event_for_forbidden_request() {
        let mut b = forbidden_builder();
        let message = "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" \
                       in API group \"\" in the namespace \"default\"";
        b.log_authorization(AuthorizationDecision::Forbid, "");
        b.log_response_object(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "Forbidden",
            "details": {"kind": "pods"}, "code": 403
        }));
        b.set_response_code(403);
        let ev = b
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:00.200000Z"))
            .unwrap();
        assert_eq!(
            ev,
            json!({
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": "Metadata",
                "auditID": "8b2b5e6c-0f29-4d61-9a59-6f1f2c4a7c11",
                "stage": "ResponseComplete",
                "requestURI": "/api/v1/namespaces/default/pods?limit=500",
                "verb": "list",
                "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                "sourceIPs": ["10.0.0.7"],
                "userAgent": "curl/8.5.0",
                "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
                "responseStatus": {
                    "metadata": {}, "status": "Failure", "message": message,
                    "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403
                },
                "requestReceivedTimestamp": "2024-05-01T10:00:00.123456Z",
                "stageTimestamp": "2024-05-01T10:00:00.200000Z",
                "annotations": {
                    "authorization.k8s.io/decision": "forbid",
                    "authorization.k8s.io/reason": ""
                }
            })
        );
        // Field order follows the Go struct, and the line is Go-escaped.
        let line = to_json_line(&ev).unwrap();
        assert!(line.starts_with(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"#
        ));
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        assert!(line.contains(r#""requestURI":"/api/v1/namespaces/default/pods?limit=500""#));
    }

    #[test]
    fn stage_timestamps_fake_status_and_omitted_stages() {
        let mut config = metadata_config();
        config.omit_stages = vec![Stage::ResponseStarted];
        let received = at("2024-05-01T10:00:00Z");
        let mut b = EventBuilder::new("id", &config, received);
        b.log_request_metadata(&nonres("get", "/healthz"), "/healthz", "", vec![]);

        let rr = b
            .event(Stage::RequestReceived, at("2024-05-01T10:00:09Z"))
            .unwrap();
        assert_eq!(rr["stageTimestamp"], "2024-05-01T10:00:00.000000Z");
        assert!(rr.get("responseStatus").is_none());
        assert!(rr.get("objectRef").is_none() && rr.get("sourceIPs").is_none());
        assert!(rr.get("userAgent").is_none() && rr.get("annotations").is_none());

        assert!(b.event(Stage::ResponseStarted, received).is_none());
        let done = b
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:01Z"))
            .unwrap();
        assert_eq!(
            done["responseStatus"],
            json!({"metadata": {}, "status": "Success", "message": "Connection closed early", "code": 200})
        );
        b.set_response_code(200);
        let done = b
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:01Z"))
            .unwrap();
        assert_eq!(done["responseStatus"], json!({"metadata": {}, "code": 200}));

        b.log_panic("boom");
        let panic = b.event(Stage::Panic, at("2024-05-01T10:00:02Z")).unwrap();
        assert_eq!(panic["responseStatus"]["code"], 500);
        assert_eq!(
            panic["responseStatus"]["message"],
            "APIServer panic'd: boom"
        );

        // Level None never produces events.
        let none = EventBuilder::new("id", &RequestAuditConfig::default(), received);
        assert!(none.event(Stage::ResponseComplete, received).is_none());
    }

    fn pod_body() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "labels": {"app": "web"}
            },
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        })
    }

    fn served(level: Level, omit_managed_fields: bool) -> Value {
        let config = RequestAuditConfig {
            level,
            omit_stages: vec![],
            omit_managed_fields,
        };
        let mut b = EventBuilder::new("id", &config, at("2024-05-01T10:00:00Z"));
        b.log_request_metadata(
            &res("create", "", "pods", "", "default", ""),
            "/api/v1/namespaces/default/pods",
            "kubectl",
            vec!["127.0.0.1".into()],
        );
        b.log_request_object(&pod_body());
        b.log_response_object(&pod_body());
        b.set_response_code(201);
        b.event(Stage::ResponseComplete, at("2024-05-01T10:00:01Z"))
            .unwrap()
    }

    #[test]
    fn bodies_kept_only_at_their_levels() {
        let meta = served(Level::Metadata, false);
        assert!(meta.get("requestObject").is_none() && meta.get("responseObject").is_none());
        // Metadata still learns the created object's name and identity.
        assert_eq!(
            meta["objectRef"],
            json!({"resource": "pods", "namespace": "default", "name": "web", "uid": "u-1",
                   "apiVersion": "v1", "resourceVersion": "42"})
        );
        assert_eq!(meta["responseStatus"], json!({"metadata": {}, "code": 201}));

        let req = served(Level::Request, false);
        assert_eq!(req["requestObject"], pod_body());
        assert!(req.get("responseObject").is_none());

        let both = served(Level::RequestResponse, false);
        assert_eq!(both["requestObject"], pod_body());
        assert_eq!(both["responseObject"], pod_body());

        // Patches are kept from Request up, verbatim.
        let patch = json!({"metadata": {"labels": {"a": "b"}}});
        let mut b = EventBuilder::new("id", &metadata_config(), at("2024-05-01T10:00:00Z"));
        b.log_request_patch(&patch);
        assert!(
            b.event(Stage::ResponseComplete, at("2024-05-01T10:00:00Z"))
                .unwrap()
                .get("requestObject")
                .is_none()
        );
        let config = RequestAuditConfig {
            level: Level::Request,
            ..RequestAuditConfig::default()
        };
        let mut b = EventBuilder::new("id", &config, at("2024-05-01T10:00:00Z"));
        b.log_request_patch(&patch);
        assert_eq!(
            b.event(Stage::ResponseComplete, at("2024-05-01T10:00:00Z"))
                .unwrap()["requestObject"],
            patch
        );
    }

    #[test]
    fn managed_fields_stripped_when_configured() {
        let ev = served(Level::RequestResponse, true);
        for key in ["requestObject", "responseObject"] {
            let meta = &ev[key]["metadata"];
            assert!(meta.get("managedFields").is_none(), "{key}");
            assert_eq!(meta["labels"], json!({"app": "web"}));
            // Key order of what remains is kept.
            let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["name", "namespace", "uid", "resourceVersion", "labels"]
            );
        }
        let list = json!({"kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [pod_body(), pod_body()]});
        let stripped = without_managed_fields(&list);
        assert!(
            stripped["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["metadata"].get("managedFields").is_none())
        );
        let table = json!({"kind": "Table", "rows": [{"cells": [], "object": pod_body()}]});
        assert!(
            without_managed_fields(&table)["rows"][0]["object"]["metadata"]
                .get("managedFields")
                .is_none()
        );
        // Kept when not configured.
        let kept = served(Level::RequestResponse, false);
        assert!(
            kept["responseObject"]["metadata"]
                .get("managedFields")
                .is_some()
        );
    }

    #[test]
    fn annotations_keep_first_value_and_need_metadata() {
        let mut b = EventBuilder::new("id", &metadata_config(), at("2024-05-01T10:00:00Z"));
        assert!(b.add_annotation("k", "v1"));
        assert!(!b.add_annotation("k", "v2"));
        assert!(b.add_annotation("k", "v1"));
        b.log_authorization(
            AuthorizationDecision::Allow,
            "RBAC: allowed by ClusterRoleBinding \"x\"",
        );
        let ev = b
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:00Z"))
            .unwrap();
        assert_eq!(ev["annotations"]["k"], "v1");
        assert_eq!(ev["annotations"][ANNOTATION_AUTHZ_DECISION], "allow");
        let keys: Vec<&String> = ev["annotations"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [ANNOTATION_AUTHZ_DECISION, ANNOTATION_AUTHZ_REASON, "k"]
        );

        let mut e = EventBuilder::new("id", &metadata_config(), at("2024-05-01T10:00:00Z"));
        e.log_authorization(AuthorizationDecision::Error, "ignored");
        let ev = e
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:00Z"))
            .unwrap();
        assert_eq!(
            ev["annotations"],
            json!({ANNOTATION_AUTHZ_REASON: "internal error"})
        );

        let mut none = EventBuilder::new(
            "id",
            &RequestAuditConfig::default(),
            at("2024-05-01T10:00:00Z"),
        );
        assert!(!none.add_annotation("k", "v"));
    }

    #[test]
    fn impersonation_user_agent_and_audit_id() {
        let mut b = forbidden_builder();
        let mut user = UserInfo::new("admin", vec!["system:masters".into()]);
        user.uid = "u-9".into();
        user.extra.insert("scopes".into(), vec!["a".into()]);
        b.set_user(user);
        b.log_impersonated_user(UserInfo::new("bob", vec![]));
        let long = "x".repeat(1500);
        b.log_request_metadata(&res("get", "", "pods", "", "ns", "p"), "/p", &long, vec![]);
        b.set_user(UserInfo::new("admin", vec![]));
        let ev = b
            .event(Stage::ResponseComplete, at("2024-05-01T10:00:00Z"))
            .unwrap();
        assert_eq!(ev["impersonatedUser"], json!({"username": "bob"}));
        let ua = ev["userAgent"].as_str().unwrap();
        assert_eq!(ua.len(), 1024 + "...TRUNCATED".len());
        assert!(ua.ends_with("...TRUNCATED"));
        // Multi-byte agents are cut on a character boundary.
        assert!(truncate_user_agent(&"é".repeat(600)).ends_with("...TRUNCATED"));

        let full = UserInfo {
            username: "u".into(),
            uid: "1".into(),
            groups: vec!["g".into()],
            extra: BTreeMap::from([("k".to_string(), vec!["v".to_string()])]),
        };
        assert_eq!(
            full.to_json(),
            json!({"username": "u", "uid": "1", "groups": ["g"], "extra": {"k": ["v"]}})
        );

        assert_eq!(new_audit_id(Some("from-client")), "from-client");
        let generated = new_audit_id(Some(""));
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert_ne!(generated, new_audit_id(None));
    }

    #[test]
    fn source_ips_follow_upstream_order() {
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(source_ips(None, None, Some(remote)), ["10.0.0.1"]);
        assert_eq!(
            source_ips(
                Some("1.1.1.1, bogus, 2.2.2.2"),
                Some("3.3.3.3"),
                Some(remote)
            ),
            ["1.1.1.1", "2.2.2.2", "3.3.3.3", "10.0.0.1"]
        );
        // X-Real-Ip already in the chain is not repeated; nor is a remote equal to the last.
        assert_eq!(
            source_ips(Some("1.1.1.1,10.0.0.1"), Some("1.1.1.1"), Some(remote)),
            ["1.1.1.1", "10.0.0.1"]
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_ips(None, None, Some(mapped)), ["10.0.0.1"]);
    }

    #[test]
    fn json_line_escapes_like_go() {
        let ev = json!({"requestURI": "/api?a=1&b=<2>", "m": "x\u{2028}y"});
        let line = to_json_line(&ev).unwrap();
        assert_eq!(
            line,
            "{\"requestURI\":\"/api?a=1\\u0026b=\\u003c2\\u003e\",\"m\":\"x\\u2028y\"}\n"
        );
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
        assert_eq!(
            micro_time(&at("2024-01-02T03:04:05.9999999Z")),
            "2024-01-02T03:04:05.999999Z"
        );
    }

    #[test]
    fn backup_names_follow_lumberjack() {
        let t = Utc.with_ymd_and_hms(2016, 11, 4, 18, 30, 0).unwrap() + Duration::milliseconds(7);
        let stamp = backup_stamp(t + Duration::microseconds(900), false);
        assert_eq!(stamp, t.naive_utc(), "truncated to the millisecond");
        assert_eq!(
            backup_name(Path::new("/var/log/foo/server.log"), stamp),
            PathBuf::from("/var/log/foo/server-2016-11-04T18-30-00.007.log")
        );
        assert_eq!(
            backup_name(Path::new("/var/log/audit"), stamp),
            PathBuf::from("/var/log/audit-2016-11-04T18-30-00.007")
        );
        let local = backup_stamp(t, true);
        assert_eq!(local, t.with_timezone(&Local).naive_local());
        assert_eq!(
            time_from_name("server-2016-11-04T18-30-00.007.log", "server-", ".log"),
            Some(t.naive_utc())
        );
        assert_eq!(time_from_name("server.log", "server-", ".log"), None);
        assert_eq!(
            time_from_name("server-notatime.log", "server-", ".log"),
            None
        );
    }

    fn event_line(n: usize) -> Value {
        // Fixed width so every line has the same length.
        json!({"kind": "Event", "n": format!("{n:03}"), "pad": "0123456789012345678901234567890123456789"})
    }

    fn backup_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "audit.log")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_creates_backups_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("audit.log");
        let line_len = to_json_line(&event_line(0)).unwrap().len() as u64;
        // Room for two lines per file.
        let mut w = LogWriter::open_with_limit(&path, line_len * 2 + 1, 2).unwrap();
        assert!(path.exists(), "the log is created on open");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }

        for n in 0..3 {
            w.write_event(&event_line(n)).unwrap();
        }
        let backups = backup_files(path.parent().unwrap());
        assert_eq!(backups.len(), 1, "{backups:?}");
        let name = &backups[0];
        assert!(
            name.starts_with("audit-") && name.ends_with(".log"),
            "{name}"
        );
        assert!(time_from_name(name, "audit-", ".log").is_some(), "{name}");
        let first = fs::read_to_string(path.parent().unwrap().join(name)).unwrap();
        let lines: Vec<Value> = first
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![event_line(0), event_line(1)]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            to_json_line(&event_line(2)).unwrap()
        );

        for n in 3..12 {
            w.write_event(&event_line(n)).unwrap();
        }
        let backups = backup_files(path.parent().unwrap());
        assert_eq!(backups.len(), 2, "{backups:?}");
        // The newest two survive: lines 8-9 and 6-7 (10-11 are current).
        let newest = fs::read_to_string(path.parent().unwrap().join(&backups[1])).unwrap();
        assert_eq!(newest.lines().count(), 2);
        assert!(newest.contains("\"n\":\"009\""), "{newest}");
        assert!(
            fs::read_to_string(path.parent().unwrap().join(&backups[0]))
                .unwrap()
                .contains("\"n\":\"007\"")
        );

        // A line that can never fit is refused.
        let huge = json!({"pad": "x".repeat(usize::try_from(line_len).unwrap() * 3)});
        assert!(matches!(w.write_event(&huge), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn reopen_appends_and_old_backups_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let stale = dir.path().join("audit-2000-01-01T00-00-00.000.log");
        let unrelated = dir.path().join("audit-notes.log");
        fs::write(&stale, "old\n").unwrap();
        fs::write(&unrelated, "keep\n").unwrap();

        let mut w = LogWriter::open_with_limit(&path, 10_000, 0).unwrap();
        w.write_event(&event_line(0)).unwrap();
        drop(w);
        let mut w = LogWriter::open_with_limit(&path, 10_000, 0)
            .unwrap()
            .with_max_age_days(1);
        w.write_event(&event_line(1)).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap().lines().count(),
            2,
            "appended, not truncated"
        );
        // The first write of a writer cleans up aged backups.
        assert!(!stale.exists());
        assert!(
            unrelated.exists(),
            "files not named like backups are left alone"
        );

        w.rotate().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        assert_eq!(backup_files(dir.path()).len(), 2);
    }

    #[test]
    fn dash_means_stdout_and_empty_path_is_refused() {
        let w = LogWriter::open("-", 0, 0).unwrap();
        assert!(w.is_stdout() && w.path().is_none());
        assert!(matches!(
            LogWriter::open("", 0, 0),
            Err(Error::LogPathEmpty)
        ));
    }
}
