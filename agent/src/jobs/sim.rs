//! Jobs on the simulated rig with a simulated clock: the real [`Simulator`], [`Meter`],
//! [`Governor`] and [`Execution`], the real compute (CPU backend) for each chunk, and a
//! model of the GPU's draw (full power while a chunk runs, nothing while it rests). Hours
//! of sun, cloud and night run in seconds, deterministically; the governor tests and the
//! `jobs_bench` example use it.

use attest::msg::{ChannelKind, JobOutcome, JobReceipt, JobSpec, Link, TrustTier};
use attest::{Envelope, Hash32, KeyPair, SeqNo, TimestampMs};

use super::exec::{Execution, Step};
use super::{ComputeBackend, JobError};
use crate::governor::{Decision, Governor, GovernorConfig, PowerNow, admit_job};
use crate::meter::Meter;
use crate::power::simulator::{CHANNELS, Simulator, SimulatorConfig};
use crate::power::{PowerSource, Sample};
use crate::site::SiteConfig;

/// One meter sample as the simulation saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePoint {
    /// Time, ms.
    pub t: u64,
    /// The job's mean draw over the sample interval (what the GPU channel measured), W.
    pub job_w: f64,
    /// The budget the governor held it to over that interval, W.
    pub budget_w: f64,
    /// Solar power, W.
    pub solar_w: f64,
    /// Battery above reserve, Wh.
    pub battery_above_reserve_wh: f64,
    /// Whether the job was paused.
    pub paused: bool,
}

/// How a simulated job went.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The signed receipt.
    pub receipt: JobReceipt,
    /// Its envelope.
    pub envelope: Envelope,
    /// The job's outputs (when completed).
    pub outputs: Vec<Vec<u8>>,
    /// The model's job energy (full power x running time), millijoules.
    pub modelled_mj: u64,
}

/// The simulated rig and clock.
pub struct SimRig {
    /// The rig.
    pub sim: Simulator,
    /// The meter over its channels.
    pub meter: Meter,
    /// The governor.
    pub governor: Governor,
    key: KeyPair,
    site: SiteConfig,
    /// The simulated time, ms.
    pub now: u64,
    /// Meter sample interval, ms.
    pub sample_ms: u64,
    /// Record interval, ms.
    pub record_ms: u64,
    /// The GPU's true draw at full speed, W.
    pub job_power_w: f64,
    /// The simulated GPU's speed, work units per second.
    pub work_per_s: f64,
    /// Every chain message sealed (records and receipts), in order.
    pub chain: Vec<Envelope>,
    /// Every sample while a job was active.
    pub trace: Vec<TracePoint>,
    busy_ms: u64,
    decision: Decision,
    last_lever: f64,
    last_ran: f64,
    last_record_slot: u64,
    remaining_s: f64,
    job_active: bool,
}

impl SimRig {
    /// A rig at `site` starting at `start_ms`.
    pub fn new(
        site: SiteConfig,
        sim: SimulatorConfig,
        governor: GovernorConfig,
        start_ms: u64,
        job_power_w: f64,
        work_per_s: f64,
    ) -> SimRig {
        let kinds: Vec<(ChannelKind, TrustTier)> = CHANNELS
            .iter()
            .map(|(_, k)| (*k, TrustTier::SoftwareEstimate))
            .collect();
        let mut rig = SimRig {
            sim: Simulator::new(sim, &site),
            meter: Meter::new(&kinds, None),
            governor: Governor::new(governor, vec![]),
            key: KeyPair::from_seed(&[0x51; 32]),
            site,
            now: start_ms,
            sample_ms: 50,
            record_ms: 1_000,
            job_power_w,
            work_per_s,
            chain: Vec::new(),
            trace: Vec::new(),
            busy_ms: 0,
            decision: Decision::default(),
            last_lever: 1.0,
            last_ran: 0.0,
            last_record_slot: start_ms / 1_000,
            remaining_s: 0.0,
            job_active: false,
        };
        rig.sample();
        rig.record();
        rig
    }

    /// The device key that signs the simulated chain.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    fn power_now(&self) -> PowerNow {
        // No other GPU work on the simulated rig: the whole GPU channel is the job's.
        PowerNow::from_meter(
            &self.meter,
            self.site.battery_wh,
            self.site.battery_reserve_wh,
            0.0,
        )
    }

    fn sample(&mut self) {
        let ran = (self.busy_ms as f64 / self.sample_ms as f64).min(1.0);
        self.busy_ms = 0;
        self.sim.extra_load_w = self.job_power_w * ran * self.last_lever;
        let samples: Vec<Option<Sample>> = self.sim.sample(self.now).unwrap_or_default();
        for (c, s) in samples.into_iter().enumerate() {
            self.meter.feed(c, self.now, s);
        }
        if self.job_active {
            let p = self.power_now();
            self.trace.push(TracePoint {
                t: self.now,
                job_w: self.sim.extra_load_w,
                budget_w: self.decision.budget.total_w,
                solar_w: p.solar_w,
                battery_above_reserve_wh: p.battery_above_reserve_wh,
                paused: self.decision.pause,
            });
            let d = self
                .governor
                .update(&p, self.remaining_s, ran, self.last_lever);
            self.last_lever = d.lever_fraction;
            self.decision = d;
        }
        self.last_ran = ran;
        let slot = self.now / self.record_ms;
        if slot > self.last_record_slot {
            self.last_record_slot = slot;
            self.record();
        }
    }

    /// Seals and commits a record now (unless one was sealed at this very millisecond).
    pub fn record(&mut self) {
        if self.meter.state().head.last_timestamp.0 == self.now {
            return;
        }
        let (rec, env) = self.meter.seal(self.now, &self.key);
        self.meter.commit(&rec, &env);
        self.chain.push(env);
    }

    /// Advances the clock to `to`, the GPU busy or not meanwhile, sampling on the way.
    pub fn advance(&mut self, to: u64, busy: bool) {
        while self.now < to {
            let next_sample = (self.now / self.sample_ms + 1) * self.sample_ms;
            let end = to.min(next_sample);
            if busy {
                self.busy_ms += end - self.now;
            }
            self.now = end;
            if self.now == next_sample {
                self.sample();
            }
        }
    }

    /// Runs one job to its end: admission, then chunks under the governor, then a signed
    /// receipt whose counters come from records sealed at its start and end.
    pub fn run_job(
        &mut self,
        backend: &ComputeBackend,
        spec: JobSpec,
        inputs: Vec<Vec<u8>>,
        chunk_work: u64,
    ) -> Result<SimOutcome, JobError> {
        let job = backend.prepare(&spec.workload, None, inputs, &spec.output_sizes, chunk_work)?;
        let kinds = super::RECEIPT_KINDS;
        self.record();
        let started = self.now;
        let start_counters = self.meter.snapshot(&kinds);
        let full_s = job.work_units() as f64 / self.work_per_s;
        let backend_kind = job.backend().clone();
        let admitted = admit_job(
            &self.governor,
            &self.power_now(),
            &spec.limits,
            full_s,
            self.now,
        );
        let (outcome, outputs, output_hash, chunks, pauses, modelled_mj) = match admitted {
            Err(r) => (
                JobOutcome::Refused(r.to_string()),
                Vec::new(),
                Hash32::ZERO,
                0,
                0,
                0,
            ),
            Ok(_) => {
                let mut exec = Execution::new(spec.clone(), job, self.now, self.work_per_s);
                self.job_active = true;
                self.remaining_s = exec.remaining_s();
                self.decision =
                    self.governor
                        .update(&self.power_now(), self.remaining_s, 0.0, self.last_lever);
                let gpu_at_start = self.meter.energy_mj(ChannelKind::Gpu);
                let mut busy_total_ms = 0u64;
                let outcome = loop {
                    self.remaining_s = exec.remaining_s();
                    let used = self.meter.energy_mj(ChannelKind::Gpu) - gpu_at_start;
                    match exec.next(self.now, &self.decision, used) {
                        Step::RunChunk(i) => {
                            exec.run_chunk(i)?;
                            let dur = ((exec.chunk_work_units(i) as f64 / self.work_per_s) * 1000.0)
                                .round()
                                .max(1.0) as u64;
                            let (t0, duty) = (self.now, self.decision.duty);
                            self.advance(t0 + dur, true);
                            busy_total_ms += dur;
                            exec.chunk_ran(i, t0, self.now, duty);
                        }
                        Step::WaitUntil(t) => self.advance(t.max(self.now + 1), false),
                        Step::Finished(o) => break o,
                    }
                };
                self.job_active = false;
                let (chunks, pauses) = (exec.chunks_done(), exec.pauses);
                let (outcome, outputs, hash) = exec.finish(outcome);
                let modelled = (self.job_power_w * busy_total_ms as f64) as u64;
                (outcome, outputs, hash, chunks, pauses, modelled)
            }
        };
        // The end record: the job's power has left the meter's integration by now.
        self.advance(self.now + self.sample_ms, false);
        self.record();
        let receipt = JobReceipt {
            link: Link {
                device: self.key.device_id(),
                seq: SeqNo(0),
                timestamp: TimestampMs(0),
                prev: Hash32::ZERO,
            },
            job: spec.id,
            outcome,
            output_hash,
            started: TimestampMs(started),
            ended: TimestampMs(self.now),
            start_counters,
            end_counters: self.meter.snapshot(&kinds),
            chunks,
            pauses,
            backend: backend_kind,
            tier: TrustTier::SoftwareEstimate,
        };
        let envelope = self.meter.seal_receipt(receipt, self.now, &self.key);
        let receipt: JobReceipt = envelope.open().expect("just sealed");
        self.meter.commit_link(&receipt.link, &envelope);
        self.chain.push(envelope.clone());
        Ok(SimOutcome {
            receipt,
            envelope,
            outputs,
            modelled_mj,
        })
    }
}
