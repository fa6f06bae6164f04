//! The running agent: samples the sources, seals records into the outbox, and keeps the
//! MQTT link (rumqttc) publishing whatever the controller has not acknowledged.
//!
//! Rooms:
//! - [`agent`]: the agent's state and one reaction per event (meter tick, send tick,
//!   connection, ack, command), each given the time; it holds the sans-IO parts that decide
//!   (meter, send queue, [`Inbox`](crate::inbox::Inbox), job desk) and carries out what
//!   they say on the outbox, the data files and the MQTT client.
//! - [`jobs`](self::jobs): the job side of that: threads, the marker file, receipts, the
//!   governor's step.
//! - [`blobs`]: fetching and checking a job's inputs, preparing it (off the task).
//! - [`files`]: the data directory's files and how each is written.
//! - [`mqtt`]: the topics, the client options (TLS, last will) and the reconnect backoff.
//! - this file: the loop. One task owns the agent and reacts to three clocks and one
//!   channel: the sample tick, the send tick, the link's events (the MQTT event loop runs
//!   in its own task and forwards them), and shutdown. It alone reads the clock. Nothing
//!   here blocks for long: source reads are small sysfs or in-memory reads, outbox appends
//!   are one write and one fsync.

mod agent;
mod blobs;
pub mod files;
mod jobs;
pub mod mqtt;
mod prepare;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::Result;
use attest::Envelope;
use attest::msg::MeterRecord;
use rumqttc::{AsyncClient, Event, Packet};
use tokio::sync::mpsc;

pub use self::agent::{Agent, signed_hello};
pub use self::files::{key_path, status_path};
pub use self::mqtt::Topics;
pub use crate::clock::now_ms;
use crate::config::AgentConfig;

enum LinkEvent {
    Mqtt(Event),
    Down(String),
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let mut agent = Agent::start(cfg, now_ms())?;
    // Under systemd (Type=notify): ready once the outbox, chain and sources are open; the
    // meter loop feeds the watchdog.
    let mut service = crate::systemd::Notifier::from_env();
    service.notify(&format!(
        "READY=1\nSTATUS=device {}, agent {}",
        agent.key.device_id(),
        agent.status.version
    ));
    // Home Assistant discovery on the owner's broker: fed each record once it is stored.
    let (ha_tx, ha_rx) = tokio::sync::watch::channel(None);
    if let Some(ha) = agent.cfg.home_assistant.clone() {
        let dev = crate::home_assistant::DeviceInfo {
            id: agent.key.device_id(),
            board: agent.offer.board.clone(),
            version: agent.status.version.clone(),
        };
        tokio::spawn(crate::home_assistant::run(ha, dev, ha_rx));
    }
    // The owner's Prometheus endpoint, when asked for: a port that cannot be had stops the
    // start, naming it.
    let exposition = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(addr) = agent.cfg.metrics_listen.clone() {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("metrics_listen {addr}: {e}"))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(crate::metrics::serve(listener, exposition.clone()));
    }
    let (opts, tls) = mqtt::options(&agent.cfg, &agent.key.device_id(), &agent.topics)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let tls_error = tls.as_ref().map(|b| b.last_error());
    let (tx, mut rx) = mpsc::channel::<LinkEvent>(1024);
    // The jitter's seed is the only randomness: the clock's low bits differ between devices.
    let mut backoff = mqtt::Backoff::new(agent.cfg.link.backoff_max_ms, now_ms());
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(ev) => {
                    if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                        backoff.reset();
                    }
                    if tx.send(LinkEvent::Mqtt(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Behind the TLS bridge, rumqttc sees only a closed socket: say why.
                    let why = match tls_error.as_ref().and_then(|l| l.get()) {
                        Some(tls) => format!("{e} (TLS: {tls})"),
                        None => e.to_string(),
                    };
                    if tx.send(LinkEvent::Down(why)).await.is_err() {
                        return;
                    }
                    let wait = backoff.next_wait_ms();
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    });
    // OpenTelemetry metrics (no-ops unless OTEL_* exports): the outbox's depth, power by
    // source and records made, after every record.
    let meter = heliostat_telemetry::meter();
    let outbox_depth = meter
        .u64_gauge("heliostat.agent.outbox.depth")
        .with_description("Records in the outbox not yet acknowledged")
        .build();
    let power = meter
        .f64_gauge("heliostat.agent.power")
        .with_unit("W")
        .with_description("Mean power over the last record, by source")
        .build();
    let records = meter
        .u64_counter("heliostat.agent.records")
        .with_description("Signed meter records made")
        .build();
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
                service.tick(now);
                if agent.tick_meter(now) {
                    agent.publish_status(&client);
                    if agent.cfg.metrics_listen.is_some()
                        && let Ok(mut t) = exposition.lock()
                    {
                        *t = crate::metrics::render(&agent.status, agent.last_record.as_ref());
                    }
                    outbox_depth.record(agent.status.outbox.depth as u64, &[]);
                    if let Some(r) = &agent.last_record {
                        records.add(1, &[]);
                        for c in &r.channels {
                            let kind = serde_json::to_value(c.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                            power.record(c.power.0 as f64 / 1000.0, &[heliostat_telemetry::Attribute::new("source", kind)]);
                        }
                    }
                    if agent.cfg.home_assistant.is_some() {
                        let _ = ha_tx.send(agent.last_record.clone());
                    }
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
                    } else if p.topic == agent.topics.keys {
                        agent.on_key_links(&p.payload);
                    }
                }
                Some(LinkEvent::Mqtt(_)) => {}
                Some(LinkEvent::Down(e)) => agent.on_disconnect(e),
                None => break,
            },
        }
    }
    service.notify("STOPPING=1");
    let _ = client.try_disconnect();
    Ok(())
}

/// Reads a stored record back (for tests and `status`).
pub fn decode_record(bytes: &[u8]) -> Option<MeterRecord> {
    Envelope::decode(bytes).ok()?.open().ok()
}
