//! The agent's configuration: one TOML file, every key documented in the README, unknown
//! keys refused, and one [`AgentConfig::validate`] step for the rules between keys.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::config_error::ConfigError;
use crate::power::SourceConfig;
pub use crate::site::SiteConfig;

/// Where the agent looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/heliostat/agent.toml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// The MQTT link.
    pub link: LinkConfig,
    /// Power sources, in channel order.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Jobs and the power governor.
    #[serde(default)]
    pub jobs: JobsConfig,
    /// The device image's build, one line (a device image writes it; absent on a machine
    /// where the agent was installed by hand): reported with the agent's version.
    #[serde(default = "default_image_release")]
    pub image_release_file: PathBuf,
    /// Home Assistant MQTT discovery on the owner's broker (off when absent).
    #[serde(default)]
    pub home_assistant: Option<crate::home_assistant::HomeAssistantConfig>,
    /// Where to serve Prometheus metrics (`127.0.0.1:9101`; off when absent).
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// `[jobs]`: running compute jobs inside the power budget.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Accept `RunJob` commands at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Use the GPU (CUDA, loaded at run time) when one is usable; the CPU otherwise.
    #[serde(default = "yes")]
    pub prefer_gpu: bool,
    /// The job's draw at full speed until the meter has measured it, watts.
    #[serde(default = "default_job_power")]
    pub power_w: f64,
    /// Never more than this for jobs, watts.
    #[serde(default = "default_hard_cap")]
    pub hard_cap_w: f64,
    /// Grid power jobs may use, watts (0: only sun and battery).
    #[serde(default)]
    pub grid_allowance_w: f64,
    /// Below this duty a job pauses instead (0..1).
    #[serde(default = "default_min_duty")]
    pub min_duty: f64,
    /// The battery above reserve is spread over at least this long, seconds.
    #[serde(default = "default_battery_horizon")]
    pub battery_min_horizon_s: f64,
    /// A Jetson GPU's devfreq directory (e.g. `/sys/class/devfreq/17000000.ga10b`): the
    /// governor caps `max_freq` there. Empty: no frequency lever.
    #[serde(default)]
    pub devfreq_dir: Option<PathBuf>,
    /// Set an NVML power limit on this GPU index (needs root). None: no power-limit lever.
    #[serde(default)]
    pub nvml_power_limit_gpu: Option<u32>,
    /// Where job inputs and PTX modules are found by their SHA-256 (hex file names);
    /// default `data_dir/blobs`.
    #[serde(default)]
    pub blob_dir: Option<PathBuf>,
    /// The controller's blob store (e.g. `http://controller:8080/api/v1/blobs/`): inputs
    /// not in `blob_dir` are fetched from `{blob_url}{sha256}`, checked and kept there.
    #[serde(default)]
    pub blob_url: Option<String>,
    /// A file holding the provider's API token (`hst_...`, read scope), sent as
    /// `Authorization: Bearer` when fetching from `blob_url`: the controller gives a job's
    /// inputs only to its buyer and to providers' tokens while the job is open.
    #[serde(default)]
    pub blob_token_file: Option<PathBuf>,
    /// Most bytes of blobs kept in `blob_dir`: past it, the least recently used go (never
    /// those of the job at hand).
    #[serde(default = "default_blob_cache")]
    pub blob_cache_max_bytes: u64,
    /// How many finished jobs' outputs are kept in `data_dir/jobs/` (the oldest go first;
    /// until results are uploaded to the controller, they wait there for their buyer).
    #[serde(default = "default_outputs_kept")]
    pub outputs_kept: usize,
    /// For the simulator source: the simulated GPU's draw while a chunk runs, watts (the
    /// CPU does the real compute; the simulator's load and GPU channels show this).
    #[serde(default = "default_job_power")]
    pub simulated_gpu_w: f64,
    /// Run every job in a worker process without the device key (`heliostat-agent worker`).
    /// Off only for debugging: a buyer's kernel then runs in the agent's own process.
    #[serde(default = "yes")]
    pub isolate: bool,
    /// The user the worker runs as when the agent runs as root.
    #[serde(default = "default_worker_user")]
    pub worker_user: String,
    /// The worker's address space for CPU jobs, MiB (0: no limit).
    #[serde(default = "default_worker_memory")]
    pub worker_memory_mib: u64,
    /// The worker's open files.
    #[serde(default = "default_worker_files")]
    pub worker_open_files: u64,
    /// Put the worker in a Landlock sandbox: no filesystem for a CPU job, system folders
    /// read-only for a GPU job, never the data folder (the key) nor the blob token.
    #[serde(default = "yes")]
    pub sandbox: bool,
    /// Longest one chunk may run before its worker is killed, ms.
    #[serde(default = "default_chunk_timeout")]
    pub chunk_timeout_ms: u64,
    /// How often a running job's progress is saved (chunks done and outputs so far), ms:
    /// after a restart it goes on from there.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every_ms: u64,
    /// A job paused this long lets its worker go (its GPU memory and process), ms; it is
    /// prepared again from its checkpoint when it may run. 0: never.
    #[serde(default = "default_release_after_pause")]
    pub release_after_pause_ms: u64,
}

const fn default_release_after_pause() -> u64 {
    10 * 60_000
}

const fn default_checkpoint_every() -> u64 {
    30_000
}

fn default_worker_user() -> String {
    "nobody".into()
}

const fn default_worker_memory() -> u64 {
    4_096
}

const fn default_worker_files() -> u64 {
    64
}

const fn default_chunk_timeout() -> u64 {
    300_000
}

const fn default_blob_cache() -> u64 {
    2 << 30
}

const fn default_outputs_kept() -> usize {
    16
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            prefer_gpu: true,
            power_w: default_job_power(),
            hard_cap_w: default_hard_cap(),
            grid_allowance_w: 0.0,
            min_duty: default_min_duty(),
            battery_min_horizon_s: default_battery_horizon(),
            devfreq_dir: None,
            nvml_power_limit_gpu: None,
            blob_dir: None,
            blob_url: None,
            blob_token_file: None,
            blob_cache_max_bytes: default_blob_cache(),
            outputs_kept: default_outputs_kept(),
            simulated_gpu_w: default_job_power(),
            isolate: true,
            worker_user: default_worker_user(),
            worker_memory_mib: default_worker_memory(),
            worker_open_files: default_worker_files(),
            sandbox: true,
            chunk_timeout_ms: default_chunk_timeout(),
            checkpoint_every_ms: default_checkpoint_every(),
            release_after_pause_ms: default_release_after_pause(),
        }
    }
}

impl JobsConfig {
    /// The governor's policy.
    pub fn governor(&self) -> crate::governor::GovernorConfig {
        crate::governor::GovernorConfig {
            grid_allowance_w: self.grid_allowance_w,
            hard_cap_w: self.hard_cap_w,
            job_power_w: self.power_w,
            min_duty: self.min_duty,
            battery_min_horizon_s: self.battery_min_horizon_s,
        }
    }
}

const fn yes() -> bool {
    true
}
const fn default_job_power() -> f64 {
    60.0
}
const fn default_hard_cap() -> f64 {
    250.0
}
const fn default_min_duty() -> f64 {
    0.1
}
const fn default_battery_horizon() -> f64 {
    600.0
}

/// The MQTT link to the broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The controller's public key (hex): acks and commands must be signed by it.
    pub controller_key: String,
    /// Username, when the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`. Sent only over TLS unless `insecure_plaintext_password`.
    #[serde(default)]
    pub password: Option<String>,
    /// Allow the password over plain TCP (a broker on the same host or a trusted LAN):
    /// without it, a password and no `tls_ca_file` is a configuration error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext_password: bool,
    /// TLS: a CA bundle (PEM) turns TLS on.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM), with `tls_client_key`.
    #[serde(default)]
    pub tls_client_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[serde(default)]
    pub tls_client_key: Option<PathBuf>,
    /// MQTT keep-alive, seconds.
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
    /// Sent but unacknowledged records are offered again after this long.
    #[serde(default = "default_resend_ms")]
    pub resend_after_ms: u64,
    /// Most records in one batch message when draining a backlog.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Longest wait between reconnection attempts (backoff doubles up to it, with jitter).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl LinkConfig {
    /// A link to the broker at `host` (on the default port) that accepts acks and commands
    /// signed by `controller_key`; every other key at its default.
    pub fn new(host: impl Into<String>, controller_key: &attest::PublicKey) -> LinkConfig {
        LinkConfig {
            host: host.into(),
            port: default_port(),
            controller_key: controller_key.to_string(),
            username: None,
            password: None,
            insecure_plaintext_password: false,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            keepalive_s: default_keepalive(),
            resend_after_ms: default_resend_ms(),
            batch_max: default_batch_max(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

const fn default_port() -> u16 {
    1883
}
const fn default_keepalive() -> u64 {
    30
}
const fn default_resend_ms() -> u64 {
    30_000
}
const fn default_batch_max() -> usize {
    500
}
const fn default_backoff_max_ms() -> u64 {
    30_000
}

/// Meter timing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every appended record, before it is offered to MQTT (the default: a record
    /// that was offered survives power loss).
    Always,
    /// Leave it to the kernel (tests and tmpfs only: power loss may lose recent records).
    Never,
}

/// Outbox limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
fn default_image_release() -> PathBuf {
    PathBuf::from("/etc/heliostat/image-release")
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

impl AgentConfig {
    /// A configuration from what every agent must be told (where its data lives, its site,
    /// its link and its power sources, in channel order), every other key at its default:
    /// the same value a file naming only these keys loads to. Change the rest through the
    /// public fields (`cfg.meter.record_interval_ms = 100`) or struct update.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        site: SiteConfig,
        link: LinkConfig,
        sources: Vec<SourceConfig>,
    ) -> AgentConfig {
        AgentConfig {
            data_dir: data_dir.into(),
            site,
            meter: MeterConfig::default(),
            outbox: OutboxConfig::default(),
            link,
            sources,
            jobs: JobsConfig::default(),
            image_release_file: default_image_release(),
            home_assistant: None,
            metrics_listen: None,
        }
    }

    /// The configuration as a TOML file that [`AgentConfig::parse`] reads back to an equal
    /// value (not validated here: that is the reader's step). Fails on a value the file
    /// format cannot hold.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Unwritable {
            message: e.to_string(),
        })
    }

    /// Writes [`AgentConfig::to_toml`] to `path`, for a binary started with `--config path`.
    pub fn write_toml(&self, path: &Path) -> Result<(), ConfigError> {
        std::fs::write(path, self.to_toml()?).map_err(|cause| ConfigError::Write {
            path: path.to_path_buf(),
            cause,
        })
    }

    /// The pinned controller key (validated).
    pub fn controller_key(&self) -> attest::PublicKey {
        attest::PublicKey(attest::hex::decode_array(&self.link.controller_key).expect("validated"))
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
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
        if let Some(ha) = &self.home_assistant
            && let Err(reason) = ha.validate()
        {
            return bad("home_assistant", reason);
        }
        if let Some(m) = &self.metrics_listen
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "metrics_listen",
                format!("{m:?} is not an address and port"),
            );
        }
        let j = &self.jobs;
        if !(j.power_w > 0.0 && j.power_w.is_finite()) {
            return bad("jobs.power_w", "must be above 0".into());
        }
        if !(j.hard_cap_w >= 0.0 && j.grid_allowance_w >= 0.0 && j.simulated_gpu_w >= 0.0) {
            return bad("jobs.hard_cap_w", "watts must not be negative".into());
        }
        if !(0.0..=1.0).contains(&j.min_duty) {
            return bad("jobs.min_duty", "must be within 0..=1".into());
        }
        if j.battery_min_horizon_s < 1.0 {
            return bad("jobs.battery_min_horizon_s", "must be at least 1".into());
        }
        if let Some(u) = &j.blob_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return bad(
                "jobs.blob_url",
                format!("{u} is not an http:// or https:// URL"),
            );
        }
        if j.blob_token_file.is_some() && j.blob_url.is_none() {
            return bad(
                "jobs.blob_token_file",
                "is sent to jobs.blob_url, which is not set".into(),
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
        let l = &self.link;
        if attest::hex::decode_array::<32>(&l.controller_key).is_err() {
            return bad(
                "link.controller_key",
                "must be the controller's 32-byte public key in hex".into(),
            );
        }
        if l.password.is_some() && l.username.is_none() {
            return bad("link.password", "needs link.username".into());
        }
        if l.password.is_some() && l.tls_ca_file.is_none() && !l.insecure_plaintext_password {
            return bad(
                "link.password",
                "would be sent in clear over plain TCP: set link.tls_ca_file (TLS), or \
                 link.insecure_plaintext_password = true for a broker on a trusted network"
                    .into(),
            );
        }
        if l.tls_client_cert.is_some() != l.tls_client_key.is_some() {
            return bad(
                "link.tls_client_cert",
                "set both tls_client_cert and tls_client_key, or neither".into(),
            );
        }
        if l.tls_client_cert.is_some() && l.tls_ca_file.is_none() {
            return bad(
                "link.tls_ca_file",
                "client certificates need TLS: set tls_ca_file".into(),
            );
        }
        if !(1..=attest::batch::MAX_BATCH_ITEMS).contains(&l.batch_max) {
            return bad(
                "link.batch_max",
                format!("must be within 1..={}", attest::batch::MAX_BATCH_ITEMS),
            );
        }
        if l.keepalive_s < 5 {
            return bad("link.keepalive_s", "must be at least 5".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{hwmon, nvml, simulator, sunspec, vedirect};

    const EXAMPLE: &str = include_str!("../agent.example.toml");

    fn key() -> attest::PublicKey {
        attest::KeyPair::from_seed(&[0xc0; 32]).public()
    }

    fn built() -> AgentConfig {
        AgentConfig::new(
            "/tmp/agent-data",
            SiteConfig::new(52.52, 13.405),
            LinkConfig::new("127.0.0.1", &key()),
            vec![SourceConfig::Simulator(
                simulator::SimulatorConfig::default(),
            )],
        )
    }

    #[test]
    fn the_builders_defaults_are_those_of_a_file_naming_only_the_required_keys() {
        let cfg = built();
        cfg.validate().unwrap();
        let minimal = format!(
            "data_dir = \"/tmp/agent-data\"\n[site]\nlat = 52.52\nlon = 13.405\n\
             [link]\nhost = \"127.0.0.1\"\ncontroller_key = \"{}\"\n\
             [[source]]\ntype = \"simulator\"\n",
            key()
        );
        assert_eq!(AgentConfig::parse(&minimal).unwrap(), cfg);
        // Each source's own defaults, from a table naming only its type and required keys.
        let sources = vec![
            SourceConfig::Hwmon(hwmon::HwmonConfig::default()),
            SourceConfig::Vedirect(vedirect::VeDirectConfig::new("/dev/ttyUSB0")),
            SourceConfig::Nvml(nvml::NvmlConfig::default()),
            SourceConfig::Sunspec(sunspec::SunSpecConfig::new(
                "192.168.1.50:502".parse().unwrap(),
                sunspec::Measures::Grid,
            )),
        ];
        let tables = "[[source]]\ntype = \"hwmon\"\n\
                      [[source]]\ntype = \"vedirect\"\nport = \"/dev/ttyUSB0\"\n\
                      [[source]]\ntype = \"nvml\"\n\
                      [[source]]\ntype = \"sunspec\"\naddress = \"192.168.1.50:502\"\n\
                      measures = \"grid\"\n";
        let parsed =
            AgentConfig::parse(&minimal.replace("[[source]]\ntype = \"simulator\"\n", tables))
                .unwrap();
        assert_eq!(parsed.sources, sources);
    }

    #[test]
    fn a_built_config_round_trips_through_toml_to_an_equal_value() {
        let mut cfg = built();
        cfg.site = SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
            price_micro_per_gpu_hour: 250_000,
            embodied_kg_co2e: 150.5,
            expected_life_years: 5.0,
            max_draw_w: 300,
            ..cfg.site
        };
        cfg.meter = MeterConfig {
            sample_interval_ms: 20,
            record_interval_ms: 100,
        };
        cfg.outbox.segment_bytes = 8192;
        cfg.outbox.fsync = FsyncPolicy::Never;
        cfg.link = LinkConfig {
            port: 18_830,
            username: Some("rig-17".into()),
            password: Some("s3cret".into()),
            tls_ca_file: Some("/etc/heliostat/ca.pem".into()),
            tls_client_cert: Some("/etc/heliostat/client.pem".into()),
            tls_client_key: Some("/etc/heliostat/client.key".into()),
            batch_max: 200,
            ..cfg.link
        };
        cfg.jobs = JobsConfig {
            prefer_gpu: false,
            grid_allowance_w: 12.5,
            min_duty: 0.25,
            devfreq_dir: Some("/sys/class/devfreq/17000000.ga10b".into()),
            nvml_power_limit_gpu: Some(0),
            blob_dir: Some("/tmp/blobs".into()),
            blob_url: Some("http://controller:8080/api/v1/blobs/".into()),
            blob_token_file: Some("/etc/heliostat/blob.token".into()),
            ..JobsConfig::default()
        };
        cfg.sources = vec![
            SourceConfig::Simulator(simulator::SimulatorConfig {
                seed: 3,
                cloudiness: 0.1,
                trace_csv: Some("/tmp/trace.csv".into()),
                ..Default::default()
            }),
            SourceConfig::Hwmon(hwmon::HwmonConfig {
                rails: vec!["VDD_IN".into()],
                gpu_rail: Some("VDD_GPU".into()),
                ..Default::default()
            }),
            SourceConfig::Vedirect(vedirect::VeDirectConfig::new("/dev/ttyUSB0")),
            SourceConfig::Nvml(nvml::NvmlConfig { index: 1 }),
            SourceConfig::Sunspec(sunspec::SunSpecConfig {
                unit_id: 3,
                ..sunspec::SunSpecConfig::new(
                    "192.168.1.50:502".parse().unwrap(),
                    sunspec::Measures::Solar,
                )
            }),
        ];
        cfg.validate().unwrap();
        let text = cfg.to_toml().unwrap();
        assert_eq!(AgentConfig::parse(&text).unwrap(), cfg, "{text}");

        // And through a file, as a binary started with `--config` loads it.
        let dir = std::env::temp_dir().join(format!("agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        cfg.write_toml(&path).unwrap();
        assert_eq!(AgentConfig::load(&path).unwrap(), cfg);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_example_file_round_trips_through_toml() {
        let cfg = AgentConfig::parse(EXAMPLE).unwrap();
        assert_eq!(AgentConfig::parse(&cfg.to_toml().unwrap()).unwrap(), cfg);
    }

    #[test]
    fn a_hwmon_source_with_no_rail_of_the_graphics_unit_is_written_and_read_back_as_such() {
        // An Orin Nano/NX: the GPU shares VDD_CPU_GPU_CV, there is no GPU rail of its own.
        let mut cfg = built();
        cfg.sources = vec![SourceConfig::Hwmon(hwmon::HwmonConfig {
            rails: vec!["VDD_IN".into()],
            gpu_rail: None,
            ..Default::default()
        })];
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("gpu_rail = \"\""), "{text}");
        assert_eq!(AgentConfig::parse(&text).unwrap(), cfg);
        let missing = text.replace("gpu_rail = \"\"\n", "");
        match &AgentConfig::parse(&missing).unwrap().sources[0] {
            SourceConfig::Hwmon(h) => assert_eq!(h.gpu_rail.as_deref(), Some("VDD_GPU_SOC")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_example_file_loads() {
        let c = AgentConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.meter.record_interval_ms, 10_000);
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.outbox.fsync, FsyncPolicy::Always);
        assert_eq!(c.link.port, 1883);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let unknown = EXAMPLE.replace(
            "grid_region = \"DE\"",
            "grid_region = \"DE\"\ncolour = \"red\"",
        );
        let e = AgentConfig::parse(&unknown).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let reserve = EXAMPLE.replace("battery_reserve_wh = 200", "battery_reserve_wh = 2000");
        let e = AgentConfig::parse(&reserve).unwrap_err().to_string();
        assert!(e.contains("site.battery_reserve_wh"), "{e}");
        let interval = EXAMPLE.replace("record_interval_ms = 10000", "record_interval_ms = 10500");
        assert!(
            AgentConfig::parse(&interval)
                .unwrap_err()
                .to_string()
                .contains("meter.record_interval_ms")
        );
        let key = EXAMPLE.replace("8a88e3dd", "zz88e3dd");
        assert!(
            AgentConfig::parse(&key)
                .unwrap_err()
                .to_string()
                .contains("link.controller_key")
        );
        let src = EXAMPLE.replace("cloudiness = 0.3", "cloudiness = 3.0");
        assert!(
            AgentConfig::parse(&src)
                .unwrap_err()
                .to_string()
                .contains("cloudiness")
        );
        let typo = EXAMPLE.replace("type = \"simulator\"", "type = \"simulater\"");
        assert!(
            AgentConfig::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("simulater")
        );
        for (from, to, key) in [
            ("power_w = 60.0", "power_w = 0.0", "jobs.power_w"),
            ("min_duty = 0.1", "min_duty = 1.5", "jobs.min_duty"),
            (
                "# blob_dir = \"/var/lib/heliostat/blobs\"",
                "blob_url = \"ftp://controller/blobs/\"",
                "jobs.blob_url",
            ),
            (
                "# blob_dir = \"/var/lib/heliostat/blobs\"",
                "blob_token_file = \"/etc/heliostat/blob.token\"",
                "jobs.blob_token_file",
            ),
        ] {
            let bad = EXAMPLE.replace(from, to);
            assert_ne!(bad, EXAMPLE, "{from}");
            let e = AgentConfig::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let unknown_in_source = EXAMPLE.replace("seed = 7", "seed = 7\nsead = 8");
        assert!(
            AgentConfig::parse(&unknown_in_source)
                .unwrap_err()
                .to_string()
                .contains("sead")
        );
    }
}
