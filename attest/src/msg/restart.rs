//! `ChainRestart`: a device declares a fresh chain after losing its chain state.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use super::{Link, check_text};
use crate::envelope::{DecodeError, Kind, Message};
use crate::hash::Hash32;
use crate::units::SeqNo;

/// Starts a new chain. Its `link.seq` must be above every sequence number the device has
/// used (the agent picks `max(last acknowledged + 1, now in ms)` when it knows nothing),
/// its `link.prev` is the last hash it still knows (or zero), and the next message links
/// to this one's hash. Counters may start again from zero after it: the energy between
/// the last message of the old chain and the first of the new one is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRestart {
    /// Device, first sequence number of the new chain, time, last known hash.
    pub link: Link,
    /// Why the chain restarted.
    pub reason: RestartReason,
    /// The last sequence number the device still knows of the old chain, if any.
    pub last_known: Option<SeqNo>,
    /// The hash of that message, if known.
    pub last_known_hash: Option<Hash32>,
}

/// Why a chain was restarted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// The state file was missing (fresh disk, reflashed image).
    StateLost,
    /// The state file was present but unreadable or failed its checksum.
    StateCorrupt,
    /// An operator asked for it.
    Operator,
    /// Anything else, said in words.
    Other(String),
}

impl Message for ChainRestart {
    const KIND: Kind = Kind::ChainRestart;

    fn validate(&self) -> Result<(), DecodeError> {
        if let RestartReason::Other(s) = &self.reason {
            check_text("restart reason", s)?;
        }
        Ok(())
    }
}
