//! klog text and component-base JSON log lines, written by a `tracing` layer.
//!
//! See the parent module for the verbosity mapping and the value rules.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Local, Timelike as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::{LookupSpan, Scope};

use crate::gofmt;

/// Layout of the log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// klog's text header and `key=value` pairs (`--log-format=text`).
    #[default]
    Text,
    /// component-base's JSON object per line (`--log-format=json`).
    Json,
}

/// Logging settings taken from the command line.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// Line layout (`--log-format`).
    pub format: LogFormat,
    /// Highest info verbosity printed (`-v`).
    pub verbosity: u8,
    /// File the lines are appended to instead of stderr (`--log-file`).
    pub file: Option<PathBuf>,
    /// Per-file verbosities (`--vmodule`).
    pub vmodule: VModule,
    /// `--log-file-max-size` in bytes: the file is rotated past it (0: never).
    pub file_max_bytes: u64,
}

/// `--log-file`, rotated by size: a line that would take the file past
/// `max_bytes` first renames it to `<file>.1` (replacing an older one) and
/// starts a new one, so at most about twice the limit is kept and nothing
/// recent is lost (klog truncates instead).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    /// The open file and its size.
    file: std::sync::Mutex<(std::fs::File, u64)>,
}

impl RotatingFile {
    /// Opens `path` for appending.
    pub fn open(path: &std::path::Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = Self::append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            file: std::sync::Mutex::new((file, size)),
        })
    }

    fn append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }
}

impl std::io::Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut open = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (file, size) = &mut *open;
        if self.max_bytes > 0 && *size > 0 && *size + buf.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            *file = RotatingFile::append(&self.path)?;
            *size = 0;
        }
        file.write_all(buf)?;
        *size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// klog's `--vmodule=pattern=N,…`: events from source files whose name
/// (without `.rs`; the whole path when the pattern has a `/`) matches a
/// pattern (`*` and `?` wildcards) are shown up to verbosity N instead of
/// `-v`'s. The first matching pattern wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VModule(Vec<(String, u8)>);

impl VModule {
    /// Parses `pattern=N,…` (empty: none), refusing what klog refuses.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (pattern, level) = item
                .split_once('=')
                .ok_or_else(|| format!("expect comma-separated list of pattern=N: {item:?}"))?;
            let level = level
                .parse::<u8>()
                .map_err(|_| format!("invalid verbosity {level:?} in --vmodule {item:?}"))?;
            if pattern.is_empty() {
                return Err(format!("empty pattern in --vmodule {item:?}"));
            }
            rules.push((pattern.to_string(), level));
        }
        Ok(Self(rules))
    }

    /// The verbosity for events of `file`, if a pattern names it.
    fn level_for(&self, file: Option<&str>) -> Option<u8> {
        let file = file?;
        let path = file.strip_suffix(".rs").unwrap_or(file);
        let base = path.rsplit('/').next().unwrap_or(path);
        self.0
            .iter()
            .find(|(pattern, _)| {
                let subject = if pattern.contains('/') { path } else { base };
                glob_match(pattern.as_bytes(), subject.as_bytes())
            })
            .map(|(_, level)| *level)
    }

    fn highest(&self) -> u8 {
        self.0.iter().map(|(_, l)| *l).max().unwrap_or(0)
    }
}

/// `*` (any run) and `?` (one character) matching, as Go's filepath.Match
/// for the patterns klog takes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Whether stderr is systemd's journal: `JOURNAL_STREAM` names its device
/// and inode (systemd sets it for a unit's stdout/stderr).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| m.dev().to_string() == dev && m.ino().to_string() == ino)
}

/// The `--log-file` in force, set by [`init_logging`].
static LOG_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where this process's own log lines go, when that is a file: the
/// `--log-file`, else stderr when it is redirected to a regular file (not
/// the journal or a terminal). The kubelet's node log query reads it.
pub fn own_log_file() -> Option<PathBuf> {
    if let Some(file) = LOG_FILE.get() {
        return Some(file.clone());
    }
    let stderr = std::fs::read_link("/proc/self/fd/2").ok()?;
    std::fs::metadata(&stderr)
        .is_ok_and(|m| m.is_file())
        .then_some(stderr)
}

/// Installs the global subscriber; call once from main. With `traces`, the
/// trace spans (target [`super::traces::TARGET`]) are exported too.
///
/// Fails when the log file can't be opened for appending or a global
/// subscriber is already installed.
pub fn init_logging(cfg: &LogConfig, traces: Option<&SdkTracerProvider>) -> anyhow::Result<()> {
    match &cfg.file {
        Some(path) => {
            let file = std::sync::Arc::new(
                RotatingFile::open(path, cfg.file_max_bytes)
                    .with_context(|| format!("opening log file {}", path.display()))?,
            );
            let _ = LOG_FILE.set(path.clone());
            install(
                LogLayer::new(cfg.format, cfg.verbosity, file).with_vmodule(cfg.vmodule.clone()),
                traces,
            )
        }
        None => install(
            LogLayer::new(cfg.format, cfg.verbosity, std::io::stderr)
                .with_vmodule(cfg.vmodule.clone())
                .for_journal(stderr_is_journal()),
            traces,
        ),
    }
}

/// A [`Layer`] writing each enabled event as one klog text or JSON line.
///
/// Each line goes to the writer in a single `write_all`, so lines from
/// concurrent threads don't interleave on stderr or an `O_APPEND` file.
/// Use it on a [`tracing_subscriber::Registry`], which stores the span fields.
#[derive(Debug)]
pub struct LogLayer<W> {
    format: LogFormat,
    verbosity: u8,
    vmodule: VModule,
    writer: W,
    /// First segment of this module's path: the crate whose debug events get
    /// the lower verbosities.
    own_crate: &'static str,
    pid: u32,
    /// The lines go to systemd's journal, which stamps time and pid itself.
    journal: bool,
}

impl<W> LogLayer<W>
where
    W: for<'a> MakeWriter<'a> + 'static,
{
    /// A layer printing in `format` the info events up to `verbosity` and all
    /// warnings and errors to `writer`.
    pub fn new(format: LogFormat, verbosity: u8, writer: W) -> Self {
        Self {
            format,
            verbosity,
            vmodule: VModule::default(),
            writer,
            own_crate: crate_of(module_path!()),
            pid: std::process::id(),
            journal: false,
        }
    }

    /// The same layer writing to the journal: text lines without klog's
    /// time and pid (journald records both), so `journalctl` shows each
    /// once.
    pub fn for_journal(mut self, journal: bool) -> Self {
        self.journal = journal;
        self
    }

    /// The same layer with per-file verbosities.
    pub fn with_vmodule(mut self, vmodule: VModule) -> Self {
        self.vmodule = vmodule;
        self
    }

    /// `-v`, or the `--vmodule` level of the event's source file.
    fn verbosity_for(&self, metadata: &Metadata<'_>) -> u8 {
        self.vmodule
            .level_for(metadata.file())
            .unwrap_or(self.verbosity)
    }
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        callsite_enabled(metadata, self.verbosity_for(metadata), self.own_crate)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if self.verbosity.max(self.vmodule.highest()) == 0 {
            LevelFilter::INFO
        } else {
            LevelFilter::TRACE
        })
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // A trace span's attributes are for the trace, not every log line.
        if attrs.metadata().target() == super::traces::TARGET {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = FieldCollector::new(false);
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.kvs));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.metadata().target() == super::traces::TARGET {
            return;
        }
        let mut fields = FieldCollector::new(false);
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(existing) => {
                for (key, value) in fields.kvs {
                    match existing.0.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => existing.0.push((key, value)),
                    }
                }
            }
            None => extensions.insert(SpanFields(fields.kvs)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut fields = FieldCollector::new(true);
        event.record(&mut fields);
        let level = *metadata.level();
        let v = if is_warn_or_error(level) {
            0
        } else {
            fields
                .v
                .unwrap_or_else(|| default_verbosity(metadata, self.own_crate))
        };
        if !is_warn_or_error(level) && v > u64::from(self.verbosity_for(metadata)) {
            return;
        }
        let span_kvs = span_fields(ctx.event_scope(event), &fields.kvs);
        let entry = Entry {
            level,
            v,
            file: metadata.file(),
            line: metadata.line(),
            message: fields.message.as_deref().unwrap_or(""),
            kvs: &fields.kvs,
            span_kvs: &span_kvs,
        };
        let line = match self.format {
            LogFormat::Text if self.journal => format_text_stamped(&entry, None),
            LogFormat::Text => format_text(&entry, &Local::now(), self.pid),
            LogFormat::Json => format_json(&entry, unix_seconds(SystemTime::now())),
        };
        // A failed write has nowhere to be reported: drop the line.
        let _ = self
            .writer
            .make_writer_for(metadata)
            .write_all(line.as_bytes());
    }
}

fn install<W>(layer: LogLayer<W>, traces: Option<&SdkTracerProvider>) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(traces.map(super::traces::layer));
    tracing::subscriber::set_global_default(subscriber)
        .context("installing the global log subscriber")
}

/// One event, ready to be formatted.
struct Entry<'a> {
    level: Level,
    v: u64,
    file: Option<&'a str>,
    line: Option<u32>,
    message: &'a str,
    kvs: &'a [(&'static str, Value)],
    span_kvs: &'a [(&'static str, Value)],
}

impl Entry<'_> {
    /// The `err` key/value of an error event, which both layouts move.
    fn hoisted_err(&self) -> Option<&Value> {
        if self.level != Level::ERROR {
            return None;
        }
        self.kvs.iter().find(|(k, _)| *k == ERR_KEY).map(|(_, v)| v)
    }

    /// The key/values in print order, without a hoisted `err`.
    fn pairs(&self) -> impl Iterator<Item = &(&'static str, Value)> {
        let hoist = self.level == Level::ERROR;
        self.kvs
            .iter()
            .filter(move |(k, _)| !(hoist && *k == ERR_KEY))
            .chain(self.span_kvs.iter())
    }
}

const ERR_KEY: &str = "err";

/// A recorded field value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// Strings, `Display`/`Debug` output and errors: quoted in text.
    Str(String),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
}

/// The fields of a span, kept in its extensions.
struct SpanFields(Vec<(&'static str, Value)>);

/// Collects an event's or a span's fields; for events it takes out the
/// message and the `v` override.
struct FieldCollector {
    event: bool,
    message: Option<String>,
    v: Option<u64>,
    kvs: Vec<(&'static str, Value)>,
}

impl FieldCollector {
    fn new(event: bool) -> Self {
        Self {
            event,
            message: None,
            v: None,
            kvs: Vec::new(),
        }
    }

    fn push(&mut self, field: &Field, value: Value) {
        self.kvs.push((field.name(), value));
    }
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if self.event && field.name() == "message" {
            self.message = Some(text);
        } else {
            self.push(field, Value::Str(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.event && field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.push(field, Value::Str(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.event && field.name() == "v" {
            self.v = Some(u64::try_from(value).unwrap_or(0));
        } else {
            self.push(field, Value::I64(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.event && field.name() == "v" {
            self.v = Some(value);
        } else {
            self.push(field, Value::U64(value));
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, Value::I128(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, Value::U128(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(err) = source {
            let _ = write!(text, ": {err}");
            source = err.source();
        }
        self.push(field, Value::Str(text));
    }
}

/// Whether a call site can produce output at `verbosity`. Info and above
/// always can; debug and trace ones of this crate whenever `-v` is above 0
/// (their `v` override is only known per event); other crates' only when
/// their fixed level is within `verbosity`.
/// Dependencies that log every request at INFO (hickory's DNS server logs
/// each query and answer): their INFO lines count as klog verbosity 4.
const CHATTY_AT_INFO: &[&str] = &[
    "hickory_server",
    "hickory_resolver",
    "hickory_proto",
    "hickory_net",
];

fn callsite_enabled(metadata: &Metadata<'_>, verbosity: u8, own_crate: &str) -> bool {
    let level = *metadata.level();
    if level == Level::INFO
        && CHATTY_AT_INFO.contains(&crate_of(
            metadata.module_path().unwrap_or(metadata.target()),
        ))
    {
        return verbosity >= 4;
    }
    if is_warn_or_error(level) || level == Level::INFO {
        return true;
    }
    if is_own(metadata, own_crate) {
        verbosity > 0
    } else {
        default_verbosity(metadata, own_crate) <= u64::from(verbosity)
    }
}

/// The klog verbosity of an event without a `v` field.
fn default_verbosity(metadata: &Metadata<'_>, own_crate: &str) -> u64 {
    let own = is_own(metadata, own_crate);
    match *metadata.level() {
        Level::DEBUG if own => 4,
        Level::DEBUG => 8,
        Level::TRACE if own => 6,
        Level::TRACE => 10,
        _ => 0,
    }
}

/// Whether an event comes from this workspace rather than a dependency: its
/// crate is this one, or its source path is relative (cargo compiles
/// workspace members, examples and tests from relative paths and registry
/// or git dependencies from absolute ones).
fn is_own(metadata: &Metadata<'_>, own_crate: &str) -> bool {
    crate_of(metadata.module_path().unwrap_or(metadata.target())) == own_crate
        || metadata.file().is_some_and(|f| !f.starts_with('/'))
}

fn is_warn_or_error(level: Level) -> bool {
    level == Level::WARN || level == Level::ERROR
}

fn crate_of(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

/// The fields of the spans around an event, outermost span first, skipping
/// keys the event or an inner span already has.
fn span_fields<S>(
    scope: Option<Scope<'_, S>>,
    event_kvs: &[(&'static str, Value)],
) -> Vec<(&'static str, Value)>
where
    S: for<'a> LookupSpan<'a>,
{
    let Some(scope) = scope else {
        return Vec::new();
    };
    let mut seen: Vec<&'static str> = event_kvs.iter().map(|(k, _)| *k).collect();
    let mut per_span = Vec::new();
    for span in scope {
        let extensions = span.extensions();
        let Some(SpanFields(fields)) = extensions.get::<SpanFields>() else {
            continue;
        };
        let kept: Vec<_> = fields
            .iter()
            .filter(|(k, _)| !seen.contains(k))
            .cloned()
            .collect();
        seen.extend(kept.iter().map(|(k, _)| *k));
        per_span.push(kept);
    }
    per_span.into_iter().rev().flatten().collect()
}

/// klog's text line: `Lmmdd hh:mm:ss.uuuuuu pid file:line] "msg" k=v…`.
fn format_text(entry: &Entry<'_>, now: &DateTime<Local>, pid: u32) -> String {
    format_text_stamped(entry, Some((now, pid)))
}

/// klog's text line, with the time and pid in the header (`stamp`) or
/// without them (`I server.rs:79] …`) when the journal records both.
fn format_text_stamped(entry: &Entry<'_>, stamp: Option<(&DateTime<Local>, u32)>) -> String {
    let severity = match entry.level {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        _ => 'I',
    };
    let (file, line) = match entry.file {
        Some(path) => (basename(path), entry.line.unwrap_or(0)),
        None => ("???", 1),
    };
    let mut out = String::with_capacity(128);
    match stamp {
        Some((now, pid)) => {
            // nanosecond() exceeds 999_999_999 only inside a leap second.
            let micros = now.nanosecond().min(999_999_999) / 1000;
            let _ = write!(
                out,
                "{severity}{:02}{:02} {:02}:{:02}:{:02}.{micros:06} {pid:>7} {file}:{line}] ",
                now.month(),
                now.day(),
                now.hour(),
                now.minute(),
                now.second(),
            );
        }
        None => {
            let _ = write!(out, "{severity} {file}:{line}] ");
        }
    }
    gofmt::quote_into(entry.message, &mut out);
    if let Some(err) = entry.hoisted_err() {
        write_text_pair(ERR_KEY, err, &mut out);
    }
    for (key, value) in entry.pairs() {
        write_text_pair(key, value, &mut out);
    }
    out.push('\n');
    out
}

/// component-base's JSON line: ts, caller, msg, v, the keys, and for errors
/// `err` last instead of `v`. `ts` is float Unix seconds, as the Kubernetes
/// "System Logs" documentation shows it (and as kelp's contract asks), not the
/// milliseconds newer component-base releases write.
fn format_json(entry: &Entry<'_>, ts_seconds: f64) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{{\"ts\":{ts_seconds},\"caller\":");
    let caller = match entry.file {
        Some(path) => format!("{}:{}", short_caller(path), entry.line.unwrap_or(0)),
        None => "???:1".to_owned(),
    };
    json_string(&caller, &mut out);
    out.push_str(",\"msg\":");
    json_string(entry.message, &mut out);
    if entry.level != Level::ERROR {
        let _ = write!(out, ",\"v\":{}", entry.v);
    }
    for (key, value) in entry.pairs() {
        write_json_pair(key, value, &mut out);
    }
    if let Some(err) = entry.hoisted_err() {
        write_json_pair(ERR_KEY, err, &mut out);
    }
    out.push_str("}\n");
    out
}

fn unix_seconds(now: SystemTime) -> f64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// klog's `key=value`, with the leading space.
fn write_text_pair(key: &str, value: &Value, out: &mut String) {
    out.push(' ');
    out.push_str(key);
    match value {
        Value::Str(s) if s.contains('\n') => write_multiline(s, out),
        Value::Str(s) => {
            out.push('=');
            gofmt::quote_into(s, out);
        }
        Value::I64(n) => {
            let _ = write!(out, "={n}");
        }
        Value::U64(n) => {
            let _ = write!(out, "={n}");
        }
        Value::I128(n) => {
            let _ = write!(out, "={n}");
        }
        Value::U128(n) => {
            let _ = write!(out, "={n}");
        }
        Value::F64(f) => {
            out.push('=');
            gofmt::float_into(*f, out);
        }
        Value::Bool(b) => {
            let _ = write!(out, "={b}");
        }
    }
}

/// klog's block for values with line breaks: `=<`, each line tab-indented,
/// then ` >` on a line of its own.
fn write_multiline(s: &str, out: &mut String) {
    out.push_str("=<\n");
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        out.push('\t');
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(" >");
}

/// `,"key":value` with zap's encodings.
fn write_json_pair(key: &str, value: &Value, out: &mut String) {
    out.push(',');
    json_string(key, out);
    out.push(':');
    match value {
        Value::Str(s) => json_string(s, out),
        Value::I64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::I128(n) => {
            let _ = write!(out, "{n}");
        }
        Value::U128(n) => {
            let _ = write!(out, "{n}");
        }
        Value::F64(f) if f.is_nan() => out.push_str("\"NaN\""),
        Value::F64(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" })
        }
        Value::F64(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
    }
}

/// A JSON string literal, escaped as zap does: `"`, `\`, and control
/// characters (`\n`, `\r`, `\t`, else `\u00XX`).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// zap's short caller: the file with its parent directory.
fn short_caller(path: &str) -> &str {
    match path.rmatch_indices(['/', '\\']).nth(1) {
        Some((i, _)) => &path[i + 1..],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use regex::Regex;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::Registry;

    /// A shared in-memory log sink.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
        fn lines(&self) -> Vec<String> {
            self.text().lines().map(str::to_owned).collect()
        }
    }

    /// Runs `f` with a subscriber logging in `format` at `verbosity` and
    /// returns what it wrote.
    fn capture(format: LogFormat, verbosity: u8, f: impl FnOnce()) -> Buffer {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let layer = LogLayer::new(format, verbosity, move || sink.clone());
        tracing::subscriber::with_default(Registry::default().with(layer), f);
        buffer
    }

    fn entry<'a>(level: Level, message: &'a str, kvs: &'a [(&'static str, Value)]) -> Entry<'a> {
        Entry {
            level,
            v: 0,
            file: Some("src/apiserver/server.rs"),
            line: Some(79),
            message,
            kvs,
            span_kvs: &[],
        }
    }

    fn text_of(kvs: &[(&'static str, Value)]) -> String {
        let mut out = String::new();
        for (k, v) in kvs {
            write_text_pair(k, v, &mut out);
        }
        out
    }

    fn fixed_time() -> DateTime<Local> {
        let utc = chrono::Utc
            .with_ymd_and_hms(2024, 10, 25, 0, 15, 15)
            .unwrap()
            .with_nanosecond(525_108_000)
            .unwrap();
        utc.with_timezone(&Local)
    }

    #[test]
    fn text_header_matches_klog_layout() {
        let now = fixed_time();
        let kvs = [("key", Value::Str("value".into())), ("key2", Value::I64(3))];
        let line = format_text(&entry(Level::INFO, "msg", &kvs), &now, 1);
        let expected = format!(
            "I{} {}.525108       1 server.rs:79] \"msg\" key=\"value\" key2=3\n",
            now.format("%m%d"),
            now.format("%H:%M:%S")
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn text_severity_letters_and_pid_padding() {
        let now = fixed_time();
        let w = format_text(&entry(Level::WARN, "w", &[]), &now, 1234567);
        assert!(w.starts_with('W'), "{w}");
        assert!(w.contains(" 1234567 server.rs:79] "), "{w}");
        let e = format_text(&entry(Level::ERROR, "e", &[]), &now, 42);
        assert!(e.starts_with('E'), "{e}");
        assert!(e.contains(".525108      42 server.rs:79] \"e\"\n"), "{e}");
        for level in [Level::INFO, Level::DEBUG, Level::TRACE] {
            assert!(format_text(&entry(level, "i", &[]), &now, 1).starts_with('I'));
        }
    }

    #[test]
    fn text_unknown_caller_is_question_marks() {
        let mut e = entry(Level::INFO, "m", &[]);
        e.file = None;
        e.line = None;
        let line = format_text(&e, &fixed_time(), 1);
        assert!(line.contains(" ???:1] \"m\""), "{line}");
    }

    #[test]
    fn text_error_puts_err_right_after_message() {
        let kvs = [("count", Value::I64(1)), ("err", Value::Str("boom".into()))];
        let line = format_text(&entry(Level::ERROR, "failed", &kvs), &fixed_time(), 1);
        assert!(
            line.ends_with("] \"failed\" err=\"boom\" count=1\n"),
            "{line}"
        );
        // On other levels `err` keeps its place.
        let line = format_text(&entry(Level::WARN, "failed", &kvs), &fixed_time(), 1);
        assert!(
            line.ends_with("] \"failed\" count=1 err=\"boom\"\n"),
            "{line}"
        );
    }

    #[test]
    fn text_values_quote_strings_only() {
        let kvs = [
            ("s", Value::Str("a b".into())),
            ("i", Value::I64(-3)),
            ("u", Value::U64(7)),
            ("big", Value::U128(u128::MAX)),
            ("f", Value::F64(0.25)),
            ("ok", Value::Bool(true)),
            ("empty", Value::Str(String::new())),
        ];
        assert_eq!(
            text_of(&kvs),
            " s=\"a b\" i=-3 u=7 big=340282366920938463463374607431768211455 f=0.25 ok=true empty=\"\""
        );
    }

    #[test]
    fn text_multiline_values_use_klog_block() {
        let kvs = [("body", Value::Str("line 1\nline 2".into()))];
        assert_eq!(text_of(&kvs), " body=<\n\tline 1\n\tline 2\n >");
        let kvs = [("body", Value::Str("only\n".into()))];
        assert_eq!(text_of(&kvs), " body=<\n\tonly\n >");
        // The message itself is always quoted on one line.
        let line = format_text(&entry(Level::INFO, "a\nb", &[]), &fixed_time(), 1);
        assert!(line.ends_with("] \"a\\nb\"\n"), "{line}");
    }

    #[test]
    fn json_layout_matches_component_base() {
        let kvs = [("key", Value::Str("value".into())), ("n", Value::U64(3))];
        let mut e = entry(Level::INFO, "msg", &kvs);
        e.v = 2;
        assert_eq!(
            format_json(&e, 1700000000.123456),
            "{\"ts\":1700000000.123456,\"caller\":\"apiserver/server.rs:79\",\"msg\":\"msg\",\"v\":2,\"key\":\"value\",\"n\":3}\n"
        );
    }

    #[test]
    fn json_error_has_err_last_and_no_v() {
        let kvs = [("err", Value::Str("fail".into())), ("count", Value::I64(1))];
        let line = format_json(&entry(Level::ERROR, "test", &kvs), 1.5);
        assert_eq!(
            line,
            "{\"ts\":1.5,\"caller\":\"apiserver/server.rs:79\",\"msg\":\"test\",\"count\":1,\"err\":\"fail\"}\n"
        );
        let warn = format_json(&entry(Level::WARN, "w", &[]), 1.5);
        assert!(warn.contains("\"msg\":\"w\",\"v\":0}"), "{warn}");
    }

    #[test]
    fn json_values_and_escapes() {
        let kvs = [
            ("s", Value::Str("q\"b\\n\nt\t\x01é".into())),
            ("f", Value::F64(0.5)),
            ("nan", Value::F64(f64::NAN)),
            ("inf", Value::F64(f64::NEG_INFINITY)),
            ("b", Value::Bool(false)),
            ("i", Value::I128(-5)),
        ];
        let line = format_json(&entry(Level::INFO, "m", &kvs), 2.0);
        assert!(
            line.ends_with(
                ",\"s\":\"q\\\"b\\\\n\\nt\\t\\u0001é\",\"f\":0.5,\"nan\":\"NaN\",\"inf\":\"-Inf\",\"b\":false,\"i\":-5}\n"
            ),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(parsed["s"], "q\"b\\n\nt\t\u{1}é");
    }

    #[test]
    fn callers_are_trimmed() {
        assert_eq!(basename("src/apiserver/server.rs"), "server.rs");
        assert_eq!(basename("main.rs"), "main.rs");
        assert_eq!(
            short_caller("src/apiserver/server.rs"),
            "apiserver/server.rs"
        );
        assert_eq!(short_caller("src/main.rs"), "src/main.rs");
        assert_eq!(short_caller("main.rs"), "main.rs");
        assert_eq!(
            short_caller("/root/.cargo/registry/src/h2-0.4.0/src/proto/streams.rs"),
            "proto/streams.rs"
        );
    }

    #[test]
    fn unix_seconds_has_microseconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        assert!((unix_seconds(t) - 1_700_000_000.123_456).abs() < 1e-6);
    }

    #[test]
    fn end_to_end_text_line() {
        let buf = capture(LogFormat::Text, 0, || {
            tracing::info!(key = "value", key2 = 3, "msg");
        });
        let re = Regex::new(
            r#"^I\d{4} \d{2}:\d{2}:\d{2}\.\d{6} +(\d+) logging\.rs:\d+\] "msg" key="value" key2=3$"#,
        )
        .unwrap();
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let caps = re
            .captures(&lines[0])
            .unwrap_or_else(|| panic!("{}", lines[0]));
        assert_eq!(caps[1].parse::<u32>().unwrap(), std::process::id());
        // The pid column is 7 wide (wider pids push it out, as in klog).
        let pid_col = &lines[0][22..29];
        assert_eq!(pid_col.trim_start(), std::process::id().to_string());
    }

    #[test]
    fn end_to_end_json_line() {
        let buf = capture(LogFormat::Json, 0, || {
            tracing::info!(key = "value", ok = true, "msg");
        });
        let re = Regex::new(
            r#"^\{"ts":\d+(\.\d+)?,"caller":"telemetry/logging\.rs:\d+","msg":"msg","v":0,"key":"value","ok":true\}$"#,
        )
        .unwrap();
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(re.is_match(&lines[0]), "{}", lines[0]);
        let parsed: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let ts = parsed["ts"].as_f64().unwrap();
        assert!(ts > 1.6e9 && ts < 1e11, "ts is in seconds: {ts}");
    }

    #[test]
    fn verbosity_filters_info_debug_trace() {
        let run = |verbosity| {
            capture(LogFormat::Text, verbosity, || {
                tracing::info!("info");
                tracing::info!(v = 3, "info-v3");
                tracing::debug!("debug");
                tracing::debug!(v = 2, "debug-v2");
                tracing::trace!("trace");
                tracing::warn!(v = 9, "warn");
                tracing::error!("error");
            })
            .lines()
            .iter()
            .map(|l| l.rsplit('"').nth(1).unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
        };
        assert_eq!(run(0), ["info", "warn", "error"]);
        assert_eq!(run(2), ["info", "debug-v2", "warn", "error"]);
        assert_eq!(run(3), ["info", "info-v3", "debug-v2", "warn", "error"]);
        assert_eq!(
            run(4),
            ["info", "info-v3", "debug", "debug-v2", "warn", "error"]
        );
        assert_eq!(
            run(6),
            [
                "info", "info-v3", "debug", "debug-v2", "trace", "warn", "error"
            ]
        );
    }

    #[test]
    fn json_v_carries_the_level() {
        let buf = capture(LogFormat::Json, 9, || {
            tracing::info!("a");
            tracing::debug!("b");
            tracing::trace!("c");
            tracing::debug!(v = 2, "d");
            tracing::warn!("e");
            tracing::error!(err = "x", "f");
        });
        let v: Vec<Option<u64>> = buf
            .lines()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["v"].as_u64())
            .collect();
        assert_eq!(v, [Some(0), Some(4), Some(6), Some(2), Some(0), None]);
        // The v override is not a key of its own.
        assert_eq!(buf.text().matches("\"v\"").count(), 5);
    }

    #[test]
    fn span_fields_follow_event_fields() {
        let buf = capture(LogFormat::Text, 0, || {
            let outer = tracing::info_span!("conn", peer = "10.0.0.1", shared = "outer");
            let _o = outer.enter();
            let inner = tracing::info_span!("request", request_id = 7, shared = "inner");
            let _i = inner.enter();
            tracing::info!(verb = "GET", request_id = 8, "handled");
        });
        let line = &buf.lines()[0];
        assert!(
            line.ends_with(
                "] \"handled\" verb=\"GET\" request_id=8 peer=\"10.0.0.1\" shared=\"inner\""
            ),
            "{line}"
        );
    }

    #[test]
    fn span_fields_recorded_later_show_up() {
        let buf = capture(LogFormat::Json, 0, || {
            let span = tracing::info_span!("req", user = tracing::field::Empty, code = 0);
            let _g = span.enter();
            span.record("user", "alice");
            span.record("code", 201);
            tracing::info!("done");
        });
        let line = &buf.lines()[0];
        assert!(
            line.ends_with("\"msg\":\"done\",\"v\":0,\"code\":201,\"user\":\"alice\"}"),
            "{line}"
        );
    }

    #[test]
    fn display_debug_and_error_values_are_quoted() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("disk full")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("writing object")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let buf = capture(LogFormat::Text, 0, || {
            let e = Outer(Inner);
            tracing::error!(
                pod = %"default/nginx",
                list = ?[1, 2],
                err = &e as &dyn std::error::Error,
                "Put failed"
            );
        });
        let line = &buf.lines()[0];
        assert!(
            line.ends_with(
                "] \"Put failed\" err=\"writing object: disk full\" pod=\"default/nginx\" list=\"[1, 2]\""
            ),
            "{line}"
        );
    }

    #[test]
    fn message_with_format_args_and_no_message() {
        let buf = capture(LogFormat::Text, 0, || {
            tracing::info!("took {}ms for {:?}", 12, "x");
            tracing::info!(k = 1);
        });
        let lines = buf.lines();
        assert!(
            lines[0].ends_with("] \"took 12ms for \\\"x\\\"\""),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("] \"\" k=1"), "{}", lines[1]);
    }

    #[test]
    fn foreign_crates_debug_needs_higher_verbosity() {
        let meta = |level, module, file| {
            // Leaked once per test call; tests only.
            let fields: &'static [&'static str] = &[];
            let callsite: &'static DummyCallsite = Box::leak(Box::new(DummyCallsite));
            let id = tracing::callsite::Identifier(callsite);
            Box::leak(Box::new(Metadata::new(
                "event",
                module,
                level,
                Some(file),
                Some(1),
                Some(module),
                tracing::field::FieldSet::new(fields, id),
                tracing::metadata::Kind::EVENT,
            )))
        };
        let own = "telemetry";
        let h2_file = "/root/.cargo/registry/src/h2-0.4.0/src/proto/streams.rs";
        let h2_debug = meta(Level::DEBUG, "h2::proto", h2_file);
        let h2_trace = meta(Level::TRACE, "h2::proto", h2_file);
        let h2_info = meta(Level::INFO, "h2::proto", h2_file);
        let our_debug = meta(Level::DEBUG, "telemetry::x", "src/x.rs");
        let test_debug = meta(Level::DEBUG, "e2e", "tests/e2e.rs");
        assert_eq!(default_verbosity(test_debug, own), 4);
        assert_eq!(default_verbosity(h2_debug, own), 8);
        assert_eq!(default_verbosity(h2_trace, own), 10);
        assert_eq!(default_verbosity(h2_info, own), 0);
        assert_eq!(default_verbosity(our_debug, own), 4);
        assert!(!callsite_enabled(h2_debug, 7, own));
        assert!(callsite_enabled(h2_debug, 8, own));
        assert!(!callsite_enabled(h2_trace, 9, own));
        assert!(callsite_enabled(h2_info, 0, own));
        assert!(!callsite_enabled(our_debug, 0, own));
        assert!(callsite_enabled(our_debug, 1, own));
    }

    struct DummyCallsite;
    impl tracing::callsite::Callsite for DummyCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }

    #[test]
    fn log_file_is_appended() {
        let dir = std::env::temp_dir().join(format!("kelp-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kelp.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let layer = LogLayer::new(LogFormat::Text, 0, file);
        tracing::subscriber::with_default(Registry::default().with(layer), || {
            tracing::warn!(n = 1, "to file");
        });
        let content = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines: Vec<_> = content.lines().collect();
        assert_eq!(lines[0], "earlier");
        assert!(
            lines[1].starts_with('W') && lines[1].ends_with("] \"to file\" n=1"),
            "{content}"
        );
    }

    #[test]
    fn journal_lines_leave_time_and_pid_to_the_journal() {
        let line = format_text_stamped(&entry(Level::WARN, "w", &[]), None);
        assert_eq!(line, "W server.rs:79] \"w\"\n");
    }

    #[test]
    fn the_log_file_rotates_past_its_size() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kelp.log");
        let file = RotatingFile::open(&path, 10).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n"] {
            (&file).write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cccc\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("kelp.log.1")).unwrap(),
            "aaaa\nbbbb\n"
        );
    }

    #[test]
    fn vmodule_raises_one_files_verbosity() {
        let vmodule = VModule::parse("logg*=4, other=9").unwrap();
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let layer = LogLayer::new(LogFormat::Text, 0, move || sink.clone()).with_vmodule(vmodule);
        tracing::subscriber::with_default(Registry::default().with(layer), || {
            tracing::debug!("shown at 4");
            tracing::trace!("not at 6");
        });
        let text = buffer.text();
        assert!(text.contains("\"shown at 4\""), "{text}");
        assert!(!text.contains("not at 6"), "{text}");
        assert_eq!(VModule::parse("").unwrap(), VModule::default());
        assert!(VModule::parse("x").is_err());
        assert!(VModule::parse("x=high").is_err());
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"a?c", b"abcd"));
    }

    #[test]
    fn init_logging_reports_unopenable_file() {
        let cfg = LogConfig {
            format: LogFormat::Json,
            verbosity: 0,
            file: Some("/nonexistent-dir/kelp.log".into()),
            vmodule: VModule::default(),
            file_max_bytes: 0,
        };
        let err = init_logging(&cfg, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-dir/kelp.log"),
            "{err:#}"
        );
    }
}
