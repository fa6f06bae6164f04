//! Energy attribute certificates as stored: the ones buyers hold (imported by an operator
//! from a registry) and their retirements, each for one job's hour, once. A retirement is
//! signed when the epoch that holds it closes, a leaf after the ledger's entries.
//!
//! Invariants every backend keeps: a certificate id is imported once; a certificate is
//! retired once (a second retirement is refused whole, nothing stored); a retirement's
//! coverage is computed in the same database transaction that stores it, over the job's
//! retirements stored before it (two at once cannot both cover the same milligram).

use attest::DeviceId;
use attest::coverage::CoverageError;
use attest::msg::{Certificate, JobId, Retirement};

use super::StoreError;
use crate::accounts::AccountId;

/// A certificate as a holder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The certificate.
    pub certificate: Certificate,
    /// Its holder.
    pub account: AccountId,
    /// When it was imported (ms).
    pub imported_ms: u64,
    /// Its retirement, once retired.
    pub retired: Option<Retirement>,
}

/// What a retirement asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireRequest<'a> {
    /// The account retiring it (it must hold it).
    pub account: AccountId,
    /// The certificate's id.
    pub certificate: &'a str,
    /// The job.
    pub job: JobId,
    /// The device whose statement it covers.
    pub device: DeviceId,
    /// The hour.
    pub hour: u64,
    /// Now (ms).
    pub at_ms: u64,
}

/// Why a retirement was refused (nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetireError {
    /// No such certificate held by the account (another's is not told apart).
    #[error("no certificate {0} held by this account")]
    UnknownCertificate(String),
    /// Retired already, for some job and hour.
    #[error(
        "certificate {id} was retired already (retirement {retirement}, for job {job} hour {hour})"
    )]
    AlreadyRetired {
        /// The certificate.
        id: String,
        /// Its retirement.
        retirement: u64,
        /// For which job.
        job: JobId,
        /// And hour.
        hour: u64,
    },
    /// The coverage rules refuse it (wrong hour or region, nothing left to cover...).
    #[error(transparent)]
    Coverage(#[from] CoverageError),
}

/// What a retirement covers after the job's earlier retirements, or why it is refused
/// (`attest::coverage::covers` over the job's statement).
pub type Cover<'a> = dyn Fn(&Certificate, &[Retirement]) -> Result<u64, CoverageError> + 'a;

/// The certificates part of the store.
pub trait CertificateStore {
    /// Imports certificates into `account`'s holding, all or none: `Some(id)` (nothing
    /// stored) when a certificate with that id was imported before.
    fn import_certificates(
        &mut self,
        account: AccountId,
        certificates: &[Certificate],
        at_ms: u64,
    ) -> Result<Option<String>, StoreError>;
    /// Certificates held by `account` (every account's with `None`), oldest import first.
    fn certificates(&self, account: Option<AccountId>) -> Result<Vec<Held>, StoreError>;
    /// Retires a certificate: in one database transaction, checks it is the account's
    /// and not retired, asks `cover` what it covers after the job's earlier retirements on
    /// that device (refusing it with `cover`'s reason), and stores the retirement.
    fn retire(
        &mut self,
        request: &RetireRequest<'_>,
        cover: &Cover<'_>,
    ) -> Result<Result<Retirement, RetireError>, StoreError>;
    /// A job's retirements on a device, in order (sealed or not).
    fn job_retirements(&self, job: JobId, device: DeviceId) -> Result<Vec<Retirement>, StoreError>;
    /// The retirements no epoch holds yet, in order.
    fn unsealed_retirements(&self) -> Result<Vec<Retirement>, StoreError>;
    /// A job's retirements on a device that epochs hold, in order: each one's signed
    /// envelope, its epoch and its leaf there; and how many wait for the next epoch.
    fn sealed_retirements(
        &self,
        job: JobId,
        device: DeviceId,
    ) -> Result<super::ledger::SealedEntries, StoreError>;
}
