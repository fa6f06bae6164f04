//! The inbox (sans-IO): what the controller sends on the device's `ack` and `cmd` topics,
//! turned into a verified value or a typed rejection. It holds the pinned controller key,
//! the device's id and the command nonce window; it reads no file and no clock (the time is
//! an argument) and touches no socket. The runtime saves [`Inbox::nonces`] after every
//! accepted command, and acts on what comes out.
//!
//! An ack is checked against what the outbox holds through the small [`Held`] view, so tests
//! drive it with plain data.

use attest::msg::{Ack, Command};
use attest::{DeviceId, Envelope, Hash32, PublicKey, SeqNo};

use crate::nonces::{NonceRefusal, NonceWindow};

/// What the outbox holds, as far as an ack's check needs it.
pub trait Held {
    /// The last sequence number stored (acknowledged or not) since the outbox was opened
    /// or found on disk: none when a restart found it emptied by acks.
    fn last_seq(&self) -> Option<SeqNo>;
    /// The highest sequence number acknowledged (persisted across restarts).
    fn acked(&self) -> Option<SeqNo>;
    /// The hash of the stored message `seq`, while it is still held.
    fn hash_of(&self, seq: SeqNo) -> Option<Hash32>;
}

impl Held for crate::outbox::Outbox {
    fn last_seq(&self) -> Option<SeqNo> {
        crate::outbox::Outbox::last_seq(self)
    }
    fn acked(&self) -> Option<SeqNo> {
        crate::outbox::Outbox::acked(self)
    }
    fn hash_of(&self, seq: SeqNo) -> Option<Hash32> {
        self.read(seq).ok().flatten().map(|b| Hash32::digest(&b))
    }
}

/// An ack signed by the pinned controller, for this device, for something this device
/// stored: only the inbox makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAck(Ack);

impl VerifiedAck {
    /// The highest sequence number it covers.
    pub fn up_to(&self) -> SeqNo {
        self.0.up_to
    }
}

/// Why an ack was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRejection {
    /// Not an envelope, or not an `Ack` inside.
    #[error("{0}")]
    Malformed(String),
    /// Not signed by the pinned controller.
    #[error("ack {0}")]
    BadSignature(String),
    /// Signed for another device.
    #[error("ack for another device")]
    OtherDevice,
    /// Covers sequence numbers this device never stored.
    #[error("ack up to {up_to} is beyond what was stored")]
    Beyond { up_to: SeqNo },
    /// Names a hash other than the stored message's.
    #[error("ack hash for {seq} does not match the stored record")]
    HashMismatch { seq: SeqNo },
}

/// A command signed by the pinned controller, for this device, unexpired and not a replay:
/// only the inbox makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommand(Command);

impl VerifiedCommand {
    /// The command.
    pub fn command(&self) -> &Command {
        &self.0
    }
    /// The command, taken.
    pub fn into_command(self) -> Command {
        self.0
    }
}

/// Why a command was refused; [`CommandRejection::reason`] is the key it is counted under
/// in the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRejection {
    /// Not an envelope, or not a `Command` inside.
    #[error("{0}")]
    Malformed(String),
    /// Not signed by the pinned controller.
    #[error("command {0}")]
    BadSignature(String),
    /// Signed for another device.
    #[error("command for another device")]
    OtherDevice,
    /// Its expiry has passed.
    #[error("command expired")]
    Expired,
    /// Its nonce was seen, or it is too old to tell from a replay.
    #[error("{0}")]
    Replayed(NonceRefusal),
    /// The device's clock is not set yet (before 2024: no RTC, no NTP yet): expiries and
    /// nonces cannot be judged, so nothing runs until it is.
    #[error("the device clock is not set ({now} ms since 1970)")]
    ClockNotSet { now: u64 },
    /// Issued further from the device's clock than [`MAX_CLOCK_SKEW_MS`].
    #[error("command issued at {issued}, the device clock says {now}: beyond the skew window")]
    Skewed { issued: u64, now: u64 },
    /// Valid for longer than [`MAX_COMMAND_LIFETIME_MS`].
    #[error("command valid for {lifetime_ms} ms, longer than allowed")]
    TooLong { lifetime_ms: u64 },
    /// The saved nonce window could not be read: no command can be told from a replay.
    #[error("the command nonce file is unreadable: every command is refused")]
    NoncesUnreadable,
    /// A job control for a job that is neither running nor being prepared.
    #[error("no running job {0}")]
    NoSuchJob(attest::msg::JobId),
}

impl CommandRejection {
    /// The stable reason it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            CommandRejection::Malformed(_) => "malformed",
            CommandRejection::BadSignature(_) => "bad_signature",
            CommandRejection::OtherDevice => "other_device",
            CommandRejection::Expired => "expired",
            CommandRejection::Replayed(_) => "replayed",
            CommandRejection::NoSuchJob(_) => "no_such_job",
            CommandRejection::ClockNotSet { .. } => "clock_not_set",
            CommandRejection::Skewed { .. } => "clock_skew",
            CommandRejection::TooLong { .. } => "too_long",
            CommandRejection::NoncesUnreadable => "nonces_unreadable",
        }
    }
}

/// How far a command's `issued` may be from the device's clock, either way, ms.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60_000;
/// The longest a command may be valid (`expires - issued`), ms.
pub const MAX_COMMAND_LIFETIME_MS: u64 = 60 * 60_000;
/// A clock before this (2024-01-01T00:00:00Z) has not been set since boot.
pub const CLOCK_SET_AFTER_MS: u64 = 1_704_067_200_000;

/// The inbox (see the module doc).
#[derive(Debug, Clone)]
pub struct Inbox {
    controller: PublicKey,
    device: DeviceId,
    /// `None`: the saved window was unreadable (every command is refused).
    nonces: Option<NonceWindow>,
}

impl Inbox {
    /// An inbox for `device` that believes only `controller`, with the saved nonce window
    /// (`None` when it could not be read: then it fails closed).
    pub fn new(controller: PublicKey, device: DeviceId, nonces: Option<NonceWindow>) -> Inbox {
        Inbox {
            controller,
            device,
            nonces,
        }
    }

    /// The controller key it believes.
    pub fn controller(&self) -> PublicKey {
        self.controller
    }

    /// From now on it believes `key` only (the controller's key rotated).
    pub fn set_controller(&mut self, key: PublicKey) {
        self.controller = key;
    }

    /// The nonce window, to be saved after every accepted command.
    pub fn nonces(&self) -> Option<&NonceWindow> {
        self.nonces.as_ref()
    }

    /// Checks an ack's signature, device and coverage against what `held` stored.
    pub fn ack(&self, payload: &[u8], held: &impl Held) -> Result<VerifiedAck, AckRejection> {
        let env = Envelope::decode(payload).map_err(|e| AckRejection::Malformed(e.to_string()))?;
        env.verify(&self.controller)
            .map_err(|e| AckRejection::BadSignature(e.to_string()))?;
        let ack: Ack = env
            .open()
            .map_err(|e| AckRejection::Malformed(e.to_string()))?;
        if ack.device != self.device {
            return Err(AckRejection::OtherDevice);
        }
        // What was acknowledged was stored, even when a restart found the outbox emptied:
        // the broker's retained ack of the last record is no alarm.
        if held
            .last_seq()
            .max(held.acked())
            .is_none_or(|l| ack.up_to > l)
        {
            return Err(AckRejection::Beyond { up_to: ack.up_to });
        }
        if let Some(h) = held.hash_of(ack.up_to)
            && h != ack.hash
        {
            return Err(AckRejection::HashMismatch { seq: ack.up_to });
        }
        Ok(VerifiedAck(ack))
    }

    /// Checks a command's signature, device, expiry and nonce at `now` (ms); an accepted
    /// command's nonce is remembered (save [`Inbox::nonces`] before acting on it).
    pub fn command(
        &mut self,
        payload: &[u8],
        now: u64,
    ) -> Result<VerifiedCommand, CommandRejection> {
        let env =
            Envelope::decode(payload).map_err(|e| CommandRejection::Malformed(e.to_string()))?;
        env.verify(&self.controller)
            .map_err(|e| CommandRejection::BadSignature(e.to_string()))?;
        let cmd: Command = env
            .open()
            .map_err(|e| CommandRejection::Malformed(e.to_string()))?;
        if cmd.device != self.device {
            return Err(CommandRejection::OtherDevice);
        }
        if now < CLOCK_SET_AFTER_MS {
            return Err(CommandRejection::ClockNotSet { now });
        }
        if cmd.expires.0 < now {
            return Err(CommandRejection::Expired);
        }
        if cmd.issued.0.abs_diff(now) > MAX_CLOCK_SKEW_MS {
            return Err(CommandRejection::Skewed {
                issued: cmd.issued.0,
                now,
            });
        }
        let lifetime_ms = cmd.expires.0.saturating_sub(cmd.issued.0);
        if lifetime_ms > MAX_COMMAND_LIFETIME_MS {
            return Err(CommandRejection::TooLong { lifetime_ms });
        }
        let nonces = self
            .nonces
            .as_mut()
            .ok_or(CommandRejection::NoncesUnreadable)?;
        nonces
            .check(cmd.nonce, cmd.expires.0)
            .map_err(CommandRejection::Replayed)?;
        nonces.remember(cmd.nonce, cmd.expires.0, now);
        Ok(VerifiedCommand(cmd))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use attest::msg::CommandBody;
    use attest::{KeyPair, TimestampMs};

    use super::*;

    /// An outbox as plain data: sequence number -> stored hash, the last stored, the acked.
    struct Stored(BTreeMap<u64, Hash32>, Option<u64>, Option<u64>);

    impl Held for Stored {
        fn last_seq(&self) -> Option<SeqNo> {
            self.1.map(SeqNo)
        }
        fn acked(&self) -> Option<SeqNo> {
            self.2.map(SeqNo)
        }
        fn hash_of(&self, seq: SeqNo) -> Option<Hash32> {
            self.0.get(&seq.0).copied()
        }
    }

    /// A time with the clock set (2027).
    const T: u64 = 1_800_000_000_000;

    fn controller() -> KeyPair {
        KeyPair::from_seed(&[0xc0; 32])
    }
    fn device() -> DeviceId {
        KeyPair::from_seed(&[0xde; 32]).device_id()
    }
    fn inbox() -> Inbox {
        Inbox::new(
            controller().public(),
            device(),
            Some(NonceWindow::default()),
        )
    }
    fn ack(up_to: u64, hash: Hash32, device: DeviceId) -> Ack {
        Ack {
            device,
            up_to: SeqNo(up_to),
            hash,
            timestamp: TimestampMs(1),
        }
    }

    #[test]
    fn an_ack_is_verified_only_when_signed_for_this_device_and_matching_what_was_stored() {
        let h = |i: u8| Hash32::digest(&[i]);
        let held = Stored((0..5).map(|s| (s, h(s as u8))).collect(), Some(4), None);
        let i = inbox();
        let forger = KeyPair::from_seed(&[0x66; 32]);
        let seal = |a: &Ack, k: &KeyPair| Envelope::seal(a, k).into_bytes();
        assert!(matches!(
            i.ack(&seal(&ack(2, h(2), device()), &forger), &held),
            Err(AckRejection::BadSignature(_))
        ));
        let other = KeyPair::from_seed(&[1; 32]).device_id();
        assert_eq!(
            i.ack(&seal(&ack(2, h(2), other), &controller()), &held),
            Err(AckRejection::OtherDevice)
        );
        let beyond = i.ack(&seal(&ack(99, h(2), device()), &controller()), &held);
        assert_eq!(beyond, Err(AckRejection::Beyond { up_to: SeqNo(99) }));
        assert_eq!(
            beyond.unwrap_err().to_string(),
            "ack up to 99 is beyond what was stored"
        );
        assert_eq!(
            i.ack(&seal(&ack(3, h(2), device()), &controller()), &held),
            Err(AckRejection::HashMismatch { seq: SeqNo(3) })
        );
        assert!(matches!(
            i.ack(b"\x01\x06garbage", &held),
            Err(AckRejection::Malformed(_))
        ));
        let ok = i
            .ack(&seal(&ack(2, h(2), device()), &controller()), &held)
            .unwrap();
        assert_eq!(ok.up_to(), SeqNo(2));
    }

    #[test]
    fn an_ack_of_what_was_acknowledged_before_a_restart_is_verified_not_refused() {
        let h = Hash32::digest(b"last");
        let emptied = Stored(BTreeMap::new(), None, Some(7));
        let seal = |a: &Ack| Envelope::seal(a, &controller()).into_bytes();
        assert_eq!(
            inbox()
                .ack(&seal(&ack(7, h, device())), &emptied)
                .unwrap()
                .up_to(),
            SeqNo(7)
        );
        assert_eq!(
            inbox().ack(&seal(&ack(8, h, device())), &emptied),
            Err(AckRejection::Beyond { up_to: SeqNo(8) })
        );
    }

    #[test]
    fn a_command_is_verified_once_and_its_replay_is_refused_with_a_countable_reason() {
        let mut i = inbox();
        let cmd = |nonce, expires| Command {
            device: device(),
            nonce,
            issued: TimestampMs(T - 60_000),
            expires: TimestampMs(expires),
            body: CommandBody::Drain,
        };
        let t = T;
        let valid = Envelope::seal(&cmd(3, t + 60_000), &controller()).into_bytes();
        let forged = Envelope::seal(&cmd(1, t + 60_000), &KeyPair::from_seed(&[0x66; 32]));
        let expired = Envelope::seal(&cmd(2, t - 1), &controller());
        let reason = |r: Result<VerifiedCommand, CommandRejection>| r.unwrap_err().reason();
        assert_eq!(reason(i.command(forged.as_bytes(), t)), "bad_signature");
        assert_eq!(reason(i.command(expired.as_bytes(), t)), "expired");
        assert!(
            i.nonces().unwrap().is_empty(),
            "refused commands leave no nonce"
        );
        let ok = i.command(&valid, t).unwrap();
        assert_eq!(ok.command().body, CommandBody::Drain);
        assert_eq!(i.nonces().unwrap().len(), 1);
        assert_eq!(reason(i.command(&valid, t)), "replayed");
        assert_eq!(reason(i.command(b"junk", t)), "malformed");
    }

    fn command(issued: u64, expires: u64) -> Vec<u8> {
        let c = Command {
            device: device(),
            nonce: issued ^ expires,
            issued: TimestampMs(issued),
            expires: TimestampMs(expires),
            body: CommandBody::Drain,
        };
        Envelope::seal(&c, &controller()).into_bytes()
    }

    #[test]
    fn a_command_issued_in_the_future_or_valid_for_too_long_is_refused() {
        let mut i = inbox();
        let skew = MAX_CLOCK_SKEW_MS;
        let future = command(T + skew + 1, T + skew + 60_000);
        assert_eq!(i.command(&future, T).unwrap_err().reason(), "clock_skew");
        let stale = command(T - skew - 1, T + 60_000);
        assert_eq!(i.command(&stale, T).unwrap_err().reason(), "clock_skew");
        let long = command(T, T + MAX_COMMAND_LIFETIME_MS + 1);
        assert_eq!(
            i.command(&long, T).unwrap_err(),
            CommandRejection::TooLong {
                lifetime_ms: MAX_COMMAND_LIFETIME_MS + 1
            }
        );
        assert!(i.command(&command(T + skew, T + skew + 60_000), T).is_ok());
    }

    #[test]
    fn a_device_whose_clock_is_not_set_runs_no_command_until_it_is() {
        let mut i = inbox();
        // Booted without an RTC: the clock says 1970 plus uptime.
        let boot = 90_000;
        let c = command(boot, boot + 60_000);
        assert_eq!(
            i.command(&c, boot).unwrap_err(),
            CommandRejection::ClockNotSet { now: boot }
        );
        assert!(i.command(&command(T, T + 60_000), T).is_ok());
    }

    #[test]
    fn an_unreadable_nonce_window_refuses_every_command() {
        let mut i = Inbox::new(controller().public(), device(), None);
        let c = command(T, T + 60_000);
        assert_eq!(
            i.command(&c, T).unwrap_err(),
            CommandRejection::NoncesUnreadable
        );
        assert!(i.nonces().is_none());
    }
}
