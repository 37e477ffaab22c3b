//! Pod Security Admission: the decision logic of the Pod Security Standards
//! (levels `privileged`, `baseline`, `restricted`) as upstream Kubernetes 1.33
//! enforces them (k8s.io/pod-security-admission).
//!
//! Everything here is pure: it reads pods and namespaces as `serde_json::Value`
//! (how kelp stores objects) and returns violations, messages and decisions.
//! Reaching the store, building HTTP statuses and recording audit annotations
//! is left to the caller.
//!
//! The wording and order of reasons and details match upstream byte for byte,
//! because clients and conformance tests compare them as text.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::gofmt;

/// Prefix shared by the namespace labels and the audit annotations.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
/// Namespace label holding the enforced level.
pub const ENFORCE_LEVEL_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// Namespace label holding the enforced policy version.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// Namespace label holding the audited level.
pub const AUDIT_LEVEL_LABEL: &str = "pod-security.kubernetes.io/audit";
/// Namespace label holding the audited policy version.
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
/// Namespace label holding the level that produces warnings.
pub const WARN_LEVEL_LABEL: &str = "pod-security.kubernetes.io/warn";
/// Namespace label holding the policy version that produces warnings.
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// Audit annotation key (before [`LABEL_PREFIX`]) naming why a request was exempt.
pub const EXEMPT_ANNOTATION: &str = "exempt";
/// Audit annotation key (before [`LABEL_PREFIX`]) holding audit-mode violations.
pub const AUDIT_VIOLATIONS_ANNOTATION: &str = "audit-violations";
/// Audit annotation key (before [`LABEL_PREFIX`]) naming the enforced policy.
pub const ENFORCED_POLICY_ANNOTATION: &str = "enforce-policy";
/// Audit annotation key (before [`LABEL_PREFIX`]) holding a label parse error.
pub const ERROR_ANNOTATION: &str = "error";

/// Highest policy minor version with its own check revision in 1.33
/// (sysctls, v1.32); later versions and `latest` evaluate as this one.
pub const MAX_POLICY_MINOR: u64 = 32;

// ---------------------------------------------------------------------------
// Levels and versions
// ---------------------------------------------------------------------------

/// A Pod Security Standards level; ordered from least to most strict.
/// The default is privileged, upstream's built-in default for every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Level {
    /// No restrictions at all.
    #[default]
    Privileged,
    /// Blocks known privilege escalations.
    Baseline,
    /// Current pod hardening best practice.
    Restricted,
}

impl Level {
    /// Parses a label value: exactly `privileged`, `baseline` or `restricted`.
    pub fn parse(value: &str) -> Result<Level, ParseLevelError> {
        match value {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            other => Err(ParseLevelError(other.to_string())),
        }
    }

    /// The label spelling of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::parse(s)
    }
}

/// A level label value that is not one of the three levels; holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError(pub String);

impl fmt::Display for ParseLevelError {
    // Upstream's wording, which ends up in namespace validation errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be one of privileged, baseline, restricted")
    }
}

impl std::error::Error for ParseLevelError {}

/// A policy version: `latest` (the default) or `v1.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Version {
    // None is `latest`, which upstream treats as newer than any number.
    minor: Option<u64>,
}

impl Version {
    /// The `latest` version.
    pub const LATEST: Version = Version { minor: None };

    /// The version `v1.<minor>`.
    pub const fn v1(minor: u64) -> Version {
        Version { minor: Some(minor) }
    }

    /// Whether this is `latest`.
    pub fn is_latest(self) -> bool {
        self.minor.is_none()
    }

    /// The minor number, or `None` for `latest`.
    pub fn minor(self) -> Option<u64> {
        self.minor
    }

    /// Parses `latest` or `v1.N` (no leading zeros, as upstream's pattern).
    pub fn parse(value: &str) -> Result<Version, ParseVersionError> {
        if value == "latest" {
            return Ok(Version::LATEST);
        }
        let err = || ParseVersionError(value.to_string());
        let digits = value.strip_prefix("v1.").ok_or_else(err)?;
        let well_formed = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !well_formed {
            return Err(err());
        }
        // Upstream parses into a signed 64-bit int, so overflow is an error.
        let minor: i64 = digits.parse().map_err(|_| err())?;
        u64::try_from(minor).map(Version::v1).map_err(|_| err())
    }

    /// The minor number the checks are evaluated at: `latest` and anything
    /// past [`MAX_POLICY_MINOR`] behave alike.
    fn effective_minor(self) -> u64 {
        self.minor
            .map_or(MAX_POLICY_MINOR, |m| m.min(MAX_POLICY_MINOR))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.minor, other.minor) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(&b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            None => f.write_str("latest"),
            Some(m) => write!(f, "v1.{m}"),
        }
    }
}

impl FromStr for Version {
    type Err = ParseVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

/// A version label value that is neither `latest` nor `v1.N`; holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseVersionError(pub String);

impl fmt::Display for ParseVersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"must be "latest" or "v1.x""#)
    }
}

impl std::error::Error for ParseVersionError {}

/// A level at a policy version, e.g. `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The policy version.
    pub version: Version,
}

impl LevelVersion {
    /// Pairs a level with a version.
    pub const fn new(level: Level, version: Version) -> Self {
        LevelVersion { level, version }
    }

    /// Whether both behave the same: both privileged, or equal.
    pub fn equivalent(&self, other: &LevelVersion) -> bool {
        (self.level == Level::Privileged && other.level == Level::Privileged) || self == other
    }
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

// ---------------------------------------------------------------------------
// Namespace policy
// ---------------------------------------------------------------------------

/// The effective policy of a namespace, one level/version per mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Violations reject pods.
    pub enforce: LevelVersion,
    /// Violations are recorded in the audit log.
    pub audit: LevelVersion,
    /// Violations are returned as warnings.
    pub warn: LevelVersion,
}

/// An invalid pod-security label on a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    /// The full label key.
    pub label: String,
    /// The rejected value.
    pub value: String,
    /// Why it was rejected (upstream's wording).
    pub message: String,
}

impl LabelError {
    fn new(label: &str, value: &str, message: String) -> Self {
        LabelError {
            label: label.to_string(),
            value: value.to_string(),
            message,
        }
    }

    /// The field path, as in a Status cause: `metadata.labels[<label>]`.
    pub fn field(&self) -> String {
        format!("metadata.labels[{}]", self.label)
    }

    /// The message without the field, as in a Status cause.
    pub fn body(&self) -> String {
        format!(
            "Invalid value: {}: {}",
            gofmt::quote(&self.value),
            self.message
        )
    }
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.body())
    }
}

impl std::error::Error for LabelError {}

/// Joins label errors as upstream's error aggregate does: one error alone,
/// several deduplicated inside `[...]`.
pub fn aggregate_errors(errors: &[LabelError]) -> String {
    let mut seen = BTreeSet::new();
    let mut parts = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if seen.insert(msg.clone()) {
            parts.push(msg);
        }
    }
    match parts.len() {
        0 => String::new(),
        1 => parts.swap_remove(0),
        _ => format!("[{}]", parts.join(", ")),
    }
}

/// The message of the 422 returned when a namespace is created (or its
/// labels changed) with invalid pod-security labels:
/// `Namespace "NAME" is invalid: ...`.
pub fn invalid_namespace_message(name: &str, errors: &[LabelError]) -> String {
    let agg = aggregate_errors(errors);
    if agg.is_empty() {
        format!("Namespace {} is invalid", gofmt::quote(name))
    } else {
        format!("Namespace {} is invalid: {agg}", gofmt::quote(name))
    }
}

impl Policy {
    /// The policy of a namespace with these labels, over the built-in
    /// defaults (privileged:latest everywhere). Errors list invalid labels;
    /// the policy is usable even then.
    pub fn from_labels(labels: &Map<String, Value>) -> (Policy, Vec<LabelError>) {
        Policy::from_labels_with_defaults(labels, &Policy::default())
    }

    /// Like [`Policy::from_labels`], taking the labels as a JSON value
    /// (an object, or null/absent for none).
    pub fn from_labels_value(labels: &Value) -> (Policy, Vec<LabelError>) {
        match labels.as_object() {
            Some(map) => Policy::from_labels(map),
            None => (Policy::default(), Vec::new()),
        }
    }

    /// The policy of a Namespace object (reads `metadata.labels`).
    pub fn from_namespace(namespace: &Value) -> (Policy, Vec<LabelError>) {
        Policy::from_labels_value(at(namespace, &["metadata", "labels"]).unwrap_or(&NULL))
    }

    /// Resolves labels over configured defaults, as upstream's
    /// `PolicyToEvaluate`: an invalid enforce level becomes restricted (fail
    /// closed), invalid audit/warn levels become privileged (fail open), an
    /// invalid version becomes latest; warn follows a stricter enforce level
    /// unless warn is labelled itself.
    pub fn from_labels_with_defaults(
        labels: &Map<String, Value>,
        defaults: &Policy,
    ) -> (Policy, Vec<LabelError>) {
        let mut p = *defaults;
        let mut errs = Vec::new();
        let get = |key: &str| -> Option<String> {
            match labels.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            }
        };
        let parse_version = |key: &str, slot: &mut Version, errs: &mut Vec<LabelError>| {
            let value = get(key)?;
            match Version::parse(&value) {
                Ok(v) => *slot = v,
                Err(e) => {
                    *slot = Version::LATEST;
                    errs.push(LabelError::new(key, &value, e.to_string()));
                }
            }
            Some(())
        };

        let mut has_enforce_level = false;
        if let Some(value) = get(ENFORCE_LEVEL_LABEL) {
            match Level::parse(&value) {
                Ok(l) => {
                    p.enforce.level = l;
                    has_enforce_level = true;
                }
                Err(e) => {
                    p.enforce.level = Level::Restricted;
                    errs.push(LabelError::new(ENFORCE_LEVEL_LABEL, &value, e.to_string()));
                }
            }
        }
        parse_version(ENFORCE_VERSION_LABEL, &mut p.enforce.version, &mut errs);
        if let Some(value) = get(AUDIT_LEVEL_LABEL) {
            p.audit.level = Level::parse(&value).unwrap_or_else(|e| {
                errs.push(LabelError::new(AUDIT_LEVEL_LABEL, &value, e.to_string()));
                Level::Privileged
            });
        }
        parse_version(AUDIT_VERSION_LABEL, &mut p.audit.version, &mut errs);
        let has_warn_level = match get(WARN_LEVEL_LABEL) {
            Some(value) => {
                p.warn.level = Level::parse(&value).unwrap_or_else(|e| {
                    errs.push(LabelError::new(WARN_LEVEL_LABEL, &value, e.to_string()));
                    Level::Privileged
                });
                true
            }
            None => false,
        };
        let has_warn_version =
            parse_version(WARN_VERSION_LABEL, &mut p.warn.version, &mut errs).is_some();

        // Users setting only enforce should hear about violations on
        // controllers too, whose pods would otherwise fail silently later.
        if !has_warn_level && has_enforce_level && p.enforce.level > p.warn.level {
            p.warn.level = p.enforce.level;
            if !has_warn_version {
                p.warn.version = p.enforce.version;
            }
        }
        (p, errs)
    }

    /// Whether all three modes are privileged (nothing to evaluate).
    pub fn fully_privileged(&self) -> bool {
        self.enforce.level == Level::Privileged
            && self.audit.level == Level::Privileged
            && self.warn.level == Level::Privileged
    }

    /// Whether every mode is equivalent to the other policy's.
    pub fn equivalent(&self, other: &Policy) -> bool {
        self.enforce.equivalent(&other.enforce)
            && self.audit.equivalent(&other.audit)
            && self.warn.equivalent(&other.warn)
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// One failed check: a short reason and an optional detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Upstream's check id, e.g. `runAsNonRoot`.
    pub check: &'static str,
    /// The short reason, e.g. `runAsNonRoot != true`.
    pub reason: String,
    /// What exactly is wrong (may be empty).
    pub detail: String,
}

/// Knobs upstream sets globally rather than per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOptions {
    /// Lets pods with `hostUsers: false` skip the procMount, runAsNonRoot and
    /// runAsUser checks (upstream's UserNamespacesPodSecurityStandards
    /// feature gate, off by default in 1.33).
    pub relax_for_user_namespace_pods: bool,
}

/// The pod under evaluation plus the options.
struct Pod<'a> {
    meta: &'a Value,
    spec: &'a Value,
    relax_userns: bool,
}

impl Pod<'_> {
    fn in_user_namespace(&self) -> bool {
        self.relax_userns && flag(self.spec, &["hostUsers"]) == Some(false)
    }

    /// From policy version 1.25 Windows pods skip the Linux-only checks.
    fn windows_exempt(&self, minor: u64) -> bool {
        minor >= 25 && text(self.spec, &["os", "name"]) == "windows"
    }
}

/// What a check function reports; [`check_pod_spec_with`] adds the check id.
struct Failure {
    reason: String,
    detail: String,
}

type CheckFn = fn(&Pod<'_>, u64) -> Option<Failure>;

struct CheckDef {
    id: &'static str,
    level: Level,
    /// First policy minor version the check exists in.
    since: u64,
    /// For baseline checks: the minor version from which a restricted
    /// check replaces this one at the restricted level.
    replaced_in_restricted_since: Option<u64>,
    run: CheckFn,
}

impl CheckDef {
    /// A baseline check present in every policy version.
    const fn baseline(id: &'static str, run: CheckFn) -> CheckDef {
        CheckDef {
            id,
            level: Level::Baseline,
            since: 0,
            replaced_in_restricted_since: None,
            run,
        }
    }

    /// A restricted check present from policy version `v1.<since>`.
    const fn restricted(id: &'static str, since: u64, run: CheckFn) -> CheckDef {
        CheckDef {
            id,
            level: Level::Restricted,
            since,
            replaced_in_restricted_since: None,
            run,
        }
    }

    /// This baseline check, replaced by a restricted one at the restricted
    /// level from policy version `v1.<minor>`.
    const fn replaced_in_restricted(self, minor: u64) -> CheckDef {
        CheckDef {
            replaced_in_restricted_since: Some(minor),
            ..self
        }
    }
}

// Upstream runs baseline checks, then restricted ones, each group sorted by
// check id (byte order); the table keeps that order so reasons line up.
const CHECKS: &[CheckDef] = &[
    CheckDef::baseline("appArmorProfile", app_armor_profile),
    CheckDef::baseline("capabilities_baseline", capabilities_baseline).replaced_in_restricted(22),
    CheckDef::baseline("hostNamespaces", host_namespaces),
    CheckDef::baseline("hostPathVolumes", host_path_volumes).replaced_in_restricted(0),
    CheckDef::baseline("hostPorts", host_ports),
    CheckDef::baseline("privileged", privileged),
    CheckDef::baseline("procMount", proc_mount),
    CheckDef::baseline("seLinuxOptions", se_linux_options),
    CheckDef::baseline("seccompProfile_baseline", seccomp_profile_baseline)
        .replaced_in_restricted(19),
    CheckDef::baseline("sysctls", sysctls),
    CheckDef::baseline("windowsHostProcess", windows_host_process),
    CheckDef::restricted("allowPrivilegeEscalation", 8, allow_privilege_escalation),
    CheckDef::restricted("capabilities_restricted", 22, capabilities_restricted),
    CheckDef::restricted("restrictedVolumes", 0, restricted_volumes),
    CheckDef::restricted("runAsNonRoot", 0, run_as_non_root),
    CheckDef::restricted("runAsUser", 23, run_as_user),
    CheckDef::restricted("seccompProfile_restricted", 19, seccomp_profile_restricted),
];

fn applies(def: &CheckDef, level: Level, minor: u64) -> bool {
    if minor < def.since {
        return false;
    }
    match level {
        Level::Privileged => false,
        Level::Baseline => def.level == Level::Baseline,
        Level::Restricted => def
            .replaced_in_restricted_since
            .is_none_or(|since| minor < since),
    }
}

/// The ids of the checks run for a level and version, in evaluation order.
pub fn check_ids(level: Level, version: Version) -> Vec<&'static str> {
    let minor = version.effective_minor();
    CHECKS
        .iter()
        .filter(|d| applies(d, level, minor))
        .map(|d| d.id)
        .collect()
}

/// Checks a pod (or pod template) against a level at a version; returns the
/// violations in upstream's order (empty means allowed). `metadata` is the
/// pod's (or template's) metadata, `spec` its spec; either may be null.
pub fn check_pod_spec(
    level: Level,
    version: Version,
    metadata: &Value,
    spec: &Value,
) -> Vec<Violation> {
    check_pod_spec_with(level, version, metadata, spec, &CheckOptions::default())
}

/// [`check_pod_spec`] with explicit [`CheckOptions`].
pub fn check_pod_spec_with(
    level: Level,
    version: Version,
    metadata: &Value,
    spec: &Value,
    options: &CheckOptions,
) -> Vec<Violation> {
    let minor = version.effective_minor();
    let pod = Pod {
        meta: metadata,
        spec,
        relax_userns: options.relax_for_user_namespace_pods,
    };
    CHECKS
        .iter()
        .filter(|d| applies(d, level, minor))
        .filter_map(|d| {
            (d.run)(&pod, minor).map(|f| Violation {
                check: d.id,
                reason: f.reason,
                detail: f.detail,
            })
        })
        .collect()
}

fn fail(reason: &str, detail: String) -> Option<Failure> {
    Some(Failure {
        reason: reason.to_string(),
        detail,
    })
}

// --- what the checks share -------------------------------------------------

/// `securityContext.<field>` of a pod spec or a container.
fn security_context<'a>(owner: &'a Value, field: &str) -> Option<&'a Value> {
    at(owner, &["securityContext", field])
}

/// Names of the containers `pred` holds for, in [`containers`] order.
fn containers_where(spec: &Value, mut pred: impl FnMut(&Value) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| pred(c))
        .map(container_name)
        .collect()
}

/// Names of the containers whose `securityContext.<field>` is set to a value
/// `forbidden` holds for.
fn containers_setting(
    spec: &Value,
    field: &str,
    mut forbidden: impl FnMut(&Value) -> bool,
) -> Vec<String> {
    containers_where(spec, |c| {
        security_context(c, field).is_some_and(&mut forbidden)
    })
}

/// Who sets `securityContext.<field>` to a value `forbidden` holds for:
/// `pod` (the pod-level field) and/or `containers "a", "b"`, in that order.
/// `forbidden` sees the pod's value first, then each container's.
fn security_context_setters(
    pod: &Pod<'_>,
    field: &str,
    mut forbidden: impl FnMut(&Value) -> bool,
) -> Vec<String> {
    let mut setters = Vec::new();
    if security_context(pod.spec, field).is_some_and(&mut forbidden) {
        setters.push("pod".to_string());
    }
    setters.extend(containers_phrase(&containers_setting(
        pod.spec, field, forbidden,
    )));
    setters
}

/// For a setting the restricted level requires: unless the pod-level
/// `securityContext.<field>` satisfies `pod_ok`, the containers whose own
/// field is missing or not `is_set`, as `containers "a", "b"`; `None` when
/// there are none.
fn containers_leaving_unset(
    pod: &Pod<'_>,
    field: &str,
    pod_ok: impl FnOnce(&Value) -> bool,
    is_set: impl Fn(&Value) -> bool,
) -> Option<String> {
    if security_context(pod.spec, field).is_some_and(pod_ok) {
        return None;
    }
    containers_phrase(&containers_where(pod.spec, |c| {
        !security_context(c, field).is_some_and(&is_set)
    }))
}

/// `pod`, `container "a"`, `pod and containers "a", "b"`, ...: who set a
/// forbidden value; `None` when nobody did.
fn who_set(setters: &[String]) -> Option<String> {
    joined(setters, " and ")
}

/// Adds the items to `into`; whether there were any.
fn insert_all(into: &mut BTreeSet<String>, items: impl IntoIterator<Item = String>) -> bool {
    let mut any = false;
    for item in items {
        into.insert(item);
        any = true;
    }
    any
}

/// The profile types allowed for both AppArmor and seccomp.
fn allowed_profile_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

/// Who sets `securityContext.<field>.type` (at the pod level or in a
/// container) to a type other than RuntimeDefault or Localhost, and those
/// types.
fn forbidden_profile_types(pod: &Pod<'_>, field: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut types = BTreeSet::new();
    let setters = security_context_setters(pod, field, |profile| {
        let t = text(profile, &["type"]);
        insert_all(
            &mut types,
            (!allowed_profile_type(t)).then(|| t.to_string()),
        )
    });
    (setters, types)
}

/// `containers "a" must not include "X" in securityContext.capabilities.add`
/// for the containers adding capabilities that `allowed` rejects; `None`
/// when none do.
fn forbidden_capability_additions(spec: &Value, allowed: impl Fn(&str) -> bool) -> Option<String> {
    let mut forbidden = BTreeSet::new();
    let adding = containers_where(spec, |c| {
        let added = string_list(at(c, &["securityContext", "capabilities", "add"]));
        insert_all(
            &mut forbidden,
            added.into_iter().filter(|cap| !allowed(cap)),
        )
    });
    Some(format!(
        "{} must not include {} in securityContext.capabilities.add",
        containers_phrase(&adding)?,
        join_quote(&forbidden)
    ))
}

// --- the checks --------------------------------------------------------------

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn app_armor_profile(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let allowed_annotation =
        |v: &str| v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
    let (mut setters, bad_types) = forbidden_profile_types(pod, "appArmorProfile");
    let mut values: Vec<String> = bad_types.into_iter().collect();
    let mut bad_annotations: Vec<String> = annotations(pod.meta)
        .filter(|(k, v)| k.starts_with(APPARMOR_ANNOTATION_PREFIX) && !allowed_annotation(v))
        .map(|(k, v)| format!("{k}={}", gofmt::quote(v)))
        .collect();
    if !bad_annotations.is_empty() {
        bad_annotations.sort();
        setters.push(pluralize("annotation", "annotations", bad_annotations.len()).to_string());
        values.extend(bad_annotations);
    }
    let who = who_set(&setters)?;
    fail(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{who} must not set AppArmor profile type to {}",
            join_quote(&values)
        ),
    )
}

const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let detail =
        forbidden_capability_additions(pod.spec, |cap| DEFAULT_CAPABILITIES.contains(&cap))?;
    fail("non-default capabilities", detail)
}

fn host_namespaces(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let found: Vec<&str> = [
        ("hostNetwork", "hostNetwork=true"),
        ("hostPID", "hostPID=true"),
        ("hostIPC", "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(field, _)| flag(pod.spec, &[field]) == Some(true))
    .map(|(_, shown)| shown)
    .collect();
    fail("host namespaces", joined(&found, ", ")?)
}

fn host_path_volumes(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let names: Vec<String> = items(pod.spec, &["volumes"])
        .filter(|v| at(v, &["hostPath"]).is_some())
        .map(|v| text(v, &["name"]).to_string())
        .collect();
    fail(
        "hostPath volumes",
        counted_list("volume", "volumes", &names)?,
    )
}

fn host_ports(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    // Upstream keeps the ports as strings in a sorted set, so "10000" sorts
    // before "80"; keep that.
    let mut ports = BTreeSet::new();
    let bad_containers = containers_where(pod.spec, |c| {
        let host_ports = items(c, &["ports"]).filter_map(|port| match port.get("hostPort") {
            Some(Value::Number(n)) if n.as_f64() != Some(0.0) => {
                Some(n.as_i64().map_or_else(|| n.to_string(), |i| i.to_string()))
            }
            _ => None,
        });
        insert_all(&mut ports, host_ports)
    });
    let who = containers_phrase(&bad_containers)?;
    let ports: Vec<String> = ports.into_iter().collect();
    fail(
        "hostPort",
        format!(
            "{who} {} {} {}",
            pluralize("uses", "use", bad_containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn privileged(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let bad = containers_setting(pod.spec, "privileged", |v| v.as_bool() == Some(true));
    fail(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)?
        ),
    )
}

fn proc_mount(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    // In a user namespace an unmasked /proc does not expose the host's.
    if pod.in_user_namespace() {
        return None;
    }
    let mut types = BTreeSet::new();
    let bad = containers_setting(pod.spec, "procMount", |value| {
        let value = value_text(value);
        insert_all(&mut types, (value != "Default").then_some(value))
    });
    fail(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad)?,
            join_quote(&types)
        ),
    )
}

fn se_linux_options(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    let allowed_type = |t: &str| {
        matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (minor >= 31 && t == "container_engine_t")
    };
    let mut bad_types = BTreeSet::new();
    let mut set_user = false;
    let mut set_role = false;
    let setters = security_context_setters(pod, "seLinuxOptions", |opts| {
        let t = text(opts, &["type"]);
        let bad_type = insert_all(&mut bad_types, (!allowed_type(t)).then(|| t.to_string()));
        let user = !text(opts, &["user"]).is_empty();
        let role = !text(opts, &["role"]).is_empty();
        set_user |= user;
        set_role |= role;
        bad_type || user || role
    });
    let who = who_set(&setters)?;
    let mut bad_data: Vec<String> = counted_list("type", "types", &bad_types)
        .into_iter()
        .collect();
    if set_user {
        bad_data.push("user may not be set".to_string());
    }
    if set_role {
        bad_data.push("role may not be set".to_string());
    }
    fail(
        "seLinuxOptions",
        format!(
            "{who} set forbidden securityContext.seLinuxOptions: {}",
            bad_data.join("; ")
        ),
    )
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

fn seccomp_profile_baseline(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    if minor < 19 {
        return seccomp_annotations_baseline(pod);
    }
    forbidden_seccomp_types(pod)
}

/// The pod and containers setting a seccomp profile type other than
/// RuntimeDefault or Localhost (both seccomp checks report these alike).
fn forbidden_seccomp_types(pod: &Pod<'_>) -> Option<Failure> {
    let (setters, types) = forbidden_profile_types(pod, "seccompProfile");
    fail(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            who_set(&setters)?,
            join_quote(&types)
        ),
    )
}

/// Policy versions before 1.19 predate the seccompProfile field and judge
/// the alpha annotations instead.
fn seccomp_annotations_baseline(pod: &Pod<'_>) -> Option<Failure> {
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let keys = std::iter::once(SECCOMP_POD_ANNOTATION.to_string()).chain(
        containers(pod.spec)
            .map(|c| format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", container_name(c))),
    );
    let mut forbidden = BTreeSet::new();
    for key in keys {
        if let Some(v) = annotation(pod.meta, &key)
            && !valid(v)
        {
            forbidden.insert(format!("{key}={}", gofmt::quote(v)));
        }
    }
    let listed = joined(&forbidden, ", ")?;
    fail(
        "seccompProfile",
        format!(
            "forbidden {} {listed}",
            pluralize("annotation", "annotations", forbidden.len())
        ),
    )
}

/// Safe sysctls and the policy minor version each became allowed in.
const SAFE_SYSCTLS: &[(&str, u64)] = &[
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
];

fn sysctls(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    let safe = |name: &str| {
        SAFE_SYSCTLS
            .iter()
            .any(|&(n, since)| n == name && minor >= since)
    };
    // Listed in spec order, duplicates kept, as upstream does.
    let forbidden: Vec<&str> = items(pod.spec, &["securityContext", "sysctls"])
        .map(|s| text(s, &["name"]))
        .filter(|name| !safe(name))
        .collect();
    fail("forbidden sysctls", joined(&forbidden, ", ")?)
}

fn windows_host_process(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let setters = security_context_setters(pod, "windowsOptions", |options| {
        flag(options, &["hostProcess"]) == Some(true)
    });
    fail(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            who_set(&setters)?
        ),
    )
}

fn allow_privilege_escalation(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    // From 1.25 Windows pods are exempt: the field cannot be set for them.
    if pod.windows_exempt(minor) {
        return None;
    }
    let bad = containers_where(pod.spec, |c| {
        security_context(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false)
    });
    fail(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)?
        ),
    )
}

fn capabilities_restricted(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    if pod.windows_exempt(minor) {
        return None;
    }
    let missing_drop_all = containers_where(pod.spec, |c| {
        !string_list(at(c, &["securityContext", "capabilities", "drop"]))
            .iter()
            .any(|d| d == "ALL")
    });
    let details = [
        containers_phrase(&missing_drop_all)
            .map(|who| format!(r#"{who} must set securityContext.capabilities.drop=["ALL"]"#)),
        forbidden_capability_additions(pod.spec, |cap| cap == "NET_BIND_SERVICE"),
    ];
    fail(
        "unrestricted capabilities",
        joined(details.iter().flatten(), "; ")?,
    )
}

const ALLOWED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

// In upstream's order of precedence when a volume names several sources.
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    let mut bad_volumes = Vec::new();
    let mut bad_types = BTreeSet::new();
    for v in items(pod.spec, &["volumes"]) {
        if ALLOWED_VOLUME_SOURCES
            .iter()
            .any(|&s| at(v, &[s]).is_some())
        {
            continue;
        }
        bad_volumes.push(text(v, &["name"]).to_string());
        let kind = RESTRICTED_VOLUME_SOURCES
            .iter()
            .find(|&&s| at(v, &[s]).is_some())
            .copied()
            .unwrap_or("unknown");
        bad_types.insert(kind.to_string());
    }
    fail(
        "restricted volume types",
        format!(
            "{} {} {}",
            counted_list("volume", "volumes", &bad_volumes)?,
            pluralize("uses", "use", bad_volumes.len()),
            counted_list(
                "restricted volume type",
                "restricted volume types",
                &bad_types
            )?
        ),
    )
}

fn run_as_non_root(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    // Root inside a user namespace is unprivileged on the host.
    if pod.in_user_namespace() {
        return None;
    }
    let reason = "runAsNonRoot != true";
    // An explicit false is reported on its own: it is the clearer mistake.
    let setters = security_context_setters(pod, "runAsNonRoot", |v| v.as_bool() == Some(false));
    if let Some(who) = who_set(&setters) {
        return fail(
            reason,
            format!("{who} must not set securityContext.runAsNonRoot=false"),
        );
    }
    let who = containers_leaving_unset(
        pod,
        "runAsNonRoot",
        |v| v.as_bool() == Some(true),
        Value::is_boolean,
    )?;
    fail(
        reason,
        format!("pod or {who} must set securityContext.runAsNonRoot=true"),
    )
}

fn run_as_user(pod: &Pod<'_>, _minor: u64) -> Option<Failure> {
    if pod.in_user_namespace() {
        return None;
    }
    let setters = security_context_setters(pod, "runAsUser", |v| v.as_f64() == Some(0.0));
    fail(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", who_set(&setters)?),
    )
}

fn seccomp_profile_restricted(pod: &Pod<'_>, minor: u64) -> Option<Failure> {
    if pod.windows_exempt(minor) {
        return None;
    }
    if let Some(forbidden) = forbidden_seccomp_types(pod) {
        return Some(forbidden);
    }
    let who = containers_leaving_unset(
        pod,
        "seccompProfile",
        |profile| allowed_profile_type(text(profile, &["type"])),
        |_| true,
    )?;
    fail(
        "seccompProfile",
        format!(
            r#"pod or {who} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#
        ),
    )
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// The reasons alone, joined by `, ` (upstream uses this form when
/// summarising many pods, e.g. on a namespace label change).
pub fn forbidden_reasons(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each reason followed by ` (detail)` when it has one, joined by `, `.
pub fn forbidden_detail(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The enforce-mode denial: `violates PodSecurity "restricted:latest": ...`.
pub fn forbidden_message(level: Level, version: Version, violations: &[Violation]) -> String {
    policy_message("violates", level, version, violations)
}

/// The warn- and audit-mode text:
/// `would violate PodSecurity "restricted:latest": ...`.
pub fn warning_message(level: Level, version: Version, violations: &[Violation]) -> String {
    policy_message("would violate", level, version, violations)
}

/// `<verb> PodSecurity "level:version": <details>`.
fn policy_message(verb: &str, level: Level, version: Version, violations: &[Violation]) -> String {
    format!(
        "{verb} PodSecurity {}: {}",
        gofmt::quote(&LevelVersion::new(level, version).to_string()),
        forbidden_detail(violations)
    )
}

/// The full Forbidden status message as the apiserver words it:
/// `pods "NAME" is forbidden: <message>` (no name: `pods is forbidden: ...`).
pub fn forbidden_status_message(resource: &str, name: &str, message: &str) -> String {
    if resource.is_empty() {
        format!("forbidden: {message}")
    } else if name.is_empty() {
        format!("{resource} is forbidden: {message}")
    } else {
        format!("{resource} {} is forbidden: {message}", gofmt::quote(name))
    }
}

// ---------------------------------------------------------------------------
// Exemptions and the per-request decision
// ---------------------------------------------------------------------------

/// Requests that skip Pod Security entirely (admission configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exemptions {
    /// Requesting user names that are exempt.
    pub usernames: Vec<String>,
    /// Namespaces that are exempt.
    pub namespaces: Vec<String>,
    /// Pod `runtimeClassName`s that are exempt.
    pub runtime_class_names: Vec<String>,
}

/// Why a request was exempt; `as_str` is the `exempt` audit annotation value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// The namespace is exempt.
    Namespace,
    /// The requesting user is exempt.
    User,
    /// The pod's runtime class is exempt.
    RuntimeClass,
}

impl Exemption {
    /// Upstream's audit annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Exemption::Namespace => "namespace",
            Exemption::User => "user",
            Exemption::RuntimeClass => "runtimeClass",
        }
    }
}

impl Exemptions {
    /// Whether the namespace is exempt (an empty name never is).
    pub fn namespace_exempt(&self, namespace: &str) -> bool {
        !namespace.is_empty() && self.namespaces.iter().any(|n| n == namespace)
    }

    /// Whether the user is exempt (an empty name never is).
    pub fn user_exempt(&self, username: &str) -> bool {
        !username.is_empty() && self.usernames.iter().any(|n| n == username)
    }

    /// Whether the pod spec's `runtimeClassName` is exempt.
    pub fn runtime_class_exempt(&self, spec: &Value) -> bool {
        let rc = text(spec, &["runtimeClassName"]);
        !rc.is_empty() && self.runtime_class_names.iter().any(|n| n == rc)
    }

    /// The first exemption that applies, in upstream's order: namespace,
    /// user, runtime class.
    pub fn exemption(&self, namespace: &str, username: &str, spec: &Value) -> Option<Exemption> {
        if self.namespace_exempt(namespace) {
            Some(Exemption::Namespace)
        } else if self.user_exempt(username) {
            Some(Exemption::User)
        } else if self.runtime_class_exempt(spec) {
            Some(Exemption::RuntimeClass)
        } else {
            None
        }
    }
}

/// The outcome of evaluating one pod or pod template against a namespace
/// policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// False when the enforce level rejects the pod.
    pub allowed: bool,
    /// The rejection text (`violates PodSecurity ...`); wrap it with
    /// [`forbidden_status_message`] for a 403.
    pub denial: Option<String>,
    /// Warnings for the client (only when allowed, as upstream).
    pub warnings: Vec<String>,
    /// Audit annotations, keys without [`LABEL_PREFIX`].
    pub audit_annotations: BTreeMap<String, String>,
}

/// Evaluates a pod (`enforce` true) or a pod template of a controller
/// (`enforce` false: templates only warn and audit) against a namespace
/// policy and its label errors, as upstream's admission does once the
/// request is known not to be exempt.
///
/// Runtime-class exemption is the caller's job ([`Exemptions::exemption`]);
/// upstream applies it after the fully-privileged short cut, which only
/// changes which audit annotation is recorded.
pub fn evaluate(
    policy: &Policy,
    policy_errors: &[LabelError],
    metadata: &Value,
    spec: &Value,
    enforce: bool,
    options: &CheckOptions,
) -> Evaluation {
    let mut ev = Evaluation {
        allowed: true,
        ..Evaluation::default()
    };
    if policy_errors.is_empty() {
        if enforce && policy.fully_privileged() {
            ev.audit_annotations.insert(
                ENFORCED_POLICY_ANNOTATION.to_string(),
                LevelVersion::new(Level::Privileged, Version::LATEST).to_string(),
            );
            return ev;
        }
        if !enforce
            && policy.warn.level == Level::Privileged
            && policy.audit.level == Level::Privileged
        {
            return ev;
        }
    } else {
        ev.audit_annotations.insert(
            ERROR_ANNOTATION.to_string(),
            format!(
                "Failed to parse policy: {}",
                aggregate_errors(policy_errors)
            ),
        );
    }
    // The message (`message` wording) on the violations of `lv`, if any.
    let judge = |lv: &LevelVersion, message: fn(Level, Version, &[Violation]) -> String| {
        let found = check_pod_spec_with(lv.level, lv.version, metadata, spec, options);
        (!found.is_empty()).then(|| message(lv.level, lv.version, &found))
    };

    if enforce {
        ev.audit_annotations.insert(
            ENFORCED_POLICY_ANNOTATION.to_string(),
            policy.enforce.to_string(),
        );
        if let Some(denial) = judge(&policy.enforce, forbidden_message) {
            ev.allowed = false;
            ev.denial = Some(denial);
        }
    }
    if let Some(violations) = judge(&policy.audit, warning_message) {
        ev.audit_annotations
            .insert(AUDIT_VIOLATIONS_ANNOTATION.to_string(), violations);
    }
    // A rejected request gets the error only, not warnings on top.
    if ev.allowed
        && let Some(warning) = judge(&policy.warn, warning_message)
    {
        ev.warnings.push(warning);
    }
    ev
}

// ---------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// Kinds whose objects embed a pod template that upstream evaluates (warn
/// and audit only; the pods they create are enforced on their own).
pub const POD_TEMPLATE_KINDS: &[&str] = &[
    "PodTemplate",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

/// The pod template's (metadata, spec) inside an object of one of
/// [`POD_TEMPLATE_KINDS`]; `None` for other kinds or when the object has no
/// template (evaluating an empty template finds nothing anyway). A missing
/// metadata or spec inside the template is returned as null.
pub fn pod_template_of<'a>(kind: &str, obj: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let template = match kind {
        "PodTemplate" => at(obj, &["template"]),
        "ReplicationController"
        | "ReplicaSet"
        | "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => at(obj, &["spec", "template"]),
        "CronJob" => at(obj, &["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }?;
    Some((
        at(template, &["metadata"]).unwrap_or(&NULL),
        at(template, &["spec"]).unwrap_or(&NULL),
    ))
}

/// Pod subresources upstream never evaluates (they cannot change the spec).
pub fn is_ignored_pod_subresource(subresource: &str) -> bool {
    matches!(
        subresource,
        "exec" | "attach" | "binding" | "eviction" | "log" | "portforward" | "proxy" | "status"
    )
}

/// Whether a pod update needs evaluating: only container images (and added
/// ephemeral containers) can change the security-relevant picture of an
/// existing pod, so other updates are always allowed.
pub fn is_significant_pod_update(new_pod: &Value, old_pod: &Value) -> bool {
    let list = |pod: &Value, key: &str| -> Vec<Value> {
        at(pod, &["spec", key])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let image = |c: &Value| text(c, &["image"]).to_string();
    for key in ["containers", "initContainers"] {
        let (new, old) = (list(new_pod, key), list(old_pod, key));
        if new.len() != old.len() {
            return true;
        }
        if new.iter().zip(&old).any(|(n, o)| image(n) != image(o)) {
            return true;
        }
    }
    let old_ephemeral = list(old_pod, "ephemeralContainers");
    list(new_pod, "ephemeralContainers").iter().any(|c| {
        let name = text(c, &["name"]);
        match old_ephemeral.iter().find(|o| text(o, &["name"]) == name) {
            None => true,
            Some(o) => image(c) != image(o),
        }
    })
}

// ---------------------------------------------------------------------------
// JSON and formatting helpers
// ---------------------------------------------------------------------------

/// Follows `path` through nested objects. JSON null counts as absent, since
/// upstream decodes it to a nil pointer.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// A boolean field; values of another type count as unset.
fn flag(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path)?.as_bool()
}

/// A string field, empty when unset (Go's zero value).
fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// A scalar as text: strings verbatim, anything else as JSON.
fn value_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The elements of an array field; none when unset or not an array.
fn items<'a>(v: &'a Value, path: &[&str]) -> impl Iterator<Item = &'a Value> + use<'a> {
    at(v, path).and_then(Value::as_array).into_iter().flatten()
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(value_text)
        .collect()
}

/// Init containers, then containers, then ephemeral containers: the order
/// upstream visits them in, which fixes the order of names in details.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |key| items(spec, &[key]))
}

fn container_name(c: &Value) -> String {
    text(c, &["name"]).to_string()
}

fn annotations(meta: &Value) -> impl Iterator<Item = (&str, &str)> {
    at(meta, &["annotations"])
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
}

fn annotation<'a>(meta: &'a Value, key: &str) -> Option<&'a str> {
    at(meta, &["annotations"])?
        .get(key)
        .map(|v| v.as_str().unwrap_or(""))
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// The items joined by `sep`; `None` when there are none.
fn joined(items: impl IntoIterator<Item: AsRef<str>>, sep: &str) -> Option<String> {
    let items: Vec<_> = items.into_iter().collect();
    let parts: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    (!parts.is_empty()).then(|| parts.join(sep))
}

/// `"a", "b"`: each item in plain double quotes, no escaping (as upstream).
fn join_quote(items: impl IntoIterator<Item: AsRef<str>>) -> String {
    joined(
        items.into_iter().map(|s| format!("\"{}\"", s.as_ref())),
        ", ",
    )
    .unwrap_or_default()
}

/// `volume "a"` or `volumes "a", "b"` (given the two spellings of the noun);
/// `None` when there are no items.
fn counted_list(
    singular: &str,
    plural: &str,
    items: impl IntoIterator<Item: AsRef<str>>,
) -> Option<String> {
    let items: Vec<_> = items.into_iter().collect();
    (!items.is_empty()).then(|| {
        format!(
            "{} {}",
            pluralize(singular, plural, items.len()),
            join_quote(&items)
        )
    })
}

/// `container "a"` or `containers "a", "b"`; `None` when there are none.
fn containers_phrase(names: &[String]) -> Option<String> {
    counted_list("container", "containers", names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LATEST: Version = Version::LATEST;

    fn check(level: Level, version: Version, pod: &Value) -> Vec<Violation> {
        check_pod_spec(level, version, &pod["metadata"], &pod["spec"])
    }

    fn only(level: Level, version: Version, pod: &Value) -> (String, String) {
        let found = check(level, version, pod);
        assert_eq!(found.len(), 1, "expected one violation, got {found:?}");
        (found[0].reason.clone(), found[0].detail.clone())
    }

    /// Checks at latest with the user-namespace relaxation on.
    fn check_relaxed(level: Level, pod: &Value) -> Vec<Violation> {
        let relaxed = CheckOptions {
            relax_for_user_namespace_pods: true,
        };
        check_pod_spec_with(level, LATEST, &pod["metadata"], &pod["spec"], &relaxed)
    }

    fn reasons(level: Level, version: Version, pod: &Value) -> Vec<String> {
        check(level, version, pod)
            .into_iter()
            .map(|v| v.reason)
            .collect()
    }

    /// A pod that satisfies restricted:latest; tests break one thing at a time.
    fn good() -> Value {
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "c",
                    "image": "nginx",
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}
                    }
                }]
            }
        })
    }

    fn nginx() -> Value {
        json!({
            "metadata": {"name": "nginx"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        })
    }

    fn assert_allowed_everywhere(pod: &Value) {
        for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
            assert!(check(level, LATEST, pod).is_empty(), "{level} should allow");
        }
    }

    /// The pod fails at baseline with exactly (reason, detail) and restricted
    /// reports the same violation too.
    fn assert_baseline_fail(pod: &Value, reason: &str, detail: &str) {
        assert_eq!(
            only(Level::Baseline, LATEST, pod),
            (reason.to_string(), detail.to_string())
        );
        assert!(
            check(Level::Restricted, LATEST, pod)
                .iter()
                .any(|v| v.reason == reason && v.detail == detail),
            "restricted should report {reason}"
        );
        assert!(check(Level::Privileged, LATEST, pod).is_empty());
    }

    fn assert_restricted_only_fail(pod: &Value, reason: &str, detail: &str) {
        assert!(check(Level::Baseline, LATEST, pod).is_empty());
        assert_eq!(
            only(Level::Restricted, LATEST, pod),
            (reason.to_string(), detail.to_string())
        );
    }

    // --- the canonical message ---------------------------------------------

    #[test]
    fn nginx_restricted_message() {
        let pod = json!({
            "metadata": {"name": "nginx"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
        });
        let found = check(Level::Restricted, LATEST, &pod);
        let details = "allowPrivilegeEscalation != false \
             (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"nginx\" must set \
             securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \
             \"nginx\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or \
             container \"nginx\" must set securityContext.seccompProfile.type to \
             \"RuntimeDefault\" or \"Localhost\")";
        assert_eq!(
            forbidden_message(Level::Restricted, LATEST, &found),
            format!("violates PodSecurity \"restricted:latest\": {details}")
        );
        assert_eq!(
            warning_message(Level::Restricted, LATEST, &found),
            format!("would violate PodSecurity \"restricted:latest\": {details}")
        );
        assert_eq!(
            forbidden_reasons(&found),
            "allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"
        );
        assert_eq!(
            forbidden_status_message(
                "pods",
                "nginx",
                &forbidden_message(Level::Restricted, LATEST, &found)
            )
            .split_once(": violates")
            .map(|(head, _)| head.to_string()),
            Some("pods \"nginx\" is forbidden".to_string())
        );
        assert!(check(Level::Baseline, LATEST, &pod).is_empty());
        assert!(check(Level::Privileged, LATEST, &pod).is_empty());
    }

    #[test]
    fn good_pod_passes_all_levels_and_versions() {
        let pod = good();
        for v in [
            LATEST,
            Version::v1(0),
            Version::v1(22),
            Version::v1(25),
            Version::v1(99),
        ] {
            assert!(check(Level::Restricted, v, &pod).is_empty(), "{v}");
        }
        assert_allowed_everywhere(&pod);
    }

    #[test]
    fn baseline_failure_comes_before_restricted_ones() {
        let mut pod = nginx();
        pod["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            reasons(Level::Restricted, LATEST, &pod),
            [
                "host namespaces",
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
        assert_eq!(
            check_ids(Level::Restricted, LATEST),
            [
                "appArmorProfile",
                "hostNamespaces",
                "hostPorts",
                "privileged",
                "procMount",
                "seLinuxOptions",
                "sysctls",
                "windowsHostProcess",
                "allowPrivilegeEscalation",
                "capabilities_restricted",
                "restrictedVolumes",
                "runAsNonRoot",
                "runAsUser",
                "seccompProfile_restricted"
            ]
        );
        assert_eq!(check_ids(Level::Baseline, LATEST).len(), 11);
        assert!(check_ids(Level::Privileged, LATEST).is_empty());
    }

    #[test]
    fn detail_without_text_has_no_parentheses() {
        let v = vec![
            Violation {
                check: "x",
                reason: "a".into(),
                detail: String::new(),
            },
            Violation {
                check: "y",
                reason: "b".into(),
                detail: "d".into(),
            },
        ];
        assert_eq!(forbidden_detail(&v), "a, b (d)");
    }

    // --- containers of every kind ------------------------------------------

    #[test]
    fn init_and_ephemeral_containers_are_checked_in_order() {
        let pod = json!({"spec": {
            "containers": [{"name": "app", "securityContext": {"privileged": true}}],
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]
        }});
        assert_baseline_fail(
            &pod,
            "privileged",
            r#"containers "init", "app", "debug" must not set securityContext.privileged=true"#,
        );
        let mut pod = good();
        pod["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox"}]);
        pod["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
        let found = check(Level::Restricted, LATEST, &pod);
        assert_eq!(
            found[0].detail,
            r#"containers "init", "dbg" must set securityContext.allowPrivilegeEscalation=false"#
        );
        assert_eq!(
            found[1].detail,
            r#"containers "init", "dbg" must set securityContext.capabilities.drop=["ALL"]"#
        );
        assert_eq!(found.len(), 2);
    }

    // --- baseline checks ---------------------------------------------------

    #[test]
    fn app_armor_fields_and_annotations() {
        let mut pod = good();
        pod["spec"]["securityContext"]["appArmorProfile"] =
            json!({"type": "Localhost", "localhostProfile": "x"});
        pod["spec"]["containers"][0]["securityContext"]["appArmorProfile"] =
            json!({"type": "RuntimeDefault"});
        pod["metadata"]["annotations"] = json!({
            "container.apparmor.security.beta.kubernetes.io/c": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/d": "localhost/foo",
            "container.apparmor.security.beta.kubernetes.io/e": ""
        });
        assert_allowed_everywhere(&pod);

        pod["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
        assert_baseline_fail(
            &pod,
            "forbidden AppArmor profile",
            r#"pod must not set AppArmor profile type to "Unconfined""#,
        );

        let pod = json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/": "bogus",
                "container.apparmor.security.beta.kubernetes.io/a": "",
                "container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
                "container.apparmor.security.beta.kubernetes.io/c": "localhost/",
                "container.apparmor.security.beta.kubernetes.io/f": "unknown",
                "container.apparmor.security.beta.kubernetes.io/e": "unconfined"
            }},
            "spec": {"containers": [{"name": "x", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}
        });
        assert_eq!(
            only(Level::Baseline, LATEST, &pod),
            (
                "forbidden AppArmor profiles".to_string(),
                concat!(
                    r#"container "x" and annotations must not set AppArmor profile type to "Unconfined", "#,
                    r#""container.apparmor.security.beta.kubernetes.io/="bogus"", "#,
                    r#""container.apparmor.security.beta.kubernetes.io/e="unconfined"", "#,
                    r#""container.apparmor.security.beta.kubernetes.io/f="unknown"""#
                )
                .to_string()
            )
        );
    }

    #[test]
    fn capabilities_baseline_check() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE", "KILL"]}}}
        ]}});
        assert!(check(Level::Baseline, LATEST, &pod).is_empty());
        let pod = json!({"spec": {"containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["FOO", "CHOWN", "BAR"]}}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["BAZ", "FOO"]}}},
            {"name": "c", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}
        ]}});
        assert_eq!(
            only(Level::Baseline, LATEST, &pod),
            (
                "non-default capabilities".to_string(),
                r#"containers "a", "b" must not include "BAR", "BAZ", "FOO" in securityContext.capabilities.add"#.to_string()
            )
        );
        // Restricted replaces this check from 1.22 with its stricter one.
        assert!(
            !check(Level::Restricted, LATEST, &pod)
                .iter()
                .any(|v| v.check == "capabilities_baseline")
        );
    }

    #[test]
    fn host_namespaces_check() {
        let mut pod = good();
        pod["spec"]["hostNetwork"] = json!(false);
        pod["spec"]["hostPID"] = json!(null);
        assert_allowed_everywhere(&pod);
        pod["spec"]["hostNetwork"] = json!(true);
        pod["spec"]["hostPID"] = json!(true);
        pod["spec"]["hostIPC"] = json!(true);
        assert_baseline_fail(
            &pod,
            "host namespaces",
            "hostNetwork=true, hostPID=true, hostIPC=true",
        );
    }

    #[test]
    fn host_path_volumes_check() {
        let mut pod = good();
        pod["spec"]["volumes"] = json!([{"name": "e", "emptyDir": {}}]);
        assert_allowed_everywhere(&pod);
        pod["spec"]["volumes"] = json!([
            {"name": "a", "hostPath": {"path": "/a"}},
            {"name": "b", "hostPath": {"path": "/b"}},
            {"name": "e", "emptyDir": {}}
        ]);
        assert_eq!(
            only(Level::Baseline, LATEST, &pod),
            (
                "hostPath volumes".to_string(),
                r#"volumes "a", "b""#.to_string()
            )
        );
        // At restricted the volume-type check covers hostPath instead.
        assert_eq!(
            only(Level::Restricted, LATEST, &pod),
            (
                "restricted volume types".to_string(),
                r#"volumes "a", "b" use restricted volume type "hostPath""#.to_string()
            )
        );
    }

    #[test]
    fn host_ports_check() {
        let mut pod = good();
        pod["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}, {"containerPort": 81, "hostPort": 0}]);
        assert_allowed_everywhere(&pod);
        let pod = json!({"spec": {"containers": [
            {"name": "a", "ports": [{"containerPort": 1}]},
            {"name": "b", "ports": [{"hostPort": 20}, {"hostPort": 10}]},
            {"name": "c", "ports": [{"hostPort": 30}, {"hostPort": 10}]}
        ]}});
        assert_baseline_fail(
            &pod,
            "hostPort",
            r#"containers "b", "c" use hostPorts 10, 20, 30"#,
        );
        let pod = json!({"spec": {"containers": [{"name": "b", "ports": [{"hostPort": 20}]}]}});
        assert_baseline_fail(&pod, "hostPort", r#"container "b" uses hostPort 20"#);
    }

    #[test]
    fn privileged_check() {
        let mut pod = good();
        pod["spec"]["containers"][0]["securityContext"]["privileged"] = json!(false);
        assert_allowed_everywhere(&pod);
        pod["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
        assert_baseline_fail(
            &pod,
            "privileged",
            r#"container "c" must not set securityContext.privileged=true"#,
        );
    }

    #[test]
    fn proc_mount_check_and_user_namespace_relaxation() {
        let mut pod = good();
        pod["spec"]["containers"][0]["securityContext"]["procMount"] = json!("Default");
        assert_allowed_everywhere(&pod);
        let pod = json!({"spec": {"hostUsers": false, "containers": [
            {"name": "a"},
            {"name": "d", "securityContext": {"procMount": "Unmasked"}},
            {"name": "e", "securityContext": {"procMount": "other"}}
        ]}});
        assert_baseline_fail(
            &pod,
            "procMount",
            r#"containers "d", "e" must not set securityContext.procMount to "Unmasked", "other""#,
        );
        assert!(check_relaxed(Level::Baseline, &pod).is_empty());
    }

    #[test]
    fn se_linux_options_check() {
        let mut pod = good();
        pod["spec"]["securityContext"]["seLinuxOptions"] =
            json!({"type": "container_t", "level": "s0:c1,c2"});
        assert_allowed_everywhere(&pod);

        pod["spec"]["securityContext"]["seLinuxOptions"] =
            json!({"type": "foo", "user": "u", "role": "r"});
        assert_baseline_fail(
            &pod,
            "seLinuxOptions",
            r#"pod set forbidden securityContext.seLinuxOptions: type "foo"; user may not be set; role may not be set"#,
        );

        let pod = json!({"spec": {
            "securityContext": {"seLinuxOptions": {"type": "foo"}},
            "containers": [
                {"name": "e", "securityContext": {"seLinuxOptions": {"type": "bar"}}},
                {"name": "f", "securityContext": {"seLinuxOptions": {"user": "x"}}},
                {"name": "g", "securityContext": {"seLinuxOptions": {"role": "x"}}}
            ]
        }});
        assert_baseline_fail(
            &pod,
            "seLinuxOptions",
            r#"pod and containers "e", "f", "g" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set"#,
        );
    }

    #[test]
    fn se_linux_container_engine_t_from_1_31() {
        let pod = json!({"spec": {"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}});
        assert!(check(Level::Baseline, LATEST, &pod).is_empty());
        assert!(check(Level::Baseline, Version::v1(31), &pod).is_empty());
        assert_eq!(
            only(Level::Baseline, Version::v1(30), &pod).1,
            r#"pod set forbidden securityContext.seLinuxOptions: type "container_engine_t""#
        );
    }

    #[test]
    fn seccomp_baseline_fields() {
        let mut pod = nginx();
        pod["spec"]["securityContext"] =
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}});
        assert!(check(Level::Baseline, LATEST, &pod).is_empty());
        let pod = json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [
                {"name": "a", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
                {"name": "c", "securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                {"name": "d", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}
            ]
        }});
        assert_eq!(
            only(Level::Baseline, LATEST, &pod),
            (
                "seccompProfile".to_string(),
                r#"pod and containers "c", "d" must not set securityContext.seccompProfile.type to "Unconfined""#.to_string()
            )
        );
        // Restricted reports it through its own seccomp check, once.
        let found = check(Level::Restricted, LATEST, &pod);
        let seccomp: Vec<_> = found
            .iter()
            .filter(|v| v.reason == "seccompProfile")
            .collect();
        assert_eq!(seccomp.len(), 1);
        assert_eq!(seccomp[0].check, "seccompProfile_restricted");
        assert_eq!(
            seccomp[0].detail,
            r#"pod and containers "c", "d" must not set securityContext.seccompProfile.type to "Unconfined""#
        );
    }

    #[test]
    fn seccomp_annotations_before_1_19() {
        let pod = json!({
            "metadata": {"annotations": {
                "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                "container.seccomp.security.alpha.kubernetes.io/a": "unconfined",
                "container.seccomp.security.alpha.kubernetes.io/b": "unknown",
                "container.seccomp.security.alpha.kubernetes.io/c": "docker/default",
                "container.seccomp.security.alpha.kubernetes.io/zz": "unconfined"
            }},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}
        });
        assert_eq!(
            only(Level::Baseline, Version::v1(18), &pod),
            (
                "seccompProfile".to_string(),
                concat!(
                    "forbidden annotations ",
                    r#"container.seccomp.security.alpha.kubernetes.io/a="unconfined", "#,
                    r#"container.seccomp.security.alpha.kubernetes.io/b="unknown", "#,
                    r#"seccomp.security.alpha.kubernetes.io/pod="unconfined""#
                )
                .to_string()
            )
        );
        // From 1.19 the annotations are ignored.
        assert!(check(Level::Baseline, LATEST, &pod).is_empty());
        // Before 1.19 restricted neither requires a profile nor reads fields.
        let mut pod = good();
        if let Some(sc) = pod["spec"]["securityContext"].as_object_mut() {
            sc.remove("seccompProfile");
        }
        assert!(check(Level::Restricted, Version::v1(18), &pod).is_empty());
    }

    #[test]
    fn sysctls_check_and_versions() {
        let mut pod = good();
        pod["spec"]["securityContext"]["sysctls"] = json!([
            {"name": "kernel.shm_rmid_forced", "value": "0"},
            {"name": "net.ipv4.tcp_rmem", "value": "4096 87380 16777216"}
        ]);
        assert_allowed_everywhere(&pod);
        assert_eq!(
            only(Level::Baseline, Version::v1(31), &pod),
            (
                "forbidden sysctls".to_string(),
                "net.ipv4.tcp_rmem".to_string()
            )
        );
        let pod = json!({"spec": {"securityContext": {"sysctls": [
            {"name": "a"}, {"name": "net.ipv4.ip_local_reserved_ports"}, {"name": "b"}
        ]}}});
        assert_baseline_fail(&pod, "forbidden sysctls", "a, b");
        assert_eq!(
            only(Level::Baseline, Version::v1(26), &pod).1,
            "a, net.ipv4.ip_local_reserved_ports, b"
        );
        let pod = json!({"spec": {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time"}]}}});
        assert!(check(Level::Baseline, Version::v1(29), &pod).is_empty());
        assert_eq!(check(Level::Baseline, Version::v1(28), &pod).len(), 1);
    }

    #[test]
    fn windows_host_process_check() {
        let mut pod = good();
        pod["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": false});
        assert_allowed_everywhere(&pod);
        let pod = json!({"spec": {
            "securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [
                {"name": "a"},
                {"name": "e", "securityContext": {"windowsOptions": {"hostProcess": true}}},
                {"name": "f", "securityContext": {"windowsOptions": {"hostProcess": true}}}
            ]
        }});
        assert_baseline_fail(
            &pod,
            "hostProcess",
            r#"pod and containers "e", "f" must not set securityContext.windowsOptions.hostProcess=true"#,
        );
    }

    // --- restricted checks -------------------------------------------------

    #[test]
    fn allow_privilege_escalation_check() {
        let mut pod = good();
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
        assert_restricted_only_fail(
            &pod,
            "allowPrivilegeEscalation != false",
            r#"container "c" must set securityContext.allowPrivilegeEscalation=false"#,
        );
        // The field did not exist before 1.8.
        assert!(check(Level::Restricted, Version::v1(7), &pod).is_empty());
    }

    #[test]
    fn capabilities_restricted_check() {
        let mut pod = good();
        pod["spec"]["containers"][0]["securityContext"]["capabilities"] =
            json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]});
        assert_allowed_everywhere(&pod);
        let mut pod = good();
        pod["spec"]["securityContext"] =
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
        pod["spec"]["containers"] = json!([
            {"name": "a", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["FOO"]}}},
            {"name": "b", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW"], "add": ["BAR", "BAZ"]}}},
            {"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "NET_BIND_SERVICE"]}}}
        ]);
        assert_eq!(
            only(Level::Restricted, LATEST, &pod),
            (
                "unrestricted capabilities".to_string(),
                concat!(
                    r#"containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; "#,
                    r#"containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add"#
                )
                .to_string()
            )
        );
        // At baseline only non-default additions matter.
        assert_eq!(
            only(Level::Baseline, LATEST, &pod).1,
            r#"containers "a", "b" must not include "BAR", "BAZ", "FOO" in securityContext.capabilities.add"#
        );
    }

    #[test]
    fn restricted_volumes_check() {
        let mut pod = good();
        pod["spec"]["volumes"] = json!([
            {"name": "a", "configMap": {"name": "x"}},
            {"name": "b", "secret": {"secretName": "x"}},
            {"name": "c", "emptyDir": {}},
            {"name": "d", "projected": {"sources": []}},
            {"name": "e", "downwardAPI": {}},
            {"name": "f", "persistentVolumeClaim": {"claimName": "x"}},
            {"name": "g", "csi": {"driver": "x"}},
            {"name": "h", "ephemeral": {}},
            {"name": "i", "image": {"reference": "x"}}
        ]);
        assert_allowed_everywhere(&pod);
        pod["spec"]["volumes"] = json!([
            {"name": "a", "emptyDir": {}},
            {"name": "b1", "nfs": {"server": "s", "path": "/"}},
            {"name": "b2", "gitRepo": {"repository": "r"}},
            {"name": "c1", "emptyDir": null},
            {"name": "c2", "hostPath": {"path": "/"}}
        ]);
        assert!(check(Level::Baseline, LATEST, &pod).len() == 1);
        assert_restricted_only_fail_reason(
            &pod,
            "restricted volume types",
            r#"volumes "b1", "b2", "c1", "c2" use restricted volume types "gitRepo", "hostPath", "nfs", "unknown""#,
        );
    }

    fn assert_restricted_only_fail_reason(pod: &Value, reason: &str, detail: &str) {
        assert_eq!(
            only(Level::Restricted, LATEST, pod),
            (reason.to_string(), detail.to_string())
        );
    }

    #[test]
    fn run_as_non_root_check() {
        // Container-level true is enough without the pod-level field.
        let mut pod = good();
        pod["spec"]["securityContext"] = json!({"seccompProfile": {"type": "RuntimeDefault"}});
        pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        assert_allowed_everywhere(&pod);

        let mut pod = good();
        pod["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
        assert_restricted_only_fail(
            &pod,
            "runAsNonRoot != true",
            "pod must not set securityContext.runAsNonRoot=false",
        );

        let mut pod = good();
        pod["spec"]["securityContext"]["runAsNonRoot"] = json!(null);
        let first = pod["spec"]["containers"][0].clone();
        if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
            cs.push(first);
        }
        pod["spec"]["containers"][1]["name"] = json!("d");
        assert_restricted_only_fail(
            &pod,
            "runAsNonRoot != true",
            r#"pod or containers "c", "d" must set securityContext.runAsNonRoot=true"#,
        );

        // An explicit false wins over the implicit complaint.
        pod["spec"]["containers"][1]["securityContext"]["runAsNonRoot"] = json!(false);
        assert_restricted_only_fail(
            &pod,
            "runAsNonRoot != true",
            r#"container "d" must not set securityContext.runAsNonRoot=false"#,
        );
    }

    #[test]
    fn run_as_user_check_from_1_23() {
        let mut pod = good();
        pod["spec"]["securityContext"]["runAsUser"] = json!(1000);
        assert_allowed_everywhere(&pod);
        pod["spec"]["securityContext"]["runAsUser"] = json!(0);
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        assert_restricted_only_fail(
            &pod,
            "runAsUser=0",
            r#"pod and container "c" must not set runAsUser=0"#,
        );
        assert!(check(Level::Restricted, Version::v1(23), &pod).len() == 1);
        assert!(check(Level::Restricted, Version::v1(22), &pod).is_empty());

        // hostUsers: false relaxes it only when the option is on.
        pod["spec"]["hostUsers"] = json!(false);
        assert_eq!(check(Level::Restricted, LATEST, &pod).len(), 1);
        pod["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
        assert!(check_relaxed(Level::Restricted, &pod).is_empty());
    }

    #[test]
    fn seccomp_restricted_check() {
        let mut pod = good();
        pod["spec"]["securityContext"] = json!({"runAsNonRoot": true});
        pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "Localhost", "localhostProfile": "x"});
        assert_allowed_everywhere(&pod);

        let mut pod = good();
        pod["spec"]["securityContext"] = json!({"runAsNonRoot": true});
        assert_restricted_only_fail(
            &pod,
            "seccompProfile",
            r#"pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
        );
        pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "Unconfined"});
        assert_eq!(
            only(Level::Restricted, LATEST, &pod),
            (
                "seccompProfile".to_string(),
                r#"container "c" must not set securityContext.seccompProfile.type to "Unconfined""#
                    .to_string()
            )
        );
        assert_eq!(only(Level::Baseline, LATEST, &pod).0, "seccompProfile");
    }

    // --- version differences -----------------------------------------------

    #[test]
    fn latest_versus_v1_22() {
        let pod = nginx();
        let latest = reasons(Level::Restricted, LATEST, &pod);
        let v22 = reasons(Level::Restricted, Version::v1(22), &pod);
        assert_eq!(latest, v22);
        let v21 = reasons(Level::Restricted, Version::v1(21), &pod);
        assert_eq!(
            v21,
            [
                "allowPrivilegeEscalation != false",
                "runAsNonRoot != true",
                "seccompProfile"
            ]
        );
        assert!(check_ids(Level::Restricted, Version::v1(22)).contains(&"capabilities_restricted"));
        assert!(!check_ids(Level::Restricted, Version::v1(22)).contains(&"runAsUser"));
        assert!(check_ids(Level::Restricted, Version::v1(21)).contains(&"capabilities_baseline"));
        assert!(check_ids(Level::Restricted, Version::v1(18)).contains(&"seccompProfile_baseline"));
        assert_eq!(
            forbidden_message(Level::Restricted, Version::v1(22), &[]),
            "violates PodSecurity \"restricted:v1.22\": "
        );
    }

    #[test]
    fn windows_pods_exempt_from_linux_only_checks_from_1_25() {
        let pod = json!({"spec": {
            "os": {"name": "windows"},
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "w"}]
        }});
        assert!(check(Level::Restricted, LATEST, &pod).is_empty());
        assert!(check(Level::Restricted, Version::v1(25), &pod).is_empty());
        assert_eq!(
            reasons(Level::Restricted, Version::v1(24), &pod),
            [
                "allowPrivilegeEscalation != false",
                "unrestricted capabilities",
                "seccompProfile"
            ]
        );
    }

    // --- labels and versions -----------------------------------------------

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), json!(v)))
            .collect()
    }

    fn lv(level: Level, version: Version) -> LevelVersion {
        LevelVersion::new(level, version)
    }

    #[test]
    fn version_parsing() {
        for (s, v) in [
            ("latest", LATEST),
            ("v1.0", Version::v1(0)),
            ("v1.1", Version::v1(1)),
            ("v1.20", Version::v1(20)),
            ("v1.10000", Version::v1(10000)),
        ] {
            assert_eq!(Version::parse(s), Ok(v));
            assert_eq!(v.to_string(), s);
        }
        for s in [
            "foo",
            "",
            "v2.0",
            "v1",
            "1.1",
            "v1.01",
            "v1.-1",
            "v1.x",
            "Latest",
            "v1.99999999999999999999",
        ] {
            let err = Version::parse(s).err();
            assert_eq!(
                err.map(|e| e.to_string()),
                Some(r#"must be "latest" or "v1.x""#.to_string()),
                "{s}"
            );
        }
        assert!(Version::v1(99) < LATEST);
        assert!(Version::v1(2) < Version::v1(10));
        assert_eq!("v1.25".parse::<Version>(), Ok(Version::v1(25)));
    }

    #[test]
    fn level_parsing() {
        assert_eq!(Level::parse("baseline"), Ok(Level::Baseline));
        assert_eq!("restricted".parse::<Level>(), Ok(Level::Restricted));
        assert_eq!(Level::Privileged.to_string(), "privileged");
        let err = Level::parse("Restricted").err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("must be one of privileged, baseline, restricted".to_string())
        );
        assert!(Level::Privileged < Level::Baseline && Level::Baseline < Level::Restricted);
    }

    #[test]
    fn policy_from_labels_like_upstream() {
        let p = lv(Level::Privileged, LATEST);
        let cases: Vec<(Vec<(&str, &str)>, Policy)> = vec![
            (vec![], Policy::default()),
            (
                vec![("enforce", "baseline")],
                Policy {
                    enforce: lv(Level::Baseline, LATEST),
                    warn: lv(Level::Baseline, LATEST),
                    audit: p,
                },
            ),
            (
                vec![("warn", "restricted")],
                Policy {
                    enforce: p,
                    warn: lv(Level::Restricted, LATEST),
                    audit: p,
                },
            ),
            (
                vec![("audit", "baseline")],
                Policy {
                    enforce: p,
                    warn: p,
                    audit: lv(Level::Baseline, LATEST),
                },
            ),
            (
                vec![("enforce", "baseline"), ("warn", "restricted")],
                Policy {
                    enforce: lv(Level::Baseline, LATEST),
                    warn: lv(Level::Restricted, LATEST),
                    audit: p,
                },
            ),
            (
                vec![("enforce", "baseline"), ("enforce-version", "v1.22")],
                Policy {
                    enforce: lv(Level::Baseline, Version::v1(22)),
                    warn: lv(Level::Baseline, Version::v1(22)),
                    audit: p,
                },
            ),
            (
                vec![
                    ("enforce", "baseline"),
                    ("enforce-version", "v1.22"),
                    ("warn-version", "latest"),
                ],
                Policy {
                    enforce: lv(Level::Baseline, Version::v1(22)),
                    warn: lv(Level::Baseline, LATEST),
                    audit: p,
                },
            ),
            (
                vec![("enforce", "baseline"), ("warn-version", "v1.23")],
                Policy {
                    enforce: lv(Level::Baseline, LATEST),
                    warn: lv(Level::Baseline, Version::v1(23)),
                    audit: p,
                },
            ),
            (
                vec![
                    ("enforce", "baseline"),
                    ("enforce-version", "v1.20"),
                    ("warn", "restricted"),
                    ("warn-version", "v1.21"),
                    ("audit", "restricted"),
                    ("audit-version", "v1.22"),
                ],
                Policy {
                    enforce: lv(Level::Baseline, Version::v1(20)),
                    warn: lv(Level::Restricted, Version::v1(21)),
                    audit: lv(Level::Restricted, Version::v1(22)),
                },
            ),
            (
                vec![("enforce", "baseline"), ("warn", "privileged")],
                Policy {
                    enforce: lv(Level::Baseline, LATEST),
                    warn: p,
                    audit: p,
                },
            ),
        ];
        for (pairs, expected) in cases {
            let (got, errs) = Policy::from_labels(&labels(&pairs));
            assert!(errs.is_empty(), "{pairs:?}: {errs:?}");
            assert_eq!(got, expected, "{pairs:?}");
        }
    }

    #[test]
    fn policy_invalid_labels() {
        // Invalid enforce fails closed and does not pull warn along.
        let (got, errs) = Policy::from_labels(&labels(&[("enforce", "foo")]));
        assert_eq!(got.enforce, lv(Level::Restricted, LATEST));
        assert_eq!(got.warn, lv(Level::Privileged, LATEST));
        assert_eq!(
            errs[0].to_string(),
            r#"metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "foo": must be one of privileged, baseline, restricted"#
        );
        // Invalid warn/audit fail open; an invalid version means latest.
        let (got, errs) = Policy::from_labels(&labels(&[
            ("enforce", "baseline"),
            ("enforce-version", "v1.022"),
            ("warn", "foo"),
            ("audit", "bar"),
        ]));
        assert_eq!(got.enforce, lv(Level::Baseline, LATEST));
        assert_eq!(got.warn, lv(Level::Privileged, LATEST));
        assert_eq!(got.audit, lv(Level::Privileged, LATEST));
        let fields: Vec<String> = errs.iter().map(LabelError::field).collect();
        assert_eq!(
            fields,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce-version]",
                "metadata.labels[pod-security.kubernetes.io/audit]",
                "metadata.labels[pod-security.kubernetes.io/warn]",
            ]
        );
        assert_eq!(
            invalid_namespace_message("ns", &errs[..1]),
            r#"Namespace "ns" is invalid: metadata.labels[pod-security.kubernetes.io/enforce-version]: Invalid value: "v1.022": must be "latest" or "v1.x""#
        );
        assert!(
            aggregate_errors(&errs)
                .starts_with("[metadata.labels[pod-security.kubernetes.io/enforce-version]")
        );
        assert!(
            aggregate_errors(&errs).ends_with("must be one of privileged, baseline, restricted]")
        );

        let ns = json!({"metadata": {"name": "x", "labels": {ENFORCE_LEVEL_LABEL: "restricted", "other": "y"}}});
        let (got, errs) = Policy::from_namespace(&ns);
        assert!(errs.is_empty());
        assert_eq!(got.enforce.to_string(), "restricted:latest");
        assert_eq!(got.warn.to_string(), "restricted:latest");
        assert_eq!(
            Policy::from_namespace(&json!({})),
            (Policy::default(), vec![])
        );
        assert_eq!(Policy::from_labels_value(&json!(null)).0, Policy::default());
    }

    #[test]
    fn policy_with_configured_defaults() {
        let defaults = Policy {
            enforce: lv(Level::Baseline, LATEST),
            warn: lv(Level::Restricted, LATEST),
            audit: lv(Level::Restricted, Version::v1(30)),
        };
        let (got, _) =
            Policy::from_labels_with_defaults(&labels(&[("enforce-version", "v1.25")]), &defaults);
        assert_eq!(got.enforce, lv(Level::Baseline, Version::v1(25)));
        assert_eq!(got.warn, defaults.warn);
        assert!(got.equivalent(&got));
        assert!(!got.fully_privileged());
    }

    // --- evaluation, exemptions, templates ---------------------------------

    /// Evaluates a pod object with the default options.
    fn eval(policy: &Policy, errs: &[LabelError], pod: &Value, enforce: bool) -> Evaluation {
        evaluate(
            policy,
            errs,
            &pod["metadata"],
            &pod["spec"],
            enforce,
            &CheckOptions::default(),
        )
    }

    #[test]
    fn evaluate_enforce_warn_audit() {
        let (policy, errs) = Policy::from_labels(&labels(&[
            ("enforce", "baseline"),
            ("warn", "restricted"),
            ("audit", "restricted"),
        ]));
        let pod = nginx();
        let ev = eval(&policy, &errs, &pod, true);
        assert!(ev.allowed);
        assert_eq!(ev.denial, None);
        assert_eq!(ev.warnings.len(), 1);
        assert!(ev.warnings[0].starts_with("would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c\""));
        assert_eq!(
            ev.audit_annotations.get(AUDIT_VIOLATIONS_ANNOTATION),
            ev.warnings.first()
        );
        assert_eq!(
            ev.audit_annotations
                .get(ENFORCED_POLICY_ANNOTATION)
                .map(String::as_str),
            Some("baseline:latest")
        );

        // A rejected pod gets no warnings.
        let mut bad = nginx();
        bad["spec"]["hostPID"] = json!(true);
        let ev = eval(&policy, &errs, &bad, true);
        assert!(!ev.allowed);
        assert_eq!(
            ev.denial.as_deref(),
            Some(r#"violates PodSecurity "baseline:latest": host namespaces (hostPID=true)"#)
        );
        assert!(ev.warnings.is_empty());

        // Controllers are only warned about.
        let ev = eval(&policy, &errs, &bad, false);
        assert!(ev.allowed);
        assert!(ev.warnings[0].starts_with(
            r#"would violate PodSecurity "restricted:latest": host namespaces (hostPID=true), "#
        ));
    }

    #[test]
    fn evaluate_privileged_and_label_errors() {
        let pod = nginx();
        let ev = eval(&Policy::default(), &[], &pod, true);
        assert!(ev.allowed && ev.warnings.is_empty());
        assert_eq!(
            ev.audit_annotations
                .get(ENFORCED_POLICY_ANNOTATION)
                .map(String::as_str),
            Some("privileged:latest")
        );
        let ev = eval(&Policy::default(), &[], &pod, false);
        assert!(ev.audit_annotations.is_empty());

        let (policy, errs) = Policy::from_labels(&labels(&[("enforce", "bogus")]));
        let ev = eval(&policy, &errs, &pod, true);
        assert!(!ev.allowed);
        assert!(
            ev.denial
                .as_deref()
                .is_some_and(|d| d.starts_with(r#"violates PodSecurity "restricted:latest""#))
        );
        assert_eq!(
            ev.audit_annotations
                .get(ERROR_ANNOTATION)
                .map(String::as_str),
            Some(
                r#"Failed to parse policy: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "bogus": must be one of privileged, baseline, restricted"#
            )
        );
    }

    #[test]
    fn exemptions() {
        let ex = Exemptions {
            usernames: vec!["admin".into()],
            namespaces: vec!["kube-system".into()],
            runtime_class_names: vec!["kata".into()],
        };
        let spec = json!({"runtimeClassName": "kata"});
        assert_eq!(
            ex.exemption("kube-system", "admin", &spec),
            Some(Exemption::Namespace)
        );
        assert_eq!(
            ex.exemption("default", "admin", &spec),
            Some(Exemption::User)
        );
        assert_eq!(
            ex.exemption("default", "bob", &spec),
            Some(Exemption::RuntimeClass)
        );
        assert_eq!(ex.exemption("default", "bob", &json!({})), None);
        assert_eq!(Exemption::RuntimeClass.as_str(), "runtimeClass");
        assert!(!ex.namespace_exempt("") && !ex.user_exempt(""));
        assert!(!Exemptions::default().runtime_class_exempt(&json!({"runtimeClassName": ""})));
    }

    #[test]
    fn pod_templates_of_controllers() {
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"hostNetwork": true, "containers": []}});
        let objs = [
            (
                "Deployment",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "ReplicaSet",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "StatefulSet",
                json!({"spec": {"template": template.clone()}}),
            ),
            ("DaemonSet", json!({"spec": {"template": template.clone()}})),
            ("Job", json!({"spec": {"template": template.clone()}})),
            (
                "ReplicationController",
                json!({"spec": {"template": template.clone()}}),
            ),
            ("PodTemplate", json!({"template": template.clone()})),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template.clone()}}}}),
            ),
        ];
        for (kind, obj) in &objs {
            assert!(POD_TEMPLATE_KINDS.contains(kind));
            let (meta, spec) = pod_template_of(kind, obj).unwrap_or((&NULL, &NULL));
            assert_eq!(meta, &template["metadata"], "{kind}");
            assert_eq!(
                only(
                    Level::Baseline,
                    LATEST,
                    &json!({"metadata": meta, "spec": spec})
                )
                .0,
                "host namespaces"
            );
        }
        assert_eq!(pod_template_of("Pod", &json!({"spec": {}})), None);
        assert_eq!(
            pod_template_of("ReplicationController", &json!({"spec": {}})),
            None
        );
        assert_eq!(
            pod_template_of("Deployment", &json!({"spec": {"template": {}}})),
            Some((&NULL, &NULL))
        );
    }

    #[test]
    fn pod_update_significance_and_subresources() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut new = old.clone();
        new["metadata"] = json!({"labels": {"x": "y"}});
        assert!(!is_significant_pod_update(&new, &old));
        new["spec"]["containers"][0]["image"] = json!("b");
        assert!(is_significant_pod_update(&new, &old));
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox"}]);
        assert!(is_significant_pod_update(&new, &old));
        assert!(!is_significant_pod_update(&new, &new));
        assert!(is_ignored_pod_subresource("status"));
        assert!(!is_ignored_pod_subresource("ephemeralcontainers"));
        assert!(!is_ignored_pod_subresource(""));
    }
}
