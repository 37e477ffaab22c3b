//! An OTLP/gRPC trace receiver on loopback (opentelemetry-proto's service
//! types on tonic), keeping every span it gets, for the tracing e2e test
//! and the observability benchmark.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// One received span: trace id, span id, parent span id (hex), name.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub name: String,
}

/// The receiver; clones share the spans.
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for s in scope.spans {
                    spans.push(Span {
                        trace: hex::encode(&s.trace_id),
                        id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        name: s.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on 127.0.0.1:`port` until the runtime it is spawned on ends.
    pub async fn serve(self, port: u16) {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self))
            .serve(([127, 0, 0, 1], port).into())
            .await
            .expect("OTLP receiver");
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// The spans of `trace` once one named `name` is among them (30 s at most).
    pub fn wait_for(&self, trace: &str, name: &str) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace == trace)
                .collect();
            if spans.iter().any(|s| s.name == name) || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
