//! Newtypes that carry their meaning, so a sequence number cannot be passed where energy is
//! expected. All are plain integers on the wire (postcard varints).

use core::fmt;
use serde::{Deserialize, Serialize};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident($inner:ty), $suffix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!("{}", $suffix), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

unit!(
    /// Position of a message in its device's hash chain. Strictly increasing by one.
    SeqNo(u64), ""
);
unit!(
    /// Milliseconds since the Unix epoch, UTC.
    TimestampMs(u64), " ms"
);
unit!(
    /// Energy in millijoules. Counters are cumulative and never go down within a chain.
    Millijoules(u64), " mJ"
);
unit!(
    /// Mean power over an interval, in milliwatts.
    Milliwatts(u32), " mW"
);
unit!(
    /// Index of an anchoring epoch (a Merkle tree over that epoch's evidence).
    EpochId(u64), ""
);
unit!(
    /// A meter channel's id, unique within one device.
    ChannelId(u8), ""
);

impl SeqNo {
    /// The next sequence number, or `None` at the end of the range.
    pub fn next(self) -> Option<SeqNo> {
        self.0.checked_add(1).map(SeqNo)
    }
}

impl EpochId {
    /// The epoch after this one.
    pub fn next(self) -> EpochId {
        EpochId(self.0 + 1)
    }
}

/// Millijoules in one kilowatt-hour (3.6 MJ).
pub const MJ_PER_KWH: u64 = 3_600_000_000;

/// Milliseconds in one hour.
pub const MS_PER_HOUR: u64 = 3_600_000;

impl Millijoules {
    /// Energy in kilowatt-hours, for display only (never for arithmetic that is verified).
    pub fn kwh(self) -> f64 {
        self.0 as f64 / MJ_PER_KWH as f64
    }

    /// Adds, saturating at `u64::MAX` (a year of a megawatt is about 2^55 mJ, far below).
    pub fn saturating_add(self, other: Millijoules) -> Millijoules {
        Millijoules(self.0.saturating_add(other.0))
    }
}
