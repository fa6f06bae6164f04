//! The running agent's job side: carries out what the job [`Desk`] decides. It spawns the
//! preparation and runner threads, writes and removes the running-job marker, seals
//! receipts into the chain and the outbox, steps the governor on every meter sample, and
//! publishes job events.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use attest::msg::{Backend, JobId, JobSpec};
use attest::{Envelope, TimestampMs};
use rumqttc::{AsyncClient, QoS};

use super::agent::Agent;
use super::files;
use crate::config::AgentConfig;
use crate::jobs::desk::{Desk, Ended, Intake, Marker, ReceiptOrder, Running};
use crate::jobs::runner::{Control, Finished, Handle};
use crate::jobs::{ComputeBackend, PreparedJob};
use crate::status::{JobsStatus, RunningStatus, backend_name};

/// First throughput guesses (work units per second) for admission, before any chunk has
/// run: deliberately modest; every chunk refines them.
const CPU_WORK_PER_S: f64 = 2e9;
const GPU_WORK_PER_S: f64 = 1e12;

/// A job's inputs fetched and checked, and the job prepared on its backend (or why not).
/// A job prepared on its thread, with the marker it resumes from after a restart.
type Prepared = (JobSpec, Result<PreparedJob, String>, Option<Marker>);

/// The runtime's link to a running job's thread, and the governor loop's memory of it.
pub(super) struct RunnerLink {
    handle: Handle,
    gpu_at_start_mj: u64,
    gpu_baseline_w: f64,
    last_busy_ms: u64,
    last_tick_ms: u64,
}

/// The agent's job side.
pub(super) struct Jobs {
    backend: ComputeBackend,
    cpu_fallback: Option<String>,
    governor: crate::governor::Governor,
    pub(super) desk: Desk<RunnerLink>,
    done_tx: mpsc::Sender<(JobId, Finished)>,
    done_rx: mpsc::Receiver<(JobId, Finished)>,
    job_load: Arc<crate::power::JobLoad>,
    simulated: bool,
    prepared_tx: mpsc::Sender<Prepared>,
    prepared_rx: mpsc::Receiver<Prepared>,
    /// How jobs run in a worker process (`jobs.isolate`), or why they cannot (every job is
    /// then refused with the reason: a buyer's code never runs as root).
    worker: Option<Result<crate::jobs::worker::WorkerCommand, String>>,
    /// Each job's `job.run` span, from its `RunJob` to its receipt, in the job's trace
    /// (`heliostat_telemetry::job_context`): exported when it ends, if spans are.
    run_spans: std::collections::HashMap<JobId, tracing::Span>,
}

impl Jobs {
    /// The backend, the governor with its hardware levers, and an idle desk.
    pub(super) fn open(
        cfg: &AgentConfig,
        job_load: Arc<crate::power::JobLoad>,
        simulated: bool,
    ) -> Jobs {
        let (backend, cpu_fallback) =
            crate::jobs::select_backend(cfg.jobs.enabled && cfg.jobs.prefer_gpu);
        if let Some(why) = &cpu_fallback {
            tracing::warn!(reason = %why, "jobs run on the CPU");
        }
        let mut levers: Vec<Box<dyn crate::governor::Lever>> = Vec::new();
        if let Some(i) = cfg.jobs.nvml_power_limit_gpu {
            match crate::levers::NvmlLimitLever::open(i) {
                Ok(l) => levers.push(Box::new(l)),
                Err(e) => tracing::warn!(error = %e, "no NVML power-limit lever"),
            }
        }
        if let Some(d) = &cfg.jobs.devfreq_dir {
            match crate::levers::DevfreqLever::open(d) {
                Ok(l) => levers.push(Box::new(l)),
                Err(e) => tracing::warn!(dir = %d.display(), error = %e, "no devfreq lever"),
            }
        }
        let governor = crate::governor::Governor::new(cfg.jobs.governor(), levers);
        let (done_tx, done_rx) = mpsc::channel();
        let (prepared_tx, prepared_rx) = mpsc::channel();
        let worker = cfg
            .jobs
            .isolate
            .then(|| super::prepare::worker_command(cfg));
        match &worker {
            Some(Ok(w)) => {
                tracing::info!(program = %w.program.display(), user = ?w.user, "jobs run in a worker process")
            }
            Some(Err(why)) => {
                tracing::error!(reason = %why, "jobs cannot be isolated: every job is refused")
            }
            None => tracing::warn!(
                "jobs.isolate is off: a buyer's kernel runs inside the agent, beside the device key"
            ),
        }
        Jobs {
            worker,
            desk: Desk::new(cfg.jobs.enabled, backend.kind()),
            backend,
            cpu_fallback,
            governor,
            done_tx,
            done_rx,
            job_load,
            simulated,
            prepared_tx,
            prepared_rx,
            run_spans: std::collections::HashMap::new(),
        }
    }

    /// The jobs part of the status at start.
    pub(super) fn status(&self, cfg: &AgentConfig) -> JobsStatus {
        JobsStatus {
            enabled: cfg.jobs.enabled,
            backend: backend_name(&self.backend.kind()),
            cpu_fallback: self.cpu_fallback.clone(),
            levers: self
                .governor
                .lever_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            grid_allowance_w: cfg.jobs.grid_allowance_w,
            hard_cap_w: cfg.jobs.hard_cap_w,
            job_power_w: cfg.jobs.power_w,
            min_duty: cfg.jobs.min_duty,
            ..JobsStatus::default()
        }
    }
}

impl Agent {
    /// A job that was running when the agent died gets its receipt now: `Failed`, with the
    /// counters from its start to this restart (every started job ends in a receipt).
    pub(super) fn close_interrupted_job(&mut self, now: u64) {
        let Some(marker) = files::read_marker(&self.cfg.data_dir) else {
            return;
        };
        match marker {
            // Killed between storing its receipt and removing the marker: done already.
            Ok(m) if self.last_stored_receipt_is_for(m.job) => {}
            Ok(m) => {
                // With its checkpoint, before its deadline: it goes on from there.
                let checkpoint = files::read_checkpoint(&self.cfg.data_dir, m.job);
                if let (Some(spec), Some((done, outputs)), true) = (
                    m.spec.clone(),
                    checkpoint,
                    self.cfg.jobs.enabled
                        && now < m.spec.as_ref().map_or(0, |s| s.limits.deadline.0),
                ) {
                    tracing::warn!(job = %m.job, chunks_done = done, "a job was interrupted by a restart; resuming it from its checkpoint");
                    self.jobs.desk.resuming(m.job);
                    self.prepare_job(spec, Some((m, done, outputs)), now);
                    return;
                }
                tracing::warn!(job = %m.job, "a job was interrupted by a restart; closing it");
                self.jobs.desk.marked(m.job);
                self.store_receipt(ReceiptOrder::interrupted(m), now);
            }
            Err(e) => tracing::error!(error = %e, "unreadable running-job marker; removed"),
        }
        files::remove_marker(&self.cfg.data_dir);
        self.jobs.desk.unmark();
    }

    /// Whether the newest message in the outbox is a receipt for `job`.
    fn last_stored_receipt_is_for(&self, job: JobId) -> bool {
        self.outbox
            .last_seq()
            .and_then(|s| self.outbox.read(s).ok().flatten())
            .and_then(|b| Envelope::decode(&b).ok())
            .and_then(|e| e.open::<attest::msg::JobReceipt>().ok())
            .is_some_and(|r| r.job == job)
    }

    /// Names `marker.job` in the running-job marker file: from here until its receipt is
    /// stored, a restart closes the job with a receipt of its own.
    pub(super) fn mark_job(&mut self, marker: &Marker) {
        match files::write_marker(&self.cfg.data_dir, marker) {
            Ok(()) => self.jobs.desk.marked(marker.job),
            Err(e) => tracing::warn!(error = %e, "could not write the running-job marker"),
        }
    }

    fn receipt_tier(&self) -> attest::msg::TrustTier {
        self.channel_infos
            .iter()
            .filter(|c| crate::jobs::RECEIPT_KINDS.contains(&c.kind))
            .map(|c| c.tier)
            .min()
            .unwrap_or(attest::msg::TrustTier::SoftwareEstimate)
    }

    /// Seals a job receipt into the chain and the outbox (sent and acknowledged like any
    /// record).
    pub(super) fn store_receipt(&mut self, order: ReceiptOrder, now: u64) {
        if let attest::msg::JobOutcome::Refused(why) = &order.outcome {
            tracing::warn!(job = %order.job, reason = %why, "job refused");
        }
        let run = self.jobs.run_spans.remove(&order.job).unwrap_or_else(|| {
            let span =
                tracing::info_span!("job.run", job = %order.job, outcome = tracing::field::Empty);
            heliostat_telemetry::in_job(&span, &order.job.0);
            span
        });
        run.record("outcome", tracing::field::debug(&order.outcome));
        let _receipt = tracing::info_span!(parent: &run, "job.receipt", job = %order.job).entered();
        self.force_record(now);
        let end_counters = self.meter.snapshot(&crate::jobs::RECEIPT_KINDS);
        let start_counters = if order.start_counters.is_empty() {
            end_counters.clone()
        } else {
            order.start_counters.clone()
        };
        let receipt = attest::msg::JobReceipt {
            link: attest::msg::Link {
                device: self.key.device_id(),
                seq: attest::SeqNo(0),
                timestamp: TimestampMs(0),
                prev: attest::Hash32::ZERO,
            },
            job: order.job,
            outcome: order.outcome.clone(),
            output_hash: order.output_hash,
            started: TimestampMs(order.started_ms.min(now)),
            ended: TimestampMs(now).max(self.meter.state().head.last_timestamp),
            start_counters,
            end_counters,
            chunks: order.chunks,
            pauses: order.pauses,
            backend: order.backend.clone(),
            tier: self.receipt_tier(),
        };
        let env = self.meter.seal_receipt(receipt, now, &self.key);
        let Ok(sealed) = env.open::<attest::msg::JobReceipt>() else {
            tracing::error!("a receipt did not reopen; not stored");
            return;
        };
        let seq = sealed.link.seq;
        match self.outbox.append(seq, env.as_bytes()) {
            Ok(()) => {
                self.meter.commit_link(&sealed.link, &env);
                if let Err(e) = files::save_state(&self.cfg.data_dir, self.meter.state()) {
                    tracing::error!(error = %e, "saving chain state failed");
                }
                // Only now, with the receipt durable, may the marker go.
                if self.jobs.desk.receipt_stored(order.job) {
                    files::remove_marker(&self.cfg.data_dir);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, job = %order.job, "RECEIPT NOT STORED: outbox refused it");
            }
        }
        self.jobs.desk.receipt_sealed(&order, seq);
        self.status.count_outcome(&order.outcome);
        tracing::info!(job = %order.job, outcome = ?order.outcome, chunks = order.chunks, pauses = order.pauses, seq = seq.0, "job receipt stored");
        self.write_status(now);
    }

    /// A verified `RunJob`: refused at once, or marked and prepared on a thread of its own.
    pub(super) fn start_job(&mut self, spec: JobSpec, now: u64) {
        let span = tracing::info_span!("job.run", job = %spec.id, outcome = tracing::field::Empty);
        heliostat_telemetry::in_job(&span, &spec.id.0);
        self.jobs.run_spans.insert(spec.id, span);
        let marker = match self.jobs.desk.run_job(&spec, now) {
            Intake::Prepare(m) => m,
            Intake::Refuse(refusal) => return self.store_receipt(refusal, now),
        };
        self.mark_job(&marker);
        self.prepare_job(spec, None, now);
    }

    /// Fetches a job's inputs and prepares it on a thread of its own; `resume`: the marker
    /// of a job interrupted by a restart, continued from its checkpoint.
    fn prepare_job(
        &mut self,
        spec: JobSpec,
        resume: Option<(Marker, u32, Vec<Vec<u8>>)>,
        now: u64,
    ) {
        let id = spec.id;
        let preparer = match self.preparer(&spec) {
            Ok(p) => p,
            Err(why) => {
                let refusal = self.jobs.desk.refuse(id, why, now);
                return self.store_receipt(refusal, now);
            }
        };
        let tx = self.jobs.prepared_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("job-prepare".into())
            .spawn(move || {
                let mut r = preparer.prepare();
                let marker = match (resume, &mut r) {
                    (Some((marker, done, outputs)), Ok(job)) => {
                        if let Err(e) = job.restore(done, outputs) {
                            r = Err(format!("resuming from the checkpoint: {e}"));
                        }
                        Some(marker)
                    }
                    (resume, _) => resume.map(|(m, _, _)| m),
                };
                let _ = tx.send((spec, r, marker));
            });
        if let Err(e) = spawned {
            let refusal = self
                .jobs
                .desk
                .refuse(id, format!("cannot start preparing: {e}"), now);
            self.store_receipt(refusal, now);
        }
    }

    /// How to prepare `spec` here (an error: the agent cannot run jobs as configured).
    fn preparer(&self, spec: &JobSpec) -> Result<super::prepare::Preparer, String> {
        Ok(super::prepare::Preparer {
            spec: spec.clone(),
            backend: self.jobs.backend.clone(),
            dir: self
                .cfg
                .jobs
                .blob_dir
                .clone()
                .unwrap_or_else(|| self.cfg.data_dir.join("blobs")),
            url: self.cfg.jobs.blob_url.clone(),
            token_file: self.cfg.jobs.blob_token_file.clone(),
            limits: super::blobs::BlobLimits {
                cache_max_bytes: self.cfg.jobs.blob_cache_max_bytes,
                disk_reserve_bytes: self.cfg.outbox.max_bytes,
            },
            worker: match &self.jobs.worker {
                None => None,
                Some(Ok(w)) => Some(w.clone()),
                Some(Err(why)) => return Err(why.clone()),
            },
        })
    }

    /// Admission and start, once the inputs are in and the job is prepared.
    fn start_prepared(
        &mut self,
        spec: JobSpec,
        job: PreparedJob,
        resumed: Option<Marker>,
        now: u64,
    ) {
        let id = spec.id;
        let work_per_s = match job.backend() {
            Backend::Cpu => CPU_WORK_PER_S,
            Backend::Cuda(_) => GPU_WORK_PER_S,
        };
        let full_s = job.work_units() as f64 / work_per_s;
        let power = self.power_now(0.0);
        let b = match crate::governor::admit_job(
            &self.jobs.governor,
            &power,
            &spec.limits,
            full_s,
            now,
        ) {
            Ok(b) => b,
            Err(r) => {
                let refusal = self.jobs.desk.refuse(id, r.to_string(), now);
                return self.store_receipt(refusal, now);
            }
        };
        self.force_record(now);
        // A resumed job keeps its start: its receipt covers it from its first chunk, on
        // the counters of the record sealed then.
        let (started_ms, start_counters) = match &resumed {
            Some(m) => (m.started_ms, m.start_counters.clone()),
            None => (now, self.meter.snapshot(&crate::jobs::RECEIPT_KINDS)),
        };
        let gpu_baseline_w = self.meter.power_w(attest::msg::ChannelKind::Gpu);
        let decision = self.jobs.governor.update(&power, full_s, 0.0, 1.0);
        self.mark_job(&Marker {
            job: id,
            started_ms,
            start_counters: start_counters.clone(),
            chunks_done: job.chunks_done(),
            backend: job.backend().clone(),
            spec: Some(spec.clone()),
        });
        let tx = self.jobs.done_tx.clone();
        let sim = self
            .jobs
            .simulated
            .then(|| (self.jobs.job_load.clone(), self.cfg.jobs.simulated_gpu_w));
        let data = self.cfg.data_dir.clone();
        let checkpoint = crate::jobs::runner::Checkpointer {
            every: std::time::Duration::from_millis(self.cfg.jobs.checkpoint_every_ms),
            save: Box::new(move |done, outputs| {
                files::write_checkpoint(&data, id, done, &outputs).map_err(|e| e.to_string())
            }),
        };
        // A job paused for long lets its worker go; prepared again from its checkpoint
        // when it may run.
        let release = match (self.cfg.jobs.release_after_pause_ms, self.preparer(&spec)) {
            (0, _) | (_, Err(_)) => None,
            (ms, Ok(p)) => {
                let data = self.cfg.data_dir.clone();
                Some(crate::jobs::runner::Release {
                    after: std::time::Duration::from_millis(ms),
                    take_over: Box::new(move || p.prepare_from_checkpoint(&data)),
                })
            }
        };
        let exec = crate::jobs::exec::Execution::new(spec, job, now, work_per_s);
        let chunks = exec.chunk_count();
        match crate::jobs::runner::spawn(exec, decision, sim, Some(checkpoint), release, move |f| {
            let _ = tx.send((id, f));
        }) {
            Ok(handle) => {
                let control = handle.control.clone();
                let link = RunnerLink {
                    handle,
                    gpu_at_start_mj: self.meter.energy_mj(attest::msg::ChannelKind::Gpu),
                    gpu_baseline_w,
                    last_busy_ms: 0,
                    last_tick_ms: now,
                };
                let running = Running {
                    job: id,
                    started_ms,
                    start_counters,
                    handle: link,
                };
                for c in self.jobs.desk.started(running, chunks, b.total_w) {
                    let _ = control.send(c);
                }
                tracing::info!(job = %id, chunks, budget_w = b.total_w, "job started");
                self.status.jobs.decision = Some(decision);
            }
            Err(e) => {
                let why = format!("cannot start the job thread: {e}");
                let refusal = self.jobs.desk.refuse(id, why, now);
                self.store_receipt(refusal, now);
            }
        }
    }

    /// A verified pause, resume or cancel.
    pub(super) fn control_job(&mut self, job: JobId, c: Control) {
        match self.jobs.desk.control(job, c) {
            Ok(None) => {}
            Ok(Some(c)) => {
                if let Some(r) = self.jobs.desk.running() {
                    let _ = r.handle.handle.control.send(c);
                }
                tracing::info!(job = %job, control = ?c, "job control");
            }
            Err(why) => self.reject_command(why),
        }
    }

    /// A verified `Drain`.
    pub(super) fn drain(&mut self) {
        self.jobs.desk.drain();
        self.status.jobs.draining = true;
        tracing::info!("draining: no new jobs; the running one finishes");
    }

    /// What the meter says now, with the job's share above `gpu_baseline_w`.
    fn power_now(&self, gpu_baseline_w: f64) -> crate::governor::PowerNow {
        let site = &self.cfg.site;
        crate::governor::PowerNow::from_meter(
            &self.meter,
            site.battery_wh,
            site.battery_reserve_wh,
            gpu_baseline_w,
        )
    }

    /// On every meter sample: the governor's step for the running job, and any job that
    /// finished.
    pub(super) fn tick_jobs(&mut self, now: u64) {
        while let Ok((spec, prepared, resumed)) = self.jobs.prepared_rx.try_recv() {
            let failure = prepared.as_ref().err().cloned();
            match self.jobs.desk.prepared(spec.id, failure, now) {
                Some(closing) => self.store_receipt(closing, now),
                None => {
                    if let Ok(job) = prepared {
                        self.start_prepared(spec, job, resumed, now);
                    }
                }
            }
        }
        while let Ok((id, f)) = self.jobs.done_rx.try_recv() {
            let ended = Ended {
                outcome: f.outcome,
                output_hash: f.output_hash,
                chunks: f.chunks,
                pauses: f.pauses,
                backend: f.backend,
            };
            let Some((order, _link)) = self.jobs.desk.finished(id, ended) else {
                continue;
            };
            self.jobs.governor.release();
            self.store_receipt(order, now);
            if !f.outputs.is_empty() {
                let dir = self.cfg.data_dir.join("jobs").join(id.to_string());
                let written = std::fs::create_dir_all(&dir).and_then(|_| {
                    f.outputs
                        .iter()
                        .enumerate()
                        .try_for_each(|(i, o)| std::fs::write(dir.join(format!("out{i}.bin")), o))
                });
                if let Err(e) = written {
                    tracing::error!(job = %id, error = %e, "writing job outputs failed");
                }
                if let Some(url) = &self.cfg.jobs.blob_url {
                    super::blobs::upload_outputs(
                        url,
                        self.cfg.jobs.blob_token_file.as_deref(),
                        id,
                        f.outputs.clone(),
                    );
                }
                let jobs_dir = self.cfg.data_dir.join("jobs");
                for gone in files::prune_oldest(&jobs_dir, self.cfg.jobs.outputs_kept) {
                    tracing::info!(outputs = %gone, "older job outputs removed");
                }
            }
            self.status.jobs.running = None;
        }
        let Some(r) = self.jobs.desk.running_mut() else {
            return;
        };
        let (job, started_ms) = (r.job, r.started_ms);
        let l = &mut r.handle;
        let sh = l.handle.shared.clone();
        let busy = sh.busy_ms.load(Ordering::Relaxed);
        let dt = now.saturating_sub(l.last_tick_ms).max(1);
        let ran = ((busy - l.last_busy_ms) as f64 / dt as f64).min(1.0);
        l.last_busy_ms = busy;
        l.last_tick_ms = now;
        let remaining_s = sh.remaining_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let baseline = l.gpu_baseline_w;
        let at_start = l.gpu_at_start_mj;
        let running = RunningStatus {
            job: job.to_string(),
            started_ms,
            chunks_done: sh.chunks_done.load(Ordering::Relaxed),
            chunks: l.handle.chunk_count,
            paused: sh.paused.load(Ordering::Relaxed) == 1,
            released: sh.released.load(Ordering::Relaxed) == 1,
        };
        let p = self.power_now(baseline);
        let lever = self.status.jobs.decision.map_or(1.0, |d| d.lever_fraction);
        let d = self.jobs.governor.update(&p, remaining_s, ran, lever);
        *sh.decision.lock().unwrap_or_else(|e| e.into_inner()) = d;
        sh.energy_mj.store(
            self.meter
                .energy_mj(attest::msg::ChannelKind::Gpu)
                .saturating_sub(at_start),
            Ordering::Relaxed,
        );
        self.status.jobs.decision = Some(d);
        self.status.jobs.running = Some(running);
    }

    /// Publishes job events and, while a job runs, its progress once a second.
    pub(super) fn publish_jobs(&mut self, client: &AsyncClient, now: u64) {
        if !self.status.link.connected {
            return;
        }
        let progress = self.status.jobs.running.as_ref().and_then(|r| {
            Some(attest::live::JobEvent::Progress {
                job: attest::msg::JobId(attest::hex::decode_array(&r.job).ok()?),
                chunks_done: r.chunks_done,
                chunks: r.chunks,
                paused: r.paused,
                decision: serde_json::to_value(self.status.jobs.decision).ok(),
            })
        });
        for e in self.jobs.desk.take_events(now, progress) {
            let Ok(text) = serde_json::to_string(&e) else {
                continue;
            };
            let _ = client.try_publish(&self.topics.jobs, QoS::AtMostOnce, false, text);
        }
    }
}
