//! [`EnrollmentStore`] on SQLite (tables of migration 16).

use attest::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::accounts::TokenHash;
use crate::store::StoreError;
use crate::store::enrollment::{EnrollError, Enrolled, EnrollmentStore, EnrollmentToken};

/// Takes a device's waiting enrollment (its first hello): true once, when there was one.
pub(super) fn take(conn: &Connection, device: DeviceId) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE enrollments SET waiting = 0 WHERE device = ?1 AND waiting = 1",
        [&device.0[..]],
    )?;
    Ok(n == 1)
}

impl EnrollmentStore for SqliteStore {
    fn create_enrollment_token(
        &mut self,
        hash: TokenHash,
        label: &str,
        uses: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        self.conn.execute(
            "INSERT INTO enrollment_tokens (hash, label, uses_left, expires_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &hash.0[..],
                label,
                to_i64(uses),
                to_i64(expires_ms),
                to_i64(now_ms)
            ],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    fn enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT t.id, t.label, t.uses_left, t.expires_ms, t.created_ms, t.revoked_ms,
                 (SELECT COUNT(*) FROM enrollments e WHERE e.token = t.id)
             FROM enrollment_tokens t ORDER BY t.id DESC",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(EnrollmentToken {
                    id: r.get::<_, i64>(0)? as u64,
                    label: r.get(1)?,
                    uses_left: r.get::<_, i64>(2)? as u64,
                    expires_ms: r.get::<_, i64>(3)? as u64,
                    created_ms: r.get::<_, i64>(4)? as u64,
                    revoked_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    enrolled: r.get::<_, i64>(6)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn revoke_enrollment_token(&mut self, id: u64, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE enrollment_tokens SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1",
            params![to_i64(id), to_i64(now_ms)],
        )?;
        Ok(n == 1)
    }

    fn enroll(
        &mut self,
        token: TokenHash,
        device: DeviceId,
        now_ms: u64,
    ) -> Result<Result<Enrolled, EnrollError>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(i64, i64, i64, Option<i64>)> = tx
            .query_row(
                "SELECT id, uses_left, expires_ms, revoked_ms FROM enrollment_tokens WHERE hash = ?1",
                [&token.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, uses_left, expires, revoked)) = found else {
            return Ok(Err(EnrollError::BadToken));
        };
        let before: Option<i64> = tx
            .query_row(
                "SELECT token FROM enrollments WHERE device = ?1",
                [&device.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        if before == Some(id) {
            // A retry of a redemption that went through: the same answer, no use counted.
            return Ok(Ok(Enrolled::Already));
        }
        if revoked.is_some() || uses_left <= 0 || (expires as u64) <= now_ms {
            return Ok(Err(EnrollError::BadToken));
        }
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM devices WHERE id = ?1",
                [&device.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match state.as_deref() {
            Some("revoked") => return Ok(Err(EnrollError::DeviceRevoked(device))),
            Some(_) => {
                tx.execute(
                    "UPDATE devices SET state = 'approved' WHERE id = ?1 AND state = 'pending'",
                    [&device.0[..]],
                )?;
                Enrolled::Approved
            }
            None => Enrolled::Preapproved,
        };
        tx.execute(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1",
            [id],
        )?;
        tx.execute(
            "INSERT INTO enrollments (device, token, at_ms, waiting) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (device) DO UPDATE SET token = excluded.token, at_ms = excluded.at_ms,
                 waiting = excluded.waiting",
            params![
                &device.0[..],
                id,
                to_i64(now_ms),
                i64::from(outcome == Enrolled::Preapproved)
            ],
        )?;
        tx.commit()?;
        Ok(Ok(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Token;
    use crate::store::{DeviceState, Store};

    fn token(n: u8) -> TokenHash {
        Token::from_secret([n; 32]).hash()
    }

    #[test]
    fn a_token_enrols_as_many_devices_as_it_allows_once_each_until_it_expires() {
        let mut s = SqliteStore::in_memory().unwrap();
        let id = s
            .create_enrollment_token(token(1), "batch 7", 2, 1_000, 10)
            .unwrap();
        let (a, b, c) = (DeviceId([1; 16]), DeviceId([2; 16]), DeviceId([3; 16]));
        assert_eq!(
            s.enroll(token(1), a, 20).unwrap(),
            Ok(Enrolled::Preapproved)
        );
        // A retry answers the same and uses nothing.
        assert_eq!(s.enroll(token(1), a, 21).unwrap(), Ok(Enrolled::Already));
        assert_eq!(
            s.enroll(token(1), b, 22).unwrap(),
            Ok(Enrolled::Preapproved)
        );
        assert_eq!(
            s.enroll(token(1), c, 23).unwrap(),
            Err(EnrollError::BadToken)
        );
        let listed = &s.enrollment_tokens().unwrap()[0];
        assert_eq!((listed.id, listed.uses_left, listed.enrolled), (id, 0, 2));
        // Unknown, expired, revoked.
        assert_eq!(
            s.enroll(token(9), c, 24).unwrap(),
            Err(EnrollError::BadToken)
        );
        s.create_enrollment_token(token(2), "old", 5, 100, 10)
            .unwrap();
        assert_eq!(
            s.enroll(token(2), c, 100).unwrap(),
            Err(EnrollError::BadToken)
        );
        let t3 = s
            .create_enrollment_token(token(3), "x", 5, 1_000, 10)
            .unwrap();
        assert!(s.revoke_enrollment_token(t3, 30).unwrap());
        assert!(!s.revoke_enrollment_token(99, 30).unwrap());
        assert_eq!(
            s.enroll(token(3), c, 31).unwrap(),
            Err(EnrollError::BadToken)
        );
        // The first hello of an enrolled device takes its enrollment, once.
        assert!(s.take_enrollment(a).unwrap());
        assert!(!s.take_enrollment(a).unwrap());
        assert!(!s.take_enrollment(c).unwrap());
    }

    #[test]
    fn a_pending_device_is_approved_at_once_and_a_revoked_one_never() {
        let mut s = SqliteStore::in_memory().unwrap();
        s.create_enrollment_token(token(1), "t", 10, 1_000, 10)
            .unwrap();
        let dev = attest::KeyPair::from_seed(&[4; 32]);
        let (pending, revoked) = (dev.device_id(), DeviceId([5; 16]));
        s.upsert_device(pending, dev.public(), b"h", 11, DeviceState::Pending)
            .unwrap();
        s.upsert_device(revoked, dev.public(), b"h", 11, DeviceState::Revoked)
            .unwrap();
        assert_eq!(
            s.enroll(token(1), pending, 20).unwrap(),
            Ok(Enrolled::Approved)
        );
        assert_eq!(
            s.device(pending).unwrap().unwrap().state,
            DeviceState::Approved
        );
        assert_eq!(
            s.enroll(token(1), revoked, 21).unwrap(),
            Err(EnrollError::DeviceRevoked(revoked))
        );
        assert_eq!(
            s.device(revoked).unwrap().unwrap().state,
            DeviceState::Revoked
        );
        assert_eq!(s.enrollment_tokens().unwrap()[0].uses_left, 9);
    }
}
