//! The controller's configuration: one TOML file, unknown keys refused, errors naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod alerts;
mod broker;
mod console;
mod market;

pub use broker::{BrokerConfig, Pkcs11Config};
pub use console::ConsoleConfig;
pub use market::MarketConfig;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Database, controller key and status file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The MQTT broker to ingest from.
    pub broker: BrokerConfig,
    /// Who gets approved.
    #[serde(default)]
    pub enrollment: EnrollmentConfig,
    /// Ingest tunables.
    #[serde(default)]
    pub ingest: IngestTuning,
    /// Epochs and anchoring.
    #[serde(default)]
    pub epochs: EpochConfig,
    /// Carbon accounting inputs.
    #[serde(default)]
    pub accounting: AccountingConfig,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The web console.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Alert rules and their webhook.
    #[serde(default)]
    pub alerts: alerts::AlertsConfig,
    /// The market: scheduling and dispatch of submitted jobs.
    #[serde(default)]
    pub market: MarketConfig,
    /// Settlement of providers' earnings on chain (off when absent).
    #[serde(default)]
    pub settlement: Option<crate::settlement::SettlementConfig>,
    /// The controller's key in a PKCS#11 token instead of `data_dir/controller.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Config>,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on; empty turns the API off.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest blob one upload may carry, bytes (streamed to disk, never held in memory).
    #[serde(default = "default_max_blob_bytes")]
    pub max_blob_bytes: u64,
    /// Largest body of every other route (the JSON ones), bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Blob quota of an account made without one, bytes.
    #[serde(default = "default_quota_bytes")]
    pub default_quota_bytes: u64,
    /// Requests per second one API token may make on average (uploads included).
    #[serde(default = "default_token_rate")]
    pub token_rate_per_s: f64,
    /// Requests one API token may make at once above its rate.
    #[serde(default = "default_token_burst")]
    pub token_burst: u32,
    /// Missing or bad tokens from one address within a minute before it must wait out the
    /// minute.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_min: u32,
    /// Behind a reverse proxy: a client's address (for the failure and login limits) is the
    /// last `X-Forwarded-For` entry, which the proxy appends. Only with a proxy in front:
    /// otherwise clients choose it.
    #[serde(default)]
    pub forwarded_for: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            max_blob_bytes: default_max_blob_bytes(),
            max_body_bytes: default_max_body_bytes(),
            default_quota_bytes: default_quota_bytes(),
            token_rate_per_s: default_token_rate(),
            token_burst: default_token_burst(),
            auth_failures_per_min: default_auth_failures(),
            forwarded_for: false,
        }
    }
}

const fn default_token_rate() -> f64 {
    50.0
}
const fn default_token_burst() -> u32 {
    200
}
const fn default_auth_failures() -> u32 {
    30
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
const fn default_max_blob_bytes() -> u64 {
    256 << 20
}
const fn default_max_body_bytes() -> usize {
    64 << 10
}
const fn default_quota_bytes() -> u64 {
    1 << 30
}
/// The smallest `api.max_body_bytes` accepted: room for a job with its 64 inputs.
pub const MIN_BODY_BYTES: usize = 16 << 10;

/// Epochs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EpochConfig {
    /// How often an epoch closes and its root is anchored, milliseconds (default one hour).
    #[serde(default = "default_epoch_ms")]
    pub interval_ms: u64,
    /// Where roots are anchored: `local` (the controller-signed, hash-chained log in the
    /// database) or `evm` (the local log, and also the anchor contract on an EVM chain).
    #[serde(default)]
    pub anchor: AnchorBackend,
    /// The EVM chain, for `anchor = "evm"`.
    #[serde(default)]
    pub evm: Option<EvmConfig>,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig {
            interval_ms: default_epoch_ms(),
            anchor: AnchorBackend::Local,
            evm: None,
        }
    }
}

/// Where epoch roots are anchored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorBackend {
    /// The signed, hash-chained log in the database.
    #[default]
    Local,
    /// The local log and the anchor contract on an EVM chain.
    Evm,
}

/// The EVM anchor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvmConfig {
    /// The node's JSON-RPC URL.
    pub rpc_url: String,
    /// The anchor contract (`0x` + 40 hex digits), as `fleet-controller deploy-anchor`
    /// printed it.
    pub contract: String,
    /// File holding the sender's secp256k1 private key (hex, mode 0600); the contract only
    /// accepts anchors from the account that deployed it.
    pub key_file: PathBuf,
    /// The chain id the node must report (a guard against a misconfigured URL).
    pub chain_id: u64,
    /// Blocks on top of the anchoring one before it counts as confirmed (1 = mined).
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// How often to poll for receipts, milliseconds.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// How long to wait for a receipt before re-broadcasting, milliseconds.
    #[serde(default = "default_receipt_timeout")]
    pub receipt_timeout_ms: u64,
    /// The most the controller pays per gas, in gwei (max fee, EIP-1559): above it an
    /// anchor waits for a later round instead of being signed.
    #[serde(default = "default_max_fee_gwei")]
    pub max_fee_gwei: u64,
}

impl EvmConfig {
    /// The anchor contract at `contract` on the chain `chain_id` behind `rpc_url`, sent from
    /// the key in `key_file`; confirmations, polling, timeout and fee cap at their defaults.
    pub fn new(
        rpc_url: impl Into<String>,
        contract: impl Into<String>,
        key_file: impl Into<PathBuf>,
        chain_id: u64,
    ) -> EvmConfig {
        EvmConfig {
            rpc_url: rpc_url.into(),
            contract: contract.into(),
            key_file: key_file.into(),
            chain_id,
            confirmations: default_confirmations(),
            poll_ms: default_poll(),
            receipt_timeout_ms: default_receipt_timeout(),
            max_fee_gwei: default_max_fee_gwei(),
        }
    }
}

const fn default_confirmations() -> u64 {
    1
}
const fn default_poll() -> u64 {
    500
}
const fn default_receipt_timeout() -> u64 {
    120_000
}

/// `epochs.evm.max_fee_gwei` when not set.
pub const DEFAULT_MAX_FEE_GWEI: u64 = 500;

const fn default_max_fee_gwei() -> u64 {
    DEFAULT_MAX_FEE_GWEI
}

/// Accounting inputs: where the grid carbon intensity of each device-hour comes from (see
/// [`crate::intensity`] for the order).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountingConfig {
    /// An explicit flat grid intensity, mg CO2e per kWh, for every device and hour; unset
    /// (the default), the bundled per-region table and `hourly_csv` are used.
    #[serde(default)]
    pub intensity_mg_per_kwh: Option<u32>,
    /// Names the flat figure in statements (only with `intensity_mg_per_kwh`; the table
    /// and the hourly CSV name themselves).
    #[serde(default)]
    pub intensity_source: Option<String>,
    /// An operator-supplied hourly series (`region,hour_start_utc,g_co2e_per_kwh`) that
    /// overrides the table for the regions and hours it lists; read and validated at start.
    #[serde(default)]
    pub hourly_csv: Option<PathBuf>,
}

impl AccountingConfig {
    /// The name statements give the flat figure.
    pub fn flat_source(&self) -> String {
        self.intensity_source
            .clone()
            .unwrap_or_else(|| "config:accounting.intensity_mg_per_kwh".into())
    }

    fn validate(&self) -> anyhow::Result<()> {
        match (
            self.intensity_mg_per_kwh,
            &self.intensity_source,
            &self.hourly_csv,
        ) {
            (Some(_), _, Some(_)) => anyhow::bail!(
                "config key `accounting.hourly_csv`: cannot be used with \
                 accounting.intensity_mg_per_kwh (a flat figure for every hour); set one"
            ),
            (None, Some(_), _) => anyhow::bail!(
                "config key `accounting.intensity_source`: names the flat figure of \
                 accounting.intensity_mg_per_kwh, which is not set (the bundled table and the \
                 hourly CSV name themselves)"
            ),
            (Some(_), Some(s), None) if s.trim().is_empty() || s.len() > attest::msg::MAX_TEXT => {
                anyhow::bail!(
                    "config key `accounting.intensity_source`: must be 1 to {} bytes",
                    attest::msg::MAX_TEXT
                )
            }
            _ => Ok(()),
        }
    }
}

const fn default_epoch_ms() -> u64 {
    3_600_000
}

/// Enrollment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Approve every device that says hello (demos and tests only).
    #[serde(default)]
    pub auto_approve: bool,
    /// Device ids (`hs-...`) approved in advance.
    #[serde(default)]
    pub approved: Vec<String>,
    /// Most devices pending at once (a new one beyond is refused: `pending_quota`).
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
    /// Most messages kept per pending device (more are refused, unacknowledged).
    #[serde(default = "default_max_pending_messages")]
    pub max_pending_messages: u64,
    /// A pending device silent this long is forgotten when room is needed, milliseconds.
    #[serde(default = "default_pending_expiry")]
    pub pending_expiry_ms: u64,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig {
            auto_approve: false,
            approved: vec![],
            max_pending: default_max_pending(),
            max_pending_messages: default_max_pending_messages(),
            pending_expiry_ms: default_pending_expiry(),
        }
    }
}

const fn default_max_pending() -> u64 {
    1_000
}
const fn default_max_pending_messages() -> u64 {
    10_000
}
const fn default_pending_expiry() -> u64 {
    7 * 86_400_000
}

/// Ingest tunables.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestTuning {
    /// Most MQTT messages handled in one store transaction.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Most payload bytes in one batch: a catch-up of many records is cut into batches of
    /// about this size, so that one is verified while the one before is committed.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Longest wait to fill a batch, milliseconds.
    #[serde(default = "default_batch_wait")]
    pub batch_wait_ms: u64,
    /// How far ahead of the controller's clock a message may be, milliseconds.
    #[serde(default = "default_skew")]
    pub max_future_skew_ms: u64,
    /// How long a gap may persist before the device is asked to resend, milliseconds.
    #[serde(default = "default_resend")]
    pub resend_after_ms: u64,
    /// Most bytes (topics and payloads) waiting between the MQTT loop and the store; past
    /// it, messages are shed and counted (the agents send them again: nothing is lost).
    #[serde(default = "default_queue_bytes")]
    pub queue_max_bytes: usize,
}

impl Default for IngestTuning {
    fn default() -> Self {
        IngestTuning {
            batch_max: default_batch_max(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_wait_ms: default_batch_wait(),
            max_future_skew_ms: default_skew(),
            resend_after_ms: default_resend(),
            queue_max_bytes: default_queue_bytes(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/heliostat-controller")
}
/// The smallest `ingest.queue_max_bytes` accepted: one largest batch payload.
pub const MIN_QUEUE_BYTES: usize = attest::batch::MAX_BATCH_LEN;

const fn default_queue_bytes() -> usize {
    64 << 20
}
const fn default_batch_max_bytes() -> usize {
    256 << 10
}

const fn default_batch_max() -> usize {
    1_000
}
const fn default_batch_wait() -> u64 {
    20
}
const fn default_skew() -> u64 {
    120_000
}
const fn default_resend() -> u64 {
    10_000
}

impl ControllerConfig {
    /// A configuration from what every controller must be told (where its data lives, the
    /// broker it ingests from), every other key at its default: the same value a file
    /// naming only these keys loads to. Change the rest through the public fields
    /// (`cfg.enrollment.auto_approve = true`) or struct update.
    pub fn new(data_dir: impl Into<PathBuf>, broker: BrokerConfig) -> ControllerConfig {
        ControllerConfig {
            data_dir: data_dir.into(),
            broker,
            enrollment: EnrollmentConfig::default(),
            ingest: IngestTuning::default(),
            epochs: EpochConfig::default(),
            accounting: AccountingConfig::default(),
            api: ApiConfig::default(),
            console: ConsoleConfig::default(),
            alerts: alerts::AlertsConfig::default(),
            market: MarketConfig::default(),
            settlement: None,
            pkcs11: None,
        }
    }

    /// The configuration as a TOML file that [`ControllerConfig::load`] reads back to an
    /// equal value (not validated here: that is the reader's step).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).map_err(|e| anyhow::anyhow!("writing the configuration as TOML: {e}"))
    }

    /// Writes [`ControllerConfig::to_toml`] to `path`, for a controller started with
    /// `--config path`.
    pub fn write_toml(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_toml()?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> anyhow::Result<ControllerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let cfg: ControllerConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The rules between keys.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.alerts
            .validate()
            .map_err(|e| anyhow::anyhow!("config key `{e}"))?;
        for id in &self.enrollment.approved {
            attest::DeviceId::parse(id)
                .map_err(|e| anyhow::anyhow!("config key `enrollment.approved`: {id}: {e}"))?;
        }
        if !self.api.listen.is_empty() && self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            anyhow::bail!(
                "config key `api.listen`: {} is not an address:port",
                self.api.listen
            );
        }
        if !(self.api.token_rate_per_s.is_finite() && self.api.token_rate_per_s > 0.0)
            || self.api.token_burst == 0
            || self.api.auth_failures_per_min == 0
        {
            anyhow::bail!(
                "config key `api.token_rate_per_s`: token_rate_per_s, token_burst and \
                 auth_failures_per_min must be above zero"
            );
        }
        if self.api.max_body_bytes < MIN_BODY_BYTES {
            anyhow::bail!(
                "config key `api.max_body_bytes`: must be at least {MIN_BODY_BYTES} (a job \
                 naming 64 inputs is about 10 KiB)"
            );
        }
        if self.api.max_blob_bytes == 0 {
            anyhow::bail!("config key `api.max_blob_bytes`: must be above 0");
        }
        if self.epochs.interval_ms < 100 {
            anyhow::bail!("config key `epochs.interval_ms`: must be at least 100");
        }
        match (self.epochs.anchor, &self.epochs.evm) {
            (AnchorBackend::Evm, None) => {
                anyhow::bail!("config key `epochs.evm`: needed when epochs.anchor = \"evm\"")
            }
            (AnchorBackend::Evm, Some(e)) => {
                crate::anchor::evm::parse_address(&e.contract)
                    .map_err(|m| anyhow::anyhow!("config key `epochs.evm.contract`: {m}"))?;
                if e.confirmations == 0 {
                    anyhow::bail!("config key `epochs.evm.confirmations`: must be at least 1");
                }
                if e.max_fee_gwei == 0 {
                    anyhow::bail!(
                        "config key `epochs.evm.max_fee_gwei`: must be at least 1 (0 would never anchor)"
                    );
                }
            }
            (AnchorBackend::Local, _) => {}
        }
        if self.ingest.batch_max == 0 {
            anyhow::bail!("config key `ingest.batch_max`: must be above 0");
        }
        if self.ingest.queue_max_bytes < MIN_QUEUE_BYTES {
            anyhow::bail!(
                "config key `ingest.queue_max_bytes`: must be at least {MIN_QUEUE_BYTES} (a batch \
                 of records is up to 1 MiB)"
            );
        }
        if self.broker.password.is_some() && self.broker.username.is_none() {
            anyhow::bail!("config key `broker.password`: needs broker.username");
        }
        self.broker.validate()?;
        if let Some(s) = &self.settlement {
            s.validate(self.epochs.evm.as_ref())?;
        }
        self.accounting.validate()
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("controller.db")
    }

    /// The controller key file.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("controller.key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(accounting: &str) -> anyhow::Result<ControllerConfig> {
        let cfg: ControllerConfig = toml::from_str(&format!(
            "[broker]\nhost = \"127.0.0.1\"\n[accounting]\n{accounting}"
        ))?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn the_example_file_loads_and_holds_the_builders_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("controller.example.toml");
        let cfg = ControllerConfig::load(&path).unwrap();
        let built = ControllerConfig::new(
            "/var/lib/heliostat-controller",
            BrokerConfig::new("127.0.0.1"),
        );
        assert_eq!(
            cfg, built,
            "the example names every default as the code has it"
        );
    }

    #[test]
    fn the_builders_defaults_are_those_of_a_file_naming_only_the_required_keys() {
        let cfg = ControllerConfig::new("/tmp/controller-data", BrokerConfig::new("127.0.0.1"));
        cfg.validate().unwrap();
        let minimal: ControllerConfig =
            toml::from_str("data_dir = \"/tmp/controller-data\"\n[broker]\nhost = \"127.0.0.1\"\n")
                .unwrap();
        assert_eq!(minimal, cfg);
        let evm = EvmConfig::new("http://127.0.0.1:8545", "0xabc", "k", 31337);
        let table: EvmConfig = toml::from_str(
            "rpc_url = \"http://127.0.0.1:8545\"\ncontract = \"0xabc\"\nkey_file = \"k\"\n\
             chain_id = 31337\n",
        )
        .unwrap();
        assert_eq!(table, evm);
    }

    #[test]
    fn a_broker_password_needs_tls_unless_plain_tcp_is_allowed() {
        let mut b = BrokerConfig {
            username: Some("controller".into()),
            password: Some("s3cret".into()),
            ..BrokerConfig::new("127.0.0.1")
        };
        let check = |b: &BrokerConfig| ControllerConfig::new("/tmp/x", b.clone()).validate();
        let e = check(&b).unwrap_err().to_string();
        assert!(
            e.contains("broker.password") && e.contains("in clear"),
            "{e}"
        );
        assert!(!e.contains("s3cret"));
        b.insecure_plaintext_password = true;
        check(&b).unwrap();
        b.insecure_plaintext_password = false;
        b.tls_ca_file = Some("/etc/ca.pem".into());
        check(&b).unwrap();
        b.tls_client_cert = Some("/etc/c.pem".into());
        assert!(
            check(&b)
                .unwrap_err()
                .to_string()
                .contains("tls_client_key")
        );
    }

    #[test]
    fn a_built_config_round_trips_through_a_toml_file_to_an_equal_value() {
        let mut cfg = ControllerConfig::new(
            "/tmp/controller-data",
            BrokerConfig {
                port: 18_830,
                username: Some("controller".into()),
                password: Some("s3cret".into()),
                tls_ca_file: Some("/etc/heliostat/broker-ca.pem".into()),
                tls_client_cert: Some("/etc/heliostat/controller.pem".into()),
                tls_client_key: Some("/etc/heliostat/controller.key".into()),
                share_group: String::new(),
                ..BrokerConfig::new("127.0.0.1")
            },
        );
        cfg.enrollment.auto_approve = true;
        cfg.enrollment.approved =
            vec![attest::KeyPair::from_seed(&[7; 32]).device_id().to_string()];
        cfg.ingest.resend_after_ms = 2_000;
        cfg.epochs = EpochConfig {
            interval_ms: 300,
            anchor: AnchorBackend::Evm,
            evm: Some(EvmConfig {
                poll_ms: 100,
                ..EvmConfig::new(
                    "http://127.0.0.1:8545",
                    "0x5fbdb2315678afecb367f032d93f642f64180aa3",
                    "/tmp/evm.key",
                    31337,
                )
            }),
        };
        cfg.accounting.hourly_csv = Some("/tmp/grid.csv".into());
        cfg.api.listen = "127.0.0.1:18080".into();
        cfg.validate().unwrap();

        let dir = std::env::temp_dir().join(format!("controller-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("controller.toml");
        cfg.write_toml(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(ControllerConfig::load(&path).unwrap(), cfg, "{text}");
        // A flat intensity and its name, the other accounting shape.
        cfg.accounting = AccountingConfig {
            intensity_mg_per_kwh: Some(200_000),
            intensity_source: Some("utility 2025".into()),
            hourly_csv: None,
        };
        cfg.write_toml(&path).unwrap();
        assert_eq!(ControllerConfig::load(&path).unwrap(), cfg);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accounting_defaults_to_the_table_and_a_flat_figure_is_an_explicit_override() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.accounting.intensity_mg_per_kwh, None);
        let r = crate::intensity::IntensityResolver::from_config(&cfg.accounting).unwrap();
        assert_eq!(r.at("SE", 500_000).mg_per_kwh, 35_890);

        let cfg =
            parse("intensity_mg_per_kwh = 200000\nintensity_source = \"utility 2025\"").unwrap();
        let r = crate::intensity::IntensityResolver::from_config(&cfg.accounting).unwrap();
        let f = r.at("SE", 500_000);
        assert_eq!((f.mg_per_kwh, f.source.as_str()), (200_000, "utility 2025"));
        let cfg = parse("intensity_mg_per_kwh = 200000").unwrap();
        assert_eq!(
            cfg.accounting.flat_source(),
            "config:accounting.intensity_mg_per_kwh"
        );
    }

    #[test]
    fn conflicting_or_orphaned_accounting_keys_are_refused_by_name() {
        let e = parse("intensity_mg_per_kwh = 1\nhourly_csv = \"g.csv\"").unwrap_err();
        assert!(e.to_string().contains("`accounting.hourly_csv`"), "{e}");
        let e = parse("intensity_source = \"x\"").unwrap_err();
        assert!(
            e.to_string().contains("`accounting.intensity_source`"),
            "{e}"
        );
        let e = parse("intensity_mg_per_kwh = 1\nintensity_source = \"\"").unwrap_err();
        assert!(
            e.to_string().contains("`accounting.intensity_source`"),
            "{e}"
        );
        let e = parse("intensity = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn a_bad_hourly_csv_stops_the_start_naming_key_file_and_line() {
        let dir = std::env::temp_dir().join(format!("cfg-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("grid.csv");
        std::fs::write(
            &csv,
            "region,hour_start_utc,g_co2e_per_kwh\nDE,2026-06-21T00:00:00Z,300\nDE,2026-06-21T00:00:00Z,310\n",
        )
        .unwrap();
        let cfg = parse(&format!("hourly_csv = \"{}\"", csv.display())).unwrap();
        let e = crate::intensity::IntensityResolver::from_config(&cfg.accounting).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("config key `accounting.hourly_csv`: "),
            "{msg}"
        );
        assert!(msg.contains(&format!("{}: line 3", csv.display())), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_ingest_queue_below_one_batch_and_a_fee_cap_of_zero_are_refused_by_name() {
        let cfg = |extra: &str| -> anyhow::Result<ControllerConfig> {
            let cfg: ControllerConfig =
                toml::from_str(&format!("[broker]\nhost = \"127.0.0.1\"\n{extra}"))?;
            cfg.validate()?;
            Ok(cfg)
        };
        let e = cfg("[ingest]\nqueue_max_bytes = 1000").unwrap_err();
        assert!(e.to_string().contains("`ingest.queue_max_bytes`"), "{e}");
        assert!(cfg("[ingest]\nqueue_max_bytes = 1048576").is_ok());
        let evm = "[epochs]\nanchor = \"evm\"\n[epochs.evm]\nrpc_url = \"http://127.0.0.1:8545\"\n\
                   contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\nkey_file = \"k\"\n\
                   chain_id = 31337\n";
        let e = cfg(&format!("{evm}max_fee_gwei = 0")).unwrap_err();
        assert!(e.to_string().contains("`epochs.evm.max_fee_gwei`"), "{e}");
        assert!(cfg(evm).is_ok());
    }

    #[test]
    fn api_limits_default_to_the_documented_sizes_and_refuse_a_body_too_small_for_a_job() {
        let cfg = ControllerConfig::new("/tmp/x", BrokerConfig::new("127.0.0.1"));
        assert_eq!(
            (
                cfg.api.max_blob_bytes,
                cfg.api.max_body_bytes,
                cfg.api.default_quota_bytes
            ),
            (268_435_456, 65_536, 1_073_741_824)
        );
        let parse = |api: &str| -> anyhow::Result<ControllerConfig> {
            let cfg: ControllerConfig =
                toml::from_str(&format!("[broker]\nhost = \"h\"\n[api]\n{api}"))?;
            cfg.validate()?;
            Ok(cfg)
        };
        let e = parse("max_body_bytes = 1000").unwrap_err();
        assert!(e.to_string().contains("`api.max_body_bytes`"), "{e}");
        let e = parse("max_blob_bytes = 0").unwrap_err();
        assert!(e.to_string().contains("`api.max_blob_bytes`"), "{e}");
        let cfg = parse("default_quota_bytes = 5000\nmax_blob_bytes = 4096").unwrap();
        assert_eq!(
            (cfg.api.default_quota_bytes, cfg.api.max_blob_bytes),
            (5000, 4096)
        );
    }
}
