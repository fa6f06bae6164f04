//! Named crash points for the kill -9 tests: with `HELIOSTAT_CRASH_AT=<name>` in its
//! environment, the controller aborts (no destructors, no flush: as abrupt as SIGKILL) the
//! first time it reaches that point. Points:
//!
//! - `ingest-committed`: a batch is durably committed, its acks are not yet published;
//! - `epoch-closed`: an epoch's tree and local anchor are committed;
//! - `evm-signed`: an anchoring transaction is signed and stored, not yet sent;
//! - `evm-sent`: it is sent, its receipt not yet seen.
//!
//! Unset (always, outside tests) it costs one cached string comparison.

use std::sync::OnceLock;

static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process here when `HELIOSTAT_CRASH_AT` names `point`.
pub fn point(point: &str) {
    let at = CRASH_AT.get_or_init(|| std::env::var("HELIOSTAT_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("heliostat: crash point {point} reached; aborting (HELIOSTAT_CRASH_AT)");
        std::process::abort();
    }
}
