//! The binary as the README starts it, without a broker (none is needed for what these
//! tests prove): the first start's chain and what the log looks like in a file.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use heliostat_agent::config::{AgentConfig, LinkConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use heliostat_agent::power::vedirect::VeDirectConfig;
use hil_tests::{TempDir, agent_next_seq, free_port, spawn_agent, test_controller};

const AGENT: &str = env!("CARGO_BIN_EXE_heliostat-agent");

fn write_config(dir: &Path, sources: Vec<SourceConfig>) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    AgentConfig::new(
        dir.join("data"),
        SiteConfig::new(10.0, 20.0),
        LinkConfig {
            port: free_port(),
            ..LinkConfig::new("127.0.0.1", &test_controller().public())
        },
        sources,
    )
    .write_toml(&path)
    .unwrap();
    path
}

#[test]
fn the_first_run_after_id_created_the_key_starts_a_new_chain_at_zero() {
    let dir = TempDir::new("first-start");
    let cfg = write_config(
        dir.path(),
        vec![SourceConfig::Simulator(SimulatorConfig::default())],
    );
    let id = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .arg("id")
        .output()
        .unwrap();
    assert!(id.status.success(), "{id:?}");
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(AGENT, &cfg, &log);
    let data = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("status.json").exists() {
        assert!(Instant::now() < deadline, "the agent wrote no status");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.terminate(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("chain state lost"), "{text}");
    let next = agent_next_seq(&data);
    assert!(
        (1..10).contains(&next),
        "a new device's chain starts at 0: next_seq {next}"
    );
}

#[test]
fn the_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    let dir = TempDir::new("no-ansi");
    let cfg = write_config(
        dir.path(),
        vec![SourceConfig::Vedirect(VeDirectConfig::new(
            "/dev/does-not-exist",
        ))],
    );
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("power source unavailable"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a piped log: {log:?}"
    );
}
