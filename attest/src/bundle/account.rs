//! A statement of account and its offline check: every posting of one ledger book, each in
//! a controller-signed [`LedgerEntry`] with its inclusion proof, and the epochs those
//! proofs lead to ([`verify_account`]).
//!
//! What it proves: each entry was signed by the pinned controller and is a leaf of an
//! anchored epoch; each balances (its postings sum to zero); the book's postings are
//! numbered 0, 1, 2, ... with none missing and each balance is the one before plus its
//! amount. So the controller can neither restate a balance nor drop a posting from the
//! statement without the check failing. What it cannot prove: that no posting was made
//! after the last epoch the statement covers (the next statement would show it).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::anchors::{check_anchors, check_inclusion};
use super::{Check, EpochProof, Evidence, VerifyError, VerifyOptions, fail};
use crate::envelope::{Envelope, Kind};
use crate::msg::LedgerEntry;
use crate::units::EpochId;

/// The statement-of-account format this crate writes and reads.
pub const ACCOUNT_FORMAT: u8 = 1;

/// A statement of account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProof {
    /// [`ACCOUNT_FORMAT`].
    pub format: u8,
    /// The book (`wallet:7`).
    pub book: String,
    /// Every ledger entry with a posting to the book, oldest first, with its proof.
    pub entries: Vec<Evidence>,
    /// The epochs the proofs lead to, with their anchors.
    pub epochs: Vec<EpochProof>,
}

/// What a statement of account established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountReport {
    /// The book.
    pub book: String,
    /// Its postings, all accounted for.
    pub postings: u64,
    /// Its balance after the last of them.
    pub balance: i64,
    /// The last epoch that holds one of them.
    pub through_epoch: Option<EpochId>,
    /// Whether some anchors are on an EVM chain and were only checked offline.
    pub onchain_unchecked: bool,
}

impl AccountProof {
    /// Human-readable JSON.
    #[cfg(feature = "std")]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("account types serialise to JSON")
    }

    /// Decodes JSON (the only encoding), bounded.
    #[cfg(feature = "std")]
    pub fn decode(bytes: &[u8]) -> Result<AccountProof, VerifyError> {
        use super::MAX_BUNDLE_LEN;
        if bytes.len() > MAX_BUNDLE_LEN {
            return fail(
                Check::Format,
                format!(
                    "statement is {} bytes, at most {MAX_BUNDLE_LEN}",
                    bytes.len()
                ),
            );
        }
        serde_json::from_slice(bytes)
            .or_else(|e| fail(Check::Format, format!("statement of account: {e}")))
    }
}

/// Verifies a statement of account offline (see the module documentation).
pub fn verify_account(
    p: &AccountProof,
    opts: &VerifyOptions,
) -> Result<AccountReport, VerifyError> {
    if p.format != ACCOUNT_FORMAT {
        return fail(
            Check::Format,
            format!(
                "statement of account format {} (this verifier reads {ACCOUNT_FORMAT})",
                p.format
            ),
        );
    }
    // Each entry: a ledger entry signed by the pinned controller, balanced, touching the
    // book exactly once.
    let mut lines: Vec<(u64, i64, i64, u64)> = Vec::with_capacity(p.entries.len());
    for (i, ev) in p.entries.iter().enumerate() {
        let env = Envelope::decode(&ev.envelope.0)
            .or_else(|e| fail(Check::Decode, format!("entry #{i}: {e}")))?;
        if env.kind() != Kind::LedgerEntry {
            return fail(
                Check::Decode,
                format!("entry #{i}: a {} envelope, not a ledger entry", env.kind()),
            );
        }
        env.verify(&opts.trust.controller_key).or_else(|e| {
            fail(
                Check::Signature,
                format!(
                    "entry #{i}: {e} under the pinned controller key {}",
                    opts.trust.controller_key
                ),
            )
        })?;
        let entry: LedgerEntry = env
            .open()
            .or_else(|e| fail(Check::Decode, format!("entry #{i}: {e}")))?;
        let sum: i128 = entry.postings.iter().map(|q| i128::from(q.amount)).sum();
        if sum != 0 {
            return fail(
                Check::Ledger,
                format!(
                    "entry #{i} (transaction {}): its postings sum to {sum}",
                    entry.id
                ),
            );
        }
        let mine: Vec<_> = entry.postings.iter().filter(|q| q.book == p.book).collect();
        let [line] = mine[..] else {
            return fail(
                Check::Ledger,
                format!(
                    "entry #{i} (transaction {}): {} postings to {}, not one",
                    entry.id,
                    mine.len(),
                    p.book
                ),
            );
        };
        lines.push((line.seq, line.amount, line.balance, entry.id));
    }
    check_inclusion("entry", &p.entries, &p.epochs)?;
    // Statements of account do not carry key rotations (yet): one key signs them.
    let keys = crate::keys::KeyHistory::single(opts.trust.controller_key);
    let onchain_unchecked = check_anchors(&p.epochs, opts, &keys)?;
    // The book's postings: all of them from its first, each balance following from the one
    // before.
    lines.sort_by_key(|l| l.0);
    let mut balance: i64 = 0;
    for (k, &(seq, amount, after, id)) in lines.iter().enumerate() {
        if seq != k as u64 {
            return fail(
                Check::Ledger,
                format!(
                    "{}: posting {k} is missing (the next one carries number {seq}, transaction {id})",
                    p.book
                ),
            );
        }
        let expected = balance.checked_add(amount).ok_or_else(|| VerifyError {
            check: Check::Ledger,
            detail: format!("{}: the balance overflows at posting {seq}", p.book),
        })?;
        if after != expected {
            return fail(
                Check::Ledger,
                format!(
                    "{}: posting {seq} (transaction {id}) states a balance of {after}, the postings give {expected}",
                    p.book
                ),
            );
        }
        balance = expected;
    }
    Ok(AccountReport {
        book: p.book.clone(),
        postings: lines.len() as u64,
        balance,
        through_epoch: p.entries.iter().map(|e| e.epoch).max(),
        onchain_unchecked,
    })
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::bundle::{AnchorRef, Blob, VerifyOptions};
    use crate::hash::Hash32;
    use crate::id::KeyPair;
    use crate::merkle::MerkleTree;
    use crate::msg::{AnchorEntry, LedgerPosting};
    use crate::units::TimestampMs;

    /// Transactions with postings to `wallet:1` of `amounts` (each from the issuer),
    /// signed by `key`, as one epoch's leaves after two unrelated ones.
    fn statement(key: &KeyPair, amounts: &[i64]) -> AccountProof {
        statement_lying(key, amounts, None)
    }

    /// [`statement`], the wallet's balance after posting `lie` stated 1 higher.
    fn statement_lying(key: &KeyPair, amounts: &[i64], lie: Option<usize>) -> AccountProof {
        let mut balance = 0;
        let entries: Vec<Vec<u8>> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                balance += a;
                let e = LedgerEntry {
                    id: i as u64 + 1,
                    kind: "deposit".into(),
                    job: None,
                    memo: String::new(),
                    at: TimestampMs(1_000 + i as u64),
                    postings: alloc::vec![
                        LedgerPosting {
                            book: "issuer".into(),
                            amount: -a,
                            seq: i as u64,
                            balance: -balance,
                        },
                        LedgerPosting {
                            book: "wallet:1".into(),
                            amount: *a,
                            seq: i as u64,
                            balance: balance + i64::from(lie == Some(i)),
                        },
                    ],
                };
                Envelope::seal(&e, key).into_bytes()
            })
            .collect();
        let mut leaves: Vec<Vec<u8>> = alloc::vec![b"a record".to_vec(), b"another".to_vec()];
        leaves.extend(entries.iter().cloned());
        let tree = MerkleTree::from_leaves(&leaves);
        let head = tree.head();
        let anchor = AnchorEntry {
            index: 0,
            prev: Hash32::ZERO,
            epoch: EpochId(0),
            tree_size: head.size,
            root: head.root,
            timestamp: TimestampMs(2_000),
        };
        AccountProof {
            format: ACCOUNT_FORMAT,
            book: "wallet:1".into(),
            entries: entries
                .into_iter()
                .enumerate()
                .map(|(i, env)| Evidence {
                    envelope: Blob(env),
                    epoch: EpochId(0),
                    proof: tree.inclusion_proof(i as u64 + 2).unwrap(),
                })
                .collect(),
            epochs: alloc::vec![EpochProof {
                epoch: EpochId(0),
                head,
                anchor: AnchorRef::Local {
                    entry: Blob(Envelope::seal(&anchor, key).into_bytes()),
                    controller_key: key.public(),
                },
            }],
        }
    }

    #[test]
    fn a_complete_statement_verifies_and_gives_the_balance() {
        let key = KeyPair::from_seed(&[5; 32]);
        let opts = VerifyOptions::pinned(key.public(), TimestampMs(10_000));
        let r = verify_account(&statement(&key, &[500, 250, -100]), &opts).unwrap();
        assert_eq!(
            (r.postings, r.balance, r.through_epoch),
            (3, 650, Some(EpochId(0)))
        );
        // Round trip through its JSON.
        let p = statement(&key, &[7]);
        assert_eq!(AccountProof::decode(p.to_json().as_bytes()).unwrap(), p);
    }

    #[test]
    fn a_dropped_posting_a_restated_balance_or_another_signer_fails() {
        let key = KeyPair::from_seed(&[5; 32]);
        let opts = VerifyOptions::pinned(key.public(), TimestampMs(10_000));
        // A posting left out of the statement.
        let mut p = statement(&key, &[500, 250, -100]);
        p.entries.remove(1);
        let e = verify_account(&p, &opts).unwrap_err();
        assert_eq!(e.check, Check::Ledger);
        assert!(e.detail.contains("posting 1 is missing"), "{e}");
        // An entry whose bytes were changed no longer sits in the anchored tree (and its
        // signature fails first).
        let mut p = statement(&key, &[500]);
        let last = p.entries[0].envelope.0.len() - 70;
        p.entries[0].envelope.0[last] ^= 1;
        assert!(verify_account(&p, &opts).is_err());
        // A balance the postings do not give, even signed and anchored.
        let e = verify_account(&statement_lying(&key, &[500, 250], Some(1)), &opts).unwrap_err();
        assert_eq!(e.check, Check::Ledger);
        assert!(e.detail.contains("states a balance of 751"), "{e}");
        // Signed by someone else.
        let other = KeyPair::from_seed(&[6; 32]);
        let e = verify_account(&statement(&other, &[500]), &opts).unwrap_err();
        assert_eq!(e.check, Check::Signature);
        // Not anchored where the proof says.
        let mut p = statement(&key, &[500, 1]);
        p.epochs[0].head.root = Hash32::digest(b"elsewhere");
        assert!(verify_account(&p, &opts).is_err());
    }
}
