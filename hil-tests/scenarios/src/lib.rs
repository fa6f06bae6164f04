//! Heliostat's hardware-in-the-loop scenarios (docs/hil.md): fleets of real processes
//! (`fleet-controller`, `heliostat-agent`, Mosquitto, anvil), a fault injector with a small
//! vocabulary, named scenarios, a seeded soak, and the report that counts both ends. The
//! `hil` binary runs any of them; `tests/scenarios.rs` runs each in the README's test
//! command. The hardware simulators themselves are in `hil_tests::sim`.

use std::path::Path;
use std::process::Command;

pub mod faults;
pub mod fleet;
pub mod hardware;
pub mod netns;
pub mod report;
pub mod rng;
pub mod scenarios;
pub mod soak;

/// Publishes `payload` on `topic` at QoS 1 with Mosquitto's own client.
pub fn publish(port: u16, topic: &str, payload: &[u8], dir: &Path) -> anyhow::Result<()> {
    let f = dir.join("payload.bin");
    std::fs::write(&f, payload)?;
    let ok = Command::new(hil_tests::require("mosquitto_pub", "mosquitto-clients"))
        .args(["-p", &port.to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(&f)
        .status()?;
    anyhow::ensure!(ok.success(), "mosquitto_pub to {topic} failed");
    Ok(())
}
