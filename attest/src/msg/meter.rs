//! `MeterRecord`: one signed, hash-chained meter reading.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{ChannelKind, Link, MAX_CHANNELS, check_len};
use crate::envelope::{DecodeError, Kind, Message};
use crate::units::{ChannelId, Millijoules, Milliwatts};

/// One meter reading: cumulative counters per channel at `link.timestamp`. Cumulative
/// counters make a lost record cost resolution, never energy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterRecord {
    /// Device, sequence, time and previous hash.
    pub link: Link,
    /// One entry per channel, channel ids unique.
    pub channels: Vec<ChannelReading>,
    /// Channels whose counter missed part of this record's interval, with how long: after
    /// an agent restart, a channel whose source keeps no counter of its own was not metered
    /// from the last stored record to the first sample. Statements count such an interval
    /// at its worst case, never as nothing. Usually empty.
    pub unmetered: Vec<Unmetered>,
}

/// Part of a record's interval a channel's counter did not cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmetered {
    /// The channel (one of the record's).
    pub channel: ChannelId,
    /// How long, milliseconds.
    pub ms: u32,
}

/// One channel's reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReading {
    /// The channel's id (stable for the device).
    pub channel: ChannelId,
    /// What it measures.
    pub kind: ChannelKind,
    /// Cumulative energy since the chain began; never decreases within a chain.
    pub energy: Millijoules,
    /// Mean power over the interval since the previous record.
    pub power: Milliwatts,
    /// Voltage in millivolts, where measured.
    pub voltage_mv: Option<u32>,
    /// Battery state of charge in per mille, where known.
    pub soc_permille: Option<u16>,
}

impl Message for MeterRecord {
    const KIND: Kind = Kind::MeterRecord;

    fn validate(&self) -> Result<(), DecodeError> {
        check_len("channels", &self.channels, MAX_CHANNELS)?;
        check_len("unmetered", &self.unmetered, MAX_CHANNELS)?;
        for u in &self.unmetered {
            if self.channel(u.channel).is_none() {
                return Err(DecodeError::Invalid {
                    what: "unmetered (a channel the record does not have)",
                });
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            if self.channels[..i].iter().any(|o| o.channel == c.channel) {
                return Err(DecodeError::Invalid {
                    what: "channels (duplicate channel id)",
                });
            }
            if c.soc_permille.is_some_and(|s| s > 1000) {
                return Err(DecodeError::Invalid {
                    what: "soc_permille (above 1000)",
                });
            }
        }
        Ok(())
    }
}

impl MeterRecord {
    /// The reading of a channel, if present.
    pub fn channel(&self, id: ChannelId) -> Option<&ChannelReading> {
        self.channels.iter().find(|c| c.channel == id)
    }
}
