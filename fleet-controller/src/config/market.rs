//! `[market]`: the scheduler's and dispatch's keys (a part of [`super::ControllerConfig`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[market]`: the scheduler and dispatch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// Schedule and dispatch submitted jobs.
    #[serde(default = "market_yes")]
    pub enabled: bool,
    /// How often jobs are decided, ms.
    #[serde(default = "default_market_tick")]
    pub tick_ms: u64,
    /// A device heard from within this long counts as online, ms.
    #[serde(default = "default_online_within")]
    pub online_within_ms: u64,
    /// What a job draws on a device until devices state it, watts.
    #[serde(default = "default_market_job_power")]
    pub job_power_w: u32,
    /// A job's expected run time when it states no `max_duration_ms`, ms.
    #[serde(default = "default_run_ms")]
    pub default_run_ms: u64,
    /// How long a lease survives its device's silence before the job goes elsewhere, ms.
    #[serde(default = "default_lease_grace")]
    pub lease_grace_ms: u64,
    /// How long a placed job may go without a progress report from its device while the
    /// device is online before it goes elsewhere, ms (0: never). A job not started by
    /// then after its `RunJob` expired counts the same.
    #[serde(default = "default_progress_grace")]
    pub progress_grace_ms: u64,
    /// The operator's solar forecasts by device and hour (CSV `device,hour_start_utc,
    /// solar_wh`), planned on instead of the clear-sky curve where they cover an hour;
    /// read again when the file changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solar_forecast_csv: Option<PathBuf>,
    /// The platform's fee on each payout, parts per million of the price (50000: 5 %).
    #[serde(default = "default_fee_ppm")]
    pub fee_ppm: u32,
    /// The share of a provider's stake taken for a proven wrong result, parts per million
    /// (half to the wronged buyer, half to the platform).
    #[serde(default = "default_slash_ppm")]
    pub slash_ppm: u32,
    /// The least stake a device's provider must hold for the device to get work,
    /// micro-credits (0: none needed).
    #[serde(default)]
    pub min_stake: u64,
    /// How often an idle device gets a performance probe (a known-answer job), ms; also at
    /// its first sight. 0: never.
    #[serde(default = "default_probe_every")]
    pub probe_every_ms: u64,
    /// The share of PTX jobs (which the controller cannot recompute) run a second time on
    /// another provider's device and compared by output hash, parts per million (250000:
    /// one in four; see BENCHMARKS.md, "Result validation: detection against cost").
    #[serde(default = "default_spot_check_ppm")]
    pub spot_check_ppm: u32,
}

const fn default_spot_check_ppm() -> u32 {
    250_000
}

const fn default_probe_every() -> u64 {
    6 * 3_600_000
}

const fn default_slash_ppm() -> u32 {
    100_000
}

const fn default_fee_ppm() -> u32 {
    50_000
}

const fn market_yes() -> bool {
    true
}
const fn default_market_tick() -> u64 {
    5_000
}
const fn default_online_within() -> u64 {
    60_000
}
const fn default_market_job_power() -> u32 {
    60
}
const fn default_run_ms() -> u64 {
    60_000
}
const fn default_lease_grace() -> u64 {
    30 * 60_000
}
const fn default_progress_grace() -> u64 {
    5 * 60_000
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            enabled: market_yes(),
            tick_ms: default_market_tick(),
            online_within_ms: default_online_within(),
            job_power_w: default_market_job_power(),
            default_run_ms: default_run_ms(),
            lease_grace_ms: default_lease_grace(),
            progress_grace_ms: default_progress_grace(),
            solar_forecast_csv: None,
            fee_ppm: default_fee_ppm(),
            slash_ppm: default_slash_ppm(),
            spot_check_ppm: default_spot_check_ppm(),
            min_stake: 0,
            probe_every_ms: default_probe_every(),
        }
    }
}
