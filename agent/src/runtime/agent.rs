//! The running agent's state and its reactions, one method per event: a meter tick, a send
//! tick, a connection, an ack, a command. Decisions are made by the sans-IO parts it holds
//! (the [`Meter`], the [`SendQueue`], the [`Inbox`], the job [`Desk`](crate::jobs::desk));
//! this file carries them out on the outbox, the data files and the MQTT client. Every
//! method takes the time as `now` (ms); none reads the clock.

use anyhow::{Context, Result};
use attest::live::{DeviceStatus, Online};
use attest::msg::{ChannelInfo, CommandBody, Hardware, Hello, MeterRecord, RestartReason, Site};
use attest::{Envelope, KeyPair, SeqNo, TimestampMs};
use rumqttc::{AsyncClient, QoS};

use super::files::{self, SavedState};
use super::jobs::Jobs;
use super::mqtt::Topics;
use crate::config::AgentConfig;
use crate::inbox::{CommandRejection, Inbox};
use crate::jobs::runner::Control;
use crate::meter::Meter;
use crate::outbox::{Outbox, OutboxError};
use crate::power::PowerSource;
use crate::sender::{Plan, SendPolicy, SendQueue};
use crate::status::{LinkStatus, SourceStatus, Status};

/// How often the hello is repeated until the first ack after connecting.
const HELLO_REPEAT_MS: u64 = 3_000;

pub(super) struct OpenSource {
    source: Box<dyn PowerSource>,
    /// Its entry in `Status::sources` (which also lists sources that failed to open).
    status_index: usize,
    first_channel: usize,
}

/// The agent's state.
pub struct Agent {
    pub(super) cfg: AgentConfig,
    pub(super) key: KeyPair,
    pub(super) topics: Topics,
    pub(super) outbox: Outbox,
    pub(super) meter: Meter,
    sources: Vec<OpenSource>,
    pub(super) channel_infos: Vec<ChannelInfo>,
    /// The board, GPUs and CPU the hello offers (read once at start).
    pub(super) offer: crate::hardware::Offer,
    pub(super) queue: SendQueue,
    pub(super) status: Status,
    last_record_slot: u64,
    inbox: Inbox,
    pub(super) jobs: Jobs,
    /// While no ack has come since connecting, the hello is repeated at this time. The hello
    /// is also retained, so a controller that subscribes later gets it from the broker; the
    /// repeat covers brokers that lost it (a restart without persistence).
    hello_due: Option<u64>,
    /// The last record stored in the outbox (what Home Assistant is shown).
    pub(super) last_record: Option<MeterRecord>,
}

impl Agent {
    /// Opens everything at `now`: key, outbox (with recovery), chain state, sources. Emits a
    /// `ChainRestart` when the chain state was lost and cannot be rebuilt from the outbox.
    pub fn start(cfg: AgentConfig, now: u64) -> Result<Agent> {
        let data = cfg.data_dir.clone();
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let (key, created) = crate::identity::load_or_create(&files::key_path(&data))?;
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
                    });
                }
                Err(e) => {
                    // A source that cannot be opened is skipped loudly; the others report.
                    tracing::error!(error = %e, "power source unavailable, skipped");
                    let mut st = SourceStatus {
                        source: format!("{sc:?}"),
                        ..SourceStatus::default()
                    };
                    st.count_error("unavailable", e.to_string());
                    status_sources.push(st);
                }
            }
        }
        if sources.is_empty() {
            anyhow::bail!("no power source could be opened");
        }

        // A device that never stored anything (a new key, or one `heliostat-agent id` made
        // before the first run) has no chain to lose: its chain starts at 0.
        let never_ran = created || (outbox.last_seq().is_none() && outbox.acked().is_none());
        let (saved, reason) = match files::load_state(&data) {
            SavedState::Found(s) => (Some(s), None),
            SavedState::Corrupt => (None, Some(RestartReason::StateCorrupt)),
            SavedState::Missing if never_ran => (None, None),
            SavedState::Missing => (None, Some(RestartReason::StateLost)),
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
        // Records sealed but neither acknowledged nor in the outbox any more were destroyed
        // on the disk (fsynced bytes damaged: recovery quarantined them). The chain cannot
        // bridge them: start a new one above everything used, saying why (their energy is
        // reported unmetered, never invented).
        let first_unacked = outbox.acked().and_then(SeqNo::next).unwrap_or(SeqNo(0));
        let next = meter.state().head.next_seq;
        let destroyed = destroyed_records(&outbox, first_unacked, next)?;
        let (reason, recovered) = if destroyed > 0 && reason.is_none() {
            tracing::error!(
                destroyed,
                next = next.0,
                "outbox: unacknowledged records were destroyed on disk (see quarantine/); starting a new chain"
            );
            (Some(RestartReason::StateCorrupt), false)
        } else {
            (reason, recovered)
        };
        if let (Some(reason), false) = (reason, recovered) {
            let floor = first_unacked.max(next);
            let env = meter.restart(reason.clone(), now, floor, &key);
            let seq = env
                .open::<attest::msg::ChainRestart>()
                .map(|r| r.link.seq)
                .unwrap_or(floor);
            outbox.append(seq, env.as_bytes())?;
            meter.commit_restart(&env);
            tracing::warn!(
                ?reason,
                seq = seq.0,
                "chain state lost: started a new chain"
            );
        }
        files::save_state(&data, meter.state())?;

        let topics = Topics::for_device(&key.device_id());
        let queue = SendQueue::new(SendPolicy {
            resend_after_ms: cfg.link.resend_after_ms,
            batch_max: cfg.link.batch_max,
            fresh_per_tick: 1,
        });
        let jobs = Jobs::open(&cfg, job_load, simulated);
        let nonces = match files::load_nonces(&data, now) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "COMMANDS REFUSED: the nonce window is unreadable (repair or remove the file)");
                None
            }
        };
        let controller = files::controller_key(&data, cfg.controller_key());
        let inbox = Inbox::new(controller, key.device_id(), nonces);
        let status = Status {
            device_id: key.device_id().to_string(),
            version: crate::reported_version(&cfg.image_release_file),
            sources: status_sources,
            jobs: jobs.status(&cfg),
            link: LinkStatus {
                broker: format!("{}:{}", cfg.link.host, cfg.link.port),
                ..LinkStatus::default()
            },
            ..Status::default()
        };
        // GPUs are offered only when jobs may use them.
        let offer = crate::hardware::discover(
            std::path::Path::new("/"),
            cfg.jobs.enabled && cfg.jobs.prefer_gpu,
        );
        tracing::info!(device = %key.device_id(), version = %status.version, pending = outbox.depth(), board = %offer.board, gpus = offer.gpus.len(), cpu = %offer.cpu_model, "agent started");
        let mut agent = Agent {
            cfg,
            key,
            topics,
            outbox,
            meter,
            sources,
            channel_infos,
            offer,
            queue,
            status,
            last_record_slot: 0,
            inbox,
            hello_due: None,
            last_record: None,
            jobs,
        };
        agent.close_interrupted_job(now);
        Ok(agent)
    }

    /// The device's signed hello at `now`.
    pub fn hello(&self, now: u64) -> Envelope {
        signed_hello(
            &self.cfg,
            &self.key,
            &self.status.version,
            &self.offer,
            &self.channel_infos,
            now,
        )
    }

    /// Samples every source and, on a record boundary, seals and stores a record; returns
    /// whether it was a record boundary.
    pub fn tick_meter(&mut self, now: u64) -> bool {
        for s in self.sources.iter_mut() {
            let n = s.source.channels().len();
            let st = &mut self.status.sources[s.status_index];
            match s.source.sample(now) {
                Ok(samples) => {
                    for (c, sample) in samples.into_iter().enumerate().take(n) {
                        self.meter.feed(s.first_channel + c, now, sample);
                    }
                }
                Err(e) => {
                    let detail = e.to_string();
                    let changed = st.last_error.as_deref() != Some(&detail);
                    if st.count_error(e.reason(), detail) || changed {
                        tracing::warn!(source = %s.source.describe(), error = %e, "source read failed");
                    }
                    for c in 0..n {
                        self.meter.feed(s.first_channel + c, now, None);
                    }
                }
            }
            for (reason, total) in s.source.faults() {
                if st.set_fault_count(reason, total) {
                    tracing::warn!(
                        source = %s.source.describe(),
                        reason,
                        count = total,
                        "source dropped bad input (counted in status, logged once per reason)"
                    );
                }
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
    pub(super) fn publish_status(&self, client: &AsyncClient) {
        if !self.status.link.connected {
            return;
        }
        let body = DeviceStatus::Online(self.online());
        if let Ok(text) = serde_json::to_string(&body) {
            let _ = client.try_publish(&self.topics.status, QoS::AtLeastOnce, true, text);
        }
    }

    /// What the retained status says while online.
    pub(super) fn online(&self) -> Online {
        let o = &self.status.outbox;
        Online {
            agent: self.status.version.clone(),
            next_seq: Some(self.meter.state().head.next_seq),
            outbox_depth: Some(o.depth as u64),
            outbox_blocked: o.blocked.clone(),
            quarantined: Some(o.quarantined),
            sources: self.status.sources.iter().map(|s| s.health()).collect(),
        }
    }

    pub(super) fn record(&mut self, now: u64) {
        let (rec, env) = self.meter.seal(now, &self.key);
        match self.outbox.append(rec.link.seq, env.as_bytes()) {
            Ok(()) => {
                self.meter.commit(&rec, &env);
                if let Err(e) = files::save_state(&self.cfg.data_dir, self.meter.state()) {
                    // The outbox holds the record; the next start catches up from it.
                    tracing::error!(error = %e, "saving chain state failed");
                }
                if self.status.outbox.blocked.take().is_some() {
                    tracing::info!("outbox accepts records again");
                }
                self.status.last_record = serde_json::to_value(&rec).ok();
                self.last_record = Some(rec);
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

    pub(super) fn write_status(&mut self, now: u64) {
        let o = &mut self.status.outbox;
        o.depth = self.outbox.depth();
        o.bytes = self.outbox.pending_bytes();
        o.acked = self.outbox.acked();
        o.in_flight = self.queue.in_flight();
        o.quarantined = self.outbox.stats.quarantined;
        o.refused = self.outbox.stats.refused;
        self.status.updated_ms = now;
        files::write_status(&self.cfg.data_dir, &self.status);
    }

    /// Publishes what is due.
    pub(super) fn tick_send(&mut self, client: &AsyncClient, now: u64) {
        if !self.status.link.connected {
            return;
        }
        if let Some(due) = self.hello_due.filter(|d| now >= *d) {
            let _ = client.try_publish(
                &self.topics.hello,
                QoS::AtLeastOnce,
                true,
                self.hello(now).into_bytes(),
            );
            self.hello_due = Some(due.max(now) + HELLO_REPEAT_MS);
        }
        let pending: Vec<SeqNo> = self.outbox.pending().collect();
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

    pub(super) fn on_connect(&mut self, client: &AsyncClient, now: u64) {
        self.hello_due = Some(now + HELLO_REPEAT_MS);
        self.status.link.connected = true;
        self.status.link.connects += 1;
        self.status.link.last_error = None;
        self.queue.on_disconnect();
        let _ = client.try_subscribe(&self.topics.ack, QoS::AtLeastOnce);
        let _ = client.try_subscribe(&self.topics.cmd, QoS::AtLeastOnce);
        let _ = client.try_subscribe(&self.topics.keys, QoS::AtLeastOnce);
        let _ = client.try_publish(
            &self.topics.hello,
            QoS::AtLeastOnce,
            true,
            self.hello(now).into_bytes(),
        );
        let online = DeviceStatus::Online(Online {
            agent: self.status.version.clone(),
            ..Online::default()
        });
        if let Ok(text) = serde_json::to_string(&online) {
            let _ = client.try_publish(&self.topics.status, QoS::AtLeastOnce, true, text);
        }
        tracing::info!(broker = %self.status.link.broker, pending = self.outbox.depth(), "connected");
    }

    /// The link went down with `error`.
    pub(super) fn on_disconnect(&mut self, error: String) {
        if self.status.link.connected || self.status.link.last_error.as_deref() != Some(&error) {
            tracing::warn!(error = %error, "broker connection down; retrying with backoff");
        }
        self.status.link.connected = false;
        self.status.link.last_error = Some(error);
        self.queue.on_disconnect();
    }

    pub(super) fn on_ack(&mut self, payload: &[u8]) {
        match self.inbox.ack(payload, &self.outbox) {
            Ok(ack) => {
                if let Err(e) = self.outbox.ack(ack.up_to()) {
                    tracing::error!(error = %e, "recording an ack failed");
                    return;
                }
                self.queue.on_ack(ack.up_to());
                self.hello_due = None;
            }
            Err(why) => {
                self.status.link.acks_rejected += 1;
                tracing::warn!(reason = %why, "ack rejected");
            }
        }
    }

    /// The controller's retained key rotations: followed from the key believed now (never
    /// back, never onto a fork), saved durably, then believed.
    pub(super) fn on_key_links(&mut self, payload: &[u8]) {
        let current = self.inbox.controller();
        let newest = attest::keys::decode_links(payload)
            .and_then(|links| attest::keys::KeyHistory::from_links(current, &links))
            .map(|h| h.newest());
        match newest {
            Ok(k) if k == current => {}
            Ok(k) => {
                if let Err(e) =
                    files::write_durable(&files::key_links_path(&self.cfg.data_dir), payload)
                {
                    tracing::error!(error = %e, "saving the controller's key rotation failed; not followed");
                    return;
                }
                self.inbox.set_controller(k);
                tracing::info!(from = %current, to = %k, "controller key rotated: only the new key is believed");
            }
            Err(e) => tracing::warn!(error = %e, "controller key rotation refused"),
        }
    }

    pub(super) fn reject_command(&mut self, why: CommandRejection) {
        let reason = why.reason();
        // Once per reason at warn, then quietly: a flood must not flood the log.
        if self.status.count_command_rejection(reason) {
            tracing::warn!(reason, detail = %why, "command rejected");
        } else {
            tracing::debug!(reason, detail = %why, "command rejected");
        }
    }

    pub(super) fn on_command(&mut self, payload: &[u8], now: u64) {
        let cmd = match self.inbox.command(payload, now) {
            Ok(cmd) => cmd.into_command(),
            Err(why) => return self.reject_command(why),
        };
        if let Some(w) = self.inbox.nonces()
            && let Err(e) = files::save_nonces(&self.cfg.data_dir, w)
        {
            // Acting on it unsaved would let it replay after a restart.
            tracing::error!(error = %e, "saving the command nonces failed; command not run");
            return;
        }
        match cmd.body {
            CommandBody::Resend { from, to } => self.queue.resend(from, to),
            CommandBody::RunJob(spec) => self.start_job(spec, now),
            CommandBody::Pause { job } => self.control_job(job, Control::Pause),
            CommandBody::Resume { job } => self.control_job(job, Control::Resume),
            CommandBody::Cancel { job } => self.control_job(job, Control::Cancel),
            CommandBody::Drain => self.drain(),
        }
    }

    /// Seals a record now unless one was sealed at this millisecond: receipts' counters
    /// are always those of a signed record.
    pub(super) fn force_record(&mut self, now: u64) {
        if self.meter.state().head.last_timestamp.0 < now {
            self.record(now);
        }
    }
}

/// A hello signed with `key` at `now`: the site, price and embodied emissions from `cfg`,
/// the hardware from `offer`, the channels given (the agent's own, or none for the one
/// a first-boot provisioning signs to prove its key).
pub fn signed_hello(
    cfg: &AgentConfig,
    key: &KeyPair,
    version: &str,
    offer: &crate::hardware::Offer,
    channels: &[ChannelInfo],
    now: u64,
) -> Envelope {
    let s = &cfg.site;
    let hello = Hello {
        device: key.device_id(),
        public_key: key.public(),
        timestamp: TimestampMs(now),
        agent_version: version.to_string(),
        hardware: Hardware {
            board: offer.board.clone(),
            gpus: offer.gpus.clone(),
            cpu_model: offer.cpu_model.clone(),
            cpu_cores: offer.cpu_cores,
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
        channels: channels.to_vec(),
        price_micro_per_gpu_hour: s.price_micro_per_gpu_hour,
    };
    Envelope::seal(&hello, key)
}

/// How many unacknowledged records the outbox should hold and does not: the held sequence
/// numbers must run on without a gap from the first unacknowledged one to the meter's next,
/// except where a held `ChainRestart` jumps ahead.
fn destroyed_records(outbox: &Outbox, first_unacked: SeqNo, next: SeqNo) -> Result<u64> {
    let mut expected = first_unacked;
    let mut missing = 0u64;
    for s in outbox.pending().collect::<Vec<_>>() {
        if s != expected {
            let restart = outbox
                .read(s)?
                .and_then(|b| Envelope::decode(&b).ok())
                .is_some_and(|e| e.open::<attest::msg::ChainRestart>().is_ok());
            if !restart && s > expected {
                missing += s.0 - expected.0;
            }
        }
        expected = SeqNo(s.0 + 1);
    }
    if next > expected {
        missing += next.0 - expected.0;
    }
    Ok(missing)
}
