//! Results checked before they are paid for.
//!
//! A completed built-in job waits in `validating` for its outputs (the agent uploads them,
//! hash-checked against its receipt). Once they are in, dispatch checks them against the
//! buyer's inputs in the blob store ([`crate::validate`]), with randomness drawn from the
//! operating system now: a matrix product by Freivalds' method, a `sha256_batch` or a
//! `mandelbrot` by recomputing [`SAMPLE_CHECKS`] items drawn at random:
//! - it holds: the job is `done` and paid (the device marked `validated`);
//! - it is wrong: the device is marked `wrong` with the evidence (its receipt, the output
//!   hashes, what the check found), the outputs are forgotten, and the job is queued again,
//!   never for that device; the buyer's escrow stays held for the next run;
//! - it cannot be checked (a non-finite value): `done` and paid, the reason saying so;
//! - the outputs do not come within the progress grace: the device is marked `failed` and
//!   the job queued again elsewhere.
//!
//! PTX workloads, which the controller cannot run, are done on their receipts.

use attest::msg::Workload;
use serde_json::json;

use super::{DispatchStore, Dispatcher, mark, move_to};
use crate::jobs::JobState;
use crate::reputation::MarkKind;
use crate::store::StoreError;
use crate::store::jobs::JobRecord;
use crate::validate::{
    FREIVALDS_ROUNDS, MandelbrotFrame, SAMPLE_CHECKS, freivalds, sample_mandelbrot, sample_sha256,
};

/// How a completed job's result is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Freivalds' method over the product's dimensions (m, n, k).
    Freivalds((usize, usize, usize)),
    /// Sampled digests of a batch of `count` items of `item_len` bytes.
    Sha256((u64, u64)),
    /// Sampled pixels of a frame.
    Mandelbrot(MandelbrotFrame),
}

/// How `job`'s result is checked, if it is a built-in the controller can check.
fn check_for(job: &JobRecord) -> Option<Check> {
    let Workload::Builtin { kernel, params } = job.order.workload() else {
        return None;
    };
    let get = |name: &str| params.iter().find(|p| p.name == name).map(|p| p.value);
    let u = |name: &str| get(name).and_then(|v| u32::try_from(v).ok());
    match kernel.as_str() {
        "matmul_f32" => {
            let d = |name: &str| get(name).and_then(|v| usize::try_from(v).ok());
            Some(Check::Freivalds((d("m")?, d("n")?, d("k")?)))
        }
        "sha256_batch" => {
            let d = |name: &str| get(name).and_then(|v| u64::try_from(v).ok());
            Some(Check::Sha256((d("count")?, d("item_len")?)))
        }
        "mandelbrot" => Some(Check::Mandelbrot(MandelbrotFrame {
            width: u("width")?,
            height: u("height")?,
            x0: get("x0")?,
            y0: get("y0")?,
            step: get("step")?,
            max_iter: u("max_iter")?,
        })),
        _ => None,
    }
}

/// What checking a result found.
enum Finding {
    /// It holds: how it was checked.
    Holds(String),
    /// It is wrong: the check's name and what it found.
    Wrong(&'static str, String),
    /// It cannot be checked: why.
    Unverifiable(String),
}

impl Check {
    /// The inputs (by position) the check reads besides the output.
    fn inputs(&self) -> &'static [usize] {
        match self {
            Check::Freivalds(_) => &[0, 1],
            Check::Sha256(_) => &[0],
            Check::Mandelbrot(_) => &[],
        }
    }

    fn run(&self, inputs: &[Vec<u8>], output: &[u8], seed: u64) -> Finding {
        match *self {
            Check::Freivalds(dims) => {
                match freivalds(dims, &inputs[0], &inputs[1], output, FREIVALDS_ROUNDS, seed) {
                    Ok(()) => Finding::Holds(format!("Freivalds, {FREIVALDS_ROUNDS} rounds")),
                    Err(e) if e.is_wrong() => Finding::Wrong("freivalds", e.to_string()),
                    Err(e) => Finding::Unverifiable(e.to_string()),
                }
            }
            Check::Sha256(shape) => {
                match sample_sha256(shape, &inputs[0], output, SAMPLE_CHECKS, seed) {
                    Ok(n) => Finding::Holds(format!("{n} sampled digests recomputed")),
                    Err(e) => Finding::Wrong("sampled", e.to_string()),
                }
            }
            Check::Mandelbrot(frame) => {
                match sample_mandelbrot(&frame, output, SAMPLE_CHECKS, seed) {
                    Ok(n) => Finding::Holds(format!("{n} sampled pixels recomputed")),
                    Err(e) => Finding::Wrong("sampled", e.to_string()),
                }
            }
        }
    }
}

impl Dispatcher {
    /// Whether a completed `job` is validated before it is done.
    pub(super) fn validates(&self, job: &JobRecord) -> bool {
        self.blob_dir.is_some() && check_for(job).is_some()
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
            let _span = crate::jobs::traced(
                tracing::info_span!("job.validate", job = %job.id, device = %lease.device),
                job.id,
            )
            .entered();
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
            let Some(check) = check_for(job) else {
                continue;
            };
            let Some(r) = super::receipt(&*store, lease.device, job.id, lease.start_ms)? else {
                continue;
            };
            let read = |h: attest::Hash32| -> Result<Vec<u8>, String> {
                let dir = self.blob_dir.as_ref().ok_or("no blob store")?;
                std::fs::read(dir.join(h.to_hex())).map_err(|e| format!("blob {h}: {e}"))
            };
            let blobs: Result<Vec<Vec<u8>>, String> = check
                .inputs()
                .iter()
                .map(|&i| read(job.order.inputs()[i]))
                .chain([read(outputs[0].hash)])
                .collect();
            let mut blobs = match blobs {
                Ok(b) => b,
                Err(e) => {
                    // Tried again next tick (a blob being placed, a disk hiccup).
                    tracing::warn!(job = %job.id, error = %e, "result not validated yet");
                    continue;
                }
            };
            let output = blobs.pop().unwrap_or_default();
            let mut seed = [0u8; 8];
            if let Err(e) = getrandom::fill(&mut seed) {
                tracing::error!(error = %e, "no randomness for a result check; tried next tick");
                continue;
            }
            let finding = check.run(&blobs, &output, u64::from_le_bytes(seed));
            let at = format!("receipt seq {} from {}", r.link.seq, lease.device);
            match finding {
                Finding::Wrong(how, found) => {
                    let evidence = json!({
                        "job": job.id.to_string(),
                        "receipt_seq": r.link.seq.0,
                        "output_hash": r.output_hash.to_hex(),
                        "outputs": outputs.iter().map(|o| o.hash.to_hex()).collect::<Vec<_>>(),
                        "check": how,
                        "rounds": match check {
                            Check::Freivalds(_) => FREIVALDS_ROUNDS,
                            _ => SAMPLE_CHECKS,
                        },
                        "found": found,
                    });
                    mark(
                        store,
                        lease.device,
                        MarkKind::Wrong,
                        Some(job.id),
                        &evidence.to_string(),
                        now,
                    )?;
                    tracing::warn!(job = %job.id, device = %lease.device, error = %found, "a wrong result");
                    self.slash_for(store, job, lease.device, &found, now)?;
                    store.clear_job_outputs(job.id)?;
                    let why =
                        format!("{at}: its result is wrong ({found}); placed again elsewhere");
                    self.again_elsewhere(store, job, lease.device, now, &why)?;
                }
                finding => {
                    let reason = match &finding {
                        Finding::Holds(how) => format!("{at}: result validated ({how})"),
                        Finding::Unverifiable(e) | Finding::Wrong(_, e) => {
                            format!("{at}: result not validated ({e})")
                        }
                    };
                    if matches!(finding, Finding::Holds(_)) {
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
