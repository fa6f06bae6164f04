//! `Command`: the controller's signed order to one device.

use serde::{Deserialize, Serialize};

use super::job::{JobId, JobSpec};
use crate::envelope::{DecodeError, Kind, Message};
use crate::id::DeviceId;
use crate::units::{SeqNo, TimestampMs};

/// An order to one device. The agent accepts it only when signed by the pinned controller
/// key, addressed to itself, not expired, and with a nonce it has not seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The device the command is for.
    pub device: DeviceId,
    /// A number never used twice for this device (replay protection).
    pub nonce: u64,
    /// When it was issued (controller clock).
    pub issued: TimestampMs,
    /// After this instant the device must refuse it.
    pub expires: TimestampMs,
    /// What to do.
    pub body: CommandBody,
}

/// What a command asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandBody {
    /// Run a job.
    RunJob(JobSpec),
    /// Pause a running job.
    Pause { job: JobId },
    /// Resume a paused job.
    Resume { job: JobId },
    /// Cancel a job.
    Cancel { job: JobId },
    /// Finish current work and take no more.
    Drain,
    /// Send the chain messages `from..=to` again (a persistent gap at the controller).
    Resend { from: SeqNo, to: SeqNo },
}

impl Message for Command {
    const KIND: Kind = Kind::Command;

    fn validate(&self) -> Result<(), DecodeError> {
        if self.expires < self.issued {
            return Err(DecodeError::Invalid {
                what: "command expiry (before issue time)",
            });
        }
        match &self.body {
            CommandBody::RunJob(spec) => spec.validate(),
            CommandBody::Resend { from, to } if to < from => Err(DecodeError::Invalid {
                what: "resend range (to < from)",
            }),
            _ => Ok(()),
        }
    }
}
