//! The web console's part of the store: accounts' passwords (argon2id PHC strings; the
//! console hashes and checks them, the store only keeps them) and login sessions.
//!
//! Invariants every backend keeps:
//! - a session is kept only as the SHA-256 of its cookie's secret, never the secret;
//! - an expired session finds no one, whether or not it has been purged yet;
//! - setting a password ends every session of the account (a changed password locks out
//!   whoever held the old one).

use crate::accounts::{AccountId, AccountKind, TokenHash};

use super::StoreError;

/// A live session: who it is and the CSRF token its forms carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The account logged in.
    pub account: AccountId,
    /// Its kind.
    pub kind: AccountKind,
    /// Its name.
    pub name: String,
    /// The token every form of this session posts back.
    pub csrf: [u8; 32],
    /// When it ends (ms).
    pub expires_ms: u64,
}

/// The console part of the store.
pub trait ConsoleStore {
    /// Sets (or replaces) an account's password hash and ends its sessions; false when the
    /// account is unknown.
    fn set_password(
        &mut self,
        account: AccountId,
        phc: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    /// An account's password hash, by the account's name, with the account; `None` when
    /// there is no such account or it has no password.
    fn password_by_name(&self, name: &str) -> Result<Option<(AccountId, String)>, StoreError>;
    /// Stores a new session.
    fn create_session(
        &mut self,
        hash: TokenHash,
        account: AccountId,
        csrf: [u8; 32],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError>;
    /// The session a cookie's hash stands for, unless it has expired by `now_ms`.
    fn session(&self, hash: &TokenHash, now_ms: u64) -> Result<Option<SessionRow>, StoreError>;
    /// Ends a session (log out); false when there was none.
    fn end_session(&mut self, hash: &TokenHash) -> Result<bool, StoreError>;
    /// Removes sessions expired by `now_ms`; how many.
    fn purge_sessions(&mut self, now_ms: u64) -> Result<u64, StoreError>;
}
