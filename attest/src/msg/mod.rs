//! Every message kind, one file each, and the types they share.
//!
//! Device-signed messages that form the device's hash chain ([`MeterRecord`],
//! [`JobReceipt`], [`ChainRestart`]) all begin with a [`Link`]: one sequence space, one
//! chain, one acknowledgement per device. The other kinds stand alone.

mod ack;
mod anchor;
mod command;
mod hello;
mod job;
mod ledger;
mod meter;
mod restart;
mod retirement;
mod rotation;
mod statement;

pub use ack::Ack;
pub use anchor::AnchorEntry;
pub use command::{Command, CommandBody};
pub use hello::{ChannelInfo, Gpu, Hardware, Hello, Site, hello_at};
pub use job::{Backend, JobId, JobLimits, JobOutcome, JobReceipt, JobSpec, Param, Workload};
pub use ledger::{LedgerEntry, LedgerPosting, MAX_POSTINGS};
pub use meter::{ChannelReading, MeterRecord, Unmetered};
pub use restart::{ChainRestart, RestartReason};
pub use retirement::{Certificate, CertificateScheme, Retirement};
pub use rotation::KeyRotation;
pub use statement::{Flag, FlagCode, JobAccount, Statement, Subject};

use serde::{Deserialize, Serialize};

use crate::envelope::{DecodeError, Envelope, Kind};
use crate::hash::Hash32;
use crate::id::DeviceId;
use crate::units::{ChannelId, Millijoules, SeqNo, TimestampMs};

/// At most this many channels in one record, receipt or hello.
pub const MAX_CHANNELS: usize = 16;

/// At most this many bytes in a free-text field (names, reasons, versions).
pub const MAX_TEXT: usize = 256;

/// The chain header that starts every device-signed chain message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The device whose key signs this message.
    pub device: DeviceId,
    /// Position in the chain; the next message has `seq + 1`.
    pub seq: SeqNo,
    /// When the message was made (device clock).
    pub timestamp: TimestampMs,
    /// Hash of the previous chain message's envelope; zero for a device's very first.
    pub prev: Hash32,
}

/// What a meter channel measures. Each kind's counter only goes up: flows in both
/// directions (battery, grid) are two channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Energy from the solar array.
    Solar,
    /// Energy into the battery.
    BatteryCharge,
    /// Energy out of the battery.
    BatteryDischarge,
    /// Energy drawn from the grid.
    GridImport,
    /// Energy fed to the grid.
    GridExport,
    /// Everything the device consumes (the GPU included).
    Load,
    /// The GPU alone (a part of `Load`, reported for jobs).
    Gpu,
}

/// How far a number can be trusted, lowest first. A statement carries the lowest tier of
/// what it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    /// Estimated in software (a model, not a meter).
    SoftwareEstimate,
    /// A hardware meter read by the agent.
    HardwareMeter,
    /// A meter that signs its own readings.
    SigningMeter,
    /// An agent whose integrity is attested (TPM/TEE).
    AttestedAgent,
}

impl TrustTier {
    /// One tier lower (used when plausibility flags are raised).
    pub fn lowered(self) -> TrustTier {
        match self {
            TrustTier::AttestedAgent => TrustTier::SigningMeter,
            TrustTier::SigningMeter => TrustTier::HardwareMeter,
            _ => TrustTier::SoftwareEstimate,
        }
    }
}

/// A channel's cumulative counter at one instant (used by receipts and restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// The channel.
    pub channel: ChannelId,
    /// What it measures.
    pub kind: ChannelKind,
    /// Its cumulative energy counter.
    pub energy: Millijoules,
}

pub(crate) fn check_text(what: &'static str, s: &str) -> Result<(), DecodeError> {
    if s.len() > MAX_TEXT {
        return Err(DecodeError::TooMany {
            what,
            count: s.len(),
            max: MAX_TEXT,
        });
    }
    Ok(())
}

pub(crate) fn check_len<T>(what: &'static str, v: &[T], max: usize) -> Result<(), DecodeError> {
    if v.len() > max {
        return Err(DecodeError::TooMany {
            what,
            count: v.len(),
            max,
        });
    }
    Ok(())
}

/// Any message, decoded by its envelope's kind (for `attest inspect` and the fuzzers).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum AnyMessage {
    Hello(Hello),
    MeterRecord(MeterRecord),
    JobReceipt(JobReceipt),
    ChainRestart(ChainRestart),
    Command(Command),
    Ack(Ack),
    AnchorEntry(AnchorEntry),
    Statement(Statement),
    LedgerEntry(LedgerEntry),
    Retirement(Retirement),
    KeyRotation(KeyRotation),
}

impl AnyMessage {
    /// Decodes an envelope's payload by its kind (the signature is not checked).
    pub fn open(env: &Envelope) -> Result<AnyMessage, DecodeError> {
        Ok(match env.kind() {
            Kind::Hello => AnyMessage::Hello(env.open()?),
            Kind::MeterRecord => AnyMessage::MeterRecord(env.open()?),
            Kind::JobReceipt => AnyMessage::JobReceipt(env.open()?),
            Kind::ChainRestart => AnyMessage::ChainRestart(env.open()?),
            Kind::Command => AnyMessage::Command(env.open()?),
            Kind::Ack => AnyMessage::Ack(env.open()?),
            Kind::AnchorEntry => AnyMessage::AnchorEntry(env.open()?),
            Kind::Statement => AnyMessage::Statement(env.open()?),
            Kind::LedgerEntry => AnyMessage::LedgerEntry(env.open()?),
            Kind::Retirement => AnyMessage::Retirement(env.open()?),
            Kind::KeyRotation => AnyMessage::KeyRotation(env.open()?),
        })
    }

    /// The chain header, for chained kinds.
    pub fn link(&self) -> Option<&Link> {
        match self {
            AnyMessage::MeterRecord(m) => Some(&m.link),
            AnyMessage::JobReceipt(m) => Some(&m.link),
            AnyMessage::ChainRestart(m) => Some(&m.link),
            _ => None,
        }
    }
}

/// A device-signed message in a hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ChainMessage {
    MeterRecord(MeterRecord),
    JobReceipt(JobReceipt),
    ChainRestart(ChainRestart),
}

impl ChainMessage {
    /// Decodes a chained envelope; other kinds are refused.
    pub fn open(env: &Envelope) -> Result<ChainMessage, DecodeError> {
        Ok(match env.kind() {
            Kind::MeterRecord => ChainMessage::MeterRecord(env.open()?),
            Kind::JobReceipt => ChainMessage::JobReceipt(env.open()?),
            Kind::ChainRestart => ChainMessage::ChainRestart(env.open()?),
            got => {
                return Err(DecodeError::WrongKind {
                    expected: Kind::MeterRecord,
                    got,
                });
            }
        })
    }

    /// The chain header.
    pub fn link(&self) -> &Link {
        match self {
            ChainMessage::MeterRecord(m) => &m.link,
            ChainMessage::JobReceipt(m) => &m.link,
            ChainMessage::ChainRestart(m) => &m.link,
        }
    }

    /// The meter record, if this is one.
    pub fn as_record(&self) -> Option<&MeterRecord> {
        match self {
            ChainMessage::MeterRecord(r) => Some(r),
            _ => None,
        }
    }
}
