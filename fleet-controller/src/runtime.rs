//! The running controller (ingest part): an MQTT client on an external broker with shared
//! subscriptions, feeding batches to [`Ingest`] in two stages on threads of their own
//! (decoding and signatures ahead, then chains, SQLite and acks) and publishing what it
//! returns (acks, resend commands).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::ControllerConfig;
use std::collections::HashMap;

use attest::{DeviceId, PublicKey};

use crate::ingest::{Enrollment, Ingest, IngestConfig, Outgoing, Prepared, prepare};
use crate::queue::Recv;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

mod broker_link;
mod key;
mod pkcs11;

use broker_link::{mqtt_options, spawn_broker_sync};
pub use key::{KEY_ENV, controller_key};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the controller writes to `status.json` after every batch.
#[derive(Debug, Default, Serialize)]
pub struct IngestStatus {
    /// Messages stored since start.
    pub stored: u64,
    /// Rejections by reason since start.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Rejections by device and reason since start (devices that had any).
    #[serde(default)]
    pub rejected_by_device:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Messages that came after a missing one and were held for it (not rejections).
    pub held_out_of_order: u64,
    /// Messages shed by the full ingest queue since start (sent again by their agents).
    pub shed: u64,
    /// Their bytes.
    pub shed_bytes: u64,
    /// When this was written.
    pub updated_ms: u64,
}

/// Opens the store and the key as configured.
pub fn open(cfg: &ControllerConfig) -> Result<Ingest<SqliteStore>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let key = controller_key(cfg)?;
    let store = SqliteStore::open(&cfg.db_path())?;
    let approved = cfg
        .enrollment
        .approved
        .iter()
        .filter_map(|s| attest::DeviceId::parse(s).ok())
        .collect();
    let icfg = IngestConfig {
        enrollment: Enrollment {
            auto_approve: cfg.enrollment.auto_approve,
            approved,
            max_pending: cfg.enrollment.max_pending,
            max_pending_messages: cfg.enrollment.max_pending_messages,
            pending_expiry_ms: cfg.enrollment.pending_expiry_ms,
        },
        policy: attest::chain::ChainPolicy {
            max_future_skew_ms: cfg.ingest.max_future_skew_ms,
            ..Default::default()
        },
        resend_after_ms: cfg.ingest.resend_after_ms,
    };
    Ok(Ingest::new(store, key, icfg))
}

/// Runs ingest until `shutdown` resolves.
pub async fn run(
    cfg: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    run_with_api_listener(cfg, shutdown, None).await
}

/// [`run`], serving the HTTP API on `api` (already bound, for example to port 0 by a caller
/// that must know the address first) instead of binding `api.listen`.
pub async fn run_with_api_listener(
    cfg: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    api: Option<std::net::TcpListener>,
) -> Result<()> {
    // The intensity inputs first: a bad hourly CSV stops the controller here, naming its
    // line, before it takes any message.
    let intensity = std::sync::Arc::new(crate::intensity::IntensityResolver::from_config(
        &cfg.accounting,
    )?);
    let mut ingest = open(&cfg)?;
    // The key rotations devices follow (retained on every connection): the key in use must
    // be the newest of them (docs/security.md, "Keys").
    let key_links = ingest.store().key_rotations()?;
    let key_links_msg = (!key_links.is_empty()).then(|| attest::keys::encode_links(&key_links));
    let history = attest::keys::KeyHistory::from_links(ingest.key().public(), &key_links)
        .map_err(|e| anyhow::anyhow!("the controller's key rotations: {e}"))?;
    anyhow::ensure!(
        history.newest() == ingest.key().public(),
        "the controller key {} is not the newest of its rotations ({}): finish `fleet-controller rotate-key`",
        ingest.key().public(),
        history.newest()
    );
    let status_path = cfg.data_dir.join("status.json");
    let queue = crate::queue::ByteQueue::new(cfg.ingest.queue_max_bytes);
    let in_rx = queue.clone();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    let dispatch_tx = out_tx.clone();
    // The broker's dynamic security plugin (`broker.dynsec`): enrolled devices' logins go
    // there from the API, revoked devices' leave it from the sync thread; each (re)connection
    // makes the thread say every revocation again.
    let broker_tx = cfg.broker.dynsec.then(|| out_tx.clone());
    let broker_generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (batch_max, batch_max_bytes, wait) = (
        cfg.ingest.batch_max,
        cfg.ingest.batch_max_bytes,
        Duration::from_millis(cfg.ingest.batch_wait_ms),
    );
    let epoch_every = cfg.epochs.interval_ms;
    // The key is loaded once, by `open`.
    let key = ingest.key().clone();
    let epoch_key = key.clone();
    // One shutdown for every part: the ingest thread ends when its queue is closed (after
    // the batch in hand), the EVM anchor thread and the HTTP API when `stop` turns true,
    // and `run` returns once they have.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Two stages, one thread each: `ingest-sig` batches what the MQTT loop queued, decodes
    // it and checks its signatures (on every core) while `ingest` checks the chains of the
    // batch before, commits it and signs its acks. A device's key never changes, so the
    // first stage keeps the keys it has read.
    let (prep_tx, prep_rx) = std::sync::mpsc::sync_channel::<(Prepared, (u64, u64))>(1);
    let keys_db = SqliteStore::open(&cfg.db_path())?;
    let sig_thread = std::thread::Builder::new()
        .name("ingest-sig".into())
        .spawn(move || {
            let mut keys: HashMap<DeviceId, PublicKey> = HashMap::new();
            // OpenTelemetry (a no-op unless OTEL_* exports): decoding and signature
            // checking time per batch.
            let verify_time = heliostat_telemetry::meter()
                .f64_histogram("heliostat.ingest.verify.duration")
                .with_unit("s")
                .with_description("Decoding and signature checking of one ingest batch")
                .build();
            loop {
                let first = match in_rx.recv_timeout(Duration::from_millis(1_000)) {
                    Recv::Message(m) => m,
                    Recv::Timeout => continue,
                    Recv::Closed => return,
                };
                let mut bytes = first.1.len();
                let mut batch = vec![first];
                let deadline = Instant::now() + wait;
                // A catch-up of many records goes in batches of about `batch_max_bytes`:
                // one is verified while the one before is committed.
                while batch.len() < batch_max && bytes < batch_max_bytes {
                    match in_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Recv::Message(m) => {
                            bytes += m.1.len();
                            batch.push(m);
                        }
                        Recv::Timeout | Recv::Closed => break,
                    }
                }
                let started = Instant::now();
                let prepared = prepare(&batch, |id| {
                    if let Some(k) = keys.get(&id) {
                        return Some(*k);
                    }
                    let k = keys_db.device(id).ok().flatten()?.public_key;
                    keys.insert(id, k);
                    Some(k)
                });
                verify_time.record(started.elapsed().as_secs_f64(), &[]);
                if prep_tx.send((prepared, in_rx.shed())).is_err() {
                    return;
                }
            }
        })?;
    let ingest_thread = std::thread::Builder::new().name("ingest".into()).spawn(move || {
        let mut next_epoch = now_ms() + epoch_every;
        let meter = heliostat_telemetry::meter();
        let stored_total = meter
            .u64_counter("heliostat.ingest.stored")
            .with_description("Chain messages stored")
            .build();
        let rejected_total = meter
            .u64_counter("heliostat.ingest.rejected")
            .with_description("Messages rejected, by reason")
            .build();
        let (mut stored_before, mut rejected_before) = (0u64, HashMap::<String, u64>::new());
        loop {
            // Wake for the epoch timer even when no message comes.
            let wait_ms = next_epoch.saturating_sub(now_ms()).clamp(1, 1_000);
            let got = match prep_rx.recv_timeout(Duration::from_millis(wait_ms)) {
                Ok(p) => Some(p),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                // The first stage ended (the queue closed) and everything it sent is done.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if now_ms() >= next_epoch {
                next_epoch = now_ms() + epoch_every;
                if let Err(e) = crate::anchor::local::close_epoch(ingest.store_mut(), &epoch_key, now_ms()) {
                    tracing::error!(error = %e, "closing an epoch failed; retried next interval");
                }
            }
            let Some((prepared, (shed, shed_bytes))) = got else { continue };
            let messages = prepared.chain_messages();
            match ingest.handle_prepared(prepared, now_ms()) {
                Ok(out) => {
                    if !out.is_empty() {
                        crate::crash::point("ingest-committed");
                    }
                    for o in out {
                        let _ = out_tx.send(o);
                    }
                }
                // Nothing of the batch was acknowledged; the agents send it again.
                Err(e) => tracing::error!(error = %e, messages, "storing a batch failed"),
            }
            stored_total.add(ingest.stored - stored_before, &[]);
            stored_before = ingest.stored;
            for (reason, n) in &ingest.rejected {
                let before = rejected_before.entry(reason.to_string()).or_default();
                if *n > *before {
                    rejected_total.add(*n - *before, &[heliostat_telemetry::Attribute::new("reason", reason.to_string())]);
                    *before = *n;
                }
            }
            let status = IngestStatus {
                stored: ingest.stored,
                rejected: ingest.rejected.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                rejected_by_device: ingest
                    .rejected_by_device
                    .iter()
                    .map(|(d, c)| (d.to_string(), c.iter().map(|(k, v)| (k.to_string(), *v)).collect()))
                    .collect(),
                held_out_of_order: ingest.held_out_of_order,
                shed,
                shed_bytes,
                updated_ms: now_ms(),
            };
            write_json(&status_path, &status);
        }
    })?;

    let mut parts: Vec<std::thread::JoinHandle<()>> = vec![sig_thread, ingest_thread];
    // The devices' job events go to dispatch (never to ingest: they are unsigned advice);
    // when dispatch is behind they are dropped, and the next progress report says the same.
    let (events_tx, events_rx) = std::sync::mpsc::sync_channel::<(DeviceId, Vec<u8>)>(1024);
    if cfg.market.enabled {
        parts.push(spawn_dispatch(
            &cfg,
            key.clone(),
            dispatch_tx,
            events_rx,
            stop_rx.clone(),
        )?);
    }
    if let Some(tx) = broker_tx.clone() {
        parts.push(spawn_broker_sync(
            cfg.db_path(),
            tx,
            broker_generation.clone(),
            stop_rx.clone(),
        )?);
    }
    let mut api_task = None;
    if cfg.epochs.anchor == crate::config::AnchorBackend::Evm {
        let evm = cfg
            .epochs
            .evm
            .clone()
            .context("epochs.evm is not configured")?;
        parts.push(crate::anchor::evm::spawn(
            evm,
            cfg.db_path(),
            stop_rx.clone(),
        )?);
    }
    if cfg.alerts.enabled {
        parts.push(crate::alerts::spawn(
            cfg.alerts.clone(),
            cfg.db_path(),
            stop_rx.clone(),
        )?);
    }
    if let Some(s) = cfg.settlement.clone() {
        let evm = cfg
            .epochs
            .evm
            .clone()
            .context("settlement needs epochs.evm")?;
        parts.push(crate::settlement::spawn(
            s,
            evm,
            cfg.db_path(),
            stop_rx.clone(),
        )?);
    }
    if api.is_some() || !cfg.api.listen.is_empty() {
        let state = crate::api::ApiState {
            limits: crate::api::ApiLimits::from(&cfg.api),
            escrow_run_ms: cfg.market.default_run_ms,
            settlement_contract: cfg.settlement.as_ref().map(|s| s.contract.clone()),
            settlement_min_micro: cfg.settlement.as_ref().map(|s| s.min_micro),
            spot_check_ppm: cfg.market.spot_check_ppm,
            job_power_w: f64::from(cfg.market.job_power_w),
            broker_cmd: broker_tx.clone(),
            guard: std::sync::Arc::new(crate::api::guard::Guard::from(&cfg.api)),
            console: std::sync::Arc::new(
                crate::console::Console::new(&cfg.console)
                    .with_alert_rules(cfg.alerts.rules.iter().map(|r| r.name.clone()).collect()),
            ),
            ..crate::api::ApiState::new(
                std::sync::Arc::new(crate::store::pool::SqlitePool::new(cfg.db_path())),
                cfg.data_dir.join("status.json"),
                std::sync::Arc::new(key.clone()),
                intensity,
                cfg.data_dir.join("blobs"),
            )
        };
        let listener = match api {
            Some(l) => {
                l.set_nonblocking(true)
                    .context("making the HTTP API listener non-blocking")?;
                tokio::net::TcpListener::from_std(l).context("the HTTP API listener")?
            }
            None => tokio::net::TcpListener::bind(&cfg.api.listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen for the HTTP API on {}: {e}", cfg.api.listen)
                })?,
        };
        let listen = listener.local_addr().context("the HTTP API address")?;
        tracing::info!(%listen, "HTTP API listening");
        let mut stopped = stop_rx.clone();
        api_task = Some(tokio::spawn(async move {
            let serve =
                // The client's address reaches the console's login limiter.
                axum::serve(
                    listener,
                    crate::api::app(state)
                        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        }));
    }
    let b = &cfg.broker;
    let (o, tls) = mqtt_options(b)?;
    let tls_error = tls.as_ref().map(|t| t.last_error());
    let (client, mut events) = AsyncClient::new(o, 1024);
    // An empty group means a plain subscription (one controller, or a broker without
    // shared subscriptions).
    let share = if b.share_group.is_empty() {
        String::new()
    } else {
        format!("$share/{}/", b.share_group)
    };
    let topics = [
        format!(
            "{share}{}",
            attest::topics::every_device(attest::topics::Leaf::Records)
        ),
        format!(
            "{share}{}",
            attest::topics::every_device(attest::topics::Leaf::Hello)
        ),
        format!(
            "{share}{}",
            attest::topics::every_device(attest::topics::Leaf::Jobs)
        ),
    ];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(o) = out_rx.recv() => {
                if let Err(e) = client.publish(o.topic, QoS::AtLeastOnce, o.retain, o.payload).await {
                    tracing::error!(error = %e, "publishing an ack failed");
                }
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in &topics {
                        client.subscribe(t, QoS::AtLeastOnce).await?;
                    }
                    if b.dynsec {
                        client
                            .subscribe(crate::broker_perimeter::DYNSEC_RESPONSE, QoS::AtLeastOnce)
                            .await?;
                        broker_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if let Some(m) = &key_links_msg {
                        client
                            .publish(attest::topics::CONTROLLER_KEYS, QoS::AtLeastOnce, true, m.clone())
                            .await?;
                    }
                    tracing::info!(broker = %format!("{}:{}", b.host, b.port), "controller connected");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == crate::broker_perimeter::DYNSEC_RESPONSE {
                        crate::broker_perimeter::log_responses(&p.payload);
                        continue;
                    }
                    if let Some((device, attest::topics::Leaf::Jobs)) = attest::topics::parse(&p.topic) {
                        // Never waits either: a full channel drops the event (counted by
                        // dispatch as `shed` is not: the next report repeats it).
                        let _ = events_tx.try_send((device, p.payload.to_vec()));
                        continue;
                    }
                    // Never waits: a full queue sheds (counted), the agent sends again.
                    if !queue.try_push((p.topic, p.payload.to_vec())) {
                        let (n, _) = queue.shed();
                        if n.is_power_of_two() {
                            tracing::warn!(shed = n, "ingest queue full: shedding messages (agents send them again)");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let tls = tls_error.as_ref().and_then(|l| l.get()).unwrap_or_default();
                    tracing::warn!(error = %e, tls, "broker connection down; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
    queue.close();
    drop(tls);
    let _ = stop_tx.send(true);
    if let Some(t) = api_task {
        let _ = t.await;
    }
    // Waited for without a blocking-pool thread (which would itself outlive `run`).
    while !parts.iter().all(|p| p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in parts {
        let _ = p.join();
    }
    Ok(())
}

/// What the dispatch thread did with the devices' job events since start (written to
/// `dispatch.json` beside `status.json`, served as metrics).
#[derive(Debug, Default, Serialize)]
pub struct DispatchStatus {
    /// Job events by what they did: `moved`, `progress`, `ignored` (not a job the device
    /// holds), `malformed` (refused: oversize or not a job event).
    pub job_events: std::collections::BTreeMap<&'static str, u64>,
    /// When this was written.
    pub updated_ms: u64,
}

/// Largest job event taken, bytes (a progress report is about 300).
pub const MAX_JOB_EVENT_BYTES: usize = 16 << 10;

/// The `dispatch` thread: every `market.tick_ms` the scheduler decides the open jobs over
/// the devices' offers (its own connection to the database), and the signed commands go
/// out through the MQTT loop; between ticks it takes the devices' job events. Stops with
/// `stop`.
fn spawn_dispatch(
    cfg: &ControllerConfig,
    key: attest::KeyPair,
    out: mpsc::UnboundedSender<Outgoing>,
    events: std::sync::mpsc::Receiver<(DeviceId, Vec<u8>)>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut store = SqliteStore::open(&cfg.db_path())?;
    let m = cfg.market.clone();
    let status_path = cfg.data_dir.join("dispatch.json");
    // Dispatch sends a placement's `RunJob` when it is decided: the scheduler may plan a
    // start no later than the next tick.
    let scheduler = crate::market::Scheduler::with_bundled_table(crate::market::SchedulerConfig {
        lease_grace_ms: m.lease_grace_ms,
        lead_ms: m.tick_ms,
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("the scheduler's intensity table: {e}"))?;
    let mut dispatcher = crate::dispatch::Dispatcher::new(
        scheduler,
        key,
        crate::dispatch::DispatchConfig {
            online_within_ms: m.online_within_ms,
            job_power_w: m.job_power_w,
            default_run_ms: m.default_run_ms,
            progress_grace_ms: m.progress_grace_ms,
            fee_ppm: m.fee_ppm,
            slash_ppm: m.slash_ppm,
            min_stake: m.min_stake,
            probe_every_ms: m.probe_every_ms,
            spot_check_ppm: m.spot_check_ppm,
            ..Default::default()
        },
    )
    .with_blob_dir(cfg.data_dir.join("blobs"));
    // The operator's forecasts: a bad file stops the start here, naming its line.
    let mut forecasts = m
        .solar_forecast_csv
        .as_deref()
        .map(crate::dispatch::forecasts::ForecastFile::new);
    if let Some(Some(r)) = forecasts.as_mut().map(|f| f.changed()) {
        let f = r.map_err(|e| anyhow::anyhow!("config key `market.solar_forecast_csv`: {e}"))?;
        tracing::info!(devices = f.len(), "operator solar forecasts read");
        dispatcher.set_solar_forecasts(f);
    }
    Ok(std::thread::Builder::new()
        .name("dispatch".into())
        .spawn(move || {
            let mut next = 0u64;
            let mut status = DispatchStatus::default();
            let mut dirty = true;
            while !*stop.borrow() {
                let now = now_ms();
                if now >= next {
                    next = now + m.tick_ms;
                    if let Some(Some(r)) = forecasts.as_mut().map(|f| f.changed()) {
                        match r {
                            Ok(f) => {
                                tracing::info!(devices = f.len(), "operator solar forecasts read again");
                                dispatcher.set_solar_forecasts(f);
                            }
                            Err(e) => tracing::error!(error = %e, "operator solar forecasts refused; the last good ones kept"),
                        }
                    }
                    match dispatcher.tick(&mut store, now) {
                        Ok(commands) => {
                            for c in commands {
                                let _ = out.send(c);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "dispatch failed; retried next tick"),
                    }
                    if std::mem::take(&mut dirty) {
                        status.updated_ms = now;
                        write_json(&status_path, &status);
                    }
                }
                let Ok((device, payload)) = events.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                dirty = true;
                let effect = match crate::dispatch::parse_job_event(&payload, MAX_JOB_EVENT_BYTES) {
                    Err(why) => {
                        tracing::debug!(%device, %why, "job event refused");
                        "malformed"
                    }
                    Ok(e) => match dispatcher.job_event(&mut store, device, &e, now_ms()) {
                        Ok(crate::dispatch::EventEffect::Moved(_)) => "moved",
                        Ok(crate::dispatch::EventEffect::Progress) => "progress",
                        Ok(crate::dispatch::EventEffect::Ignored) => "ignored",
                        Err(e) => {
                            tracing::error!(error = %e, "storing a job event failed");
                            "failed"
                        }
                    },
                };
                *status.job_events.entry(effect).or_default() += 1;
            }
        })?)
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename.
fn write_json(path: &std::path::Path, value: &impl Serialize) {
    if let Ok(b) = serde_json::to_vec_pretty(value) {
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, b).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}
