//! The process-wide Prometheus registry, the API server's request metrics and
//! the `process_*` metrics read from `/proc/self`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use super::stability::{self, Decision, Descriptor, StabilityLevel};

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `Content-Type` of [`Metrics::encode_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds of `apiserver_request_duration_seconds`, as kube-apiserver's.
pub const REQUEST_DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Process-wide metrics. Components register their families here at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The API server's request counter and latency histogram.
    pub apiserver: ApiserverMetrics,
    meta: MetaMetrics,
    /// Label values already counted as unexpected.
    unexpected: Mutex<HashSet<(String, String, String)>>,
}

/// The stability framework's own metrics.
#[derive(Debug, Clone, Default)]
struct MetaMetrics {
    registered: Family<RegisteredLabels, Counter>,
    disabled: Counter,
    hidden: Counter,
    unexpected: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegisteredLabels {
    deprecated_version: String,
    stability_level: &'static str,
}

impl Metrics {
    /// A registry holding the API server's request metrics, the stability
    /// framework's own and the process metrics, under the policy in force
    /// ([`stability::set_policy`] first).
    pub fn new() -> Arc<Self> {
        let metrics = Self {
            registry: Mutex::new(Registry::default()),
            apiserver: ApiserverMetrics::new(),
            meta: MetaMetrics::default(),
            unexpected: Mutex::new(HashSet::new()),
        };
        let meta = metrics.meta.clone();
        metrics.register(
            Descriptor::new(
                "registered_metrics",
                "The count of registered metrics broken by stability level and deprecation version",
            )
            .stability(StabilityLevel::Beta),
            meta.registered,
        );
        metrics.register(
            Descriptor::new("disabled_metrics", "The count of disabled metrics")
                .stability(StabilityLevel::Beta),
            meta.disabled.clone(),
        );
        metrics.register(
            Descriptor::new("hidden_metrics", "The count of hidden metrics")
                .stability(StabilityLevel::Beta),
            meta.hidden,
        );
        metrics.register(
            Descriptor::new(
                "cardinality_enforcement_unexpected_categorizations",
                "The count of unexpected categorizations during cardinality enforcement",
            ),
            meta.unexpected,
        );
        // Counted once per name the flag gives, as upstream does.
        meta.disabled
            .inc_by(stability::policy().disabled.len() as u64);
        metrics.apiserver.register(&metrics);
        // Raw process metrics, unannotated as Prometheus' own collector's.
        metrics
            .registry()
            .register_collector(Box::new(ProcessCollector));
        Arc::new(metrics)
    }

    /// Registers `metric` as `descriptor` says, unless the policy hides or
    /// disables it (counted in `hidden_metrics_total`); returns the decision.
    ///
    /// prometheus-client adds the type's suffix itself: register a counter
    /// as `foo` to expose `foo_total`. A full stop is appended to the help.
    pub fn register(&self, descriptor: Descriptor, metric: impl Metric) -> Decision {
        let decision = register_in(&mut self.registry(), &descriptor, metric);
        match &decision {
            Decision::Register(_) => {
                self.meta
                    .registered
                    .get_or_create(&RegisteredLabels {
                        deprecated_version: descriptor.deprecated_version.unwrap_or_default(),
                        stability_level: descriptor.stability.as_str(),
                    })
                    .inc();
            }
            Decision::Hidden | Decision::Disabled => {
                self.meta.hidden.inc();
            }
        }
        decision
    }

    /// Registers a collector whose metrics are produced at each scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry().register_collector(collector);
    }

    /// All metrics in Prometheus' text format (version 0.0.4, served as
    /// [`PROMETHEUS_TEXT_CONTENT_TYPE`]), the format kube-apiserver serves by
    /// default: counter families are named with their `_total` suffix.
    /// Label values outside an `--allow-metric-labels` list read
    /// `unexpected`; each such value counts once in
    /// `cardinality_enforcement_unexpected_categorizations_total`.
    pub fn encode(&self) -> String {
        let text = openmetrics_to_prometheus_text(&self.encode_openmetrics());
        let (text, replaced) = stability::fold_unexpected(&text, stability::policy());
        if !replaced.is_empty() {
            let mut seen = self
                .unexpected
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let new = replaced
                .into_iter()
                .filter(|r| seen.insert(r.clone()))
                .count();
            if new > 0 {
                self.meta.unexpected.inc_by(new as u64);
                drop(seen);
                // Again, so this scrape already shows the count (the next
                // pass finds nothing new).
                return self.encode();
            }
        }
        text
    }

    /// All metrics in the OpenMetrics text format, ending in `# EOF` (served
    /// as [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry()).is_err() {
            // Only a metric's own encoder can fail; what came before is kept.
            tracing::warn!("Encoding the metrics failed");
        }
        out
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `registry` in Prometheus' text format (version 0.0.4), for metrics
/// built afresh at each scrape (the kubelet's `/metrics/resource`), with
/// the label allow-lists applied.
pub fn prometheus_text(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        tracing::warn!("Encoding the metrics failed");
    }
    stability::fold_unexpected(&openmetrics_to_prometheus_text(&out), stability::policy()).0
}

/// Registers `metric` in `registry` as `descriptor` and the policy in
/// force say (its HELP annotated with its stability; not at all when hidden
/// or disabled). For registries built per scrape; the process registry
/// goes through [`Metrics::register`], which also counts.
pub fn register_in(
    registry: &mut Registry,
    descriptor: &Descriptor,
    metric: impl Metric,
) -> Decision {
    let suffix = if matches!(metric.metric_type(), MetricType::Counter) {
        "_total"
    } else {
        ""
    };
    let decision = stability::policy().decide(descriptor, suffix);
    if let Decision::Register(help) = &decision {
        registry.register(descriptor.name.clone(), help.clone(), metric);
    }
    decision
}

/// kube-apiserver's request metrics: `apiserver_request_total` and
/// `apiserver_request_duration_seconds`.
#[derive(Debug, Clone)]
pub struct ApiserverMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    inflight: Family<KindLabels, Gauge>,
    long_running: Family<TargetLabels, Gauge>,
    storage_objects: Family<ResourceLabels, Gauge>,
    terminations: Family<TerminationLabels, Counter>,
}

/// Holds one unit of a gauge (a request in flight) until dropped.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: LabelValue,
}

/// Labels of `apiserver_request_terminations_total`, sorted (`code` comes
/// before every target label).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TerminationLabels {
    code: LabelValue,
    #[prometheus(flatten)]
    target: TargetLabels,
}

/// What a request was aimed at, without its outcome or dry run: the labels
/// of `apiserver_longrunning_requests`, sorted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    component: LabelValue,
    group: LabelValue,
    resource: LabelValue,
    scope: LabelValue,
    subresource: LabelValue,
    verb: LabelValue,
    version: LabelValue,
}

impl TargetLabels {
    fn new(verb: &str, target: Target<'_>, scope: &str) -> Self {
        let (group, version, resource, subresource) = target;
        Self {
            component: "apiserver".into(),
            group: group.into(),
            resource: resource.into(),
            scope: scope.into(),
            subresource: subresource.into(),
            verb: clean_verb(verb).into(),
            version: version.into(),
        }
    }
}

/// A request's group, version, resource and subresource ("" for none).
pub type Target<'a> = (&'a str, &'a str, &'a str, &'a str);

impl ApiserverMetrics {
    /// Counts one finished request and observes its duration.
    ///
    /// `verb` is upper-cased; `WATCHLIST` counts as `WATCH` and verbs outside
    /// upstream's set (`APPLY`, `CONNECT`, `CREATE`, `DELETE`,
    /// `DELETECOLLECTION`, `GET`, `LIST`, `PATCH`, `POST`, `PROXY`, `PUT`,
    /// `UPDATE`, `WATCH`) as `other`. `scope` is `cluster`, `namespace`,
    /// `resource` or empty; `component` is `apiserver` for kelp's own API.
    /// A dry run is labelled `dry_run="All"`, other requests `dry_run=""`.
    // The arguments are the label set upstream uses; a struct would only move
    // the list to every call site.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
        scope: &str,
        component: &str,
        code: u16,
        dry_run: bool,
        seconds: f64,
    ) {
        let durations = DurationLabels {
            component: component.into(),
            dry_run: if dry_run { "All" } else { "" }.into(),
            group: group.into(),
            resource: resource.into(),
            scope: scope.into(),
            subresource: subresource.into(),
            verb: clean_verb(verb).into(),
            version: version.into(),
        };
        let requests = RequestLabels {
            code: code.to_string().into(),
            component: durations.component.clone(),
            dry_run: durations.dry_run.clone(),
            group: durations.group.clone(),
            resource: durations.resource.clone(),
            scope: durations.scope.clone(),
            subresource: durations.subresource.clone(),
            verb: durations.verb.clone(),
            version: durations.version.clone(),
        };
        self.requests.get_or_create(&requests).inc();
        self.durations.get_or_create(&durations).observe(seconds);
    }

    /// Counts a request in `apiserver_current_inflight_requests` (by kind:
    /// `mutating` or `readOnly`) until the guard drops.
    pub fn inflight(&self, mutating: bool) -> GaugeGuard {
        let kind = if mutating { "mutating" } else { "readOnly" };
        GaugeGuard::new(
            self.inflight
                .get_or_create(&KindLabels { request_kind: kind })
                .clone(),
        )
    }

    /// Counts a long-running request (watch, exec, proxy …) in
    /// `apiserver_longrunning_requests` until the guard drops.
    pub fn long_running(&self, verb: &str, target: Target<'_>, scope: &str) -> GaugeGuard {
        GaugeGuard::new(
            self.long_running
                .get_or_create(&TargetLabels::new(verb, target, scope))
                .clone(),
        )
    }

    /// Counts a request the server refused to protect itself (429 past the
    /// in-flight limits) in `apiserver_request_terminations_total`.
    pub fn terminated(&self, verb: &str, target: Target<'_>, scope: &str, code: u16) {
        self.terminations
            .get_or_create(&TerminationLabels {
                code: code.to_string().into(),
                target: TargetLabels::new(verb, target, scope),
            })
            .inc();
    }

    /// Sets `apiserver_storage_objects` of `resource` (`pods`,
    /// `deployments.apps`; -1 when counting failed).
    pub fn storage_objects(&self, resource: &str, count: i64) {
        self.storage_objects
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .set(count);
    }

    fn new() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(REQUEST_DURATION_BUCKETS)),
            inflight: Family::default(),
            long_running: Family::default(),
            storage_objects: Family::default(),
            terminations: Family::default(),
        }
    }

    fn register(&self, metrics: &Metrics) {
        metrics.register(
            // prometheus-client appends `_total`.
            Descriptor::new(
                "apiserver_request",
                "Counter of apiserver requests broken out for each verb, dry run value, group, \
                 version, resource, scope, component, and HTTP response code",
            )
            .stability(StabilityLevel::Stable),
            self.requests.clone(),
        );
        metrics.register(
            Descriptor::new(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb, dry run value, group, \
                 version, resource, subresource, scope and component",
            )
            .stability(StabilityLevel::Stable),
            self.durations.clone(),
        );
        metrics.register(
            Descriptor::new(
                "apiserver_current_inflight_requests",
                "Maximal number of currently used inflight request limit of this apiserver \
                 per request kind in last second",
            )
            .stability(StabilityLevel::Stable),
            self.inflight.clone(),
        );
        metrics.register(
            Descriptor::new(
                "apiserver_longrunning_requests",
                "Gauge of all active long-running apiserver requests broken out by verb, group, \
                 version, resource, scope and component. Not all requests are tracked this way",
            )
            .stability(StabilityLevel::Stable),
            self.long_running.clone(),
        );
        metrics.register(
            Descriptor::new(
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind. In case of \
                 a fetching error, the value will be -1",
            )
            .stability(StabilityLevel::Stable),
            self.storage_objects.clone(),
        );
        metrics.register(
            Descriptor::new(
                "apiserver_request_terminations",
                "Number of requests which apiserver terminated in self-defense",
            ),
            self.terminations.clone(),
        );
    }
}

/// Labels of `apiserver_request_total`, in the sorted order Prometheus'
/// Go client prints them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: LabelValue,
    component: LabelValue,
    dry_run: LabelValue,
    group: LabelValue,
    resource: LabelValue,
    scope: LabelValue,
    subresource: LabelValue,
    verb: LabelValue,
    version: LabelValue,
}

/// Labels of `apiserver_request_duration_seconds`, sorted.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    component: LabelValue,
    dry_run: LabelValue,
    group: LabelValue,
    resource: LabelValue,
    scope: LabelValue,
    subresource: LabelValue,
    verb: LabelValue,
    version: LabelValue,
}

/// A label value escaped for the exposition formats (prometheus-client 0.24
/// writes `String` label values verbatim, so a `"` from a request path would
/// break the scrape).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct LabelValue(String);

impl From<&str> for LabelValue {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for LabelValue {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

/// Upstream's reported verb: upper case, `WATCHLIST` as `WATCH`, unknown
/// verbs as `other` (bounds the label's cardinality).
fn clean_verb(verb: &str) -> String {
    const VALID: [&str; 13] = [
        "APPLY",
        "CONNECT",
        "CREATE",
        "DELETE",
        "DELETECOLLECTION",
        "GET",
        "LIST",
        "PATCH",
        "POST",
        "PROXY",
        "PUT",
        "UPDATE",
        "WATCH",
    ];
    let upper = verb.to_ascii_uppercase();
    if upper == "WATCHLIST" {
        "WATCH".to_owned()
    } else if VALID.contains(&upper.as_str()) {
        upper
    } else {
        "other".to_owned()
    }
}

/// Rewrites prometheus-client's OpenMetrics text into Prometheus' 0.0.4 text
/// format: counter and info families take their samples' names (`_total`,
/// `_info`; info becomes a gauge), `unknown` becomes `untyped`, and the
/// `# UNIT` and `# EOF` lines go. Sample lines are valid in both formats.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut suffixes: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        match line.strip_prefix("# TYPE ").and_then(|t| t.split_once(' ')) {
            Some((name, "counter")) => suffixes.insert(name, "_total"),
            Some((name, "info")) => suffixes.insert(name, "_info"),
            _ => None,
        };
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        let Some((prefix, rest)) = meta else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        out.push_str(prefix);
        out.push_str(name);
        out.push_str(suffixes.get(name).copied().unwrap_or(""));
        out.push(' ');
        out.push_str(match (prefix, tail) {
            ("# TYPE ", "info") => "gauge",
            ("# TYPE ", "unknown") => "untyped",
            _ => tail,
        });
        out.push('\n');
    }
    out
}

/// `process_*` metrics of Prometheus' Go client, read from `/proc` at each
/// scrape. A file that can't be read (not Linux) drops its metrics.
#[derive(Debug)]
struct ProcessCollector;

/// `/proc` reports CPU times in USER_HZ ticks, 100 per second on every Linux
/// architecture kelp targets (Prometheus' procfs assumes the same).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let status = read("/proc/self/status");
        let field = |key: &str| status.as_deref().and_then(|s| parse_status_kb(s, key));
        if let Some(stat) = stat {
            let cpu = (stat.utime + stat.stime) as f64 / USER_HZ;
            encode_const(
                &mut encoder,
                // Encoded as `process_cpu_seconds_total`.
                "process_cpu_seconds",
                "Total user and system CPU time of the process in seconds",
                &ConstCounter::new(cpu),
            )?;
            if let Some(boot) = read("/proc/stat").and_then(|s| parse_btime(&s)) {
                let start = boot as f64 + stat.starttime as f64 / USER_HZ;
                encode_const(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process in seconds since the Unix epoch",
                    &ConstGauge::new(start),
                )?;
            }
        }
        if let Some(rss) = field("VmRSS:") {
            encode_const(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size of the process in bytes",
                &ConstGauge::new(rss as f64),
            )?;
        }
        if let Some(vsz) = field("VmSize:") {
            encode_const(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size of the process in bytes",
                &ConstGauge::new(vsz as f64),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            encode_const(
                &mut encoder,
                "process_open_fds",
                "Number of file descriptors the process has open",
                &ConstGauge::new(fds.count() as f64),
            )?;
        }
        if let Some(max) = read("/proc/self/limits").and_then(|s| parse_max_fds(&s)) {
            encode_const(
                &mut encoder,
                "process_max_fds",
                "Limit on the number of file descriptors the process may open",
                &ConstGauge::new(max),
            )?;
        }
        Ok(())
    }
}

fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// The fields of `/proc/self/stat` the collector uses, in ticks.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// A `Key:   123 kB` line of `/proc/<pid>/status`, in bytes.
fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The boot time (`btime`) from `/proc/stat`, in seconds since the epoch.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft `Max open files` limit from `/proc/<pid>/limits`.
fn parse_max_fds(limits: &str) -> Option<f64> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;
    use regex::Regex;

    fn sample_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect()
    }

    #[test]
    fn request_counter_is_named_and_labelled_like_upstream() {
        let metrics = Metrics::new();
        metrics.apiserver.observe(
            "get",
            "apps",
            "v1",
            "deployments",
            "",
            "namespace",
            "apiserver",
            200,
            false,
            0.003,
        );
        metrics.apiserver.observe(
            "GET",
            "apps",
            "v1",
            "deployments",
            "",
            "namespace",
            "apiserver",
            200,
            false,
            0.5,
        );
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE apiserver_request_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP apiserver_request_total [STABLE] Counter of apiserver requests"),
            "{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
        assert_eq!(
            sample_lines(&text, "apiserver_request_total"),
            [
                "apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"apps\",resource=\"deployments\",scope=\"namespace\",subresource=\"\",verb=\"GET\",version=\"v1\"} 2"
            ]
        );
    }

    #[test]
    fn duration_histogram_has_upstream_buckets() {
        let metrics = Metrics::new();
        metrics.apiserver.observe(
            "POST",
            "",
            "v1",
            "pods",
            "binding",
            "namespace",
            "apiserver",
            201,
            true,
            0.3,
        );
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE apiserver_request_duration_seconds histogram\n"),
            "{text}"
        );
        let labels = "component=\"apiserver\",dry_run=\"All\",group=\"\",resource=\"pods\",scope=\"namespace\",subresource=\"binding\",verb=\"POST\",version=\"v1\"";
        let buckets = sample_lines(&text, "apiserver_request_duration_seconds_bucket");
        assert_eq!(buckets.len(), REQUEST_DURATION_BUCKETS.len() + 1, "{text}");
        let le = Regex::new(r#"le="([^"]+)""#).unwrap();
        let bounds: Vec<String> = buckets
            .iter()
            .map(|l| le.captures(l).unwrap()[1].to_owned())
            .collect();
        let mut expected: Vec<String> = REQUEST_DURATION_BUCKETS
            .iter()
            .map(|b| format!("{b:?}"))
            .collect();
        expected.push("+Inf".into());
        assert_eq!(bounds, expected);
        for (line, bound) in buckets.iter().zip(&bounds) {
            assert!(line.contains(labels), "{line}");
            let below = bound.parse::<f64>().map(|b| 0.3 > b).unwrap_or(false);
            assert!(line.ends_with(if below { " 0" } else { " 1" }), "{line}");
        }
        assert_eq!(
            sample_lines(&text, "apiserver_request_duration_seconds_count"),
            [format!(
                "apiserver_request_duration_seconds_count{{{labels}}} 1"
            )]
        );
        assert_eq!(
            sample_lines(&text, "apiserver_request_duration_seconds_sum"),
            [format!(
                "apiserver_request_duration_seconds_sum{{{labels}}} 0.3"
            )]
        );
        assert_eq!(
            REQUEST_DURATION_BUCKETS,
            [
                0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0,
                6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0
            ]
        );
    }

    #[test]
    fn verbs_are_cleaned() {
        assert_eq!(clean_verb("list"), "LIST");
        assert_eq!(clean_verb("WATCHLIST"), "WATCH");
        assert_eq!(clean_verb("watch"), "WATCH");
        assert_eq!(clean_verb("apply"), "APPLY");
        assert_eq!(clean_verb("deletecollection"), "DELETECOLLECTION");
        assert_eq!(clean_verb("BREW"), "other");
        assert_eq!(clean_verb(""), "other");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics.apiserver.observe(
            "GET",
            "",
            "v1",
            "we\"ird\\na\nme",
            "",
            "cluster",
            "apiserver",
            404,
            false,
            0.001,
        );
        let text = metrics.encode();
        assert!(text.contains(r#"resource="we\"ird\\na\nme""#), "{text}");
        assert!(!text.contains("a\nme"), "{text}");
    }

    #[test]
    fn terminations_and_long_running_requests_share_the_target_labels() {
        let metrics = Metrics::new();
        let target = ("apps", "v1", "deployments", "");
        metrics
            .apiserver
            .terminated("POST", target, "namespace", 429);
        let _watch = metrics.apiserver.long_running("WATCH", target, "cluster");
        let text = metrics.encode();
        assert!(
            text.contains("apiserver_request_terminations_total{code=\"429\",component=\"apiserver\",group=\"apps\",resource=\"deployments\",scope=\"namespace\",subresource=\"\",verb=\"POST\",version=\"v1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_longrunning_requests{component=\"apiserver\",group=\"apps\",resource=\"deployments\",scope=\"cluster\",subresource=\"\",verb=\"WATCH\",version=\"v1\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn registered_families_appear_once_with_prefix_free_names() {
        let metrics = Metrics::new();
        let evictions: Counter = Counter::default();
        metrics.register(
            Descriptor::new("scheduler_evictions", "Pods evicted"),
            evictions.clone(),
        );
        let queue: Gauge = Gauge::default();
        metrics.register(
            Descriptor::new("workqueue_depth", "Depth of the queue")
                .stability(StabilityLevel::Stable),
            queue.clone(),
        );
        evictions.inc_by(3);
        queue.set(5);
        let text = metrics.encode();
        assert!(text.contains("# HELP scheduler_evictions_total [ALPHA] Pods evicted.\n# TYPE scheduler_evictions_total counter\nscheduler_evictions_total 3\n"), "{text}");
        assert!(
            text.contains("# HELP workqueue_depth [STABLE] Depth of the queue.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE workqueue_depth gauge\nworkqueue_depth 5\n"),
            "{text}"
        );
        let om = metrics.encode_openmetrics();
        assert!(
            om.contains("# TYPE scheduler_evictions counter\nscheduler_evictions_total 3\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn empty_families_are_not_exposed() {
        let text = Metrics::new().encode();
        assert!(!text.contains("apiserver_request"), "{text}");
    }

    #[test]
    fn process_metrics_are_exposed() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            let lines = sample_lines(&text, name);
            assert_eq!(lines.len(), 1, "{name} in {text}");
            lines[0].rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge\n"),
            "{text}"
        );
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "start {start} now {now}"
        );
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
    }

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (kelp (my) srv) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 12 0 987654 123456789 3000 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 150,
                stime: 25,
                starttime: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tkelp\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(10240 * 1024));
        assert_eq!(parse_status_kb(status, "VmSize:"), Some(204800 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn openmetrics_conversion() {
        let om = "# HELP a_counter Help.\n# TYPE a_counter counter\na_counter_total 1\n\
                  # HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n\
                  # HELP odd Odd.\n# TYPE odd unknown\nodd 2\n\
                  # HELP t_seconds Time.\n# TYPE t_seconds gauge\n# UNIT t_seconds seconds\nt_seconds 3.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(om),
            "# HELP a_counter_total Help.\n# TYPE a_counter_total counter\na_counter_total 1\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n\
             # HELP odd Odd.\n# TYPE odd untyped\nodd 2\n\
             # HELP t_seconds Time.\n# TYPE t_seconds gauge\nt_seconds 3.5\n"
        );
    }

    #[test]
    fn metrics_are_shared_across_threads() {
        let metrics = Metrics::new();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        m.apiserver.observe(
                            "LIST",
                            "",
                            "v1",
                            "pods",
                            "",
                            "cluster",
                            "apiserver",
                            200,
                            false,
                            0.01,
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let text = metrics.encode();
        let line = sample_lines(&text, "apiserver_request_total")[0];
        assert!(line.ends_with(" 400"), "{line}");
    }
}
