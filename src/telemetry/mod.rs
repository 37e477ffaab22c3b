//! Telemetry: logs in Kubernetes' formats and one process-wide Prometheus
//! registry.
//!
//! # Logging
//!
//! Every component logs through [`tracing`]. [`init_logging`] installs one
//! global subscriber whose [`LogLayer`] writes either klog's text layout
//! ([`LogFormat::Text`], the default) or component-base's JSON layout
//! ([`LogFormat::Json`]) to stderr, or appends them to `--log-file`.
//!
//! ```text
//! I1025 00:15:15.525108   12345 server.rs:79] "Serving" address="0.0.0.0:6443" workers=4
//! {"ts":1761351315.525108,"caller":"apiserver/server.rs:79","msg":"Serving","v":0,"address":"0.0.0.0:6443","workers":4}
//! ```
//!
//! ## Verbosity (`-v N`)
//!
//! klog gives each info message a verbosity level `v` and prints it when
//! `v <= N`. Here the level comes from the tracing level of the event:
//!
//! | tracing level | `v` | shown at    | text severity |
//! |---------------|-----|-------------|---------------|
//! | `ERROR`       | –   | always      | `E`           |
//! | `WARN`        | 0   | always      | `W`           |
//! | `INFO`        | 0   | always      | `I`           |
//! | `DEBUG`       | 4   | `-v 4` up   | `I`           |
//! | `TRACE`       | 6   | `-v 6` up   | `I`           |
//!
//! A field named `v` overrides the level's default for `INFO`, `DEBUG` and
//! `TRACE` events, the way klog's `V(n)` picks one:
//! `tracing::debug!(v = 2, pod = %name, "Pod scheduled")` is shown from `-v 2`
//! on. The `v` field is not printed as a key; the JSON layout carries the
//! level in its `"v"` member (warnings carry `0`, errors none, as upstream).
//! At `-v 0` every `DEBUG` and `TRACE` call site is switched off outright, so
//! an override can't make one of them visible there.
//!
//! Events from dependencies (hyper, h2, rustls, …: another crate's module
//! path and a source file outside the workspace) keep `v 0` for `INFO` and
//! above but get `v 8` for `DEBUG` and `v 10` for `TRACE`, so `-v 4` shows
//! kelp's own debug logs without the HTTP/2 frame chatter.
//!
//! ## Keys and values
//!
//! Event fields follow the message as `key=value` pairs, then the fields of
//! the enclosing spans (outermost span first; a key already printed is not
//! repeated, and an inner span's value wins over an outer one's), so
//! request-scoped fields show up on each line logged while handling it.
//! Text values follow klog: strings, `%display` and `?debug` values and
//! errors are quoted like Go's `strconv.Quote` (multi-line strings use klog's
//! `key=<` block), numbers and booleans are bare. By klog's convention an
//! error goes in a field named `err`; on an `ERROR` event it is printed right
//! after the message in text and last in JSON, as `klog.ErrorS` does. Errors
//! passed as `&dyn Error` are printed with their `source()` chain joined by
//! `": "`, like Go's wrapped errors.
//!
//! # Metrics
//!
//! [`Metrics`] owns the one [`prometheus_client`] registry. Components
//! register their families with [`Metrics::register`] at start; the API
//! server's request metrics live in [`Metrics::apiserver`]; process metrics
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_start_time_seconds`, …) are read from `/proc/self` at each scrape.
//! [`Metrics::encode`] gives Prometheus' text format and
//! [`Metrics::encode_openmetrics`] the OpenMetrics text format.

pub mod events;
mod logging;
mod metrics;
pub mod stability;
pub mod traces;

pub use logging::{LogConfig, LogFormat, LogLayer, VModule, init_logging, own_log_file};
pub use metrics::{
    ApiserverMetrics, Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE,
    REQUEST_DURATION_BUCKETS, prometheus_text, register_in,
};
pub use stability::{Descriptor, StabilityLevel};
pub use traces::TracingConfiguration;
