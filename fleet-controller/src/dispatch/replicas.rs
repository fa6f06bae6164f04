//! Jobs that run on more than one device, their outputs compared by the hash each
//! device's receipt signs.
//!
//! A job runs more than once when its buyer asked for `redundancy` r ≥ 2, or when it is a
//! PTX job (which the controller cannot recompute) drawn for a spot check
//! (`market.spot_check_ppm`, drawn from the operating system's randomness when its first
//! run completes, so the device cannot know). Runs go one after another, each on a device
//! of a provider that has not run the job yet (the lease model holds one device a job:
//! redundancy costs latency, not parallel capacity). Once the runs needed are in:
//! - a strict majority of them with one output hash wins: the runs that agree are marked
//!   `validated` and paid (each its device's price, out of the job's escrow, in the
//!   transaction that makes it `done`); each run that disagrees is marked `wrong` with the
//!   evidence (every run's device, receipt and output hash) and its provider's stake is
//!   slashed;
//! - no strict majority (a tie): the job runs once more;
//! - the winning output must come from the last run, whose device holds the lease and
//!   uploads the outputs the buyer downloads: when the last run lost, the job runs once more.
//!
//! At most [`MAX_EXTRA_RUNS`] runs beyond those needed; then the job fails and its escrow
//! is refunded (nobody is marked: with no majority, nobody is known to have lied).
//! Matrix products are never compared by hash (honest devices round differently); they are
//! checked by Freivalds' method instead (the buyer's `redundancy` is refused for them).

use std::collections::HashMap;

use attest::msg::{JobReceipt, Workload};
use attest::{DeviceId, Hash32};
use serde_json::json;

use super::{DispatchStore, Dispatcher, mark, move_to};
use crate::jobs::JobState;
use crate::reputation::MarkKind;
use crate::store::StoreError;
use crate::store::jobs::{JobLease, JobRecord};
use crate::store::runs::JobRun;

/// Runs a job may take beyond those it needed before it fails for want of agreement.
pub const MAX_EXTRA_RUNS: u32 = 2;

/// Whether `job` is a PTX job (the controller cannot recompute its result).
fn is_ptx(job: &JobRecord) -> bool {
    matches!(job.order.workload(), Workload::Ptx { .. })
}

/// A uniform draw below one million from the operating system (`None`: no randomness).
fn draw_ppm() -> Option<u32> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).ok()?;
    Some(u32::from_le_bytes(b) % 1_000_000)
}

impl Dispatcher {
    /// Whether `device` (or another device of its provider) already ran `job`: never the
    /// same provider twice for one job.
    pub(super) fn ran_there_before<S: DispatchStore>(
        &self,
        store: &S,
        job: &JobRecord,
        device: DeviceId,
    ) -> Result<bool, StoreError> {
        let runs = store.job_runs(job.id)?;
        if runs.is_empty() {
            return Ok(false);
        }
        let provider = store.device_provider(device)?;
        Ok(runs
            .iter()
            .any(|r| r.device == device || (provider.is_some() && r.provider == provider)))
    }

    /// A completed receipt of a job that may run more than once: recorded, and the job
    /// moved on (queued for its next run, done, or failed). `false` when the job runs once
    /// (the caller goes on as for any job).
    pub(super) fn replicated<S: DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        state: JobState,
        lease: &JobLease,
        r: &JobReceipt,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut runs = store.job_runs(job.id)?;
        let (needed, why) = match runs.last() {
            Some(last) => (last.needed, last.why.clone()),
            None if job.order.redundancy() >= 2 => {
                (u32::from(job.order.redundancy()), "redundancy".to_string())
            }
            None if is_ptx(job)
                && self.cfg.spot_check_ppm > 0
                && draw_ppm().is_some_and(|d| d < self.cfg.spot_check_ppm) =>
            {
                (2, "spot check".to_string())
            }
            None => return Ok(false),
        };
        let at = format!("receipt seq {} from {}", r.link.seq, lease.device);
        if runs.iter().any(|x| x.device == lease.device) {
            // Placed there again (exclusions are rebuilt from the runs after a restart, but
            // a lease from before one may finish): one device counts once.
            let why = format!("{at}: this device already ran it; placed again elsewhere");
            self.requeue(store, job, state, now, &why)?;
            return Ok(true);
        }
        let pay = self.payout(store, lease.device, r)?;
        let run = JobRun {
            run: runs.len() as u32 + 1,
            device: lease.device,
            start_ms: lease.start_ms,
            receipt_seq: r.link.seq.0,
            output_hash: r.output_hash,
            provider: pay.provider,
            price: pay.price,
            needed,
            why: why.clone(),
            at_ms: now,
        };
        store.add_job_run(job.id, &run)?;
        runs.push(run);
        let n = runs.len() as u32;
        if n < needed {
            let reason = format!(
                "{at}: run {n} of {needed} ({why}), output {}; runs again on another provider's device",
                r.output_hash
            );
            self.requeue(store, job, state, now, &reason)?;
            return Ok(true);
        }
        let mut counts: HashMap<Hash32, u32> = HashMap::new();
        for x in &runs {
            *counts.entry(x.output_hash).or_default() += 1;
        }
        let winner = counts.iter().find(|&(_, &c)| 2 * c > n).map(|(h, _)| *h);
        let last_won = winner == Some(r.output_hash);
        if !last_won {
            let reason = match winner {
                Some(w) => format!(
                    "{at}: run {n} ({why}) disagrees with the majority output {w}: runs once more for outputs from a device that agrees"
                ),
                None => format!("{at}: run {n} ({why}): no output has a majority; runs once more"),
            };
            if n >= needed + MAX_EXTRA_RUNS {
                let reason = format!(
                    "{at}: no agreement after {n} runs ({why}); failed, its escrow refunded"
                );
                move_to(store, job.id, state, JobState::Failed, now, &reason)?;
                self.forget(job.id);
                return Ok(true);
            }
            self.requeue(store, job, state, now, &reason)?;
            return Ok(true);
        }
        let winner = r.output_hash;
        let evidence = json!({
            "job": job.id.to_string(),
            "check": why,
            "majority": winner.to_hex(),
            "runs": runs.iter().map(|x| json!({
                "device": x.device.to_string(),
                "receipt_seq": x.receipt_seq,
                "output_hash": x.output_hash.to_hex(),
            })).collect::<Vec<_>>(),
        });
        let mut transition_payouts = Vec::new();
        for x in &runs {
            if x.output_hash == winner {
                let note = format!("{at}: agreed with {} of {n} runs ({why})", counts[&winner]);
                mark(
                    store,
                    x.device,
                    MarkKind::Validated,
                    Some(job.id),
                    &note,
                    now,
                )?;
                transition_payouts.push(crate::ledger::Payout {
                    provider: x.provider,
                    price: x.price,
                    fee_ppm: self.cfg.fee_ppm,
                });
            } else {
                mark(
                    store,
                    x.device,
                    MarkKind::Wrong,
                    Some(job.id),
                    &evidence.to_string(),
                    now,
                )?;
                tracing::warn!(job = %job.id, device = %x.device, "a run disagreed with the majority");
                let found = format!(
                    "run {} output {} against the majority {winner} ({why})",
                    x.run, x.output_hash
                );
                self.slash_for(store, job, x.device, &found, now)?;
            }
        }
        let reason = format!(
            "{at}: {} of {n} runs agree on output {winner} ({why})",
            counts[&winner]
        );
        self.forget(job.id);
        if let Ok(mut t) = state.transition(JobState::Done, now, &reason) {
            for p in transition_payouts {
                t = t.with_payout(p);
            }
            store.apply_transition(job.id, &t)?;
        }
        Ok(true)
    }

    /// Queues `job` for its next run (never where it ran: [`Self::ran_there_before`]).
    fn requeue<S: DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        state: JobState,
        now: u64,
        why: &str,
    ) -> Result<(), StoreError> {
        store.drop_job_lease(job.id)?;
        self.forget(job.id);
        move_to(store, job.id, state, JobState::Queued, now, why)?;
        Ok(())
    }

    /// The scheduler forgets a job whose run ended (the next tick offers it again if open).
    fn forget(&mut self, job: attest::msg::JobId) {
        self.scheduler.cancel(job);
        self.known.remove(&job);
    }
}
