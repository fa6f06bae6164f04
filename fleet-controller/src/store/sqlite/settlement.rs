//! [`SettlementStore`] on SQLite (tables of migration 13).

use rusqlite::{OptionalExtension, params};

use super::ledger::post_in;
use super::{SqliteStore, to_i64};
use crate::accounts::AccountId;
use crate::settlement::{Line, parse_address, root};
use crate::store::StoreError;
use crate::store::settlement::{Published, RoundLine, RoundRow, SettlementStore};

const ROUND_COLUMNS: &str =
    "round, root, total, lines, created_ms, published_ms, tx, block, gas FROM settlement_rounds";

fn round_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoundRow> {
    let root: Vec<u8> = r.get(1)?;
    let at: Option<i64> = r.get(5)?;
    let tx: Option<Vec<u8>> = r.get(6)?;
    Ok(RoundRow {
        round: r.get::<_, i64>(0)? as u64,
        root: format!("0x{}", attest::hex::encode(&root)),
        total: r.get::<_, i64>(2)? as u64,
        lines: r.get::<_, i64>(3)? as u32,
        created_ms: r.get::<_, i64>(4)? as u64,
        published: at.map(|at| Published {
            tx: tx.map(|t| format!("0x{}", attest::hex::encode(&t))),
            block: r.get::<_, Option<i64>>(7).ok().flatten().map(|b| b as u64),
            gas: r.get::<_, Option<i64>>(8).ok().flatten().map(|g| g as u64),
            at_ms: at as u64,
        }),
    })
}

fn line_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoundLine> {
    Ok(RoundLine {
        round: r.get::<_, i64>(0)? as u64,
        index: r.get::<_, i64>(1)? as u32,
        account: AccountId(r.get::<_, i64>(2)? as u64),
        address: r.get(3)?,
        amount: r.get::<_, i64>(4)? as u64,
        ledger_tx: r.get::<_, i64>(5)? as u64,
    })
}

const LINE_COLUMNS: &str = "round, idx, account, address, amount, ledger_tx FROM settlement_lines";

impl SettlementStore for SqliteStore {
    fn set_payout_address(
        &mut self,
        account: AccountId,
        address: &str,
        now: u64,
    ) -> Result<Option<AccountId>, StoreError> {
        let db = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let other: Option<i64> = db
            .query_row(
                "SELECT account FROM payout_addresses WHERE lower(address) = lower(?1) AND account != ?2",
                params![address, to_i64(account.0)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(o) = other {
            return Ok(Some(AccountId(o as u64)));
        }
        db.execute(
            "INSERT INTO payout_addresses (account, address, set_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (account) DO UPDATE SET address = ?2, set_ms = ?3",
            params![to_i64(account.0), address, to_i64(now)],
        )?;
        db.commit()?;
        Ok(None)
    }

    fn payout_address(&self, account: AccountId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT address FROM payout_addresses WHERE account = ?1",
                [to_i64(account.0)],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn settle_round(&mut self, min_micro: u64, now: u64) -> Result<Option<RoundRow>, StoreError> {
        let db = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let due: Vec<(i64, String, i64)> = {
            let mut st = db.prepare(
                "SELECT p.account, p.address, b.balance FROM payout_addresses p
                 JOIN ledger_balances b ON b.book = 'wallet:' || p.account
                 WHERE b.balance >= ?1 AND b.balance > 0 ORDER BY p.account",
            )?;
            st.query_map([to_i64(min_micro)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?
        };
        if due.is_empty() {
            return Ok(None);
        }
        let round: i64 = db.query_row(
            "SELECT COALESCE(MAX(round), 0) + 1 FROM settlement_rounds",
            [],
            |r| r.get(0),
        )?;
        let mut lines = Vec::with_capacity(due.len());
        for (i, (account, address, balance)) in due.iter().enumerate() {
            let addr = parse_address(address)
                .map_err(|e| StoreError::Corrupt(format!("payout address of {account}: {e}")))?;
            let amount = *balance as u64;
            let tx = crate::ledger::settlement(
                AccountId(*account as u64),
                amount,
                round as u64,
                address,
            )?;
            let n = post_in(&db, &tx, now)?;
            db.execute(
                "INSERT INTO settlement_lines (round, idx, account, address, amount, ledger_tx)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![round, i as i64, account, address, balance, to_i64(n)],
            )?;
            lines.push(Line {
                address: addr,
                amount,
            });
        }
        let root = root(round as u64, &lines).expect("at least one line");
        let total: u64 = lines.iter().map(|l| l.amount).sum();
        db.execute(
            "INSERT INTO settlement_rounds (round, root, total, lines, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                round,
                root.as_slice(),
                to_i64(total),
                lines.len() as i64,
                to_i64(now)
            ],
        )?;
        db.commit()?;
        Ok(Some(RoundRow {
            round: round as u64,
            root: format!("{root:#x}"),
            total,
            lines: lines.len() as u32,
            created_ms: now,
            published: None,
        }))
    }

    fn rounds(&self, unpublished: bool) -> Result<Vec<RoundRow>, StoreError> {
        let filter = if unpublished {
            " WHERE published_ms IS NULL"
        } else {
            ""
        };
        let mut st = self.conn.prepare(&format!(
            "SELECT {ROUND_COLUMNS}{filter} ORDER BY round DESC"
        ))?;
        Ok(st.query_map([], round_row)?.collect::<Result<_, _>>()?)
    }

    fn round_lines(&self, round: u64) -> Result<Vec<RoundLine>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {LINE_COLUMNS} WHERE round = ?1 ORDER BY idx"
        ))?;
        Ok(st
            .query_map([to_i64(round)], line_row)?
            .collect::<Result<_, _>>()?)
    }

    fn account_lines(&self, account: AccountId) -> Result<Vec<RoundLine>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {LINE_COLUMNS} WHERE account = ?1 ORDER BY round DESC"
        ))?;
        Ok(st
            .query_map([to_i64(account.0)], line_row)?
            .collect::<Result<_, _>>()?)
    }

    fn mark_published(&mut self, round: u64, p: &Published) -> Result<(), StoreError> {
        let tx =
            p.tx.as_deref()
                .map(|t| attest::hex::decode(t.trim_start_matches("0x")))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("a transaction hash: {e}")))?;
        self.conn.execute(
            "UPDATE settlement_rounds SET published_ms = ?2, tx = ?3, block = ?4, gas = ?5
             WHERE round = ?1",
            params![
                to_i64(round),
                to_i64(p.at_ms),
                tx,
                p.block.map(to_i64),
                p.gas.map(to_i64)
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Book, deposit};
    use crate::store::ledger::LedgerStore;

    #[test]
    fn a_round_pays_out_every_due_provider_once_and_its_root_proves_each_line() {
        let mut s = SqliteStore::in_memory().unwrap();
        let addr = |i: u8| format!("0x{}", format!("{i:02x}").repeat(20));
        for (acct, credits) in [(1, 5_000_000), (2, 200), (3, 7_000_000)] {
            s.post(&deposit(AccountId(acct), credits, "earned").unwrap(), 1)
                .unwrap();
        }
        // Account 3 has no payout address: not paid; account 2 is under the minimum.
        assert_eq!(
            s.set_payout_address(AccountId(1), &addr(0xa1), 1).unwrap(),
            None
        );
        assert_eq!(
            s.set_payout_address(AccountId(2), &addr(0xa2), 1).unwrap(),
            None
        );
        // One address, one provider.
        assert_eq!(
            s.set_payout_address(AccountId(3), &addr(0xa1), 1).unwrap(),
            Some(AccountId(1))
        );
        assert_eq!(s.payout_address(AccountId(3)).unwrap(), None);
        let r = s.settle_round(1_000, 10).unwrap().unwrap();
        assert_eq!((r.round, r.total, r.lines), (1, 5_000_000, 1));
        assert_eq!(s.balance(Book::Wallet(AccountId(1))).unwrap(), 0);
        assert_eq!(s.balance(Book::Wallet(AccountId(2))).unwrap(), 200);
        assert_eq!(s.balance(Book::Settled).unwrap(), 5_000_000);
        assert_eq!(s.ledger_sum().unwrap(), 0);
        // Nothing is due now: no empty round.
        assert_eq!(s.settle_round(1_000, 11).unwrap(), None);
        s.post(&deposit(AccountId(1), 3, "more").unwrap(), 12)
            .unwrap();
        let r2 = s.settle_round(0, 13).unwrap().unwrap();
        assert_eq!((r2.round, r2.total, r2.lines), (2, 203, 2));
        let lines = s.round_lines(2).unwrap();
        let leaves: Vec<Line> = lines
            .iter()
            .map(|l| Line {
                address: l.address.parse().unwrap(),
                amount: l.amount,
            })
            .collect();
        for (i, l) in leaves.iter().enumerate() {
            let p = crate::settlement::proof(2, &leaves, i);
            assert!(crate::settlement::verify(
                2,
                l,
                &p,
                r2.root.parse().unwrap()
            ));
        }
        assert_eq!(s.account_lines(AccountId(1)).unwrap().len(), 2);
        assert_eq!(s.rounds(true).unwrap().len(), 2);
        let p = Published {
            tx: Some(format!("0x{}", "ab".repeat(32))),
            block: Some(7),
            gas: Some(80_000),
            at_ms: 20,
        };
        s.mark_published(1, &p).unwrap();
        assert_eq!(s.rounds(true).unwrap().len(), 1);
        assert_eq!(s.rounds(false).unwrap()[1].published, Some(p));
    }
}
