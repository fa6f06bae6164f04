//! The agent's one wall clock. Everything that decides takes a `now` (ms since the Unix
//! epoch) as a parameter; only the thin loops at the edges (the runtime's event loop, the
//! job runner thread) read the clock, through [`now_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
