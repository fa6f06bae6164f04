//! `attest`: the shared truth of Heliostat.
//!
//! Everything that crosses the wire, and everything a stranger needs to check a carbon
//! claim, is defined here and nowhere else. The core is `no_std` + `alloc` so a meter's
//! microcontroller can sign with it; the `std` feature adds JSON helpers and key
//! generation, and `cli` adds the `attest` tool.
//!
//! Map of the crate:
//! - [`units`]: newtypes that carry their meaning (`SeqNo`, `Millijoules`, `TimestampMs`...).
//! - [`hash`]: the 32-byte SHA-256 digest type, compared in constant time.
//! - [`id`]: device identity: ed25519 keys and the self-certifying [`id::DeviceId`].
//! - [`live`]: the agent's status and job-event payloads (JSON, unsigned).
//! - [`durable`] (std): state files written whole (temporary file, fsync, rename, fsync).
//! - [`keyfile`] (std): key files created with mode 0600 and refused when readable by others.
//! - [`envelope`]: the signed frame (version, kind, postcard payload, signature).
//! - [`msg`]: every message kind, one file each (`Hello`, `MeterRecord`, `JobReceipt`,
//!   `ChainRestart`, `Command`, `Ack`, `AnchorEntry`, `Statement`).
//! - [`batch`]: many envelopes in one MQTT payload (catch-up after an outage).
//! - [`solar`]: sun elevation and clear-sky fraction (simulator and plausibility), in
//!   software floating point (`libm`) so every platform computes the same.
//! - [`plausibility`]: the flags the controller raises and the verifier recomputes.
//! - [`ptx`]: the PTX argument convention, checked on a module's text before launch.
//! - [`intensity`]: grid-intensity datasets named by content hash (the bundled table).
//! - [`sigbatch`]: ed25519 batch verification coalesced by key.
//! - [`chain`]: the sans-IO hash-chain checker (Accepted / Duplicate / typed rejection).
//! - [`writer`]: the one chain writer (the head of a chain, the next link, restarts).
//! - [`merkle`]: RFC 6962 trees, inclusion and consistency proofs.
//! - [`carbon`]: pure carbon arithmetic (energy deltas, hourly matching, emissions, SCI).
//! - [`bundle`]: the proof bundle and its offline verifier.
//! - [`topics`]: the MQTT topic names, spelled once.
//! - [`sample`] (std): deterministic sample devices, chains and bundles for tests and demos.
//! - [`evm`] (cli): the on-chain anchor call used by `attest verify --rpc`.
//!
//! The byte-level specification is `docs/protocol.md` at the repository root.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod account;
pub mod batch;
pub mod bundle;
pub mod carbon;
pub mod chain;
pub mod coverage;
#[cfg(feature = "std")]
pub mod durable;
pub mod envelope;
#[cfg(feature = "evm")]
pub mod evm;
pub mod hash;
pub mod hex;
pub mod id;
pub mod intensity;
#[cfg(feature = "std")]
pub mod keyfile;
pub mod keys;
pub mod live;
pub mod mandelbrot;
pub mod merkle;
pub mod msg;
pub mod plausibility;
pub mod ptx;
#[cfg(feature = "std")]
pub mod sample;
pub mod sigbatch;
pub mod solar;
pub mod topics;
pub mod units;
pub mod writer;

pub use envelope::{DecodeError, Envelope, Kind, Verified};
pub use hash::Hash32;
pub use id::{DeviceId, DeviceKey, KeyPair, PublicKey};
pub use units::{ChannelId, EpochId, Millijoules, Milliwatts, SeqNo, TimestampMs};
