//! `Retirement`: an energy attribute certificate retired by the controller's ledger for one
//! job and one hour (message kind 10, controller-signed). Sealed when the epoch that holds
//! it closes, a leaf of that epoch's tree beside the ledger's entries; a job's proof bundle
//! carries the retirements of that job with their inclusion proofs, and the verifier checks
//! each against the job's recomputed hours ([`crate::coverage`]).
//!
//! The certificate is carried whole, with the fields an EnergyTag granular certificate
//! carries (its id or id range, production interval, source and technology, producing
//! device, region, volume, issuer), so a reader can look it up at its registry.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use super::{JobId, check_text};
use crate::envelope::{DecodeError, Kind, Message};
use crate::id::DeviceId;
use crate::units::TimestampMs;

/// How fine a certificate's production interval is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateScheme {
    /// A granular certificate (EnergyTag): produced within one UTC hour, so it matches
    /// consumption in that hour only.
    Granular,
    /// A yearly renewable energy certificate (REC, GO, I-REC): produced some time in a
    /// period of up to a year; it matches any hour in that period, a weaker claim that is
    /// always reported apart from granular coverage.
    Rec,
}

impl CertificateScheme {
    /// Its name on the wire and in the API (`granular`, `rec`).
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateScheme::Granular => "granular",
            CertificateScheme::Rec => "rec",
        }
    }

    /// Parses [`CertificateScheme::as_str`].
    pub fn parse(s: &str) -> Option<CertificateScheme> {
        match s {
            "granular" => Some(CertificateScheme::Granular),
            "rec" => Some(CertificateScheme::Rec),
            _ => None,
        }
    }
}

/// An energy attribute certificate as its registry issued it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The registry's id of the certificate, or of its id range (`first..last`): unique.
    pub id: String,
    /// Granular or yearly.
    pub scheme: CertificateScheme,
    /// Start of the production interval (inclusive).
    pub start: TimestampMs,
    /// End of the production interval (exclusive).
    pub end: TimestampMs,
    /// The energy source (`solar`, `wind`, `hydro`...).
    pub source: String,
    /// The technology (`photovoltaic ground-mounted`, an EECS code...).
    pub technology: String,
    /// The producing device, as the registry names it.
    pub producer: String,
    /// The grid region it was produced in, as devices' hellos name regions (`DE`, `KE`).
    pub region: String,
    /// The energy it attests, watt-hours.
    pub volume_wh: u64,
    /// Who issued it (the registry).
    pub issuer: String,
}

/// A certificate retired for one job's consumption in one hour, controller-signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    /// Its number (1, 2, ...): a job's retirements are applied in this order.
    pub id: u64,
    /// The certificate, whole.
    pub certificate: Certificate,
    /// The job whose consumption it covers.
    pub job: JobId,
    /// The device that ran the job (the statement's subject).
    pub device: DeviceId,
    /// The hour it covers (hours since the Unix epoch, UTC).
    pub hour: u64,
    /// The account that held and retired it.
    pub account: u64,
    /// The job's emissions in that hour it covers, mg CO2e (recomputed by the verifier).
    pub covered_mg: u64,
    /// When it was retired (controller clock).
    pub at: TimestampMs,
}

impl Certificate {
    /// Bounds on its text fields (each at most [`super::MAX_TEXT`] bytes).
    pub fn check_text(&self) -> Result<(), DecodeError> {
        check_text("certificate id", &self.id)?;
        check_text("certificate source", &self.source)?;
        check_text("certificate technology", &self.technology)?;
        check_text("certificate producer", &self.producer)?;
        check_text("certificate region", &self.region)?;
        check_text("certificate issuer", &self.issuer)
    }
}

impl Message for Retirement {
    const KIND: Kind = Kind::Retirement;

    fn validate(&self) -> Result<(), DecodeError> {
        self.certificate.check_text()
    }
}
