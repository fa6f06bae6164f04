//! The controller's link to the broker: client options (credentials, TLS through
//! `heliostat-mqtt-tls`) and the thread that keeps revoked devices off the broker.

use std::time::Duration;

use anyhow::Result;
use attest::DeviceId;
use rumqttc::MqttOptions;
use tokio::sync::mpsc;

use crate::ingest::Outgoing;
use crate::store::sqlite::SqliteStore;

/// The MQTT client options from `[broker]`: credentials, and TLS when a CA file is set
/// (rumqttc then talks to the returned bridge, which makes every connection a TLS one with
/// the controller's client certificate if there is one).
pub(super) fn mqtt_options(
    b: &crate::config::BrokerConfig,
) -> anyhow::Result<(MqttOptions, Option<heliostat_mqtt_tls::Bridge>)> {
    let client_id = format!("heliostat-controller-{}", std::process::id());
    let bridge = match &b.tls_ca_file {
        Some(ca) => {
            let files = heliostat_mqtt_tls::ClientFiles {
                ca: ca.clone(),
                cert_and_key: b.tls_client_cert.clone().zip(b.tls_client_key.clone()),
            };
            let config = heliostat_mqtt_tls::client_config(&files)?;
            Some(heliostat_mqtt_tls::Bridge::start(&b.host, b.port, config)?)
        }
        None => None,
    };
    let mut o = match &bridge {
        Some(t) => {
            let mut o = MqttOptions::new(client_id, t.socket().to_string_lossy(), 0);
            o.set_transport(rumqttc::Transport::Unix);
            o
        }
        None => MqttOptions::new(client_id, &b.host, b.port),
    };
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(4 << 20, 4 << 20);
    if let Some(u) = &b.username {
        o.set_credentials(u, b.password.clone().unwrap_or_default());
    }
    Ok((o, bridge))
}

/// The thread that removes revoked devices from the broker's dynamic security plugin: every
/// second it reads which revoked devices had a broker login and sends their removal once per
/// connection (`generation` counts connections; removing twice is harmless).
pub(super) fn spawn_broker_sync(
    db: std::path::PathBuf,
    tx: mpsc::UnboundedSender<Outgoing>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    use crate::store::broker::BrokerStore;
    let store = SqliteStore::open(&db)?;
    Ok(std::thread::Builder::new()
        .name("broker-sync".into())
        .spawn(move || {
            let mut sent: std::collections::HashSet<DeviceId> = Default::default();
            let mut seen = 0;
            while !*stop.borrow() {
                let now = generation.load(std::sync::atomic::Ordering::SeqCst);
                if now != seen {
                    sent.clear();
                    seen = now;
                }
                match store.revoked_broker_logins() {
                    Ok(revoked) => {
                        for d in revoked {
                            if !sent.insert(d) {
                                continue;
                            }
                            tracing::info!(device = %d, "removing a revoked device from the broker");
                            let commands = crate::broker_perimeter::revoke_commands(&d);
                            let _ = tx.send(Outgoing {
                                topic: crate::broker_perimeter::DYNSEC_TOPIC.into(),
                                payload: commands.to_string().into_bytes(),
                                retain: false,
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading revoked devices"),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })?)
}
