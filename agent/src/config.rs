//! The agent's configuration: one TOML file, every key documented in the README, unknown
//! keys refused, and one [`AgentConfig::validate`] step for the rules between keys.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::power::SourceConfig;

/// Where the agent looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/heliostat/agent.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where keys, chain state and the outbox live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The site: goes into `Hello`.
    pub site: SiteConfig,
    /// Sampling and record intervals.
    #[serde(default)]
    pub meter: MeterConfig,
    /// Durable outbox limits and fsync policy.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Power sources, in channel order.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
}

/// Site metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east.
    pub lon: f64,
    /// Solar array rating, watts-peak.
    #[serde(default)]
    pub panel_watts_peak: u32,
    /// Battery capacity, watt-hours.
    #[serde(default)]
    pub battery_wh: u32,
    /// Battery reserve kept for the device, watt-hours.
    #[serde(default)]
    pub battery_reserve_wh: u32,
    /// Grid region for carbon intensity (e.g. "DE").
    #[serde(default = "default_region")]
    pub grid_region: String,
    /// Asking price, micro-credits per GPU-hour.
    #[serde(default)]
    pub price_micro_per_gpu_hour: u64,
}

/// Meter timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Milliseconds between samples of every source.
    #[serde(default = "default_sample_ms")]
    pub sample_interval_ms: u64,
    /// Milliseconds between signed records; a multiple of `sample_interval_ms`.
    #[serde(default = "default_record_ms")]
    pub record_interval_ms: u64,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            sample_interval_ms: default_sample_ms(),
            record_interval_ms: default_record_ms(),
        }
    }
}

/// When the outbox calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every appended record, before it is offered to MQTT (the default: a record
    /// that was offered survives power loss).
    Always,
    /// Leave it to the kernel (tests and tmpfs only: power loss may lose recent records).
    Never,
}

/// Outbox limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most bytes of unacknowledged records kept on disk. When full, no new record is
    /// sealed (counters keep accumulating, so no energy is lost) and the agent says so.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Segment file size at which a new segment starts.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// fsync policy.
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: default_fsync(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/heliostat")
}
fn default_region() -> String {
    "unknown".into()
}
const fn default_sample_ms() -> u64 {
    1_000
}
const fn default_record_ms() -> u64 {
    10_000
}
const fn default_max_bytes() -> u64 {
    // About 30 days of 10-second 6-channel records.
    64 * 1024 * 1024
}
const fn default_segment_bytes() -> u64 {
    1024 * 1024
}
const fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not parse or named an unknown key (the message names it).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value breaks a rule.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl AgentConfig {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The rules between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if !(-90.0..=90.0).contains(&self.site.lat) {
            return bad("site.lat", format!("{} is not a latitude", self.site.lat));
        }
        if !(-180.0..=180.0).contains(&self.site.lon) {
            return bad("site.lon", format!("{} is not a longitude", self.site.lon));
        }
        if self.site.battery_reserve_wh > self.site.battery_wh {
            return bad(
                "site.battery_reserve_wh",
                "must not exceed site.battery_wh".into(),
            );
        }
        if self.site.grid_region.len() > attest::msg::MAX_TEXT {
            return bad("site.grid_region", "too long".into());
        }
        let m = &self.meter;
        if m.sample_interval_ms == 0 {
            return bad("meter.sample_interval_ms", "must be above 0".into());
        }
        if m.record_interval_ms < m.sample_interval_ms
            || !m.record_interval_ms.is_multiple_of(m.sample_interval_ms)
        {
            return bad(
                "meter.record_interval_ms",
                "must be a multiple of meter.sample_interval_ms".into(),
            );
        }
        if self.outbox.segment_bytes < 4096 || self.outbox.segment_bytes > self.outbox.max_bytes {
            return bad(
                "outbox.segment_bytes",
                "must be at least 4096 and at most outbox.max_bytes".into(),
            );
        }
        if self.sources.is_empty() {
            return bad("source", "at least one [[source]] is needed".into());
        }
        let channels: usize = self.sources.iter().map(|s| s.channel_count()).sum();
        if channels > attest::msg::MAX_CHANNELS {
            return bad(
                "source",
                format!("{channels} channels, at most {}", attest::msg::MAX_CHANNELS),
            );
        }
        for s in &self.sources {
            s.validate()?;
        }
        Ok(())
    }
}
