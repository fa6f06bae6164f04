//! Energy attribute certificates: an operator imports a buyer's (scope `operate`); a buyer
//! lists its holding (scope `read`), retires one for an hour of a done job (scope `submit`)
//! and reads the job's emissions, measured and covered apart (scope `read`).

use attest::msg::Certificate;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiQuery, ApiState, AppError, blocking, parse_id};
use crate::accounts::{AccountId, AccountKind, Scope};
use crate::certificates::{Ask, emissions, import, retire};
use crate::jobs::parse_job_id;
use crate::store::certificates::{CertificateStore, Held};

/// Body of an import.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// The buyer that holds them.
    account: u64,
    /// The certificates, as their registry issued them.
    certificates: Vec<Certificate>,
}

/// `POST /api/v1/certificates`: imports certificates into a buyer's holding, all or none;
/// 201 with how many.
pub(super) async fn import_certificates(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<ImportBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || {
        let mut st = s.store.get()?;
        let n = import(
            &mut *st,
            AccountId(b.account),
            &b.certificates,
            crate::runtime::now_ms(),
        )?;
        tracing::info!(
            account = b.account,
            certificates = n,
            "certificates imported"
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({"account": b.account, "imported": n})),
        ))
    })
    .await
}

/// Query of the holding listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldingQuery {
    /// An operator's choice of account (every account's without).
    account: Option<u64>,
}

fn held(h: &Held) -> Value {
    json!({
        "certificate": h.certificate,
        "account": h.account.0,
        "imported_ms": h.imported_ms,
        "retired": h.retired,
    })
}

/// `GET /api/v1/certificates`: the caller's certificates (an operator: any account's),
/// each with its retirement once retired.
pub(super) async fn list(
    State(s): State<ApiState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<HoldingQuery>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    let account = match (caller.kind, q.account) {
        (AccountKind::Operator, a) => a.map(AccountId),
        (_, Some(a)) if a != caller.account.0 => {
            return Err(AppError::BadQuery(
                "only an operator lists another account's certificates".into(),
            ));
        }
        _ => Some(caller.account),
    };
    blocking(move || {
        let all = s.store.get()?.certificates(account)?;
        Ok(Json(
            json!({"certificates": all.iter().map(held).collect::<Vec<_>>()}),
        ))
    })
    .await
}

/// Body of a retirement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireBody {
    /// The certificate's id.
    certificate: String,
    /// The hour it covers (hours since the Unix epoch, UTC).
    hour: u64,
    /// The device whose run it covers (a job that ran on several); the job's device when
    /// absent.
    device: Option<String>,
}

fn job(id: &str) -> Result<attest::msg::JobId, AppError> {
    parse_job_id(id).ok_or_else(|| AppError::BadJobId(format!("{id:?}: a job id is 32 hex digits")))
}

/// `POST /api/v1/jobs/{id}/retirements`: retires a certificate the caller holds for one
/// hour of its done job; 201 with the retirement (what it covers), or the reason it is
/// refused.
pub(super) async fn retire_certificate(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RetireBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let caller = auth.require(Scope::Submit)?;
    let job = job(&id)?;
    let device = b.device.as_deref().map(parse_id).transpose()?;
    blocking(move || {
        let mut st = s.store.get()?;
        let ask = Ask {
            account: caller.account,
            job,
            device,
            certificate: &b.certificate,
            hour: b.hour,
        };
        let r = retire(&mut *st, &s.intensity, &ask, crate::runtime::now_ms())?;
        tracing::info!(job = %job, certificate = %r.certificate.id, hour = r.hour, covered_mg = r.covered_mg, "certificate retired");
        Ok((StatusCode::CREATED, Json(json!(r))))
    })
    .await
}

/// Query of a job's emissions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmissionsQuery {
    /// The device (a job that ran on several); the job's device when absent.
    device: Option<String>,
}

/// `GET /api/v1/jobs/{id}/emissions`: a done job's emissions as measured and the part
/// retired certificates cover, hour by hour, apart (never netted).
pub(super) async fn job_emissions(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EmissionsQuery>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    let job = job(&id)?;
    let device = q.device.as_deref().map(parse_id).transpose()?;
    blocking(move || {
        let st = s.store.get()?;
        let e = emissions(&*st, &s.intensity, caller.account, job, device)?;
        Ok(Json(json!(e)))
    })
    .await
}
