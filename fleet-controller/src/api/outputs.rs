//! `PUT /api/v1/jobs/{id}/outputs/{index}`: a device's agent uploads a finished job's
//! outputs (with its provider's token), one at a time. Each is streamed into the blob store
//! at exactly its declared size; when the last is in, all of them together must hash to
//! the `output_hash` of the receipt the device signed, or they are forgotten and the upload
//! refused. Only then can the buyer download them (`GET /api/v1/jobs/{id}/results`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use sha2::Digest;

use super::auth::Auth;
use super::blobs::{place, receive};
use super::{ApiState, AppError, blocking};
use crate::accounts::{AccountKind, Scope};
use crate::jobs::{JobState, parse_job_id};
use crate::store::accounts::AccountStore;
use crate::store::jobs::{JobOutput, JobStore};

/// The upload of output `index` of job `id`.
pub(super) async fn put(
    State(s): State<ApiState>,
    auth: Auth,
    Path((id, index)): Path<(String, u32)>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    if !matches!(caller.kind, AccountKind::Provider | AccountKind::Operator) {
        return Err(AppError::OutputRefused(
            "outputs are uploaded by a provider's agent".into(),
        ));
    }
    let job = parse_job_id(&id).ok_or_else(|| AppError::UnknownJob(id.clone()))?;
    let pool = s.store.clone();
    let checked = blocking(move || {
        let st = pool.get()?;
        let rec = st
            .job(job)?
            .ok_or_else(|| AppError::UnknownJob(job.to_string()))?;
        // A probe's output is judged by its receipt's hash alone: nothing to keep.
        if crate::store::probes::ProbeStore::probe(&*st, job)?.is_some() {
            return Ok(None);
        }
        if !matches!(rec.state, JobState::Done | JobState::Validating) {
            return Err(AppError::OutputRefused(format!(
                "job {job} is {}: outputs are taken once its receipt says it completed",
                rec.state.as_str()
            )));
        }
        let size = *rec
            .order
            .output_sizes()
            .get(index as usize)
            .ok_or_else(|| {
                AppError::OutputRefused(format!(
                    "job {job} has {} outputs; there is no output {index}",
                    rec.order.output_sizes().len()
                ))
            })?;
        let lease = st
            .job_lease(job)?
            .ok_or_else(|| AppError::OutputRefused(format!("job {job} ran nowhere")))?;
        // Only the provider that runs the device (when one is set) uploads its results;
        // to any other the job does not exist.
        if caller.kind == AccountKind::Provider
            && st
                .device_provider(lease.device)?
                .is_some_and(|p| p != caller.account)
        {
            return Err(AppError::UnknownJob(job.to_string()));
        }
        let r = crate::dispatch::receipt(&*st, lease.device, job, lease.start_ms)?
            .ok_or_else(|| AppError::OutputRefused(format!("no receipt of job {job}")))?;
        Ok(Some((size, r.output_hash)))
    })
    .await?;
    let Some((size, receipt_hash)) = checked else {
        return Ok(Json(json!({"job": id, "index": index, "kept": false})));
    };
    let (tmp, hash, len) = receive(&s.blobs, &format!("out-{id}-{index}"), body, |len| {
        (len > size)
            .then(|| AppError::OutputRefused(format!("output {index} is {size} bytes; more came")))
    })
    .await?;
    if len != size {
        return Err(AppError::OutputRefused(format!(
            "output {index} is {size} bytes; {len} came"
        )));
    }
    let (pool, dir, lock) = (s.store.clone(), s.blobs.clone(), s.blob_lock.clone());
    blocking(move || {
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        place(&dir, &tmp, &hash.to_hex())?;
        let mut st = pool.get()?;
        let output = JobOutput {
            index,
            hash,
            bytes: len,
        };
        if !st.put_job_output(job, &output)? {
            return Err(AppError::OutputRefused(format!(
                "output {index} of job {job} is in already, with other bytes"
            )));
        }
        let rec = st
            .job(job)?
            .ok_or_else(|| AppError::UnknownJob(job.to_string()))?;
        let have = st.job_outputs(job)?;
        let complete = have.len() == rec.order.output_sizes().len();
        if complete {
            // All in: together they must be what the device signed.
            let mut h = sha2::Sha256::new();
            let mut sorted = have.clone();
            sorted.sort_by_key(|o| o.index);
            for o in &sorted {
                let bytes = std::fs::read(dir.join(o.hash.to_hex()))
                    .map_err(|e| AppError::Internal(format!("reading output {}: {e}", o.index)))?;
                h.update(&bytes);
            }
            let got = attest::Hash32(h.finalize().into());
            if got != receipt_hash {
                st.clear_job_outputs(job)?;
                return Err(AppError::OutputMismatch(format!(
                    "the outputs hash to {got}; the device's receipt says {receipt_hash}: forgotten"
                )));
            }
        }
        Ok(Json(json!({
            "job": job.to_string(), "index": index, "sha256": hash.to_hex(),
            "bytes": len, "complete": complete,
        })))
    })
    .await
}
