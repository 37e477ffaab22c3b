//! CoreDNS's metrics, as k3s's cluster DNS serves them on port 9153: every
//! query counted by protocol, address family and type
//! (`coredns_dns_requests_total`), every answer by response code and the
//! plugin that wrote it (`coredns_dns_responses_total`: `kubernetes` for the
//! cluster and reverse zones, `forward` for the rest), latency and sizes.
//! Labels as CoreDNS writes them for k3s's Corefile (one `.:53` server
//! block): `server="dns://:53"`, `zone="."`, `view=""`.
//!
//! [`MeteredHandler`] wraps the catalog; the page is served by [`serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::{LowerName, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::telemetry::{Descriptor, register_in};

/// CoreDNS's metrics port.
pub const PORT: u16 = 9153;

const SERVER: &str = "dns://:53";
const ZONE: &str = ".";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    family: &'static str,
    proto: &'static str,
    server: &'static str,
    r#type: &'static str,
    view: &'static str,
    zone: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    plugin: &'static str,
    rcode: String,
    server: &'static str,
    view: &'static str,
    zone: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    server: &'static str,
    r#type: &'static str,
    view: &'static str,
    zone: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SizeLabels {
    proto: &'static str,
    server: &'static str,
    view: &'static str,
    zone: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    goversion: &'static str,
    revision: &'static str,
    version: &'static str,
}

/// The DNS's registry (its own page, as CoreDNS's process has).
#[derive(Debug)]
pub struct DnsMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    durations: Family<TypeLabels, Histogram, fn() -> Histogram>,
    request_sizes: Family<SizeLabels, Histogram, fn() -> Histogram>,
}

fn size_histogram() -> Histogram {
    // CoreDNS's size buckets: 0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000.
    Histogram::new([
        0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3,
        64e3,
    ])
}

/// Registers one of CoreDNS's metrics: plain Prometheus ones, no stability
/// level in their HELP, but the metric flags still apply.
fn add(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    register_in(registry, &Descriptor::new(name, help).raw(), metric);
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let responses = Family::default();
        let durations: Family<TypeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00025, 2.0, 16)));
        let request_sizes: Family<SizeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(size_histogram);
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                goversion: "rust",
                revision: option_env!("KELP_GIT_COMMIT").unwrap_or("unknown"),
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let panics = Counter::<u64>::default();
        add(
            &mut registry,
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family",
            requests.clone(),
        );
        add(
            &mut registry,
            "coredns_dns_responses",
            "Counter of response status codes",
            responses.clone(),
        );
        add(
            &mut registry,
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone",
            durations.clone(),
        );
        add(
            &mut registry,
            "coredns_dns_request_size_bytes",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol",
            request_sizes.clone(),
        );
        add(
            &mut registry,
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built",
            build,
        );
        add(
            &mut registry,
            "coredns_panics",
            "A metrics that counts the number of panics",
            panics,
        );
        Self {
            registry,
            requests,
            responses,
            durations,
            request_sizes,
        }
    }
}

impl DnsMetrics {
    /// The page, in Prometheus' text format.
    pub fn encode(&self) -> String {
        crate::telemetry::prometheus_text(&self.registry)
    }

    fn observe(&self, query: &Observed, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                family: query.family,
                proto: query.proto,
                server: SERVER,
                r#type: query.qtype,
                view: "",
                zone: ZONE,
            })
            .inc();
        self.responses
            .get_or_create(&ResponseLabels {
                plugin: query.plugin,
                rcode: query.rcode.clone(),
                server: SERVER,
                view: "",
                zone: ZONE,
            })
            .inc();
        self.durations
            .get_or_create(&TypeLabels {
                server: SERVER,
                r#type: query.qtype,
                view: "",
                zone: ZONE,
            })
            .observe(seconds);
        self.request_sizes
            .get_or_create(&SizeLabels {
                proto: query.proto,
                server: SERVER,
                view: "",
                zone: ZONE,
            })
            .observe(query.size as f64);
    }
}

/// What one query and its answer were, in CoreDNS's label values.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    family: &'static str,
    proto: &'static str,
    qtype: &'static str,
    plugin: &'static str,
    rcode: String,
    size: usize,
}

/// CoreDNS's `type` label: the common types by name, others as `other`.
fn type_label(qtype: Option<RecordType>) -> &'static str {
    use RecordType::*;
    match qtype {
        Some(A) => "A",
        Some(AAAA) => "AAAA",
        Some(ANY) => "ANY",
        Some(AXFR) => "AXFR",
        Some(CNAME) => "CNAME",
        Some(DNSKEY) => "DNSKEY",
        Some(DS) => "DS",
        Some(HINFO) => "HINFO",
        Some(HTTPS) => "HTTPS",
        Some(IXFR) => "IXFR",
        Some(MX) => "MX",
        Some(NS) => "NS",
        Some(NSEC) => "NSEC",
        Some(NSEC3) => "NSEC3",
        Some(PTR) => "PTR",
        Some(RRSIG) => "RRSIG",
        Some(SOA) => "SOA",
        Some(SRV) => "SRV",
        Some(TXT) => "TXT",
        _ => "other",
    }
}

/// CoreDNS's `rcode` label: the code's name as DNS writes it (`NXDOMAIN`),
/// else its number.
fn rcode_label(code: u16) -> String {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    NAMES
        .get(usize::from(code))
        .map(|n| n.to_string())
        .unwrap_or_else(|| code.to_string())
}

/// The catalog, with each request observed.
pub struct MeteredHandler<H> {
    inner: H,
    metrics: Arc<DnsMetrics>,
    /// Names under these are answered by the cluster zones (`kubernetes`).
    cluster_zones: Vec<LowerName>,
}

impl<H> MeteredHandler<H> {
    /// Wraps `inner`, whose `cluster_zones` are CoreDNS's `kubernetes` plugin's.
    pub fn new(inner: H, metrics: Arc<DnsMetrics>, cluster_zones: Vec<LowerName>) -> Self {
        Self {
            inner,
            metrics,
            cluster_zones,
        }
    }
}

#[async_trait::async_trait]
impl<H: RequestHandler> RequestHandler for MeteredHandler<H> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let info = self
            .inner
            .handle_request::<R, T>(request, response_handle)
            .await;
        let asked = request.request_info().ok();
        let query = asked.as_ref().map(|r| r.query);
        let plugin = match &query {
            Some(q) if self.cluster_zones.iter().any(|z| z.zone_of(q.name())) => "kubernetes",
            Some(_) => "forward",
            None => "",
        };
        let observed = Observed {
            family: match request.src() {
                SocketAddr::V4(_) => "1",
                SocketAddr::V6(_) => "2",
            },
            proto: match request.protocol() {
                Protocol::Tcp => "tcp",
                _ => "udp",
            },
            qtype: type_label(query.as_ref().map(|q| q.query_type())),
            plugin,
            rcode: rcode_label(u16::from(info.response_code)),
            size: request.as_slice().len(),
        };
        self.metrics
            .observe(&observed, started.elapsed().as_secs_f64());
        info
    }
}

/// Serves `/metrics` on `listener` (the DNS's address, port 9153).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<DnsMetrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        crate::telemetry::PROMETHEUS_TEXT_CONTENT_TYPE,
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(err = %e, "cluster DNS metrics stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_corednss_labels() {
        let metrics = DnsMetrics::default();
        metrics.observe(
            &Observed {
                family: "1",
                proto: "udp",
                qtype: type_label(Some(RecordType::A)),
                plugin: "kubernetes",
                rcode: "NOERROR".into(),
                size: 40,
            },
            0.001,
        );
        let text = metrics.encode();
        assert!(
            text.contains("coredns_dns_requests_total{family=\"1\",proto=\"udp\",server=\"dns://:53\",type=\"A\",view=\"\",zone=\".\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("coredns_dns_responses_total{plugin=\"kubernetes\",rcode=\"NOERROR\",server=\"dns://:53\",view=\"\",zone=\".\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n"),
            "{text}"
        );
        assert!(text.contains("coredns_build_info{"), "{text}");
        assert_eq!(type_label(Some(RecordType::CAA)), "other");
        assert_eq!(rcode_label(3), "NXDOMAIN");
        assert_eq!(rcode_label(23), "23");
    }
}
