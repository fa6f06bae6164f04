//! A job's states and which moves between them are legal (sans-IO: values in, values out).
//!
//! ```text
//!            ┌──────────── queued ◄──────────────┐ (rescheduled: refused admission,
//!            │               │                   │  device silent past its grace,
//!            │               ▼                   │  validation mismatch)
//!            │           scheduled ──────────────┤
//!            │               │                   │
//!            │               ▼                   │
//!            │            running ◄──► paused ───┤
//!            │               │                   │
//!            │               ▼                   │
//!            │          validating ──────────────┘
//!            ▼               │
//!  cancelled · expired · failed ◄┘   done
//! ```
//!
//! `done`, `failed`, `cancelled` and `expired` are final. A buyer may cancel a job until it
//! is validating (its work is then done and is being checked). Every move carries a time
//! and a reason, and the store keeps them all as the job's history.

use std::fmt;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Accepted, waiting for a place.
    Queued,
    /// A device (or several, for redundancy) is chosen; not yet started.
    Scheduled,
    /// Running on its device.
    Running,
    /// Stopped by the device's power governor (night, battery reserve); resumes there.
    Paused,
    /// Its outputs are in and being checked (redundant runs compared, spot checks).
    Validating,
    /// Finished and validated: its outputs can be downloaded.
    Done,
    /// Could not be run or its result was wrong; the reason says which.
    Failed,
    /// Cancelled by its buyer (or an operator).
    Cancelled,
    /// Its deadline passed before it could finish.
    Expired,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Running,
        JobState::Paused,
        JobState::Validating,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// The name the API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Validating => "validating",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// Parses [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// Whether nothing follows this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled | JobState::Expired
        )
    }

    /// The states this one may move to.
    pub fn successors(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Queued => &[Scheduled, Cancelled, Expired, Failed],
            Scheduled => &[Running, Queued, Cancelled, Expired, Failed],
            Running => &[Paused, Validating, Done, Queued, Cancelled, Expired, Failed],
            Paused => &[Running, Queued, Cancelled, Expired, Failed],
            Validating => &[Done, Failed, Queued],
            Done | Failed | Cancelled | Expired => &[],
        }
    }

    /// The move from this state to `to` at `at_ms` for `reason`, if it is legal. Only this
    /// builds a [`Transition`], so only legal moves reach the store.
    pub fn transition(
        self,
        to: JobState,
        at_ms: u64,
        reason: impl Into<String>,
    ) -> Result<Transition, IllegalTransition> {
        if !self.successors().contains(&to) {
            return Err(IllegalTransition { from: self, to });
        }
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Ok(Transition {
            from: self,
            to,
            at_ms,
            reason,
            payouts: Vec::new(),
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Longest reason kept (longer ones are cut at a character boundary).
pub const MAX_REASON: usize = 256;

/// A legal move, with its time and reason: what the store appends to a job's history. The
/// store applies it only if the job is still in `from` (so two writers cannot both move
/// the same job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    from: JobState,
    to: JobState,
    at_ms: u64,
    reason: String,
    payouts: Vec<crate::ledger::Payout>,
}

impl Transition {
    /// The state it leaves.
    pub fn from(&self) -> JobState {
        self.from
    }
    /// The state it enters.
    pub fn to(&self) -> JobState {
        self.to
    }
    /// When (controller clock, ms).
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }
    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// What the job pays when this move makes it `done`, one payout a run that counted
    /// (none: its escrow is refunded).
    pub fn payouts(&self) -> &[crate::ledger::Payout] {
        &self.payouts
    }
    /// This move, also paying `payout` out of the job's escrow when it makes the job `done`.
    pub fn with_payout(mut self, payout: crate::ledger::Payout) -> Transition {
        self.payouts.push(payout);
        self
    }
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot become {to}")]
pub struct IllegalTransition {
    /// Where the job is.
    pub from: JobState,
    /// Where it was asked to go.
    pub to: JobState,
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn final_states_have_no_successors_and_others_can_always_fail() {
        for s in JobState::ALL {
            assert_eq!(s.is_final(), s.successors().is_empty(), "{s}");
            if !s.is_final() {
                assert!(
                    s.transition(Failed, 1, "x").is_ok(),
                    "{s} must be able to fail"
                );
            }
            assert!(s.transition(s, 1, "x").is_err(), "{s} to itself");
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("finished"), None);
    }

    #[test]
    fn a_job_can_be_cancelled_until_it_is_validating() {
        for s in [Queued, Scheduled, Running, Paused] {
            let t = s
                .transition(Cancelled, 7, "cancelled by its buyer")
                .unwrap();
            assert_eq!(
                (t.from(), t.to(), t.at_ms(), t.reason()),
                (s, Cancelled, 7, "cancelled by its buyer")
            );
        }
        for s in [Validating, Done, Failed, Cancelled, Expired] {
            assert_eq!(
                s.transition(Cancelled, 7, "late").unwrap_err(),
                IllegalTransition {
                    from: s,
                    to: Cancelled
                }
            );
        }
        assert_eq!(
            Done.transition(Cancelled, 1, "").unwrap_err().to_string(),
            "a done job cannot become cancelled"
        );
    }

    #[test]
    fn the_whole_happy_path_and_a_reschedule_are_legal_and_shortcuts_are_not() {
        let path = [
            Queued, Scheduled, Running, Paused, Running, Validating, Queued, Scheduled, Running,
            Validating, Done,
        ];
        for w in path.windows(2) {
            assert!(w[0].transition(w[1], 0, "").is_ok(), "{} -> {}", w[0], w[1]);
        }
        for (from, to) in [
            (Queued, Running),
            (Queued, Done),
            (Scheduled, Validating),
            (Paused, Done),
            (Validating, Running),
            (Validating, Expired),
            (Done, Queued),
            (Failed, Queued),
            (Expired, Running),
        ] {
            assert!(from.transition(to, 0, "").is_err(), "{from} -> {to}");
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let t = Queued.transition(Failed, 0, long).unwrap();
        assert!(t.reason().len() <= MAX_REASON);
        assert_eq!(t.reason().len(), 256);
        assert!(t.reason().chars().all(|c| c == 'é'));
    }
}
