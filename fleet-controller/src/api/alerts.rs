//! Alerts for operators (scope `operate`): what fires and is pending now, the latest
//! firings and resolutions with their webhook delivery, and silences.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/alerts` | `{states, events, silences}` |
//! | `POST /api/v1/alerts/silences` | `{rule?, subject?, hours, reason}`: a silence; 201 with its id |
//! | `POST /api/v1/alerts/silences/{id}/end` | ends it now |

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiState, AppError, blocking};
use crate::accounts::Scope;
use crate::store::alerts::{AlertStore, Silence};

/// Most events listed.
pub const MAX_EVENTS: usize = 200;

/// `GET /api/v1/alerts`.
pub(crate) async fn list(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || {
        let st = s.store.get()?;
        let now = crate::runtime::now_ms();
        let states: Vec<Value> = st
            .alert_states()?
            .into_iter()
            .map(|a| json!({"rule": a.rule, "subject": a.subject, "state": if a.firing { "firing" } else { "pending" }, "value": a.value, "since_ms": a.since_ms}))
            .collect();
        Ok(Json(json!({
            "states": states,
            "events": st.alert_events(MAX_EVENTS)?,
            "silences": st.silences(now)?,
        })))
    })
    .await
}

/// A silence to make.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// The rule (every rule when absent).
    #[serde(default)]
    pub rule: Option<String>,
    /// The subject (`device:hs-...`, `job:...`; every subject when absent).
    #[serde(default)]
    pub subject: Option<String>,
    /// How long, hours (up to 30 days).
    pub hours: f64,
    /// Why.
    pub reason: String,
}

/// `POST /api/v1/alerts/silences`.
pub(crate) async fn silence(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<SilenceBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let caller = auth.require(Scope::Operate)?;
    if !(b.hours > 0.0 && b.hours <= 720.0) {
        return Err(AppError::BadQuery(format!(
            "hours {}: more than 0, at most 720",
            b.hours
        )));
    }
    if b.reason.trim().is_empty() || b.reason.len() > 500 {
        return Err(AppError::BadQuery("reason: 1 to 500 bytes".into()));
    }
    let blank = |o: Option<String>| o.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    blocking(move || {
        let now = crate::runtime::now_ms();
        let silence = Silence {
            id: 0,
            rule: blank(b.rule),
            subject: blank(b.subject),
            until_ms: now + (b.hours * 3_600_000.0) as u64,
            reason: b.reason.trim().to_string(),
        };
        let id = s.store.get()?.add_silence(&silence, Some(caller.account.0), now)?;
        tracing::info!(id, account = caller.account.0, rule = ?silence.rule, subject = ?silence.subject, "alert silence added");
        Ok((StatusCode::CREATED, Json(json!({"id": id, "until_ms": silence.until_ms}))))
    })
    .await
}

/// `POST /api/v1/alerts/silences/{id}/end`.
pub(crate) async fn end_silence(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || {
        let ended = s.store.get()?.end_silence(id, crate::runtime::now_ms())?;
        Ok(Json(json!({"id": id, "ended": ended})))
    })
    .await
}
