//! `Statement`: a carbon claim about a device-period or a job, with the hour lines it
//! rests on. The controller signs it (message kind 8); the verifier checks that signature
//! against the pinned controller key and recomputes every number in it from signed records,
//! named datasets and the device's signed hello: nothing in it is taken as stated.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::job::JobId;
use super::{TrustTier, check_len, check_text};
use crate::carbon::{BatteryState, EnergyBySource, HourLine, Sci};
use crate::envelope::{DecodeError, Kind, Message};
use crate::id::DeviceId;
use crate::units::{Millijoules, SeqNo, TimestampMs};

/// At most this many hour lines in one signed statement (a month).
pub const MAX_STATEMENT_HOURS: usize = 24 * 31;

/// At most this many plausibility flags in one statement.
pub const MAX_FLAGS: usize = 256;

/// What a statement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A device over the span of the records in the statement's bundle.
    DevicePeriod { device: DeviceId },
    /// One job on one device.
    Job { device: DeviceId, job: JobId },
}

impl Subject {
    /// The device the statement is about.
    pub fn device(&self) -> DeviceId {
        match self {
            Subject::DevicePeriod { device } | Subject::Job { device, .. } => *device,
        }
    }
}

/// A carbon claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// What it is about.
    pub subject: Subject,
    /// Timestamp of the first record it rests on.
    pub from: TimestampMs,
    /// Timestamp of the last record it rests on.
    pub to: TimestampMs,
    /// Energy by source over the period (sum of counter deltas).
    pub energy: EnergyBySource,
    /// Load energy hourly-matched to renewable supply.
    pub renewable: Millijoules,
    /// `renewable / load` in parts per million.
    pub renewable_share_ppm: u32,
    /// Emissions of the period's grid import, mg CO2e (with the worst case of intervals
    /// nobody metered, `energy.unmetered`).
    pub co2e_mg: u64,
    /// The battery's content at the start, derived from the chain: at the chain's start
    /// (and at every restart) it is unknown and taken at its worst (full, none of it
    /// renewable), then follows the hourly matching of every record before the period.
    pub battery_initial: BatteryState,
    /// The battery's content after the last hour.
    pub battery_final: BatteryState,
    /// The hour-by-hour accounting.
    pub hours: Vec<HourLine>,
    /// The lowest tier of the channels used, lowered once if any flag is raised.
    pub tier: TrustTier,
    /// Plausibility flags the period's records raise ([`crate::plausibility`]; they lower
    /// the tier, never the energy).
    pub flags: Vec<Flag>,
    /// For a job: its share of the period.
    pub job: Option<JobAccount>,
    /// For a job: its SCI with the parts.
    pub sci: Option<Sci>,
}

/// A job's share of its device's period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccount {
    /// Energy from the receipt's counters (GPU channel if present, else load).
    pub energy: Millijoules,
    /// `energy x period renewable / period load`, floor.
    pub renewable: Millijoules,
    /// `energy x period co2e / period load`, floor.
    pub co2e_mg: u64,
}

/// A plausibility flag on one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// What looked wrong.
    pub code: FlagCode,
    /// The record it was raised on.
    pub seq: SeqNo,
    /// Details in words.
    pub detail: String,
}

/// What a plausibility flag says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagCode {
    /// Solar energy while the sun is below the horizon.
    SolarAtNight,
    /// More solar energy than the panels can give under a clear sky.
    SolarAboveClearSky,
    /// Mean power does not match the counter delta over the interval.
    PowerCounterMismatch,
    /// A counter jumped more than any plausible power allows.
    CounterJump,
    /// Records are missing from the chain.
    Gap,
    /// The device restarted its chain; energy across the restart is unknown.
    ChainRestart,
    /// Part of the interval was not metered on some channel (after an agent restart).
    Unmetered,
}

impl Message for Statement {
    const KIND: Kind = Kind::Statement;

    fn validate(&self) -> Result<(), DecodeError> {
        check_len("hours", &self.hours, MAX_STATEMENT_HOURS)?;
        check_len("flags", &self.flags, MAX_FLAGS)?;
        for f in &self.flags {
            check_text("flag detail", &f.detail)?;
        }
        Ok(())
    }
}
