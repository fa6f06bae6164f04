//! The site: where the rig stands, what its panels and battery can do, what it may draw and
//! what it asks. Read from the config file's `[site]` table; signed in the `Hello`. Power
//! sources read it too (the simulator's sun and battery), so it sits below both.

use serde::{Deserialize, Serialize};

/// Site metadata.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Embodied emissions of the whole device, kg CO2e (SCI's `TE`; signed in the hello, a
    /// job's embodied share `M` follows from it). 0: not stated.
    #[serde(default)]
    pub embodied_kg_co2e: f64,
    /// Expected life of the device, years (SCI's `EL`). 0: not stated.
    #[serde(default)]
    pub expected_life_years: f64,
    /// The most the whole rig can draw, watts (its supply's rating; signed in the hello): a
    /// grid interval the agent could not meter (after a restart, without a source counter)
    /// is counted at this much from the grid. 0: not stated (such intervals are flagged but
    /// add no emissions).
    #[serde(default)]
    pub max_draw_w: u32,
}

impl SiteConfig {
    /// A site at `lat`, `lon` (degrees north and east) with every other key at its default:
    /// no panels, no battery, region `unknown`, nothing asked or stated.
    pub fn new(lat: f64, lon: f64) -> SiteConfig {
        SiteConfig {
            lat,
            lon,
            panel_watts_peak: 0,
            battery_wh: 0,
            battery_reserve_wh: 0,
            grid_region: default_region(),
            price_micro_per_gpu_hour: 0,
            embodied_kg_co2e: 0.0,
            expected_life_years: 0.0,
            max_draw_w: 0,
        }
    }
}

fn default_region() -> String {
    "unknown".into()
}
