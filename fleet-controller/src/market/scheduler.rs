//! The scheduler's state and its inputs: jobs submitted, device events, and a tick with
//! the time and the devices' offers that returns decisions. It does no IO and reads no
//! clock: the caller passes `now` and acts on what comes back (see the folder's map).

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use attest::intensity::{RegionTable, TableError};
use attest::msg::JobId;
use attest::{DeviceId, Milliwatts, TimestampMs};

pub use super::config::{SchedulerConfig, Strategy, Weights};
use super::decision::{Decision, RefuseReason, RevokeReason, WaitReason};
use super::forecast::{
    ClearSkyCurve, Commit, ForecastParams, GridIntensity, HOUR_MS, Outlook, SolarForecast,
};
use super::job::JobRequest;
use super::offer::{DeviceOffer, watts};
use super::planner::{accept, choose, explain, fits_at, refuse};

/// Why a job is not accepted into the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// A job with this id is already queued or leased.
    #[error("job {0} is already known to the scheduler")]
    Duplicate(JobId),
    /// Its work is zero.
    #[error("job {0} has no work (zero energy)")]
    NoWork(JobId),
}

/// A job leased to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The device.
    pub device: DeviceId,
    /// When it was placed.
    pub start: TimestampMs,
    /// When it is expected to end.
    pub expected_end: TimestampMs,
    /// The device's job power when it was placed.
    pub power: Milliwatts,
}

#[derive(Clone, Debug)]
enum State {
    /// Waiting to be decided at `not_before`, holding a device from then when it waits
    /// for sun there.
    Queued {
        not_before: u64,
        hold: Option<Hold>,
    },
    Leased(Lease),
}

/// A waiting job's claim on the device it plans to run on.
#[derive(Clone, Copy, Debug)]
struct Hold {
    device: DeviceId,
    commit: Commit,
    /// The emissions it was planned with, mg.
    co2e_mg: f64,
}

#[derive(Clone, Debug)]
struct Entry {
    job: JobRequest,
    /// Devices that failed it (refused it, went silent past the grace, missed progress).
    excluded: Vec<DeviceId>,
    state: State,
}

impl Entry {
    fn is_due(&self, now: u64) -> bool {
        matches!(self.state, State::Queued { not_before, .. } if not_before <= now)
    }
}

/// The carbon-aware scheduler (sans-IO). See the folder's map for how the caller drives it.
pub struct Scheduler {
    config: SchedulerConfig,
    intensity: Box<dyn GridIntensity + Send + Sync>,
    jobs: BTreeMap<JobId, Entry>,
    silent: BTreeMap<DeviceId, u64>,
    /// The devices online at the last tick: one that joins them wakes the waiting jobs.
    online: std::collections::BTreeSet<DeviceId>,
    forecasts: BTreeMap<DeviceId, SolarForecast>,
    curves: BTreeMap<DeviceId, ClearSkyCurve>,
}

impl Scheduler {
    /// A scheduler with grid intensities from `intensity`.
    pub fn new(
        config: SchedulerConfig,
        intensity: impl GridIntensity + Send + Sync + 'static,
    ) -> Scheduler {
        Scheduler {
            config,
            intensity: Box::new(intensity),
            jobs: BTreeMap::new(),
            silent: BTreeMap::new(),
            online: std::collections::BTreeSet::new(),
            forecasts: BTreeMap::new(),
            curves: BTreeMap::new(),
        }
    }

    /// A scheduler with grid intensities from attest's bundled table.
    pub fn with_bundled_table(config: SchedulerConfig) -> Result<Scheduler, TableError> {
        Ok(Scheduler::new(config, RegionTable::bundled()?))
    }

    /// Its settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a job; it is decided on the next tick.
    pub fn submit(&mut self, job: JobRequest) -> Result<(), SubmitError> {
        if self.jobs.contains_key(&job.id) {
            return Err(SubmitError::Duplicate(job.id));
        }
        if job.work.energy().0 == 0 {
            return Err(SubmitError::NoWork(job.id));
        }
        let entry = Entry {
            job,
            excluded: Vec::new(),
            state: State::Queued {
                not_before: 0,
                hold: None,
            },
        };
        self.jobs.insert(entry.job.id, entry);
        Ok(())
    }

    /// Takes back a lease the scheduler made before a restart, so that the job is
    /// rescheduled if its device falls silent; fails like [`Scheduler::submit`].
    pub fn restore_lease(&mut self, job: JobRequest, lease: Lease) -> Result<(), SubmitError> {
        let id = job.id;
        self.submit(job)?;
        if let Some(e) = self.jobs.get_mut(&id) {
            e.state = State::Leased(lease);
        }
        Ok(())
    }

    /// Forgets a job (cancelled by its buyer, or finished elsewhere); `true` if it was known.
    pub fn cancel(&mut self, job: JobId) -> bool {
        self.jobs.remove(&job).is_some()
    }

    /// The job has finished on its device: the device is free again.
    pub fn job_finished(&mut self, job: JobId) {
        self.jobs.remove(&job);
    }

    /// The device refused to admit the job it was sent (its own budget check said no): the
    /// job is queued again, never for that device.
    pub fn admission_refused(&mut self, job: JobId, device: DeviceId) {
        self.requeue_from(job, device);
    }

    /// The job fell behind its expected progress on its device: it is queued again,
    /// never for that device.
    pub fn progress_missed(&mut self, job: JobId, device: DeviceId) {
        self.requeue_from(job, device);
    }

    /// The device has been silent since `since`. Its leases survive for the grace period;
    /// past it, the tick revokes them and places the jobs elsewhere.
    pub fn device_silent(&mut self, device: DeviceId, since: TimestampMs) {
        let s = self.silent.entry(device).or_insert(since.0);
        *s = (*s).min(since.0);
    }

    /// The device is heard from again: its silence ends, and its leases with it.
    pub fn device_heard(&mut self, device: DeviceId) {
        self.silent.remove(&device);
    }

    /// Sets (or replaces) the operator's solar forecast for a device's site.
    pub fn set_solar_forecast(&mut self, device: DeviceId, forecast: SolarForecast) {
        self.forecasts.insert(device, forecast);
    }

    /// Drops a device's operator forecast: the clear-sky model is used again.
    pub fn clear_solar_forecast(&mut self, device: DeviceId) {
        self.forecasts.remove(&device);
    }

    /// The lease a job holds, if it holds one.
    pub fn lease(&self, job: JobId) -> Option<Lease> {
        match self.jobs.get(&job)?.state {
            State::Leased(l) => Some(l),
            State::Queued { .. } => None,
        }
    }

    /// Jobs queued (waiting or not yet decided).
    pub fn queued(&self) -> usize {
        self.jobs
            .values()
            .filter(|e| matches!(e.state, State::Queued { .. }))
            .count()
    }

    fn requeue_from(&mut self, job: JobId, device: DeviceId) {
        if let Some(e) = self.jobs.get_mut(&job)
            && matches!(e.state, State::Leased(l) if l.device == device)
        {
            e.excluded.push(device);
            e.state = State::Queued {
                not_before: 0,
                hold: None,
            };
        }
    }

    /// Decides every job that is due at `now` over the devices' `offers` (each device at
    /// most once): revocations of leases silent past the grace first, then one decision
    /// per due job, most urgent first (inflexible before flexible, then by deadline). A
    /// waiting job whose hold no longer stands after a job ahead of it took its device is
    /// decided again in the same tick: the later decision about a job replaces the earlier.
    pub fn tick(&mut self, now: TimestampMs, offers: &[DeviceOffer]) -> Vec<Decision> {
        let mut out = Vec::new();
        for o in offers {
            if o.online {
                self.silent.remove(&o.device);
            } else {
                self.silent.entry(o.device).or_insert(now.0);
            }
        }
        self.revoke_silent(now.0, &mut out);
        // A device that came online (new, or back) may take jobs waiting for one: they are
        // decided now rather than at their retry (jobs holding a device for its sun keep
        // their plan).
        let online: std::collections::BTreeSet<DeviceId> = offers
            .iter()
            .filter(|o| o.online)
            .map(|o| o.device)
            .collect();
        if online.iter().any(|d| !self.online.contains(d)) {
            for e in self.jobs.values_mut() {
                if let State::Queued {
                    not_before,
                    hold: None,
                } = &mut e.state
                {
                    *not_before = (*not_before).min(now.0);
                }
            }
        }
        self.online = online;
        if !self.jobs.values().any(|e| e.is_due(now.0)) {
            return out;
        }
        let mut outlooks = self.outlooks(now, offers);
        let index: BTreeMap<DeviceId, usize> = outlooks
            .iter()
            .enumerate()
            .map(|(i, o)| (o.device, i))
            .collect();
        self.commit_known_work(now.0, offers, &mut outlooks, &index);
        let mut due: Vec<&Entry> = self.jobs.values().filter(|e| e.is_due(now.0)).collect();
        due.sort_by_key(|e| (e.job.flexible, e.job.deadline, e.job.submitted, e.job.id));
        let mut due: VecDeque<JobId> = due.into_iter().map(|e| e.job.id).collect();
        while let Some(id) = due.pop_front() {
            let Some(entry) = self.jobs.get(&id).filter(|e| e.is_due(now.0)) else {
                continue;
            };
            // A job keeps first claim on the device it holds: the holds there from its
            // start on were planned around it, so they step aside while it is decided,
            // and keep their place after only if their plans still stand.
            let mut later = Vec::new();
            let mut held_at = None;
            if let State::Queued { hold: Some(h), .. } = entry.state
                && let Some(&i) = index.get(&h.device)
            {
                outlooks[i].release(id);
                for other in outlooks[i].holds_from(h.commit.start) {
                    if let Some(c) = outlooks[i].commit_of(other) {
                        outlooks[i].release(other);
                        later.push(c);
                    }
                }
                held_at = Some(i);
            }
            let decided = self.decide(entry, now.0, offers, &mut outlooks);
            self.apply(id, &decided, offers, &outlooks, &index);
            out.push(decided.0);
            if let Some(i) = held_at {
                later.sort_by_key(|c| c.start);
                for c in later {
                    if !self.hold_again(c, now.0, &mut outlooks[i]) {
                        due.push_back(c.job);
                    }
                }
            }
        }
        out
    }

    /// Puts a hold that stepped aside back on its device if its plan still stands there
    /// (it finishes in time, within its carbon limit, with no more emissions than
    /// planned); otherwise its job is decided again now.
    fn hold_again(&mut self, c: Commit, now: u64, o: &mut Outlook) -> bool {
        let Some(e) = self.jobs.get_mut(&c.job) else {
            return true;
        };
        let State::Queued {
            hold: Some(ref mut h),
            ..
        } = e.state
        else {
            return true;
        };
        let kept = fits_at(&self.config, &e.job, o, now, c.start)
            .filter(|p| p.co2e_mg <= h.co2e_mg * 1.01 + 1_000.0);
        if let Some(plan) = kept {
            h.commit.end = plan.end;
            h.co2e_mg = plan.co2e_mg;
            o.commit(h.commit);
            return true;
        }
        e.state = State::Queued {
            not_before: 0,
            hold: None,
        };
        false
    }

    fn revoke_silent(&mut self, now: u64, out: &mut Vec<Decision>) {
        for (id, e) in &mut self.jobs {
            let State::Leased(lease) = e.state else {
                continue;
            };
            let Some(&since) = self.silent.get(&lease.device) else {
                continue;
            };
            if now >= since.saturating_add(self.config.lease_grace_ms) {
                e.excluded.push(lease.device);
                e.state = State::Queued {
                    not_before: 0,
                    hold: None,
                };
                out.push(Decision::Revoke {
                    job: *id,
                    device: lease.device,
                    why: RevokeReason::SilentPastGrace {
                        since: TimestampMs(since),
                    },
                });
            }
        }
    }

    /// One outlook per online device, with its region's intensity per slot (looked up once
    /// per region).
    fn outlooks(&mut self, now: TimestampMs, offers: &[DeviceOffer]) -> Vec<Outlook> {
        let params = ForecastParams {
            horizon_hours: self.config.horizon_hours.max(1) as usize,
            margin: self.config.forecast_margin,
            typical_sky_ratio: self.config.typical_sky_ratio,
            sky_ratio_fade_hours: self.config.sky_ratio_fade_hours,
        };
        let h0 = now.0 / HOUR_MS;
        let mut regions: BTreeMap<&str, Rc<[f64]>> = BTreeMap::new();
        let mut outlooks = Vec::with_capacity(offers.len());
        for (i, offer) in offers.iter().enumerate() {
            if !offer.online || self.silent.contains_key(&offer.device) {
                continue;
            }
            let region = offer.site.grid_region.as_str();
            let mg = regions
                .entry(region)
                .or_insert_with(|| {
                    (0..params.horizon_hours as u64)
                        .map(|k| f64::from(self.intensity.mg_per_kwh(region, h0 + k)))
                        .collect()
                })
                .clone();
            let curve = self.curves.entry(offer.device).or_default();
            let operator = self.forecasts.get(&offer.device);
            outlooks.push(Outlook::new(offer, i, now, params, curve, operator, mg));
        }
        outlooks
    }

    /// Commits to the outlooks the work already on the devices: this scheduler's leases
    /// and holds, and leases the caller knows of that it does not.
    fn commit_known_work(
        &self,
        now: u64,
        offers: &[DeviceOffer],
        outlooks: &mut [Outlook],
        index: &BTreeMap<DeviceId, usize>,
    ) {
        for (id, e) in &self.jobs {
            let (device, c) = match e.state {
                State::Leased(l) => {
                    let end = if l.expected_end.0 > now {
                        l.expected_end.0
                    } else {
                        now + self.config.overrun_ms
                    };
                    // What is left of its energy, as far as its expected run has gone.
                    let done = now.saturating_sub(l.start.0) as f64
                        / l.expected_end.0.saturating_sub(l.start.0).max(1) as f64;
                    let c = Commit {
                        job: *id,
                        start: l.start.0.min(now),
                        end,
                        watts: watts(l.power),
                        energy_wh: e.job.work.wh() * (1.0 - done).max(0.1),
                        hold: false,
                    };
                    (l.device, c)
                }
                // Due jobs' holds too: each is released only when its job is decided, so
                // that jobs decided before it in the tick cannot take its device.
                State::Queued { hold: Some(h), .. } => (h.device, h.commit),
                State::Queued { .. } => continue,
            };
            if let Some(&i) = index.get(&device) {
                outlooks[i].commit_quietly(c);
            }
        }
        for o in outlooks.iter_mut() {
            let offer = &offers[o.index];
            for l in &offer.leased {
                if l.until.0 > now && !self.jobs.contains_key(&l.job) {
                    let job_w = o.job_w;
                    o.commit_quietly(Commit {
                        job: l.job,
                        start: now,
                        end: l.until.0,
                        watts: job_w,
                        energy_wh: job_w * (l.until.0 - now) as f64 / HOUR_MS as f64,
                        hold: false,
                    });
                }
            }
            o.refresh();
        }
    }

    fn decide(
        &self,
        entry: &Entry,
        now: u64,
        offers: &[DeviceOffer],
        outlooks: &mut [Outlook],
    ) -> (Decision, f64) {
        let job = &entry.job;
        let id = job.id;
        if job.deadline.0 <= now {
            return (refuse(id, RefuseReason::DeadlinePassed), 0.0);
        }
        match choose(&self.config, job, &entry.excluded, now, offers, outlooks) {
            Ok(c) => (
                accept(job, c, now, self.config.lead_ms, outlooks),
                c.plan.co2e_mg,
            ),
            Err(f) => (explain(&self.config, job, f, now, outlooks), 0.0),
        }
    }

    fn apply(
        &mut self,
        id: JobId,
        (decision, planned_co2e_mg): &(Decision, f64),
        offers: &[DeviceOffer],
        outlooks: &[Outlook],
        index: &BTreeMap<DeviceId, usize>,
    ) {
        let planned_co2e_mg = *planned_co2e_mg;
        let at = |device: DeviceId| index.get(&device).map(|&i| &outlooks[i]);
        let Some(e) = self.jobs.get_mut(&id) else {
            return;
        };
        match *decision {
            Decision::Place(p) => {
                let power = at(p.device).map_or(Milliwatts(0), |o| offers[o.index].job_power);
                e.state = State::Leased(Lease {
                    device: p.device,
                    start: p.start_at,
                    expected_end: p.expected_end,
                    power,
                });
            }
            Decision::Wait { until, why, .. } => {
                let hold = match why {
                    WaitReason::Sun { device }
                    | WaitReason::Busy {
                        device: Some(device),
                    } => at(device).and_then(|o| o.commit_of(id)).map(|commit| Hold {
                        device,
                        commit,
                        co2e_mg: planned_co2e_mg,
                    }),
                    _ => None,
                };
                e.state = State::Queued {
                    not_before: until.0,
                    hold,
                };
            }
            Decision::Refuse { .. } => {
                self.jobs.remove(&id);
            }
            Decision::Revoke { .. } => {}
        }
    }
}
