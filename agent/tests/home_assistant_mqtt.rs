//! Home Assistant MQTT discovery against a real Mosquitto: the agent (a real process, a
//! simulated rig) announces its sensors with retained discovery configurations that a
//! client arriving later still gets, publishes each signed record's readings as state, says
//! `online` on its availability topic, and its last will says `offline` when it is killed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::home_assistant::HomeAssistantConfig;
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{Mosquitto, TempDir};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Everything published under `filters` within `within`, by topic: (payload, retained).
fn listen(
    port: u16,
    filters: &[&str],
    within: Duration,
    mut enough: impl FnMut(&HashMap<String, Vec<(String, bool)>>) -> bool,
) -> HashMap<String, Vec<(String, bool)>> {
    let id = format!(
        "ha-test-{}",
        std::process::id() as u128 * 1000 + Instant::now().elapsed().as_nanos()
    );
    let (client, mut conn) = Client::new(MqttOptions::new(id, "127.0.0.1", port), 64);
    for f in filters {
        client.subscribe(*f, QoS::AtLeastOnce).unwrap();
    }
    let mut got: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    let end = Instant::now() + within;
    while Instant::now() < end {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.entry(p.topic.clone())
                    .or_default()
                    .push((String::from_utf8_lossy(&p.payload).into_owned(), p.retain));
                if enough(&got) {
                    break;
                }
            }
            Ok(Err(e)) => panic!("the test's MQTT client: {e}"),
            _ => {}
        }
    }
    let _ = client.disconnect();
    got
}

#[test]
fn the_rig_appears_in_home_assistant_with_its_sensors_and_its_state() {
    let broker = Mosquitto::start();
    let tmp = TempDir::new("home-assistant");
    let mut cfg = AgentConfig::new(
        tmp.path().join("data"),
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            ..SiteConfig::new(52.52, 13.405)
        },
        LinkConfig {
            port: broker.port,
            ..LinkConfig::new("127.0.0.1", &attest::KeyPair::from_seed(&[9; 32]).public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 3,
            initial_soc: 0.8,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 300,
    };
    cfg.home_assistant = Some(HomeAssistantConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        discovery_prefix: "homeassistant".into(),
        username: None,
        password: None,
        insecure_plaintext_password: false,
    });
    let config = tmp.path().join("agent.toml");
    cfg.write_toml(&config).unwrap();
    let mut agent = hil_tests::spawn_agent(
        env!("CARGO_BIN_EXE_heliostat-agent"),
        &config,
        &tmp.path().join("agent.log"),
    );

    // State arrives after each record, and reads like the sensors say.
    let live = listen(
        broker.port,
        &["heliostat/+/ha/#"],
        Duration::from_secs(30),
        |g| {
            g.iter()
                .any(|(t, v)| t.ends_with("/ha/state") && v.len() >= 3)
        },
    );
    let (state_topic, states) = live
        .iter()
        .find(|(t, _)| t.ends_with("/ha/state"))
        .expect("no state published");
    assert!(states.len() >= 3, "{live:?}");
    let device = state_topic.split('/').nth(1).unwrap().to_string();
    assert!(device.starts_with("hs-"), "{state_topic}");
    let s: Vec<serde_json::Value> = states
        .iter()
        .map(|(p, _)| serde_json::from_str(p).unwrap())
        .collect();
    for v in &s {
        assert!(v["load_power"].as_f64().is_some_and(|w| w > 0.0), "{v}");
        assert!(
            v["battery_soc"]
                .as_f64()
                .is_some_and(|p| (0.0..=100.0).contains(&p)),
            "{v}"
        );
        assert!(v["load_energy"].as_f64().is_some(), "{v}");
    }
    // One state per signed record, in order; the energy counter never goes down.
    let seqs: Vec<u64> = s.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    let kwh: Vec<f64> = s
        .iter()
        .map(|v| v["load_energy"].as_f64().unwrap())
        .collect();
    assert!(kwh.windows(2).all(|w| w[1] >= w[0]), "{kwh:?}");

    // A Home Assistant that connects later gets the retained discovery and availability.
    let node = format!("heliostat_{}", device.replace('-', "_"));
    let later = listen(
        broker.port,
        &[
            "homeassistant/#",
            &format!("heliostat/{device}/ha/availability"),
        ],
        Duration::from_secs(3),
        |_| false,
    );
    let config_of = |key: &str| -> serde_json::Value {
        let (p, retained) = later
            .get(&format!("homeassistant/sensor/{node}/{key}/config"))
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("no discovery for {key}: {:?}", later.keys()));
        assert!(retained, "{key}'s discovery is not retained");
        serde_json::from_str(p).unwrap()
    };
    let power = config_of("load_power");
    assert_eq!(power["device_class"], "power");
    assert_eq!(power["state_class"], "measurement");
    assert_eq!(power["unit_of_measurement"], "W");
    assert_eq!(power["state_topic"], format!("heliostat/{device}/ha/state"));
    let energy = config_of("solar_energy");
    assert_eq!(energy["device_class"], "energy");
    assert_eq!(energy["state_class"], "total_increasing");
    assert_eq!(energy["unit_of_measurement"], "kWh");
    assert_eq!(config_of("battery_soc")["device_class"], "battery");
    assert_eq!(config_of("battery_soc")["device"]["identifiers"][0], device);
    let availability = format!("heliostat/{device}/ha/availability");
    assert_eq!(later[&availability][0], ("online".to_string(), true));

    // Killed, its last will marks it unavailable.
    agent.kill9();
    let after = listen(
        broker.port,
        &[&availability],
        Duration::from_secs(60),
        |g| {
            g.get(&availability)
                .is_some_and(|v| v.iter().any(|(p, _)| p == "offline"))
        },
    );
    assert!(
        after
            .get(&availability)
            .is_some_and(|v| v.iter().any(|(p, _)| p == "offline")),
        "{after:?}"
    );
}
