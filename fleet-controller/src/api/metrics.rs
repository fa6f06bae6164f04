//! `GET /metrics`: what the controller counts, in Prometheus's text exposition format
//! (version 0.0.4). Names carry their base unit (`_watts`, `_bytes`) and counters end in
//! `_total`; labels are small closed sets (a reason, a state, a source), never a device or a
//! record, so a fleet of any size keeps the same number of series.
//!
//! Counts since the process started come from the ingest's and dispatch's status files and
//! the console; the rest is read from the store at each scrape.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiState, AppError, blocking};
use crate::store::Store;
use crate::store::jobs::JobStore;

/// Prometheus text.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str, rows: &[(String, String)]) {
        use std::fmt::Write;
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl ToString) {
        self.family(name, kind, help, &[(String::new(), v.to_string())]);
    }
}

fn labelled(label: &str, m: &Value) -> Vec<(String, String)> {
    m.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        format!("{{{label}=\"{k}\"}}"),
                        v.as_u64().unwrap_or(0).to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_json(path: &std::path::Path) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}))
}

/// The controller's metrics.
pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, AppError> {
    blocking(move || {
        let status = read_json(&s.status);
        let dispatch = read_json(&s.status.with_file_name("dispatch.json"));
        let store = s.store.get()?;
        let now = crate::runtime::now_ms();
        let mut out = Exposition::default();
        out.one(
            "heliostat_ingest_stored_total",
            "counter",
            "Chain messages stored since the controller started.",
            status["stored"].as_u64().unwrap_or(0),
        );
        out.family(
            "heliostat_ingest_rejected_total",
            "counter",
            "Messages rejected since the controller started, by reason.",
            &labelled("reason", &status["rejected"]),
        );
        let devices = store.devices()?;
        let by_state: Vec<(String, String)> = ["pending", "approved", "revoked"]
            .iter()
            .map(|st| {
                let n = devices.iter().filter(|d| d.state.as_str() == *st).count();
                (format!("{{state=\"{st}\"}}"), n.to_string())
            })
            .collect();
        out.family("heliostat_devices", "gauge", "Devices by state.", &by_state);
        let online = devices
            .iter()
            .filter(|d| now.saturating_sub(d.last_seen_ms) <= 60_000)
            .count();
        out.one(
            "heliostat_devices_online",
            "gauge",
            "Devices heard from within the last minute.",
            online,
        );
        // Power now across the approved devices, by source, from each one's latest record.
        let listings = crate::market_view::view(
            &*store,
            &crate::market_view::Search::default(),
            now,
            60_000,
        )?;
        let online_listings = listings.iter().filter(|l| l.online);
        let (solar, load) = online_listings.fold((0.0, 0.0), |(s, l), x| (s + x.solar_w, l + x.load_w));
        out.family(
            "heliostat_fleet_power_watts",
            "gauge",
            "Power now across the online approved devices, by source (mean over each one's latest record).",
            &[
                ("{source=\"solar\"}".into(), format!("{solar:.3}")),
                ("{source=\"load\"}".into(), format!("{load:.3}")),
            ],
        );
        let closed = store.last_epoch()?.map_or(0, |e| e.epoch.next().0);
        out.one(
            "heliostat_epochs_closed_total",
            "counter",
            "Epochs closed and anchored in the local log.",
            closed,
        );
        out.one(
            "heliostat_epochs_not_on_chain",
            "gauge",
            "Closed epochs without a confirmed EVM anchor (all of them when anchoring is local).",
            store.count_epochs_not_on_chain()?,
        );
        let open = store.open_jobs()?;
        let by_job_state: Vec<(String, String)> = crate::jobs::JobState::ALL
            .iter()
            .filter(|st| !st.is_final())
            .map(|st| {
                let n = open.iter().filter(|j| j.state == *st).count();
                (format!("{{state=\"{}\"}}", st.as_str()), n.to_string())
            })
            .collect();
        out.family("heliostat_jobs_open", "gauge", "Jobs not finished, by state.", &by_job_state);
        out.family(
            "heliostat_job_events_total",
            "counter",
            "Devices' job events taken by dispatch, by effect (moved a job, recorded progress, ignored, malformed).",
            &labelled("effect", &dispatch["job_events"]),
        );
        let logins: Vec<(String, String)> = s
            .console
            .logins()
            .into_iter()
            .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), v.to_string()))
            .collect();
        out.family(
            "heliostat_console_logins_total",
            "counter",
            "Console login attempts since the controller started, by outcome (ok, refused, limited).",
            &logins,
        );
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out.0).into_response())
    })
    .await
}
