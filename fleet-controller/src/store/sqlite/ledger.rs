//! [`LedgerStore`] on SQLite (tables of migration 9).

use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, to_i64};
use crate::accounts::AccountId;
use crate::ledger::{Book, LedgerError, LedgerTx};
use crate::store::StoreError;
use crate::store::ledger::{LedgerStore, SealedEntries, TxRow, kind_name};
use attest::msg::{LedgerEntry, LedgerPosting};

/// Posts `tx` inside the database transaction `db` (the caller commits): balances moved,
/// refused whole (`StoreError::Ledger`) when one would go below zero.
pub(crate) fn post_in(db: &Transaction<'_>, tx: &LedgerTx, at_ms: u64) -> Result<u64, StoreError> {
    let mut lines = Vec::with_capacity(tx.postings().len());
    for p in tx.postings() {
        let book = p.book.to_string();
        let (now, count): (i64, i64) = db
            .query_row(
                "SELECT balance, postings FROM ledger_balances WHERE book = ?1",
                [&book],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        let next = now
            .checked_add(p.amount)
            .ok_or(StoreError::Ledger(LedgerError::TooLarge("a balance")))?;
        if next < 0 && !p.book.may_go_negative() {
            return Err(StoreError::Ledger(LedgerError::Insufficient {
                book: p.book,
                available: now,
                needed: -p.amount,
            }));
        }
        db.execute(
            "INSERT INTO ledger_balances (book, balance, postings) VALUES (?1, ?2, 1)
             ON CONFLICT (book) DO UPDATE SET balance = ?2, postings = postings + 1",
            params![book, next],
        )?;
        lines.push((book, p.amount, count, next));
    }
    db.execute(
        "INSERT INTO ledger_tx (kind, job, memo, at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            tx.kind().as_str(),
            tx.job().map(|j| j.0.to_vec()),
            tx.memo(),
            to_i64(at_ms)
        ],
    )?;
    let id = db.last_insert_rowid();
    let mut st = db.prepare_cached(
        "INSERT INTO ledger_postings (tx, book, amount, seq, balance) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (book, amount, seq, balance) in lines {
        st.execute(params![id, book, amount, seq, balance])?;
    }
    Ok(id as u64)
}

/// A book's balance inside `db`.
pub(crate) fn balance_in(db: &rusqlite::Connection, book: Book) -> Result<i64, StoreError> {
    Ok(db
        .query_row(
            "SELECT balance FROM ledger_balances WHERE book = ?1",
            [book.to_string()],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

impl SqliteStore {
    fn tx_rows(
        &self,
        where_sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<TxRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT id, kind, job, memo, at_ms FROM ledger_tx WHERE {where_sql}"
        ))?;
        let heads = st
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut lines = self.conn.prepare_cached(
            "SELECT book, amount FROM ledger_postings WHERE tx = ?1 ORDER BY rowid",
        )?;
        heads
            .into_iter()
            .map(|(id, kind, job, memo, at)| {
                let postings = lines
                    .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(TxRow {
                    id: id as u64,
                    kind: kind_name(&kind)?,
                    job: job.map(|j| attest::hex::encode(&j)),
                    memo,
                    at_ms: at as u64,
                    postings,
                })
            })
            .collect()
    }
}

impl LedgerStore for SqliteStore {
    fn post(&mut self, tx: &LedgerTx, at_ms: u64) -> Result<u64, StoreError> {
        let db = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let id = post_in(&db, tx, at_ms)?;
        db.commit()?;
        Ok(id)
    }

    fn balance(&self, book: Book) -> Result<i64, StoreError> {
        balance_in(&self.conn, book)
    }

    fn ledger_sum(&self) -> Result<i128, StoreError> {
        let mut st = self.conn.prepare("SELECT balance FROM ledger_balances")?;
        let all = st
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(all.into_iter().map(i128::from).sum())
    }

    fn account_history(&self, account: AccountId, limit: usize) -> Result<Vec<TxRow>, StoreError> {
        self.account_history_before(account, limit, i64::MAX as u64)
    }

    fn account_history_before(
        &self,
        account: AccountId,
        limit: usize,
        before: u64,
    ) -> Result<Vec<TxRow>, StoreError> {
        let wallet = Book::Wallet(account).to_string();
        self.tx_rows(
            "id IN (SELECT p.tx FROM ledger_postings p WHERE p.book = ?1
                    UNION SELECT t.id FROM ledger_tx t JOIN jobs j ON j.id = t.job
                          WHERE j.owner = ?2)
               AND id < ?4
             ORDER BY id DESC LIMIT ?3",
            &[
                &wallet,
                &to_i64(account.0),
                &(limit as i64),
                &to_i64(before),
            ],
        )
    }

    fn escrowed(&self, account: AccountId) -> Result<i64, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM jobs WHERE owner = ?1
             AND state IN ('queued', 'scheduled', 'running', 'paused', 'validating')",
        )?;
        let ids = st
            .query_map([to_i64(account.0)], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut sum = 0i64;
        for id in ids {
            let job = attest::msg::JobId(
                id.try_into()
                    .map_err(|_| StoreError::Corrupt("a job id is not 16 bytes".into()))?,
            );
            sum = sum.saturating_add(balance_in(&self.conn, Book::Escrow(job))?);
        }
        Ok(sum)
    }

    fn job_transactions(&self, job: attest::msg::JobId) -> Result<Vec<TxRow>, StoreError> {
        self.tx_rows("job = ?1 ORDER BY id", &[&job.0.to_vec()])
    }

    fn unsealed_ledger(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, kind, job, memo, at_ms FROM ledger_tx WHERE epoch IS NULL ORDER BY id",
        )?;
        let heads = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut lines = self.conn.prepare_cached(
            "SELECT book, amount, seq, balance FROM ledger_postings WHERE tx = ?1 ORDER BY rowid",
        )?;
        heads
            .into_iter()
            .map(|(id, kind, job, memo, at)| {
                let postings = lines
                    .query_map([id], |r| {
                        Ok(LedgerPosting {
                            book: r.get(0)?,
                            amount: r.get(1)?,
                            seq: r.get::<_, i64>(2)? as u64,
                            balance: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let job = job
                    .map(|j| {
                        j.try_into()
                            .map(attest::msg::JobId)
                            .map_err(|_| StoreError::Corrupt("a job id is not 16 bytes".into()))
                    })
                    .transpose()?;
                Ok(LedgerEntry {
                    id: id as u64,
                    kind: kind_name(&kind)?.to_string(),
                    job,
                    memo,
                    at: attest::TimestampMs(at as u64),
                    postings,
                })
            })
            .collect()
    }

    fn sealed_entries_of(&self, book: Book) -> Result<SealedEntries, StoreError> {
        sealed_entries(
            &self.conn,
            "ledger_tx",
            "id IN (SELECT tx FROM ledger_postings WHERE book = ?1)",
            &[&book.to_string()],
        )
    }
}

/// The controller-signed leaves of `table` (`id`, `envelope`, `epoch`, `leaf`) that
/// `filter` selects, in `id` order, with how many of them no epoch holds yet.
pub(super) fn sealed_entries(
    conn: &rusqlite::Connection,
    table: &str,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<SealedEntries, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT envelope, epoch, leaf FROM {table}
         WHERE ({filter}) AND epoch IS NOT NULL ORDER BY id"
    ))?;
    let sealed = st
        .query_map(args, |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                attest::EpochId(r.get::<_, i64>(1)? as u64),
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let pending: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM {table} WHERE ({filter}) AND epoch IS NULL"),
        args,
        |r| r.get(0),
    )?;
    Ok(SealedEntries {
        sealed,
        pending: pending as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use attest::Hash32;
    use attest::msg::JobId;
    use proptest::prelude::*;

    use super::*;
    use crate::accounts::{self, AccountKind, Token};
    use crate::jobs::{JobOrder, JobState};
    use crate::ledger::{Payout, deposit};
    use crate::store::blobs::BlobStore;
    use crate::store::jobs::{JobStore, NewJob};

    /// Something done to the ledger.
    #[derive(Debug, Clone)]
    enum Op {
        Deposit {
            who: usize,
            amount: u64,
        },
        Submit {
            who: usize,
            escrow: u64,
        },
        Done {
            job: usize,
            price: u64,
            fee_ppm: u32,
            provider: bool,
        },
        Fail {
            job: usize,
        },
        Cancel {
            job: usize,
        },
        Stake {
            amount: i64,
        },
        Slash {
            job: usize,
            share_ppm: u32,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 1..5_000u64).prop_map(|(who, amount)| Op::Deposit { who, amount }),
            (0..3usize, 1..3_000u64).prop_map(|(who, escrow)| Op::Submit { who, escrow }),
            (0..8usize, 0..6_000u64, 0..200_000u32, any::<bool>()).prop_map(
                |(job, price, fee_ppm, provider)| Op::Done {
                    job,
                    price,
                    fee_ppm,
                    provider
                }
            ),
            (0..8usize).prop_map(|job| Op::Fail { job }),
            (0..8usize).prop_map(|job| Op::Cancel { job }),
            (-3_000..3_000i64).prop_map(|amount| Op::Stake { amount }),
            (0..8usize, 0..1_000_000u32).prop_map(|(job, share_ppm)| Op::Slash { job, share_ppm }),
        ]
    }

    /// A store with three buyers and a provider, and an order every job reuses.
    fn market() -> (SqliteStore, Vec<AccountId>, AccountId, JobOrder) {
        let mut s = SqliteStore::in_memory().unwrap();
        let mut make = |kind, name: &str, seed: u8| {
            accounts::create(
                &mut s,
                kind,
                name,
                1 << 20,
                None,
                "",
                Token::from_secret([seed; 32]),
                1,
            )
            .unwrap()
            .account
            .id
        };
        let buyers = vec![
            make(AccountKind::Buyer, "a", 1),
            make(AccountKind::Buyer, "b", 2),
            make(AccountKind::Buyer, "c", 3),
        ];
        let provider = make(AccountKind::Provider, "p", 4);
        let input = Hash32::digest(b"abc");
        for b in &buyers {
            s.grant_blob(*b, input, 3, 1).unwrap();
        }
        let req = serde_json::from_value(serde_json::json!({
            "workload": {"builtin": {"kernel": "sha256_batch",
                "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
            "inputs": [input],
            "deadline_ms": 10_000_000_000u64,
            "max_price_micro_per_gpu_hour": 1_000_000,
        }))
        .unwrap();
        let order = crate::jobs::validate(req, 1, &HashMap::from([(input, 3)])).unwrap();
        (s, buyers, provider, order)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever happens, in any order: every balance but the issuer's stays at or
        /// above zero, all of them sum to zero, the issuer owes exactly what was deposited,
        /// an ended job holds nothing in escrow, and a job is settled once.
        #[test]
        fn the_ledger_sums_to_zero_after_every_operation(ops in prop::collection::vec(op(), 1..40)) {
            let (mut s, buyers, provider, order) = market();
            let mut jobs: Vec<(JobId, AccountId)> = Vec::new();
            let mut deposited: i64 = 0;
            for (n, op) in ops.iter().enumerate() {
                let now = 1_000 + n as u64;
                match op {
                    Op::Deposit { who, amount } => {
                        // The fourth is the provider (who may then stake).
                        let to = buyers.get(*who).copied().unwrap_or(provider);
                        s.post(&deposit(to, *amount, "").unwrap(), now).unwrap();
                        deposited += *amount as i64;
                    }
                    Op::Submit { who, escrow } => {
                        let id = JobId([jobs.len() as u8 + 1; 16]);
                        let before = s.balance(Book::Wallet(buyers[*who])).unwrap();
                        let r = s.insert_job(
                            &NewJob { id, owner: buyers[*who], order: order.clone(), created_ms: now, escrow: *escrow },
                            "accepted",
                        );
                        if before >= *escrow as i64 {
                            r.unwrap();
                            jobs.push((id, buyers[*who]));
                            prop_assert_eq!(s.balance(Book::Escrow(id)).unwrap(), *escrow as i64);
                        } else {
                            // Refused whole: no job, no escrow, the wallet untouched.
                            let refused = matches!(r, Err(StoreError::Ledger(LedgerError::Insufficient { .. })));
                            prop_assert!(refused, "{:?}", r);
                            prop_assert!(s.job(id).unwrap().is_none());
                            prop_assert_eq!(s.balance(Book::Wallet(buyers[*who])).unwrap(), before);
                        }
                    }
                    Op::Done { job, price, fee_ppm, provider: paid } => {
                        let Some(&(id, _)) = jobs.get(*job) else { continue };
                        let from = s.job(id).unwrap().unwrap().state;
                        if from.is_final() { continue; }
                        let _ = from.transition(JobState::Scheduled, now, "placed")
                            .map(|t| s.apply_transition(id, &t).unwrap());
                        let running = JobState::Scheduled.transition(JobState::Running, now, "ran").unwrap();
                        s.apply_transition(id, &running).unwrap();
                        let t = JobState::Running.transition(JobState::Done, now, "done").unwrap()
                            .with_payout(Payout { provider: paid.then_some(provider), price: *price, fee_ppm: *fee_ppm });
                        prop_assert!(s.apply_transition(id, &t).unwrap());
                    }
                    Op::Stake { amount } => {
                        // Refused (nothing stored) when the wallet or the stake cannot give it.
                        let before = s.ledger_sum().unwrap();
                        if let Ok(tx) = crate::ledger::stake(provider, *amount) {
                            let _ = s.post(&tx, now);
                        }
                        prop_assert_eq!(s.ledger_sum().unwrap(), before);
                    }
                    Op::Slash { job, share_ppm } => {
                        let Some(&(id, owner)) = jobs.get(*job) else { continue };
                        let staked = s.balance(Book::Stake(provider)).unwrap();
                        if let Some(tx) = crate::ledger::slash(provider, staked, *share_ppm, owner, id, "wrong").unwrap() {
                            s.post(&tx, now).unwrap();
                        }
                        prop_assert!(s.balance(Book::Stake(provider)).unwrap() <= staked);
                    }
                    Op::Fail { job } | Op::Cancel { job } => {
                        let Some(&(id, _)) = jobs.get(*job) else { continue };
                        let from = s.job(id).unwrap().unwrap().state;
                        let to = if matches!(op, Op::Fail { .. }) { JobState::Failed } else { JobState::Cancelled };
                        if let Ok(t) = from.transition(to, now, "ended") {
                            prop_assert!(s.apply_transition(id, &t).unwrap());
                        }
                    }
                }
                prop_assert_eq!(s.ledger_sum().unwrap(), 0);
                prop_assert_eq!(s.balance(Book::Issuer).unwrap(), -deposited);
                let mut st = s.conn.prepare("SELECT book, balance FROM ledger_balances").unwrap();
                let all: Vec<(String, i64)> = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
                for (book, balance) in all {
                    prop_assert!(balance >= 0 || book == "issuer", "{} is {}", book, balance);
                }
                for (id, _) in &jobs {
                    if s.job(*id).unwrap().unwrap().state.is_final() {
                        prop_assert_eq!(s.balance(Book::Escrow(*id)).unwrap(), 0);
                        let settled = s.job_transactions(*id).unwrap().iter()
                            .filter(|t| t.kind == "payout" || t.kind == "refund").count();
                        prop_assert!(settled <= 1, "job {} settled {} times", id, settled);
                    }
                }
            }
        }
    }

    #[test]
    fn a_history_shows_the_accounts_own_transactions_newest_first() {
        let (mut s, buyers, provider, order) = market();
        s.post(&deposit(buyers[0], 1_000, "wire 42").unwrap(), 1)
            .unwrap();
        s.post(&deposit(buyers[1], 1_000, "someone else").unwrap(), 2)
            .unwrap();
        let id = JobId([9; 16]);
        s.insert_job(
            &NewJob {
                id,
                owner: buyers[0],
                order,
                created_ms: 3,
                escrow: 600,
            },
            "accepted",
        )
        .unwrap();
        assert_eq!(s.escrowed(buyers[0]).unwrap(), 600);
        for (from, to) in [
            (JobState::Queued, JobState::Scheduled),
            (JobState::Scheduled, JobState::Running),
        ] {
            s.apply_transition(id, &from.transition(to, 4, "x").unwrap())
                .unwrap();
        }
        let done = JobState::Running
            .transition(JobState::Done, 5, "completed")
            .unwrap()
            .with_payout(Payout {
                provider: Some(provider),
                price: 200,
                fee_ppm: 100_000,
            });
        s.apply_transition(id, &done).unwrap();
        let h = s.account_history(buyers[0], 10).unwrap();
        let kinds: Vec<&str> = h.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, ["payout", "escrow", "deposit"]);
        assert_eq!(s.balance(Book::Wallet(buyers[0])).unwrap(), 800);
        assert_eq!(s.balance(Book::Wallet(provider)).unwrap(), 180);
        assert_eq!(s.balance(Book::Fees).unwrap(), 20);
        assert_eq!(s.escrowed(buyers[0]).unwrap(), 0);
        assert_eq!(s.account_history(provider, 10).unwrap().len(), 1);
    }
}
