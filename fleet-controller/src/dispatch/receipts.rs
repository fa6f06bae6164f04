//! A placed job's signed receipt: the job moves on (validating, done and paid, failed, or
//! queued again when the device refused it), the device's marks follow, and a replicated
//! job waits for its other runs.

use super::*;

impl Dispatcher {
    /// A placed job's receipt arrived.
    pub(super) fn settle<S: DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        lease: &JobLease,
        r: &JobReceipt,
        now: u64,
    ) -> Result<(), StoreError> {
        if self.probe_receipt(store, job, lease.device, r, now)? {
            return Ok(());
        }
        let _span = crate::jobs::traced(
            tracing::info_span!("job.receipt", job = %job.id, device = %lease.device, outcome = ?r.outcome),
            job.id,
        )
        .entered();
        let at = format!("receipt seq {} from {}", r.link.seq, lease.device);
        let mut state = job.state;
        // A receipt ends a job that is running: one still `scheduled` or `paused` (its
        // events lost or late) passes through `running`.
        if matches!(state, JobState::Scheduled | JobState::Paused)
            && !matches!(r.outcome, JobOutcome::Refused(_))
            && move_to(store, job.id, state, JobState::Running, now, &at)?
        {
            state = JobState::Running;
        }
        match &r.outcome {
            JobOutcome::Refused(why) => {
                // Its own budget said no: elsewhere, never there again.
                self.scheduler.admission_refused(job.id, lease.device);
                store.drop_job_lease(job.id)?;
                let reason = format!("{at}: refused ({why}); placed again elsewhere");
                move_to(store, job.id, state, JobState::Queued, now, &reason)?;
            }
            outcome => {
                // The lease stays: it says where the job ran (its proof is that device's).
                self.scheduler.job_finished(job.id);
                self.known.remove(&job.id);
                if matches!(outcome, JobOutcome::Completed)
                    && self.replicated(store, job, state, lease, r, now)?
                {
                    return Ok(());
                }
                let (to, reason) = match outcome {
                    JobOutcome::Completed if self.validates(job) => (
                        JobState::Validating,
                        format!(
                            "{at}: completed, output {}; its result is checked once uploaded",
                            r.output_hash
                        ),
                    ),
                    JobOutcome::Completed => (
                        JobState::Done,
                        format!("{at}: completed, output {}", r.output_hash),
                    ),
                    JobOutcome::Failed(why) => (JobState::Failed, format!("{at}: {why}")),
                    JobOutcome::DeadlineMissed => {
                        (JobState::Failed, format!("{at}: deadline missed"))
                    }
                    _ => (JobState::Failed, format!("{at}: cancelled on the device")),
                };
                let kind = match outcome {
                    JobOutcome::Completed if to == JobState::Done => Some(MarkKind::Completed),
                    JobOutcome::Failed(_) => Some(MarkKind::Failed),
                    JobOutcome::DeadlineMissed => Some(MarkKind::Missed),
                    _ => None,
                };
                if let Some(k) = kind {
                    mark(store, lease.device, k, Some(job.id), &reason, now)?;
                }
                if to == JobState::Done {
                    // Paid out of its escrow in the same transaction: the device's price
                    // over the time the receipt says it ran.
                    let p = self.payout(store, lease.device, r)?;
                    if let Ok(t) = state.transition(to, now, &reason) {
                        store.apply_transition(job.id, &t.with_payout(p))?;
                    }
                } else {
                    move_to(store, job.id, state, to, now, &reason)?;
                }
            }
        }
        Ok(())
    }
}
