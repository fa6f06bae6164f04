//! Results checked before they are paid for.
//!
//! A completed `matmul_f32` job waits in `validating` for its outputs (the agent uploads
//! them, hash-checked against its receipt). Once they are in, dispatch checks the product
//! with Freivalds' method ([`crate::validate`]) against the buyer's inputs in the blob
//! store, with vectors drawn from the operating system's randomness now:
//! - it holds: the job is `done` and paid (the device marked `validated`);
//! - it is wrong: the device is marked `wrong` with the evidence (its receipt, the output
//!   hashes, what the check found), the outputs are forgotten, and the job is queued again,
//!   never for that device; the buyer's escrow stays held for the next run;
//! - it cannot be checked (a non-finite value): `done` and paid, the reason saying so;
//! - the outputs do not come within the progress grace: the device is marked `failed` and
//!   the job queued again elsewhere.
//!
//! Other workloads are done on their receipts (redundant runs and spot checks: not yet).

use attest::msg::Workload;
use serde_json::json;

use super::{DispatchStore, Dispatcher, mark, move_to};
use crate::jobs::JobState;
use crate::reputation::MarkKind;
use crate::store::StoreError;
use crate::store::jobs::JobRecord;
use crate::validate::{FREIVALDS_ROUNDS, freivalds};

/// A matrix product's dimensions, if the job is one.
fn matmul_dims(job: &JobRecord) -> Option<(usize, usize, usize)> {
    let Workload::Builtin { kernel, params } = job.order.workload() else {
        return None;
    };
    if kernel != "matmul_f32" {
        return None;
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| usize::try_from(p.value).ok())
    };
    Some((get("m")?, get("n")?, get("k")?))
}

impl Dispatcher {
    /// Whether a completed `job` is validated before it is done.
    pub(super) fn validates(&self, job: &JobRecord) -> bool {
        self.blob_dir.is_some() && matmul_dims(job).is_some()
    }

    /// Validates the results of the jobs waiting in `validating` whose outputs are in.
    pub(super) fn validate_results<S: DispatchStore>(
        &mut self,
        store: &mut S,
        open: &[JobRecord],
        now: u64,
    ) -> Result<(), StoreError> {
        for job in open.iter().filter(|j| j.state == JobState::Validating) {
            let Some(lease) = store.job_lease(job.id)? else {
                continue;
            };
            let outputs = store.job_outputs(job.id)?;
            if outputs.len() < job.order.output_sizes().len() {
                let grace = self.cfg.progress_grace_ms;
                if grace > 0 && now.saturating_sub(job.updated_ms) > grace {
                    let why = format!(
                        "{}: its outputs did not come within {} s of its receipt",
                        lease.device,
                        grace / 1000
                    );
                    mark(
                        store,
                        lease.device,
                        MarkKind::Failed,
                        Some(job.id),
                        &why,
                        now,
                    )?;
                    self.again_elsewhere(store, job, lease.device, now, &why)?;
                }
                continue;
            }
            let Some(dims) = matmul_dims(job) else {
                continue;
            };
            let Some(r) = super::receipt(&*store, lease.device, job.id, lease.start_ms)? else {
                continue;
            };
            let read = |h: attest::Hash32| -> Result<Vec<u8>, String> {
                let dir = self.blob_dir.as_ref().ok_or("no blob store")?;
                std::fs::read(dir.join(h.to_hex())).map_err(|e| format!("blob {h}: {e}"))
            };
            let inputs = job.order.inputs();
            let (a, b, c) = match (read(inputs[0]), read(inputs[1]), read(outputs[0].hash)) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (a, b, c) => {
                    // Tried again next tick (a blob being placed, a disk hiccup).
                    let e = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                    tracing::warn!(job = %job.id, error = ?e, "result not validated yet");
                    continue;
                }
            };
            let mut seed = [0u8; 8];
            if let Err(e) = getrandom::fill(&mut seed) {
                tracing::error!(error = %e, "no randomness for Freivalds' check; tried next tick");
                continue;
            }
            let checked = freivalds(dims, &a, &b, &c, FREIVALDS_ROUNDS, u64::from_le_bytes(seed));
            let at = format!("receipt seq {} from {}", r.link.seq, lease.device);
            match checked {
                Err(e) if e.is_wrong() => {
                    let evidence = json!({
                        "job": job.id.to_string(),
                        "receipt_seq": r.link.seq.0,
                        "output_hash": r.output_hash.to_hex(),
                        "outputs": outputs.iter().map(|o| o.hash.to_hex()).collect::<Vec<_>>(),
                        "check": "freivalds",
                        "rounds": FREIVALDS_ROUNDS,
                        "found": e.to_string(),
                    });
                    mark(
                        store,
                        lease.device,
                        MarkKind::Wrong,
                        Some(job.id),
                        &evidence.to_string(),
                        now,
                    )?;
                    tracing::warn!(job = %job.id, device = %lease.device, error = %e, "a wrong result");
                    self.slash_for(store, job, lease.device, &e.to_string(), now)?;
                    store.clear_job_outputs(job.id)?;
                    let why = format!("{at}: its result is wrong ({e}); placed again elsewhere");
                    self.again_elsewhere(store, job, lease.device, now, &why)?;
                }
                checked => {
                    let reason = match &checked {
                        Ok(()) => {
                            format!("{at}: result validated (Freivalds, {FREIVALDS_ROUNDS} rounds)")
                        }
                        Err(e) => format!("{at}: result not validated ({e})"),
                    };
                    if checked.is_ok() {
                        mark(
                            store,
                            lease.device,
                            MarkKind::Validated,
                            Some(job.id),
                            &reason,
                            now,
                        )?;
                    }
                    let p = self.payout(store, lease.device, &r)?;
                    if let Ok(t) = JobState::Validating.transition(JobState::Done, now, &reason) {
                        store.apply_transition(job.id, &t.with_payout(p))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes `slash_ppm` of the stake of the provider that runs `device` for a wrong result
    /// of `job`: half to its buyer, half to the platform (nothing without a provider or a
    /// stake).
    pub(super) fn slash_for<S: DispatchStore>(
        &self,
        store: &mut S,
        job: &JobRecord,
        device: attest::DeviceId,
        found: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let Some(provider) = store.device_provider(device)? else {
            return Ok(());
        };
        let staked = store.balance(crate::ledger::Book::Stake(provider))?;
        let memo = format!("a wrong result on {device}: {found}");
        if let Some(tx) = crate::ledger::slash(
            provider,
            staked,
            self.cfg.slash_ppm,
            job.owner,
            job.id,
            &memo,
        )? {
            let n = store.post(&tx, now)?;
            tracing::warn!(job = %job.id, %device, provider = provider.0, tx = n, "stake slashed");
        }
        Ok(())
    }

    /// Queues `job` again, never for `device`.
    fn again_elsewhere<S: DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        device: attest::DeviceId,
        now: u64,
        why: &str,
    ) -> Result<(), StoreError> {
        self.excluded.entry(job.id).or_default().insert(device);
        store.drop_job_lease(job.id)?;
        // Not known to the scheduler since its receipt: the next tick gives it again.
        self.scheduler.cancel(job.id);
        self.known.remove(&job.id);
        move_to(
            store,
            job.id,
            JobState::Validating,
            JobState::Queued,
            now,
            why,
        )?;
        Ok(())
    }
}

/// The devices a job must not go to, for tests.
#[cfg(test)]
impl Dispatcher {
    pub(super) fn excluded_for(&self, job: attest::msg::JobId) -> Vec<attest::DeviceId> {
        self.excluded
            .get(&job)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}
