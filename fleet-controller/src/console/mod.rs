//! The web console: the controller's pages for operators and buyers, served beside the API
//! by the same axum server. Pages are rendered here (maud: HTML escaped by construction;
//! charts as SVG, `charts.rs`) and read without JavaScript; `assets/console.js` adds live
//! updates over server-sent events and nothing else. Every page reads what the API would
//! answer, through the API's own handlers with the viewer's account as the caller, so the
//! console can show nothing the API would not.
//!
//! | route | what |
//! |---|---|
//! | `GET /login`, `POST /login`, `POST /logout` | a session (`session.rs`) |
//! | `GET /` | the fleet: every device, live power, battery, renewable share today, job (`fleet.rs`) |
//! | `POST /fleet/bulk` | (operators) approve, revoke, tag or untag the selected devices |
//! | `GET /events/fleet` | the fleet table's live cells (server-sent events) |
//! | `GET /devices/{id}` | power by channel, state of charge, daily energy, chain, reputation (`device.rs`) |
//! | `GET /devices/{id}/power.csv` | the power history behind the chart |
//! | `GET /devices/{id}/flow` | its power flow after each record (server-sent events) |
//! | `POST /devices/{id}/approve`, `/revoke` | (operators) a device's state |
//! | `GET /market` | offers, filtered and sorted (`market.rs`) |
//! | `GET /jobs`, `POST /jobs` | the viewer's jobs and the form that submits one (`jobs.rs`) |
//! | `GET /jobs/{id}` | a job: state, progress, history, outputs, carbon statement, proof |
//! | `GET /jobs/{id}/live` | its events (server-sent events, resumed with `Last-Event-ID`) |
//! | `GET /jobs/{id}/outputs/{index}` | an output's bytes |
//! | `GET /evidence` | epochs, roots, local and on-chain anchors (`market.rs`) |
//! | `GET /ledger`, `POST /ledger/spend-cap` | the viewer's balance, escrow, history and spend cap (`market.rs`) |
//! | `GET /alerts`, `POST /alerts/silences[/{id}/end]` | (operators) alerts, their delivery, silences (`alerts.rs`) |
//! | `GET /ledger.csv`, `/jobs.csv`, `/devices/{id}/hours.csv` | the histories as CSV (`csv.rs`) |
//! | `GET /verify` | (public) verify a proof bundle in the browser, in WebAssembly (`verify.rs`) |

mod alerts;
mod carbon;
mod charts;
mod csv;
mod device;
mod fleet;
mod jobs;
mod market;
mod page;
pub mod session;
mod verify;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::ApiState;
use crate::config::ConsoleConfig;

pub use session::{LoginLimiter, hash_password};

/// The console's state beside the API's: its settings, the login limiter and counts.
#[derive(Debug)]
pub struct Console {
    /// Serve the pages.
    pub enabled: bool,
    /// Failed logins per name and address.
    pub limiter: LoginLimiter,
    /// How long a login lasts, hours.
    pub session_hours: u64,
    /// Set `Secure` on the session cookie.
    pub secure_cookies: bool,
    /// Largest file the job form takes.
    pub max_upload_bytes: usize,
    /// The alert rules' names (for the silence form).
    pub alert_rules: Vec<String>,
    logins: Mutex<BTreeMap<&'static str, u64>>,
}

impl Console {
    /// The console `cfg` describes.
    pub fn new(cfg: &ConsoleConfig) -> Console {
        Console {
            enabled: cfg.enabled,
            limiter: LoginLimiter::new(cfg.login_failures, Duration::from_secs(cfg.login_window_s)),
            session_hours: cfg.session_hours.max(1),
            secure_cookies: cfg.secure_cookies,
            max_upload_bytes: cfg.max_upload_bytes,
            alert_rules: Vec::new(),
            logins: Mutex::new(BTreeMap::new()),
        }
    }

    /// The console, its silence form offering `rules`.
    pub fn with_alert_rules(mut self, rules: Vec<String>) -> Console {
        self.alert_rules = rules;
        self
    }

    /// Counts a login attempt by outcome (`ok`, `refused`, `limited`).
    pub fn count_login(&self, outcome: &'static str) {
        *self
            .logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Login attempts since start, by outcome.
    pub fn logins(&self) -> Vec<(&'static str, u64)> {
        let m = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        ["ok", "refused", "limited"]
            .into_iter()
            .map(|k| (k, m.get(k).copied().unwrap_or(0)))
            .collect()
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new(&ConsoleConfig::default())
    }
}

/// A time as people read it: `2026-11-30 14:05:09 UTC`.
pub(crate) fn when(ms: u64) -> String {
    let s = ms / 1000;
    let (y, m, d) = charts::civil(s / 86_400);
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// Percent-encodes everything but unreserved characters (a query value).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const VERIFY_JS: &str = include_str!("assets/verify.js");

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

async fn verify_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        VERIFY_JS,
    )
        .into_response()
}

/// Headers every console answer carries: a content security policy that allows only this
/// site's own script and style (no inline script, no framing), no sniffing, no referrer
/// beyond this site, and no caching of pages that show an account's data.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    if h.contains_key(header::CONTENT_SECURITY_POLICY) {
        // A page with its own policy (the verifier's) keeps it.
    } else {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The console's routes (merged into the API's router when `console.enabled`); the job
/// form takes files up to `max_upload` bytes.
pub fn routes(max_upload: usize) -> Router<ApiState> {
    let form_limit = axum::extract::DefaultBodyLimit::max(max_upload.saturating_add(64 << 10));
    Router::new()
        .route("/", get(fleet::fleet))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/events/fleet", get(fleet::fleet_events))
        .route("/devices/{id}", get(device::device))
        .route("/devices/{id}/power.csv", get(device::power_csv))
        .route("/devices/{id}/flow", get(device::flow_events))
        .route("/fleet/bulk", post(fleet::bulk))
        .route("/devices/{id}/approve", post(fleet::approve))
        .route("/devices/{id}/revoke", post(fleet::revoke))
        .route("/market", get(market::market))
        .route(
            "/jobs",
            get(jobs::list).post(jobs::submit).layer(form_limit),
        )
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/live", get(jobs::live))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/outputs/{index}", get(jobs::output))
        .route("/evidence", get(market::evidence))
        .route("/alerts", get(alerts::alerts))
        .route("/alerts/silences", post(alerts::silence))
        .route("/alerts/silences/{id}/end", post(alerts::end_silence))
        .route("/ledger", get(market::ledger))
        .route("/ledger.csv", get(csv::ledger))
        .route("/jobs.csv", get(csv::jobs))
        .route("/devices/{id}/hours.csv", get(csv::hours))
        .route("/ledger/spend-cap", post(market::spend_cap))
        .route("/console/console.css", get(css))
        .route("/console/console.js", get(js))
        .route("/console/verify.js", get(verify_js))
        .route("/console/verifier.wasm", get(verify::wasm))
        .route("/verify", get(verify::page))
        .layer(axum::middleware::map_response(security_headers))
}

#[cfg(test)]
mod tests;
