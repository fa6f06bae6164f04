//! The agent's optional Prometheus endpoint: a real agent process serves `/metrics` on the
//! port it is given, in an exposition Prometheus's own `promtool check metrics` accepts, with
//! its outbox depth, link state and power by source.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{Mosquitto, TempDir, free_port, http, require};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[test]
fn the_agent_serves_its_metrics_for_prometheus() {
    let promtool = require("promtool", "prometheus");
    let broker = Mosquitto::start();
    let tmp = TempDir::new("agent-metrics");
    let port = free_port();
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
            ..LinkConfig::new("127.0.0.1", &attest::KeyPair::from_seed(&[8; 32]).public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 2,
            initial_soc: 0.6,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 200,
    };
    cfg.metrics_listen = Some(format!("127.0.0.1:{port}"));
    let config = tmp.path().join("agent.toml");
    cfg.write_toml(&config).unwrap();
    let _agent = hil_tests::spawn_agent(
        env!("CARGO_BIN_EXE_heliostat-agent"),
        &config,
        &tmp.path().join("agent.log"),
    );
    assert!(
        hil_tests::wait_for_port(port, Duration::from_secs(20)),
        "nothing listens on {port}"
    );
    // Nobody acknowledges (no controller): the outbox grows, record by record.
    let end = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    while Instant::now() < end {
        let (status, body) = http(port, "GET", "/metrics", b"");
        assert!(status.contains("200"), "{status}");
        text = String::from_utf8(body).unwrap();
        if value(&text, "heliostat_agent_outbox_records").is_some_and(|n| n >= 3.0)
            && value(&text, "heliostat_agent_link_connected") == Some(1.0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        value(&text, "heliostat_agent_outbox_records").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "heliostat_agent_link_connected"),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "heliostat_agent_power_watts{source=\"load\"}").is_some_and(|w| w > 0.0),
        "{text}"
    );
    assert!(
        value(&text, "heliostat_agent_battery_ratio").is_some_and(|b| (0.0..=1.0).contains(&b)),
        "{text}"
    );
    // Prometheus's own checker reads it.
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Anything else is a 404.
    assert!(http(port, "GET", "/", b"").0.contains("404"));
}
