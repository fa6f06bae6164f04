//! A pool of SQLite connections for the HTTP API's requests.

use super::StoreError;
use super::sqlite::{SCHEMA_VERSION, SqliteStore};

/// Connections to one database for many short readers (the HTTP API's requests): kept
/// open for reuse instead of opened, configured and migrated per request. The first
/// connection migrates the schema; later ones only check that it is this code's.
pub struct SqlitePool {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<SqliteStore>>,
    migrated: std::sync::atomic::AtomicBool,
}

/// How many idle connections a pool keeps.
const POOL_IDLE: usize = 8;

impl SqlitePool {
    /// A pool over the database at `path` (nothing is opened yet).
    pub fn new(path: impl Into<std::path::PathBuf>) -> SqlitePool {
        SqlitePool {
            path: path.into(),
            idle: std::sync::Mutex::new(Vec::new()),
            migrated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A connection: an idle one, or a new one.
    pub fn get(self: &std::sync::Arc<Self>) -> Result<PooledStore, StoreError> {
        use std::sync::atomic::Ordering;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let store = match idle {
            Some(s) => s,
            None if !self.migrated.load(Ordering::Acquire) => {
                let s = SqliteStore::open(&self.path)?;
                self.migrated.store(true, Ordering::Release);
                s
            }
            None => {
                let s = SqliteStore::open_configured(&self.path)?;
                let found = s.schema_version()?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Corrupt(format!(
                        "schema version {found}, this controller's is {SCHEMA_VERSION}"
                    )));
                }
                s
            }
        };
        Ok(PooledStore {
            pool: self.clone(),
            store: Some(store),
        })
    }

    /// Connections waiting for reuse.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A connection lent by a [`SqlitePool`]; it goes back when dropped.
pub struct PooledStore {
    pool: std::sync::Arc<SqlitePool>,
    store: Option<SqliteStore>,
}

impl std::ops::Deref for PooledStore {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        self.store.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PooledStore {
    fn deref_mut(&mut self) -> &mut SqliteStore {
        self.store.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledStore {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < POOL_IDLE {
                idle.push(s);
            }
        }
    }
}
