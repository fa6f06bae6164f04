//! Accounts and their API tokens, as stored: the part of the store that says who may call
//! the API (see [`crate::accounts`] for what the kinds and scopes mean).
//!
//! Invariants every backend keeps:
//! - an account's name is unique; an account and its first token are made in one
//!   transaction (no account without a way in);
//! - a token is kept only as its [`TokenHash`]; a revoked token finds no caller, ever.

use crate::accounts::{AccountId, AccountKind, Caller, Scopes, TokenHash, TokenId};

use super::StoreError;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Its number.
    pub id: AccountId,
    /// What it is for.
    pub kind: AccountKind,
    /// Its unique name.
    pub name: String,
    /// Most bytes of blobs it may own.
    pub quota_bytes: u64,
    /// When it was made (controller clock, ms).
    pub created_ms: u64,
}

/// An account to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// What it is for.
    pub kind: AccountKind,
    /// Its unique name.
    pub name: String,
    /// Most bytes of blobs it may own.
    pub quota_bytes: u64,
    /// When (ms).
    pub created_ms: u64,
}

/// A token to add: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// SHA-256 of the secret.
    pub hash: TokenHash,
    /// What it may be used for.
    pub scopes: Scopes,
    /// A name for humans ("laptop", "ci").
    pub label: String,
    /// When (ms).
    pub created_ms: u64,
}

/// A token as listed (no secret, no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its number.
    pub id: TokenId,
    /// Its account.
    pub account: AccountId,
    /// What it may be used for.
    pub scopes: Scopes,
    /// Its label.
    pub label: String,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// The accounts part of the store.
pub trait AccountStore {
    /// Makes an account and its first token in one transaction; `None` when the name is
    /// taken (nothing is stored then).
    fn create_account(
        &mut self,
        account: &NewAccount,
        token: &NewToken,
    ) -> Result<Option<(AccountRow, TokenId)>, StoreError>;
    /// An account.
    fn account(&self, id: AccountId) -> Result<Option<AccountRow>, StoreError>;
    /// An account by its name.
    fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>, StoreError>;
    /// Every account, oldest first.
    fn accounts(&self) -> Result<Vec<AccountRow>, StoreError>;
    /// Adds a token to an account; `None` when the account is unknown.
    fn add_token(
        &mut self,
        account: AccountId,
        token: &NewToken,
    ) -> Result<Option<TokenId>, StoreError>;
    /// An account's tokens, revoked ones included, oldest first.
    fn tokens(&self, account: AccountId) -> Result<Vec<TokenRow>, StoreError>;
    /// The caller a token stands for: `None` when the hash is unknown or the token revoked.
    fn caller(&self, hash: &TokenHash) -> Result<Option<Caller>, StoreError>;
    /// Revokes a token; false when it is unknown or already revoked.
    fn revoke_token(&mut self, id: TokenId, now_ms: u64) -> Result<bool, StoreError>;
    /// Says which provider runs `device` (`None`: no one, any provider's token serves
    /// it); the caller checks that the account is a provider.
    fn set_device_provider(
        &mut self,
        device: attest::DeviceId,
        provider: Option<AccountId>,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Sets (or clears) an account's spend cap, micro-credits of escrow per 24 h; false when
    /// the account is unknown.
    fn set_spend_cap(&mut self, account: AccountId, cap: Option<u64>) -> Result<bool, StoreError>;
    /// An account's spend cap.
    fn spend_cap(&self, account: AccountId) -> Result<Option<u64>, StoreError>;
    /// The provider that runs `device`, if one is set.
    fn device_provider(&self, device: attest::DeviceId) -> Result<Option<AccountId>, StoreError>;
}
