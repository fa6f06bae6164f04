//! The devices' job events in dispatch: what they move, and the watch on their progress.
//!
//! Job events are unsigned JSON on `heliostat/v1/dev/{id}/jobs`, sent at most once: they
//! are advice. They move a job only between the states the signed receipt would pass
//! through anyway (`scheduled` → `running` ⇄ `paused`), only for the device that holds
//! its lease, and never end it. A lost event costs nothing: the next progress report
//! (about once a second) or the receipt says the same again.

use attest::DeviceId;
use attest::live::JobEvent;
use attest::msg::CommandBody;

use super::{Dispatcher, move_to};
use crate::ingest::Outgoing;
use crate::jobs::JobState;
use crate::store::jobs::{JobRecord, LeaseProgress};
use crate::store::{Store, StoreError};

/// What a job event did (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventEffect {
    /// Its job moved to another state.
    Moved(JobState),
    /// Its progress was recorded.
    Progress,
    /// Nothing: not a job this device holds, or nothing to move.
    Ignored,
}

impl Dispatcher {
    /// A job event from `device` at `now` (ms).
    pub fn job_event<S: super::DispatchStore>(
        &mut self,
        store: &mut S,
        device: DeviceId,
        event: &JobEvent,
        now: u64,
    ) -> Result<EventEffect, StoreError> {
        let (job, want, progress) = match event {
            JobEvent::Started {
                job,
                chunks,
                budget_w,
            } => (
                *job,
                Some((
                    JobState::Running,
                    format!("started on {device}: {chunks} chunks under {budget_w:.1} W"),
                )),
                Some((0, *chunks, false)),
            ),
            JobEvent::Pause { job, applies: None } => (
                *job,
                Some((JobState::Paused, format!("paused on {device} (a command)"))),
                None,
            ),
            JobEvent::Resume { job, applies: None } => (
                *job,
                Some((JobState::Running, format!("resumed on {device}"))),
                None,
            ),
            JobEvent::Progress {
                job,
                chunks_done,
                chunks,
                paused,
                ..
            } => {
                let want = if *paused {
                    (
                        JobState::Paused,
                        format!(
                            "paused on {device} by its power budget after {chunks_done}/{chunks} chunks"
                        ),
                    )
                } else {
                    (
                        JobState::Running,
                        format!("running on {device}: {chunks_done}/{chunks} chunks"),
                    )
                };
                (*job, Some(want), Some((*chunks_done, *chunks, *paused)))
            }
            _ => return Ok(EventEffect::Ignored),
        };
        let _span = crate::jobs::traced(
            tracing::info_span!("job.event", job = %job, device = %device, state = want.as_ref().map(|w| w.0.as_str())),
            job,
        )
        .entered();
        let Some(rec) = store.job(job)? else {
            return Ok(EventEffect::Ignored);
        };
        if !matches!(
            rec.state,
            JobState::Scheduled | JobState::Running | JobState::Paused
        ) || store.job_lease(job)?.is_none_or(|l| l.device != device)
        {
            return Ok(EventEffect::Ignored);
        }
        let mut effect = EventEffect::Ignored;
        if let Some((chunks_done, chunks, paused)) = progress {
            let p = LeaseProgress {
                chunks_done,
                chunks,
                paused,
                at_ms: now,
            };
            if store.set_job_progress(job, device, &p)? {
                effect = EventEffect::Progress;
            }
        }
        if let Some((to, why)) = want {
            // A progress report while `scheduled` means it started (its `started` lost).
            let steps: &[JobState] = match (rec.state, to) {
                (JobState::Scheduled, JobState::Paused) => &[JobState::Running, JobState::Paused],
                (from, to) if from == to => &[],
                _ => std::slice::from_ref(match to {
                    JobState::Paused => &JobState::Paused,
                    _ => &JobState::Running,
                }),
            };
            let mut from = rec.state;
            for &step in steps {
                if !move_to(store, job, from, step, now, &why)? {
                    break;
                }
                from = step;
                effect = EventEffect::Moved(step);
            }
        }
        Ok(effect)
    }

    /// Placed jobs whose device is online but says nothing of them: a running or paused
    /// job with no progress report for `progress_grace_ms`, or a scheduled one not started
    /// by then after its `RunJob` expired (the command lost, or the agent stuck). Each is
    /// cancelled there and placed again, never on that device.
    pub(super) fn watch_progress<S: super::DispatchStore>(
        &mut self,
        store: &mut S,
        open: &[JobRecord],
        now: u64,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        let grace = self.cfg.progress_grace_ms;
        if grace == 0 {
            return Ok(());
        }
        for job in open {
            let limit = match job.state {
                JobState::Running | JobState::Paused => grace,
                JobState::Scheduled => grace + self.cfg.command_lifetime_ms,
                _ => continue,
            };
            let Some(lease) = store.job_lease(job.id)? else {
                continue;
            };
            let heard = lease.progress.map_or(lease.start_ms, |p| p.at_ms);
            if now.saturating_sub(heard) <= limit || !self.online(store, lease.device, now)? {
                // A silent device is the scheduler's: its lease survives the grace.
                continue;
            }
            let why = match lease.progress {
                Some(p) => format!(
                    "{} online but no progress on it for {} s (last {}/{} chunks): placed again elsewhere",
                    lease.device,
                    now.saturating_sub(p.at_ms) / 1000,
                    p.chunks_done,
                    p.chunks
                ),
                None => format!(
                    "{} online but never started it ({} s since it was sent): placed again elsewhere",
                    lease.device,
                    now.saturating_sub(lease.start_ms) / 1000
                ),
            };
            self.progress_missed(store, job, lease.device, now, &why, out)?;
        }
        Ok(())
    }

    fn progress_missed<S: super::DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        device: DeviceId,
        now: u64,
        why: &str,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        out.push(self.command(device, CommandBody::Cancel { job: job.id }, now));
        store.drop_job_lease(job.id)?;
        super::mark(
            store,
            device,
            crate::reputation::MarkKind::NoProgress,
            Some(job.id),
            why,
            now,
        )?;
        if self.known.contains(&job.id) {
            self.scheduler.progress_missed(job.id, device);
        }
        move_to(store, job.id, job.state, JobState::Queued, now, why)?;
        Ok(())
    }

    fn online<S: Store>(&self, store: &S, device: DeviceId, now: u64) -> Result<bool, StoreError> {
        Ok(store
            .device(device)?
            .is_some_and(|d| now.saturating_sub(d.last_seen_ms) <= self.cfg.online_within_ms))
    }
}

/// Parses a job event published on `heliostat/v1/dev/{id}/jobs`, at most `max_bytes`.
pub fn parse_job_event(payload: &[u8], max_bytes: usize) -> Result<JobEvent, String> {
    if payload.len() > max_bytes {
        return Err(format!(
            "a job event of {} bytes (at most {max_bytes})",
            payload.len()
        ));
    }
    serde_json::from_slice(payload).map_err(|e| format!("not a job event: {e}"))
}
