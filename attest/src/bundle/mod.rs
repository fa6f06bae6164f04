//! The proof bundle: everything a stranger needs to check a carbon statement, and the
//! offline verifier that checks it.
//!
//! [`verify`] requires pinned trust ([`Trust`]: the controller key, and for EVM anchors the
//! chain id and contract) and never trusts the stated numbers: it checks the controller's
//! signature on the statement, every device signature (batch ed25519 with a fallback that
//! names the bad one), every chain link from the chain's start, every inclusion proof and
//! anchor entry, every intensity figure against its named dataset, then recomputes the
//! statement from the signed records with [`crate::account::compute_statement`] (battery
//! content, flags and a job's counters included) and compares field by field. It stops at
//! the first failing check and names it ([`Check`]).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::envelope::Envelope;
use crate::hash::Hash32;
use crate::id::{KeyPair, PublicKey};
use crate::intensity::Dataset;
use crate::merkle::{InclusionProof, TreeHead, leaf_hash};
use crate::msg::Statement;
use crate::units::{EpochId, TimestampMs};

mod account;
mod anchors;
mod verify;
pub use account::{ACCOUNT_FORMAT, AccountProof, AccountReport, verify_account};
pub use verify::verify;

/// The bundle format version this crate writes and reads. Version 2: the statement is a
/// controller-signed envelope, intensity datasets are named and carried, and the subject's
/// evidence starts at its chain's start. Version 3: a job's bundle carries the certificates
/// retired for it. Version 4: the controller's key rotations ride along, so that a bundle
/// whose evidence spans a rotation verifies under either key (`crate::keys`).
pub const BUNDLE_FORMAT: u8 = 4;

/// The oldest bundle format this crate still reads (3: the same without key rotations).
pub const OLDEST_BUNDLE_FORMAT: u8 = 3;

/// At most this many retirements in one bundle.
pub const MAX_BUNDLE_RETIREMENTS: usize = 4096;

/// At most this many datasets carried in one bundle.
pub const MAX_BUNDLE_DATASETS: usize = 64;

/// Largest bundle accepted (either encoding), checked before decoding.
pub const MAX_BUNDLE_LEN: usize = 256 * 1024 * 1024;

/// A byte string: hex in JSON, length-prefixed bytes in postcard.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}
impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex::serde_bytes::serialize(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex::serde_bytes::deserialize(d).map(Blob)
    }
}

/// A 20-byte EVM address (hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(pub [u8; 20]);

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", crate::hex::encode(&self.0))
    }
}
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex::serde_fixed::serialize(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex::serde_fixed::deserialize(d).map(Address)
    }
}

/// A proof bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    /// [`BUNDLE_FORMAT`].
    pub format: u8,
    /// The claim: a `Statement` envelope signed by the controller.
    pub statement: Blob,
    /// `Hello` envelopes of the devices involved (their keys, channel tiers, site and
    /// embodied emissions).
    pub devices: Vec<Blob>,
    /// The intensity datasets the statement names, other than the bundled table.
    pub datasets: Vec<Dataset>,
    /// The signed chain messages the statement rests on, with their inclusion proofs: for
    /// the subject device, every message from the start of its chain (genesis or a restart)
    /// to the end of the period.
    pub evidence: Vec<Evidence>,
    /// The epochs those proofs lead to, with their anchors.
    pub epochs: Vec<EpochProof>,
    /// For a job: the controller-signed `Retirement`s of certificates covering its
    /// emissions, with their inclusion proofs (in the same epochs' trees).
    #[serde(default)]
    pub retirements: Vec<Evidence>,
    /// Every rotation of the controller's key up to the bundle's making, so that each
    /// controller signature is checked against the key of its time (`crate::keys`).
    #[serde(default)]
    pub key_rotations: Vec<crate::keys::KeyLink>,
}

/// One signed chain message and where it sits in an epoch's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The envelope as the device signed it.
    pub envelope: Blob,
    /// The epoch whose tree holds it.
    pub epoch: EpochId,
    /// Its audit path in that tree (the leaf is the envelope's bytes).
    pub proof: InclusionProof,
}

/// An epoch's tree head and where it is anchored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochProof {
    /// The epoch.
    pub epoch: EpochId,
    /// Its tree head.
    pub head: TreeHead,
    /// Where the root is anchored.
    pub anchor: AnchorRef,
}

/// Where an epoch root is anchored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorRef {
    /// The controller's signed, hash-chained local log.
    Local {
        /// The `AnchorEntry` envelope.
        entry: Blob,
        /// The controller key that signed it (compare with the one you trust).
        controller_key: PublicKey,
    },
    /// A transaction to the anchor contract on an EVM chain.
    Evm {
        /// The chain id (e.g. 31337 for a local anvil, 246 for Energy Web Chain).
        chain_id: u64,
        /// The anchor contract.
        contract: Address,
        /// The anchoring transaction.
        tx_hash: Hash32,
        /// The block that holds it.
        block_number: u64,
    },
}

/// The checks, in the order [`verify`] runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Bundle format version and structure.
    Format,
    /// The statement's signature, by the pinned controller key.
    Statement,
    /// Device hellos: signature, id derived from key.
    Device,
    /// Evidence envelopes decode as chain messages of known devices.
    Decode,
    /// Every evidence signature.
    Signature,
    /// Chain links: sequence, prev-hash, counters, time.
    Chain,
    /// Every inclusion proof against its epoch root.
    Inclusion,
    /// Every anchor (local: signed entry; EVM: pinned chain and contract, on chain with `--rpc`).
    Anchor,
    /// Every hour's intensity against its named dataset; datasets not bundled with the
    /// verifier need the verifier's explicit acceptance.
    Intensity,
    /// Energy by source recomputed from the counters.
    Energy,
    /// Renewable share, emissions and the battery's content, recomputed.
    Carbon,
    /// The plausibility flags and the trust tier, recomputed.
    Tier,
    /// A job's share and SCI recomputed from its receipt.
    Job,
    /// A statement of account: entries balanced, the book's postings complete and its
    /// balances consistent.
    Ledger,
    /// Retired certificates: signed by the controller, anchored, for this job, and each
    /// matching the job's region and hour ([`crate::coverage`]).
    Retirement,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Check::Format => "format",
            Check::Statement => "statement",
            Check::Device => "device",
            Check::Decode => "decode",
            Check::Signature => "signature",
            Check::Chain => "chain",
            Check::Inclusion => "inclusion",
            Check::Anchor => "anchor",
            Check::Intensity => "intensity",
            Check::Energy => "energy",
            Check::Carbon => "carbon",
            Check::Tier => "tier",
            Check::Job => "job",
            Check::Ledger => "ledger",
            Check::Retirement => "retirement",
        };
        f.write_str(s)
    }
}

/// The first check that failed, with what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("check `{check}` failed: {detail}")]
pub struct VerifyError {
    /// Which check.
    pub check: Check,
    /// What it found, in words.
    pub detail: String,
}

fn fail<T>(check: Check, detail: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError {
        check,
        detail: detail.into(),
    })
}

/// What the verifier trusts, pinned by its user (never taken from the bundle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The controller key that must sign the statement and every local anchor entry (or,
    /// where the bundle carries rotations, any key of its line, each for its own time).
    pub controller_key: PublicKey,
    /// The chain and contract EVM anchors must name; `None` refuses every EVM anchor.
    pub evm: Option<EvmPin>,
}

/// A pinned EVM anchor contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvmPin {
    /// The chain id.
    pub chain_id: u64,
    /// The anchor contract.
    pub contract: Address,
}

/// Settings of a verification.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The pinned trust.
    pub trust: Trust,
    /// The verifier's clock, for the future-timestamp check.
    pub now: TimestampMs,
    /// Datasets (by digest) the user has checked and accepts besides the bundled table.
    pub accepted_datasets: Vec<Hash32>,
    /// Accept every carried dataset (the report lists them as unknown).
    pub any_dataset: bool,
}

impl VerifyOptions {
    /// Options that pin `controller_key` only, accept no dataset but the bundled table,
    /// with the clock at `now`.
    pub fn pinned(controller_key: PublicKey, now: TimestampMs) -> VerifyOptions {
        VerifyOptions {
            trust: Trust {
                controller_key,
                evm: None,
            },
            now,
            accepted_datasets: Vec::new(),
            any_dataset: false,
        }
    }
}

/// A dataset a statement used, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatasetUse {
    /// Its digest.
    pub digest: Hash32,
    /// The bundled table's name, or the name the operator gave the carried dataset.
    pub name: String,
    /// Whether it is the table bundled with this verifier (otherwise the user accepted it).
    pub bundled: bool,
    /// Hours whose figure came from it.
    pub hours: usize,
}

/// What a successful verification established.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The statement, now known to follow from the evidence.
    pub statement: Statement,
    /// The datasets its intensities came from.
    pub datasets: Vec<DatasetUse>,
    /// Chain messages checked.
    pub evidence: usize,
    /// Meter records among them.
    pub records: usize,
    /// Epochs and how each is anchored.
    pub anchors: Vec<(EpochId, TreeHead, AnchorRef)>,
    /// Whether some anchors are on an EVM chain and were only checked offline
    /// (the CLI's `--rpc` checks them).
    pub onchain_unchecked: bool,
    /// For a job: its measured emissions and what retired certificates cover, apart.
    pub coverage: Option<crate::coverage::Coverage>,
}

impl ProofBundle {
    /// Signs `statement` with the controller key, as a bundle carries it.
    pub fn sign_statement(statement: &Statement, controller: &KeyPair) -> Blob {
        Blob(Envelope::seal(statement, controller).into_bytes())
    }

    /// The statement as carried, decoded but NOT verified (for display; [`verify`] checks
    /// its signature).
    pub fn statement(&self) -> Result<Statement, VerifyError> {
        Envelope::decode(&self.statement.0)
            .and_then(|e| e.open())
            .or_else(|e| fail(Check::Statement, format!("statement: {e}")))
    }

    /// Human-readable JSON.
    #[cfg(feature = "std")]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundle types serialise to JSON")
    }

    /// Compact postcard encoding.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("bundle types serialise to postcard")
    }

    /// Decodes either encoding (JSON when the first non-blank byte is `{`), bounded.
    pub fn decode(bytes: &[u8]) -> Result<ProofBundle, VerifyError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return fail(
                Check::Format,
                format!("bundle is {} bytes, at most {MAX_BUNDLE_LEN}", bytes.len()),
            );
        }
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            return Self::decode_json(bytes);
        }
        Self::decode_postcard(bytes).or_else(|e| {
            if bytes.first() != Some(&OLDEST_BUNDLE_FORMAT) {
                return Err(e);
            }
            // Format 3 as written then ends before `key_rotations`: read it as having none
            // (postcard writes an empty list as one zero byte).
            let mut v = bytes.to_vec();
            v.push(0);
            Self::decode_postcard(&v)
        })
    }

    #[cfg(feature = "std")]
    fn decode_json(bytes: &[u8]) -> Result<ProofBundle, VerifyError> {
        serde_json::from_slice(bytes).or_else(|e| fail(Check::Format, format!("JSON bundle: {e}")))
    }

    #[cfg(not(feature = "std"))]
    fn decode_json(_: &[u8]) -> Result<ProofBundle, VerifyError> {
        fail(Check::Format, "JSON bundles need the std feature")
    }

    fn decode_postcard(bytes: &[u8]) -> Result<ProofBundle, VerifyError> {
        let (b, rest) = postcard::take_from_bytes(bytes)
            .or_else(|e| fail(Check::Format, format!("postcard bundle: {e}")))?;
        if !rest.is_empty() {
            return fail(
                Check::Format,
                format!("{} trailing bytes after the bundle", rest.len()),
            );
        }
        Ok(b)
    }
}

/// The leaf data of a chain message in an epoch tree: its envelope bytes.
pub fn leaf_of(envelope: &Envelope) -> Hash32 {
    leaf_hash(envelope.as_bytes())
}
