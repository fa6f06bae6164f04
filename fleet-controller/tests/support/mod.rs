//! What several of these tests share: a simulated agent as a real process on a broker.
//! (Each test crate uses part of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{Proc, spawn_agent, wait_for, workspace_binary};

/// An agent process (killed when dropped) and where to look at it.
pub struct SimAgent {
    pub proc: Proc,
    pub id: attest::DeviceId,
    pub data: PathBuf,
    pub log: PathBuf,
}

/// Starts an agent in `dir` (a simulated rig, a record every 100 ms) on the plain broker at
/// `port`, believing the controller key `controller` (hex); returns once it has its key.
pub fn simulated_agent(controller_bin: &str, dir: &Path, port: u16, controller: &str) -> SimAgent {
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join("data");
    let mut cfg = AgentConfig::new(
        data.clone(),
        SiteConfig::new(-1.29, 36.82),
        LinkConfig {
            port,
            backoff_max_ms: 300,
            resend_after_ms: 1_000,
            ..LinkConfig::new(
                "127.0.0.1",
                &attest::PublicKey(attest::hex::decode_array(controller).unwrap()),
            )
        },
        vec![SourceConfig::Simulator(SimulatorConfig::default())],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 100,
    };
    let config = dir.join("agent.toml");
    cfg.write_toml(&config).unwrap();
    let log = dir.join("agent.log");
    let bin = workspace_binary(controller_bin, "heliostat-agent", "heliostat-agent");
    let proc = spawn_agent(bin.to_str().unwrap(), &config, &log);
    let id = wait_for("the agent's key", Duration::from_secs(10), || {
        data.join("device.key")
            .exists()
            .then(|| hil_tests::agent_key(&data).device_id())
    });
    SimAgent {
        proc,
        id,
        data,
        log,
    }
}

/// The agent's `status.json` (`Null` until it is written).
pub fn agent_status(data: &Path) -> serde_json::Value {
    std::fs::read(data.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}
