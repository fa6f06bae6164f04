//! An OTLP/HTTP trace receiver for tests: it accepts `POST /v1/traces` (protobuf, as the
//! OpenTelemetry exporters send it), decodes each request with the official protobuf
//! definitions (`opentelemetry-proto`) and keeps the spans, with the `service.name` of the
//! resource that sent them.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

/// One span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The `service.name` of its resource.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace id.
    pub trace_id: Vec<u8>,
    /// Its id.
    pub span_id: Vec<u8>,
    /// Its parent's id (empty for a root).
    pub parent_span_id: Vec<u8>,
    /// Its string and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// A receiver on a free port of 127.0.0.1.
pub struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<u64>>,
}

impl OtlpReceiver {
    /// Starts it (its thread lives as long as the test process).
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the OTLP receiver");
        let port = listener.local_addr().expect("its address").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (spans.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        OtlpReceiver {
            port,
            spans,
            requests,
        }
    }

    /// The base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

fn serve(conn: TcpStream, spans: &Mutex<Vec<ReceivedSpan>>, requests: &Mutex<u64>) {
    crate::sink::serve_requests(conn, |path, body| {
        if path != "/v1/traces" {
            return "404 Not Found";
        }
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                *requests.lock().unwrap() += 1;
                spans.lock().unwrap().extend(flatten(req));
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        }
    });
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: s.name,
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: s.parent_span_id,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                });
            }
        }
    }
    out
}
