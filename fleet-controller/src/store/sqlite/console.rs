//! [`ConsoleStore`] on SQLite (tables `passwords` and `console_sessions`, migration 17).

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::accounts::{AccountId, AccountKind, TokenHash};
use crate::store::StoreError;
use crate::store::console::{ConsoleStore, SessionRow};

impl ConsoleStore for SqliteStore {
    fn set_password(
        &mut self,
        account: AccountId,
        phc: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: bool = tx
            .query_row(
                "SELECT 1 FROM accounts WHERE id = ?1",
                [to_i64(account.0)],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !known {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO passwords (account, phc, set_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (account) DO UPDATE SET phc = excluded.phc, set_ms = excluded.set_ms",
            params![to_i64(account.0), phc, to_i64(now_ms)],
        )?;
        tx.execute(
            "DELETE FROM console_sessions WHERE account = ?1",
            [to_i64(account.0)],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn password_by_name(&self, name: &str) -> Result<Option<(AccountId, String)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.id, p.phc FROM accounts a JOIN passwords p ON p.account = a.id
                 WHERE a.name = ?1",
            )?
            .query_row([name], |r| {
                Ok((AccountId(r.get::<_, i64>(0)? as u64), r.get(1)?))
            })
            .optional()?)
    }

    fn create_session(
        &mut self,
        hash: TokenHash,
        account: AccountId,
        csrf: [u8; 32],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO console_sessions (hash, account, csrf, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &hash.0[..],
                to_i64(account.0),
                &csrf[..],
                to_i64(now_ms),
                to_i64(expires_ms)
            ],
        )?;
        Ok(())
    }

    fn session(&self, hash: &TokenHash, now_ms: u64) -> Result<Option<SessionRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT s.account, a.kind, a.name, s.csrf, s.expires_ms
                 FROM console_sessions s JOIN accounts a ON a.id = s.account
                 WHERE s.hash = ?1 AND s.expires_ms > ?2",
            )?
            .query_row(params![&hash.0[..], to_i64(now_ms)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()?;
        let Some((account, kind, name, csrf, expires)) = row else {
            return Ok(None);
        };
        Ok(Some(SessionRow {
            account: AccountId(account as u64),
            kind: AccountKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("account kind {kind}")))?,
            name,
            csrf: csrf
                .try_into()
                .map_err(|_| StoreError::Corrupt("session csrf length".into()))?,
            expires_ms: expires as u64,
        }))
    }

    fn end_session(&mut self, hash: &TokenHash) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM console_sessions WHERE hash = ?1",
            [&hash.0[..]],
        )? == 1)
    }

    fn purge_sessions(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM console_sessions WHERE expires_ms <= ?1",
            [to_i64(now_ms)],
        )? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Scopes, Token};
    use crate::store::accounts::{AccountStore, NewAccount, NewToken};

    fn account(st: &mut SqliteStore, name: &str) -> AccountId {
        let a = NewAccount {
            kind: AccountKind::Buyer,
            name: name.into(),
            quota_bytes: 1,
            created_ms: 1,
        };
        let t = NewToken {
            hash: Token::from_secret([name.len() as u8; 32]).hash(),
            scopes: Scopes::of(&[]),
            label: "t".into(),
            created_ms: 1,
        };
        st.create_account(&a, &t).unwrap().unwrap().0.id
    }

    #[test]
    fn sessions_expire_and_a_new_password_ends_them() {
        let mut st = SqliteStore::in_memory().unwrap();
        let alice = account(&mut st, "alice");
        assert!(!st.set_password(AccountId(99), "x", 1).unwrap());
        assert!(st.set_password(alice, "$argon2id$one", 10).unwrap());
        assert_eq!(
            st.password_by_name("alice").unwrap(),
            Some((alice, "$argon2id$one".to_string()))
        );
        assert_eq!(st.password_by_name("bob").unwrap(), None);

        let h = Token::from_secret([7; 32]).hash();
        st.create_session(h, alice, [3; 32], 100, 200).unwrap();
        let s = st.session(&h, 150).unwrap().unwrap();
        assert_eq!(
            (s.account, s.name.as_str(), s.csrf),
            (alice, "alice", [3; 32])
        );
        // Expired: found by no one, purged later.
        assert_eq!(st.session(&h, 200).unwrap(), None);
        assert_eq!(st.purge_sessions(199).unwrap(), 0);
        assert_eq!(st.purge_sessions(200).unwrap(), 1);

        st.create_session(h, alice, [3; 32], 300, 900).unwrap();
        assert!(st.session(&h, 301).unwrap().is_some());
        // A new password ends the session.
        assert!(st.set_password(alice, "$argon2id$two", 400).unwrap());
        assert_eq!(st.session(&h, 401).unwrap(), None);
        assert_eq!(
            st.password_by_name("alice").unwrap().unwrap().1,
            "$argon2id$two"
        );

        st.create_session(h, alice, [3; 32], 500, 900).unwrap();
        assert!(st.end_session(&h).unwrap());
        assert!(!st.end_session(&h).unwrap());
    }
}
