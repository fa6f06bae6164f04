//! The ledger as stored: transactions, their postings and every book's balance, kept
//! together (a transaction and the balances it moves are one database transaction).
//!
//! Invariants every backend keeps: a transaction's postings sum to zero (so all balances
//! sum to zero); no balance but the issuer's is ever below zero (a transaction that would
//! make one is refused whole, nothing stored); a job's escrow is taken in the same database
//! transaction as the job is stored and settled in the same one as it reaches its final
//! state.

use attest::msg::JobId;

use super::StoreError;
use crate::accounts::AccountId;
use crate::ledger::{Book, LedgerTx, TxKind};

/// A stored transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxRow {
    /// Its number, in order.
    pub id: u64,
    /// What it is (`deposit`, `escrow`, `payout`, `refund`).
    pub kind: &'static str,
    /// The job it is about.
    pub job: Option<String>,
    /// Why.
    pub memo: String,
    /// When (controller clock, ms).
    pub at_ms: u64,
    /// Its postings: book and amount (micro-credits).
    pub postings: Vec<(String, i64)>,
}

/// The ledger part of the store.
pub trait LedgerStore {
    /// Stores a balanced transaction at `at_ms`; refused (`StoreError::Ledger`, nothing
    /// stored) when a balance would go below zero. Its number.
    fn post(&mut self, tx: &LedgerTx, at_ms: u64) -> Result<u64, StoreError>;
    /// A book's balance (0 for one never used).
    fn balance(&self, book: Book) -> Result<i64, StoreError>;
    /// The sum of every balance (0 unless the ledger is broken).
    fn ledger_sum(&self) -> Result<i128, StoreError>;
    /// The transactions that touch `account`'s wallet or its jobs' escrows, newest first.
    fn account_history(&self, account: AccountId, limit: usize) -> Result<Vec<TxRow>, StoreError>;
    /// A page of [`LedgerStore::account_history`]: transactions numbered below `before`.
    fn account_history_before(
        &self,
        account: AccountId,
        limit: usize,
        before: u64,
    ) -> Result<Vec<TxRow>, StoreError>;
    /// What `account`'s open jobs hold in escrow.
    fn escrowed(&self, account: AccountId) -> Result<i64, StoreError>;
    /// A job's transactions, oldest first.
    fn job_transactions(&self, job: JobId) -> Result<Vec<TxRow>, StoreError>;
    /// The transactions no epoch holds yet, oldest first, as the controller signs them
    /// (each posting with its number in its book and the book's balance after it).
    fn unsealed_ledger(&self) -> Result<Vec<attest::msg::LedgerEntry>, StoreError>;
    /// The signed entries with a posting to `book` that epochs hold, oldest first, and how
    /// many more wait for the next epoch.
    fn sealed_entries_of(&self, book: Book) -> Result<SealedEntries, StoreError>;
}

/// A book's anchored ledger entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntries {
    /// Each entry's envelope, its epoch and its leaf there.
    pub sealed: Vec<(Vec<u8>, attest::EpochId, u64)>,
    /// Entries not in an epoch yet.
    pub pending: u64,
}

/// The name of a stored kind.
pub(crate) fn kind_name(s: &str) -> Result<&'static str, StoreError> {
    TxKind::parse(s)
        .map(TxKind::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("ledger transaction kind {s:?}")))
}
