//! Power sources: where the numbers come from. Each source is one module with its config
//! struct beside it, behind the small [`PowerSource`] trait, selected by `type` in the
//! config file's `[[source]]` tables.
//!
//! - [`simulator`]: a solar rig with battery, grid and load, driven by a clear-sky shape and
//!   seeded clouds (or a CSV trace); used by the demo and the tests.
//! - [`hwmon`]: Jetson INA3221 rails through the kernel's hwmon files.
//! - [`vedirect`]: Victron solar charge controllers over the VE.Direct text protocol.
//! - [`nvml`]: NVIDIA discrete GPUs through NVML, loaded at run time.
//! - [`sunspec`]: SunSpec Modbus TCP meters (grid) and inverters (solar).

pub mod hwmon;
pub mod nvml;
pub mod simulator;
pub mod sunspec;
pub mod vedirect;

use attest::msg::{ChannelKind, TrustTier};
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// One channel a source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// A name for status output (e.g. "VDD_GPU_SOC").
    pub name: String,
    /// What it measures.
    pub kind: ChannelKind,
    /// How far its numbers can be trusted.
    pub tier: TrustTier,
}

/// One channel's reading at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Instantaneous (or short-average) power, milliwatts.
    pub power_mw: u64,
    /// The source's own cumulative energy counter in millijoules, where it has one.
    pub energy_mj: Option<u64>,
    /// Voltage, millivolts.
    pub voltage_mv: Option<u32>,
    /// Battery state of charge, per mille.
    pub soc_permille: Option<u16>,
}

/// Why a source could not be read this time. The agent logs it, counts it, and keeps the
/// other sources going.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or device could not be read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The data did not have the expected form.
    #[error("{0}")]
    Format(String),
    /// No fresh data (e.g. no valid VE.Direct block recently).
    #[error("no fresh data from {0}")]
    Stale(String),
}

impl SourceError {
    /// A stable name for counting (`status.json`, `errors_by_reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Io { .. } => "io",
            SourceError::Format(_) => "format",
            SourceError::Stale(_) => "stale",
        }
    }
}

/// A source of power readings.
pub trait PowerSource: Send {
    /// A short description for status output and logs.
    fn describe(&self) -> String;
    /// The channels it reports, in a fixed order.
    fn channels(&self) -> &[ChannelSpec];
    /// Reads every channel now (`None` for a channel with no reading this time).
    fn sample(&mut self, now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError>;
    /// What the source found wrong in its own input and dropped, by reason, counted since
    /// it opened (VE.Direct blocks whose checksum failed). Samples go on succeeding from
    /// the last good input while these rise, so only this shows them.
    fn faults(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Lets a simulated source see the job runner's draw (real sources measure it); true
    /// when the source simulates it.
    fn attach_job_load(&mut self, _load: std::sync::Arc<JobLoad>) -> bool {
        false
    }
}

/// The job runner's energy, as a simulated GPU would draw it: the runner adds each chunk's
/// energy (simulated GPU watts x the chunk's wall time); the simulator turns the increase
/// between samples into load on its GPU and load channels.
#[derive(Debug, Default)]
pub struct JobLoad {
    /// Cumulative energy drawn by jobs, microjoules.
    pub drawn_uj: std::sync::atomic::AtomicU64,
}

/// A `[[source]]` table, selected by its `type` key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// The simulator.
    Simulator(simulator::SimulatorConfig),
    /// Jetson INA3221 rails.
    Hwmon(hwmon::HwmonConfig),
    /// A VE.Direct solar charge controller.
    Vedirect(vedirect::VeDirectConfig),
    /// An NVIDIA GPU through NVML.
    Nvml(nvml::NvmlConfig),
    /// A SunSpec Modbus TCP meter or inverter.
    Sunspec(sunspec::SunSpecConfig),
}

impl SourceConfig {
    /// How many channels the source will report.
    pub fn channel_count(&self) -> usize {
        match self {
            SourceConfig::Simulator(_) => simulator::CHANNELS.len(),
            SourceConfig::Hwmon(c) => c.rails.len(),
            SourceConfig::Vedirect(_) => vedirect::CHANNELS.len(),
            SourceConfig::Nvml(_) => 1,
            SourceConfig::Sunspec(c) => c.measures.channels().len(),
        }
    }

    /// Checks the source's own keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            SourceConfig::Simulator(c) => c.validate(),
            SourceConfig::Hwmon(c) => c.validate(),
            SourceConfig::Vedirect(_) | SourceConfig::Nvml(_) | SourceConfig::Sunspec(_) => Ok(()),
        }
    }

    /// Opens the source. A source that cannot be opened is reported and skipped by the caller.
    pub fn open(
        &self,
        site: &crate::site::SiteConfig,
    ) -> Result<Box<dyn PowerSource>, SourceError> {
        Ok(match self {
            SourceConfig::Simulator(c) => Box::new(simulator::Simulator::new(c.clone(), site)),
            SourceConfig::Hwmon(c) => Box::new(hwmon::Hwmon::open(c)?),
            SourceConfig::Vedirect(c) => Box::new(vedirect::VeDirect::open(c)?),
            SourceConfig::Nvml(c) => Box::new(nvml::NvmlSource::open(c)?),
            SourceConfig::Sunspec(c) => Box::new(sunspec::SunSpec::open(c)?),
        })
    }
}
