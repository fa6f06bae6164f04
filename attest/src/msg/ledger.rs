//! The controller's ledger as it signs it: one [`LedgerEntry`] per transaction, sealed
//! when the epoch that holds it closes and a leaf of that epoch's tree beside the devices'
//! chain messages. So a statement of account (every posting of one book, each with its
//! inclusion proof) verifies offline like a carbon proof: the controller cannot restate a
//! balance, nor leave a posting out, without the verifier noticing (a book's postings are
//! numbered from 0, each with the balance after it).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{JobId, check_len, check_text};
use crate::envelope::{DecodeError, Kind, Message};
use crate::units::TimestampMs;

/// At most this many postings in one transaction.
pub const MAX_POSTINGS: usize = 16;

/// One transaction, controller-signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Its number in the ledger (1, 2, ...).
    pub id: u64,
    /// What it is: `deposit`, `escrow`, `payout`, `refund`.
    pub kind: String,
    /// The job it is about.
    pub job: Option<JobId>,
    /// Why.
    pub memo: String,
    /// When (controller clock).
    pub at: TimestampMs,
    /// Its postings; their amounts sum to zero.
    pub postings: Vec<LedgerPosting>,
}

/// One line of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosting {
    /// The book (`wallet:7`, `escrow:{job}`, `fees`, `issuer`, `unclaimed`).
    pub book: String,
    /// Micro-credits into it (out of it when negative).
    pub amount: i64,
    /// The book's posting number: 0 for its first, then 1, 2, ...
    pub seq: u64,
    /// The book's balance after it.
    pub balance: i64,
}

impl Message for LedgerEntry {
    const KIND: Kind = Kind::LedgerEntry;

    fn validate(&self) -> Result<(), DecodeError> {
        check_text("ledger kind", &self.kind)?;
        check_text("ledger memo", &self.memo)?;
        check_len("postings", &self.postings, MAX_POSTINGS)?;
        for p in &self.postings {
            check_text("ledger book", &p.book)?;
        }
        Ok(())
    }
}
