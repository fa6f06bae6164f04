//! A device as the scheduler sees it on one tick: what it offers, where its power comes
//! from now, and what it is already busy with. The caller builds these from the device's
//! hello, its latest meter records and the job table; the scheduler keeps none of them.

use attest::msg::{JobId, Site};
use attest::{DeviceId, Milliwatts, TimestampMs};

use super::job::{GpuOffer, MicroCredits};

/// Work on a device that the caller knows of (its job table) and that this scheduler did
/// not place itself, or no longer remembers (after a restart): it keeps the device busy,
/// drawing its job power, until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeasedJob {
    /// The job.
    pub job: JobId,
    /// When it is expected to end.
    pub until: TimestampMs,
}

/// One device's offer and state.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceOffer {
    /// The device.
    pub device: DeviceId,
    /// Its site as its hello gives it: latitude and longitude, panel watts-peak, battery
    /// capacity and reserve, grid region.
    pub site: Site,
    /// Its GPU.
    pub gpu: GpuOffer,
    /// Asking price per GPU-hour.
    pub price_per_gpu_hour: MicroCredits,
    /// How often its work validates and finishes, 0..=1 (from the ledger's reputation).
    pub reliability: f64,
    /// Whether it is connected now. `false` counts as silent from the first tick it is
    /// seen (see [`super::Scheduler::device_silent`]); `true` ends a silence.
    pub online: bool,
    /// What a job draws on it at full speed (its governor's cap for jobs).
    pub job_power: Milliwatts,
    /// What the device itself draws, job or not.
    pub base_load: Milliwatts,
    /// The most its policy lets a job draw from the grid; zero for an off-grid device or
    /// one that runs jobs only on sun and battery.
    pub grid_allowance: Milliwatts,
    /// Battery state of charge now, per mille of `site.battery_wh` (as meter records
    /// carry it).
    pub battery_soc_permille: u16,
    /// Solar output measured now.
    pub solar_now: Milliwatts,
    /// Recent measured solar over the clear-sky model's figure for the site (0..=1.5, about
    /// 1 under a clear sky), for scaling the model's forecast; `None` to derive it from
    /// `solar_now` (when the sun is high enough to tell).
    pub sky_ratio: Option<f64>,
    /// Jobs the caller knows are leased to it.
    pub leased: Vec<LeasedJob>,
}

impl DeviceOffer {
    /// Latitude and longitude in degrees.
    pub fn lat_lon(&self) -> (f64, f64) {
        (
            f64::from(self.site.lat_microdeg) / 1e6,
            f64::from(self.site.lon_microdeg) / 1e6,
        )
    }

    /// Battery energy above the reserve now, Wh.
    pub(crate) fn battery_above_reserve_wh(&self) -> f64 {
        let stored = f64::from(self.site.battery_wh)
            * f64::from(self.battery_soc_permille.min(1000))
            / 1000.0;
        (stored - f64::from(self.site.battery_reserve_wh)).max(0.0)
    }

    /// Battery room above the reserve, Wh.
    pub(crate) fn battery_span_wh(&self) -> f64 {
        f64::from(
            self.site
                .battery_wh
                .saturating_sub(self.site.battery_reserve_wh),
        )
    }
}

/// Milliwatts as watts.
pub(crate) fn watts(p: Milliwatts) -> f64 {
    f64::from(p.0) / 1_000.0
}
