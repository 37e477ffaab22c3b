//! Metric stability as Kubernetes' component-base defines it: every metric
//! has a stability level shown in its HELP (`[STABLE] …`), a deprecated
//! one says since when (`[ALPHA] (Deprecated since 1.31.0) …`) and is
//! hidden from the release after, unless `--show-hidden-metrics-for-version`
//! names the previous release; `--disabled-metrics` turns metrics off by
//! name; `--allow-metric-labels` bounds a label's values, others being
//! exposed as `unexpected`.
//!
//! The decisions are pure ([`MetricsPolicy::decide`], [`fold_unexpected`]);
//! the registry applies them ([`super::Metrics::register`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

/// How far a metric's name, labels and meaning are promised to stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum StabilityLevel {
    /// Not for users: may change or go at any time.
    Internal,
    /// No promise (the default).
    #[default]
    Alpha,
    /// Kept for a while after deprecation.
    Beta,
    /// Kept for at least three releases after deprecation.
    Stable,
}

impl StabilityLevel {
    /// The level as HELP and `registered_metrics_total` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "INTERNAL",
            Self::Alpha => "ALPHA",
            Self::Beta => "BETA",
            Self::Stable => "STABLE",
        }
    }
}

impl fmt::Display for StabilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric's name, help and stability, as it is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The family's name without the `_total` of counters.
    pub name: String,
    /// What it measures, without the stability annotation.
    pub help: String,
    /// Its stability level.
    pub stability: StabilityLevel,
    /// The release it was deprecated in (`1.31.0`), if it is.
    pub deprecated_version: Option<String>,
    /// Whether HELP carries the level: false for metrics kept under another
    /// project's names (cAdvisor's, CoreDNS's), whose HELP is theirs.
    pub annotated: bool,
}

impl Descriptor {
    /// An ALPHA metric.
    pub fn new(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            stability: StabilityLevel::Alpha,
            deprecated_version: None,
            annotated: true,
        }
    }

    /// The same metric with its HELP as given (another project's metric).
    pub fn raw(mut self) -> Self {
        self.annotated = false;
        self
    }

    /// The same metric at `level`.
    pub fn stability(mut self, level: StabilityLevel) -> Self {
        self.stability = level;
        self
    }

    /// The same metric, deprecated since `version` (`1.31.0`).
    pub fn deprecated_since(mut self, version: &str) -> Self {
        self.deprecated_version = Some(version.to_string());
        self
    }

    /// The name the family is exposed under (`_total` added to counters
    /// by the encoder): what `--disabled-metrics` and the label allow-lists
    /// name. Both spellings are matched.
    fn names(&self, exposed_suffix: &str) -> [String; 2] {
        [self.name.clone(), format!("{}{exposed_suffix}", self.name)]
    }

    /// The HELP text: `[LEVEL] help`, with `(Deprecated since X) ` after
    /// the level for a deprecated metric.
    pub fn annotated_help(&self) -> String {
        if !self.annotated {
            return self.help.clone();
        }
        match &self.deprecated_version {
            Some(version) => format!(
                "[{}] (Deprecated since {version}) {}",
                self.stability, self.help
            ),
            None => format!("[{}] {}", self.stability, self.help),
        }
    }
}

/// What to do with a metric being registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Expose it with this HELP text.
    Register(String),
    /// Deprecated long enough ago to be hidden.
    Hidden,
    /// Named by `--disabled-metrics`.
    Disabled,
}

/// The metric flags of a component (`--show-hidden-metrics-for-version`,
/// `--disabled-metrics`, `--allow-metric-labels`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsPolicy {
    /// The release this binary is (`(1, 33)`): decides what is hidden.
    pub current: (u32, u32),
    /// The previous release, when `--show-hidden-metrics-for-version` names it.
    pub show_hidden_for: Option<(u32, u32)>,
    /// Metric names turned off.
    pub disabled: HashSet<String>,
    /// Per metric, per label: the values exposed as they are.
    pub allowed_labels: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl MetricsPolicy {
    /// The policy of release `current` from the flags' values, or the
    /// error a bad value gets (as upstream's flag validation words it).
    /// `allow_labels_manifest` is the manifest file's text: a YAML map of
    /// `metric,label` to `value,value`, used only when the flag gives no
    /// rule (the flag overrides it, as upstream's); a manifest that does not
    /// parse is logged and left out, as upstream does, not an error.
    pub fn from_flags(
        current: (u32, u32),
        show_hidden_for: Option<&str>,
        disabled: &[String],
        allow_labels: &[String],
        allow_labels_manifest: Option<&str>,
    ) -> Result<Self, String> {
        let show_hidden_for = match show_hidden_for.filter(|v| !v.is_empty()) {
            None => None,
            Some(text) => Some(parse_show_hidden(current, text)?),
        };
        let mut allowed_labels = HashMap::new();
        if !allow_labels.is_empty() {
            for rule in allow_labels {
                let (key, values) = split_allow_flag(rule)?;
                add_allow_rule(&mut allowed_labels, &key, &values)?;
            }
        } else if let Some(manifest) = allow_labels_manifest {
            match manifest_rules(manifest) {
                Ok(rules) => allowed_labels = rules,
                Err(e) => tracing::error!(err = %e, "Failed to parse allow list manifest"),
            }
        }
        Ok(Self {
            current,
            show_hidden_for,
            disabled: disabled
                .iter()
                .flat_map(|d| d.split(','))
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
            allowed_labels,
        })
    }

    /// Whether, and with which HELP, `descriptor` is exposed. `suffix` is
    /// what the encoder adds to the name (`_total` for counters, else empty).
    pub fn decide(&self, descriptor: &Descriptor, suffix: &str) -> Decision {
        if descriptor
            .names(suffix)
            .iter()
            .any(|n| self.disabled.contains(n))
        {
            return Decision::Disabled;
        }
        match descriptor.deprecated_version.as_deref() {
            Some(version) if self.is_deprecated(version) => {
                if parse_version(version).is_some_and(|v| self.hides(v)) {
                    return Decision::Hidden;
                }
                Decision::Register(descriptor.annotated_help())
            }
            _ => Decision::Register(
                Descriptor {
                    deprecated_version: None,
                    ..descriptor.clone()
                }
                .annotated_help(),
            ),
        }
    }

    /// A metric deprecated in an earlier minor release than this one is
    /// hidden, unless `--show-hidden-metrics-for-version` is set (which
    /// shows every hidden metric again, as upstream's switch does).
    fn hides(&self, deprecated: (u32, u32)) -> bool {
        deprecated < self.current && self.show_hidden_for.is_none()
    }

    /// Whether a metric deprecated in `version` is deprecated yet (a
    /// deprecation planned for a later release is not annotated).
    fn is_deprecated(&self, version: &str) -> bool {
        parse_version(version).is_some_and(|v| v <= self.current)
    }

    /// Whether any label of any metric has an allow-list.
    pub fn bounds_labels(&self) -> bool {
        !self.allowed_labels.is_empty()
    }
}

/// `--show-hidden-metrics-for-version`: only the previous minor release
/// (`1.32` for 1.33) may be named, as upstream allows.
fn parse_show_hidden(current: (u32, u32), text: &str) -> Result<(u32, u32), String> {
    let previous = (current.0, current.1.saturating_sub(1));
    let refuse = || {
        format!(
            "--show-hidden-metrics-for-version must be omitted or have the value '{}.{}'. Only the previous minor version is allowed",
            previous.0, previous.1
        )
    };
    let version = parse_version(text).ok_or_else(refuse)?;
    if version != previous || text.split('.').count() != 2 {
        return Err(refuse());
    }
    Ok(version)
}

/// `1.31` or `1.31.0` as (major, minor).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    match parts.next() {
        None => Some((major, minor)),
        Some(patch) if patch.parse::<u32>().is_ok() && parts.next().is_none() => {
            Some((major, minor))
        }
        _ => None,
    }
}

/// The items of one `--allow-metric-labels` value: several may be given
/// in one, separated by a comma or space after a quoted value
/// (`m,a='x,y', m,b='z'`).
pub fn split_allow_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = match rest.find("='") {
            Some(open) => match rest[open + 2..].find('\'') {
                Some(close) => open + 2 + close + 1,
                None => rest.len(),
            },
            None => rest.len(),
        };
        items.push(rest[..end].trim().to_string());
        rest = rest[end..].trim_start_matches([',', ' ']);
    }
    items
}

/// The rules of an `--allow-metric-labels-manifest` file.
fn manifest_rules(text: &str) -> Result<HashMap<String, HashMap<String, HashSet<String>>>, String> {
    let entries: BTreeMap<String, String> =
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut rules = HashMap::new();
    for (key, values) in entries {
        add_allow_rule(&mut rules, &key, &values)?;
    }
    Ok(rules)
}

/// Upstream's refusal of a malformed `--allow-metric-labels`.
const ALLOW_LABELS_FORMAT: &str = "--allow-metric-labels must have a list of kv pair with format `metricName,labelName=labelValue, labelValue,...`";

/// One `--allow-metric-labels` item: `metric,label='v1,v2'` (the quotes
/// optional) as key `metric,label` and the values.
fn split_allow_flag(rule: &str) -> Result<(String, String), String> {
    let (key, values) = rule
        .split_once('=')
        .ok_or_else(|| ALLOW_LABELS_FORMAT.to_string())?;
    let values = values.trim();
    let values = values
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(values);
    Ok((key.trim().to_string(), values.to_string()))
}

fn add_allow_rule(
    rules: &mut HashMap<String, HashMap<String, HashSet<String>>>,
    key: &str,
    values: &str,
) -> Result<(), String> {
    let (metric, label) = key
        .split_once(',')
        .filter(|(m, l)| is_name(m, true) && is_name(l, false))
        .ok_or_else(|| ALLOW_LABELS_FORMAT.to_string())?;
    rules
        .entry(metric.to_string())
        .or_default()
        .entry(label.to_string())
        .or_default()
        .extend(values.split(',').map(str::to_string));
    Ok(())
}

/// A Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label name (no `:`).
fn is_name(text: &str, colons: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (colons && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = text.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// The process's policy, set once at start from the flags.
static POLICY: OnceLock<MetricsPolicy> = OnceLock::new();

/// Puts `policy` in force for every registry of this process; the first
/// call wins (one process, one set of flags).
pub fn set_policy(policy: MetricsPolicy) {
    let _ = POLICY.set(policy);
}

/// The policy in force (upstream's defaults until [`set_policy`]).
pub fn policy() -> &'static MetricsPolicy {
    POLICY.get_or_init(MetricsPolicy::default)
}

/// The value a label takes in the exposition: itself when its metric has
/// no allow-list for it or lists it, else `unexpected`.
pub const UNEXPECTED: &str = "unexpected";

/// Prometheus text with each allow-listed label's other values replaced by
/// `unexpected`; series that become the same are added up (counters,
/// histogram buckets, sums and counts; gauges too). Returns the text and
/// the `(metric, label, value)` triples that were replaced.
pub fn fold_unexpected(
    text: &str,
    policy: &MetricsPolicy,
) -> (String, Vec<(String, String, String)>) {
    if !policy.bounds_labels() {
        return (text.to_string(), Vec::new());
    }
    let mut out = String::with_capacity(text.len());
    let mut replaced = Vec::new();
    // The family whose samples follow, and its samples in order (merged;
    // `at` finds a series' place, so folding stays linear in the samples).
    let mut family: Option<&HashMap<String, HashSet<String>>> = None;
    let mut samples: Vec<(String, f64)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let flush =
        |out: &mut String, samples: &mut Vec<(String, f64)>, at: &mut HashMap<String, usize>| {
            at.clear();
            for (series, value) in samples.drain(..) {
                out.push_str(&series);
                out.push(' ');
                out.push_str(&format_value(value));
                out.push('\n');
            }
        };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush(&mut out, &mut samples, &mut at);
            let name = rest.split(' ').next().unwrap_or_default();
            family = policy.allowed_labels.get(name).or_else(|| {
                policy
                    .allowed_labels
                    .get(name.strip_suffix("_total").unwrap_or(name))
            });
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let Some(rules) = family.filter(|_| !line.starts_with('#')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let Some((series, value)) = split_sample(line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (series, changed) = rewrite_labels(series, rules);
        for (label, value) in changed {
            let metric = series.split('{').next().unwrap_or_default().to_string();
            replaced.push((metric, label, value));
        }
        match at.get(&series) {
            Some(&i) => samples[i].1 += value,
            None => {
                at.insert(series.clone(), samples.len());
                samples.push((series, value));
            }
        }
    }
    flush(&mut out, &mut samples, &mut at);
    (out, replaced)
}

/// `name{labels} value` as the series and its value (timestamps are not
/// written by kelp's encoders).
fn split_sample(line: &str) -> Option<(&str, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some((series, value))
}

fn format_value(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The series with each bounded label's value outside its list replaced;
/// also the (label, original value) pairs replaced.
fn rewrite_labels(
    series: &str,
    rules: &HashMap<String, HashSet<String>>,
) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), Vec::new());
    };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let mut changed = Vec::new();
    let mut labels = Vec::new();
    for (label, value) in parse_labels(body) {
        match rules.get(&label) {
            Some(allowed) if !allowed.contains(&unescape(&value)) => {
                changed.push((label.clone(), unescape(&value)));
                labels.push(format!("{label}=\"{UNEXPECTED}\""));
            }
            _ => labels.push(format!("{label}=\"{value}\"")),
        }
    }
    (format!("{name}{{{}}}", labels.join(",")), changed)
}

/// `a="x",b="y\"z"` as (label, escaped value) pairs.
fn parse_labels(body: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = body;
    while let Some((label, after)) = rest.split_once("=\"") {
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        pairs.push((
            label.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        ));
        rest = &after[end + 1..];
    }
    pairs
}

fn unescape(value: &str) -> String {
    value
        .replace("\\n", "\n")
        .replace("\\\"", "\"")
        .replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(show: Option<&str>, disabled: &[&str], allow: &[&str]) -> MetricsPolicy {
        MetricsPolicy::from_flags(
            (1, 33),
            show,
            &disabled.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &allow.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn help_carries_the_level_and_deprecation() {
        let d = Descriptor::new("foo", "Counts things").stability(StabilityLevel::Stable);
        assert_eq!(d.annotated_help(), "[STABLE] Counts things");
        let d = d.deprecated_since("1.33.0");
        assert_eq!(
            d.annotated_help(),
            "[STABLE] (Deprecated since 1.33.0) Counts things"
        );
    }

    #[test]
    fn deprecated_metrics_hide_from_the_next_release() {
        let plain = policy(None, &[], &[]);
        let this_release = Descriptor::new("a", "h").deprecated_since("1.33.0");
        let last_release = Descriptor::new("b", "h").deprecated_since("1.32.0");
        let older = Descriptor::new("c", "h").deprecated_since("1.30.0");
        let later = Descriptor::new("d", "h").deprecated_since("1.35.0");
        assert_eq!(
            plain.decide(&this_release, ""),
            Decision::Register("[ALPHA] (Deprecated since 1.33.0) h".into())
        );
        assert_eq!(plain.decide(&last_release, ""), Decision::Hidden);
        assert_eq!(plain.decide(&older, ""), Decision::Hidden);
        assert_eq!(
            plain.decide(&later, ""),
            Decision::Register("[ALPHA] h".into())
        );
        // The switch shows every hidden metric, still marked deprecated.
        let shown = policy(Some("1.32"), &[], &[]);
        assert_eq!(
            shown.decide(&older, ""),
            Decision::Register("[ALPHA] (Deprecated since 1.30.0) h".into())
        );
        // Disabling wins over showing.
        let both = policy(Some("1.32"), &["c"], &[]);
        assert_eq!(both.decide(&older, ""), Decision::Disabled);
    }

    #[test]
    fn only_the_previous_release_can_be_shown() {
        for bad in ["1.31", "1.33", "1.32.0", "x"] {
            let err = MetricsPolicy::from_flags((1, 33), Some(bad), &[], &[], None).unwrap_err();
            assert!(err.contains("have the value '1.32'"), "{bad}: {err}");
        }
    }

    #[test]
    fn disabled_by_either_name() {
        let p = policy(None, &["etcd_requests_total", "other"], &[]);
        assert_eq!(
            p.decide(&Descriptor::new("etcd_requests", "h"), "_total"),
            Decision::Disabled
        );
        assert!(matches!(
            p.decide(&Descriptor::new("etcd_request_errors", "h"), "_total"),
            Decision::Register(_)
        ));
    }

    #[test]
    fn unexpected_values_fold_into_one_series() {
        let p = policy(None, &[], &["apiserver_request_total,code='200,201'"]);
        let text = "# HELP apiserver_request_total [STABLE] Requests.\n\
                    # TYPE apiserver_request_total counter\n\
                    apiserver_request_total{code=\"200\",verb=\"GET\"} 5\n\
                    apiserver_request_total{code=\"404\",verb=\"GET\"} 2\n\
                    apiserver_request_total{code=\"409\",verb=\"GET\"} 1\n\
                    # HELP other Other.\n\
                    # TYPE other gauge\n\
                    other{code=\"404\"} 3\n";
        let (folded, replaced) = fold_unexpected(text, &p);
        assert!(folded.contains("apiserver_request_total{code=\"200\",verb=\"GET\"} 5\n"));
        assert!(folded.contains("apiserver_request_total{code=\"unexpected\",verb=\"GET\"} 3\n"));
        assert!(!folded.contains("code=\"404\",verb"));
        assert!(folded.contains("other{code=\"404\"} 3\n"), "{folded}");
        assert_eq!(replaced.len(), 2);
    }

    #[test]
    fn several_rules_in_one_value() {
        assert_eq!(
            split_allow_items("m1,l1='v1,v2', m1,l2='v3' m2,l1='v4'"),
            ["m1,l1='v1,v2'", "m1,l2='v3'", "m2,l1='v4'"]
        );
        assert_eq!(split_allow_items("m,l=v1,v2"), ["m,l=v1,v2"]);
    }

    #[test]
    fn the_flag_overrides_the_manifest() {
        let manifest = Some("\"m,b\": \"y,z\"\n");
        let p = MetricsPolicy::from_flags((1, 33), None, &[], &["m,a=x".into()], manifest).unwrap();
        assert!(p.allowed_labels["m"]["a"].contains("x"));
        assert!(!p.allowed_labels["m"].contains_key("b"));
        let p = MetricsPolicy::from_flags((1, 33), None, &[], &[], manifest).unwrap();
        assert!(p.allowed_labels["m"]["b"].contains("z"));
        // A manifest that does not parse, or names a bad key, is left out.
        for bad in ["[not a map", "\"nolabel\": \"x\"\n"] {
            let p = MetricsPolicy::from_flags((1, 33), None, &[], &[], Some(bad)).unwrap();
            assert!(p.allowed_labels.is_empty(), "{bad}");
        }
        for bad in ["nolabel", "m=x", "1m,a=x", "m,a:b=x"] {
            let err =
                MetricsPolicy::from_flags((1, 33), None, &[], &[bad.into()], None).unwrap_err();
            assert_eq!(err, ALLOW_LABELS_FORMAT, "{bad}");
        }
    }
}
