//! One job's execution (sans-IO): given the time, the governor's decision and the energy
//! used so far, what to do next — run the next chunk, wait (duty cycle, pause), or finish.
//! The runner thread drives it with the wall clock; the governor tests drive it with a
//! simulated clock and the simulated rig, so both run the very same decisions.

use attest::Hash32;
use attest::msg::{Backend, JobOutcome, JobSpec};
use sha2::{Digest, Sha256};

use super::{JobError, PreparedJob};
use crate::governor::Decision;

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Run chunk `i` now, then report with [`Execution::chunk_ran`].
    RunChunk(u32),
    /// Nothing to do before this time (ms): duty-cycle rest or pause.
    WaitUntil(u64),
    /// The job is over.
    Finished(JobOutcome),
}

/// How often a paused job looks again, ms.
pub const PAUSE_POLL_MS: u64 = 250;

/// A running job.
pub struct Execution {
    /// What was asked.
    pub spec: JobSpec,
    job: PreparedJob,
    /// When it started (ms).
    pub started_ms: u64,
    run_ms: u64,
    /// Times it was paused (by the governor or the operator).
    pub pauses: u32,
    paused: bool,
    operator_paused: bool,
    cancelled: bool,
    next_run_ms: u64,
    work_per_s: f64,
    work_done: u64,
}

impl Execution {
    /// Starts a prepared job at `now`; `work_per_s` is the backend's throughput estimate
    /// (work units per second), refined from every chunk that runs.
    pub fn new(spec: JobSpec, job: PreparedJob, now: u64, work_per_s: f64) -> Execution {
        Execution {
            spec,
            job,
            started_ms: now,
            run_ms: 0,
            pauses: 0,
            paused: false,
            operator_paused: false,
            cancelled: false,
            next_run_ms: now,
            work_per_s: work_per_s.max(1.0),
            work_done: 0,
        }
    }

    /// Seconds of full-speed running left, by the throughput seen so far.
    pub fn remaining_s(&self) -> f64 {
        self.job.work_units().saturating_sub(self.work_done) as f64 / self.work_per_s
    }

    /// The throughput estimate, work units per second.
    pub fn work_per_s(&self) -> f64 {
        self.work_per_s
    }

    /// Chunks run so far.
    pub fn chunks_done(&self) -> u32 {
        self.job.chunks_done()
    }

    /// Chunks in all.
    pub fn chunk_count(&self) -> u32 {
        self.job.chunk_count()
    }

    /// Whether it is paused now.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Where it runs.
    pub fn backend(&self) -> Backend {
        self.job.backend().clone()
    }

    /// Operator pause (a signed `Pause` command).
    pub fn pause(&mut self) {
        self.operator_paused = true;
    }

    /// Operator resume.
    pub fn resume(&mut self) {
        self.operator_paused = false;
    }

    /// Cancel: the next step finishes it.
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// The next step at `now`, with the governor's decision and the job's energy so far
    /// (millijoules, from the meter's counters).
    pub fn next(&mut self, now: u64, d: &Decision, energy_mj: u64) -> Step {
        let limits = self.spec.limits;
        if self.cancelled {
            return Step::Finished(JobOutcome::Cancelled);
        }
        if self.job.is_complete() {
            return Step::Finished(JobOutcome::Completed);
        }
        if now >= limits.deadline.0 {
            return Step::Finished(JobOutcome::DeadlineMissed);
        }
        if limits.max_duration_ms > 0 && self.run_ms >= limits.max_duration_ms {
            return Step::Finished(JobOutcome::Failed(format!(
                "ran {} ms, its limit is {} ms",
                self.run_ms, limits.max_duration_ms
            )));
        }
        if limits.max_energy.0 > 0 && energy_mj > limits.max_energy.0 {
            return Step::Finished(JobOutcome::Failed(format!(
                "used {energy_mj} mJ, its limit is {} mJ",
                limits.max_energy.0
            )));
        }
        if d.pause || self.operator_paused {
            if !self.paused {
                self.paused = true;
                self.pauses += 1;
            }
            // No power now and not enough time left even at full speed afterwards: say so
            // now rather than at the deadline (the chunks done are kept: `chunks` in the
            // receipt says how far it got).
            let full_speed_end = now + (self.remaining_s() * 1000.0) as u64;
            if d.pause && full_speed_end > limits.deadline.0 {
                return Step::Finished(JobOutcome::DeadlineMissed);
            }
            return Step::WaitUntil(now + PAUSE_POLL_MS);
        }
        self.paused = false;
        if now < self.next_run_ms {
            return Step::WaitUntil(self.next_run_ms);
        }
        Step::RunChunk(self.job.chunks_done())
    }

    /// Runs chunk `i` (the compute itself; the caller times it).
    pub fn run_chunk(&mut self, i: u32) -> Result<(), JobError> {
        let w = self.job.chunk_work_units(i);
        self.job.run_chunk(i)?;
        self.work_done += w;
        Ok(())
    }

    /// Work units of chunk `i` (the simulated clock's measure of its length).
    pub fn chunk_work_units(&self, i: u32) -> u64 {
        self.job.chunk_work_units(i)
    }

    /// Reports that chunk `i` ran from `start` to `end` (ms) under duty `duty`: the rest
    /// before the next chunk keeps the running share at `duty`.
    pub fn chunk_ran(&mut self, i: u32, start: u64, end: u64, duty: f64) {
        let took = end.saturating_sub(start).max(1);
        self.run_ms += took;
        let seen = self.job.chunk_work_units(i) as f64 / (took as f64 / 1000.0);
        self.work_per_s = 0.5 * self.work_per_s + 0.5 * seen;
        let duty = duty.clamp(0.01, 1.0);
        self.next_run_ms = end + (took as f64 * (1.0 - duty) / duty) as u64;
    }

    /// Ends the job: its outputs (when complete) and their hash (SHA-256 over the outputs
    /// in order; each has its declared size, so the concatenation is unambiguous).
    /// Lets the job's worker (or GPU context) go while it is paused: see
    /// [`PreparedJob::release`].
    pub fn release(&mut self) {
        self.job.release();
    }

    /// Whether its worker was let go.
    pub fn is_released(&self) -> bool {
        self.job.is_released()
    }

    /// Continues a released job in `fresh` (prepared again and restored from the
    /// checkpoint taken at its release).
    pub fn take_over(&mut self, fresh: PreparedJob) -> Result<(), JobError> {
        self.job.take_over(fresh)
    }

    /// The chunks done and the outputs so far: a checkpoint.
    pub fn checkpoint(&mut self) -> Result<(u32, Vec<Vec<u8>>), JobError> {
        self.job.snapshot()
    }

    /// A completed job whose outputs cannot be read back ends `Failed`.
    pub fn finish(self, outcome: JobOutcome) -> (JobOutcome, Vec<Vec<u8>>, Hash32) {
        if outcome != JobOutcome::Completed {
            return (outcome, Vec::new(), Hash32::ZERO);
        }
        match self.job.finish() {
            Ok(outs) => {
                let hash = output_hash(&outs);
                (outcome, outs, hash)
            }
            Err(e) => (
                JobOutcome::Failed(format!("outputs unavailable: {e}")),
                Vec::new(),
                Hash32::ZERO,
            ),
        }
    }
}

/// SHA-256 over a job's outputs in order.
pub fn output_hash(outputs: &[Vec<u8>]) -> Hash32 {
    let mut h = Sha256::new();
    for o in outputs {
        h.update(o);
    }
    Hash32(h.finalize().into())
}
