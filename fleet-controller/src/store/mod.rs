//! The store: the controller's source of truth, behind one narrow interface so that a
//! PostgreSQL backend is an addition, not a rewrite. [`sqlite`] is the default backend.
//!
//! Invariants every backend keeps:
//! - a chain message is stored at most once per (device, sequence) (a unique key, not
//!   memory, removes duplicates), and a second, different message for a stored sequence
//!   is refused, never overwritten;
//! - a batch of messages is stored in one transaction: all or nothing;
//! - messages from devices that are not approved are kept apart (`counted = false`) and
//!   never enter accounting (hours, fleet hours, statements); they are anchored like every
//!   stored message, because a device's later bundles prove its chain from its start.
//!
//! The market's parts sit beside [`Store`] as traits of their own, so each caller asks
//! for only what it uses: [`accounts::AccountStore`] (accounts, hashed API tokens),
//! [`blobs::BlobStore`] (who owns which blob, quotas) and [`jobs::JobStore`] (jobs, their
//! state history, the blobs they name). [`sqlite`] implements them all.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod blobs;
pub mod broker;
pub mod certificates;
pub mod console;
pub mod enrollment;
pub mod jobs;
pub mod ledger;
pub mod marks;
mod migrations;
pub mod pool;
pub mod probes;
pub mod runs;
pub mod settlement;
pub mod sqlite;
pub mod tags;

use attest::msg::ChainMessage;
use attest::{DeviceId, EpochId, Hash32, PublicKey, SeqNo, Verified};

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Said hello; waits for an operator (or an enrollment token).
    Pending,
    /// Counted.
    Approved,
    /// Kept apart, never counted again.
    Revoked,
}

impl DeviceState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Approved => "approved",
            DeviceState::Revoked => "revoked",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<DeviceState> {
        match s {
            "pending" => Some(DeviceState::Pending),
            "approved" => Some(DeviceState::Approved),
            "revoked" => Some(DeviceState::Revoked),
            _ => None,
        }
    }
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Its id.
    pub id: DeviceId,
    /// Its key.
    pub public_key: PublicKey,
    /// Where it stands.
    pub state: DeviceState,
    /// Its latest `Hello` envelope.
    pub hello: Vec<u8>,
    /// When it was first seen (controller clock, ms).
    pub first_seen_ms: u64,
    /// When it was last heard from.
    pub last_seen_ms: u64,
}

/// A verified chain message to store.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The device.
    pub(crate) device: DeviceId,
    /// Its sequence number.
    pub(crate) seq: SeqNo,
    /// Its kind byte.
    pub(crate) kind: u8,
    /// Its timestamp (device clock).
    pub(crate) timestamp_ms: u64,
    /// Its envelope hash.
    pub(crate) hash: Hash32,
    /// The envelope as received.
    pub(crate) envelope: Vec<u8>,
    /// Whether it counts (the device was approved when it arrived).
    pub(crate) counted: bool,
}

impl NewItem {
    /// A chain message to store: only a [`Verified`] one (its signature checked by attest,
    /// under the key of the device it names) becomes one, so unverified data cannot reach
    /// the store.
    pub fn from_verified(v: Verified<ChainMessage>, counted: bool) -> NewItem {
        let link = *v.message().link();
        let (kind, hash) = (v.envelope().kind() as u8, v.hash());
        let (env, _) = v.into_parts();
        NewItem {
            device: link.device,
            seq: link.seq,
            kind,
            timestamp_ms: link.timestamp.0,
            hash,
            envelope: env.into_bytes(),
            counted,
        }
    }

    /// The device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Its sequence number.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// New rows.
    pub inserted: usize,
    /// Rows already there with the same bytes (redelivery).
    pub duplicates: usize,
    /// Rows already there with other bytes (refused).
    pub conflicts: usize,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (the backend's own message).
    #[error("database: {0}")]
    Db(String),
    /// The database holds something this code cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The schema is newer than this code.
    #[error("database schema version {found} is newer than this controller ({supported})")]
    TooNew { found: u32, supported: u32 },
    /// The ledger refused a transaction (nothing of it was stored).
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// A closed epoch: its tree head and its anchor-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRow {
    /// The epoch number (0, 1, 2...).
    pub epoch: EpochId,
    /// Leaves in its tree.
    pub tree_size: u64,
    /// Its RFC 6962 root.
    pub root: Hash32,
    /// When it was closed (controller clock, ms).
    pub closed_ms: u64,
    /// The signed `AnchorEntry` envelope of the local anchor log.
    pub anchor_entry: Vec<u8>,
    /// Position of that entry in the log.
    pub anchor_index: u64,
}

/// An epoch's anchor on an EVM chain: the transaction is signed and stored here *before*
/// it is sent, so a controller killed between send and confirmation re-broadcasts the very
/// same transaction (same nonce, same hash) instead of anchoring twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmAnchorRow {
    /// The epoch.
    pub epoch: EpochId,
    /// The chain it is (to be) anchored on.
    pub chain_id: u64,
    /// The anchor contract.
    pub contract: [u8; 20],
    /// The sender's nonce the transaction uses.
    pub nonce: u64,
    /// The transaction hash.
    pub tx_hash: Hash32,
    /// The signed transaction (EIP-2718 bytes); empty when the anchor was found on chain
    /// rather than sent from this database.
    pub raw_tx: Vec<u8>,
    /// The block that holds it, once confirmed.
    pub block_number: Option<u64>,
    /// Gas it used, once confirmed.
    pub gas_used: Option<u64>,
    /// When it was signed (ms).
    pub signed_ms: u64,
}

/// A stored chain message with where it sits in its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedItem {
    /// Sequence number.
    pub seq: SeqNo,
    /// Timestamp (device clock).
    pub timestamp_ms: u64,
    /// The envelope.
    pub envelope: Vec<u8>,
    /// Its epoch and leaf index, once its epoch is closed.
    pub placed: Option<(EpochId, u64)>,
    /// Whether it counts in accounting (stored while its device was approved).
    pub counted: bool,
}

/// The narrow store interface.
pub trait Store {
    /// Adds a version to a device's hello history (its `timestamp`; a second one with the
    /// same timestamp is ignored).
    fn record_hello(
        &mut self,
        id: DeviceId,
        timestamp_ms: u64,
        hello: &[u8],
    ) -> Result<(), StoreError>;
    /// Records that the devices' messages were just taken (controller clock): their
    /// `last_seen_ms` moves with every message, not only with a hello.
    fn mark_seen(&mut self, ids: &[DeviceId], now_ms: u64) -> Result<(), StoreError>;
    /// How many devices are pending.
    fn count_pending(&self) -> Result<u64, StoreError>;
    /// Takes a new device's enrollment by token, waiting for its first hello: true once
    /// (the hello then registers it approved), false when there is none.
    fn take_enrollment(&mut self, id: DeviceId) -> Result<bool, StoreError>;
    /// Forgets pending devices last seen before `before_ms`, with their hellos and their
    /// messages (never anchored: epochs take no message of a pending device); returns them.
    fn expire_pending(&mut self, before_ms: u64) -> Result<Vec<DeviceId>, StoreError>;
    /// Every version of a device's hello, oldest first (empty for an unknown device).
    fn hellos(&self, id: DeviceId) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Records a device's hello: a new device gets `initial` (pending, or approved by an
    /// enrollment token); a known one keeps its state and gets the newer hello.
    fn upsert_device(
        &mut self,
        id: DeviceId,
        key: PublicKey,
        hello: &[u8],
        now_ms: u64,
        initial: DeviceState,
    ) -> Result<DeviceRow, StoreError>;
    /// A device.
    fn device(&self, id: DeviceId) -> Result<Option<DeviceRow>, StoreError>;
    /// Every device.
    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError>;
    /// Sets a device's state; false when the device is unknown.
    fn set_state(&mut self, id: DeviceId, state: DeviceState) -> Result<bool, StoreError>;
    /// Stores verified chain messages in one transaction.
    fn insert_items(&mut self, items: &[NewItem]) -> Result<InsertReport, StoreError>;
    /// [`Store::insert_items`] and [`Store::mark_seen`] in one transaction (one commit per
    /// ingest batch).
    fn insert_items_seen(
        &mut self,
        items: &[NewItem],
        seen: &[DeviceId],
        now_ms: u64,
    ) -> Result<InsertReport, StoreError> {
        let report = self.insert_items(items)?;
        self.mark_seen(seen, now_ms)?;
        Ok(report)
    }
    /// The stored message with the highest sequence number of a device: where its chain
    /// checker resumes after a restart.
    fn last_item(&self, id: DeviceId) -> Result<Option<(SeqNo, Vec<u8>)>, StoreError>;
    /// Stored envelopes of a device with sequence numbers in `from..=to`, in order.
    fn items(
        &self,
        id: DeviceId,
        from: SeqNo,
        to: SeqNo,
    ) -> Result<Vec<(SeqNo, Vec<u8>)>, StoreError>;
    /// How many messages are stored for a device.
    fn count_items(&self, id: DeviceId) -> Result<u64, StoreError>;
    /// The rotations of the controller's key, oldest first (`attest::keys`).
    fn key_rotations(&self) -> Result<Vec<attest::keys::KeyLink>, StoreError>;
    /// Records a rotation of the controller's key.
    fn add_key_rotation(
        &mut self,
        link: &attest::keys::KeyLink,
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// Stored messages not yet in any epoch, as (device, seq, envelope), in leaf order:
    /// counted or not, but none of a device still pending (it may be forgotten; once approved
    /// or revoked, its earlier messages are anchored too).
    fn unplaced(&self) -> Result<Vec<(DeviceId, SeqNo, Vec<u8>)>, StoreError>;
    /// Closes an epoch in one transaction: its row, its anchor entry, the leaf index of
    /// each message `(device, seq)` in order, then of each ledger transaction `(id, signed
    /// entry)` after them, then of each certificate retirement `(id, signed retirement)`.
    /// Refuses an epoch number already used.
    fn commit_epoch(
        &mut self,
        epoch: &EpochRow,
        leaves: &[(DeviceId, SeqNo)],
        ledger: &[(u64, Vec<u8>)],
        retirements: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError>;
    /// The last closed epoch.
    fn last_epoch(&self) -> Result<Option<EpochRow>, StoreError>;
    /// A closed epoch.
    fn epoch(&self, epoch: EpochId) -> Result<Option<EpochRow>, StoreError>;
    /// The leaves (envelopes: chain messages, then ledger entries) of a closed epoch in
    /// leaf order.
    fn epoch_leaves(&self, epoch: EpochId) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The EVM anchor of an epoch, sent or confirmed.
    fn evm_anchor(&self, epoch: EpochId) -> Result<Option<EvmAnchorRow>, StoreError>;
    /// Stores (or replaces, while unconfirmed) an epoch's EVM anchor. A confirmed anchor is
    /// never replaced.
    fn put_evm_anchor(&mut self, row: &EvmAnchorRow) -> Result<(), StoreError>;
    /// Forgets an unconfirmed EVM anchor whose transaction can no longer be mined.
    fn drop_unconfirmed_evm_anchor(&mut self, epoch: EpochId) -> Result<(), StoreError>;
    /// Closed epochs without a confirmed EVM anchor, oldest first.
    fn epochs_not_on_chain(&self) -> Result<Vec<EpochRow>, StoreError>;
    /// How many closed epochs have no confirmed EVM anchor.
    fn count_epochs_not_on_chain(&self) -> Result<u64, StoreError>;
    /// A device's messages with timestamps in `from..=to`, in sequence order.
    fn items_between(
        &self,
        id: DeviceId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<PlacedItem>, StoreError>;
}
