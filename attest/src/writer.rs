//! The one chain writer: where a device's hash chain stands and how the next message links
//! to it. The agent and the sample devices both write their chains through it, so the
//! rules the checker in [`crate::chain`] enforces are spelled once on the writing side too.
//!
//! Sealing is apart from advancing: [`ChainHead::link`] gives the link of the next message
//! without changing anything; the caller seals the message, stores it durably, and only then
//! calls [`ChainHead::advance`]. A crash in between seals the same sequence number again.

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, Message};
use crate::hash::Hash32;
use crate::id::{DeviceId, KeyPair};
use crate::msg::{ChainRestart, JobReceipt, Link, MeterRecord, RestartReason};
use crate::units::{SeqNo, TimestampMs};

/// A message that carries a chain link (meter records, job receipts, chain restarts).
pub trait Chained: Message {
    /// Its chain header.
    fn link(&self) -> &Link;
}

impl Chained for MeterRecord {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Chained for JobReceipt {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Chained for ChainRestart {
    fn link(&self) -> &Link {
        &self.link
    }
}

/// Where a chain stands: the next message takes `next_seq` and links to `prev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The sequence number the next message takes.
    pub next_seq: SeqNo,
    /// The hash of the last stored message (zero before the first).
    pub prev: Hash32,
    /// The timestamp of that message (zero before the first).
    pub last_timestamp: TimestampMs,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead::GENESIS
    }
}

impl ChainHead {
    /// A chain nothing has been written to: the first message is sequence 0 with a zero
    /// `prev`.
    pub const GENESIS: ChainHead = ChainHead {
        next_seq: SeqNo(0),
        prev: Hash32::ZERO,
        last_timestamp: TimestampMs(0),
    };

    /// The link of the next message at `t`. A clock that stepped back (an NTP correction,
    /// an RTC that lost time) does not make the chain go back: the timestamp is never
    /// before the last message's, which the checker would refuse for good.
    pub fn link(&self, device: DeviceId, t: TimestampMs) -> Link {
        Link {
            device,
            seq: self.next_seq,
            timestamp: t.max(self.last_timestamp),
            prev: self.prev,
        }
    }

    /// A `ChainRestart` at `t` that opens a new chain at `seq` (which must be above every
    /// sequence number the device may have used), naming what it knew of the old one (its
    /// `prev` is the last hash known, zero when nothing is).
    pub fn restart(
        &self,
        device: DeviceId,
        seq: SeqNo,
        t: TimestampMs,
        reason: RestartReason,
    ) -> ChainRestart {
        let known = *self != ChainHead::GENESIS;
        ChainRestart {
            link: Link {
                device,
                seq,
                timestamp: t,
                prev: self.prev,
            },
            reason,
            last_known: known.then(|| SeqNo(self.next_seq.0.saturating_sub(1))),
            last_known_hash: known.then_some(self.prev),
        }
    }

    /// Moves the head past a stored message (`link` is the one it carries, `hash` its
    /// envelope hash).
    pub fn advance(&mut self, link: &Link, hash: Hash32) {
        self.next_seq = SeqNo(link.seq.0.saturating_add(1));
        self.prev = hash;
        self.last_timestamp = link.timestamp;
    }

    /// Whether `link` is at or past the head (a message the head has not caught up with).
    pub fn is_ahead(&self, link: &Link) -> bool {
        link.seq >= self.next_seq
    }
}

/// A chain being written with one key: seals the next message and advances in one step,
/// for writers that need no durable store in between (sample devices, simulators).
#[derive(Clone, Debug)]
pub struct ChainWriter {
    key: KeyPair,
    head: ChainHead,
}

impl ChainWriter {
    /// A writer continuing `head` with `key`.
    pub fn new(key: KeyPair, head: ChainHead) -> ChainWriter {
        ChainWriter { key, head }
    }

    /// The device key.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// Where the chain stands.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The link the next message carries at `t`.
    pub fn link(&self, t: TimestampMs) -> Link {
        self.head.link(self.key.device_id(), t)
    }

    /// Seals `msg` and moves the chain past it. `msg` must carry [`ChainWriter::link`]'s
    /// link (or, for a restart, a new start above the head).
    pub fn append<M: Chained>(&mut self, msg: &M) -> Envelope {
        let env = Envelope::seal(msg, &self.key);
        self.head.advance(msg.link(), env.hash());
        env
    }

    /// A signed `ChainRestart` at `t` opening a new chain at `seq`, appended.
    pub fn restart(&mut self, seq: SeqNo, t: TimestampMs, reason: RestartReason) -> Envelope {
        let msg = self.head.restart(self.key.device_id(), seq, t, reason);
        self.append(&msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainPolicy, ChainVerifier, Outcome};
    use crate::msg::ChannelReading;

    fn record(link: Link) -> MeterRecord {
        MeterRecord {
            link,
            channels: alloc::vec![ChannelReading {
                channel: crate::ChannelId(0),
                kind: crate::msg::ChannelKind::Solar,
                energy: crate::Millijoules(link.seq.0 * 10),
                power: crate::Milliwatts(1),
                voltage_mv: None,
                soc_permille: None,
            }],
            unmetered: alloc::vec![],
        }
    }

    #[test]
    fn a_written_chain_is_accepted_by_the_checker_even_when_the_clock_steps_back() {
        let key = KeyPair::from_seed(&[7; 32]);
        let mut w = ChainWriter::new(key.clone(), ChainHead::GENESIS);
        let mut check =
            ChainVerifier::new(&key.public(), ChainPolicy::default()).expect("a valid key");
        let times = [10_000u64, 20_000, 15_000, 30_000];
        for t in times {
            let rec = record(w.link(TimestampMs(t)));
            let env = w.append(&rec);
            let outcome = check.feed(&env, TimestampMs(40_000)).expect("linked");
            assert!(matches!(outcome, Outcome::Accepted(_)));
        }
        assert_eq!(w.head().next_seq, SeqNo(4));
        assert_eq!(w.head().last_timestamp, TimestampMs(30_000));
        let restart = w.restart(SeqNo(1_000), TimestampMs(31_000), RestartReason::StateLost);
        let opened = restart.open::<ChainRestart>().expect("a restart");
        assert_eq!(opened.last_known, Some(SeqNo(3)));
        assert!(matches!(
            check.feed(&restart, TimestampMs(40_000)),
            Ok(Outcome::Accepted(_))
        ));
        assert_eq!(w.head().next_seq, SeqNo(1_001));
        assert_eq!(w.head().prev, restart.hash());
    }

    #[test]
    fn a_fresh_head_restarts_without_claiming_a_last_known_message() {
        let r = ChainHead::GENESIS.restart(
            KeyPair::from_seed(&[1; 32]).device_id(),
            SeqNo(5),
            TimestampMs(1),
            RestartReason::StateLost,
        );
        assert_eq!(r.last_known, None);
        assert_eq!(r.last_known_hash, None);
        assert_eq!(r.link.prev, Hash32::ZERO);
    }
}
