//! [`AuditStore`] on SQLite (table `audit_log`, migration 22).

use rusqlite::params;

use super::SqliteStore;
use crate::accounts::{AccountId, TokenId};
use crate::store::StoreError;
use crate::store::audit::{AuditEntry, AuditStore};

impl AuditStore for SqliteStore {
    fn append_audit(&mut self, e: &AuditEntry) -> Result<u64, StoreError> {
        self.conn.execute(
            "INSERT INTO audit_log (at_ms, account, token, method, path, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.at_ms as i64,
                e.account.0 as i64,
                e.token.0 as i64,
                e.method,
                e.path,
                e.status
            ],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    fn audit_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, at_ms, account, token, method, path, status FROM audit_log
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![before.map_or(i64::MAX, |b| b as i64), limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    AuditEntry {
                        at_ms: r.get::<_, i64>(1)? as u64,
                        account: AccountId(r.get::<_, i64>(2)? as u64),
                        token: TokenId(r.get::<_, i64>(3)? as u64),
                        method: r.get(4)?,
                        path: r.get(5)?,
                        status: r.get(6)?,
                    },
                ))
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
