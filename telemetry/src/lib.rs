//! Logging and OpenTelemetry for Heliostat's binaries (the agent, the controller, the demo).
//!
//! [`init`] installs the `tracing` subscriber every binary uses: human-readable logs on
//! stderr filtered by `RUST_LOG` (default `info`), and, when the standard OpenTelemetry
//! variables ask for it, spans exported over OTLP/HTTP (protobuf):
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended) or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) turns export on; neither set, or
//!   `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`, leaves it off;
//! - `OTEL_SERVICE_NAME` overrides the service's name; `OTEL_EXPORTER_OTLP_HEADERS` and
//!   `..._TIMEOUT` are read by the exporter as the specification says.
//!
//! Metrics go the same way (`/v1/metrics`, every `OTEL_METRIC_EXPORT_INTERVAL` ms, 60 s by
//! default): instruments made from [`meter`] cost nothing when export is off.
//!
//! A collector that is down costs nothing but a logged export error: spans are batched on
//! their own thread and dropped when its queue is full, never blocking the work.
//!
//! Jobs are traced across processes without anything unsigned on the wire: a job's id is
//! 128 random bits, so it *is* the W3C trace id of the job's trace, and the parent every
//! span of the job names is a span id derived from it ([`job_context`]). The controller
//! (submit, schedule, dispatch, validate, settle) and the agent (run) each attach their spans
//! to that context ([`in_job`]) from the job id that every signed `RunJob`, job event and
//! receipt already carries, so one trace spans them all, and a `traceparent` header for
//! any other tool is [`traceparent`].

use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What [`init`] set up; flushes the spans still queued when dropped (keep it alive in
/// `main`).
#[must_use = "dropping it flushes and stops the span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown_with_timeout(Duration::from_secs(5));
        }
        if let Some(m) = self.meters.take() {
            let _ = m.force_flush();
            let _ = m.shutdown();
        }
    }
}

/// The meter instruments are made from (a no-op one when export is off).
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter("heliostat")
}

pub use opentelemetry::KeyValue as Attribute;
pub use opentelemetry::metrics::{Counter, Gauge, Histogram};

/// Whether the environment asks for span export.
pub fn export_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !off && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OTLP exporter's HTTP client: ureq, which both binaries already carry. It runs on
/// the batch processor's own thread, so blocking is what it should do.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self.0.post(parts.uri.to_string());
        for (k, v) in &parts.headers {
            req = req.header(k.as_str(), v.to_str().unwrap_or_default());
        }
        let mut resp = req.send(&body[..])?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(4 << 20).read_to_vec()?;
        Ok(Response::builder()
            .status(status)
            .body(Bytes::from(bytes))?)
    }
}

/// A filter layer for [`init`] (the agent's `Targets`, or an `EnvFilter`).
pub type Filter = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The `RUST_LOG` filter, or `default` (directives) when the variable is unset or unreadable.
#[cfg(feature = "env-filter")]
pub fn env_filter(default: &str) -> Filter {
    Box::new(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
    )
}

/// Installs logging through `filter` (and span export when asked) for the service
/// `service` (the default `service.name`). Logs go to stderr, without colour codes when it
/// is not a terminal or `NO_COLOR` is set.
pub fn init(service: &'static str, filter: Filter) -> Telemetry {
    install(service, filter, export_requested())
}

/// Logging only, whatever the environment says (a helper process whose parent exports).
pub fn logs_only(filter: Filter) -> Telemetry {
    install("", filter, false)
}

fn install(service: &'static str, filter: Filter, export: bool) -> Telemetry {
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let provider = export.then(|| provider(service)).and_then(|p| match p {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("OpenTelemetry export is off: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("heliostat"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    let meters = provider
        .as_ref()
        .and_then(|_| match meter_provider(service) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "OpenTelemetry metrics export is off");
                None
            }
        });
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing::info!(service, "exporting spans over OTLP/HTTP");
    }
    if let Some(m) = &meters {
        opentelemetry::global::set_meter_provider(m.clone());
    }
    Telemetry { provider, meters }
}

fn http() -> UreqClient {
    UreqClient(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into(),
    )
}

fn resource(service: &'static str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(http())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build())
}

fn meter_provider(service: &'static str) -> Result<SdkMeterProvider, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(http())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource(service))
        .build())
}

/// The span id every span of job `job` names as its parent: the job's trace's root,
/// derived from the job id (never zero).
pub fn job_root_span(job: &[u8; 16]) -> SpanId {
    // splitmix64's finaliser over both halves: every bit of the id moves every bit of the
    // span id (a plain fold would map many ids, all equal bytes for one, to the same span).
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (a, b) = job.split_at(8);
    let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
    let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
    let x = mix(a ^ mix(b ^ 0x6865_6c69_6f73_7461)).max(1);
    SpanId::from_bytes(x.to_be_bytes())
}

/// The trace of job `job`: trace id = the job id, parent = [`job_root_span`], sampled.
pub fn job_context(job: &[u8; 16]) -> Context {
    let trace = if *job == [0; 16] {
        TraceId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    } else {
        TraceId::from_bytes(*job)
    };
    let sc = SpanContext::new(
        trace,
        job_root_span(job),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

/// Makes `span` a span of job `job`'s trace (a no-op when nothing exports spans).
pub fn in_job(span: &tracing::Span, job: &[u8; 16]) {
    let _ = span.set_parent(job_context(job));
}

/// The W3C `traceparent` of job `job`'s trace root (`00-{trace}-{span}-01`).
pub fn traceparent(job: &[u8; 16]) -> String {
    let sc = job_context(job).span().span_context().clone();
    format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_trace_is_its_id() {
        let job = [0x5a; 16];
        let tp = traceparent(&job);
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with(&format!("00-{}-", "5a".repeat(16))), "{tp}");
        assert!(tp.ends_with("-01"));
        assert_ne!(job_root_span(&job), SpanId::INVALID);
        assert_ne!(job_root_span(&[0; 16]), SpanId::INVALID);
        assert_ne!(job_root_span(&[1; 16]), job_root_span(&[2; 16]));
        // Ids one bit apart, in either half, get other span ids.
        let mut other = job;
        other[15] ^= 1;
        assert_ne!(job_root_span(&job), job_root_span(&other));
        other = job;
        other[0] ^= 0x80;
        assert_ne!(job_root_span(&job), job_root_span(&other));
    }

    #[test]
    fn export_is_off_unless_asked() {
        // SAFETY (test): this test alone touches these variables in this process.
        unsafe {
            std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
            std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        }
        assert!(!export_requested());
        unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318") };
        assert!(export_requested());
        unsafe { std::env::set_var("OTEL_SDK_DISABLED", "true") };
        assert!(!export_requested());
        unsafe {
            std::env::remove_var("OTEL_SDK_DISABLED");
            std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
        }
    }
}
