//! The running agent: samples the sources, seals records into the outbox, and keeps the
//! MQTT link (rumqttc) publishing whatever the controller has not acknowledged.
//!
//! One task owns all the state (meter, outbox, send queue) and reacts to three clocks and
//! one channel: the sample tick, the send tick, the link's events (the MQTT event loop runs
//! in its own task and forwards events), and shutdown. Nothing here blocks for long: source
//! reads are small sysfs or in-memory reads, outbox appends are one write and one fsync.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use attest::msg::{
    Ack, ChannelInfo, Command, CommandBody, Hardware, Hello, MeterRecord, RestartReason, Site,
};
use attest::{Envelope, KeyPair, PublicKey, TimestampMs};
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AgentConfig;
use crate::jobs::runner::Control;
use crate::meter::{ChainState, Meter};
use crate::outbox::{Outbox, OutboxError};
use crate::power::PowerSource;
use crate::sender::{Plan, SendPolicy, SendQueue};

/// How often the hello is repeated until the first ack after connecting.
const HELLO_REPEAT_MS: u64 = 3_000;

/// First throughput guesses (work units per second) for admission, before any chunk has
/// run: deliberately modest; every chunk refines them.
const CPU_WORK_PER_S: f64 = 2e9;
const GPU_WORK_PER_S: f64 = 1e12;

/// `cpu` or `cuda: NAME`.
fn backend_name(b: &attest::msg::Backend) -> String {
    match b {
        attest::msg::Backend::Cpu => "cpu".into(),
        attest::msg::Backend::Cuda(n) => format!("cuda: {n}"),
    }
}

pub use crate::clock::now_ms;

/// MQTT topics of one device (DESIGN.md, "Wire protocol").
#[derive(Debug, Clone)]
pub struct Topics {
    pub hello: String,
    pub records: String,
    pub status: String,
    pub ack: String,
    pub cmd: String,
    /// Job progress events (JSON, not retained; receipts go through `records`).
    pub jobs: String,
}

impl Topics {
    /// The topics under `heliostat/v1/dev/{id}/`.
    pub fn for_device(id: &attest::DeviceId) -> Topics {
        let base = format!("heliostat/v1/dev/{id}");
        Topics {
            hello: format!("{base}/hello"),
            records: format!("{base}/records"),
            status: format!("{base}/status"),
            ack: format!("{base}/ack"),
            cmd: format!("{base}/cmd"),
            jobs: format!("{base}/jobs"),
        }
    }
}

/// Paths inside the data directory.
pub fn key_path(data: &Path) -> PathBuf {
    data.join("device.key")
}
fn state_path(data: &Path) -> PathBuf {
    data.join("chain-state.json")
}
fn nonces_path(data: &Path) -> PathBuf {
    data.join("command-nonces.json")
}
/// The command nonce window saved in the data directory. A file from an agent before the
/// window kept expiries is a bare list of nonces, whose commands' expiries are unknown: each
/// is kept for an hour.
fn load_nonces(data: &Path, now: u64) -> crate::nonces::NonceWindow {
    let Ok(bytes) = std::fs::read(nonces_path(data)) else {
        return Default::default();
    };
    if let Ok(w) = serde_json::from_slice(&bytes) {
        return w;
    }
    let mut w = crate::nonces::NonceWindow::default();
    for n in serde_json::from_slice::<Vec<u64>>(&bytes).unwrap_or_default() {
        w.remember(n, now + 3_600_000, now);
    }
    w
}
/// Written when a job starts, removed when its receipt is stored: a restart finds it.
fn running_job_path(data: &Path) -> PathBuf {
    data.join("running-job.json")
}

/// What a restart needs to close a job the agent died in.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct InterruptedJob {
    job: attest::msg::JobId,
    started_ms: u64,
    start_counters: Vec<attest::msg::CounterSnapshot>,
    chunks_done: u32,
    backend: attest::msg::Backend,
}
/// Where the agent writes its status for `heliostat-agent status`.
pub fn status_path(data: &Path) -> PathBuf {
    data.join("status.json")
}

struct OpenSource {
    source: Box<dyn PowerSource>,
    /// Its entry in `Status::sources` (which also lists sources that failed to open).
    status_index: usize,
    first_channel: usize,
    errors: u64,
    last_error: Option<String>,
}

/// What `heliostat-agent status` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub device_id: String,
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
    pub commands_rejected: std::collections::BTreeMap<String, u64>,
}

/// The running job in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunningStatus {
    pub job: String,
    pub started_ms: u64,
    pub chunks_done: u64,
    pub chunks: u32,
    pub paused: bool,
}

/// A job in progress, as the agent's task sees it.
struct RunningJob {
    spec: attest::msg::JobSpec,
    handle: crate::jobs::runner::Handle,
    started_ms: u64,
    start_counters: Vec<attest::msg::CounterSnapshot>,
    gpu_at_start_mj: u64,
    gpu_baseline_w: f64,
    last_busy_ms: u64,
    last_tick_ms: u64,
}

/// A job's inputs fetched and checked, and the job prepared on its backend (or why not).
type Prepared = (
    attest::msg::JobSpec,
    Result<crate::jobs::PreparedJob, String>,
);

/// Reads a blob from `dir`, or fetches it from `url` and keeps it there; checks its hash.
fn fetch_blob(dir: &Path, url: Option<&str>, hash: &attest::Hash32) -> Result<Vec<u8>, String> {
    let path = dir.join(hash.to_hex());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            let Some(base) = url else {
                return Err(format!("input {hash}: {e} (and no jobs.blob_url)"));
            };
            let from = format!("{base}{}", hash.to_hex());
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build(),
            );
            let b = agent
                .get(&from)
                .call()
                .map_err(|e| format!("input {hash}: fetching {from}: {e}"))?
                .body_mut()
                .with_config()
                .limit(crate::jobs::kernel::MAX_INPUT_BYTES)
                .read_to_vec()
                .map_err(|e| format!("input {hash}: reading {from}: {e}"))?;
            if attest::Hash32::digest(&b) == *hash {
                let tmp = dir.join(format!(".{}.tmp", hash.to_hex()));
                let kept = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&tmp, &b))
                    .and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "could not keep a fetched blob");
                }
            }
            b
        }
    };
    let got = attest::Hash32::digest(&bytes);
    if got != *hash {
        return Err(format!("input {hash}: the blob hashes to {got}"));
    }
    Ok(bytes)
}

/// Fetches a job's inputs and prepares it (uploads to the GPU): off the agent's task.
fn fetch_and_prepare(
    spec: &attest::msg::JobSpec,
    backend: &crate::jobs::ComputeBackend,
    dir: &Path,
    url: Option<&str>,
) -> Result<crate::jobs::PreparedJob, String> {
    let inputs = spec
        .inputs
        .iter()
        .map(|h| fetch_blob(dir, url, h))
        .collect::<Result<Vec<_>, _>>()?;
    let module = match &spec.workload {
        attest::msg::Workload::Ptx { module, .. } => Some(fetch_blob(dir, url, module)?),
        attest::msg::Workload::Builtin { .. } => None,
    };
    let prepared = backend.prepare(
        &spec.workload,
        module.as_deref(),
        inputs.clone(),
        &spec.output_sizes,
        backend.default_chunk_work(),
    );
    match prepared {
        Err(crate::jobs::JobError::Cuda(crate::jobs::CudaError::NvrtcMissing)) => {
            // PTX runs without NVRTC; built-ins need it: run those on the CPU.
            tracing::warn!(job = %spec.id, "NVRTC missing: this built-in runs on the CPU");
            let cpu = crate::jobs::ComputeBackend::Cpu(crate::jobs::CpuBackend::new());
            cpu.prepare(
                &spec.workload,
                module.as_deref(),
                inputs,
                &spec.output_sizes,
                cpu.default_chunk_work(),
            )
        }
        other => other,
    }
    .map_err(|e| e.to_string())
}

/// The agent's job side.
struct Jobs {
    backend: crate::jobs::ComputeBackend,
    governor: crate::governor::Governor,
    running: Option<RunningJob>,
    done_tx: std::sync::mpsc::Sender<(attest::msg::JobId, crate::jobs::runner::Finished)>,
    done_rx: std::sync::mpsc::Receiver<(attest::msg::JobId, crate::jobs::runner::Finished)>,
    job_load: std::sync::Arc<crate::power::JobLoad>,
    simulated: bool,
    /// A job whose inputs are being fetched and prepared on a thread of its own.
    preparing: Option<attest::msg::JobId>,
    /// The job named in the running-job marker file, until its receipt is stored.
    marked: Option<attest::msg::JobId>,
    /// Controls that arrived while it was being prepared, applied when it starts.
    early_controls: Vec<Control>,
    prepared_tx: std::sync::mpsc::Sender<Prepared>,
    prepared_rx: std::sync::mpsc::Receiver<Prepared>,
    events: Vec<serde_json::Value>,
    progress_due: u64,
}

/// One source in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub channels: Vec<String>,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The outbox in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStatus {
    pub depth: usize,
    pub bytes: u64,
    pub acked: Option<u64>,
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

enum LinkEvent {
    Mqtt(Event),
    Down(String),
}

/// The agent's state.
pub struct Agent {
    cfg: AgentConfig,
    key: KeyPair,
    controller: PublicKey,
    topics: Topics,
    outbox: Outbox,
    meter: Meter,
    sources: Vec<OpenSource>,
    channel_infos: Vec<ChannelInfo>,
    queue: SendQueue,
    status: Status,
    last_record_slot: u64,
    seen_nonces: crate::nonces::NonceWindow,
    jobs: Jobs,
    /// While no ack has come since connecting, the hello is repeated at this time. The hello
    /// is also retained, so a controller that subscribes later gets it from the broker; the
    /// repeat covers brokers that lost it (a restart without persistence).
    hello_due: Option<u64>,
}

fn save_state(data: &Path, state: &ChainState) -> Result<()> {
    let tmp = data.join("chain-state.json.tmp");
    let bytes = serde_json::to_vec(state)?;
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, state_path(data))?;
    crate::outbox::sync_dir(data)?;
    Ok(())
}

impl Agent {
    /// Opens everything: key, outbox (with recovery), chain state, sources. Emits a
    /// `ChainRestart` when the chain state was lost and cannot be rebuilt from the outbox.
    pub fn start(cfg: AgentConfig) -> Result<Agent> {
        let data = cfg.data_dir.clone();
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let (key, created) = crate::identity::load_or_create(&key_path(&data))?;
        let mut outbox = Outbox::open(&data.join("outbox"), cfg.outbox.clone())?;

        let mut sources = Vec::new();
        let mut channel_infos = Vec::new();
        let mut kinds = Vec::new();
        let mut status_sources = Vec::new();
        let job_load = std::sync::Arc::new(crate::power::JobLoad::default());
        let mut simulated = false;
        for sc in &cfg.sources {
            match sc.open(&cfg.site) {
                Ok(mut source) => {
                    simulated |= source.attach_job_load(job_load.clone());
                    let first_channel = kinds.len();
                    for spec in source.channels() {
                        channel_infos.push(ChannelInfo {
                            channel: attest::ChannelId(kinds.len() as u8),
                            kind: spec.kind,
                            source: format!("{}:{}", source.describe(), spec.name),
                            tier: spec.tier,
                        });
                        kinds.push((spec.kind, spec.tier));
                    }
                    status_sources.push(SourceStatus {
                        source: source.describe(),
                        channels: source.channels().iter().map(|c| c.name.clone()).collect(),
                        ..SourceStatus::default()
                    });
                    sources.push(OpenSource {
                        source,
                        status_index: status_sources.len() - 1,
                        first_channel,
                        errors: 0,
                        last_error: None,
                    });
                }
                Err(e) => {
                    // A source that cannot be opened is skipped loudly; the others report.
                    tracing::error!(error = %e, "power source unavailable, skipped");
                    status_sources.push(SourceStatus {
                        source: format!("{sc:?}"),
                        errors: 1,
                        last_error: Some(e.to_string()),
                        ..SourceStatus::default()
                    });
                }
            }
        }
        if sources.is_empty() {
            anyhow::bail!("no power source could be opened");
        }

        let (saved, reason) = match std::fs::read(state_path(&data)) {
            Ok(bytes) => match serde_json::from_slice::<ChainState>(&bytes) {
                Ok(s) => (Some(s), None),
                Err(_) => (None, Some(RestartReason::StateCorrupt)),
            },
            Err(_) if created => (None, None),
            Err(_) => (None, Some(RestartReason::StateLost)),
        };
        let mut meter = Meter::new(&kinds, saved);
        // The outbox may hold a message stored after the last state save.
        let mut recovered = false;
        if let Some(last) = outbox.last_seq()
            && let Some(bytes) = outbox.read(last)?
            && let Ok(env) = Envelope::decode(&bytes)
        {
            meter.catch_up(&env);
            recovered = true;
        }
        if let (Some(reason), false) = (reason, recovered) {
            let floor = outbox.acked().map_or(0, |a| a + 1);
            let env = meter.restart(reason.clone(), now_ms(), floor, &key);
            let seq = env
                .open::<attest::msg::ChainRestart>()
                .map(|r| r.link.seq.0)
                .unwrap_or(floor);
            outbox.append(seq, env.as_bytes())?;
            meter.commit_restart(&env);
            tracing::warn!(?reason, seq, "chain state lost: started a new chain");
        }
        save_state(&data, meter.state())?;

        let topics = Topics::for_device(&key.device_id());
        let queue = SendQueue::new(SendPolicy {
            resend_after_ms: cfg.link.resend_after_ms,
            batch_max: cfg.link.batch_max,
            fresh_per_tick: 1,
        });
        let (backend, cpu_fallback) = if cfg.jobs.enabled {
            crate::jobs::select_backend(cfg.jobs.prefer_gpu)
        } else {
            crate::jobs::select_backend(false)
        };
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
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (prepared_tx, prepared_rx) = std::sync::mpsc::channel();
        let seen_nonces = load_nonces(&data, now_ms());
        let status = Status {
            device_id: key.device_id().to_string(),
            sources: status_sources,
            jobs: JobsStatus {
                enabled: cfg.jobs.enabled,
                backend: backend_name(&backend.kind()),
                cpu_fallback,
                levers: governor
                    .lever_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                grid_allowance_w: cfg.jobs.grid_allowance_w,
                hard_cap_w: cfg.jobs.hard_cap_w,
                job_power_w: cfg.jobs.power_w,
                min_duty: cfg.jobs.min_duty,
                ..JobsStatus::default()
            },
            link: LinkStatus {
                broker: format!("{}:{}", cfg.link.host, cfg.link.port),
                ..LinkStatus::default()
            },
            ..Status::default()
        };
        tracing::info!(device = %key.device_id(), pending = outbox.depth(), "agent started");
        let mut agent = Agent {
            controller: cfg.controller_key(),
            cfg,
            key,
            topics,
            outbox,
            meter,
            sources,
            channel_infos,
            queue,
            status,
            last_record_slot: 0,
            seen_nonces,
            hello_due: None,
            jobs: Jobs {
                backend,
                governor,
                running: None,
                done_tx,
                done_rx,
                job_load,
                simulated,
                preparing: None,
                marked: None,
                early_controls: Vec::new(),
                prepared_tx,
                prepared_rx,
                events: Vec::new(),
                progress_due: 0,
            },
        };
        agent.close_interrupted_job(now_ms());
        Ok(agent)
    }

    /// A job that was running when the agent died gets its receipt now: `Failed`, with the
    /// counters from its start to this restart (every started job ends in a receipt).
    fn close_interrupted_job(&mut self, now: u64) {
        let path = running_job_path(&self.cfg.data_dir);
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        match serde_json::from_slice::<InterruptedJob>(&bytes) {
            // Killed between storing its receipt and removing the marker: done already.
            Ok(j) if self.last_stored_receipt_is_for(j.job) => {}
            Ok(j) => {
                tracing::warn!(job = %j.job, "a job was interrupted by a restart; closing it");
                self.jobs.marked = Some(j.job);
                self.store_receipt(
                    j.job,
                    attest::msg::JobOutcome::Failed("interrupted: the agent restarted".into()),
                    attest::Hash32::ZERO,
                    j.started_ms,
                    j.start_counters,
                    j.chunks_done,
                    0,
                    j.backend,
                    now,
                );
            }
            Err(e) => tracing::error!(error = %e, "unreadable running-job marker; removed"),
        }
        let _ = std::fs::remove_file(&path);
        self.jobs.marked = None;
    }

    /// Whether the newest message in the outbox is a receipt for `job`.
    fn last_stored_receipt_is_for(&self, job: attest::msg::JobId) -> bool {
        self.outbox
            .last_seq()
            .and_then(|s| self.outbox.read(s).ok().flatten())
            .and_then(|b| Envelope::decode(&b).ok())
            .and_then(|e| e.open::<attest::msg::JobReceipt>().ok())
            .is_some_and(|r| r.job == job)
    }

    /// Names `marker.job` in the running-job marker file: from here until its receipt is
    /// stored, a restart closes the job with a receipt of its own.
    fn mark_job(&mut self, marker: &InterruptedJob) {
        let path = running_job_path(&self.cfg.data_dir);
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(marker)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.jobs.marked = Some(marker.job),
            Err(e) => tracing::warn!(error = %e, "could not write the running-job marker"),
        }
    }

    /// The device's signed hello.
    pub fn hello(&self) -> Envelope {
        let s = &self.cfg.site;
        let board = std::fs::read_to_string("/proc/device-tree/model")
            .map(|m| m.trim_end_matches('\0').trim().to_string())
            .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
        let hello = Hello {
            device: self.key.device_id(),
            public_key: self.key.public(),
            timestamp: TimestampMs(now_ms()),
            agent_version: crate::VERSION.to_string(),
            hardware: Hardware {
                board,
                gpus: vec![],
                embodied_g_co2e: (s.embodied_kg_co2e.max(0.0) * 1_000.0).round() as u64,
                expected_life_hours: (s.expected_life_years.max(0.0) * 8_766.0).round() as u32,
                max_draw_w: s.max_draw_w,
            },
            site: Site {
                lat_microdeg: (s.lat * 1e6).round() as i32,
                lon_microdeg: (s.lon * 1e6).round() as i32,
                panel_watts_peak: s.panel_watts_peak,
                battery_wh: s.battery_wh,
                battery_reserve_wh: s.battery_reserve_wh,
                grid_region: s.grid_region.clone(),
            },
            channels: self.channel_infos.clone(),
            price_micro_per_gpu_hour: s.price_micro_per_gpu_hour,
        };
        Envelope::seal(&hello, &self.key)
    }

    /// Samples every source and, on a record boundary, seals and stores a record; returns
    /// whether it was a record boundary.
    pub fn tick_meter(&mut self, now: u64) -> bool {
        for s in self.sources.iter_mut() {
            let n = s.source.channels().len();
            match s.source.sample(now) {
                Ok(samples) => {
                    for (c, sample) in samples.into_iter().enumerate().take(n) {
                        self.meter.feed(s.first_channel + c, now, sample);
                    }
                }
                Err(e) => {
                    s.errors += 1;
                    if s.last_error.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(source = %s.source.describe(), error = %e, "source read failed");
                    }
                    s.last_error = Some(e.to_string());
                    for c in 0..n {
                        self.meter.feed(s.first_channel + c, now, None);
                    }
                }
            }
            if let Some(st) = self.status.sources.get_mut(s.status_index) {
                st.errors = s.errors;
                st.last_error = s.last_error.clone();
            }
        }
        let slot = now / self.cfg.meter.record_interval_ms;
        let boundary = slot > self.last_record_slot;
        if boundary {
            self.last_record_slot = slot;
            self.record(now);
        }
        self.tick_jobs(now);
        boundary
    }

    /// Publishes the retained status (online, outbox depth, whether records are blocked).
    fn publish_status(&self, client: &AsyncClient) {
        if !self.status.link.connected {
            return;
        }
        let o = &self.status.outbox;
        let body = serde_json::json!({
            "state": "online",
            "agent": crate::VERSION,
            "next_seq": self.meter.state().next_seq,
            "outbox_depth": o.depth,
            "outbox_blocked": o.blocked,
            "quarantined": o.quarantined,
        });
        let _ = client.try_publish(
            &self.topics.status,
            QoS::AtLeastOnce,
            true,
            body.to_string(),
        );
    }

    fn record(&mut self, now: u64) {
        let (rec, env) = self.meter.seal(now, &self.key);
        match self.outbox.append(rec.link.seq.0, env.as_bytes()) {
            Ok(()) => {
                self.meter.commit(&rec, &env);
                if let Err(e) = save_state(&self.cfg.data_dir, self.meter.state()) {
                    // The outbox holds the record; the next start catches up from it.
                    tracing::error!(error = %e, "saving chain state failed");
                }
                if self.status.outbox.blocked.take().is_some() {
                    tracing::info!("outbox accepts records again");
                }
                self.status.last_record = serde_json::to_value(&rec).ok();
            }
            Err(e) => {
                let why = match &e {
                    OutboxError::Full { .. } => {
                        format!("{e}: records paused, counters keep every joule")
                    }
                    _ => format!("{e}: records paused (disk full?), counters keep every joule"),
                };
                if self.status.outbox.blocked.as_deref() != Some(&why) {
                    tracing::error!(reason = %why, "OUTBOX CANNOT STORE RECORDS");
                }
                self.status.outbox.blocked = Some(why);
            }
        }
        self.write_status(now);
    }

    fn write_status(&mut self, now: u64) {
        let o = &mut self.status.outbox;
        o.depth = self.outbox.depth();
        o.bytes = self.outbox.pending_bytes();
        o.acked = self.outbox.acked();
        o.in_flight = self.queue.in_flight();
        o.quarantined = self.outbox.stats.quarantined;
        o.refused = self.outbox.stats.refused;
        self.status.updated_ms = now;
        let path = status_path(&self.cfg.data_dir);
        let tmp = path.with_extension("json.tmp");
        if let Ok(bytes) = serde_json::to_vec_pretty(&self.status)
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// Publishes what is due.
    fn tick_send(&mut self, client: &AsyncClient, now: u64) {
        if !self.status.link.connected {
            return;
        }
        if let Some(due) = self.hello_due.filter(|d| now >= *d) {
            let _ = client.try_publish(
                &self.topics.hello,
                QoS::AtLeastOnce,
                true,
                self.hello().into_bytes(),
            );
            self.hello_due = Some(due.max(now) + HELLO_REPEAT_MS);
        }
        let pending: Vec<u64> = self.outbox.pending().collect();
        let plans = self.queue.plan(now, &pending);
        for (i, plan) in plans.iter().enumerate() {
            let payload = match plan {
                Plan::Single(s) => self.outbox.read(*s).ok().flatten(),
                Plan::Batch(seqs) => {
                    let items: Vec<Vec<u8>> = seqs
                        .iter()
                        .filter_map(|s| self.outbox.read(*s).ok().flatten())
                        .collect();
                    Some(attest::batch::encode(items.iter().map(|v| v.as_slice())))
                }
            };
            let Some(payload) = payload else { continue };
            if client
                .try_publish(&self.topics.records, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                // This message and the rest of the tick's plan never went out: they go at
                // the next tick, not after the resend timeout.
                for p in &plans[i..] {
                    self.queue.unsend(p);
                }
                break;
            }
        }
    }

    fn on_connect(&mut self, client: &AsyncClient, now: u64) {
        self.hello_due = Some(now + HELLO_REPEAT_MS);
        self.status.link.connected = true;
        self.status.link.connects += 1;
        self.status.link.last_error = None;
        self.queue.on_disconnect();
        let _ = client.try_subscribe(&self.topics.ack, QoS::AtLeastOnce);
        let _ = client.try_subscribe(&self.topics.cmd, QoS::AtLeastOnce);
        let _ = client.try_publish(
            &self.topics.hello,
            QoS::AtLeastOnce,
            true,
            self.hello().into_bytes(),
        );
        let online = serde_json::json!({"state": "online", "agent": crate::VERSION}).to_string();
        let _ = client.try_publish(&self.topics.status, QoS::AtLeastOnce, true, online);
        tracing::info!(broker = %self.status.link.broker, pending = self.outbox.depth(), "connected");
    }

    fn on_ack(&mut self, payload: &[u8]) {
        let check = || -> Result<Ack, String> {
            let env = Envelope::decode(payload).map_err(|e| e.to_string())?;
            env.verify(&self.controller)
                .map_err(|e| format!("ack {e}"))?;
            let ack: Ack = env.open().map_err(|e| e.to_string())?;
            if ack.device != self.key.device_id() {
                return Err("ack for another device".into());
            }
            if self.outbox.last_seq().is_none_or(|l| ack.up_to.0 > l) {
                return Err(format!("ack up to {} is beyond what was stored", ack.up_to));
            }
            if let Ok(Some(bytes)) = self.outbox.read(ack.up_to.0)
                && attest::Hash32::digest(&bytes) != ack.hash
            {
                return Err(format!(
                    "ack hash for {} does not match the stored record",
                    ack.up_to
                ));
            }
            Ok(ack)
        };
        match check() {
            Ok(ack) => {
                if let Err(e) = self.outbox.ack(ack.up_to.0) {
                    tracing::error!(error = %e, "recording an ack failed");
                    return;
                }
                self.queue.on_ack(ack.up_to.0);
                self.hello_due = None;
            }
            Err(why) => {
                self.status.link.acks_rejected += 1;
                tracing::warn!(reason = %why, "ack rejected");
            }
        }
    }

    fn reject_command(&mut self, (reason, why): (&'static str, String)) {
        self.status.link.commands_rejected += 1;
        let n = self
            .status
            .jobs
            .commands_rejected
            .entry(reason.to_string())
            .or_default();
        *n += 1;
        // Once per reason at warn, then quietly: a flood must not flood the log.
        if *n == 1 {
            tracing::warn!(reason, detail = %why, "command rejected");
        } else {
            tracing::debug!(reason, detail = %why, "command rejected");
        }
    }

    fn save_nonces(&self) {
        let path = nonces_path(&self.cfg.data_dir);
        let tmp = path.with_extension("json.tmp");
        if let Ok(b) = serde_json::to_vec(&self.seen_nonces)
            && std::fs::write(&tmp, b).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// Seals a record now unless one was sealed at this millisecond: receipts' counters
    /// are always those of a signed record.
    fn force_record(&mut self, now: u64) {
        if self.meter.state().last_timestamp < now {
            self.record(now);
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
    #[allow(clippy::too_many_arguments)]
    fn store_receipt(
        &mut self,
        job: attest::msg::JobId,
        outcome: attest::msg::JobOutcome,
        output_hash: attest::Hash32,
        started: u64,
        start_counters: Vec<attest::msg::CounterSnapshot>,
        chunks: u32,
        pauses: u32,
        backend: attest::msg::Backend,
        now: u64,
    ) {
        self.force_record(now);
        let end_counters = self.meter.snapshot(&crate::jobs::RECEIPT_KINDS);
        let start_counters = if start_counters.is_empty() {
            end_counters.clone()
        } else {
            start_counters
        };
        let receipt = attest::msg::JobReceipt {
            link: attest::msg::Link {
                device: self.key.device_id(),
                seq: attest::SeqNo(0),
                timestamp: TimestampMs(0),
                prev: attest::Hash32::ZERO,
            },
            job,
            outcome: outcome.clone(),
            output_hash,
            started: TimestampMs(started.min(now)),
            ended: TimestampMs(now.max(self.meter.state().last_timestamp)),
            start_counters,
            end_counters,
            chunks,
            pauses,
            backend,
            tier: self.receipt_tier(),
        };
        let env = self.meter.seal_receipt(receipt, now, &self.key);
        let Ok(sealed) = env.open::<attest::msg::JobReceipt>() else {
            tracing::error!("a receipt did not reopen; not stored");
            return;
        };
        match self.outbox.append(sealed.link.seq.0, env.as_bytes()) {
            Ok(()) => {
                self.meter.commit_link(&sealed.link, &env);
                if let Err(e) = save_state(&self.cfg.data_dir, self.meter.state()) {
                    tracing::error!(error = %e, "saving chain state failed");
                }
                // Only now, with the receipt durable, may the marker go.
                if self.jobs.marked == Some(job) {
                    let _ = std::fs::remove_file(running_job_path(&self.cfg.data_dir));
                    self.jobs.marked = None;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, job = %job, "RECEIPT NOT STORED: outbox refused it")
            }
        }
        let j = &mut self.status.jobs;
        match &outcome {
            attest::msg::JobOutcome::Completed => j.completed += 1,
            attest::msg::JobOutcome::Refused(_) => j.refused += 1,
            attest::msg::JobOutcome::Cancelled => j.cancelled += 1,
            attest::msg::JobOutcome::DeadlineMissed => j.deadline_missed += 1,
            attest::msg::JobOutcome::Failed(_) => j.failed += 1,
        }
        tracing::info!(job = %job, ?outcome, chunks, pauses, seq = sealed.link.seq.0, "job receipt stored");
        self.jobs.events.push(serde_json::json!({
            "event": "finished", "job": job.to_string(), "outcome": outcome,
            "chunks": chunks, "pauses": pauses, "seq": sealed.link.seq.0,
        }));
        self.write_status(now);
    }

    fn refuse_job(&mut self, job: attest::msg::JobId, why: String, now: u64) {
        tracing::warn!(job = %job, reason = %why, "job refused");
        let backend = self.jobs.backend.kind();
        self.store_receipt(
            job,
            attest::msg::JobOutcome::Refused(why),
            attest::Hash32::ZERO,
            now,
            Vec::new(),
            0,
            0,
            backend,
            now,
        );
    }

    fn start_job(&mut self, spec: attest::msg::JobSpec, now: u64) {
        let id = spec.id;
        if !self.cfg.jobs.enabled {
            return self.refuse_job(id, "jobs are disabled on this device".into(), now);
        }
        if self.status.jobs.draining {
            return self.refuse_job(id, "the device is draining".into(), now);
        }
        if let Some(r) = &self.jobs.running {
            let why = format!("busy with job {}", r.spec.id);
            return self.refuse_job(id, why, now);
        }
        if let Some(p) = self.jobs.preparing {
            return self.refuse_job(id, format!("busy preparing job {p}"), now);
        }
        self.jobs.preparing = Some(id);
        self.mark_job(&InterruptedJob {
            job: id,
            started_ms: now,
            start_counters: Vec::new(),
            chunks_done: 0,
            backend: self.jobs.backend.kind(),
        });
        let backend = self.jobs.backend.clone();
        let dir = self
            .cfg
            .jobs
            .blob_dir
            .clone()
            .unwrap_or_else(|| self.cfg.data_dir.join("blobs"));
        let url = self.cfg.jobs.blob_url.clone();
        let tx = self.jobs.prepared_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("job-prepare".into())
            .spawn(move || {
                let r = fetch_and_prepare(&spec, &backend, &dir, url.as_deref());
                let _ = tx.send((spec, r));
            });
        if let Err(e) = spawned {
            self.jobs.preparing = None;
            self.refuse_job(id, format!("cannot start preparing: {e}"), now);
        }
    }

    /// Admission and start, once the inputs are in and the job is prepared.
    fn start_prepared(
        &mut self,
        spec: attest::msg::JobSpec,
        job: crate::jobs::PreparedJob,
        now: u64,
    ) {
        let id = spec.id;
        let work_per_s = match job.backend() {
            attest::msg::Backend::Cpu => CPU_WORK_PER_S,
            attest::msg::Backend::Cuda(_) => GPU_WORK_PER_S,
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
            Err(r) => return self.refuse_job(id, r.to_string(), now),
        };
        self.force_record(now);
        let start_counters = self.meter.snapshot(&crate::jobs::RECEIPT_KINDS);
        let gpu_baseline_w = self.meter.power_w(attest::msg::ChannelKind::Gpu);
        let decision = self.jobs.governor.update(&power, full_s, 0.0, 1.0);
        self.mark_job(&InterruptedJob {
            job: id,
            started_ms: now,
            start_counters: start_counters.clone(),
            chunks_done: 0,
            backend: job.backend().clone(),
        });
        let exec = crate::jobs::exec::Execution::new(spec.clone(), job, now, work_per_s);
        let chunks = exec.chunk_count();
        let tx = self.jobs.done_tx.clone();
        let sim = self
            .jobs
            .simulated
            .then(|| (self.jobs.job_load.clone(), self.cfg.jobs.simulated_gpu_w));
        match crate::jobs::runner::spawn(exec, decision, sim, move |f| {
            let _ = tx.send((id, f));
        }) {
            Ok(handle) => {
                for c in self.jobs.early_controls.drain(..) {
                    let _ = handle.control.send(c);
                }
                tracing::info!(job = %id, chunks, budget_w = b.total_w, "job started");
                self.jobs.events.push(serde_json::json!({
                    "event": "started", "job": id.to_string(), "chunks": chunks,
                    "budget_w": b.total_w,
                }));
                self.status.jobs.decision = Some(decision);
                self.jobs.running = Some(RunningJob {
                    spec,
                    handle,
                    started_ms: now,
                    start_counters,
                    gpu_at_start_mj: self.meter.energy_mj(attest::msg::ChannelKind::Gpu),
                    gpu_baseline_w,
                    last_busy_ms: 0,
                    last_tick_ms: now,
                });
            }
            Err(e) => self.refuse_job(id, format!("cannot start the job thread: {e}"), now),
        }
    }

    fn control_job(&mut self, job: attest::msg::JobId, c: Control) {
        if self.jobs.preparing == Some(job) {
            self.jobs.early_controls.push(c);
            self.jobs.events.push(serde_json::json!({
                "event": format!("{c:?}").to_lowercase(), "job": job.to_string(),
                "applies": "when the job starts",
            }));
            return;
        }
        match &self.jobs.running {
            Some(r) if r.spec.id == job => {
                let _ = r.handle.control.send(c);
                tracing::info!(job = %job, control = ?c, "job control");
                self.jobs.events.push(serde_json::json!({
                    "event": format!("{c:?}").to_lowercase(), "job": job.to_string(),
                }));
            }
            _ => self.reject_command(("no_such_job", format!("no running job {job}"))),
        }
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
    fn tick_jobs(&mut self, now: u64) {
        while let Ok((spec, prepared)) = self.jobs.prepared_rx.try_recv() {
            self.jobs.preparing = None;
            if self.jobs.early_controls.contains(&Control::Cancel) {
                self.jobs.early_controls.clear();
                let backend = self.jobs.backend.kind();
                self.store_receipt(
                    spec.id,
                    attest::msg::JobOutcome::Cancelled,
                    attest::Hash32::ZERO,
                    now,
                    Vec::new(),
                    0,
                    0,
                    backend,
                    now,
                );
                continue;
            }
            match prepared {
                Ok(job) => self.start_prepared(spec, job, now),
                Err(why) => self.refuse_job(spec.id, why, now),
            }
        }
        while let Ok((id, f)) = self.jobs.done_rx.try_recv() {
            let Some(r) = self.jobs.running.take() else {
                continue;
            };
            self.jobs.governor.release();
            self.store_receipt(
                id,
                f.outcome,
                f.output_hash,
                r.started_ms,
                r.start_counters,
                f.chunks,
                f.pauses,
                f.backend,
                now,
            );
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
            }
            self.status.jobs.running = None;
        }
        let Some(r) = self.jobs.running.as_mut() else {
            return;
        };
        let sh = r.handle.shared.clone();
        let busy = sh.busy_ms.load(std::sync::atomic::Ordering::Relaxed);
        let dt = now.saturating_sub(r.last_tick_ms).max(1);
        let ran = ((busy - r.last_busy_ms) as f64 / dt as f64).min(1.0);
        r.last_busy_ms = busy;
        r.last_tick_ms = now;
        let remaining_s =
            sh.remaining_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
        let baseline = r.gpu_baseline_w;
        let at_start = r.gpu_at_start_mj;
        let running = RunningStatus {
            job: r.spec.id.to_string(),
            started_ms: r.started_ms,
            chunks_done: sh.chunks_done.load(std::sync::atomic::Ordering::Relaxed),
            chunks: r.handle.chunk_count,
            paused: sh.paused.load(std::sync::atomic::Ordering::Relaxed) == 1,
        };
        let p = self.power_now(baseline);
        let lever = self.status.jobs.decision.map_or(1.0, |d| d.lever_fraction);
        let d = self.jobs.governor.update(&p, remaining_s, ran, lever);
        *sh.decision.lock().unwrap_or_else(|e| e.into_inner()) = d;
        sh.energy_mj.store(
            self.meter
                .energy_mj(attest::msg::ChannelKind::Gpu)
                .saturating_sub(at_start),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.status.jobs.decision = Some(d);
        self.status.jobs.running = Some(running);
    }

    /// Publishes job events and, while a job runs, its progress once a second.
    fn publish_jobs(&mut self, client: &AsyncClient, now: u64) {
        if !self.status.link.connected {
            return;
        }
        let mut out = std::mem::take(&mut self.jobs.events);
        if let Some(r) = &self.status.jobs.running
            && now >= self.jobs.progress_due
        {
            self.jobs.progress_due = now + 1_000;
            out.push(serde_json::json!({
                "event": "progress", "job": r.job, "chunks_done": r.chunks_done,
                "chunks": r.chunks, "paused": r.paused,
                "decision": self.status.jobs.decision,
            }));
        }
        for e in out {
            let _ = client.try_publish(&self.topics.jobs, QoS::AtMostOnce, false, e.to_string());
        }
    }

    fn on_command(&mut self, payload: &[u8], now: u64) {
        let check = || -> Result<Command, (&'static str, String)> {
            let env = Envelope::decode(payload).map_err(|e| ("malformed", e.to_string()))?;
            env.verify(&self.controller)
                .map_err(|e| ("bad_signature", format!("command {e}")))?;
            let cmd: Command = env.open().map_err(|e| ("malformed", e.to_string()))?;
            if cmd.device != self.key.device_id() {
                return Err(("other_device", "command for another device".into()));
            }
            if cmd.expires.0 < now {
                return Err(("expired", "command expired".into()));
            }
            self.seen_nonces
                .check(cmd.nonce, cmd.expires.0)
                .map_err(|e| ("replayed", e.to_string()))?;
            Ok(cmd)
        };
        match check() {
            Ok(cmd) => {
                self.seen_nonces.remember(cmd.nonce, cmd.expires.0, now);
                self.save_nonces();
                match cmd.body {
                    CommandBody::Resend { from, to } => self.queue.resend(from.0, to.0),
                    CommandBody::RunJob(spec) => self.start_job(spec, now),
                    CommandBody::Pause { job } => self.control_job(job, Control::Pause),
                    CommandBody::Resume { job } => self.control_job(job, Control::Resume),
                    CommandBody::Cancel { job } => self.control_job(job, Control::Cancel),
                    CommandBody::Drain => {
                        self.status.jobs.draining = true;
                        self.jobs
                            .events
                            .push(serde_json::json!({"event": "draining"}));
                        tracing::info!("draining: no new jobs; the running one finishes");
                    }
                }
            }
            Err(why) => self.reject_command(why),
        }
    }
}

fn mqtt_options(cfg: &AgentConfig, id: &attest::DeviceId, topics: &Topics) -> Result<MqttOptions> {
    let l = &cfg.link;
    let mut o = MqttOptions::new(format!("heliostat-agent-{id}"), &l.host, l.port);
    o.set_keep_alive(Duration::from_secs(l.keepalive_s));
    o.set_clean_session(true);
    o.set_max_packet_size(
        2 * attest::batch::MAX_BATCH_LEN,
        2 * attest::batch::MAX_BATCH_LEN,
    );
    let offline = serde_json::json!({"state": "offline"}).to_string();
    o.set_last_will(LastWill::new(
        &topics.status,
        offline,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(u) = &l.username {
        o.set_credentials(u, l.password.clone().unwrap_or_default());
    }
    if let Some(ca) = &l.tls_ca_file {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let client_auth = match (&l.tls_client_cert, &l.tls_client_key) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
            )),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let mut agent = Agent::start(cfg)?;
    let opts = mqtt_options(&agent.cfg, &agent.key.device_id(), &agent.topics)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let (tx, mut rx) = mpsc::channel::<LinkEvent>(1024);
    let backoff_max = agent.cfg.link.backoff_max_ms;
    tokio::spawn(async move {
        let mut backoff = 100u64;
        let mut jitter = now_ms() | 1;
        loop {
            match eventloop.poll().await {
                Ok(ev) => {
                    if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                        backoff = 100;
                    }
                    if tx.send(LinkEvent::Mqtt(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if tx.send(LinkEvent::Down(e.to_string())).await.is_err() {
                        return;
                    }
                    jitter ^= jitter << 13;
                    jitter ^= jitter >> 7;
                    jitter ^= jitter << 17;
                    let wait = backoff / 2 + jitter % backoff.max(1);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    backoff = (backoff * 2).min(backoff_max);
                }
            }
        }
    });
    let mut sample =
        tokio::time::interval(Duration::from_millis(agent.cfg.meter.sample_interval_ms));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut send = tokio::time::interval(Duration::from_millis(50));
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sample.tick() => {
                let now = now_ms();
                if agent.tick_meter(now) {
                    agent.publish_status(&client);
                }
                agent.publish_jobs(&client, now);
            }
            _ = send.tick() => agent.tick_send(&client, now_ms()),
            ev = rx.recv() => match ev {
                Some(LinkEvent::Mqtt(Event::Incoming(Packet::ConnAck(_)))) => agent.on_connect(&client, now_ms()),
                Some(LinkEvent::Mqtt(Event::Incoming(Packet::Publish(p)))) => {
                    if p.topic == agent.topics.ack {
                        agent.on_ack(&p.payload);
                    } else if p.topic == agent.topics.cmd {
                        agent.on_command(&p.payload, now_ms());
                    }
                }
                Some(LinkEvent::Mqtt(_)) => {}
                Some(LinkEvent::Down(e)) => {
                    if agent.status.link.connected || agent.status.link.last_error.as_deref() != Some(&e) {
                        tracing::warn!(error = %e, "broker connection down; retrying with backoff");
                    }
                    agent.status.link.connected = false;
                    agent.status.link.last_error = Some(e);
                    agent.queue.on_disconnect();
                }
                None => break,
            },
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// Reads a stored record back (for tests and `status`).
pub fn decode_record(bytes: &[u8]) -> Option<MeterRecord> {
    Envelope::decode(bytes).ok()?.open().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, sources: &str) -> AgentConfig {
        AgentConfig::parse(&format!(
            r#"data_dir = "{}"
[site]
lat = 10.0
lon = 20.0
battery_wh = 500
[link]
host = "127.0.0.1"
controller_key = "{}"
{sources}"#,
            dir.display(),
            KeyPair::from_seed(&[0xc0; 32]).public()
        ))
        .unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("runtime-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn receipts_for(a: &Agent, job: attest::msg::JobId) -> Vec<attest::msg::JobReceipt> {
        a.outbox
            .pending()
            .filter_map(|s| a.outbox.read(s).ok().flatten())
            .filter_map(|b| {
                Envelope::decode(&b)
                    .ok()?
                    .open::<attest::msg::JobReceipt>()
                    .ok()
            })
            .filter(|r| r.job == job)
            .collect()
    }

    #[test]
    fn a_restart_closes_a_marked_job_once_whether_or_not_its_receipt_was_stored() {
        let dir = tmp("marker");
        let cfg = || config(&dir, "[[source]]\ntype = \"simulator\"\n");
        let marker = |job| InterruptedJob {
            job,
            started_ms: now_ms(),
            start_counters: Vec::new(),
            chunks_done: 3,
            backend: attest::msg::Backend::Cpu,
        };
        let (done, interrupted) = (attest::msg::JobId([1; 16]), attest::msg::JobId([2; 16]));

        // Killed after the receipt was stored, before the marker went: no second receipt.
        let mut a = Agent::start(cfg()).unwrap();
        a.tick_meter(now_ms());
        a.mark_job(&marker(done));
        a.jobs.marked = None; // the removal that the kill prevented
        let t = now_ms() + 1;
        a.store_receipt(
            done,
            attest::msg::JobOutcome::Completed,
            attest::Hash32::ZERO,
            t,
            Vec::new(),
            3,
            0,
            attest::msg::Backend::Cpu,
            t,
        );
        assert!(running_job_path(&dir).exists());
        drop(a);
        let a = Agent::start(cfg()).unwrap();
        assert!(!running_job_path(&dir).exists());
        let r = receipts_for(&a, done);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, attest::msg::JobOutcome::Completed);

        // Killed while it ran: one Failed receipt at the restart.
        let mut a = a;
        a.mark_job(&marker(interrupted));
        drop(a);
        let a = Agent::start(cfg()).unwrap();
        let r = receipts_for(&a, interrupted);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].outcome,
            attest::msg::JobOutcome::Failed("interrupted: the agent restarted".into())
        );
        assert_eq!(r[0].chunks, 3);
        assert!(!running_job_path(&dir).exists());
        drop(a);
        assert_eq!(
            receipts_for(&Agent::start(cfg()).unwrap(), interrupted).len(),
            1
        );
    }

    #[test]
    fn a_source_that_cannot_open_is_skipped_and_reported_while_the_others_run() {
        let dir = tmp("skip");
        let cfg = config(
            &dir,
            "[[source]]\ntype = \"vedirect\"\nport = \"/dev/does-not-exist\"\n[[source]]\ntype = \"simulator\"\n",
        );
        let mut a = Agent::start(cfg).unwrap();
        assert!(
            a.status.sources[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("/dev/does-not-exist"))
        );
        let t = now_ms();
        assert!(a.tick_meter(t), "the first tick records");
        assert!(!a.tick_meter(t + 1), "not a record boundary");
        assert!(a.tick_meter(t + 20_000), "a record boundary");
        assert_eq!(a.outbox.depth(), 2);
        assert_eq!(
            a.status.sources[1].errors, 0,
            "the simulator's status is its own"
        );
        let hello: Hello = a.hello().open().unwrap();
        assert_eq!(hello.channels.len(), 6, "only the simulator's channels");
        assert_eq!(hello.site.lat_microdeg, 10_000_000);
    }

    #[test]
    fn lost_chain_state_restarts_the_chain_and_a_lagging_one_catches_up_from_the_outbox() {
        let dir = tmp("state");
        let cfg = || config(&dir, "[[source]]\ntype = \"simulator\"\n");
        let mut a = Agent::start(cfg()).unwrap();
        let t = now_ms();
        for i in 0..3 {
            a.tick_meter(t + i * 10_000);
        }
        let next = a.meter.state().next_seq;
        assert_eq!(next, 3);
        // A state file one record behind (a crash between append and save): catch up.
        let mut behind = a.meter.state().clone();
        behind.next_seq = 2;
        drop(a);
        save_state(&dir, &behind).unwrap();
        let a = Agent::start(cfg()).unwrap();
        assert_eq!(a.meter.state().next_seq, 3);
        drop(a);
        // No state file at all, outbox acknowledged and emptied: a ChainRestart.
        std::fs::remove_file(state_path(&dir)).unwrap();
        std::fs::remove_dir_all(dir.join("outbox")).unwrap();
        let a = Agent::start(cfg()).unwrap();
        let restart_seq = a.outbox.last_seq().unwrap();
        assert!(
            restart_seq >= t,
            "a restart sequence above anything used before"
        );
        let env = Envelope::decode(&a.outbox.read(restart_seq).unwrap().unwrap()).unwrap();
        let r: attest::msg::ChainRestart = env.open().unwrap();
        assert_eq!(r.reason, RestartReason::StateLost);
    }

    #[test]
    fn only_acks_signed_by_the_pinned_controller_for_stored_records_delete_anything() {
        let dir = tmp("acks");
        let mut a = Agent::start(config(&dir, "[[source]]\ntype = \"simulator\"\n")).unwrap();
        let t = now_ms();
        for i in 0..5 {
            a.tick_meter(t + i * 10_000);
        }
        assert_eq!(a.outbox.depth(), 5);
        let hash = |s: u64| attest::Hash32::digest(&a.outbox.read(s).unwrap().unwrap());
        let ack = |up_to: u64, hash: attest::Hash32, device| Ack {
            device,
            up_to: attest::SeqNo(up_to),
            hash,
            timestamp: TimestampMs(t),
        };
        let me = a.key.device_id();
        let controller = KeyPair::from_seed(&[0xc0; 32]);
        let forger = KeyPair::from_seed(&[0x66; 32]);
        let h2 = hash(2);
        // Forged, for another device, beyond what is stored, wrong hash, garbage: refused.
        a.on_ack(Envelope::seal(&ack(2, h2, me), &forger).as_bytes());
        a.on_ack(
            Envelope::seal(
                &ack(2, h2, KeyPair::from_seed(&[1; 32]).device_id()),
                &controller,
            )
            .as_bytes(),
        );
        a.on_ack(Envelope::seal(&ack(99, h2, me), &controller).as_bytes());
        a.on_ack(Envelope::seal(&ack(3, h2, me), &controller).as_bytes());
        a.on_ack(b"\x01\x06garbage");
        assert_eq!(a.status.link.acks_rejected, 5);
        assert_eq!(a.outbox.depth(), 5, "nothing deleted");
        // The real one deletes what it covers.
        a.on_ack(Envelope::seal(&ack(2, h2, me), &controller).as_bytes());
        assert_eq!(a.outbox.pending().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(a.status.link.acks_rejected, 5);
    }

    #[test]
    fn forged_expired_and_replayed_commands_are_refused_and_a_valid_resend_is_obeyed() {
        let dir = tmp("cmds");
        let mut a = Agent::start(config(&dir, "[[source]]\ntype = \"simulator\"\n")).unwrap();
        let t = now_ms();
        let me = a.key.device_id();
        let cmd = |nonce, expires| Command {
            device: me,
            nonce,
            issued: TimestampMs(t),
            expires: TimestampMs(expires),
            body: CommandBody::Resend {
                from: attest::SeqNo(0),
                to: attest::SeqNo(3),
            },
        };
        let controller = KeyPair::from_seed(&[0xc0; 32]);
        a.on_command(
            Envelope::seal(&cmd(1, t + 60_000), &KeyPair::from_seed(&[0x66; 32])).as_bytes(),
            t,
        );
        a.on_command(Envelope::seal(&cmd(2, t - 1), &controller).as_bytes(), t);
        assert_eq!(a.status.link.commands_rejected, 2);
        let valid = Envelope::seal(&cmd(3, t + 60_000), &controller);
        a.on_command(valid.as_bytes(), t);
        assert_eq!(a.status.link.commands_rejected, 2);
        a.on_command(valid.as_bytes(), t);
        assert_eq!(
            a.status.link.commands_rejected, 3,
            "a replayed nonce is refused"
        );
    }

    #[test]
    fn a_replayed_command_is_refused_after_a_restart_and_after_4096_newer_commands() {
        let dir = tmp("replay-window");
        let cfg = || config(&dir, "[[source]]\ntype = \"simulator\"\n");
        let mut a = Agent::start(cfg()).unwrap();
        let t = now_ms();
        let me = a.key.device_id();
        let controller = KeyPair::from_seed(&[0xc0; 32]);
        let cmd = |nonce: u64, expires: u64| {
            Envelope::seal(
                &Command {
                    device: me,
                    nonce,
                    issued: TimestampMs(t),
                    expires: TimestampMs(expires),
                    body: CommandBody::Resend {
                        from: attest::SeqNo(0),
                        to: attest::SeqNo(0),
                    },
                },
                &controller,
            )
        };
        let first = cmd(1, t + 600_000);
        a.on_command(first.as_bytes(), t);
        assert_eq!(a.status.link.commands_rejected, 0);
        drop(a);

        // A restart remembers it.
        let mut a = Agent::start(cfg()).unwrap();
        a.on_command(first.as_bytes(), t);
        assert_eq!(
            a.status.link.commands_rejected, 1,
            "replayed after a restart"
        );

        // 4,096 newer commands, each valid for longer, and a restart: still refused.
        for i in 0..4_096 {
            a.on_command(cmd(1_000 + i, t + 600_001 + i).as_bytes(), t);
        }
        assert_eq!(a.status.link.commands_rejected, 1, "the newer ones all ran");
        drop(a);
        let mut a = Agent::start(cfg()).unwrap();
        a.on_command(first.as_bytes(), t);
        // (The counter is the process's: it starts again at 0.)
        assert_eq!(
            a.status.link.commands_rejected, 1,
            "replayed after 4,096 newer commands"
        );
        // And a new command still runs.
        a.on_command(cmd(99_999, t + 900_000).as_bytes(), t);
        assert_eq!(a.status.link.commands_rejected, 1);
    }
}
