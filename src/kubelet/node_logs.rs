//! The kubelet's `/logs/`: the node's `/var/log` (a listing, or a file),
//! and with query parameters upstream's node log query (NodeLogQuery):
//! `?query=<service>&sinceTime=&untilTime=&tailLines=&boot=&pattern=`.
//!
//! `query=kelp` (also `kelp-agent` and `kubelet`: here they are all this
//! process) answers with kelp's own log lines, read from where it logs
//! (`--log-file`, or stderr when that is a file) and filtered here; under
//! systemd, where stderr is the journal, journalctl is asked as for any
//! other service. Other services go to journalctl when it has their unit,
//! else to upstream's file heuristics (`/var/log/<svc>`, `<svc>.log`,
//! `<svc>/<svc>.log`). Parsing, validation and the filter are pure; only
//! [`serve`] reads files and runs journalctl.

use std::path::{Component, Path, PathBuf};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use chrono::{DateTime, Datelike as _, Local, NaiveDateTime, TimeZone as _, Utc};

/// The names that mean this process.
pub const OWN_SERVICES: [&str; 3] = ["kelp", "kelp-agent", "kubelet"];

/// Where node log files are served from.
pub const NODE_LOG_DIR: &str = "/var/log";

const MAX_TAIL_LINES: i64 = 100_000;
const MAX_SERVICES: usize = 4;
const MAX_SERVICE_LENGTH: usize = 256;

/// One parsed `/logs/?…` request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLogQuery {
    /// Services asked for (journal units, or this process).
    pub services: Vec<String>,
    /// A file under `/var/log` asked for (a query holding `/`).
    pub files: Vec<String>,
    /// The filters.
    pub options: LogOptions,
}

/// The filters of a service query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Lines from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Lines up to this time.
    pub until: Option<DateTime<Utc>>,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// A boot offset (0 this boot, -1 the previous, …).
    pub boot: Option<i64>,
    /// Lines matching this regular expression.
    pub pattern: Option<String>,
}

impl LogOptions {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl NodeLogQuery {
    /// Parses and checks the query string; the error is upstream's field
    /// error list (`query: Invalid value: …`), answered 400.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut query = Self::default();
        let mut errors = Vec::new();
        let mut queries = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "query" => queries.push(value),
                "sinceTime" | "untilTime" if !value.is_empty() => {
                    match DateTime::parse_from_rfc3339(&value) {
                        Ok(t) if key == "sinceTime" => query.options.since = Some(t.into()),
                        Ok(t) => query.options.until = Some(t.into()),
                        Err(_) => errors.push(format!(
                            "{key}: Invalid value: \"{value}\": invalid time format"
                        )),
                    }
                }
                "boot" | "tailLines" if !value.is_empty() => match value.parse::<i64>() {
                    Ok(n) if key == "boot" => query.options.boot = Some(n),
                    Ok(n) => query.options.tail_lines = Some(n),
                    Err(_) => errors.push(format!(
                        "{key}: Invalid value: \"{value}\": strconv.Atoi: parsing \"{value}\": invalid syntax"
                    )),
                },
                "pattern" if !value.is_empty() => query.options.pattern = Some(value),
                _ => {}
            }
        }
        for q in &queries {
            if q.contains(['/', '\\']) {
                query.files.push(q.clone());
            } else if !q.trim().is_empty() {
                query.services.push(q.clone());
            }
        }
        if !queries.is_empty() && query.files.is_empty() && query.services.is_empty() {
            errors.push(format!(
                "query: Invalid value: {}: query cannot be empty",
                go_string_list(&queries)
            ));
        }
        if errors.is_empty() {
            errors = query.validate();
        }
        match errors.len() {
            0 => Ok(query),
            1 => Err(errors.remove(0)),
            _ => Err(format!("[{}]", errors.join(", "))),
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for s in &self.services {
            if s.len() > MAX_SERVICE_LENGTH {
                errors.push(format!(
                    "query: Invalid value: \"{s}\": length must be less than 100"
                ));
            } else if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '@'))
            {
                errors.push(format!(
                    "query: Invalid value: \"{s}\": input contains unsupported characters"
                ));
            }
        }
        if self.services.len() > MAX_SERVICES {
            errors.push(format!(
                "query: Too many: {}: must have at most {MAX_SERVICES} items",
                self.services.len()
            ));
        }
        match (self.files.len(), self.services.len()) {
            (0, 0) => errors.push("query: Required value: cannot be empty with options".into()),
            (f, s) if f > 0 && s > 0 => errors.push(format!(
                "query: Invalid value: \"{}, {}\": cannot specify a file and service",
                go_string_list(&self.files),
                go_string_list(&self.services)
            )),
            (f, _) if f > 1 => errors.push(format!(
                "query: Invalid value: {}: cannot specify more than one file",
                go_string_list(&self.files)
            )),
            (1, _) if !self.options.is_empty() => errors.push(format!(
                "query: Invalid value: {}: cannot specify file with options",
                go_string_list(&self.files)
            )),
            _ => {}
        }
        if let (Some(since), Some(until)) = (self.options.since, self.options.until)
            && since > until
        {
            errors.push(format!(
                "untilTime: Invalid value: \"{}\": must be after `sinceTime`",
                until.to_rfc3339()
            ));
        }
        if let Some(boot) = self.options.boot
            && boot > 0
        {
            errors.push(format!("boot: Invalid value: {boot}: must be less than 1"));
        }
        if let Some(n) = self.options.tail_lines
            && !(0..=MAX_TAIL_LINES).contains(&n)
        {
            errors.push(format!(
                "tailLines: Invalid value: {n}: must be between 0 and {MAX_TAIL_LINES}, inclusive"
            ));
        }
        if let Some(pattern) = &self.options.pattern
            && let Err(e) = regex::Regex::new(pattern)
        {
            errors.push(format!(
                "pattern: Invalid value: \"{pattern}\": {}",
                e.to_string().lines().last().unwrap_or("invalid pattern")
            ));
        }
        errors
    }
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_string_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// The file a query names, under `/var/log` (`..` cannot leave it, as
/// upstream's secure join); None when it names none.
pub fn log_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for part in Path::new(name).components() {
        match part {
            Component::Normal(p) => path.push(p),
            Component::ParentDir if path != dir => {
                path.pop();
            }
            _ => {}
        }
    }
    Some(path).filter(|p| p != dir)
}

/// The files upstream tries for a service that does not log to the journal.
pub fn heuristic_files(dir: &Path, service: &str) -> [PathBuf; 3] {
    [
        dir.join(service),
        dir.join(format!("{service}.log")),
        dir.join(service).join(format!("{service}.log")),
    ]
}

/// journalctl's arguments for `services` under `options`, as upstream's
/// kubelet builds them.
pub fn journalctl_args(services: &[String], options: &LogOptions) -> Vec<String> {
    let mut args = vec![
        "--utc".to_string(),
        "--no-pager".into(),
        "--output=short-precise".into(),
    ];
    if let Some(since) = options.since {
        args.push(format!("--since={}", since.format("%Y-%m-%d %H:%M:%S")));
    }
    if let Some(until) = options.until {
        args.push(format!("--until={}", until.format("%Y-%m-%d %H:%M:%S")));
    }
    if let Some(n) = options.tail_lines {
        args.push("--pager-end".into());
        args.push(format!("--lines={n}"));
    }
    for service in services {
        args.push(format!("--unit={service}"));
    }
    if let Some(pattern) = &options.pattern {
        args.push(format!("--grep={pattern}"));
        args.push("--case-sensitive=false".into());
    }
    args.push(format!("--boot={}", options.boot.unwrap_or(0)));
    args
}

/// kelp's own log lines that pass `options`. A line's time is its klog
/// header (`I1204 20:07:53.123456`, local time, this year) or its JSON
/// `ts`; a line without one (the rest of a multi-line value) goes with the
/// line before it. The pattern is a regular expression searched in the
/// whole line, case-insensitively as journalctl's `--grep`.
pub fn filter_own_log(text: &str, options: &LogOptions, now: DateTime<Local>) -> String {
    let pattern = options.pattern.as_deref().and_then(|p| {
        regex::RegexBuilder::new(p)
            .case_insensitive(true)
            .build()
            .ok()
    });
    let mut kept: Vec<&str> = Vec::new();
    let mut keep_continuation = true;
    for line in text.lines() {
        let keep = match line_time(line, now) {
            Some(at) => {
                options.since.is_none_or(|since| at >= since)
                    && options.until.is_none_or(|until| at <= until)
                    && pattern.as_ref().is_none_or(|p| p.is_match(line))
            }
            None => keep_continuation,
        };
        if line_time(line, now).is_some() {
            keep_continuation = keep;
        }
        if keep {
            kept.push(line);
        }
    }
    let skip = options
        .tail_lines
        .map(|n| kept.len().saturating_sub(n.max(0) as usize))
        .unwrap_or(0);
    let mut out = String::new();
    for line in &kept[skip..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The time of a klog text or JSON log line.
fn line_time(line: &str, now: DateTime<Local>) -> Option<DateTime<Utc>> {
    if line.starts_with('{') {
        let ts = line
            .strip_prefix("{\"ts\":")?
            .split([',', '}'])
            .next()?
            .parse::<f64>()
            .ok()?;
        return DateTime::from_timestamp_micros((ts * 1e6) as i64);
    }
    let header = line.get(1..21)?;
    if !matches!(line.as_bytes()[0], b'I' | b'W' | b'E' | b'F') {
        return None;
    }
    let naive =
        NaiveDateTime::parse_from_str(&format!("{} {header}", now.year()), "%Y %m%d %H:%M:%S%.6f")
            .ok()?;
    let local = Local.from_local_datetime(&naive).earliest()?;
    // A December line read in January belongs to last year.
    let local = if local > now + chrono::Duration::days(1) {
        local.with_year(now.year() - 1)?
    } else {
        local
    };
    Some(local.with_timezone(&Utc))
}

/// Go's `http.FileServer` listing of a directory: `<pre>` with a link per
/// entry, directories with a trailing `/`, sorted by name.
pub fn directory_listing(mut entries: Vec<(String, bool)>) -> String {
    entries.sort();
    let mut out = String::from("<pre>\n");
    for (name, is_dir) in entries {
        let shown = if is_dir { format!("{name}/") } else { name };
        let href: String =
            percent_encoding::utf8_percent_encode(&shown, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2F", "/")
                .replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_");
        let text = shown
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        out.push_str(&format!("<a href=\"{href}\">{text}</a>\n"));
    }
    out.push_str("</pre>\n");
    out
}

/// Answers `GET /logs/<path>?<query>`.
pub async fn serve(path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    let dir = Path::new(NODE_LOG_DIR);
    let body = match query.filter(|q| !q.is_empty()) {
        None => return serve_path(dir, path).await,
        Some(raw) => match NodeLogQuery::parse(raw) {
            Err(message) => {
                return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
            }
            Ok(q) => answer(dir, &q).await,
        },
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let content_type = [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")];
    if gzip {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if encoder.write_all(body.as_bytes()).is_ok()
            && let Ok(bytes) = encoder.finish()
        {
            return (content_type, [(header::CONTENT_ENCODING, "gzip")], bytes).into_response();
        }
    }
    (content_type, body).into_response()
}

/// The text a valid query gets: a file, kelp's own log, journal units or
/// service log files (what fails is said in the text, as upstream does).
async fn answer(dir: &Path, q: &NodeLogQuery) -> String {
    if let Some(name) = q.files.first() {
        return match log_file(dir, name) {
            Some(file) => match tokio::fs::read(&file).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => format!(
                    "query: Invalid value: [{name}]: stat {}: {e}\n",
                    file.display()
                ),
            },
            None => format!("query: Invalid value: [{name}]: is the log directory\n"),
        };
    }
    let mut out = String::new();
    let own_file = crate::telemetry::own_log_file();
    let is_own = |service: &str| OWN_SERVICES.contains(&service) && own_file.is_some();
    // journalctl is asked only when some service is not answered from kelp's own file.
    let journal_units = if q.services.iter().all(|s| is_own(s)) {
        Vec::new()
    } else {
        journal_units().await
    };
    let mut native = Vec::new();
    let mut files = Vec::new();
    for service in &q.services {
        if is_own(service)
            && let Some(own) = &own_file
        {
            match tokio::fs::read(own).await {
                Ok(bytes) => out.push_str(&filter_own_log(
                    &String::from_utf8_lossy(&bytes),
                    &q.options,
                    Local::now(),
                )),
                Err(e) => out.push_str(&format!("\nerror getting log for {service}: {e}\n")),
            }
        } else if journal_units.contains(&format!("{service}.service")) {
            native.push(service.clone());
        } else {
            files.push(service.clone());
        }
    }
    if !native.is_empty() {
        match tokio::process::Command::new("journalctl")
            .args(journalctl_args(&native, &q.options))
            .output()
            .await
        {
            Ok(output) => {
                out.push_str(&String::from_utf8_lossy(&output.stdout));
                out.push_str(&String::from_utf8_lossy(&output.stderr));
            }
            Err(_) => out.push_str("\nerror: journal output not available\n"),
        }
    }
    if !files.is_empty() && !q.options.is_empty() {
        out.push_str(&format!(
            "\noptions present and query resolved to log files for {}\ntry without specifying options\n",
            go_string_list(&files)
        ));
        return out;
    }
    for service in &files {
        let mut found = false;
        for file in heuristic_files(dir, service) {
            if file.is_file()
                && let Ok(bytes) = tokio::fs::read(&file).await
            {
                out.push_str(&String::from_utf8_lossy(&bytes));
                found = true;
                break;
            }
        }
        if !found {
            out.push_str(&format!("\nlog not found for {service}\n"));
        }
    }
    out
}

/// The systemd units the journal has entries of (none without journalctl).
async fn journal_units() -> Vec<String> {
    match tokio::process::Command::new("journalctl")
        .args(["--field", "_SYSTEMD_UNIT"])
        .output()
        .await
    {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `/logs/<path>` without a query: the file, or the directory's listing.
async fn serve_path(dir: &Path, path: &str) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    let target = log_file(dir, path).unwrap_or_else(|| dir.to_path_buf());
    let Ok(meta) = tokio::fs::metadata(&target).await else {
        return not_found();
    };
    if meta.is_dir() {
        let Ok(mut read) = tokio::fs::read_dir(&target).await else {
            return not_found();
        };
        let mut entries = Vec::new();
        while let Ok(Some(entry)) = read.next_entry().await {
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            entries.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
        }
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            directory_listing(entries),
        )
            .into_response();
    }
    match tokio::fs::read(&target).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams_parameters() {
        let q = NodeLogQuery::parse(
            "query=kelp&sinceTime=2026-12-04T20:00:00Z&tailLines=10&pattern=Serving",
        )
        .unwrap();
        assert_eq!(q.services, ["kelp"]);
        assert_eq!(q.options.tail_lines, Some(10));
        assert_eq!(q.options.pattern.as_deref(), Some("Serving"));
        assert_eq!(
            q.options.since.unwrap().to_rfc3339(),
            "2026-12-04T20:00:00+00:00"
        );
        let q = NodeLogQuery::parse("query=/syslog").unwrap();
        assert_eq!(q.files, ["/syslog"]);
    }

    #[test]
    fn refuses_as_upstream_does() {
        for (raw, message) in [
            (
                "query=%20%20",
                "query: Invalid value: [  ]: query cannot be empty",
            ),
            (
                "tailLines=5",
                "query: Required value: cannot be empty with options",
            ),
            (
                "query=a;rm",
                "query: Invalid value: \"a;rm\": input contains unsupported characters",
            ),
            (
                "query=kelp&tailLines=100001",
                "tailLines: Invalid value: 100001: must be between 0 and 100000, inclusive",
            ),
            (
                "query=kelp&boot=1",
                "boot: Invalid value: 1: must be less than 1",
            ),
            (
                "query=kelp&sinceTime=yesterday",
                "sinceTime: Invalid value: \"yesterday\": invalid time format",
            ),
            ("query=kelp&pattern=(", "pattern: Invalid value: \"(\""),
            (
                "query=/syslog&tailLines=3",
                "cannot specify file with options",
            ),
            ("query=/a&query=b", "cannot specify a file and service"),
            (
                "query=a&query=b&query=c&query=d&query=e",
                "query: Too many: 5: must have at most 4 items",
            ),
            (
                "query=kelp&sinceTime=2026-12-04T20:00:00Z&untilTime=2026-12-04T19:00:00Z",
                "untilTime: Invalid value: \"2026-12-04T19:00:00+00:00\": must be after `sinceTime`",
            ),
        ] {
            let err = NodeLogQuery::parse(raw).unwrap_err();
            assert!(err.contains(message), "{raw}: {err}");
        }
    }

    #[test]
    fn files_stay_under_the_log_directory() {
        let dir = Path::new("/var/log");
        assert_eq!(
            log_file(dir, "/../../etc/shadow"),
            Some(PathBuf::from("/var/log/etc/shadow"))
        );
        assert_eq!(
            log_file(dir, "pods/x/0.log"),
            Some(PathBuf::from("/var/log/pods/x/0.log"))
        );
        assert_eq!(log_file(dir, "/"), None);
    }

    #[test]
    fn journalctl_gets_upstreams_flags() {
        let options = LogOptions {
            since: Some(DateTime::from_timestamp(1_796_000_000, 0).unwrap()),
            tail_lines: Some(5),
            pattern: Some("err".into()),
            ..Default::default()
        };
        let args = journalctl_args(&["containerd".into()], &options);
        assert!(args.contains(&"--unit=containerd".to_string()), "{args:?}");
        assert!(args.contains(&"--lines=5".to_string()), "{args:?}");
        assert!(args.contains(&"--grep=err".to_string()), "{args:?}");
        assert!(
            args.iter().any(|a| a.starts_with("--since=2026-")),
            "{args:?}"
        );
        assert_eq!(args.last().unwrap(), "--boot=0");
    }

    #[test]
    fn own_log_is_filtered_by_time_pattern_and_tail() {
        let now = Local.with_ymd_and_hms(2026, 12, 4, 21, 0, 0).unwrap();
        let at = |h: u32, m: u32| format!("I1204 {h:02}:{m:02}:00.000000   4242 server.rs:1] ");
        let text = format!(
            "{}\"Starting\"\n{}\"Serving\" address=\"0.0.0.0:6443\"\n{}\"Multi\" v=<\n\tsecond line\n >\n{}\"Serving again\"\n",
            at(19, 0),
            at(20, 10),
            at(20, 20),
            at(20, 30)
        );
        let since = Local
            .with_ymd_and_hms(2026, 12, 4, 20, 5, 0)
            .unwrap()
            .with_timezone(&Utc);
        let options = LogOptions {
            since: Some(since),
            ..Default::default()
        };
        let out = filter_own_log(&text, &options, now);
        assert!(!out.contains("Starting"), "{out}");
        assert!(
            out.contains("second line") && out.contains("Serving again"),
            "{out}"
        );
        let options = LogOptions {
            pattern: Some("serving".into()),
            ..Default::default()
        };
        let out = filter_own_log(&text, &options, now);
        assert_eq!(out.lines().count(), 2, "{out}");
        let options = LogOptions {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert!(filter_own_log(&text, &options, now).contains("Serving again"));
        let json = "{\"ts\":1796415357.5,\"caller\":\"a.rs:1\",\"msg\":\"x\",\"v\":0}\n";
        let options = LogOptions {
            since: Some(DateTime::from_timestamp(1_796_415_357, 0).unwrap()),
            ..Default::default()
        };
        assert_eq!(filter_own_log(json, &options, now), json);
    }

    #[test]
    fn listing_looks_like_gos_file_server() {
        let listing = directory_listing(vec![
            ("syslog".into(), false),
            ("pods".into(), true),
            ("a<b".into(), false),
        ]);
        assert_eq!(
            listing,
            "<pre>\n<a href=\"a%3Cb\">a&lt;b</a>\n<a href=\"pods/\">pods/</a>\n<a href=\"syslog\">syslog</a>\n</pre>\n"
        );
    }
}
