//! Replay protection for the controller's commands, as a sans-IO struct.
//!
//! A command carries a nonce and an expiry. Expired commands are refused on their expiry
//! alone, so a nonce only needs remembering until its command expires: [`NonceWindow`] keeps
//! each nonce with its command's expiry and forgets it after that. At most
//! [`NonceWindow::CAPACITY`] nonces are kept; when more unexpired commands arrive, the one
//! expiring first is forgotten early. Every forgotten nonce raises the window's floor to its
//! expiry, and a command expiring at or before the floor is refused as too old to check
//! (this also holds when the clock steps back and an expired command looks valid again). So a replay is refused however many newer commands
//! came in between, and across restarts (the runtime saves the window after every change).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a command's nonce is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceRefusal {
    /// This nonce was seen and its command has not expired.
    #[error("command replayed (nonce seen)")]
    Seen,
    /// The command expires no later than a forgotten one did: it cannot be told from a
    /// replay.
    #[error("command replayed (expires at or before {floor}, older than the nonce window)")]
    BelowFloor {
        /// The latest expiry among forgotten nonces.
        floor: u64,
    },
}

/// Nonces of unexpired commands (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceWindow {
    /// Nonce -> its command's expiry (ms since the Unix epoch).
    seen: BTreeMap<u64, u64>,
    /// Commands expiring at or before this are refused (0: none forgotten yet).
    floor: u64,
}

impl NonceWindow {
    /// Most nonces kept.
    pub const CAPACITY: usize = 4096;

    /// Whether a command with this nonce and expiry may run.
    pub fn check(&self, nonce: u64, expires: u64) -> Result<(), NonceRefusal> {
        if self.seen.contains_key(&nonce) {
            return Err(NonceRefusal::Seen);
        }
        if expires <= self.floor {
            return Err(NonceRefusal::BelowFloor { floor: self.floor });
        }
        Ok(())
    }

    /// Remembers an accepted command's nonce, forgetting those expired by `now_ms` and, past
    /// [`Self::CAPACITY`], the one expiring first (raising the floor to its expiry).
    pub fn remember(&mut self, nonce: u64, expires: u64, now_ms: u64) {
        let mut floor = self.floor;
        self.seen.retain(|_, e| {
            let keep = *e >= now_ms;
            if !keep {
                floor = floor.max(*e);
            }
            keep
        });
        self.floor = floor;
        self.seen.insert(nonce, expires);
        while self.seen.len() > Self::CAPACITY {
            let (&n, &e) = self
                .seen
                .iter()
                .min_by_key(|(n, e)| (**e, **n))
                .expect("over capacity, so not empty");
            self.seen.remove(&n);
            self.floor = self.floor.max(e);
        }
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_until_its_command_expires_and_then_forgotten() {
        let mut w = NonceWindow::default();
        assert_eq!(w.check(5, 1_000), Ok(()));
        w.remember(5, 1_000, 0);
        assert_eq!(w.check(5, 1_000), Err(NonceRefusal::Seen));
        // Once expired the command is refused on its expiry; the nonce need not be kept.
        w.remember(6, 2_000, 1_001);
        assert_eq!(w.len(), 1);
        // Even if the clock steps back and the first command looks valid again.
        assert_eq!(
            w.check(5, 1_000),
            Err(NonceRefusal::BelowFloor { floor: 1_000 })
        );
    }

    #[test]
    fn a_replay_is_refused_after_more_newer_commands_than_the_window_holds() {
        let mut w = NonceWindow::default();
        let first = (1u64, 60_000u64);
        w.remember(first.0, first.1, 0);
        for i in 0..NonceWindow::CAPACITY as u64 {
            let (nonce, expires) = (100 + i, 60_001 + i);
            assert_eq!(w.check(nonce, expires), Ok(()));
            w.remember(nonce, expires, 1 + i / 100);
        }
        assert_eq!(w.len(), NonceWindow::CAPACITY);
        assert_eq!(
            w.check(first.0, first.1),
            Err(NonceRefusal::BelowFloor { floor: 60_000 })
        );
        // A new command (later expiry, new nonce) still runs.
        assert_eq!(w.check(99_999, 120_000), Ok(()));
    }

    #[test]
    fn the_window_round_trips_through_json() {
        let mut w = NonceWindow::default();
        w.remember(7, 9, 0);
        let back: NonceWindow = serde_json::from_slice(&serde_json::to_vec(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }
}
