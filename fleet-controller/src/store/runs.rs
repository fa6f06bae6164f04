//! The runs of a job that runs on more than one device (redundancy, a spot check): one row
//! a completed run, kept until the job ends and after (the evidence of who disagreed).

use attest::msg::JobId;
use attest::{DeviceId, Hash32};

use super::StoreError;
use crate::accounts::AccountId;

/// One completed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// 1, 2, ... in the order they completed.
    pub run: u32,
    /// Where it ran.
    pub device: DeviceId,
    /// Its lease's start (finds its receipt).
    pub start_ms: u64,
    /// Its receipt's sequence number.
    pub receipt_seq: u64,
    /// The output hash its receipt signed.
    pub output_hash: Hash32,
    /// Who runs the device (its payout's destination).
    pub provider: Option<AccountId>,
    /// Its price, micro-credits.
    pub price: u64,
    /// Runs the job needed when this one completed.
    pub needed: u32,
    /// Why it runs more than once (`redundancy`, `spot check`).
    pub why: String,
    /// When it was recorded (ms).
    pub at_ms: u64,
}

/// The runs part of the store.
pub trait RunStore {
    /// Records a completed run.
    fn add_job_run(&mut self, job: JobId, run: &JobRun) -> Result<(), StoreError>;
    /// A job's runs, in order.
    fn job_runs(&self, job: JobId) -> Result<Vec<JobRun>, StoreError>;
}
