//! Residual emissions covered by energy attribute certificates: an operator imports the
//! certificates a buyer bought (from a registry, into the buyer's holding in the ledger);
//! the buyer retires one for one of its done jobs and one hour the job drew grid energy in.
//! The rules are `attest::coverage`'s (the verifier applies them again to every retirement
//! a job's bundle carries): the certificate's region must be the device's, its production
//! interval must match the hour (granular: within it; a yearly REC: around it), and it
//! covers its energy at the hour's intensity, never more than the job's emissions left in
//! that hour. A certificate is retired once. Measured and covered stay apart: the job's
//! statement and SCI never change.

use attest::DeviceId;
use attest::coverage::{self, CertificateError, Coverage};
use attest::msg::{Certificate, JobId, Retirement};

use crate::accounts::{AccountId, AccountKind};
use crate::bundles::{BundleError, job_statement};
use crate::intensity::IntensityResolver;
use crate::jobs::JobState;
use crate::store::accounts::AccountStore;
use crate::store::certificates::{CertificateStore, RetireError, RetireRequest};
use crate::store::jobs::JobStore;
use crate::store::runs::RunStore;
use crate::store::{Store, StoreError};

/// Most certificates in one import.
pub const MAX_IMPORT: usize = 1_000;

/// Why an import was refused (nothing imported).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// None, or too many.
    #[error("an import holds 1 to {MAX_IMPORT} certificates, not {0}")]
    Count(usize),
    /// A malformed certificate.
    #[error("certificate #{index}: {reason}")]
    Malformed {
        /// Its place in the import.
        index: usize,
        /// What is wrong with it.
        reason: CertificateError,
    },
    /// The same id twice in the import.
    #[error("certificate {0} appears twice in the import")]
    Repeated(String),
    /// An id imported before.
    #[error("certificate {0} was imported before (a certificate is held once)")]
    Duplicate(String),
    /// No such account.
    #[error("no account {0}")]
    UnknownAccount(u64),
    /// Certificates are held by buyers.
    #[error("account {0} is not a buyer: certificates cover buyers' jobs")]
    NotABuyer(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports certificates into a buyer's holding, all or none; how many.
pub fn import<S: CertificateStore + AccountStore>(
    store: &mut S,
    account: AccountId,
    certificates: &[Certificate],
    now_ms: u64,
) -> Result<usize, ImportError> {
    if certificates.is_empty() || certificates.len() > MAX_IMPORT {
        return Err(ImportError::Count(certificates.len()));
    }
    let row = store
        .account(account)?
        .ok_or(ImportError::UnknownAccount(account.0))?;
    if row.kind != AccountKind::Buyer {
        return Err(ImportError::NotABuyer(account.0));
    }
    let mut ids = std::collections::HashSet::new();
    for (index, c) in certificates.iter().enumerate() {
        coverage::check_certificate(c)
            .map_err(|reason| ImportError::Malformed { index, reason })?;
        if !ids.insert(c.id.as_str()) {
            return Err(ImportError::Repeated(c.id.clone()));
        }
    }
    match store.import_certificates(account, certificates, now_ms)? {
        Some(id) => Err(ImportError::Duplicate(id)),
        None => Ok(certificates.len()),
    }
}

/// Why a retirement was refused (nothing retired).
#[derive(Debug, thiserror::Error)]
pub enum RetireFailure {
    /// No such job of the caller's.
    #[error("no job {0}")]
    UnknownJob(JobId),
    /// Only a done job's emissions are covered (its statement is final).
    #[error("job {job} is {state}: only a done job's emissions can be covered")]
    NotDone {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
    /// The job did not run on that device (or has run nowhere).
    #[error("job {job} did not run on {device:?}")]
    NotRunThere {
        /// The job.
        job: JobId,
        /// The device named, if one was.
        device: Option<DeviceId>,
    },
    /// The job's statement could not be made.
    #[error(transparent)]
    Statement(#[from] BundleError),
    /// The certificate or the rules refused it.
    #[error(transparent)]
    Refused(#[from] RetireError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a retirement asks for.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The buyer.
    pub account: AccountId,
    /// Its job.
    pub job: JobId,
    /// The device whose run it covers; the job's device when `None`.
    pub device: Option<DeviceId>,
    /// The certificate.
    pub certificate: &'a str,
    /// The hour (hours since the Unix epoch, UTC).
    pub hour: u64,
}

/// The device a job's coverage is about: the one named, if the job ran there, else where
/// it was last placed.
fn device_of<S: JobStore + RunStore>(
    store: &S,
    job: JobId,
    named: Option<DeviceId>,
) -> Result<DeviceId, RetireFailure> {
    let lease = store.job_lease(job)?.map(|l| l.device);
    let ran: Vec<DeviceId> = store.job_runs(job)?.iter().map(|r| r.device).collect();
    match named {
        Some(d) if lease == Some(d) || ran.contains(&d) => Ok(d),
        None => lease.ok_or(RetireFailure::NotRunThere { job, device: None }),
        Some(d) => Err(RetireFailure::NotRunThere {
            job,
            device: Some(d),
        }),
    }
}

/// The caller's done job and the device its coverage is about.
fn done_job<S: JobStore + RunStore>(
    store: &S,
    account: AccountId,
    job: JobId,
    device: Option<DeviceId>,
) -> Result<DeviceId, RetireFailure> {
    let rec = store
        .job_of(account, job)?
        .ok_or(RetireFailure::UnknownJob(job))?;
    if rec.state != JobState::Done {
        return Err(RetireFailure::NotDone {
            job,
            state: rec.state,
        });
    }
    device_of(store, job, device)
}

/// Retires a certificate the buyer holds for one hour of its done job.
pub fn retire<S: Store + JobStore + RunStore + CertificateStore>(
    store: &mut S,
    intensity: &IntensityResolver,
    ask: &Ask<'_>,
    now_ms: u64,
) -> Result<Retirement, RetireFailure> {
    let device = done_job(store, ask.account, ask.job, ask.device)?;
    let (statement, hellos) = job_statement(store, device, ask.job, intensity)?;
    let request = RetireRequest {
        account: ask.account,
        certificate: ask.certificate,
        job: ask.job,
        device,
        hour: ask.hour,
        at_ms: now_ms,
    };
    let cover = |c: &Certificate, earlier: &[Retirement]| {
        coverage::covers(&statement, &hellos, earlier, c, ask.hour)
    };
    Ok(store.retire(&request, &cover)??)
}

/// A job's emissions as measured and as covered, apart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobEmissions {
    /// The device the figures are about.
    pub device: String,
    /// Measured and covered, hour by hour.
    pub coverage: Coverage,
    /// The job's SCI per functional unit, mg CO2e (measured: certificates never lower it).
    pub sci_per_unit_mg: Option<u64>,
    /// The certificates retired for it, in order.
    pub retirements: Vec<Retirement>,
}

/// A done job's emissions and the certificates that cover them (sealed or not).
pub fn emissions<S: Store + JobStore + RunStore + CertificateStore>(
    store: &S,
    intensity: &IntensityResolver,
    account: AccountId,
    job: JobId,
    device: Option<DeviceId>,
) -> Result<JobEmissions, RetireFailure> {
    let device = done_job(store, account, job, device)?;
    let (statement, hellos) = job_statement(store, device, job, intensity)?;
    let retirements = store.job_retirements(job, device)?;
    let coverage = coverage::cover(&statement, &hellos, &retirements).map_err(|e| {
        StoreError::Corrupt(format!("job {job}'s stored retirements do not check: {e}"))
    })?;
    Ok(JobEmissions {
        device: device.to_string(),
        coverage,
        sci_per_unit_mg: statement.sci.map(|s| s.per_unit_mg),
        retirements,
    })
}
