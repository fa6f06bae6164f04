//! [`AccountStore`] on SQLite: tables `accounts` and `api_tokens` (migration 5).

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::accounts::{AccountId, AccountKind, Caller, Scopes, TokenHash, TokenId};
use crate::store::StoreError;
use crate::store::accounts::{AccountRow, AccountStore, NewAccount, NewToken, TokenRow};

const ACCOUNT_COLUMNS: &str = "id, kind, name, quota_bytes, created_ms";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn kind(s: &str) -> Result<AccountKind, StoreError> {
    AccountKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("account kind {s}")))
}

fn scopes(s: &str) -> Result<Scopes, StoreError> {
    Scopes::from_stored(s).map_err(|n| StoreError::Corrupt(format!("token scope {n}")))
}

fn to_account(raw: (i64, String, String, i64, i64)) -> Result<AccountRow, StoreError> {
    let (id, k, name, quota, created) = raw;
    Ok(AccountRow {
        id: AccountId(id as u64),
        kind: kind(&k)?,
        name,
        quota_bytes: quota as u64,
        created_ms: created as u64,
    })
}

impl SqliteStore {
    fn insert_token(
        tx: &rusqlite::Transaction<'_>,
        account: AccountId,
        t: &NewToken,
    ) -> Result<TokenId, StoreError> {
        tx.execute(
            "INSERT INTO api_tokens (account, hash, scopes, label, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                to_i64(account.0),
                &t.hash.0[..],
                t.scopes.to_stored(),
                t.label,
                to_i64(t.created_ms)
            ],
        )?;
        Ok(TokenId(tx.last_insert_rowid() as u64))
    }
}

impl AccountStore for SqliteStore {
    fn set_spend_cap(&mut self, account: AccountId, cap: Option<u64>) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE accounts SET spend_cap_micro = ?2 WHERE id = ?1",
            params![to_i64(account.0), cap.map(to_i64)],
        )? == 1)
    }

    fn spend_cap(&self, account: AccountId) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT spend_cap_micro FROM accounts WHERE id = ?1",
                [to_i64(account.0)],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .map(|v| v.max(0) as u64))
    }

    fn create_account(
        &mut self,
        a: &NewAccount,
        token: &NewToken,
    ) -> Result<Option<(AccountRow, TokenId)>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "INSERT INTO accounts (kind, name, quota_bytes, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![
                a.kind.as_str(),
                a.name,
                to_i64(a.quota_bytes),
                to_i64(a.created_ms)
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = AccountId(tx.last_insert_rowid() as u64);
        let token_id = Self::insert_token(&tx, id, token)?;
        tx.commit()?;
        let row = AccountRow {
            id,
            kind: a.kind,
            name: a.name.clone(),
            quota_bytes: a.quota_bytes,
            created_ms: a.created_ms,
        };
        Ok(Some((row, token_id)))
    }

    fn account(&self, id: AccountId) -> Result<Option<AccountRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [to_i64(id.0)],
                account_row,
            )
            .optional()?;
        raw.map(to_account).transpose()
    }

    fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"),
                [name],
                account_row,
            )
            .optional()?;
        raw.map(to_account).transpose()
    }

    fn accounts(&self) -> Result<Vec<AccountRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
        ))?;
        let rows = st
            .query_map([], account_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(to_account).collect()
    }

    fn add_token(
        &mut self,
        account: AccountId,
        token: &NewToken,
    ) -> Result<Option<TokenId>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = ?1)",
            [to_i64(account.0)],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let id = Self::insert_token(&tx, account, token)?;
        tx.commit()?;
        Ok(Some(id))
    }

    fn tokens(&self, account: AccountId) -> Result<Vec<TokenRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, scopes, label, created_ms, revoked_ms FROM api_tokens
             WHERE account = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([to_i64(account.0)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, s, label, created, revoked)| {
                Ok(TokenRow {
                    id: TokenId(id as u64),
                    account,
                    scopes: scopes(&s)?,
                    label,
                    created_ms: created as u64,
                    revoked_ms: revoked.map(|r| r as u64),
                })
            })
            .collect()
    }

    fn caller(&self, hash: &TokenHash) -> Result<Option<Caller>, StoreError> {
        let raw = self
            .conn
            .prepare_cached(
                "SELECT t.id, t.account, a.kind, t.scopes FROM api_tokens t
                 JOIN accounts a ON a.id = t.account
                 WHERE t.hash = ?1 AND t.revoked_ms IS NULL",
            )?
            .query_row([&hash.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .optional()?;
        raw.map(|(token, account, k, s)| {
            Ok(Caller {
                account: AccountId(account as u64),
                kind: kind(&k)?,
                scopes: scopes(&s)?,
                token: TokenId(token as u64),
            })
        })
        .transpose()
    }

    fn revoke_token(&mut self, id: TokenId, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE api_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![to_i64(id.0), to_i64(now_ms)],
        )?;
        Ok(n == 1)
    }

    fn set_device_provider(
        &mut self,
        device: attest::DeviceId,
        provider: Option<AccountId>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match provider {
            Some(p) => self.conn.execute(
                "INSERT OR REPLACE INTO device_providers (device, provider, assigned_ms)
                 VALUES (?1, ?2, ?3)",
                params![&device.0[..], to_i64(p.0), to_i64(now_ms)],
            )?,
            None => self.conn.execute(
                "DELETE FROM device_providers WHERE device = ?1",
                params![&device.0[..]],
            )?,
        };
        Ok(())
    }

    fn device_provider(&self, device: attest::DeviceId) -> Result<Option<AccountId>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT provider FROM device_providers WHERE device = ?1",
                params![&device.0[..]],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|p| AccountId(p as u64)))
    }
}
