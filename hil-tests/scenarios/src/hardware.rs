//! A fleet device's simulated hardware (`FleetOptions::hardware_agents`): one plant and the
//! three simulators of `hil_tests::sim` reading it, and the agent sources that read them over
//! the real interfaces.

use std::path::Path;
use std::time::Duration;

use heliostat_agent::power::SourceConfig;

/// A device's simulated hardware: a plant and the three simulators reading it.
pub struct Hardware {
    pub plant: hil_tests::sim::plant::SharedPlant,
    pub vedirect: hil_tests::sim::vedirect::VeDirectSim,
    pub meter: hil_tests::sim::sunspec::SunSpecSim,
    pub jetson: hil_tests::sim::jetson::JetsonSim,
    _clock: hil_tests::sim::plant::PlantClock,
}

impl Hardware {
    /// A rig at noon (simulated time runs 60 times faster than real time) with its
    /// simulators; the Jetson trees under `dir/sys`.
    pub fn start(dir: &Path, seed: u64) -> Hardware {
        use hil_tests::sim::{jetson, plant, sunspec, vedirect};
        let mut p = plant::Plant::new(plant::PlantConfig::default(), 12.0 * 3_600.0);
        p.set_cloud((seed % 5) as f64 * 0.15);
        let plant = std::sync::Arc::new(std::sync::Mutex::new(p));
        let clock = plant::PlantClock::start(plant.clone(), Duration::from_millis(100), 60.0);
        Hardware {
            vedirect: vedirect::VeDirectSim::start(plant.clone(), Duration::from_millis(200)),
            meter: sunspec::SunSpecSim::start(plant.clone(), sunspec::Model::GridMeter, 40_000),
            jetson: jetson::JetsonSim::start(
                plant.clone(),
                jetson::Board::AgxOrin,
                &dir.join("sys"),
                Duration::from_millis(200),
            ),
            plant,
            _clock: clock,
        }
    }

    /// The agent's sources for this hardware.
    pub fn sources(&self) -> Vec<SourceConfig> {
        use heliostat_agent::power::{hwmon, sunspec, vedirect};
        vec![
            SourceConfig::Vedirect(vedirect::VeDirectConfig::new(self.vedirect.path())),
            SourceConfig::Sunspec(sunspec::SunSpecConfig {
                address: self.meter.address,
                unit_id: 1,
                measures: sunspec::Measures::Grid,
                poll_ms: 200,
                timeout_ms: 1_000,
            }),
            SourceConfig::Hwmon(hwmon::HwmonConfig {
                root: self.jetson.hwmon(),
                ..hwmon::HwmonConfig::default()
            }),
        ]
    }
}
