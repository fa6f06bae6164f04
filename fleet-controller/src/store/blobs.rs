//! Who owns which blob, and how much room each account has left. The bytes live in files
//! named by their SHA-256 (`data_dir/blobs/{hex}`); these rows decide who may read them and
//! what counts against whose quota.
//!
//! Invariants every backend keeps:
//! - an account owns a blob only after it uploaded the bytes (knowing a hash grants
//!   nothing), and is charged its size once however often it uploads it;
//! - [`BlobStore::grant_blob`] checks the quota and records the ownership in one
//!   transaction: two uploads at once cannot both slip under it.

use attest::Hash32;

use super::StoreError;
use crate::accounts::{AccountId, Caller};

/// An account's blob bytes against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobUsage {
    /// Bytes of the blobs it owns.
    pub used_bytes: u64,
    /// Most it may own.
    pub quota_bytes: u64,
}

impl BlobUsage {
    /// Bytes it may still add.
    pub fn remaining(self) -> u64 {
        self.quota_bytes.saturating_sub(self.used_bytes)
    }
}

/// What [`BlobStore::grant_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobGrant {
    /// The account owns it now, charged its size.
    Added,
    /// The account owned it already (charged once).
    AlreadyOwned,
    /// Refused: it would take the account past its quota (nothing recorded).
    OverQuota(BlobUsage),
    /// Refused: no such account.
    UnknownAccount,
}

/// A blob an account owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedBlob {
    /// Its SHA-256.
    pub hash: Hash32,
    /// Its size.
    pub bytes: u64,
    /// When the account uploaded it (ms).
    pub created_ms: u64,
}

/// What [`BlobStore::release_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The account no longer owns it; `orphaned` when nobody owns it and no job names it
    /// (its file may go).
    Released {
        /// Nobody holds it any more.
        orphaned: bool,
    },
    /// The account does not own it.
    NotOwned,
    /// A job of the account that is not finished names it.
    InUse,
}

/// The blob-ownership part of the store.
pub trait BlobStore {
    /// An account's usage; `None` for an unknown account.
    fn blob_usage(&self, account: AccountId) -> Result<Option<BlobUsage>, StoreError>;
    /// Records that `account` uploaded the blob `hash` of `bytes`, if its quota allows.
    fn grant_blob(
        &mut self,
        account: AccountId,
        hash: Hash32,
        bytes: u64,
        now_ms: u64,
    ) -> Result<BlobGrant, StoreError>;
    /// A blob `account` owns.
    fn owned_blob(&self, account: AccountId, hash: Hash32)
    -> Result<Option<OwnedBlob>, StoreError>;
    /// Every blob `account` owns, oldest first.
    fn owned_blobs(&self, account: AccountId) -> Result<Vec<OwnedBlob>, StoreError>;
    /// Whether `caller` may read the blob: it owns it, or it is an output of one of its
    /// jobs, or (a provider) it is an input or PTX module of a job that is not finished and
    /// is placed on a device that provider runs (or on one no provider is set for).
    fn can_read_blob(&self, caller: &Caller, hash: Hash32) -> Result<bool, StoreError>;
    /// Whether anyone owns the blob or any job names it (its file must stay).
    fn blob_held(&self, hash: Hash32) -> Result<bool, StoreError>;
    /// Gives up `account`'s ownership (its quota gets the bytes back), unless one of its
    /// unfinished jobs names the blob.
    fn release_blob(&mut self, account: AccountId, hash: Hash32) -> Result<Release, StoreError>;
}
