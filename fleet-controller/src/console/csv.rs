//! CSV exports of the console's histories: the viewer's ledger and jobs, and a device's
//! hours. Each is what the page (or the API) shows, one row a line, RFC 4180 quoting.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::session::Viewer;
use crate::api::{ApiQuery, ApiState, AppError, Auth};

/// A field quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /ledger.csv`: every posting of the viewer's latest 1,000 transactions.
pub async fn ledger(State(s): State<ApiState>, viewer: Viewer) -> Result<Response, AppError> {
    let q = serde_json::from_value(json!({"limit": 1000}))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let (_, v) = crate::api::ledger::history(State(s), Auth(viewer.caller), ApiQuery(q)).await?;
    let mut out = String::from("tx,at_ms,at_utc,kind,job,book,amount_micro,memo\n");
    for t in v.0["transactions"].as_array().into_iter().flatten() {
        for p in t["postings"].as_array().into_iter().flatten() {
            let at = t["at_ms"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                t["id"],
                at,
                super::when(at),
                field(t["kind"].as_str().unwrap_or_default()),
                t["job"].as_str().unwrap_or_default(),
                field(p[0].as_str().unwrap_or_default()),
                p[1].as_i64().unwrap_or(0),
                field(t["memo"].as_str().unwrap_or_default()),
            ));
        }
    }
    Ok(csv("ledger.csv", out))
}

/// `GET /jobs.csv`: the viewer's latest 1,000 jobs.
pub async fn jobs(State(s): State<ApiState>, viewer: Viewer) -> Result<Response, AppError> {
    let q = serde_json::from_value(json!({"limit": 1000}))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let (_, v) = crate::api::jobs::list(State(s), Auth(viewer.caller), ApiQuery(q)).await?;
    let mut out = String::from("job,workload,state,flexible,created_ms,updated_ms,deadline_ms\n");
    for j in v.0.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            j["id"].as_str().unwrap_or_default(),
            field(j["workload"].as_str().unwrap_or_default()),
            j["state"].as_str().unwrap_or_default(),
            j["flexible"],
            j["created_ms"],
            j["updated_ms"],
            j["deadline_ms"],
        ));
    }
    Ok(csv("jobs.csv", out))
}

/// The hours export's period.
#[derive(Debug, Default, serde::Deserialize)]
pub struct HoursQuery {
    /// Days back from now (1 to 31, 7 by default).
    days: Option<u64>,
}

/// `GET /devices/{id}/hours.csv`: the device's hour-by-hour accounting (Wh, g CO2e).
pub async fn hours(
    State(s): State<ApiState>,
    _viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<HoursQuery>,
) -> Result<Response, AppError> {
    let id =
        attest::DeviceId::parse(&id).map_err(|e| AppError::BadDeviceId(format!("{id}: {e}")))?;
    let now = crate::runtime::now_ms();
    let from = now.saturating_sub(q.days.unwrap_or(7).clamp(1, 31) * 86_400_000);
    let (pool, intensity) = (s.store.clone(), s.intensity.clone());
    let made = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        use crate::store::Store;
        let st = pool.get()?;
        let dev = st.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        Ok(crate::accounting::device_hours(
            &*st, &dev, &intensity, from, now,
        )?)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    let wh = |mj: u64| format!("{:.3}", mj as f64 / 3.6e6);
    let mut out = String::from(
        "hour_start_utc,solar_wh,battery_charge_wh,battery_discharge_wh,grid_import_wh,grid_export_wh,load_wh,renewable_wh,intensity_g_per_kwh,co2e_g\n",
    );
    for h in &made.statement.hours {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{:.3}\n",
            super::when(h.hour * 3_600_000),
            wh(h.energy.solar.0),
            wh(h.energy.battery_charge.0),
            wh(h.energy.battery_discharge.0),
            wh(h.energy.grid_import.0),
            wh(h.energy.grid_export.0),
            wh(h.energy.load.0),
            wh(h.renewable.0),
            f64::from(h.intensity_mg_per_kwh) / 1000.0,
            h.co2e_mg as f64 / 1000.0,
        ));
    }
    Ok(csv(&format!("{id}-hours.csv"), out))
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        assert_eq!(field("payout"), "payout");
        assert_eq!(field(r#"wire 7, batch "a""#), r#""wire 7, batch ""a""""#);
    }
}
