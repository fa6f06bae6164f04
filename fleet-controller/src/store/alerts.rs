//! Alerts as stored: each rule's state per subject while pending or firing, the events
//! (firing, resolved) that the webhook delivers and the console lists, and silences.
//!
//! Invariants every backend keeps: a state change and the event it makes are written in
//! one transaction (a restart neither repeats nor loses a firing); an event is delivered at
//! most until it is marked delivered, and a silenced one never.

use super::StoreError;

/// A rule's state for one subject (absent: all clear).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    /// The rule's name.
    pub rule: String,
    /// What it is about (`device:hs-...`, `job:...`).
    pub subject: String,
    /// `pending` (the condition holds, the delay runs) or `firing`.
    pub firing: bool,
    /// The value last seen.
    pub value: f64,
    /// When it became pending, or fired.
    pub since_ms: u64,
}

/// A firing or a resolution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertEvent {
    /// Its number.
    pub id: u64,
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`offline`, `low_battery`, `job_failed`).
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The value that made it.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// In words.
    pub detail: String,
    /// When (ms).
    pub at_ms: u64,
    /// A silence covered it: shown, never delivered.
    pub silenced: bool,
    /// When the webhook took it.
    pub delivered_ms: Option<u64>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

/// A silence: no delivery for matching events until `until_ms`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Silence {
    /// Its number.
    pub id: u64,
    /// The rule it covers (every rule when `None`).
    pub rule: Option<String>,
    /// The subject it covers (every subject when `None`).
    pub subject: Option<String>,
    /// Until when (ms).
    pub until_ms: u64,
    /// Why.
    pub reason: String,
}

impl Silence {
    /// Whether it covers `rule` on `subject` at `now`.
    pub fn covers(&self, rule: &str, subject: &str, now: u64) -> bool {
        now < self.until_ms
            && self.rule.as_deref().is_none_or(|r| r == rule)
            && self.subject.as_deref().is_none_or(|s| s == subject)
    }
}

/// A change to write: the new state (or `None`: clear) and the event it makes, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// The rule.
    pub rule: String,
    /// The subject.
    pub subject: String,
    /// The state after.
    pub state: Option<AlertState>,
    /// The event (without its id, delivery fields ignored).
    pub event: Option<AlertEvent>,
}

/// A failed job as alerts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    /// Its id, hex.
    pub job: String,
    /// The device it ran on, if it was placed.
    pub device: Option<String>,
    /// Why it failed.
    pub reason: String,
    /// When (ms).
    pub at_ms: u64,
}

/// The alerts part of the store.
pub trait AlertStore {
    /// Every pending or firing state.
    fn alert_states(&self) -> Result<Vec<AlertState>, StoreError>;
    /// Writes changes, each with its event, in one transaction.
    fn apply_alert_changes(&mut self, changes: &[AlertChange]) -> Result<(), StoreError>;
    /// Events not delivered and not silenced, oldest first, at most `limit`.
    fn undelivered_alerts(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError>;
    /// Records a delivery attempt: delivered at `now`, or failed with `error`.
    fn mark_alert_delivery(
        &mut self,
        id: u64,
        now: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The latest events, newest first.
    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError>;
    /// Silences not yet over at `now`.
    fn silences(&self, now: u64) -> Result<Vec<Silence>, StoreError>;
    /// Adds a silence; its number.
    fn add_silence(
        &mut self,
        s: &Silence,
        account: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError>;
    /// Ends a silence now; false when there is none.
    fn end_silence(&mut self, id: u64, now: u64) -> Result<bool, StoreError>;
    /// Jobs that became `failed` after `after_ms`, with the device they ran on, oldest
    /// first.
    fn failed_jobs_since(&self, after_ms: u64) -> Result<Vec<FailedJob>, StoreError>;
    /// A named time mark (how far job failures have been read).
    fn alert_mark(&self, name: &str) -> Result<Option<u64>, StoreError>;
    /// Sets a named time mark.
    fn set_alert_mark(&mut self, name: &str, at_ms: u64) -> Result<(), StoreError>;
}
