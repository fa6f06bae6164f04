//! Opening a SQLite store: the file (or memory), this backend's settings, the migrations.

use std::path::Path;

use rusqlite::Connection;

use super::SqliteStore;
use crate::store::StoreError;

impl SqliteStore {
    /// Opens (creating) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        let mut s = Self::configure(conn)?;
        s.migrate()?;
        Ok(s)
    }

    /// Opens the database at `path` with this backend's settings, without migrating it (a
    /// pool's later connections: the first one migrated).
    pub(crate) fn open_configured(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::configure(Connection::open(path)?)
    }

    fn configure(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when it returns (the ack to the device follows it).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(SqliteStore { conn })
    }
}
