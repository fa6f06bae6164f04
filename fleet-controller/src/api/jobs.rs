//! Jobs: a buyer submits one (scope `submit`), lists and reads its own with their state
//! history (scope `read`), cancels one (scope `submit`) and lists its outputs (scope
//! `read`). Another account's job is a 404 `unknown_job`, exactly like one that does not
//! exist, so job ids leak nothing.

use std::collections::HashMap;

use attest::msg::{JobId, Workload};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiQuery, ApiState, AppError, blocking};
use crate::accounts::Scope;
use crate::jobs::submit::named_blobs;
use crate::jobs::{JobRequest, JobState, new_job_id, parse_job_id, validate};
use crate::store::blobs::BlobStore;
use crate::store::jobs::{JobEvent, JobLease, JobRecord, JobStore, NewJob};

/// Most jobs one listing returns.
pub const MAX_LIST: usize = 1_000;

fn job_id(s: &str) -> Result<JobId, AppError> {
    parse_job_id(s).ok_or_else(|| AppError::BadJobId(format!("{s:?}: a job id is 32 hex digits")))
}

fn workload_name(w: &Workload) -> String {
    match w {
        Workload::Builtin { kernel, .. } => format!("builtin:{kernel}"),
        Workload::Ptx { kernel, .. } => format!("ptx:{kernel}"),
    }
}

/// A job as a listing shows it.
fn summary(rec: &JobRecord) -> Value {
    json!({
        "id": rec.id.to_string(),
        "state": rec.state,
        "workload": workload_name(rec.order.workload()),
        "deadline_ms": rec.order.deadline().0,
        "flexible": rec.order.flexible(),
        "created_ms": rec.created_ms,
        "updated_ms": rec.updated_ms,
    })
}

/// A job in full: what was asked, what a device is sent, and its history.
fn detail(rec: &JobRecord, history: &[JobEvent], lease: Option<JobLease>) -> Value {
    let mut v = summary(rec);
    v["order"] = json!(rec.order);
    v["spec"] = json!(rec.order.job_spec(rec.id));
    v["history"] = json!(history);
    // Where it was sent (its proof is that device's: `/api/v1/devices/{device}/jobs/{id}/bundle`).
    v["device"] = json!(lease.map(|l| l.device.to_string()));
    v["progress"] = json!(lease.and_then(|l| l.progress));
    v
}

/// Longest a `GET /api/v1/jobs/{id}/events` waits for something new, ms.
pub const MAX_EVENTS_WAIT_MS: u64 = 30_000;

/// Query of the job events route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this one (its `seq`); all when absent.
    after: Option<u32>,
    /// Wait up to this long (ms, at most [`MAX_EVENTS_WAIT_MS`]) for an event after
    /// `after` or for progress newer than `progress_after`, when there is none yet.
    wait_ms: Option<u64>,
    /// The `at_ms` of the progress the caller has seen.
    progress_after: Option<u64>,
}

/// `GET /api/v1/jobs/{id}/events`: the job's history after `after` and its latest
/// progress, waiting up to `wait_ms` when there is nothing new (a long poll: `fleetctl
/// logs` follows a job with it and resumes where it was after a lost connection).
pub(crate) async fn events(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    let id = job_id(&id)?;
    let until = std::time::Instant::now()
        + std::time::Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_EVENTS_WAIT_MS));
    loop {
        let st2 = s.clone();
        let (rec, history, lease) = blocking(move || {
            let st = st2.store.get()?;
            let rec = st
                .job_of(caller.account, id)?
                .ok_or_else(|| AppError::UnknownJob(id.to_string()))?;
            Ok((rec, st.job_history(id)?, st.job_lease(id)?))
        })
        .await?;
        let news: Vec<&JobEvent> = history
            .iter()
            .filter(|e| q.after.is_none_or(|a| e.seq > a))
            .collect();
        let progress = lease.and_then(|l| l.progress);
        let new_progress = progress.is_some_and(|p| q.progress_after.is_none_or(|a| p.at_ms > a));
        if !news.is_empty()
            || new_progress
            || rec.state.is_final()
            || std::time::Instant::now() >= until
        {
            return Ok(Json(json!({
                "id": id.to_string(),
                "state": rec.state,
                "final": rec.state.is_final(),
                "events": news,
                "progress": progress,
                "device": lease.map(|l| l.device.to_string()),
            })));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `POST /api/v1/jobs`: checks and stores a job (`queued`); 201 with the job.
pub(crate) async fn submit(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(req): ApiJson<JobRequest>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let caller = auth.require(Scope::Submit)?;
    let owner = caller.account;
    blocking(move || {
        // Under the blob lock: an input cannot be given up between its check and the
        // job that names it.
        let _held = s.blob_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = s.store.get()?;
        let mut owned = HashMap::new();
        for h in named_blobs(&req) {
            if let Some(b) = st.owned_blob(owner, h)? {
                owned.insert(h, b.bytes);
            }
        }
        let now = crate::runtime::now_ms();
        let order = validate(req, now, &owned)?;
        let id = new_job_id().map_err(|e| AppError::Internal(format!("random source: {e}")))?;
        let _span = crate::jobs::traced(
            tracing::info_span!("job.submit", job = %id, account = owner.0),
            id,
        )
        .entered();
        // Its price ceiling over its run time, held from the buyer's wallet with the job
        // (402 `insufficient_credits` when it cannot be, nothing stored).
        let run_ms = match order.job_spec(id).limits.max_duration_ms {
            0 => s.escrow_run_ms,
            ms => ms,
        };
        // A job that may run on several devices holds the ceiling of each run it may pay:
        // its redundancy and one more (a tie), or two for a PTX job that may be spot-checked
        // (runs past these are paid only as far as the escrow goes; the rest is refunded).
        let runs = match (order.redundancy(), order.workload()) {
            (r, _) if r >= 2 => u64::from(r) + 1,
            (_, Workload::Ptx { .. }) if s.spot_check_ppm > 0 => 2,
            _ => 1,
        };
        let escrow = crate::ledger::ceiling(order.max_price_micro_per_gpu_hour(), run_ms)
            .saturating_mul(runs);
        let job = NewJob {
            id,
            owner,
            order,
            created_ms: now,
            escrow,
        };
        st.insert_job(&job, "accepted")?;
        let rec = st
            .job_of(owner, id)?
            .ok_or_else(|| AppError::Internal(format!("job {id} vanished after its insert")))?;
        Ok((
            StatusCode::CREATED,
            Json(detail(&rec, &st.job_history(id)?, st.job_lease(id)?)),
        ))
    })
    .await
}

/// Query of the job listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most jobs returned, newest first (default 100, at most [`MAX_LIST`]).
    limit: Option<usize>,
    /// A cursor: only jobs older than this one (the previous page's `X-Next-Cursor`).
    before: Option<String>,
}

/// The response header that carries the cursor of the next page (absent on the last).
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// `GET /api/v1/jobs`: the caller's jobs, newest first, a page at a time (`limit`,
/// `before`; `X-Next-Cursor` names the next page's `before`).
pub(crate) async fn list(
    State(s): State<ApiState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<(axum::http::HeaderMap, Json<Value>), AppError> {
    let caller = auth.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let before = q.before.as_deref().map(job_id).transpose()?;
    blocking(move || {
        let jobs = s.store.get()?.jobs_of_page(caller.account, limit, before)?;
        let mut headers = axum::http::HeaderMap::new();
        if jobs.len() == limit
            && let Some(last) = jobs.last()
            && let Ok(v) = last.id.to_string().parse()
        {
            headers.insert(NEXT_CURSOR, v);
        }
        Ok((
            headers,
            Json(Value::Array(jobs.iter().map(summary).collect())),
        ))
    })
    .await
}

/// `GET /api/v1/jobs/{id}`: one of the caller's jobs with its state history.
pub(crate) async fn show(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    let id = job_id(&id)?;
    blocking(move || {
        let st = s.store.get()?;
        let rec = st
            .job_of(caller.account, id)?
            .ok_or_else(|| AppError::UnknownJob(id.to_string()))?;
        Ok(Json(detail(&rec, &st.job_history(id)?, st.job_lease(id)?)))
    })
    .await
}

/// `POST /api/v1/jobs/{id}/cancel`: cancels one of the caller's jobs, if its state allows
/// (not once it is validating or finished: 409 `illegal_state`).
pub(crate) async fn cancel(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Submit)?;
    let id = job_id(&id)?;
    blocking(move || {
        let mut st = s.store.get()?;
        // Another writer (the scheduler) may move the job between the read and the
        // write; the move is then retried from the state it found.
        for _ in 0..3 {
            let rec = st
                .job_of(caller.account, id)?
                .ok_or_else(|| AppError::UnknownJob(id.to_string()))?;
            let t = rec
                .state
                .transition(
                    JobState::Cancelled,
                    crate::runtime::now_ms(),
                    "cancelled by its buyer",
                )
                .map_err(|e| AppError::IllegalState(format!("job {id}: {e}")))?;
            if st.apply_transition(id, &t)? {
                let rec = st
                    .job_of(caller.account, id)?
                    .ok_or_else(|| AppError::UnknownJob(id.to_string()))?;
                return Ok(Json(detail(&rec, &st.job_history(id)?, st.job_lease(id)?)));
            }
        }
        Err(AppError::IllegalState(format!(
            "job {id} kept changing state; try again"
        )))
    })
    .await
}

/// `GET /api/v1/jobs/{id}/results`: the job's outputs by hash, each downloadable from
/// `GET /api/v1/blobs/{sha256}` with a token of the same account.
pub(crate) async fn results(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    let id = job_id(&id)?;
    blocking(move || {
        let st = s.store.get()?;
        let rec = st
            .job_of(caller.account, id)?
            .ok_or_else(|| AppError::UnknownJob(id.to_string()))?;
        let outputs: Vec<Value> = st
            .job_outputs(id)?
            .iter()
            .map(|o| {
                json!({
                    "index": o.index,
                    "sha256": o.hash.to_hex(),
                    "bytes": o.bytes,
                    "url": format!("/api/v1/blobs/{}", o.hash.to_hex()),
                })
            })
            .collect();
        Ok(Json(json!({
            "id": id.to_string(),
            "state": rec.state,
            "expected_sizes": rec.order.output_sizes(),
            "outputs": outputs,
        })))
    })
    .await
}

/// What an estimate asks: the job's price ceiling, run time and hardware needs (the rest of
/// a job request is taken and ignored, so a submit body can be sent as is).
#[derive(Debug, Deserialize)]
pub struct EstimateBody {
    /// The buyer's ceiling, micro-credits per GPU-hour.
    pub max_price_micro_per_gpu_hour: u64,
    /// The run time, ms (`market.default_run_ms` when 0 or absent).
    #[serde(default)]
    pub max_duration_ms: u64,
    /// Hardware needs.
    #[serde(default)]
    pub hardware: crate::jobs::HardwareRequest,
}

/// `POST /api/v1/jobs/estimate`: the job's price and carbon at each online offer that fits
/// it, cleanest first (an estimate: see [`crate::estimate`]).
pub(crate) async fn estimate(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<EstimateBody>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Read)?;
    let run_ms = match b.max_duration_ms {
        0 => s.escrow_run_ms,
        ms => ms,
    };
    let search = crate::market_view::Search {
        gpu: b.hardware.gpu_class.clone(),
        vram_min_mib: b.hardware.min_vram_mib,
        online_only: true,
        job_load_w: s.job_power_w,
        ..Default::default()
    };
    blocking(move || {
        let st = s.store.get()?;
        let now = crate::runtime::now_ms();
        let offers = crate::market_view::view(&*st, &search, now, 60_000)?;
        let job = crate::estimate::Job {
            run_h: run_ms as f64 / 3_600_000.0,
            power_w: s.job_power_w,
            max_price_micro_per_gpu_hour: b.max_price_micro_per_gpu_hour,
        };
        let est = crate::estimate::estimate(&offers, job, &s.intensity, now);
        Ok(Json(json!({
            "run_ms": run_ms,
            "power_w": s.job_power_w,
            "offers": est,
            "note": "an estimate at each offer now; the scheduler places the job with its own forecasts, and its carbon statement is what counts",
        })))
    })
    .await
}
