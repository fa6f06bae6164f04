//! Devices' reputation (sans-IO): what dispatch saw of each device, weighed by age, as a
//! score the scheduler ranks by and below which a device gets no work.
//!
//! A mark is one thing a device did, at a time: a result validated (`validated`), a job
//! done with nothing to validate it by (`completed`), a result found wrong (`wrong`, with
//! its evidence), a job failed or its deadline missed there (`failed`, `missed`), a job it
//! stopped reporting on while online (`no_progress`), a lease lost to its silence
//! (`silent`), a GPU its hello claims that its probe did not run on (`misclaimed`). Each
//! counts with the weight `0.5^(age / HALF_LIFE)`:
//!
//! ```text
//! good  = Σ w · (1 for validated, 0.5 for completed)
//! bad   = Σ w · (20 for wrong, 5 for misclaimed, 2 for silent, 1 for failed or
//!         no_progress, 0.5 for missed)
//! score = (good + 1) / (good + bad + 2)
//! ```
//!
//! A device never seen scores 0.5 (the Beta(1, 1) prior); a long honest record tends to 1,
//! and old marks fade. A wrong result within [`WRONG_MEMORY_MS`] caps the score at
//! [`WRONG_CAP`], under [`MIN_SCORE`]: such a device gets no work until it is old news.

use std::fmt;

/// A mark's half-life: a week.
pub const HALF_LIFE_MS: u64 = 7 * 24 * 3_600_000;
/// How long a wrong result keeps a device out: 30 days.
pub const WRONG_MEMORY_MS: u64 = 30 * 24 * 3_600_000;
/// The cap on the score of a device with a recent wrong result.
pub const WRONG_CAP: f64 = 0.05;
/// Below this score a device gets no work.
pub const MIN_SCORE: f64 = 0.2;

/// What a device did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// A result validated (Freivalds' check passed).
    Validated,
    /// A job completed that nothing validates.
    Completed,
    /// A result found wrong.
    Wrong,
    /// A job failed there.
    Failed,
    /// A job's deadline missed there.
    Missed,
    /// Online, but no progress on its job.
    NoProgress,
    /// Silent past its lease's grace.
    Silent,
    /// Its hello claims a GPU its probe did not run on.
    Misclaimed,
}

impl MarkKind {
    /// Every kind.
    pub const ALL: [MarkKind; 8] = [
        MarkKind::Validated,
        MarkKind::Completed,
        MarkKind::Wrong,
        MarkKind::Failed,
        MarkKind::Missed,
        MarkKind::NoProgress,
        MarkKind::Silent,
        MarkKind::Misclaimed,
    ];

    /// The name the store and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Validated => "validated",
            MarkKind::Completed => "completed",
            MarkKind::Wrong => "wrong",
            MarkKind::Failed => "failed",
            MarkKind::Missed => "missed",
            MarkKind::NoProgress => "no_progress",
            MarkKind::Silent => "silent",
            MarkKind::Misclaimed => "misclaimed",
        }
    }

    /// Parses [`MarkKind::as_str`].
    pub fn parse(s: &str) -> Option<MarkKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// (good, bad) weight of one fresh mark.
    fn weights(self) -> (f64, f64) {
        match self {
            MarkKind::Validated => (1.0, 0.0),
            MarkKind::Completed => (0.5, 0.0),
            MarkKind::Wrong => (0.0, 20.0),
            MarkKind::Silent => (0.0, 2.0),
            MarkKind::Misclaimed => (0.0, 5.0),
            MarkKind::Failed | MarkKind::NoProgress => (0.0, 1.0),
            MarkKind::Missed => (0.0, 0.5),
        }
    }
}

impl fmt::Display for MarkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marks older than this do not count (their weight is under 2⁻¹²).
pub const LOOKBACK_MS: u64 = 90 * 24 * 3_600_000;

/// `device`'s score at `now` from its stored marks.
pub fn device_score<S: crate::store::marks::MarkStore>(
    store: &S,
    device: attest::DeviceId,
    now: u64,
) -> Result<f64, crate::store::StoreError> {
    let marks: Vec<(MarkKind, u64)> = store
        .device_marks(device, now.saturating_sub(LOOKBACK_MS))?
        .iter()
        .map(|m| (m.kind, m.at_ms))
        .collect();
    Ok(score(&marks, now))
}

/// A device's score at `now` from its marks `(kind, at_ms)`.
pub fn score(marks: &[(MarkKind, u64)], now: u64) -> f64 {
    let (mut good, mut bad) = (0.0, 0.0);
    let mut wrong_lately = false;
    for &(kind, at) in marks {
        let age = now.saturating_sub(at) as f64;
        let w = 0.5f64.powf(age / HALF_LIFE_MS as f64);
        let (g, b) = kind.weights();
        good += w * g;
        bad += w * b;
        wrong_lately |= kind == MarkKind::Wrong && now.saturating_sub(at) < WRONG_MEMORY_MS;
    }
    let s = (good + 1.0) / (good + bad + 2.0);
    if wrong_lately { s.min(WRONG_CAP) } else { s }
}

#[cfg(test)]
mod tests {
    use super::MarkKind::*;
    use super::*;

    const DAY: u64 = 24 * 3_600_000;

    #[test]
    fn a_new_device_is_even_an_honest_one_rises_and_marks_fade() {
        let now = 100 * DAY;
        assert_eq!(score(&[], now), 0.5);
        let honest: Vec<_> = (0..50).map(|i| (Validated, now - i * 3_600_000)).collect();
        assert!(score(&honest, now) > 0.95, "{}", score(&honest, now));
        // A failure costs little against a long record; many cost much.
        let mut one_bad = honest.clone();
        one_bad.push((Failed, now));
        assert!(score(&one_bad, now) > 0.9);
        let flaky: Vec<_> = (0..20).map(|i| (Failed, now - i * 3_600_000)).collect();
        assert!(score(&flaky, now) < MIN_SCORE, "{}", score(&flaky, now));
        // The same failures two months ago hardly count.
        let old: Vec<_> = flaky.iter().map(|(k, t)| (*k, t - 60 * DAY)).collect();
        assert!(score(&old, now) > 0.45, "{}", score(&old, now));
    }

    #[test]
    fn one_wrong_result_keeps_even_a_long_honest_record_out_for_a_month() {
        let now = 100 * DAY;
        let mut marks: Vec<_> = (0..500).map(|i| (Validated, now - i * 600_000)).collect();
        marks.push((Wrong, now - 29 * DAY));
        assert!(score(&marks, now) <= WRONG_CAP);
        assert!(score(&marks, now) < MIN_SCORE);
        marks.last_mut().unwrap().1 = now - 31 * DAY;
        assert!(score(&marks, now) > MIN_SCORE, "{}", score(&marks, now));
    }
}
