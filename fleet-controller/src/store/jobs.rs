//! Jobs as stored: the order, its state history, the blobs it names (inputs, PTX module,
//! outputs). Reads are by owner, so an account cannot be handed another's job by mistake.
//!
//! Invariants every backend keeps:
//! - a job is stored with its blobs and its first history entry (`queued`) in one
//!   transaction;
//! - a state moves only by a [`Transition`] (legal by construction) from the state the job
//!   is in, and the move and its history entry are one transaction; a move from a state
//!   the job has already left changes nothing.

use attest::Hash32;
use attest::msg::JobId;

use super::StoreError;
use crate::accounts::AccountId;
use crate::jobs::{JobOrder, JobState, Transition};

/// A job to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Its id.
    pub id: JobId,
    /// The buyer.
    pub owner: AccountId,
    /// What was asked, checked.
    pub order: JobOrder,
    /// When it was accepted (controller clock, ms).
    pub created_ms: u64,
    /// Micro-credits held from the buyer's wallet in escrow for it (0: none), in the same
    /// transaction as the job is stored.
    pub escrow: u64,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// The buyer.
    pub owner: AccountId,
    /// Where it stands.
    pub state: JobState,
    /// What was asked.
    pub order: JobOrder,
    /// When it was accepted (ms).
    pub created_ms: u64,
    /// When its state last moved (ms).
    pub updated_ms: u64,
}

/// One entry of a job's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobEvent {
    /// Its place in the history (0 for `queued`, then 1, 2...): a reader that saw up to
    /// `seq` asks for what came after it.
    pub seq: u32,
    /// The state entered.
    pub state: JobState,
    /// When (ms).
    pub at_ms: u64,
    /// Why.
    pub reason: String,
}

/// Where a placed job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLease {
    /// The device.
    pub device: attest::DeviceId,
    /// When its `RunJob` was sent (ms).
    pub start_ms: u64,
    /// When it is expected to end (ms).
    pub expected_end_ms: u64,
    /// The nonce of that `RunJob`.
    pub nonce: u64,
    /// The device's last progress report for the job, if one came.
    pub progress: Option<LeaseProgress>,
}

/// What the device last said of a placed job's progress (its unsigned job events: advice
/// for people and for dispatch's watch, never accounted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LeaseProgress {
    /// Chunks done.
    pub chunks_done: u64,
    /// Chunks in all.
    pub chunks: u32,
    /// Whether the device's power governor holds it paused.
    pub paused: bool,
    /// When it came (controller clock, ms).
    pub at_ms: u64,
}

/// One output of a job, as its device uploaded it (hash-checked against the receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOutput {
    /// Its position among the job's outputs.
    pub index: u32,
    /// Its SHA-256 (the blob's name).
    pub hash: Hash32,
    /// Its size.
    pub bytes: u64,
}

/// The jobs part of the store.
pub trait JobStore {
    /// Stores a new job (state `queued`, with `reason` as its first history entry) with
    /// the blobs it names and its escrow (refused whole, `StoreError::Ledger`, when the
    /// buyer's wallet cannot hold it).
    fn insert_job(&mut self, job: &NewJob, reason: &str) -> Result<(), StoreError>;
    /// A job of `owner`: `None` when there is no such job or another account's.
    fn job_of(&self, owner: AccountId, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// `owner`'s jobs, newest first, at most `limit`.
    fn jobs_of(&self, owner: AccountId, limit: usize) -> Result<Vec<JobRecord>, StoreError>;
    /// A page of an owner's jobs, newest first: those older than job `before` (in the same
    /// order) when it is given.
    fn jobs_of_page(
        &self,
        owner: AccountId,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// A job's history, oldest first.
    fn job_history(&self, id: JobId) -> Result<Vec<JobEvent>, StoreError>;
    /// A job, whoever's (for dispatch and providers' uploads; never for a buyer's read).
    fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Every job not in a final state, of every account, oldest first (for dispatch).
    fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Where a job runs, if it is placed.
    fn job_lease(&self, id: JobId) -> Result<Option<JobLease>, StoreError>;
    /// Records a device's progress report on the job's lease; false (nothing changed) when
    /// the job has no lease on that device.
    fn set_job_progress(
        &mut self,
        id: JobId,
        device: attest::DeviceId,
        progress: &LeaseProgress,
    ) -> Result<bool, StoreError>;
    /// Records (or replaces, progress and all) where a job runs.
    fn put_job_lease(&mut self, id: JobId, lease: &JobLease) -> Result<(), StoreError>;
    /// Forgets where a job ran (it finished, or is queued again).
    fn drop_job_lease(&mut self, id: JobId) -> Result<(), StoreError>;
    /// Forgets a job's uploaded outputs (they did not match its receipt).
    fn clear_job_outputs(&mut self, id: JobId) -> Result<(), StoreError>;
    /// Applies a move if the job is still in its `from` state; false otherwise (another
    /// writer moved it first, or no such job). A move to a final state settles the job's
    /// escrow in the same transaction: paid out by the transition's payout when it is done,
    /// refunded to the buyer otherwise.
    fn apply_transition(&mut self, id: JobId, t: &Transition) -> Result<bool, StoreError>;
    /// A job's outputs, in order.
    fn job_outputs(&self, id: JobId) -> Result<Vec<JobOutput>, StoreError>;
    /// Records an output of a job (the agent's result upload, to come); a second one at
    /// the same index is refused unless it is the same.
    fn put_job_output(&mut self, id: JobId, output: &JobOutput) -> Result<bool, StoreError>;
}
