//! Proof bundles: a device-period's and one job's, as `attest verify` reads them (JSON, or
//! postcard with `format=postcard`). Public: a proof is meant for anyone.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiQuery, ApiState, AppError, blocking, parse_id};

/// Query of the bundle route.
#[derive(Debug, Deserialize)]
pub struct BundleQuery {
    from: Option<u64>,
    to: Option<u64>,
    format: Option<String>,
}

/// A bundle in the format asked: postcard, or JSON.
fn respond(b: &attest::bundle::ProofBundle, format: Option<&str>) -> Response {
    match format {
        Some("postcard") => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            b.to_postcard(),
        )
            .into_response(),
        _ => ([(header::CONTENT_TYPE, "application/json")], b.to_json()).into_response(),
    }
}

/// A device-period's proof bundle (JSON, or postcard with `format=postcard`).
pub(super) async fn bundle(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<BundleQuery>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let store = s.store.get()?;
        let b = crate::bundles::device_period(
            &*store,
            &s.controller,
            id,
            q.from.unwrap_or(0),
            q.to.unwrap_or(u64::MAX / 2),
            &s.intensity,
            q.to.is_none(),
        )?;
        Ok(respond(&b, q.format.as_deref()))
    })
    .await
}

/// The proof bundle of one job: its receipt and the device's records over the job's hours.
pub(super) async fn job_bundle(
    State(s): State<ApiState>,
    Path((id, job)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<BundleQuery>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let job = attest::hex::decode_array::<16>(&job)
        .map(attest::msg::JobId)
        .map_err(|e| AppError::BadJobId(format!("{job}: {e}")))?;
    blocking(move || {
        let store = s.store.get()?;
        let b = crate::bundles::job(&*store, &s.controller, id, job, &s.intensity)?;
        Ok(respond(&b, q.format.as_deref()))
    })
    .await
}
