//! [`BlobStore`] on SQLite: table `blob_owners`, read with `jobs` and `job_blobs`
//! (migration 5).

use attest::Hash32;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::accounts::{AccountId, AccountKind, Caller};
use crate::store::StoreError;
use crate::store::blobs::{BlobGrant, BlobStore, BlobUsage, OwnedBlob, Release};

/// A job `j` that is not finished.
const OPEN_JOB: &str = "j.state NOT IN ('done', 'failed', 'cancelled', 'expired')";

/// Blob `?1` must stay on disk: someone owns it, it is a job's output, or an unfinished
/// job needs it as an input or module.
const HELD: &str = "EXISTS (SELECT 1 FROM blob_owners WHERE hash = ?1)
    OR EXISTS (SELECT 1 FROM job_blobs b JOIN jobs j ON j.id = b.job WHERE b.hash = ?1
               AND (b.role = 'output'
                    OR j.state NOT IN ('done', 'failed', 'cancelled', 'expired')))";

fn usage(conn: &rusqlite::Connection, account: AccountId) -> Result<Option<BlobUsage>, StoreError> {
    let quota: Option<i64> = conn
        .query_row(
            "SELECT quota_bytes FROM accounts WHERE id = ?1",
            [to_i64(account.0)],
            |r| r.get(0),
        )
        .optional()?;
    let Some(quota) = quota else {
        return Ok(None);
    };
    let used: i64 = conn.query_row(
        "SELECT COALESCE(SUM(bytes), 0) FROM blob_owners WHERE account = ?1",
        [to_i64(account.0)],
        |r| r.get(0),
    )?;
    Ok(Some(BlobUsage {
        used_bytes: used as u64,
        quota_bytes: quota as u64,
    }))
}

fn hash_of(bytes: Vec<u8>) -> Result<Hash32, StoreError> {
    bytes
        .try_into()
        .map(Hash32)
        .map_err(|_| StoreError::Corrupt("blob hash is not 32 bytes".into()))
}

impl BlobStore for SqliteStore {
    fn blob_usage(&self, account: AccountId) -> Result<Option<BlobUsage>, StoreError> {
        usage(&self.conn, account)
    }

    fn grant_blob(
        &mut self,
        account: AccountId,
        hash: Hash32,
        bytes: u64,
        now_ms: u64,
    ) -> Result<BlobGrant, StoreError> {
        // IMMEDIATE: the quota is read and charged under the write lock, so two uploads of
        // one account cannot both pass the check.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(u) = usage(&tx, account)? else {
            return Ok(BlobGrant::UnknownAccount);
        };
        let owned: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE account = ?1 AND hash = ?2)",
            params![to_i64(account.0), &hash.0[..]],
            |r| r.get(0),
        )?;
        if owned {
            return Ok(BlobGrant::AlreadyOwned);
        }
        if bytes > u.remaining() {
            return Ok(BlobGrant::OverQuota(u));
        }
        tx.execute(
            "INSERT INTO blob_owners (account, hash, bytes, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                to_i64(account.0),
                &hash.0[..],
                to_i64(bytes),
                to_i64(now_ms)
            ],
        )?;
        tx.commit()?;
        Ok(BlobGrant::Added)
    }

    fn owned_blob(
        &self,
        account: AccountId,
        hash: Hash32,
    ) -> Result<Option<OwnedBlob>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT bytes, created_ms FROM blob_owners WHERE account = ?1 AND hash = ?2",
                params![to_i64(account.0), &hash.0[..]],
                |r| {
                    Ok(OwnedBlob {
                        hash,
                        bytes: r.get::<_, i64>(0)? as u64,
                        created_ms: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()?)
    }

    fn owned_blobs(&self, account: AccountId) -> Result<Vec<OwnedBlob>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT hash, bytes, created_ms FROM blob_owners WHERE account = ?1
             ORDER BY created_ms, hash",
        )?;
        let rows = st
            .query_map([to_i64(account.0)], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(h, b, c)| {
                Ok(OwnedBlob {
                    hash: hash_of(h)?,
                    bytes: b as u64,
                    created_ms: c as u64,
                })
            })
            .collect()
    }

    fn can_read_blob(&self, caller: &Caller, hash: Hash32) -> Result<bool, StoreError> {
        let own = "EXISTS (SELECT 1 FROM blob_owners WHERE account = ?1 AND hash = ?2)
            OR EXISTS (SELECT 1 FROM job_blobs b JOIN jobs j ON j.id = b.job
                       WHERE b.hash = ?2 AND b.role = 'output' AND j.owner = ?1)";
        let sql = if caller.kind == AccountKind::Provider {
            format!(
                "SELECT {own} OR EXISTS (SELECT 1 FROM job_blobs b JOIN jobs j ON j.id = b.job
                 JOIN job_leases l ON l.job = j.id
                 LEFT JOIN device_providers p ON p.device = l.device
                 WHERE b.hash = ?2 AND b.role IN ('input', 'module') AND {OPEN_JOB}
                 AND (p.provider IS NULL OR p.provider = ?1))"
            )
        } else {
            format!("SELECT {own}")
        };
        Ok(self
            .conn
            .query_row(&sql, params![to_i64(caller.account.0), &hash.0[..]], |r| {
                r.get(0)
            })?)
    }

    fn blob_held(&self, hash: Hash32) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {HELD}"), [&hash.0[..]], |r| r.get(0))?)
    }

    fn release_blob(&mut self, account: AccountId, hash: Hash32) -> Result<Release, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let in_use: bool = tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM job_blobs b JOIN jobs j ON j.id = b.job
                 WHERE b.hash = ?2 AND j.owner = ?1 AND b.role IN ('input', 'module')
                 AND {OPEN_JOB})"
            ),
            params![to_i64(account.0), &hash.0[..]],
            |r| r.get(0),
        )?;
        if in_use {
            return Ok(Release::InUse);
        }
        let n = tx.execute(
            "DELETE FROM blob_owners WHERE account = ?1 AND hash = ?2",
            params![to_i64(account.0), &hash.0[..]],
        )?;
        if n == 0 {
            return Ok(Release::NotOwned);
        }
        let held: bool = tx.query_row(&format!("SELECT {HELD}"), [&hash.0[..]], |r| r.get(0))?;
        tx.commit()?;
        Ok(Release::Released { orphaned: !held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{self, Token};

    #[test]
    fn the_quota_is_charged_once_per_blob_and_refuses_what_would_pass_it() {
        let mut s = SqliteStore::in_memory().unwrap();
        let a = accounts::create(
            &mut s,
            AccountKind::Buyer,
            "alice",
            100,
            None,
            "",
            Token::from_secret([1; 32]),
            1,
        )
        .unwrap()
        .account
        .id;
        let (h1, h2) = (Hash32::digest(b"1"), Hash32::digest(b"2"));
        assert_eq!(s.grant_blob(a, h1, 60, 5).unwrap(), BlobGrant::Added);
        assert_eq!(s.grant_blob(a, h1, 60, 6).unwrap(), BlobGrant::AlreadyOwned);
        let full = BlobUsage {
            used_bytes: 60,
            quota_bytes: 100,
        };
        assert_eq!(s.blob_usage(a).unwrap(), Some(full));
        assert_eq!(
            s.grant_blob(a, h2, 41, 7).unwrap(),
            BlobGrant::OverQuota(full)
        );
        assert_eq!(s.owned_blob(a, h2).unwrap(), None);
        assert_eq!(s.grant_blob(a, h2, 40, 8).unwrap(), BlobGrant::Added);
        assert_eq!(
            s.owned_blobs(a)
                .unwrap()
                .iter()
                .map(|b| b.hash)
                .collect::<Vec<_>>(),
            vec![h1, h2]
        );
        assert_eq!(
            s.grant_blob(AccountId(99), h1, 1, 9).unwrap(),
            BlobGrant::UnknownAccount
        );
        // Released: the bytes come back, and nobody holds the blob any more.
        assert!(s.blob_held(h1).unwrap());
        assert_eq!(
            s.release_blob(a, h1).unwrap(),
            Release::Released { orphaned: true }
        );
        assert!(!s.blob_held(h1).unwrap());
        assert_eq!(s.release_blob(a, h1).unwrap(), Release::NotOwned);
        assert_eq!(s.blob_usage(a).unwrap().unwrap().used_bytes, 40);
    }
}
