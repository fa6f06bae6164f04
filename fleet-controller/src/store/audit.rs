//! The audit log: operator actions over the API and the console (who, when, what, with
//! which outcome), appended after each is answered and never changed.

use serde::Serialize;

use super::StoreError;
use crate::accounts::{AccountId, TokenId};

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When it was answered, ms since the Unix epoch.
    pub at_ms: u64,
    /// The account that made it.
    pub account: AccountId,
    /// With which token (a console session's actions carry its account's session token id,
    /// 0).
    pub token: TokenId,
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The answer's status.
    pub status: u16,
}

/// The audit part of the store.
pub trait AuditStore {
    /// Appends `entry`; its number.
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<u64, StoreError>;
    /// Up to `limit` entries numbered below `before` (all when `None`), newest first, with
    /// their numbers.
    fn audit_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError>;
}
