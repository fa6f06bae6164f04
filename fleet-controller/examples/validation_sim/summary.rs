//! A case's figures, from its fleets' sums: detection within the window and by the
//! end, time to detection in the liar's jobs and in hours, wrong results paid for, false
//! accusations, and what the checks cost.

use crate::fleet::Tally;
use crate::model::{JOBS_PER_DEVICE_HOUR, WINDOW};

/// Jobs a day the scheduler simulation's world runs (per 1,000 devices).
pub const JOBS_PER_DAY: f64 = 2_400.0;

/// One case, summarised.
#[derive(Clone, Debug)]
pub struct Summary {
    pub liars: usize,
    /// Share of liars caught within [`WINDOW`] of their jobs (of those that were caught
    /// by then or ran that many).
    pub within_window: f64,
    /// The counts behind it: caught within the window, and liars it is a share of.
    pub window_caught: usize,
    pub window_liars: usize,
    /// Share caught by the end of the fleet's run.
    pub by_end: f64,
    /// Median and 99th percentile of the liar's jobs (runs) until caught; `None`: that
    /// share was never caught.
    pub median: Option<u32>,
    pub p99: Option<u32>,
    /// Device runs per buyer job.
    pub runs_per_job: f64,
    pub wrong_per_10k: f64,
    pub false_per_10k_honest: f64,
    /// Extra device-hours, % of one run of every job.
    pub extra_compute_pct: f64,
    /// Extra device energy, kWh a day at the scheduler's 2,400 jobs a day.
    pub extra_kwh_per_day: f64,
    /// The controller's CPU per job, ms, and as a share of one core at 2,400 jobs a day.
    pub controller_ms_per_job: f64,
    pub controller_core_pct: f64,
    /// Jobs with two or more liars among their compared runs, per 10,000 jobs.
    pub pairs_per_10k: f64,
}

impl Summary {
    /// The figures of `t`.
    pub fn of(t: &Tally) -> Summary {
        let jobs = t.jobs.max(1) as f64;
        let liars = t.liars.len();
        let caught_in_window = t
            .liars
            .iter()
            .filter(|l| l.caught_at.is_some_and(|c| c <= WINDOW))
            .count();
        let reached = t
            .liars
            .iter()
            .filter(|l| l.runs >= WINDOW || l.caught_at.is_some_and(|c| c <= WINDOW))
            .count();
        let caught = t.liars.iter().filter(|l| l.caught_at.is_some()).count();
        let mut times: Vec<u32> = t
            .liars
            .iter()
            .map(|l| l.caught_at.unwrap_or(u32::MAX))
            .collect();
        times.sort_unstable();
        let quantile = |q: f64| -> Option<u32> {
            if times.is_empty() {
                return None;
            }
            let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
            Some(times[i]).filter(|&v| v != u32::MAX)
        };
        let controller_ms_per_job = t.controller_ms / jobs;
        Summary {
            liars,
            within_window: caught_in_window as f64 / reached.max(1) as f64,
            window_caught: caught_in_window,
            window_liars: reached,
            by_end: caught as f64 / liars.max(1) as f64,
            median: quantile(0.5),
            p99: quantile(0.99),
            runs_per_job: t.runs as f64 / jobs,
            wrong_per_10k: 1e4 * t.wrong_accepted as f64 / jobs,
            false_per_10k_honest: 1e4 * t.false_accusations as f64 / t.honest_runs.max(1) as f64,
            extra_compute_pct: 100.0 * t.extra_hours / t.job_hours.max(1e-9),
            extra_kwh_per_day: t.extra_kwh / jobs * JOBS_PER_DAY,
            controller_ms_per_job,
            controller_core_pct: 100.0 * controller_ms_per_job * JOBS_PER_DAY / 86_400_000.0,
            pairs_per_10k: 1e4 * t.liar_pairs as f64 / jobs,
        }
    }

    /// Hours of a device's life that `runs` of its jobs take at the scheduler's job rate
    /// (0.1 buyer jobs a device-hour, times the runs each job makes under the policy).
    pub fn hours(&self, runs: u32) -> f64 {
        f64::from(runs) / (JOBS_PER_DEVICE_HOUR * self.runs_per_job)
    }

    /// "median / p99" in jobs with hours, or "never" where that share was not caught.
    pub fn time_to_detection(&self) -> String {
        let one = |v: Option<u32>| match v {
            Some(r) => format!("{r} ({})", duration(self.hours(r))),
            None => "not caught".into(),
        };
        format!("{} / {}", one(self.median), one(self.p99))
    }
}

/// Hours as hours or days.
pub fn duration(hours: f64) -> String {
    if hours < 48.0 {
        format!("{hours:.0} h")
    } else {
        format!("{:.0} d", hours / 24.0)
    }
}

/// A share as a percentage with one decimal.
pub fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}
