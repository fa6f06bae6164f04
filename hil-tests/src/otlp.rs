//! An OTLP/HTTP receiver for tests: it accepts `POST /v1/traces` and `POST /v1/metrics`
//! (protobuf, as the OpenTelemetry exporters send them), decodes each request with the
//! official protobuf definitions (`opentelemetry-proto`) and keeps the spans and the metric
//! points, with the `service.name` of the resource that sent them.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
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

/// One metric data point as received (sums and gauges; a histogram's count).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// The `service.name` of its resource.
    pub service: String,
    /// The metric's name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// A receiver on a free port of 127.0.0.1.
pub struct OtlpReceiver {
    port: u16,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    points: Arc<Mutex<Vec<ReceivedPoint>>>,
    requests: Arc<Mutex<u64>>,
}

impl OtlpReceiver {
    /// Starts it (its thread lives as long as the test process).
    pub fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the OTLP receiver");
        let port = listener.local_addr().expect("its address").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let points = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, p, r) = (spans.clone(), points.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, p, r) = (s.clone(), p.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &s, &p, &r));
            }
        });
        OtlpReceiver {
            port,
            spans,
            points,
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

    /// Every metric point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.points.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

fn serve(
    conn: TcpStream,
    spans: &Mutex<Vec<ReceivedSpan>>,
    points: &Mutex<Vec<ReceivedPoint>>,
    requests: &Mutex<u64>,
) {
    crate::sink::serve_requests(conn, |path, body| {
        let ok = match path {
            "/v1/traces" => ExportTraceServiceRequest::decode(body)
                .map(|req| spans.lock().unwrap().extend(flatten(req)))
                .is_ok(),
            "/v1/metrics" => ExportMetricsServiceRequest::decode(body)
                .map(|req| points.lock().unwrap().extend(flatten_metrics(req)))
                .is_ok(),
            _ => return "404 Not Found",
        };
        if ok {
            *requests.lock().unwrap() += 1;
            "200 OK"
        } else {
            "400 Bad Request"
        }
    });
}

fn flatten_metrics(req: ExportMetricsServiceRequest) -> Vec<ReceivedPoint> {
    let mut out = Vec::new();
    for rm in req.resource_metrics {
        let service = rm
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let mut push =
                    |value: f64, attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                        out.push(ReceivedPoint {
                            service: service.clone(),
                            name: m.name.clone(),
                            value,
                            attributes: attrs
                                .iter()
                                .map(|a| (a.key.clone(), text(&a.value)))
                                .collect(),
                        })
                    };
                let number = |v: &Option<Number>| match v {
                    Some(Number::AsDouble(d)) => *d,
                    Some(Number::AsInt(i)) => *i as f64,
                    None => 0.0,
                };
                match &m.data {
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .for_each(|p| push(number(&p.value), &p.attributes)),
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .for_each(|p| push(number(&p.value), &p.attributes)),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .for_each(|p| push(p.count as f64, &p.attributes)),
                    _ => {}
                }
            }
        }
    }
    out
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
