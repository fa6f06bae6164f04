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
//! Not yet: progress (the agent's job events) does not move a job to `running` before its
//! receipt; outputs are not uploaded nor validated (a completed receipt makes the job
//! `done`); devices have no measured reliability (0.9 for all) and no stated job power
//! (`DispatchConfig::job_power_w`).

use std::collections::HashSet;

use attest::msg::{
    ChannelKind, Command, CommandBody, Hello, JobId, JobOutcome, JobReceipt, MeterRecord,
};
use attest::topics::{self, Leaf};
use attest::{DeviceId, Envelope, KeyPair, Milliwatts, SeqNo, TimestampMs};

use crate::ingest::Outgoing;
use crate::jobs::{CarbonConstraint, JobState};
use crate::market::{
    CarbonLimit, Co2eMg, ComputeCapability, Decision, DeviceOffer, GpuClass, GpuOffer, JobNeeds,
    JobRequest, LeasedJob, MicroCredits, RefuseReason, Scheduler, SharePpm, Work,
};
use crate::store::jobs::{JobLease, JobRecord, JobStore};
use crate::store::{DeviceState, Store, StoreError};

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
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            online_within_ms: 60_000,
            job_power_w: 60,
            default_run_ms: 60_000,
            command_lifetime_ms: 10 * 60_000,
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
        }
    }

    /// One round at `now` (ms): returns the commands to publish.
    pub fn tick<S: Store + JobStore>(
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
        // 3. Jobs new to the scheduler (or to this process).
        for job in store.open_jobs()? {
            if self.known.contains(&job.id) {
                continue;
            }
            let request = self.request(&job);
            let submitted = match (job.state, store.job_lease(job.id)?) {
                (JobState::Queued, _) => self.scheduler.submit(request),
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
        Ok(out)
    }

    fn decided<S: Store + JobStore>(
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
                out.push(self.signed(p.device, CommandBody::RunJob(spec), now, nonce));
                store.put_job_lease(
                    job.id,
                    &JobLease {
                        device: p.device,
                        start_ms: now,
                        expected_end_ms: p.expected_end.0,
                        nonce,
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
                if let Some(rec) = state_of(store, job)? {
                    let reason = format!("{device} silent ({why:?}): placed again elsewhere");
                    move_to(store, job, rec.state, JobState::Queued, now, &reason)?;
                }
            }
        }
        Ok(())
    }

    /// A placed job's receipt arrived.
    fn settle<S: Store + JobStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        lease: &JobLease,
        r: &JobReceipt,
        now: u64,
    ) -> Result<(), StoreError> {
        let at = format!("receipt seq {} from {}", r.link.seq, lease.device);
        let mut state = job.state;
        if state == JobState::Scheduled
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
                let (to, reason) = match outcome {
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
                move_to(store, job.id, state, to, now, &reason)?;
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

    /// Every approved device's offer now.
    fn offers<S: Store + JobStore>(
        &self,
        store: &S,
        now: u64,
    ) -> Result<Vec<DeviceOffer>, StoreError> {
        let leases: Vec<(JobId, JobLease)> = store
            .open_jobs()?
            .iter()
            .filter_map(|j| Some((j.id, store.job_lease(j.id).ok()??)))
            .collect();
        let mut offers = Vec::new();
        for d in store.devices()? {
            if d.state != DeviceState::Approved {
                continue;
            }
            let Some(hello) = Envelope::decode(&d.hello)
                .ok()
                .and_then(|e| e.open::<Hello>().ok())
            else {
                continue;
            };
            let last = last_record(store, d.id)?;
            let power_of = |kind: ChannelKind| {
                last.as_ref().map_or(0, |r| {
                    r.channels
                        .iter()
                        .filter(|c| c.kind == kind)
                        .map(|c| c.power.0)
                        .sum::<u32>()
                })
            };
            offers.push(DeviceOffer {
                device: d.id,
                gpu: gpu_offer(&hello),
                price_per_gpu_hour: MicroCredits(hello.price_micro_per_gpu_hour),
                reliability: 0.9,
                online: now.saturating_sub(d.last_seen_ms) <= self.cfg.online_within_ms,
                job_power: Milliwatts(self.cfg.job_power_w * 1000),
                base_load: Milliwatts(power_of(ChannelKind::Load)),
                grid_allowance: Milliwatts(0),
                battery_soc_permille: last
                    .as_ref()
                    .and_then(|r| r.channels.iter().find_map(|c| c.soc_permille))
                    .unwrap_or(0),
                solar_now: Milliwatts(power_of(ChannelKind::Solar)),
                sky_ratio: None,
                leased: leases
                    .iter()
                    .filter(|(_, l)| l.device == d.id)
                    .map(|(job, l)| LeasedJob {
                        job: *job,
                        until: TimestampMs(l.expected_end_ms),
                    })
                    .collect(),
                site: hello.site,
            });
        }
        Ok(offers)
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

/// The scheduler's GPU classes by name (`gpu_class = "embedded"`); other names are GPU
/// models, checked at placement.
fn class_named(name: &str) -> Option<GpuClass> {
    match name {
        "embedded" => Some(GpuClass::Embedded),
        "consumer" => Some(GpuClass::Consumer),
        "datacenter" => Some(GpuClass::Datacenter),
        _ => None,
    }
}

/// A device's GPU as the scheduler compares it; a device without one offers no memory and
/// capability 0.0 (only jobs with no GPU needs run there, on its CPU).
fn gpu_offer(hello: &Hello) -> GpuOffer {
    let Some(g) = hello.hardware.gpus.first() else {
        return GpuOffer {
            class: GpuClass::Embedded,
            vram_mib: 0,
            capability: ComputeCapability::new(0, 0),
        };
    };
    let m = g.model.to_lowercase();
    let class = if ["orin", "xavier", "nvgpu", "tegra", "jetson", "nano"]
        .iter()
        .any(|k| m.contains(k))
    {
        GpuClass::Embedded
    } else if [
        "h100", "h200", "a100", "a30", "a40", "l40", "v100", "t4", "b200", "gh200",
    ]
    .iter()
    .any(|k| m.contains(k))
    {
        GpuClass::Datacenter
    } else {
        GpuClass::Consumer
    };
    let (major, minor) = g.compute_capability().unwrap_or((0, 0));
    GpuOffer {
        class,
        vram_mib: g.vram_mib,
        capability: ComputeCapability::new(major, minor),
    }
}

fn gpu_model<S: Store>(store: &S, device: DeviceId) -> Result<Option<String>, StoreError> {
    Ok(store.device(device)?.and_then(|d| {
        let hello: Hello = Envelope::decode(&d.hello).ok()?.open().ok()?;
        hello.hardware.gpus.first().map(|g| g.model.clone())
    }))
}

/// The device's latest meter record.
pub fn last_record<S: Store>(
    store: &S,
    device: DeviceId,
) -> Result<Option<MeterRecord>, StoreError> {
    let Some((seq, _)) = store.last_item(device)? else {
        return Ok(None);
    };
    let items = store.items(device, SeqNo(seq.0.saturating_sub(8)), seq)?;
    Ok(items
        .iter()
        .rev()
        .find_map(|(_, b)| Envelope::decode(b).ok()?.open::<MeterRecord>().ok()))
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
mod tests {
    use std::collections::HashMap;

    use attest::Hash32;
    use attest::msg::{Backend, TrustTier};
    use attest::sample::{SAMPLE_START, SampleDevice};

    use super::*;
    use crate::accounts::{self, AccountKind, Token};
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use crate::market::SchedulerConfig;
    use crate::store::blobs::BlobStore;
    use crate::store::jobs::NewJob;
    use crate::store::sqlite::SqliteStore;

    /// A store with one approved sample device that has sent records up to `t` (ms), and a
    /// buyer's queued job due in a day.
    fn fleet(t: u64) -> (Ingest<SqliteStore>, SampleDevice, JobId, KeyPair) {
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let mut ing = Ingest::new(
            SqliteStore::in_memory().unwrap(),
            key.clone(),
            IngestConfig::auto_approving(),
        );
        let mut dev = SampleDevice::new(8);
        let id = dev.key.device_id();
        let topic = |leaf: &str| format!("{PREFIX}{id}/{leaf}");
        let mut msgs = vec![(topic("hello"), dev.hello().into_bytes())];
        let mut at = SAMPLE_START.0;
        while at <= t {
            msgs.push((topic("records"), dev.record_at(at).into_bytes()));
            at += 600_000;
        }
        ing.handle(&msgs, t).unwrap();
        let s = ing.store_mut();
        let buyer = accounts::create(
            s,
            AccountKind::Buyer,
            "alice",
            1 << 20,
            None,
            "",
            Token::from_secret([1; 32]),
            1,
        )
        .unwrap()
        .account
        .id;
        let input = Hash32::digest(b"abc");
        s.grant_blob(buyer, input, 3, 50).unwrap();
        let req = serde_json::from_value(serde_json::json!({
            "workload": {"builtin": {"kernel": "sha256_batch",
                "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
            "inputs": [input],
            "deadline_ms": t + 86_400_000,
            "max_price_micro_per_gpu_hour": 1_000_000,
        }))
        .unwrap();
        let order = crate::jobs::validate(req, t, &HashMap::from([(input, 3)])).unwrap();
        let job = JobId([0x42; 16]);
        s.insert_job(
            &NewJob {
                id: job,
                owner: buyer,
                order,
                created_ms: t,
            },
            "accepted",
        )
        .unwrap();
        (ing, dev, job, key)
    }

    fn dispatcher(key: &KeyPair) -> Dispatcher {
        Dispatcher::new(
            Scheduler::with_bundled_table(SchedulerConfig::default()).unwrap(),
            key.clone(),
            DispatchConfig::default(),
        )
    }

    fn state(ing: &Ingest<SqliteStore>, job: JobId) -> Option<JobState> {
        ing.store()
            .open_jobs()
            .unwrap()
            .iter()
            .find(|j| j.id == job)
            .map(|j| j.state)
    }

    fn receipt(dev: &mut SampleDevice, job: JobId, t: u64, outcome: JobOutcome) -> Envelope {
        let r = JobReceipt {
            link: dev.next_link(t),
            job,
            outcome,
            output_hash: Hash32::digest(b"out"),
            started: TimestampMs(t),
            ended: TimestampMs(t),
            start_counters: vec![],
            end_counters: vec![],
            chunks: 1,
            pauses: 0,
            backend: Backend::Cpu,
            tier: TrustTier::HardwareMeter,
        };
        dev.seal_chained(&r)
    }

    #[test]
    fn a_queued_job_is_placed_with_a_signed_run_job_and_done_when_its_receipt_comes() {
        // Noon on the sample's June day: sun on the rig.
        let noon = SAMPLE_START.0 + 12 * 3_600_000;
        let (mut ing, mut dev, job, key) = fleet(noon);
        let mut d = dispatcher(&key);
        let out = d.tick(ing.store_mut(), noon + 1_000).unwrap();
        assert_eq!(out.len(), 1, "one RunJob");
        let id = dev.key.device_id();
        assert_eq!(out[0].topic, topics::device(&id, Leaf::Cmd));
        let env = Envelope::decode(&out[0].payload).unwrap();
        env.verify(&key.public()).unwrap();
        let cmd: Command = env.open().unwrap();
        match &cmd.body {
            CommandBody::RunJob(spec) => {
                assert_eq!(spec.id, job);
                assert_eq!(spec.input_sizes, vec![3]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state(&ing, job), Some(JobState::Scheduled));
        assert_eq!(ing.store().job_lease(job).unwrap().unwrap().device, id);
        // Nothing more to send while it runs.
        assert!(d.tick(ing.store_mut(), noon + 2_000).unwrap().is_empty());
        // Its receipt arrives through ingest.
        let topic = format!("{PREFIX}{id}/records");
        let r = receipt(&mut dev, job, noon + 3_000, JobOutcome::Completed);
        ing.handle(&[(topic, r.into_bytes())], noon + 3_000)
            .unwrap();
        d.tick(ing.store_mut(), noon + 4_000).unwrap();
        assert_eq!(state(&ing, job), None, "no longer open");
        let history: Vec<JobState> = ing
            .store()
            .job_history(job)
            .unwrap()
            .iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            history,
            vec![
                JobState::Queued,
                JobState::Scheduled,
                JobState::Running,
                JobState::Done
            ]
        );
        assert_eq!(
            ing.store().job_lease(job).unwrap().map(|l| l.device),
            Some(id),
            "where it ran stays known"
        );
    }

    #[test]
    fn a_job_whose_device_falls_silent_past_the_grace_is_cancelled_there_and_sent_to_another() {
        let noon = SAMPLE_START.0 + 12 * 3_600_000;
        let (mut ing, first, job, key) = fleet(noon);
        // A second rig, as sunny.
        let mut second = SampleDevice::new(9);
        let topic = |d: &SampleDevice, leaf: &str| format!("{PREFIX}{}/{leaf}", d.key.device_id());
        let mut msgs = vec![(topic(&second, "hello"), second.hello().into_bytes())];
        let mut at = SAMPLE_START.0;
        while at <= noon {
            msgs.push((topic(&second, "records"), second.record_at(at).into_bytes()));
            at += 600_000;
        }
        ing.handle(&msgs, noon).unwrap();
        let mut d = dispatcher(&key);
        let out = d.tick(ing.store_mut(), noon + 1_000).unwrap();
        assert_eq!(out.len(), 1);
        let placed: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
        let (gone, other) = if placed.device == first.key.device_id() {
            (first.key.device_id(), second)
        } else {
            (second.key.device_id(), first)
        };
        let mut other = other;
        // The other rig keeps reporting; the one with the job falls silent.
        let grace = SchedulerConfig::default().lease_grace_ms;
        let mut t = noon + 1_000;
        let mut revoked = Vec::new();
        while t < noon + grace + 10 * 60_000 {
            t += 60_000;
            let r = other.record_at(t);
            ing.handle(&[(topic(&other, "records"), r.into_bytes())], t)
                .unwrap();
            revoked.extend(d.tick(ing.store_mut(), t).unwrap());
            if !revoked.is_empty() {
                break;
            }
        }
        assert!(
            t > noon + grace,
            "not revoked within the grace: {} min",
            (t - noon) / 60_000
        );
        let commands: Vec<Command> = revoked
            .iter()
            .map(|o| Envelope::decode(&o.payload).unwrap().open().unwrap())
            .collect();
        assert!(
            commands
                .iter()
                .any(|c| c.device == gone && c.body == CommandBody::Cancel { job }),
            "{commands:?}"
        );
        assert!(
            commands.iter().any(|c| c.device == other.key.device_id()
                && matches!(&c.body, CommandBody::RunJob(s) if s.id == job)),
            "placed again on the other rig: {commands:?}"
        );
        assert_eq!(
            ing.store().job_lease(job).unwrap().map(|l| l.device),
            Some(other.key.device_id())
        );
        let reasons: Vec<String> = ing
            .store()
            .job_history(job)
            .unwrap()
            .iter()
            .map(|e| e.reason.clone())
            .collect();
        assert!(reasons.iter().any(|r| r.contains("silent")), "{reasons:?}");
    }

    #[test]
    fn a_refused_job_is_queued_again_and_not_sent_back_to_the_device_that_refused_it() {
        let noon = SAMPLE_START.0 + 12 * 3_600_000;
        let (mut ing, mut dev, job, key) = fleet(noon);
        let mut d = dispatcher(&key);
        assert_eq!(d.tick(ing.store_mut(), noon + 1_000).unwrap().len(), 1);
        let id = dev.key.device_id();
        let r = receipt(
            &mut dev,
            job,
            noon + 2_000,
            JobOutcome::Refused("the budget cannot pay for it".into()),
        );
        ing.handle(
            &[(format!("{PREFIX}{id}/records"), r.into_bytes())],
            noon + 2_000,
        )
        .unwrap();
        let out = d.tick(ing.store_mut(), noon + 3_000).unwrap();
        assert!(out.is_empty(), "the only device refused it: {out:?}");
        assert_eq!(state(&ing, job), Some(JobState::Queued));
        let last = ing.store().job_history(job).unwrap().pop().unwrap();
        assert!(last.reason.contains("refused"), "{}", last.reason);
    }

    #[test]
    fn a_job_the_buyer_cancels_while_placed_is_cancelled_on_its_device() {
        let noon = SAMPLE_START.0 + 12 * 3_600_000;
        let (mut ing, dev, job, key) = fleet(noon);
        let mut d = dispatcher(&key);
        assert_eq!(d.tick(ing.store_mut(), noon + 1_000).unwrap().len(), 1);
        let t = JobState::Scheduled
            .transition(JobState::Cancelled, noon + 1_500, "by its buyer")
            .unwrap();
        assert!(ing.store_mut().apply_transition(job, &t).unwrap());
        let out = d.tick(ing.store_mut(), noon + 2_000).unwrap();
        assert_eq!(out.len(), 1);
        let cmd: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
        assert_eq!(cmd.device, dev.key.device_id());
        assert_eq!(cmd.body, CommandBody::Cancel { job });
        assert_eq!(ing.store().job_lease(job).unwrap(), None);
    }
}
