//! Dispatch: the job table and the devices in, the scheduler's decisions out as signed
//! commands, and the jobs' states following what the devices sign. Each tick (the time is
//! an argument; the store and the controller key are the only other inputs):
//!
//! 1. jobs the buyer cancelled while placed get a signed `Cancel` on their device;
//! 2. a placed job whose receipt is stored moves on: `done` (completed), `failed` (failed,
//!    missed its deadline, cancelled on the device), or back to `queued` and to another
//!    device when the device refused it (its own power budget said no);
//! 3. queued jobs not yet known to the scheduler are given to it (after a restart, placed
//!    ones with their lease);
//! 4. the devices' offers are built from their hellos (site, GPU, price), their last seen
//!    time and their latest record (battery, sun, load), and the scheduler decides: a
//!    placement sends the device a controller-signed `RunJob` and records the lease; a
//!    refusal ends the job (`expired` past its deadline, else `failed`) with the reason; a
//!    revoked lease (the device silent past the grace) cancels the job there and queues it
//!    again.
//!
//! Between ticks the devices' job events (unsigned, advice: [`Dispatcher::job_event`]) move
//! a placed job to `running` and between `running` and `paused`, and record its progress;
//! each tick a job whose online device stopped reporting progress goes elsewhere
//! ([`Dispatcher::watch_progress`]). Only the signed receipt ends a job.
//!
//! Not yet: outputs are not validated (a completed receipt makes the job `done`); devices
//! have no measured reliability (0.9 for all) and no stated job power
//! (`DispatchConfig::job_power_w`).

mod events;
pub mod forecasts;
mod offers;
mod pay;
pub mod probes;
mod receipts;
mod replicas;
mod validation;

pub use events::{EventEffect, parse_job_event};
pub use offers::last_record;
use offers::{class_named, gpu_model};

use std::collections::HashSet;

use attest::msg::{Command, CommandBody, JobId, JobOutcome, JobReceipt};
use attest::topics::{self, Leaf};
use attest::{DeviceId, Envelope, KeyPair, Milliwatts, TimestampMs};

use crate::ingest::Outgoing;
use crate::jobs::{CarbonConstraint, JobState};
use crate::market::{
    CarbonLimit, Co2eMg, ComputeCapability, Decision, JobNeeds, JobRequest, MicroCredits,
    RefuseReason, Scheduler, SharePpm, Work,
};
use crate::reputation::MarkKind;
use crate::store::accounts::AccountStore;
use crate::store::blobs::BlobStore;
use crate::store::jobs::{JobLease, JobRecord, JobStore};
use crate::store::ledger::LedgerStore;
use crate::store::marks::MarkStore;
use crate::store::probes::ProbeStore;
use crate::store::runs::RunStore;
use crate::store::{Store, StoreError};

/// What dispatch needs of the store.
pub trait DispatchStore:
    Store + JobStore + AccountStore + MarkStore + LedgerStore + ProbeStore + BlobStore + RunStore
{
}
impl<
    S: Store + JobStore + AccountStore + MarkStore + LedgerStore + ProbeStore + BlobStore + RunStore,
> DispatchStore for S
{
}

/// Dispatch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// A device heard from within this long counts as online, ms.
    pub online_within_ms: u64,
    /// What a job draws on a device, watts, until devices state it.
    pub job_power_w: u32,
    /// A job's expected run time when it states no `max_duration_ms`, ms.
    pub default_run_ms: u64,
    /// How long a signed command stays valid, ms (the agent takes at most an hour).
    pub command_lifetime_ms: u64,
    /// A placed job silent this long on an online device goes elsewhere, ms (0: never);
    /// see [`Dispatcher::watch_progress`].
    pub progress_grace_ms: u64,
    /// The platform's fee on each payout, parts per million.
    pub fee_ppm: u32,
    /// The share of a provider's stake taken for a proven wrong result, ppm.
    pub slash_ppm: u32,
    /// The least stake a device's provider must hold for the device to get work (0: none).
    pub min_stake: u64,
    /// How often an idle device gets a performance probe, ms (also at its first sight;
    /// 0: never). Needs the blob store ([`Dispatcher::with_blob_dir`]).
    pub probe_every_ms: u64,
    /// The share of PTX jobs (which the controller cannot check) run a second time on
    /// another provider's device and compared by output hash, ppm.
    pub spot_check_ppm: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            online_within_ms: 60_000,
            job_power_w: 60,
            default_run_ms: 60_000,
            command_lifetime_ms: 10 * 60_000,
            progress_grace_ms: 5 * 60_000,
            fee_ppm: 50_000,
            slash_ppm: 100_000,
            min_stake: 0,
            probe_every_ms: 0,
            spot_check_ppm: 250_000,
        }
    }
}

/// The dispatcher: the scheduler, the key that signs commands, and what it has told the
/// scheduler.
pub struct Dispatcher {
    scheduler: Scheduler,
    key: KeyPair,
    cfg: DispatchConfig,
    known: HashSet<JobId>,
    nonce: u64,
    /// Devices with an operator forecast.
    forecast_devices: HashSet<DeviceId>,
    /// The blob store (job inputs and outputs by hash), for validating results there.
    blob_dir: Option<std::path::PathBuf>,
    /// Devices a job must not go to again (they returned a wrong result for it).
    excluded: std::collections::HashMap<JobId, HashSet<DeviceId>>,
    /// When each device's next performance probe is due (drawn at random: [`probes`]).
    probe_due: std::collections::HashMap<DeviceId, u64>,
}

impl Dispatcher {
    /// A dispatcher signing with `key`.
    /// The scheduler should plan starts no later than the next tick (`lead_ms`): a
    /// placement's `RunJob` is sent when it is decided.
    pub fn new(scheduler: Scheduler, key: KeyPair, cfg: DispatchConfig) -> Dispatcher {
        Dispatcher {
            scheduler,
            key,
            cfg,
            known: HashSet::new(),
            nonce: 0,
            forecast_devices: HashSet::new(),
            blob_dir: None,
            excluded: std::collections::HashMap::new(),
            probe_due: std::collections::HashMap::new(),
        }
    }

    /// Validates results (Freivalds' check of matrix products) from the blob store in
    /// `dir`; without one, jobs are done on their receipts.
    pub fn with_blob_dir(mut self, dir: std::path::PathBuf) -> Dispatcher {
        self.blob_dir = Some(dir);
        self
    }

    /// Plans on `forecasts` (the operator's, by device) instead of the clear-sky curve for
    /// the hours they give; devices no longer in them go back to the clear sky.
    pub fn set_solar_forecasts(
        &mut self,
        forecasts: std::collections::HashMap<DeviceId, crate::market::SolarForecast>,
    ) {
        for gone in self
            .forecast_devices
            .difference(&forecasts.keys().copied().collect())
        {
            self.scheduler.clear_solar_forecast(*gone);
        }
        self.forecast_devices = forecasts.keys().copied().collect();
        for (device, f) in forecasts {
            self.scheduler.set_solar_forecast(device, f);
        }
    }

    /// One round at `now` (ms): returns the commands to publish.
    pub fn tick<S: DispatchStore>(
        &mut self,
        store: &mut S,
        now: u64,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let mut out = Vec::new();
        let open = store.open_jobs()?;
        let open_ids: HashSet<JobId> = open.iter().map(|j| j.id).collect();
        // 1. Gone from the open jobs (a buyer's cancel): stop it on its device.
        let gone: Vec<JobId> = self
            .known
            .iter()
            .filter(|id| !open_ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(lease) = store.job_lease(id)? {
                out.push(self.command(lease.device, CommandBody::Cancel { job: id }, now));
                store.drop_job_lease(id)?;
            }
            self.scheduler.cancel(id);
            self.known.remove(&id);
        }
        // 2. Receipts of placed jobs.
        for job in &open {
            if !matches!(
                job.state,
                JobState::Scheduled | JobState::Running | JobState::Paused
            ) {
                continue;
            }
            let Some(lease) = store.job_lease(job.id)? else {
                continue;
            };
            if let Some(r) = receipt(store, lease.device, job.id, lease.start_ms)? {
                self.settle(store, job, &lease, &r, now)?;
            }
        }
        // 2a. Completed jobs whose results are in: validated, then paid or sent elsewhere.
        self.validate_results(store, &open, now)?;
        // 2b. Placed jobs whose online device stopped reporting progress.
        self.watch_progress(store, &open, now, &mut out)?;
        // 3. Jobs new to the scheduler (or to this process).
        for job in store.open_jobs()? {
            if self.known.contains(&job.id) {
                continue;
            }
            let request = self.request(&job);
            let submitted = match (job.state, store.job_lease(job.id)?) {
                (JobState::Queued, _) => self.scheduler.submit(request),
                // Its work is done there (the lease only says where): nothing to place.
                (JobState::Validating, _) => continue,
                (_, Some(l)) => self.scheduler.restore_lease(
                    request,
                    crate::market::Lease {
                        device: l.device,
                        start: TimestampMs(l.start_ms),
                        expected_end: TimestampMs(l.expected_end_ms),
                        power: Milliwatts(self.cfg.job_power_w * 1000),
                    },
                ),
                _ => continue,
            };
            match submitted {
                Ok(()) => {
                    self.known.insert(job.id);
                }
                Err(e) => {
                    move_to(
                        store,
                        job.id,
                        job.state,
                        JobState::Failed,
                        now,
                        &e.to_string(),
                    )?;
                }
            }
        }
        // 4. Offers and decisions.
        let offers = self.offers(store, now)?;
        for d in self.scheduler.tick(TimestampMs(now), &offers) {
            self.decided(store, d, now, &mut out)?;
        }
        // 5. A probe, on a tick that sent nothing else (so no device gets two jobs at once).
        if out.is_empty() {
            self.send_probe(store, &offers, now, &mut out)?;
        }
        Ok(out)
    }

    fn decided<S: DispatchStore>(
        &mut self,
        store: &mut S,
        d: Decision,
        now: u64,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        let state_of = |store: &S, id: JobId| -> Result<Option<JobRecord>, StoreError> {
            Ok(store.open_jobs()?.into_iter().find(|j| j.id == id))
        };
        match d {
            Decision::Place(p) => {
                let Some(job) = state_of(store, p.job)? else {
                    self.scheduler.cancel(p.job);
                    self.known.remove(&p.job);
                    return Ok(());
                };
                let _span = crate::jobs::traced(
                    tracing::info_span!("job.schedule", job = %p.job, device = %p.device),
                    p.job,
                )
                .entered();
                // Never again where it came back wrong, nor where the reputation is too
                // low for any work.
                if self
                    .excluded
                    .get(&p.job)
                    .is_some_and(|d| d.contains(&p.device))
                    || self.reputation(store, p.device, now)? < crate::reputation::MIN_SCORE
                    || !self.staked_enough(store, p.device)?
                    || self.ran_there_before(store, &job, p.device)?
                {
                    self.scheduler.admission_refused(p.job, p.device);
                    return Ok(());
                }
                // A job naming a GPU model (`gpu_class = "orin"`) runs only where the
                // device's GPU model says so; the scheduler knows classes, not models.
                if let Some(want) = &job.order.hardware().gpu_class
                    && !gpu_model(store, p.device)?
                        .is_some_and(|m| m.to_lowercase().contains(want.as_str()))
                {
                    self.scheduler.admission_refused(p.job, p.device);
                    return Ok(());
                }
                let nonce = self.next_nonce(now);
                let spec = job.order.job_spec(job.id);
                let dispatch = crate::jobs::traced(
                    tracing::info_span!("job.dispatch", job = %job.id, device = %p.device, nonce),
                    job.id,
                );
                dispatch.in_scope(|| {
                    out.push(self.signed(p.device, CommandBody::RunJob(spec), now, nonce));
                });
                store.put_job_lease(
                    job.id,
                    &JobLease {
                        device: p.device,
                        start_ms: now,
                        expected_end_ms: p.expected_end.0,
                        nonce,
                        progress: None,
                    },
                )?;
                let why = format!(
                    "placed on {}: expected {:.0} % renewable, {:.1} g CO2e, {} micro-credits",
                    p.device,
                    p.renewable.fraction() * 100.0,
                    p.co2e.grams(),
                    p.price.0
                );
                move_to(store, job.id, job.state, JobState::Scheduled, now, &why)?;
            }
            Decision::Wait { .. } => {}
            Decision::Refuse { job, reason } => {
                self.known.remove(&job);
                if let Some(rec) = state_of(store, job)? {
                    let to = match reason {
                        RefuseReason::DeadlinePassed => JobState::Expired,
                        _ => JobState::Failed,
                    };
                    move_to(store, job, rec.state, to, now, &refusal(&reason))?;
                }
            }
            Decision::Revoke { job, device, why } => {
                out.push(self.command(device, CommandBody::Cancel { job }, now));
                store.drop_job_lease(job)?;
                mark(
                    store,
                    device,
                    MarkKind::Silent,
                    Some(job),
                    "silent past its lease's grace",
                    now,
                )?;
                if let Some(rec) = state_of(store, job)? {
                    let crate::market::RevokeReason::SilentPastGrace { since } = why;
                    let reason = format!(
                        "{device} silent for {} s (since {}), past the lease grace: placed again elsewhere",
                        now.saturating_sub(since.0) / 1000,
                        crate::intensity::civil::format_rfc3339_ms(since.0 as i64)
                    );
                    move_to(store, job, rec.state, JobState::Queued, now, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// What the scheduler is told of a job.
    fn request(&self, job: &JobRecord) -> JobRequest {
        let hw = job.order.hardware();
        let limits = job.order.job_spec(job.id).limits;
        let run_ms = match limits.max_duration_ms {
            0 => self.cfg.default_run_ms,
            ms => ms,
        };
        JobRequest {
            id: job.id,
            needs: JobNeeds {
                gpu_class: hw.gpu_class.as_deref().and_then(class_named),
                min_vram_mib: hw.min_vram_mib.unwrap_or(0),
                min_capability: hw
                    .min_cuda_capability
                    .map_or(ComputeCapability::new(0, 0), |c| {
                        ComputeCapability::new(c.major, c.minor)
                    }),
            },
            work: Work::Duration {
                ms: run_ms,
                at: Milliwatts(self.cfg.job_power_w * 1000),
            },
            deadline: job.order.deadline(),
            max_price_per_gpu_hour: MicroCredits(job.order.max_price_micro_per_gpu_hour()),
            carbon: match job.order.carbon() {
                None => CarbonLimit::None,
                Some(CarbonConstraint::MinRenewableSharePpm(p)) => {
                    CarbonLimit::MinRenewable(SharePpm(p))
                }
                Some(CarbonConstraint::MaxCo2eMg(mg)) => CarbonLimit::MaxEmissions(Co2eMg(mg)),
            },
            flexible: job.order.flexible(),
            submitted: TimestampMs(job.created_ms),
        }
    }

    /// A device's reputation now ([`crate::reputation::device_score`]).
    pub fn reputation<S: DispatchStore>(
        &self,
        store: &S,
        device: DeviceId,
        now: u64,
    ) -> Result<f64, StoreError> {
        crate::reputation::device_score(store, device, now)
    }

    fn next_nonce(&mut self, now: u64) -> u64 {
        self.nonce += 1;
        now.wrapping_mul(1_000).wrapping_add(self.nonce)
    }

    fn command(&mut self, device: DeviceId, body: CommandBody, now: u64) -> Outgoing {
        let nonce = self.next_nonce(now);
        self.signed(device, body, now, nonce)
    }

    fn signed(&self, device: DeviceId, body: CommandBody, now: u64, nonce: u64) -> Outgoing {
        let cmd = Command {
            device,
            nonce,
            issued: TimestampMs(now),
            expires: TimestampMs(now + self.cfg.command_lifetime_ms),
            body,
        };
        Outgoing {
            topic: topics::device(&device, Leaf::Cmd),
            payload: Envelope::seal(&cmd, &self.key).into_bytes(),
            retain: false,
        }
    }
}

/// Moves a job from `from` to `to` with `reason`; false when the move is not legal or the
/// job was moved meanwhile (a buyer's cancel).
fn move_to<S: JobStore>(
    store: &mut S,
    id: JobId,
    from: JobState,
    to: JobState,
    now: u64,
    reason: &str,
) -> Result<bool, StoreError> {
    match from.transition(to, now, reason) {
        Ok(t) => store.apply_transition(id, &t),
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "job state not moved");
            Ok(false)
        }
    }
}

/// Records what `device` did.
fn mark<S: MarkStore>(
    store: &mut S,
    device: DeviceId,
    kind: MarkKind,
    job: Option<JobId>,
    detail: &str,
    now: u64,
) -> Result<(), StoreError> {
    store.mark_device(&crate::store::marks::DeviceMark {
        device,
        at_ms: now,
        kind,
        job,
        detail: detail.chars().take(2_000).collect(),
    })
}

/// The device's receipt of `job`, among its messages since `since_ms`.
pub fn receipt<S: Store>(
    store: &S,
    device: DeviceId,
    job: JobId,
    since_ms: u64,
) -> Result<Option<JobReceipt>, StoreError> {
    Ok(store
        .items_between(device, since_ms, u64::MAX / 2)?
        .iter()
        .filter(|it| it.envelope.get(1) == Some(&(attest::Kind::JobReceipt as u8)))
        .find_map(|it| {
            let r: JobReceipt = Envelope::decode(&it.envelope).ok()?.open().ok()?;
            (r.job == job).then_some(r)
        }))
}

fn refusal(r: &RefuseReason) -> String {
    match r {
        RefuseReason::DeadlinePassed => "its deadline passed before a device could take it".into(),
        RefuseReason::NoDeviceMeetsNeeds => "no device meets its hardware needs".into(),
        RefuseReason::AbovePriceCeiling { cheapest } => format!(
            "every device that meets its needs asks more than its price ceiling (cheapest {} micro-credits per GPU-hour)",
            cheapest.0
        ),
        RefuseReason::DeadlineCannotBeMet => {
            "no device's forecast power budget can finish it before its deadline".into()
        }
        RefuseReason::CarbonLimit {
            best_renewable,
            best_co2e,
        } => format!(
            "its carbon limit cannot be met (best placement: {:.0} % renewable, {:.1} g CO2e)",
            best_renewable.fraction() * 100.0,
            best_co2e.grams()
        ),
    }
}

#[cfg(test)]
mod tests;
