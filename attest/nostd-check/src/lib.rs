//! A `#![no_std]` crate that signs and checks a meter record with `attest` built without
//! default features. `scripts/test` builds it for `thumbv7em-none-eabihf` (a Cortex-M4F
//! meter microcontroller), which has no `std` at all, so any std use in the core fails there.
#![no_std]

extern crate alloc;

use attest::msg::{ChannelKind, ChannelReading, Link, MeterRecord};
use attest::{ChannelId, Envelope, Hash32, KeyPair, Millijoules, Milliwatts, SeqNo, TimestampMs};

/// Signs a one-channel record with a key from `seed` and returns the envelope bytes' length
/// if the record verifies under the same key.
pub fn sign_and_check(seed: &[u8; 32], energy_mj: u64) -> Option<usize> {
    let key = KeyPair::from_seed(seed);
    let rec = MeterRecord {
        link: Link {
            device: key.device_id(),
            seq: SeqNo(0),
            timestamp: TimestampMs(0),
            prev: Hash32::ZERO,
        },
        channels: alloc::vec![ChannelReading {
            channel: ChannelId(0),
            kind: ChannelKind::Solar,
            energy: Millijoules(energy_mj),
            power: Milliwatts(0),
            voltage_mv: None,
            soc_permille: None,
        }],
        unmetered: alloc::vec![],
    };
    let env = Envelope::seal(&rec, &key);
    env.verify(&key.public()).ok()?;
    Some(env.as_bytes().len())
}
