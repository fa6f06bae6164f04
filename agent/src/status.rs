//! The status model: what `heliostat-agent status` prints (the runtime writes it to
//! `status.json` in the data directory after every record) and the counters behind it.
//! Plain data with the few rules that decide what to log; no IO.

use std::collections::BTreeMap;

use serde::Serialize;

/// What `heliostat-agent status` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub device_id: String,
    /// The version the hello reports: the agent's, with the device image's build on an
    /// image ([`crate::reported_version`]).
    pub version: String,
    pub sources: Vec<SourceStatus>,
    pub last_record: Option<serde_json::Value>,
    pub outbox: OutboxStatus,
    pub link: LinkStatus,
    pub jobs: JobsStatus,
    pub updated_ms: u64,
}

/// Jobs and the governor in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobsStatus {
    pub enabled: bool,
    /// Where jobs run (`cpu` or `cuda: NAME`).
    pub backend: String,
    /// Why the CPU, when a GPU was wanted.
    pub cpu_fallback: Option<String>,
    /// Hardware levers the governor uses before duty-cycling.
    pub levers: Vec<String>,
    /// The policy: grid allowance, hard cap, configured job power, min duty.
    pub grid_allowance_w: f64,
    pub hard_cap_w: f64,
    pub job_power_w: f64,
    pub min_duty: f64,
    /// The governor's last decision (budget by source, duty, pause).
    pub decision: Option<crate::governor::Decision>,
    pub running: Option<RunningStatus>,
    pub draining: bool,
    pub completed: u64,
    pub refused: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub deadline_missed: u64,
    /// Rejected commands by reason.
    pub commands_rejected: BTreeMap<String, u64>,
}

/// The running job in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunningStatus {
    pub job: String,
    pub started_ms: u64,
    pub chunks_done: u64,
    pub chunks: u32,
    pub paused: bool,
    /// Its worker was let go in a long pause (`jobs.release_after_pause_ms`).
    pub released: bool,
}

/// One source in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub channels: Vec<String>,
    /// Every error of this source: failed reads plus the input it found bad and dropped
    /// (the sum of `errors_by_reason`).
    pub errors: u64,
    /// The same by reason: a failed read's kind (`io`, `format`, `stale`, `unavailable`) or
    /// a fault the source counts in its own input (VE.Direct `bad_checksum`, `oversize`).
    pub errors_by_reason: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

impl SourceStatus {
    /// What the retained MQTT status says of this source.
    pub fn health(&self) -> attest::live::SourceHealth {
        attest::live::SourceHealth {
            source: self.source.clone(),
            errors: self.errors,
            errors_by_reason: self.errors_by_reason.clone(),
            last_error: self.last_error.clone(),
        }
    }

    fn total(&mut self) {
        self.errors = self.errors_by_reason.values().sum();
    }

    /// Counts one failed read under `reason`; true the first time this reason is seen.
    pub fn count_error(&mut self, reason: &str, detail: String) -> bool {
        let n = self.errors_by_reason.entry(reason.to_string()).or_default();
        *n += 1;
        let first = *n == 1;
        self.last_error = Some(detail);
        self.total();
        first
    }

    /// Takes a fault count the source keeps itself (cumulative since it opened); true when
    /// this reason first shows up (log it at warn once, then quietly: a noisy serial line
    /// must not flood the log). A count never goes down here.
    pub fn set_fault_count(&mut self, reason: &str, total: u64) -> bool {
        if total == 0 {
            return false;
        }
        let n = self.errors_by_reason.entry(reason.to_string()).or_default();
        let first = *n == 0;
        *n = (*n).max(total);
        self.total();
        first
    }
}

/// The outbox in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStatus {
    pub depth: usize,
    pub bytes: u64,
    pub acked: Option<attest::SeqNo>,
    pub in_flight: usize,
    pub quarantined: u64,
    pub refused: u64,
    /// Why records are not being stored right now (full outbox, full disk), if so.
    pub blocked: Option<String>,
}

/// The link in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStatus {
    pub broker: String,
    pub connected: bool,
    pub last_error: Option<String>,
    pub connects: u64,
    pub acks_rejected: u64,
    pub commands_rejected: u64,
}

impl Status {
    /// Counts a rejected command under `reason`; true the first time this reason is seen
    /// (log it at warn once, then quietly: a flood must not flood the log).
    pub fn count_command_rejection(&mut self, reason: &str) -> bool {
        self.link.commands_rejected += 1;
        let n = self
            .jobs
            .commands_rejected
            .entry(reason.to_string())
            .or_default();
        *n += 1;
        *n == 1
    }

    /// Counts a receipt's outcome.
    pub fn count_outcome(&mut self, outcome: &attest::msg::JobOutcome) {
        use attest::msg::JobOutcome as O;
        let j = &mut self.jobs;
        match outcome {
            O::Completed => j.completed += 1,
            O::Refused(_) => j.refused += 1,
            O::Cancelled => j.cancelled += 1,
            O::DeadlineMissed => j.deadline_missed += 1,
            O::Failed(_) => j.failed += 1,
        }
    }
}

/// `cpu` or `cuda: NAME`.
pub fn backend_name(b: &attest::msg::Backend) -> String {
    match b {
        attest::msg::Backend::Cpu => "cpu".into(),
        attest::msg::Backend::Cuda(n) => format!("cuda: {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_rejection_is_counted_every_time_and_reported_loudly_once_per_reason() {
        let mut s = Status::default();
        assert!(s.count_command_rejection("expired"));
        assert!(!s.count_command_rejection("expired"));
        assert!(s.count_command_rejection("replayed"));
        assert_eq!(s.link.commands_rejected, 3);
        assert_eq!(s.jobs.commands_rejected["expired"], 2);
        assert_eq!(s.jobs.commands_rejected["replayed"], 1);
    }

    #[test]
    fn a_sources_faults_and_failed_reads_add_up_by_reason_and_each_reason_is_loud_once() {
        let mut s = SourceStatus::default();
        assert!(!s.set_fault_count("bad_checksum", 0), "nothing to say yet");
        assert!(s.set_fault_count("bad_checksum", 1));
        assert!(!s.set_fault_count("bad_checksum", 3));
        assert!(s.count_error("stale", "no fresh data from /dev/ttyUSB0".into()));
        assert!(!s.count_error("stale", "no fresh data from /dev/ttyUSB0".into()));
        assert!(s.set_fault_count("oversize", 1));
        assert_eq!(s.errors_by_reason["bad_checksum"], 3);
        assert_eq!(s.errors_by_reason["stale"], 2);
        assert_eq!(s.errors, 6);
        assert_eq!(
            s.last_error.as_deref(),
            Some("no fresh data from /dev/ttyUSB0")
        );
    }
}
