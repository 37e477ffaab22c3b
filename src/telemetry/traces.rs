//! OpenTelemetry traces, as `--tracing-config-file` turns them on.
//!
//! The file is upstream's `TracingConfiguration` (`endpoint`, default
//! `localhost:4317`; `samplingRatePerMillion`, default 0). Spans are ordinary
//! [`tracing`] spans with the target [`TARGET`]; the layer from
//! [`TracingConfiguration::layer`] turns exactly those into OpenTelemetry
//! spans (no other crate's spans, so the exporter's own gRPC calls are never
//! traced) and exports them in batches over OTLP/gRPC. Sampling is
//! parent-based as upstream's: a request whose `traceparent` says sampled is
//! traced whatever the rate, other roots at `samplingRatePerMillion / 10⁶`.
//!
//! An endpoint that can't be reached costs a warning (once, until exports
//! succeed again), never the process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use serde::Deserialize;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of every span meant for traces:
/// `tracing::info_span!(target: TARGET, "KubernetesAPI", …)`.
pub const TARGET: &str = "kelp::trace";

/// Where spans go when the file names no endpoint (an OTLP collector on the node).
pub const DEFAULT_ENDPOINT: &str = "localhost:4317";

/// The API versions `TracingConfiguration` is read in.
const API_VERSIONS: [&str; 3] = [
    "apiserver.config.k8s.io/v1",
    "apiserver.config.k8s.io/v1beta1",
    "apiserver.config.k8s.io/v1alpha1",
];

/// Upstream's `TracingConfiguration`, as read from `--tracing-config-file`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingConfiguration {
    /// `apiserver.config.k8s.io/v1` (or v1beta1, v1alpha1).
    #[serde(default)]
    pub api_version: String,
    /// `TracingConfiguration`.
    #[serde(default)]
    pub kind: String,
    /// The collector's gRPC address (`host:port` or a URL).
    pub endpoint: Option<String>,
    /// Spans sampled per million roots (0: only those a caller asks for).
    pub sampling_rate_per_million: Option<i64>,
}

impl TracingConfiguration {
    /// Reads and checks `path`; a file that can't be read or is invalid is
    /// an error, as kube-apiserver refuses to start with one.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading tracing configuration {}", path.display()))?;
        let config: Self = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("decoding tracing configuration {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("invalid tracing configuration {}", path.display()))?;
        Ok(config)
    }

    /// Upstream's checks: a known kind and version, a rate in 0..=1000000.
    /// The endpoint is checked when the exporter is built: a bad one turns
    /// traces off but never stops kelp.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.kind != "TracingConfiguration" {
            bail!("kind {:?} is not TracingConfiguration", self.kind);
        }
        if !API_VERSIONS.contains(&self.api_version.as_str()) {
            bail!(
                "apiVersion {:?} is not one of {}",
                self.api_version,
                API_VERSIONS.join(", ")
            );
        }
        match self.sampling_rate_per_million {
            Some(rate) if rate < 0 => {
                bail!(
                    "samplingRatePerMillion: Invalid value: {rate}: sampling rate must be positive"
                )
            }
            Some(rate) if rate > 1_000_000 => bail!(
                "samplingRatePerMillion: Invalid value: {rate}: sampling rate per million must be less than or equal to one million"
            ),
            _ => {}
        }
        Ok(())
    }

    /// The collector's address as a URL (`http://` unless it names a scheme).
    pub fn endpoint(&self) -> String {
        endpoint_url(self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT))
    }

    /// The share of root spans sampled.
    pub fn ratio(&self) -> f64 {
        self.sampling_rate_per_million.unwrap_or(0) as f64 / 1_000_000.0
    }

    /// The exporting tracer provider. Must run inside a Tokio runtime (the
    /// gRPC channel's worker is spawned on it); the channel connects lazily,
    /// so a collector that is down fails exports, not this.
    pub fn provider(&self) -> anyhow::Result<SdkTracerProvider> {
        let endpoint = self.endpoint();
        if endpoint
            .parse::<http::Uri>()
            .map_or(true, |uri| uri.host().is_none())
        {
            bail!("endpoint: Invalid value: {endpoint:?}: not a host:port or URL");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("OTLP exporter for {endpoint}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("kelp")
            .with_attribute(opentelemetry::KeyValue::new(
                "host.name",
                hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(ReportingExporter {
                inner: exporter,
                endpoint,
                failing: AtomicBool::new(false),
            })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                self.ratio(),
            ))))
            .with_resource(resource)
            .build())
    }
}

/// Set once a trace layer is installed: until then trace spans are not made.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: callers skip making trace spans when not
/// (a span costs even when nothing records it).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The layer that turns kelp's [`TARGET`] spans into OpenTelemetry spans of
/// `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    ON.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("kelp"))
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.target() == TARGET
        }))
}

fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Middleware: with traces on, a server span `name` around the request
/// (kube-apiserver's is `KubernetesAPI`), continuing the caller's
/// `traceparent`, with the HTTP attributes upstream's spans carry.
pub async fn serve(
    name: &'static str,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    if !on() {
        return next.run(req).await;
    }
    let span = tracing::info_span!(
        target: TARGET,
        "http",
        otel.name = name,
        otel.kind = "server",
        http.method = %req.method(),
        http.target = %req.uri(),
        http.user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        http.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_trace(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Makes `span` a child of the W3C `traceparent` (and `tracestate`) in
/// `headers`, if they carry one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        // Fails only when no tracing layer is installed: nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Adds the current span's `traceparent` to a request kelp sends on (to
/// the kubelet, through a proxy), so the receiver's spans join the trace.
pub fn propagate(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeadersMut(headers));
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The OTLP exporter, logging when exports start and stop failing (once
/// each) instead of at every batch.
#[derive(Debug)]
struct ReportingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    failing: AtomicBool,
}

impl SpanExporter for ReportingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, err = %e, "Exporting spans failed");
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "Exporting spans again");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> anyhow::Result<TracingConfiguration> {
        let config: TracingConfiguration = serde_yaml_ng::from_str(yaml)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_as_upstream() {
        let config =
            parse("apiVersion: apiserver.config.k8s.io/v1beta1\nkind: TracingConfiguration\n")
                .unwrap();
        assert_eq!(config.endpoint(), "http://localhost:4317");
        assert_eq!(config.ratio(), 0.0);
        let config = parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\n\
             endpoint: 10.0.0.1:4317\nsamplingRatePerMillion: 250000\n",
        )
        .unwrap();
        assert_eq!(config.endpoint(), "http://10.0.0.1:4317");
        assert_eq!(config.ratio(), 0.25);
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        for (yaml, message) in [
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: Other\n",
                "is not TracingConfiguration",
            ),
            (
                "apiVersion: v1\nkind: TracingConfiguration\n",
                "is not one of",
            ),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nsamplingRatePerMillion: -1\n",
                "must be positive",
            ),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nsamplingRatePerMillion: 1000001\n",
                "less than or equal to one million",
            ),
        ] {
            let err = parse(yaml).unwrap_err().to_string();
            assert!(err.contains(message), "{yaml}: {err}");
        }
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_by_the_exporter_only() {
        let config = parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: \"bad endpoint\"\n",
        )
        .unwrap();
        let err = config.provider().unwrap_err().to_string();
        assert!(err.contains("endpoint: Invalid value"), "{err}");
    }

    #[test]
    fn traceparent_round_trips() {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .build();
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            layer(&provider),
        );
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                    .parse()
                    .unwrap(),
            );
            let span = tracing::info_span!(target: TARGET, "KubernetesAPI");
            continue_trace(&span, &incoming);
            let _entered = span.enter();
            let mut outgoing = http::HeaderMap::new();
            propagate(&mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            // Same trace, this span as the parent, still sampled.
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent}"
            );
            assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
            assert!(sent.ends_with("-01"), "{sent}");
        });
    }
}
