//! The per-device hash-chain checker, as a sans-IO state machine.
//!
//! Feed it a device's chain messages (meter records, job receipts, chain restarts) in
//! sequence order with the current time; it answers [`Outcome::Accepted`],
//! [`Outcome::Duplicate`] (idempotent, not an error) or a typed [`Rejection`] that names
//! the reason. It holds no sockets, files or clocks: the caller stores what is accepted and
//! decides what to do with gaps (wait, or ask for a resend).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::envelope::{DecodeError, Envelope, Kind, Verified};
use crate::hash::Hash32;
use crate::id::{BadPublicKey, DeviceId, PublicKey};
use crate::msg::{ChainMessage, ChannelKind};
use crate::units::{ChannelId, Millijoules, SeqNo, TimestampMs};

/// Tunables of the chain check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainPolicy {
    /// How far a message's timestamp may be ahead of the checker's clock.
    pub max_future_skew_ms: u64,
    /// How many recent (sequence, hash) pairs are kept to tell duplicates from forks.
    pub window: usize,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        ChainPolicy {
            max_future_skew_ms: 120_000,
            window: 256,
        }
    }
}

/// How the first message fed is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// A device's first chain: sequence 0 with a zero `prev`, or a `ChainRestart`.
    Genesis,
    /// Any first message is taken as the starting point (a bundle's excerpt of a chain).
    TrustFirst,
}

/// The last accepted message of a chain: where the next one must link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tip {
    /// Its sequence number.
    pub seq: SeqNo,
    /// Its envelope hash.
    pub hash: Hash32,
    /// Its timestamp.
    pub timestamp: TimestampMs,
    /// The latest counter of each channel seen since the chain (re)started.
    pub counters: Vec<(ChannelId, ChannelKind, Millijoules)>,
}

/// What happened to a message that was not rejected.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// New, valid, linked: store it.
    Accepted(Box<Verified<ChainMessage>>),
    /// Seen before, byte for byte: nothing to do.
    Duplicate { seq: SeqNo },
}

/// Why a chain message was refused. [`Rejection::reason`] gives a stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The payload did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The envelope is not a chain message.
    #[error("{0} messages are not part of a device chain")]
    NotChained(Kind),
    /// The signature does not verify under the device's key.
    #[error("bad signature on seq {seq}")]
    BadSignature { seq: SeqNo },
    /// The message names another device.
    #[error("message for device {got} fed to the chain of {expected}")]
    WrongDevice { expected: DeviceId, got: DeviceId },
    /// A sequence number was skipped (or the first message is not the chain's start).
    #[error("sequence gap: expected {expected}, got {got}")]
    SequenceGap { expected: SeqNo, got: SeqNo },
    /// Same sequence number as an accepted message, different content.
    #[error("fork at seq {seq}: different content for an accepted sequence number")]
    Fork { seq: SeqNo },
    /// Older than the duplicate window: cannot tell a duplicate from a fork here.
    #[error("seq {seq} is below the checker's window (tip {tip})")]
    BelowWindow { seq: SeqNo, tip: SeqNo },
    /// `prev` is not the hash of the previous message.
    #[error("prev-hash mismatch at seq {seq}")]
    PrevMismatch { seq: SeqNo },
    /// A cumulative counter decreased.
    #[error("channel {channel} counter went backwards at seq {seq}: {before} -> {after}")]
    CounterBackwards {
        seq: SeqNo,
        channel: ChannelId,
        before: Millijoules,
        after: Millijoules,
    },
    /// A channel id changed what it measures.
    #[error("channel {channel} changed kind at seq {seq}")]
    ChannelKindChanged { seq: SeqNo, channel: ChannelId },
    /// The timestamp is further ahead of the checker's clock than the policy allows.
    #[error("seq {seq} timestamp {timestamp} is more than {skew_ms} ms ahead of {now}")]
    FutureTimestamp {
        seq: SeqNo,
        timestamp: TimestampMs,
        now: TimestampMs,
        skew_ms: u64,
    },
    /// The timestamp is before the previous message's.
    #[error("seq {seq} timestamp {timestamp} is before the previous {previous}")]
    TimeBackwards {
        seq: SeqNo,
        timestamp: TimestampMs,
        previous: TimestampMs,
    },
}

impl Rejection {
    /// A stable, low-cardinality label for counting rejections.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Decode(_) => "malformed",
            Rejection::NotChained(_) => "not_chained",
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::WrongDevice { .. } => "wrong_device",
            Rejection::SequenceGap { .. } => "sequence_gap",
            Rejection::Fork { .. } => "fork",
            Rejection::BelowWindow { .. } => "below_window",
            Rejection::PrevMismatch { .. } => "prev_mismatch",
            Rejection::CounterBackwards { .. } => "counter_backwards",
            Rejection::ChannelKindChanged { .. } => "channel_kind_changed",
            Rejection::FutureTimestamp { .. } => "future_timestamp",
            Rejection::TimeBackwards { .. } => "time_backwards",
        }
    }
}

/// The chain checker for one device.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    device: DeviceId,
    public: PublicKey,
    policy: ChainPolicy,
    start: Start,
    tip: Option<Tip>,
    recent: VecDeque<(SeqNo, Hash32)>,
}

impl ChainVerifier {
    /// A checker for a device whose chain has not started: the first message must be
    /// sequence 0 with a zero `prev`, or a `ChainRestart`.
    pub fn new(key: &PublicKey, policy: ChainPolicy) -> Result<ChainVerifier, BadPublicKey> {
        Ok(ChainVerifier {
            device: key.device_id(),
            public: {
                // The same acceptance as `Envelope::verify`: a canonical, torsion-free key.
                key.verifying_key()?;
                crate::sigbatch::strict_point(&key.0).ok_or(BadPublicKey)?;
                *key
            },
            policy,
            start: Start::Genesis,
            tip: None,
            recent: VecDeque::new(),
        })
    }

    /// A checker that continues after a known tip (for example after a controller restart).
    pub fn resume(
        key: &PublicKey,
        policy: ChainPolicy,
        tip: Tip,
    ) -> Result<ChainVerifier, BadPublicKey> {
        let mut v = Self::new(key, policy)?;
        v.recent.push_back((tip.seq, tip.hash));
        v.tip = Some(tip);
        Ok(v)
    }

    /// A checker that takes the first message as the starting point without checking its
    /// `prev`: for verifying an excerpt of a chain (a bundle's period).
    pub fn trust_first(
        key: &PublicKey,
        policy: ChainPolicy,
    ) -> Result<ChainVerifier, BadPublicKey> {
        let mut v = Self::new(key, policy)?;
        v.start = Start::TrustFirst;
        Ok(v)
    }

    /// The device this checker is for.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The last accepted message.
    pub fn tip(&self) -> Option<&Tip> {
        self.tip.as_ref()
    }

    /// Checks one envelope: decode, device, duplicate, signature, links, counters, time.
    pub fn feed(&mut self, env: &Envelope, now: TimestampMs) -> Result<Outcome, Rejection> {
        self.feed_inner(env, None, now)
    }

    /// Like [`ChainVerifier::feed`] for a message whose signature attest has checked: a
    /// [`Verified`] from [`crate::sigbatch::verify_messages`] (batch verification), which
    /// only a check under the key of the device the message names can give. The caller
    /// keeps it (to hold it when it came before a missing one).
    pub fn feed_verified(
        &mut self,
        v: &Verified<ChainMessage>,
        now: TimestampMs,
    ) -> Result<Outcome, Rejection> {
        self.feed_inner(v.envelope(), Some(v.message().clone()), now)
    }

    /// Like [`ChainVerifier::feed`] for an envelope whose signature this crate has already
    /// checked under this device's key and whose payload it decoded (the bundle verifier).
    pub(crate) fn feed_checked(
        &mut self,
        env: &Envelope,
        msg: ChainMessage,
        now: TimestampMs,
    ) -> Result<Outcome, Rejection> {
        self.feed_inner(env, Some(msg), now)
    }

    fn feed_inner(
        &mut self,
        env: &Envelope,
        decoded: Option<ChainMessage>,
        now: TimestampMs,
    ) -> Result<Outcome, Rejection> {
        let kind = env.kind();
        if !kind.is_chained() {
            return Err(Rejection::NotChained(kind));
        }
        let signature_checked = decoded.is_some();
        let msg = match decoded {
            Some(m) => m,
            None => ChainMessage::open(env)?,
        };
        let link = *msg.link();
        if link.device != self.device {
            return Err(Rejection::WrongDevice {
                expected: self.device,
                got: link.device,
            });
        }
        let hash = env.hash();
        let seen = self
            .recent
            .iter()
            .find(|(s, _)| *s == link.seq)
            .map(|(_, h)| *h);
        if seen == Some(hash) {
            // Identical bytes were verified when first accepted.
            return Ok(Outcome::Duplicate { seq: link.seq });
        }
        if !signature_checked {
            env.verify(&self.public)
                .map_err(|_| Rejection::BadSignature { seq: link.seq })?;
        }
        if let Some(tip) = self.tip.as_ref().filter(|t| link.seq <= t.seq) {
            return Err(match seen {
                Some(_) => Rejection::Fork { seq: link.seq },
                None => Rejection::BelowWindow {
                    seq: link.seq,
                    tip: tip.seq,
                },
            });
        }
        if link.timestamp.0 > now.0.saturating_add(self.policy.max_future_skew_ms) {
            return Err(Rejection::FutureTimestamp {
                seq: link.seq,
                timestamp: link.timestamp,
                now,
                skew_ms: self.policy.max_future_skew_ms,
            });
        }
        let restart = matches!(msg, ChainMessage::ChainRestart(_));
        let mut counters = Vec::new();
        match (&self.tip, restart) {
            // A restart may skip sequence numbers (it must only go up) and starts counters
            // afresh; its `prev` is whatever the device still knew.
            (_, true) => {}
            (None, false) => {
                if self.start == Start::Genesis {
                    if link.seq != SeqNo(0) {
                        return Err(Rejection::SequenceGap {
                            expected: SeqNo(0),
                            got: link.seq,
                        });
                    }
                    if link.prev != Hash32::ZERO {
                        return Err(Rejection::PrevMismatch { seq: link.seq });
                    }
                }
            }
            (Some(tip), false) => {
                let expected = SeqNo(tip.seq.0.saturating_add(1));
                if link.seq != expected {
                    return Err(Rejection::SequenceGap {
                        expected,
                        got: link.seq,
                    });
                }
                if link.prev != tip.hash {
                    return Err(Rejection::PrevMismatch { seq: link.seq });
                }
                if link.timestamp < tip.timestamp {
                    return Err(Rejection::TimeBackwards {
                        seq: link.seq,
                        timestamp: link.timestamp,
                        previous: tip.timestamp,
                    });
                }
                counters = tip.counters.clone();
            }
        }
        if let ChainMessage::MeterRecord(r) = &msg {
            for c in &r.channels {
                match counters.iter_mut().find(|(id, _, _)| *id == c.channel) {
                    Some((_, kind, before)) => {
                        if *kind != c.kind {
                            return Err(Rejection::ChannelKindChanged {
                                seq: link.seq,
                                channel: c.channel,
                            });
                        }
                        if c.energy < *before {
                            return Err(Rejection::CounterBackwards {
                                seq: link.seq,
                                channel: c.channel,
                                before: *before,
                                after: c.energy,
                            });
                        }
                        *before = c.energy;
                    }
                    None => counters.push((c.channel, c.kind, c.energy)),
                }
            }
        }
        self.tip = Some(Tip {
            seq: link.seq,
            hash,
            timestamp: link.timestamp,
            counters,
        });
        self.recent.push_back((link.seq, hash));
        while self.recent.len() > self.policy.window.max(1) {
            self.recent.pop_front();
        }
        Ok(Outcome::Accepted(Box::new(
            Verified::assume_signature_checked(env.clone(), msg),
        )))
    }
}
