//! What each device's power will be over the coming hours, and what a job started there
//! would draw from where.
//!
//! Built once per tick per device (never per job), as an [`Outlook`]: one slot per hour of
//! the horizon (slot 0 is what is left of the current hour), each with
//! - the solar energy expected: the operator's [`SolarForecast`] for that hour when one is
//!   given, else the site's clear-sky curve (`attest::solar`) times the panel's watts-peak,
//!   scaled by the site's recent measured/clear-sky ratio, which fades towards a typical
//!   ratio over the following hours; both lowered by the configured forecast margin;
//! - the energy already committed to jobs (leases and holds) and the base load;
//! - the battery above its reserve at the slot's start, carried forward: sun beyond the
//!   loads charges it, loads beyond the sun drain it;
//! - the grid's carbon intensity for the device's region and that hour.
//!
//! [`Outlook::run`] walks a job through the slots as the device would: sun first, then
//! battery above the reserve, then the grid up to the device's allowance; where all three
//! fall short the job runs slower, as the agent's governor would hold it.

use std::collections::VecDeque;
use std::rc::Rc;

use attest::intensity::RegionTable;
use attest::msg::JobId;
use attest::solar::{clear_sky_fraction, sun_elevation};
use attest::{DeviceId, TimestampMs};

use super::offer::{DeviceOffer, watts};

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// Grid carbon intensity by region and hour: the bundled table, the controller's
/// [`crate::intensity::IntensityResolver`] (operator series first), or a test's own.
pub trait GridIntensity {
    /// mg CO2e per kWh for a device region (`site.grid_region`) in an hour (hours since the
    /// Unix epoch).
    fn mg_per_kwh(&self, region: &str, hour: u64) -> u32;
}

impl GridIntensity for RegionTable {
    fn mg_per_kwh(&self, region: &str, hour: u64) -> u32 {
        self.figure(region, hour)
    }
}

impl GridIntensity for crate::intensity::IntensityResolver {
    fn mg_per_kwh(&self, region: &str, hour: u64) -> u32 {
        self.at(region, hour).mg_per_kwh
    }
}

/// An operator's (or a weather service's) forecast of a site's solar energy, hour by hour.
/// Where it covers an hour it replaces the clear-sky model for that hour.
#[derive(Clone, Debug, PartialEq)]
pub struct SolarForecast {
    /// The first hour it covers (hours since the Unix epoch).
    pub first_hour: u64,
    /// Expected solar energy in each hour from `first_hour` on, Wh (NaN: not forecast).
    pub wh: Vec<f32>,
}

impl SolarForecast {
    /// The forecast for `hour`; none outside it or where it holds NaN (an hour it skips:
    /// the clear-sky model stands in).
    fn at(&self, hour: u64) -> Option<f64> {
        let i = usize::try_from(hour.checked_sub(self.first_hour)?).ok()?;
        self.wh
            .get(i)
            .filter(|w| !w.is_nan())
            .map(|w| f64::from(w.max(0.0)))
    }
}

/// A site's clear-sky energy per watt-peak for each hour, cached: the sun's position is
/// the costly part, and it does not change between ticks.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClearSkyCurve {
    lat_lon: (f64, f64),
    first_hour: u64,
    per_wp: VecDeque<f64>,
}

impl ClearSkyCurve {
    /// Makes sure `hours` hours from `from` are cached, computing only those not yet known.
    fn cover(&mut self, lat_lon: (f64, f64), from: u64, hours: usize) {
        if self.lat_lon != lat_lon || from < self.first_hour || self.per_wp.is_empty() {
            self.lat_lon = lat_lon;
            self.first_hour = from;
            self.per_wp.clear();
        }
        while self.first_hour < from && !self.per_wp.is_empty() {
            self.per_wp.pop_front();
            self.first_hour += 1;
        }
        if self.per_wp.is_empty() {
            self.first_hour = from;
        }
        while self.per_wp.len() < hours {
            let hour = self.first_hour + self.per_wp.len() as u64;
            self.per_wp.push_back(clear_sky_wh_per_wp(lat_lon, hour));
        }
    }

    fn at(&self, hour: u64) -> f64 {
        hour.checked_sub(self.first_hour)
            .and_then(|i| self.per_wp.get(i as usize).copied())
            .unwrap_or(0.0)
    }
}

/// Clear-sky energy in an hour per watt-peak (Wh/Wp): the clear-sky fraction at four
/// points of the hour, averaged.
fn clear_sky_wh_per_wp((lat, lon): (f64, f64), hour: u64) -> f64 {
    (0..4)
        .map(|q| {
            clear_sky_fraction(sun_elevation(
                lat,
                lon,
                hour * HOUR_MS + (2 * q + 1) * HOUR_MS / 8,
            ))
        })
        .sum::<f64>()
        / 4.0
}

/// How an outlook is built: the scheduler's configuration, as far as forecasts go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForecastParams {
    pub horizon_hours: usize,
    pub margin: f64,
    pub typical_sky_ratio: f64,
    pub sky_ratio_fade_hours: f64,
}

/// Work that keeps a device busy and draws its job power over `[start, end)` (ms): a
/// lease, or a waiting job's hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Commit {
    pub job: JobId,
    pub start: u64,
    pub end: u64,
    pub watts: f64,
    /// Energy it still draws, Wh: at `watts` from its start until spent (an off-grid job
    /// that waits out the night spans more time than its energy at full power).
    pub energy_wh: f64,
    /// A waiting job's hold (which a job holding the device from earlier displaces).
    pub hold: bool,
}

/// What a job started on a device at some time is expected to draw, and when it ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RunPlan {
    pub start: u64,
    pub end: u64,
    /// Energy from sun and battery, Wh.
    pub renewable_wh: f64,
    /// Energy from the grid, Wh.
    pub grid_wh: f64,
    /// Emissions of the grid energy, mg.
    pub co2e_mg: f64,
}

/// One device's power over the horizon, for one tick (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Outlook {
    /// The device.
    pub device: DeviceId,
    /// Its offer's index in the tick's offers.
    pub index: usize,
    now: u64,
    h0: u64,
    sun: Vec<f64>,
    load: Vec<f64>,
    batt: Vec<f64>,
    /// Battery charge committed work needs at each slot's start (never above `batt`).
    keep: Vec<f64>,
    /// The region's intensity per slot, mg/kWh (shared by the region's devices).
    mg: Rc<[f64]>,
    base_w: f64,
    span_wh: f64,
    battery_now_wh: f64,
    /// Job power, W.
    pub job_w: f64,
    grid_w: f64,
    commits: Vec<Commit>,
}

impl Outlook {
    /// The outlook of one online device at `now`; `mg` holds its region's intensity per
    /// slot.
    pub(crate) fn new(
        offer: &DeviceOffer,
        index: usize,
        now: TimestampMs,
        params: ForecastParams,
        curve: &mut ClearSkyCurve,
        operator: Option<&SolarForecast>,
        mg: Rc<[f64]>,
    ) -> Outlook {
        let now = now.0;
        let h0 = now / HOUR_MS;
        let n = params.horizon_hours.max(1);
        let lat_lon = offer.lat_lon();
        let panel = f64::from(offer.site.panel_watts_peak);
        let mut sun = Vec::with_capacity(n);
        // The model (and the sun's position now, for the sky ratio) only where the
        // operator's forecast does not reach.
        let mut recent = None;
        if operator.is_none_or(|f| f.at(h0 + n as u64 - 1).is_none() || f.at(h0).is_none()) {
            curve.cover(lat_lon, h0, n);
        }
        for k in 0..n {
            let hour = h0 + k as u64;
            let (start, end) = slot_bounds(now, h0, k);
            let frac = (end - start) as f64 / HOUR_MS as f64;
            let wh = match operator.and_then(|f| f.at(hour)) {
                Some(wh) => wh,
                None => {
                    let recent = *recent
                        .get_or_insert_with(|| sky_ratio(offer, now, params.typical_sky_ratio));
                    let ahead = ((start + end) / 2 - now) as f64 / HOUR_MS as f64;
                    let fade = (-ahead / params.sky_ratio_fade_hours.max(1e-3)).exp();
                    let ratio =
                        params.typical_sky_ratio + (recent - params.typical_sky_ratio) * fade;
                    panel * curve.at(hour) * ratio
                }
            };
            sun.push(wh * frac * (1.0 - params.margin).clamp(0.0, 1.0));
        }
        let mut o = Outlook {
            device: offer.device,
            index,
            now,
            h0,
            sun,
            load: vec![0.0; n],
            batt: vec![0.0; n + 1],
            keep: vec![0.0; n + 1],
            mg,
            base_w: watts(offer.base_load),
            span_wh: offer.battery_span_wh(),
            battery_now_wh: offer.battery_above_reserve_wh(),
            job_w: watts(offer.job_power),
            grid_w: watts(offer.grid_allowance),
            commits: Vec::new(),
        };
        o.refresh();
        o
    }

    /// Slots in the horizon.
    pub(crate) fn slots(&self) -> usize {
        self.sun.len()
    }

    /// The end of the horizon, ms.
    pub(crate) fn horizon_end(&self) -> u64 {
        slot_bounds(self.now, self.h0, self.slots() - 1).1
    }

    /// Adds work that keeps the device busy, and carries the battery forward again.
    pub(crate) fn commit(&mut self, c: Commit) {
        self.commit_quietly(c);
        self.refresh();
    }

    /// Adds work without carrying the battery forward: call [`Outlook::refresh`] after the
    /// last of a batch.
    pub(crate) fn commit_quietly(&mut self, c: Commit) {
        self.commits.push(c);
        self.add_load(c, 1.0);
    }

    /// Removes a job's work (its hold is replanned); `true` if it had any.
    pub(crate) fn release(&mut self, job: JobId) -> bool {
        let Some(i) = self.commits.iter().position(|c| c.job == job) else {
            return false;
        };
        let c = self.commits.swap_remove(i);
        self.add_load(c, -1.0);
        self.refresh();
        true
    }

    /// The work committed for a job, if any.
    pub(crate) fn commit_of(&self, job: JobId) -> Option<Commit> {
        self.commits.iter().find(|c| c.job == job).copied()
    }

    fn add_load(&mut self, c: Commit, sign: f64) {
        let mut left = c.energy_wh;
        for k in 0..self.slots() {
            if left <= 0.0 {
                break;
            }
            let (s, e) = slot_bounds(self.now, self.h0, k);
            let overlap = e.min(c.end).saturating_sub(s.max(c.start));
            if overlap > 0 {
                let wh = left.min(c.watts * overlap as f64 / HOUR_MS as f64);
                left -= wh;
                self.load[k] = (self.load[k] + sign * wh).max(0.0);
            }
        }
    }

    /// Carries the battery above its reserve through the slots: sun beyond base load and
    /// committed jobs charges it up to its span, loads beyond the sun drain it. Then,
    /// backwards, what committed work needs kept in it: the least charge at each slot's
    /// start that still serves every later commitment as the forward pass does.
    pub(crate) fn refresh(&mut self) {
        let mut b = self.battery_now_wh.min(self.span_wh);
        self.batt[0] = b;
        for k in 0..self.slots() {
            let net = self.sun[k] - self.base_wh(k) - self.load[k];
            b = (b + net).clamp(0.0, self.span_wh);
            self.batt[k + 1] = b;
        }
        let n = self.slots();
        self.keep[n] = 0.0;
        for k in (0..n).rev() {
            self.keep[k] = if self.load[k] <= 0.0 && self.keep[k + 1] <= 0.0 {
                // Nothing committed from here on: the base load alone is not protected.
                0.0
            } else {
                let net = self.sun[k] - self.base_wh(k) - self.load[k];
                (self.keep[k + 1] - net).clamp(0.0, self.batt[k])
            };
        }
    }

    fn base_wh(&self, k: usize) -> f64 {
        let (s, e) = slot_bounds(self.now, self.h0, k);
        self.base_w * (e - s) as f64 / HOUR_MS as f64
    }

    /// The earliest time at or after `t` when no committed work holds the device.
    pub(crate) fn free_from(&self, mut t: u64) -> u64 {
        loop {
            match self.commits.iter().find(|c| c.start <= t && t < c.end) {
                Some(c) => t = c.end,
                None => return t,
            }
        }
    }

    /// Whether `[start, end)` is clear of committed work.
    pub(crate) fn is_free(&self, start: u64, end: u64) -> bool {
        self.commits
            .iter()
            .all(|c| c.end <= start || end <= c.start)
    }

    /// The jobs holding the device from `t` on (not leases).
    pub(crate) fn holds_from(&self, t: u64) -> Vec<JobId> {
        self.commits
            .iter()
            .filter(|c| c.hold && c.start >= t)
            .map(|c| c.job)
            .collect()
    }

    /// Walks a job of `energy_wh` started at `start` (ms, within the horizon) through the
    /// slots; `None` if it would not finish within the horizon. In each slot the job takes
    /// sun left over by the base load and committed work, then battery, but never so much
    /// that the battery falls below what later commitments need (a job placed before a
    /// hold must not eat the charge the hold was planned on); then the grid, up to the
    /// allowance.
    pub(crate) fn run(&self, start: u64, energy_wh: f64) -> Option<RunPlan> {
        let first = self.slot_of(start)?;
        let mut b = self.batt[first];
        let mut left = energy_wh;
        let (mut renewable, mut grid, mut mg) = (0.0, 0.0, 0.0);
        for k in first..self.slots() {
            let (s, e) = slot_bounds(self.now, self.h0, k);
            let from = s.max(start);
            let part = (e - from) as f64 / (e - s) as f64;
            let hours = (e - from) as f64 / HOUR_MS as f64;
            // What the battery would hold at the slot's end without this job (uncapped).
            let without = b + (self.sun[k] - self.base_wh(k) - self.load[k]) * part;
            let want = self.job_w * hours;
            let clean = want.min((without - self.keep[k + 1]).max(0.0));
            let from_grid = (want - clean).min(self.grid_w * hours);
            let got = clean + from_grid;
            if got > 0.0 && got >= left {
                let r = left / got;
                renewable += clean * r;
                grid += from_grid * r;
                mg += from_grid * r * self.mg[k] / 1_000.0;
                let end = from + ((e - from) as f64 * r).ceil() as u64;
                return Some(RunPlan {
                    start,
                    end,
                    renewable_wh: renewable,
                    grid_wh: grid,
                    co2e_mg: mg,
                });
            }
            left -= got;
            renewable += clean;
            grid += from_grid;
            mg += from_grid * self.mg[k] / 1_000.0;
            b = (without - clean).clamp(0.0, self.span_wh);
        }
        None
    }

    fn slot_of(&self, t: u64) -> Option<usize> {
        if t < self.now {
            return None;
        }
        let k = (t / HOUR_MS - self.h0) as usize;
        (k < self.slots()).then_some(k)
    }
}

/// Slot `k`'s bounds in ms: slot 0 runs from `now` to the end of its hour.
fn slot_bounds(now: u64, h0: u64, k: usize) -> (u64, u64) {
    let start = if k == 0 {
        now
    } else {
        (h0 + k as u64) * HOUR_MS
    };
    (start, (h0 + k as u64 + 1) * HOUR_MS)
}

/// The site's recent measured over clear-sky ratio: the offer's, else measured now over the
/// model now when the sun is high enough to tell (above 10 % of a clear zenith), else the
/// typical ratio.
fn sky_ratio(offer: &DeviceOffer, now: u64, typical: f64) -> f64 {
    if let Some(r) = offer.sky_ratio {
        return r.clamp(0.0, 1.5);
    }
    let (lat, lon) = offer.lat_lon();
    let clear = clear_sky_fraction(sun_elevation(lat, lon, now));
    let panel = f64::from(offer.site.panel_watts_peak);
    if clear < 0.1 || panel <= 0.0 {
        return typical;
    }
    (watts(offer.solar_now) / (panel * clear)).clamp(0.0, 1.5)
}

#[cfg(test)]
mod tests {
    use attest::msg::Site;
    use attest::{Milliwatts, TimestampMs};

    use super::*;
    use crate::market::job::{ComputeCapability, GpuClass, GpuOffer, MicroCredits};

    /// 2026-06-21T00:00:00Z.
    const MIDNIGHT: u64 = 1_782_000_000_000;

    fn offer(soc_permille: u16, grid_w: u32) -> DeviceOffer {
        DeviceOffer {
            device: DeviceId([7; 16]),
            site: Site {
                lat_microdeg: 52_500_000,
                lon_microdeg: 13_400_000,
                panel_watts_peak: 1_000,
                battery_wh: 1_000,
                battery_reserve_wh: 200,
                grid_region: "DE".into(),
            },
            gpu: GpuOffer {
                class: GpuClass::Consumer,
                vram_mib: 24_576,
                capability: ComputeCapability::new(8, 9),
            },
            price_per_gpu_hour: MicroCredits(1),
            reliability: 1.0,
            online: true,
            job_power: Milliwatts(100_000),
            base_load: Milliwatts(0),
            grid_allowance: Milliwatts(grid_w * 1_000),
            battery_soc_permille: soc_permille,
            solar_now: Milliwatts(0),
            sky_ratio: Some(1.0),
            leased: Vec::new(),
        }
    }

    fn params(margin: f64) -> ForecastParams {
        ForecastParams {
            horizon_hours: 24,
            margin,
            typical_sky_ratio: 0.7,
            sky_ratio_fade_hours: 4.0,
        }
    }

    fn outlook(o: &DeviceOffer, at: u64, margin: f64, f: Option<&SolarForecast>) -> Outlook {
        let mut curve = ClearSkyCurve::default();
        Outlook::new(
            o,
            0,
            TimestampMs(at),
            params(margin),
            &mut curve,
            f,
            vec![342_060.0; 24].into(),
        )
    }

    #[test]
    fn at_night_a_job_takes_the_battery_above_its_reserve_then_the_grid() {
        // 300 Wh stored, 200 reserved: 100 Wh for jobs; a 150 Wh job at 100 W.
        let o = outlook(&offer(300, 100), MIDNIGHT, 0.0, None);
        let p = o.run(MIDNIGHT, 150.0).unwrap();
        assert!((p.renewable_wh - 100.0).abs() < 1e-9, "{p:?}");
        assert!((p.grid_wh - 50.0).abs() < 1e-9, "{p:?}");
        assert!((p.co2e_mg - 50.0 * 342.06).abs() < 1e-6, "{p:?}");
        assert_eq!(
            p.end,
            MIDNIGHT + 5_400_000,
            "an hour and a half at full power"
        );
        // Off the grid the same job stalls until the morning sun pays for the rest.
        let o = outlook(&offer(300, 0), MIDNIGHT, 0.0, None);
        let p = o.run(MIDNIGHT, 150.0).unwrap();
        assert_eq!(p.grid_wh, 0.0);
        assert!(p.end > MIDNIGHT + 3 * HOUR_MS, "{}", p.end - MIDNIGHT);
        assert!(
            o.run(MIDNIGHT, 1e6).is_none(),
            "a megawatt-hour does not fit in a day"
        );
    }

    #[test]
    fn an_operator_forecast_replaces_the_model_for_the_hours_it_covers_less_the_margin() {
        let f = SolarForecast {
            first_hour: MIDNIGHT / HOUR_MS,
            wh: vec![400.0; 3],
        };
        // Half an hour into the first hour: half of its forecast is left.
        let o = outlook(&offer(200, 0), MIDNIGHT + HOUR_MS / 2, 0.25, Some(&f));
        assert_eq!(o.sun[0], 150.0);
        assert_eq!(o.sun[1], 300.0);
        // Hour 3 on comes from the clear-sky curve: 03:00 UTC in Berlin is just after dawn,
        // noon is far brighter.
        assert!(o.sun[3] < 50.0, "{}", o.sun[3]);
        assert!(o.sun[11] > 400.0, "{}", o.sun[11]);
        // 300 Wh of forecast sun in the second hour carries the job there, all renewable.
        let p = o.run(MIDNIGHT + HOUR_MS, 100.0).unwrap();
        assert_eq!((p.renewable_wh, p.grid_wh), (100.0, 0.0));
    }

    #[test]
    fn a_job_before_a_hold_leaves_it_the_battery_it_was_planned_on() {
        // No sun (an overcast forecast); 500 Wh above the reserve; a hold from 03:00 needs
        // 200 Wh of it.
        let dark = SolarForecast {
            first_hour: MIDNIGHT / HOUR_MS,
            wh: vec![0.0; 24],
        };
        let mut o = outlook(&offer(700, 100), MIDNIGHT, 0.0, Some(&dark));
        o.commit(Commit {
            job: JobId([1; 16]),
            start: MIDNIGHT + 3 * HOUR_MS,
            end: MIDNIGHT + 5 * HOUR_MS,
            watts: 100.0,
            energy_wh: 200.0,
            hold: true,
        });
        // A 250 Wh job now gets 300 Wh of battery at most: 250 renewable...
        let p = o.run(MIDNIGHT, 250.0).unwrap();
        assert!((p.renewable_wh - 250.0).abs() < 1e-9, "{p:?}");
        // ...and a 400 Wh job the 300 Wh, the rest from the grid.
        let p = o.run(MIDNIGHT, 400.0).unwrap();
        assert!((p.renewable_wh - 300.0).abs() < 1e-9, "{p:?}");
        assert!((p.grid_wh - 100.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn committed_work_holds_the_device_and_its_sun() {
        let f = SolarForecast {
            first_hour: MIDNIGHT / HOUR_MS,
            wh: vec![100.0; 24],
        };
        let mut o = outlook(&offer(200, 100), MIDNIGHT, 0.0, Some(&f));
        let job = JobId([1; 16]);
        o.commit(Commit {
            job,
            start: MIDNIGHT,
            end: MIDNIGHT + 2 * HOUR_MS,
            watts: 100.0,
            energy_wh: 200.0,
            hold: true,
        });
        assert_eq!(o.free_from(MIDNIGHT), MIDNIGHT + 2 * HOUR_MS);
        assert!(!o.is_free(MIDNIGHT + HOUR_MS, MIDNIGHT + 3 * HOUR_MS));
        assert_eq!(o.holds_from(MIDNIGHT), vec![job]);
        assert!(o.holds_from(MIDNIGHT + 1).is_empty());
        // Run alongside it anyway: the hour's sun is taken, the grid pays.
        assert_eq!(o.run(MIDNIGHT, 100.0).unwrap().grid_wh, 100.0);
        assert!(o.release(job));
        assert_eq!(o.free_from(MIDNIGHT), MIDNIGHT);
        assert_eq!(o.run(MIDNIGHT, 100.0).unwrap().grid_wh, 0.0);
    }
}
