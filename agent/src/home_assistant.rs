//! Home Assistant MQTT discovery (optional, `[home_assistant]`): the rig's solar, battery,
//! grid and load appear in Home Assistant as sensors with the right `device_class`,
//! `state_class` and units, on the owner's own broker (usually the one Home Assistant runs
//! on the LAN), apart from the fleet's link.
//!
//! On every connection (and whenever Home Assistant says `online` on `{prefix}/status`) the
//! agent publishes one retained discovery configuration per sensor under
//! `{prefix}/sensor/heliostat_{device}/{key}/config`, marks itself `online` on its
//! availability topic (its last will says `offline`), and after every signed record publishes
//! the record's readings as one JSON state on `heliostat/{device}/ha/state`. Power sensors are
//! `measurement`s in W; energy sensors are `total_increasing` in kWh (the chain's cumulative
//! counters: a chain restart reads as a meter reset, as Home Assistant expects).

use std::time::Duration;

use attest::msg::{ChannelKind, MeterRecord};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

/// `[home_assistant]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// The broker Home Assistant listens to.
    pub host: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_prefix")]
    pub discovery_prefix: String,
    /// A user on that broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Its password. Sent in clear (this link has no TLS): refused unless
    /// `insecure_plaintext_password` says the LAN is trusted.
    #[serde(default)]
    pub password: Option<String>,
    /// Allow the password over plain TCP.
    #[serde(default)]
    pub insecure_plaintext_password: bool,
}

fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "homeassistant".into()
}

impl HomeAssistantConfig {
    /// Checks what the file cannot say by its types.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("home_assistant.host is empty".into());
        }
        if self.password.is_some() && !self.insecure_plaintext_password {
            return Err("home_assistant.password would be sent in clear over plain TCP: set home_assistant.insecure_plaintext_password = true if the LAN is trusted".into());
        }
        if self.discovery_prefix.is_empty() || self.discovery_prefix.contains(['#', '+']) {
            return Err("home_assistant.discovery_prefix must be a topic without wildcards".into());
        }
        Ok(())
    }
}

/// One sensor: its key in the state, name, the channel kind it reads, and what Home
/// Assistant should call it.
struct Sensor {
    key: &'static str,
    name: &'static str,
    kind: ChannelKind,
    energy: bool,
}

const SENSORS: [Sensor; 10] = [
    Sensor {
        key: "solar_power",
        name: "Solar power",
        kind: ChannelKind::Solar,
        energy: false,
    },
    Sensor {
        key: "load_power",
        name: "Load power",
        kind: ChannelKind::Load,
        energy: false,
    },
    Sensor {
        key: "grid_power",
        name: "Grid import power",
        kind: ChannelKind::GridImport,
        energy: false,
    },
    Sensor {
        key: "gpu_power",
        name: "GPU power",
        kind: ChannelKind::Gpu,
        energy: false,
    },
    Sensor {
        key: "battery_charge_power",
        name: "Battery charge power",
        kind: ChannelKind::BatteryCharge,
        energy: false,
    },
    Sensor {
        key: "battery_discharge_power",
        name: "Battery discharge power",
        kind: ChannelKind::BatteryDischarge,
        energy: false,
    },
    Sensor {
        key: "solar_energy",
        name: "Solar energy",
        kind: ChannelKind::Solar,
        energy: true,
    },
    Sensor {
        key: "load_energy",
        name: "Load energy",
        kind: ChannelKind::Load,
        energy: true,
    },
    Sensor {
        key: "grid_energy",
        name: "Grid import energy",
        kind: ChannelKind::GridImport,
        energy: true,
    },
    Sensor {
        key: "battery_discharge_energy",
        name: "Battery discharge energy",
        kind: ChannelKind::BatteryDischarge,
        energy: true,
    },
];

/// The device's topics on the Home Assistant broker.
pub struct HaTopics {
    state: String,
    availability: String,
    prefix: String,
    node: String,
}

impl HaTopics {
    /// For `device` under `prefix`.
    pub fn new(prefix: &str, device: &attest::DeviceId) -> HaTopics {
        HaTopics {
            state: format!("heliostat/{device}/ha/state"),
            availability: format!("heliostat/{device}/ha/availability"),
            prefix: prefix.to_string(),
            node: format!("heliostat_{}", device.to_string().replace('-', "_")),
        }
    }
}

/// What the discovery messages say about the device itself.
pub struct DeviceInfo {
    /// Its id.
    pub id: attest::DeviceId,
    /// Its board.
    pub board: String,
    /// The agent's version.
    pub version: String,
}

/// The retained discovery configurations for the channel kinds a record has:
/// `(topic, payload)`.
pub fn discovery(t: &HaTopics, dev: &DeviceInfo, record: &MeterRecord) -> Vec<(String, String)> {
    let has = |k: ChannelKind| record.channels.iter().any(|c| c.kind == k);
    let mut out = Vec::new();
    let device = json!({
        "identifiers": [dev.id.to_string()],
        "name": format!("Heliostat {}", dev.id),
        "manufacturer": "Heliostat",
        "model": dev.board,
        "sw_version": dev.version,
    });
    let mut add = |key: &str, name: &str, extra: Value| {
        let mut cfg = json!({
            "name": name,
            "unique_id": format!("{}_{key}", t.node),
            "object_id": format!("{}_{key}", t.node),
            "state_topic": t.state,
            "value_template": format!("{{{{ value_json.{key} }}}}"),
            "availability_topic": t.availability,
            "device": device,
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        out.push((
            format!("{}/sensor/{}/{key}/config", t.prefix, t.node),
            cfg.to_string(),
        ));
    };
    for s in SENSORS.iter().filter(|s| has(s.kind)) {
        let extra = if s.energy {
            json!({"device_class": "energy", "state_class": "total_increasing", "unit_of_measurement": "kWh", "suggested_display_precision": 3})
        } else {
            json!({"device_class": "power", "state_class": "measurement", "unit_of_measurement": "W"})
        };
        add(s.key, s.name, extra);
    }
    if record.channels.iter().any(|c| c.soc_permille.is_some()) {
        add(
            "battery_soc",
            "Battery",
            json!({"device_class": "battery", "state_class": "measurement", "unit_of_measurement": "%"}),
        );
    }
    out
}

/// A record's readings as the state every sensor reads (W, kWh, %).
pub fn state(record: &MeterRecord) -> Value {
    let mut v = json!({"seq": record.link.seq.0, "timestamp_ms": record.link.timestamp.0});
    for s in &SENSORS {
        let of_kind = record.channels.iter().filter(|c| c.kind == s.kind);
        let (mut any, mut sum) = (false, 0.0);
        for c in of_kind {
            any = true;
            sum += if s.energy {
                c.energy.0 as f64 / 3.6e9
            } else {
                c.power.0 as f64 / 1000.0
            };
        }
        if any {
            let rounded = if s.energy {
                (sum * 1e6).round() / 1e6
            } else {
                (sum * 1e3).round() / 1e3
            };
            v[s.key] = json!(rounded);
        }
    }
    if let Some(p) = record.channels.iter().find_map(|c| c.soc_permille) {
        v["battery_soc"] = json!(f64::from(p) / 10.0);
    }
    v
}

/// Publishes discovery and state to Home Assistant's broker until `records` closes: each
/// new record the agent signed (the watch's value) becomes one state message.
pub async fn run(
    cfg: HomeAssistantConfig,
    dev: DeviceInfo,
    mut records: watch::Receiver<Option<MeterRecord>>,
) {
    let t = HaTopics::new(&cfg.discovery_prefix, &dev.id);
    let mut o = MqttOptions::new(format!("heliostat-ha-{}", dev.id), &cfg.host, cfg.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_last_will(LastWill::new(
        &t.availability,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(u) = &cfg.username {
        o.set_credentials(u, cfg.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let ha_status = format!("{}/status", t.prefix);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<bool>(8);
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    logged = false;
                    let _ = conn_tx.send(true).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.payload.as_ref() == b"online" => {
                    // Home Assistant restarted: it asks for discovery again.
                    let _ = conn_tx.send(true).await;
                }
                Ok(_) => {}
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "Home Assistant broker unreachable; retrying");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
    let mut announced = false;
    // One state per signed record: a reconnection announces again but repeats no state.
    let mut last_seq = None;
    loop {
        tokio::select! {
            c = conn_rx.recv() => {
                if c.is_none() { return; }
                let _ = client.subscribe(&ha_status, QoS::AtMostOnce).await;
                announced = false;
            }
            changed = records.changed() => {
                if changed.is_err() { return; }
            }
        }
        let Some(rec) = records.borrow_and_update().clone() else {
            continue;
        };
        if !announced {
            for (topic, payload) in discovery(&t, &dev, &rec) {
                let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
            }
            let _ = client
                .publish(&t.availability, QoS::AtLeastOnce, true, "online")
                .await;
            announced = true;
        }
        if last_seq != Some(rec.link.seq) {
            last_seq = Some(rec.link.seq);
            let _ = client
                .publish(&t.state, QoS::AtMostOnce, false, state(&rec).to_string())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest::msg::{ChannelReading, Link};
    use attest::units::{ChannelId, Millijoules, Milliwatts};

    fn record() -> MeterRecord {
        let ch = |id: u8, kind, energy_mj: u64, mw: u32, soc| ChannelReading {
            channel: ChannelId(id),
            kind,
            energy: Millijoules(energy_mj),
            power: Milliwatts(mw),
            voltage_mv: None,
            soc_permille: soc,
        };
        MeterRecord {
            link: Link {
                device: attest::sample::SampleDevice::new(1).key.device_id(),
                seq: attest::SeqNo(7),
                timestamp: attest::TimestampMs(1_000),
                prev: attest::Hash32::ZERO,
            },
            channels: vec![
                ch(0, ChannelKind::Solar, 7_200_000_000, 350_500, None),
                ch(1, ChannelKind::Load, 3_600_000_000, 60_000, None),
                ch(2, ChannelKind::BatteryCharge, 0, 100_000, Some(655)),
            ],
            unmetered: vec![],
        }
    }

    #[test]
    fn sensors_follow_the_channels_with_home_assistants_classes() {
        let rec = record();
        let dev = DeviceInfo {
            id: rec.link.device,
            board: "Jetson Orin Nano".into(),
            version: "0.1.0".into(),
        };
        let t = HaTopics::new("homeassistant", &dev.id);
        let d = discovery(&t, &dev, &rec);
        let by_key = |k: &str| -> Value {
            let (_, p) = d
                .iter()
                .find(|(topic, _)| topic.ends_with(&format!("/{k}/config")))
                .unwrap_or_else(|| panic!("no {k}"));
            serde_json::from_str(p).unwrap()
        };
        let solar = by_key("solar_power");
        assert_eq!(
            (
                solar["device_class"].as_str(),
                solar["state_class"].as_str(),
                solar["unit_of_measurement"].as_str()
            ),
            (Some("power"), Some("measurement"), Some("W"))
        );
        let energy = by_key("load_energy");
        assert_eq!(
            (
                energy["device_class"].as_str(),
                energy["state_class"].as_str(),
                energy["unit_of_measurement"].as_str()
            ),
            (Some("energy"), Some("total_increasing"), Some("kWh"))
        );
        assert_eq!(by_key("battery_soc")["device_class"], "battery");
        // No grid channel, no grid sensor.
        assert!(!d.iter().any(|(topic, _)| topic.contains("grid")));
        assert!(
            d.iter()
                .all(|(topic, _)| topic.starts_with("homeassistant/sensor/heliostat_hs_")),
            "{d:?}"
        );
        let s = state(&rec);
        assert_eq!(s["solar_power"], 350.5);
        assert_eq!(s["solar_energy"], 2.0);
        assert_eq!(s["load_energy"], 1.0);
        assert_eq!(s["battery_soc"], 65.5);
        assert!(s.get("grid_power").is_none());
    }

    #[test]
    fn a_password_in_clear_must_be_asked_for() {
        let mut c = HomeAssistantConfig {
            host: "ha.local".into(),
            port: 1883,
            discovery_prefix: "homeassistant".into(),
            username: Some("heliostat".into()),
            password: Some("secret".into()),
            insecure_plaintext_password: false,
        };
        assert!(c.validate().unwrap_err().contains("in clear"));
        c.insecure_plaintext_password = true;
        assert!(c.validate().is_ok());
        c.discovery_prefix = "home/#".into();
        assert!(c.validate().is_err());
    }
}
