//! `KeyRotation`: the controller hands its role to a new key.

use serde::{Deserialize, Serialize};

use crate::envelope::{Kind, Message};
use crate::id::PublicKey;
use crate::units::TimestampMs;

/// From `at` on, `to` is the controller's key instead of `from`. Signed twice, as two
/// envelopes of the same message: by `from` (its authority to hand over) and by `to` (its
/// acceptance, so that one who trusts the new key may trust what the old one signed before
/// `at`). See [`crate::keys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotation {
    /// The key handing over.
    pub from: PublicKey,
    /// The key taking over.
    pub to: PublicKey,
    /// When `to` takes over, ms since the Unix epoch.
    pub at: TimestampMs,
}

impl Message for KeyRotation {
    const KIND: Kind = Kind::KeyRotation;
}
