//! The ledger: credits in double entry (sans-IO: the rules and the transactions; the store
//! keeps them). Amounts are micro-credits.
//!
//! Ledger accounts:
//! - `issuer`: where credits come from (an operator's deposit for a buyer who paid outside);
//!   the only one whose balance goes below zero: minus everything ever issued;
//! - `wallet:{account}`: what an account may spend (a buyer) or has earned (a provider);
//! - `escrow:{job}`: a job's price ceiling, held from its submission to its end;
//! - `fees`: the platform's share of each payout;
//! - `unclaimed`: payouts for devices no provider is set for, until an operator moves them;
//! - `settled`: providers' earnings paid out on chain (settlement rounds, [`crate::settlement`]).
//!
//! Every transaction's postings sum to zero, so all balances together always sum to zero;
//! no balance but the issuer's may go below zero (a transaction that would make one is
//! refused whole). A job's escrow is taken in the transaction that stores the job and
//! emptied in the one that ends it: paid out (the price to the provider less the fee, the
//! fee to the platform, the rest back to the buyer) when it is done, refunded whole when it
//! fails, is cancelled or expires. A job ends once, so it is paid once, wherever it ran.

use std::fmt;

use attest::msg::JobId;

use crate::accounts::AccountId;

/// A ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Book {
    /// Where credits come from.
    Issuer,
    /// An account's spendable (or earned) credits.
    Wallet(AccountId),
    /// A job's held price ceiling.
    Escrow(JobId),
    /// The platform's fees.
    Fees,
    /// Payouts for devices without a provider.
    Unclaimed,
    /// A provider's stake: held against wrong results, slashed when one is proven.
    Stake(AccountId),
    /// Credits paid out on chain (settlement rounds): what left the ledger as tokens.
    Settled,
}

impl Book {
    /// Whether its balance may go below zero (only the issuer's).
    pub fn may_go_negative(self) -> bool {
        self == Book::Issuer
    }

    /// Parses [`Book`]'s `Display`.
    pub fn parse(s: &str) -> Option<Book> {
        match s {
            "issuer" => Some(Book::Issuer),
            "fees" => Some(Book::Fees),
            "unclaimed" => Some(Book::Unclaimed),
            "settled" => Some(Book::Settled),
            _ => {
                if let Some(n) = s.strip_prefix("wallet:") {
                    return n.parse().ok().map(|n| Book::Wallet(AccountId(n)));
                }
                if let Some(n) = s.strip_prefix("stake:") {
                    return n.parse().ok().map(|n| Book::Stake(AccountId(n)));
                }
                let hex = s.strip_prefix("escrow:")?;
                attest::hex::decode_array(hex)
                    .ok()
                    .map(|b| Book::Escrow(JobId(b)))
            }
        }
    }
}

impl fmt::Display for Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Book::Issuer => f.write_str("issuer"),
            Book::Wallet(a) => write!(f, "wallet:{}", a.0),
            Book::Escrow(j) => write!(f, "escrow:{j}"),
            Book::Fees => f.write_str("fees"),
            Book::Unclaimed => f.write_str("unclaimed"),
            Book::Stake(a) => write!(f, "stake:{}", a.0),
            Book::Settled => f.write_str("settled"),
        }
    }
}

/// What a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// Credits issued to an account.
    Deposit,
    /// A job's ceiling held at its submission.
    Escrow,
    /// A done job's price paid out (and the rest of its escrow refunded).
    Payout,
    /// A job that did not finish: its escrow back to its buyer.
    Refund,
    /// Credits moved between a provider's wallet and its stake.
    Stake,
    /// A share of a provider's stake taken for a proven wrong result: to the wronged buyer
    /// and the platform.
    Slash,
    /// A provider's earnings paid out on chain in a settlement round.
    Settlement,
}

impl TxKind {
    /// The name the store and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Deposit => "deposit",
            TxKind::Escrow => "escrow",
            TxKind::Payout => "payout",
            TxKind::Refund => "refund",
            TxKind::Stake => "stake",
            TxKind::Slash => "slash",
            TxKind::Settlement => "settlement",
        }
    }

    /// Parses [`TxKind::as_str`].
    pub fn parse(s: &str) -> Option<TxKind> {
        [
            TxKind::Deposit,
            TxKind::Escrow,
            TxKind::Payout,
            TxKind::Refund,
            TxKind::Stake,
            TxKind::Slash,
            TxKind::Settlement,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One line of a transaction: `amount` into `book` (negative: out of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    /// The account.
    pub book: Book,
    /// Micro-credits in (out when negative).
    pub amount: i64,
}

/// A balanced transaction: its postings sum to zero (only [`LedgerTx::new`] makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTx {
    kind: TxKind,
    job: Option<JobId>,
    memo: String,
    postings: Vec<Posting>,
}

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Its postings do not sum to zero (or overflow).
    #[error("postings sum to {0}, not 0")]
    Unbalanced(i128),
    /// A zero or negative amount where a positive one is needed.
    #[error("{0}: the amount must be above zero")]
    NotPositive(&'static str),
    /// An amount past what the ledger holds (2^63 - 1 micro-credits).
    #[error("{0}: the amount is too large")]
    TooLarge(&'static str),
    /// The buyer's spend cap would be passed: what its jobs escrowed over the last 24 h
    /// and this one's ceiling are more than the cap.
    #[error(
        "the spend cap is {cap} micro-credits a day; {spent} are held by jobs of the last 24 h and this one needs {needed}"
    )]
    SpendCap {
        /// The cap.
        cap: u64,
        /// Escrowed over the last 24 h.
        spent: u64,
        /// This job's ceiling.
        needed: u64,
    },
    /// A balance would go below zero.
    #[error("{book} holds {available} micro-credits; {needed} are needed")]
    Insufficient {
        /// The account.
        book: Book,
        /// What it holds.
        available: i64,
        /// What the transaction takes from it.
        needed: i64,
    },
}

/// Most characters of a memo.
pub const MAX_MEMO: usize = 200;

impl LedgerTx {
    /// A transaction of `postings` (zero amounts dropped), refused unless they sum to zero.
    pub fn new(
        kind: TxKind,
        job: Option<JobId>,
        memo: &str,
        postings: Vec<Posting>,
    ) -> Result<LedgerTx, LedgerError> {
        let sum: i128 = postings.iter().map(|p| i128::from(p.amount)).sum();
        if sum != 0 {
            return Err(LedgerError::Unbalanced(sum));
        }
        Ok(LedgerTx {
            kind,
            job,
            memo: memo.chars().take(MAX_MEMO).collect(),
            postings: postings.into_iter().filter(|p| p.amount != 0).collect(),
        })
    }

    /// What it is.
    pub fn kind(&self) -> TxKind {
        self.kind
    }
    /// The job it is about.
    pub fn job(&self) -> Option<JobId> {
        self.job
    }
    /// Why, in words.
    pub fn memo(&self) -> &str {
        &self.memo
    }
    /// Its postings (none zero; they sum to zero).
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
}

fn amount(what: &'static str, micro: u64) -> Result<i64, LedgerError> {
    if micro == 0 {
        return Err(LedgerError::NotPositive(what));
    }
    i64::try_from(micro).map_err(|_| LedgerError::TooLarge(what))
}

/// Credits issued to `account`.
pub fn deposit(account: AccountId, micro: u64, memo: &str) -> Result<LedgerTx, LedgerError> {
    let a = amount("a deposit", micro)?;
    LedgerTx::new(
        TxKind::Deposit,
        None,
        memo,
        vec![
            Posting {
                book: Book::Issuer,
                amount: -a,
            },
            Posting {
                book: Book::Wallet(account),
                amount: a,
            },
        ],
    )
}

/// A job's ceiling held from its buyer's wallet.
pub fn escrow(buyer: AccountId, job: JobId, micro: u64) -> Result<LedgerTx, LedgerError> {
    let a = amount("an escrow", micro)?;
    LedgerTx::new(
        TxKind::Escrow,
        Some(job),
        "the job's price ceiling held",
        vec![
            Posting {
                book: Book::Wallet(buyer),
                amount: -a,
            },
            Posting {
                book: Book::Escrow(job),
                amount: a,
            },
        ],
    )
}

/// A provider's earnings `micro` paid out on chain in settlement round `round` to
/// `address`: out of its wallet into `settled`.
pub fn settlement(
    provider: AccountId,
    micro: u64,
    round: u64,
    address: &str,
) -> Result<LedgerTx, LedgerError> {
    let amount = i64::try_from(micro).map_err(|_| LedgerError::NotPositive("a settlement"))?;
    if amount == 0 {
        return Err(LedgerError::NotPositive("a settlement"));
    }
    LedgerTx::new(
        TxKind::Settlement,
        None,
        &format!("settlement round {round} to {address}"),
        vec![
            Posting {
                book: Book::Wallet(provider),
                amount: -amount,
            },
            Posting {
                book: Book::Settled,
                amount,
            },
        ],
    )
}

/// `micro` credits from a provider's wallet into its stake (negative: back out).
pub fn stake(provider: AccountId, micro: i64) -> Result<LedgerTx, LedgerError> {
    if micro == 0 {
        return Err(LedgerError::NotPositive("a stake"));
    }
    LedgerTx::new(
        TxKind::Stake,
        None,
        if micro > 0 {
            "staked"
        } else {
            "stake withdrawn"
        },
        vec![
            Posting {
                book: Book::Wallet(provider),
                amount: -micro,
            },
            Posting {
                book: Book::Stake(provider),
                amount: micro,
            },
        ],
    )
}

/// The slash for a proven wrong result of `job`: `share_ppm` of the provider's stake
/// `staked` (rounded down), half (rounded up) to the wronged buyer, the rest to the
/// platform. `None` when there is nothing to take.
pub fn slash(
    provider: AccountId,
    staked: i64,
    share_ppm: u32,
    buyer: AccountId,
    job: JobId,
    memo: &str,
) -> Result<Option<LedgerTx>, LedgerError> {
    let take = fee_of(staked.max(0) as u64, share_ppm) as i64;
    if take == 0 {
        return Ok(None);
    }
    let to_buyer = (take + 1) / 2;
    LedgerTx::new(
        TxKind::Slash,
        Some(job),
        memo,
        vec![
            Posting {
                book: Book::Stake(provider),
                amount: -take,
            },
            Posting {
                book: Book::Wallet(buyer),
                amount: to_buyer,
            },
            Posting {
                book: Book::Fees,
                amount: take - to_buyer,
            },
        ],
    )
    .map(Some)
}

/// What a done job pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payout {
    /// Who runs the device it ran on (`None`: no provider set; paid into `unclaimed`).
    pub provider: Option<AccountId>,
    /// Its price, micro-credits (capped at its escrow).
    pub price: u64,
    /// The platform's fee, parts per million of the price.
    pub fee_ppm: u32,
}

/// The fee on `price` at `fee_ppm`, rounded down.
pub fn fee_of(price: u64, fee_ppm: u32) -> u64 {
    (u128::from(price) * u128::from(fee_ppm.min(1_000_000)) / 1_000_000) as u64
}

/// Empties a job's escrow of `held` micro-credits at its end: each payout in turn (its
/// price, at most what is still held, less the fee to the provider, the fee to the
/// platform), then the rest back to the buyer; without payouts, all of it back to the buyer.
/// A job that ran several times (redundancy, a spot check) pays each run that agreed.
/// `None` when nothing is held.
pub fn settle(
    buyer: AccountId,
    job: JobId,
    held: i64,
    payouts: &[Payout],
    memo: &str,
) -> Result<Option<LedgerTx>, LedgerError> {
    if held <= 0 {
        return Ok(None);
    }
    let mut rest = held as u64;
    let mut lines: Vec<(Book, i64)> = vec![(Book::Escrow(job), -held)];
    let mut add = |book: Book, amount: u64| match lines.iter_mut().find(|(b, _)| *b == book) {
        Some((_, a)) => *a += amount as i64,
        None => lines.push((book, amount as i64)),
    };
    for p in payouts {
        let price = p.price.min(rest);
        let fee = fee_of(price, p.fee_ppm);
        add(
            p.provider.map_or(Book::Unclaimed, Book::Wallet),
            price - fee,
        );
        add(Book::Fees, fee);
        rest -= price;
    }
    add(Book::Wallet(buyer), rest);
    let kind = if payouts.is_empty() {
        TxKind::Refund
    } else {
        TxKind::Payout
    };
    let postings = lines
        .into_iter()
        .map(|(book, amount)| Posting { book, amount })
        .collect();
    LedgerTx::new(kind, Some(job), memo, postings).map(Some)
}

/// What a job's escrow holds for `max_price` micro-credits per GPU-hour over `run_ms`,
/// rounded up (at least 1 when the price is not 0; 0 for a free job).
pub fn ceiling(max_price_per_gpu_hour: u64, run_ms: u64) -> u64 {
    let micro = u128::from(max_price_per_gpu_hour) * u128::from(run_ms);
    micro.div_ceil(3_600_000).min(u128::from(i64::MAX as u64)) as u64
}

/// The price of `run_ms` on a device asking `price_per_gpu_hour`, rounded up.
pub fn price_of(price_per_gpu_hour: u64, run_ms: u64) -> u64 {
    ceiling(price_per_gpu_hour, run_ms)
}

/// A book's statement of account ([`attest::bundle::AccountProof`]): every anchored entry
/// with a posting to it and its inclusion proof; and how many more wait for the next epoch
/// (not in the statement yet).
pub fn statement<S: crate::store::Store + crate::store::ledger::LedgerStore>(
    store: &S,
    controller: &attest::KeyPair,
    book: Book,
) -> Result<(attest::bundle::AccountProof, u64), crate::bundles::BundleError> {
    use std::collections::BTreeMap;
    let entries = store.sealed_entries_of(book)?;
    let mut trees = BTreeMap::new();
    let mut epochs = Vec::new();
    let mut evidence = Vec::with_capacity(entries.sealed.len());
    for (envelope, epoch, leaf) in entries.sealed {
        if let std::collections::btree_map::Entry::Vacant(slot) = trees.entry(epoch) {
            let (tree, proof) = crate::bundles::epoch_tree(store, controller, epoch)?;
            epochs.push(proof);
            slot.insert(tree);
        }
        let proof = trees[&epoch].inclusion_proof(leaf).map_err(|e| {
            crate::store::StoreError::Corrupt(format!("ledger leaf {leaf} of epoch {epoch}: {e}"))
        })?;
        evidence.push(attest::bundle::Evidence {
            envelope: attest::bundle::Blob(envelope),
            epoch,
            proof,
        });
    }
    Ok((
        attest::bundle::AccountProof {
            format: attest::bundle::ACCOUNT_FORMAT,
            book: book.to_string(),
            entries: evidence,
            epochs,
        },
        entries.pending,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_round_trip_through_their_names() {
        for b in [
            Book::Issuer,
            Book::Fees,
            Book::Unclaimed,
            Book::Wallet(AccountId(42)),
            Book::Escrow(JobId([7; 16])),
        ] {
            assert_eq!(Book::parse(&b.to_string()), Some(b), "{b}");
        }
        assert_eq!(Book::parse("wallet:x"), None);
        assert_eq!(Book::parse("escrow:00"), None);
    }

    #[test]
    fn a_payout_splits_the_escrow_and_a_refund_returns_it() {
        let (buyer, provider, job) = (AccountId(1), AccountId(2), JobId([1; 16]));
        let tx = settle(
            buyer,
            job,
            1_000,
            &[Payout {
                provider: Some(provider),
                price: 400,
                fee_ppm: 50_000,
            }],
            "done",
        )
        .unwrap()
        .unwrap();
        let got: Vec<(Book, i64)> = tx.postings().iter().map(|p| (p.book, p.amount)).collect();
        assert_eq!(
            got,
            [
                (Book::Escrow(job), -1_000),
                (Book::Wallet(provider), 380),
                (Book::Fees, 20),
                (Book::Wallet(buyer), 600)
            ]
        );
        // A price above the escrow is capped at it.
        let tx = settle(
            buyer,
            job,
            100,
            &[Payout {
                provider: None,
                price: 400,
                fee_ppm: 0,
            }],
            "done",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            tx.postings()[1],
            Posting {
                book: Book::Unclaimed,
                amount: 100
            }
        );
        // Two runs paid (redundancy): each its price, one fee line; the second is capped at
        // what is still held (nothing is left for the buyer: no posting of zero).
        let other = AccountId(3);
        let pay = |provider, price| Payout {
            provider: Some(provider),
            price,
            fee_ppm: 100_000,
        };
        let tx = settle(
            buyer,
            job,
            1_000,
            &[pay(provider, 600), pay(other, 600)],
            "done",
        )
        .unwrap()
        .unwrap();
        let got: Vec<(Book, i64)> = tx.postings().iter().map(|p| (p.book, p.amount)).collect();
        assert_eq!(
            got,
            [
                (Book::Escrow(job), -1_000),
                (Book::Wallet(provider), 540),
                (Book::Fees, 100),
                (Book::Wallet(other), 360),
            ]
        );
        let r = settle(buyer, job, 100, &[], "failed").unwrap().unwrap();
        assert_eq!(r.kind(), TxKind::Refund);
        assert_eq!(
            r.postings()[1],
            Posting {
                book: Book::Wallet(buyer),
                amount: 100
            }
        );
        assert_eq!(settle(buyer, job, 0, &[], "x").unwrap(), None);
    }

    #[test]
    fn unbalanced_or_empty_amounts_are_refused() {
        let p = |amount| Posting {
            book: Book::Fees,
            amount,
        };
        assert_eq!(
            LedgerTx::new(TxKind::Deposit, None, "", vec![p(1), p(1)]),
            Err(LedgerError::Unbalanced(2))
        );
        assert!(matches!(
            deposit(AccountId(1), 0, ""),
            Err(LedgerError::NotPositive(_))
        ));
        assert!(matches!(
            deposit(AccountId(1), u64::MAX, ""),
            Err(LedgerError::TooLarge(_))
        ));
        assert_eq!(ceiling(3_600_000, 1), 1);
        assert_eq!(ceiling(1_000_000, 1_800_000), 500_000);
        assert_eq!(ceiling(0, 1_000), 0);
    }
}
