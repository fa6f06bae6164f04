//! `AnchorEntry`: one entry of the controller's local, hash-chained anchor log.

use serde::{Deserialize, Serialize};

use crate::envelope::{Kind, Message};
use crate::hash::Hash32;
use crate::units::{EpochId, TimestampMs};

/// Records an epoch's tree head in the controller-signed local log. Entries chain by
/// `prev` (the previous entry's envelope hash; zero for the first), so the log cannot be
/// rewritten without re-signing everything after the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorEntry {
    /// Position in the log, from 0.
    pub index: u64,
    /// Hash of the previous entry's envelope.
    pub prev: Hash32,
    /// The epoch anchored.
    pub epoch: EpochId,
    /// Number of leaves in the epoch's tree.
    pub tree_size: u64,
    /// The RFC 6962 root of the epoch's tree.
    pub root: Hash32,
    /// When the entry was made.
    pub timestamp: TimestampMs,
}

impl Message for AnchorEntry {
    const KIND: Kind = Kind::AnchorEntry;
}
