//! The MQTT side of the link: the device's topics, the client options (keep-alive, last
//! will, credentials, TLS) and the reconnection backoff.

use std::time::Duration;

use anyhow::Result;
use heliostat_mqtt_tls::{Bridge, ClientFiles};
use rumqttc::{LastWill, MqttOptions, QoS, Transport};

use crate::config::AgentConfig;

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
    /// The controller's key rotations (retained, the whole line; `attest::keys`).
    pub keys: String,
}

impl Topics {
    /// The device's topics (`attest::topics`: `heliostat/v1/dev/{id}/{leaf}`).
    pub fn for_device(id: &attest::DeviceId) -> Topics {
        use attest::topics::{Leaf, device};
        Topics {
            hello: device(id, Leaf::Hello),
            records: device(id, Leaf::Records),
            status: device(id, Leaf::Status),
            ack: device(id, Leaf::Ack),
            cmd: device(id, Leaf::Cmd),
            jobs: device(id, Leaf::Jobs),
            keys: attest::topics::CONTROLLER_KEYS.into(),
        }
    }
}

/// The client options from `[link]`: a retained `offline` last will on the status topic,
/// credentials, and TLS when a CA file is set. With TLS, rumqttc talks to the returned
/// [`Bridge`] (keep it as long as the client), which makes each connection a TLS one to
/// the broker. Must run inside the tokio runtime.
pub fn options(
    cfg: &AgentConfig,
    id: &attest::DeviceId,
    topics: &Topics,
) -> Result<(MqttOptions, Option<Bridge>)> {
    let l = &cfg.link;
    let client_id = format!("heliostat-agent-{id}");
    let bridge = match &l.tls_ca_file {
        Some(ca) => {
            let files = ClientFiles {
                ca: ca.clone(),
                cert_and_key: l.tls_client_cert.clone().zip(l.tls_client_key.clone()),
            };
            let config = heliostat_mqtt_tls::client_config(&files)?;
            Some(Bridge::start(&l.host, l.port, config)?)
        }
        None => None,
    };
    let mut o = match &bridge {
        Some(b) => {
            let mut o = MqttOptions::new(client_id, b.socket().to_string_lossy(), 0);
            o.set_transport(Transport::Unix);
            o
        }
        None => MqttOptions::new(client_id, &l.host, l.port),
    };
    o.set_keep_alive(Duration::from_secs(l.keepalive_s));
    o.set_clean_session(true);
    o.set_max_packet_size(
        2 * attest::batch::MAX_BATCH_LEN,
        2 * attest::batch::MAX_BATCH_LEN,
    );
    let offline = serde_json::to_string(&attest::live::DeviceStatus::Offline)
        .expect("the offline status serialises");
    o.set_last_will(LastWill::new(
        &topics.status,
        offline,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(u) = &l.username {
        o.set_credentials(u, l.password.clone().unwrap_or_default());
    }
    Ok((o, bridge))
}

/// Reconnection backoff: starts at 100 ms, doubles up to a maximum, each wait drawn from
/// [half, one and a half) of the current step by a xorshift generator seeded by the caller
/// (so devices that lost the broker together do not return together, and tests repeat).
#[derive(Debug, Clone)]
pub struct Backoff {
    step_ms: u64,
    max_ms: u64,
    rng: u64,
}

impl Backoff {
    const FIRST_MS: u64 = 100;

    /// A backoff up to `max_ms`, its jitter seeded by `seed`.
    pub fn new(max_ms: u64, seed: u64) -> Backoff {
        Backoff {
            step_ms: Self::FIRST_MS,
            max_ms,
            rng: seed | 1,
        }
    }

    /// Connected: the next failure waits the shortest step again.
    pub fn reset(&mut self) {
        self.step_ms = Self::FIRST_MS;
    }

    /// How long to wait after a failure, ms.
    pub fn next_wait_ms(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let wait = self.step_ms / 2 + self.rng % self.step_ms.max(1);
        self.step_ms = (self.step_ms * 2).min(self.max_ms);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_grow_to_the_maximum_with_jitter_the_seed_repeats() {
        let waits = |seed| {
            let mut b = Backoff::new(30_000, seed);
            (0..12).map(|_| b.next_wait_ms()).collect::<Vec<_>>()
        };
        let a = waits(42);
        assert_eq!(a, waits(42), "the same seed, the same waits");
        assert_ne!(a, waits(1_000), "another seed, other waits");
        let mut step = 100u64;
        for w in &a {
            assert!(
                (step / 2..step / 2 + step).contains(w),
                "{w} for step {step}"
            );
            step = (step * 2).min(30_000);
        }
        let mut b = Backoff::new(30_000, 7);
        for _ in 0..10 {
            b.next_wait_ms();
        }
        b.reset();
        assert!(b.next_wait_ms() < 150, "a connection resets the step");
    }
}
