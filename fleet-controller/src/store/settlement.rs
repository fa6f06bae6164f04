//! Settlement rounds as stored: each provider's payout address, each round's root and
//! total (and where it was published), and each round's lines (who, where, how much, and
//! the ledger transaction that paid it out).

use crate::accounts::AccountId;

use super::StoreError;

/// A settlement round.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoundRow {
    /// Its number (1, 2, ...).
    pub round: u64,
    /// The Merkle root over its lines (`0x` hex).
    pub root: String,
    /// What it pays out in all, micro-credits (token units).
    pub total: u64,
    /// Its lines.
    pub lines: u32,
    /// When it was made (ms).
    pub created_ms: u64,
    /// Where it was published on chain, once it was.
    pub published: Option<Published>,
}

/// A round's publication.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The `publish` transaction (`None`: found on chain after a crash, not sent by us).
    pub tx: Option<String>,
    /// Its block.
    pub block: Option<u64>,
    /// Gas it used (the approval's included).
    pub gas: Option<u64>,
    /// When the controller saw it mined (ms).
    pub at_ms: u64,
}

/// One payout of a round.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoundLine {
    /// The round.
    pub round: u64,
    /// Its position among the round's leaves.
    pub index: u32,
    /// The provider.
    pub account: AccountId,
    /// The address the tokens go to.
    pub address: String,
    /// Micro-credits (token units).
    pub amount: u64,
    /// The ledger transaction that moved them out of the provider's wallet.
    pub ledger_tx: u64,
}

/// The settlement part of the store.
pub trait SettlementStore {
    /// Sets (or replaces) a provider's payout address; `Some(other)` (nothing changed) when
    /// another account has it: the contract pays an address once a round, so two providers
    /// sharing one would leave one's payout unclaimable.
    fn set_payout_address(
        &mut self,
        account: AccountId,
        address: &str,
        now: u64,
    ) -> Result<Option<AccountId>, StoreError>;
    /// A provider's payout address.
    fn payout_address(&self, account: AccountId) -> Result<Option<String>, StoreError>;
    /// Makes the next round, in one database transaction: every provider with a payout
    /// address and at least `min_micro` in its wallet is paid out (a `settlement` ledger
    /// transaction each) and becomes a line. `None` when nobody is due.
    fn settle_round(&mut self, min_micro: u64, now: u64) -> Result<Option<RoundRow>, StoreError>;
    /// Every round, newest first (only those not yet published when `unpublished`).
    fn rounds(&self, unpublished: bool) -> Result<Vec<RoundRow>, StoreError>;
    /// A round's lines, in leaf order.
    fn round_lines(&self, round: u64) -> Result<Vec<RoundLine>, StoreError>;
    /// A provider's lines in every round, newest first.
    fn account_lines(&self, account: AccountId) -> Result<Vec<RoundLine>, StoreError>;
    /// Records a round published.
    fn mark_published(&mut self, round: u64, published: &Published) -> Result<(), StoreError>;
}
