//! The signed envelope that carries every message.
//!
//! Layout (see `docs/protocol.md`):
//!
//! ```text
//! offset 0        1      2 ............ n-64      n-64 ........ n
//!        version  kind   postcard payload         ed25519 signature over bytes [0, n-64)
//! ```
//!
//! The signature covers the exact bytes before it, so nothing is ever re-encoded before
//! checking. Payloads must be canonical: decoding then re-encoding gives the same bytes, so
//! one message has exactly one encoding and content comparisons (forks, duplicates) are
//! comparisons of bytes.

use alloc::vec::Vec;
use core::fmt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::Hash32;
use crate::id::{KeyPair, PublicKey};

/// The envelope format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Largest envelope accepted from anyone, checked before anything is allocated.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;

/// Length of the trailing ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Smallest possible envelope: version, kind, empty payload, signature.
pub const MIN_ENVELOPE_LEN: usize = 2 + SIGNATURE_LEN;

/// What a message is; the second byte of every envelope.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    /// A device introduces itself (device-signed).
    Hello = 1,
    /// One meter reading in the device's hash chain (device-signed).
    MeterRecord = 2,
    /// A finished job's receipt, in the device's hash chain (device-signed).
    JobReceipt = 3,
    /// A fresh chain after lost state, in the device's hash chain (device-signed).
    ChainRestart = 4,
    /// An order from the controller to one device (controller-signed).
    Command = 5,
    /// The controller's acknowledgement of stored chain messages (controller-signed).
    Ack = 6,
    /// One entry of the controller's local anchor log (controller-signed).
    AnchorEntry = 7,
    /// A carbon statement (controller-signed).
    Statement = 8,
    /// One transaction of the controller's ledger (controller-signed), a leaf of the
    /// anchored epochs.
    LedgerEntry = 9,
    /// An energy attribute certificate retired for a job's hour (controller-signed), a leaf
    /// of the anchored epochs.
    Retirement = 10,
    /// The controller hands its role to a new key (signed by the old key, and again by
    /// the new one).
    KeyRotation = 11,
}

/// Who signs a kind of message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The device's own key (its id derives from it).
    Device,
    /// The controller's key, pinned on every device at provisioning.
    Controller,
}

impl Kind {
    /// Every kind, in byte order.
    pub const ALL: [Kind; 11] = [
        Kind::Hello,
        Kind::MeterRecord,
        Kind::JobReceipt,
        Kind::ChainRestart,
        Kind::Command,
        Kind::Ack,
        Kind::AnchorEntry,
        Kind::Statement,
        Kind::LedgerEntry,
        Kind::Retirement,
        Kind::KeyRotation,
    ];

    /// The kind for a byte, if known.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == b)
    }

    /// Who must have signed an envelope of this kind.
    pub fn signer(self) -> Signer {
        match self {
            Kind::Hello | Kind::MeterRecord | Kind::JobReceipt | Kind::ChainRestart => {
                Signer::Device
            }
            Kind::Command
            | Kind::Ack
            | Kind::AnchorEntry
            | Kind::Statement
            | Kind::LedgerEntry
            | Kind::Retirement
            | Kind::KeyRotation => Signer::Controller,
        }
    }

    /// Whether messages of this kind are links of a device's hash chain.
    pub fn is_chained(self) -> bool {
        matches!(
            self,
            Kind::MeterRecord | Kind::JobReceipt | Kind::ChainRestart
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Hello => "hello",
            Kind::MeterRecord => "meter_record",
            Kind::JobReceipt => "job_receipt",
            Kind::ChainRestart => "chain_restart",
            Kind::Command => "command",
            Kind::Ack => "ack",
            Kind::AnchorEntry => "anchor_entry",
            Kind::Statement => "statement",
            Kind::LedgerEntry => "ledger_entry",
            Kind::KeyRotation => "key_rotation",
            Kind::Retirement => "retirement",
        };
        f.write_str(s)
    }
}

/// Why bytes were refused as an envelope or a payload. Each variant is a reason worth counting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the smallest envelope.
    #[error("envelope too short: {len} bytes, at least {MIN_ENVELOPE_LEN} needed")]
    TooShort { len: usize },
    /// More bytes than any envelope may have.
    #[error("envelope too long: {len} bytes, at most {max}")]
    TooLong { len: usize, max: usize },
    /// A version this code does not speak.
    #[error("unsupported envelope version {0} (this code speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// A kind byte that names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The envelope holds another kind than the one asked for.
    #[error("expected a {expected} message, got {got}")]
    WrongKind { expected: Kind, got: Kind },
    /// The payload is not valid postcard for the kind's type.
    #[error("malformed {kind} payload: {reason}")]
    Malformed { kind: Kind, reason: postcard::Error },
    /// Bytes left over after the payload.
    #[error("{count} trailing bytes after the {kind} payload")]
    TrailingBytes { kind: Kind, count: usize },
    /// The payload decodes but is not the one canonical encoding of its value.
    #[error("{kind} payload is not canonically encoded")]
    NonCanonical { kind: Kind },
    /// A list longer than the protocol allows.
    #[error("{what}: {count} items, at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// A field value the protocol forbids.
    #[error("invalid {what}")]
    Invalid { what: &'static str },
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature does not verify under the key.
    #[error("bad signature")]
    BadSignature,
    /// The key bytes are not a valid ed25519 public key.
    #[error("signer key is not a valid ed25519 public key")]
    BadKey,
}

/// A message type that travels in an envelope of one kind.
pub trait Message: Serialize + DeserializeOwned {
    /// The envelope kind byte for this type.
    const KIND: Kind;

    /// Checks protocol limits after decoding (list lengths, ranges).
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// A structurally valid envelope: length in bounds, known version and kind. Its signature
/// and payload are not yet checked; see [`Envelope::verify`] and [`Envelope::open`].
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
}

impl Envelope {
    /// Checks the frame of untrusted bytes: bounds first, then version and kind.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        Self::check_frame(bytes)?;
        Ok(Envelope {
            bytes: bytes.to_vec(),
        })
    }

    /// Like [`Envelope::decode`] but takes ownership, avoiding a copy.
    pub fn decode_owned(bytes: Vec<u8>) -> Result<Envelope, DecodeError> {
        Self::check_frame(&bytes)?;
        Ok(Envelope { bytes })
    }

    fn check_frame(bytes: &[u8]) -> Result<Kind, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        if bytes.len() < MIN_ENVELOPE_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if bytes[0] != VERSION {
            return Err(DecodeError::UnsupportedVersion(bytes[0]));
        }
        Kind::from_byte(bytes[1]).ok_or(DecodeError::UnknownKind(bytes[1]))
    }

    /// Encodes and signs a message.
    pub fn seal<M: Message>(msg: &M, key: &KeyPair) -> Envelope {
        Envelope::seal_with(msg, |bytes| key.sign(bytes))
    }

    /// Like [`Envelope::seal`] with the signature made by `sign` over the signed bytes (a
    /// signer outside this process, or a test that needs an odd signature).
    pub fn seal_with<M: Message>(msg: &M, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Envelope {
        let mut bytes = Vec::with_capacity(192);
        bytes.push(VERSION);
        bytes.push(M::KIND as u8);
        // Serialising our own types into a Vec cannot fail: no maps with non-string keys,
        // no sequences of unknown length.
        let mut bytes =
            postcard::to_extend(msg, bytes).expect("postcard encoding of a Heliostat message");
        let sig = sign(&bytes);
        bytes.extend_from_slice(&sig);
        Envelope { bytes }
    }

    /// The kind byte, already checked to be known.
    pub fn kind(&self) -> Kind {
        Kind::from_byte(self.bytes[1]).expect("kind checked at decode")
    }

    /// The whole envelope.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the envelope, giving its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The bytes the signature covers: version, kind and payload.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }

    /// The postcard payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[2..self.bytes.len() - SIGNATURE_LEN]
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(&self.bytes[self.bytes.len() - SIGNATURE_LEN..]);
        s
    }

    /// SHA-256 of the whole envelope, signature included: a message's identity, the
    /// `prev` link of the next chain message.
    pub fn hash(&self) -> Hash32 {
        Hash32::digest(&self.bytes)
    }

    /// Checks the signature under `key`: strict ed25519 (rejects malleable signatures), with
    /// `R` and the key required to be canonical, torsion-free points
    /// ([`crate::sigbatch::strict_point`]), so this single check and the batch check accept
    /// exactly the same signatures.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        crate::sigbatch::verify_one(self.signed_bytes(), &self.signature(), key)
    }

    /// Decodes the payload as `M`, refusing the wrong kind, trailing bytes, non-canonical
    /// encodings and out-of-bounds lists. Does not check the signature.
    pub fn open<M: Message>(&self) -> Result<M, DecodeError> {
        let kind = self.kind();
        if kind != M::KIND {
            return Err(DecodeError::WrongKind {
                expected: M::KIND,
                got: kind,
            });
        }
        decode_payload::<M>(self.payload())
    }
}

/// Decodes a canonical postcard payload of type `M` (used by [`Envelope::open`]).
pub fn decode_payload<M: Message>(payload: &[u8]) -> Result<M, DecodeError> {
    let kind = M::KIND;
    let (msg, rest): (M, &[u8]) = postcard::take_from_bytes(payload)
        .map_err(|reason| DecodeError::Malformed { kind, reason })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind,
            count: rest.len(),
        });
    }
    msg.validate()?;
    let again =
        postcard::to_allocvec(&msg).map_err(|reason| DecodeError::Malformed { kind, reason })?;
    if again != payload {
        return Err(DecodeError::NonCanonical { kind });
    }
    Ok(msg)
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Envelope({}, {} bytes, {})",
            self.kind(),
            self.bytes.len(),
            self.hash()
        )
    }
}

/// A message whose signature has been checked and whose payload has been decoded. Only
/// this crate's verification paths construct it, so unverified data cannot be passed where
/// verified data is required.
#[derive(Clone, Debug)]
pub struct Verified<M> {
    envelope: Envelope,
    msg: M,
    hash: Hash32,
}

impl<M: Message> Verified<M> {
    /// Checks the signature under `key`, then decodes.
    pub fn open(envelope: Envelope, key: &PublicKey) -> Result<Verified<M>, OpenError> {
        envelope.verify(key)?;
        let msg = envelope.open::<M>()?;
        Ok(Self::assume_signature_checked(envelope, msg))
    }
}

impl<M> Verified<M> {
    /// Wraps a message whose signature was checked elsewhere (batch verification).
    pub(crate) fn assume_signature_checked(envelope: Envelope, msg: M) -> Verified<M> {
        let hash = envelope.hash();
        Verified {
            envelope,
            msg,
            hash,
        }
    }

    /// The decoded message.
    pub fn message(&self) -> &M {
        &self.msg
    }
    /// The envelope as received.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// The envelope's hash.
    pub fn hash(&self) -> Hash32 {
        self.hash
    }
    /// Splits into envelope and message.
    pub fn into_parts(self) -> (Envelope, M) {
        (self.envelope, self.msg)
    }
}

impl<M> core::ops::Deref for Verified<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.msg
    }
}

/// Why an envelope could not be opened as a verified message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The signature check failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The payload failed to decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
