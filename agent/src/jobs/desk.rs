//! The job desk (sans-IO): a job's lifecycle on the device, from the `RunJob` command to its
//! receipt. It decides (refuse, prepare, start, hold a control until the job starts, close)
//! and says what to do; the runtime carries that out (threads, the marker file, sealing the
//! receipt) and reports back. It holds the running job's handle as an opaque `H`, so tests
//! drive it with plain values.
//!
//! Every job that got past the first checks ends in exactly one receipt: refused, cancelled
//! before it started, finished by its runner, or failed by a restart (the marker file names
//! it until its receipt is stored).

use attest::Hash32;
use attest::live::JobEvent;
use attest::msg::{Backend, CounterSnapshot, JobId, JobOutcome, JobSpec};
use serde::{Deserialize, Serialize};

use super::runner::Control;
use crate::inbox::CommandRejection;

/// What a restart needs to close a job the agent died in (the running-job marker file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub job: JobId,
    pub started_ms: u64,
    pub start_counters: Vec<CounterSnapshot>,
    pub chunks_done: u32,
    pub backend: Backend,
    /// The job, so that a restart can resume it from its checkpoint (absent in markers
    /// written before jobs were resumed).
    #[serde(default)]
    pub spec: Option<JobSpec>,
}

/// A receipt to seal and store (the runtime adds the meter's counters at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptOrder {
    pub job: JobId,
    pub outcome: JobOutcome,
    pub output_hash: Hash32,
    pub started_ms: u64,
    /// Empty: the job never ran (its start counters are its end counters).
    pub start_counters: Vec<CounterSnapshot>,
    pub chunks: u32,
    pub pauses: u32,
    pub backend: Backend,
}

impl ReceiptOrder {
    /// A job that did not run, at `now`.
    fn unrun(job: JobId, outcome: JobOutcome, backend: Backend, now: u64) -> ReceiptOrder {
        ReceiptOrder {
            job,
            outcome,
            output_hash: Hash32::ZERO,
            started_ms: now,
            start_counters: Vec::new(),
            chunks: 0,
            pauses: 0,
            backend,
        }
    }

    /// The receipt for a job a restart interrupted.
    pub fn interrupted(m: Marker) -> ReceiptOrder {
        ReceiptOrder {
            job: m.job,
            outcome: JobOutcome::Failed("interrupted: the agent restarted".into()),
            output_hash: Hash32::ZERO,
            started_ms: m.started_ms,
            start_counters: m.start_counters,
            chunks: m.chunks_done,
            pauses: 0,
            backend: m.backend,
        }
    }
}

/// How a runner said its job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub outcome: JobOutcome,
    pub output_hash: Hash32,
    pub chunks: u32,
    pub pauses: u32,
    pub backend: Backend,
}

/// What to do with a new job.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Write this marker, then fetch its inputs and prepare it.
    Prepare(Marker),
    /// Store this refusal.
    Refuse(ReceiptOrder),
}

impl Intake {
    #[cfg(test)]
    fn refusal(self) -> ReceiptOrder {
        match self {
            Intake::Refuse(r) => r,
            Intake::Prepare(m) => panic!("prepared {m:?}"),
        }
    }
}

/// The running job as the desk keeps it.
#[derive(Debug)]
pub struct Running<H> {
    pub job: JobId,
    pub started_ms: u64,
    pub start_counters: Vec<CounterSnapshot>,
    /// The runtime's link to the runner thread.
    pub handle: H,
}

/// The desk (see the module doc).
#[derive(Debug)]
pub struct Desk<H> {
    enabled: bool,
    backend: Backend,
    draining: bool,
    /// A job whose inputs are being fetched and prepared.
    preparing: Option<JobId>,
    /// Controls that arrived while it was being prepared, applied when it starts.
    early: Vec<Control>,
    running: Option<Running<H>>,
    /// The job named in the marker file, until its receipt is stored.
    marked: Option<JobId>,
    /// Job events to publish (JSON, on the device's `jobs` topic).
    events: Vec<JobEvent>,
    progress_due: u64,
}

impl<H> Desk<H> {
    /// A desk that accepts jobs when `enabled`, run on `backend`.
    pub fn new(enabled: bool, backend: Backend) -> Desk<H> {
        Desk {
            enabled,
            backend,
            draining: false,
            preparing: None,
            early: Vec::new(),
            running: None,
            marked: None,
            events: Vec::new(),
            progress_due: 0,
        }
    }

    /// A `RunJob` at `now`: the marker to write before its inputs are fetched and it is
    /// prepared, or the refusal to store.
    pub fn run_job(&mut self, spec: &JobSpec, now: u64) -> Intake {
        let refuse = |why: String| {
            ReceiptOrder::unrun(spec.id, JobOutcome::Refused(why), self.backend.clone(), now)
        };
        if !self.enabled {
            return Intake::Refuse(refuse("jobs are disabled on this device".into()));
        }
        if self.draining {
            return Intake::Refuse(refuse("the device is draining".into()));
        }
        if let Some(r) = &self.running {
            return Intake::Refuse(refuse(format!("busy with job {}", r.job)));
        }
        if let Some(p) = self.preparing {
            return Intake::Refuse(refuse(format!("busy preparing job {p}")));
        }
        self.preparing = Some(spec.id);
        Intake::Prepare(Marker {
            job: spec.id,
            started_ms: now,
            start_counters: Vec::new(),
            chunks_done: 0,
            backend: self.backend.clone(),
            spec: Some(spec.clone()),
        })
    }

    /// A job resumed after a restart is being prepared again (as [`Desk::run_job`] would
    /// have it, without its checks: it was admitted before the restart).
    pub fn resuming(&mut self, job: JobId) {
        self.preparing = Some(job);
        self.marked = Some(job);
    }

    /// A refusal for `job` at `now`, for `why` (admission, a thread that would not start).
    pub fn refuse(&mut self, job: JobId, why: String, now: u64) -> ReceiptOrder {
        if self.preparing == Some(job) {
            self.preparing = None;
        }
        ReceiptOrder::unrun(job, JobOutcome::Refused(why), self.backend.clone(), now)
    }

    /// A job's preparation is over (`failure`: why it could not be prepared): `None` to
    /// admit and start it, or the receipt that closes it (cancelled while it was prepared,
    /// or refused).
    pub fn prepared(
        &mut self,
        job: JobId,
        failure: Option<String>,
        now: u64,
    ) -> Option<ReceiptOrder> {
        self.preparing = None;
        if self.early.contains(&Control::Cancel) {
            self.early.clear();
            return Some(ReceiptOrder::unrun(
                job,
                JobOutcome::Cancelled,
                self.backend.clone(),
                now,
            ));
        }
        failure.map(|why| {
            ReceiptOrder::unrun(job, JobOutcome::Refused(why), self.backend.clone(), now)
        })
    }

    /// The job's runner started: the controls held for it, to send to it now.
    pub fn started(&mut self, running: Running<H>, chunks: u32, budget_w: f64) -> Vec<Control> {
        self.events.push(JobEvent::Started {
            job: running.job,
            chunks,
            budget_w,
        });
        self.running = Some(running);
        std::mem::take(&mut self.early)
    }

    /// A pause, resume or cancel for `job`: the control to send to its runner now (`None`:
    /// held until it starts), or why there is no such job.
    pub fn control(&mut self, job: JobId, c: Control) -> Result<Option<Control>, CommandRejection> {
        let event = |applies: Option<String>| match c {
            Control::Pause => JobEvent::Pause { job, applies },
            Control::Resume => JobEvent::Resume { job, applies },
            Control::Cancel => JobEvent::Cancel { job, applies },
        };
        if self.preparing == Some(job) {
            self.early.push(c);
            self.events
                .push(event(Some("when the job starts".to_string())));
            return Ok(None);
        }
        match &self.running {
            Some(r) if r.job == job => {
                self.events.push(event(None));
                Ok(Some(c))
            }
            _ => Err(CommandRejection::NoSuchJob(job)),
        }
    }

    /// The running job's runner ended: the receipt to store and the runner's handle.
    pub fn finished(&mut self, job: JobId, e: Ended) -> Option<(ReceiptOrder, H)> {
        let r = self.running.take()?;
        let order = ReceiptOrder {
            job,
            outcome: e.outcome,
            output_hash: e.output_hash,
            started_ms: r.started_ms,
            start_counters: r.start_counters,
            chunks: e.chunks,
            pauses: e.pauses,
            backend: e.backend,
        };
        Some((order, r.handle))
    }

    /// `Drain`: no new jobs; the running one finishes.
    pub fn drain(&mut self) {
        self.draining = true;
        self.events.push(JobEvent::Draining);
    }

    /// Whether the device is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The running job.
    pub fn running(&self) -> Option<&Running<H>> {
        self.running.as_ref()
    }

    /// The running job, to step its governor.
    pub fn running_mut(&mut self) -> Option<&mut Running<H>> {
        self.running.as_mut()
    }

    /// The marker file now names `job`.
    pub fn marked(&mut self, job: JobId) {
        self.marked = Some(job);
    }

    /// A receipt was sealed as `seq` (stored or not): its `finished` event.
    pub fn receipt_sealed(&mut self, order: &ReceiptOrder, seq: attest::SeqNo) {
        self.events.push(JobEvent::Finished {
            job: order.job,
            outcome: order.outcome.clone(),
            chunks: order.chunks,
            pauses: order.pauses,
            seq,
        });
    }

    /// `job`'s receipt is stored: whether the marker file names it (and must go now).
    pub fn receipt_stored(&mut self, job: JobId) -> bool {
        if self.marked == Some(job) {
            self.marked = None;
            return true;
        }
        false
    }

    /// Forgets the marker (the runtime removed the file).
    pub fn unmark(&mut self) {
        self.marked = None;
    }

    /// The events to publish at `now`, with the running job's progress once a second.
    pub fn take_events(&mut self, now: u64, progress: Option<JobEvent>) -> Vec<JobEvent> {
        let mut out = std::mem::take(&mut self.events);
        if let Some(p) = progress
            && now >= self.progress_due
        {
            self.progress_due = now + 1_000;
            out.push(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use attest::msg::{JobLimits, Workload};

    use super::*;

    fn spec(id: u8) -> JobSpec {
        JobSpec {
            id: JobId([id; 16]),
            workload: Workload::Builtin {
                kernel: "sha256_batch".into(),
                params: vec![],
            },
            inputs: vec![],
            input_sizes: vec![],
            output_sizes: vec![],
            limits: JobLimits {
                max_energy: attest::Millijoules(0),
                max_duration_ms: 0,
                deadline: attest::TimestampMs(0),
            },
        }
    }

    fn desk() -> Desk<&'static str> {
        Desk::new(true, Backend::Cpu)
    }

    #[test]
    fn a_second_job_is_refused_while_one_is_prepared_and_one_is_running() {
        let mut d = desk();
        let Intake::Prepare(m) = d.run_job(&spec(1), 10) else {
            panic!("refused")
        };
        assert_eq!((m.job, m.started_ms), (JobId([1; 16]), 10));
        let busy = d.run_job(&spec(2), 11).refusal();
        assert!(
            matches!(&busy.outcome, JobOutcome::Refused(w) if w.starts_with("busy preparing job"))
        );
        assert_eq!(d.prepared(JobId([1; 16]), None, 12), None, "start it");
        let held = d.started(
            Running {
                job: JobId([1; 16]),
                started_ms: 12,
                start_counters: vec![],
                handle: "h",
            },
            4,
            30.0,
        );
        assert!(held.is_empty());
        let busy = d.run_job(&spec(3), 13).refusal();
        assert!(matches!(&busy.outcome, JobOutcome::Refused(w) if w.starts_with("busy with job")));
        let (order, handle) = d
            .finished(
                JobId([1; 16]),
                Ended {
                    outcome: JobOutcome::Completed,
                    output_hash: Hash32::ZERO,
                    chunks: 4,
                    pauses: 1,
                    backend: Backend::Cpu,
                },
            )
            .unwrap();
        assert_eq!((order.started_ms, order.chunks, handle), (12, 4, "h"));
        assert!(
            matches!(d.run_job(&spec(4), 14), Intake::Prepare(_)),
            "free again"
        );
    }

    #[test]
    fn a_cancel_during_preparation_closes_the_job_with_a_cancelled_receipt() {
        let mut d = desk();
        d.run_job(&spec(1), 10);
        assert_eq!(d.control(JobId([1; 16]), Control::Pause), Ok(None));
        assert_eq!(d.control(JobId([1; 16]), Control::Cancel), Ok(None));
        let r = d.prepared(JobId([1; 16]), None, 20).unwrap();
        assert_eq!((r.outcome, r.started_ms), (JobOutcome::Cancelled, 20));
        assert_eq!(
            d.control(JobId([1; 16]), Control::Resume),
            Err(CommandRejection::NoSuchJob(JobId([1; 16])))
        );
        let events = d.take_events(20, None);
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1], JobEvent::Cancel { applies: Some(a), .. } if a == "when the job starts"),
            "{events:?}"
        );
    }

    #[test]
    fn a_draining_or_disabled_desk_refuses_every_new_job() {
        let mut d = desk();
        d.drain();
        assert!(
            matches!(d.run_job(&spec(1), 1).refusal().outcome, JobOutcome::Refused(w) if w == "the device is draining")
        );
        let mut off: Desk<()> = Desk::new(false, Backend::Cpu);
        assert!(
            matches!(off.run_job(&spec(1), 1).refusal().outcome, JobOutcome::Refused(w) if w == "jobs are disabled on this device")
        );
    }

    #[test]
    fn progress_is_published_at_most_once_a_second() {
        let mut d = desk();
        let p = || Some(JobEvent::Draining);
        assert_eq!(d.take_events(1_000, p()).len(), 1);
        assert_eq!(d.take_events(1_500, p()).len(), 0);
        assert_eq!(d.take_events(2_000, p()).len(), 1);
    }
}
