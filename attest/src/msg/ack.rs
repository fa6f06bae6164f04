//! `Ack`: the controller says what it has durably stored for a device.

use serde::{Deserialize, Serialize};

use crate::envelope::{Kind, Message};
use crate::hash::Hash32;
use crate::id::DeviceId;
use crate::units::{SeqNo, TimestampMs};

/// Every chain message of `device` up to and including `up_to` is stored: the agent may
/// delete them from its outbox. Published retained on the device's `ack` topic, only after
/// the database commit that made it true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The device.
    pub device: DeviceId,
    /// Highest contiguous sequence number stored.
    pub up_to: SeqNo,
    /// Hash of that message's envelope, so the agent can tell a stale or foreign ack.
    pub hash: Hash32,
    /// When the controller made the ack.
    pub timestamp: TimestampMs,
}

impl Message for Ack {
    const KIND: Kind = Kind::Ack;
}
