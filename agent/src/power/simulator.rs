//! A simulated solar rig: a clear-sky solar shape times seeded cloudiness (or a CSV trace),
//! a battery with state of charge and a reserve, a grid connection, and a load model.
//!
//! Time is an input: [`Simulator::sample`] advances the model to the instant it is given,
//! so a test can run a day in milliseconds.

use std::path::PathBuf;

use attest::msg::{ChannelKind, TrustTier};
use serde::{Deserialize, Serialize};

use super::{ChannelSpec, PowerSource, Sample, SourceError};
use crate::config_error::ConfigError;
use crate::site::SiteConfig;

/// The simulator's channels, in order.
pub const CHANNELS: [(&str, ChannelKind); 6] = [
    ("sim-solar", ChannelKind::Solar),
    ("sim-battery-charge", ChannelKind::BatteryCharge),
    ("sim-battery-discharge", ChannelKind::BatteryDischarge),
    ("sim-grid-import", ChannelKind::GridImport),
    ("sim-load", ChannelKind::Load),
    ("sim-gpu", ChannelKind::Gpu),
];

/// `[[source]] type = "simulator"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Seed of the cloud pattern.
    #[serde(default)]
    pub seed: u64,
    /// Mean cloudiness 0..=1 (0 is a clear sky).
    #[serde(default = "default_cloudiness")]
    pub cloudiness: f64,
    /// Base load, watts.
    #[serde(default = "default_base_load")]
    pub base_load_w: f64,
    /// GPU load while busy, watts.
    #[serde(default = "default_gpu")]
    pub gpu_w: f64,
    /// Initial battery state of charge, 0..=1.
    #[serde(default = "default_soc")]
    pub initial_soc: f64,
    /// A CSV trace (`seconds_of_day,solar_watts` lines) instead of the clear-sky model.
    #[serde(default)]
    pub trace_csv: Option<PathBuf>,
}

impl Default for SimulatorConfig {
    /// The simulator a `[[source]] type = "simulator"` table with no other key gives.
    fn default() -> Self {
        SimulatorConfig {
            seed: 0,
            cloudiness: default_cloudiness(),
            base_load_w: default_base_load(),
            gpu_w: default_gpu(),
            initial_soc: default_soc(),
            trace_csv: None,
        }
    }
}

const fn default_cloudiness() -> f64 {
    0.2
}
const fn default_base_load() -> f64 {
    40.0
}
const fn default_gpu() -> f64 {
    60.0
}
const fn default_soc() -> f64 {
    0.5
}

impl SimulatorConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.cloudiness) {
            return Err(ConfigError::Invalid {
                key: "source.cloudiness",
                reason: "must be within 0..=1".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.initial_soc) {
            return Err(ConfigError::Invalid {
                key: "source.initial_soc",
                reason: "must be within 0..=1".into(),
            });
        }
        if self.base_load_w < 0.0 || self.gpu_w < 0.0 {
            return Err(ConfigError::Invalid {
                key: "source.base_load_w",
                reason: "loads must not be negative".into(),
            });
        }
        Ok(())
    }
}

/// The simulated rig.
#[derive(Debug)]
pub struct Simulator {
    cfg: SimulatorConfig,
    channels: Vec<ChannelSpec>,
    lon: f64,
    lat: f64,
    panel_w: f64,
    capacity_j: f64,
    reserve_j: f64,
    battery_j: f64,
    trace: Option<Vec<(f64, f64)>>,
    last_ms: Option<u64>,
    /// Extra load set from outside (the job runner's GPU work in tests), watts.
    pub extra_load_w: f64,
    job_load: Option<(std::sync::Arc<super::JobLoad>, u64)>,
}

impl Simulator {
    /// A simulator for a site.
    pub fn new(cfg: SimulatorConfig, site: &SiteConfig) -> Simulator {
        let capacity_j = site.battery_wh as f64 * 3600.0;
        let trace = cfg
            .trace_csv
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_trace(&t));
        Simulator {
            channels: CHANNELS
                .iter()
                .map(|(n, k)| ChannelSpec {
                    name: n.to_string(),
                    kind: *k,
                    tier: TrustTier::SoftwareEstimate,
                })
                .collect(),
            lon: site.lon,
            lat: site.lat,
            panel_w: site.panel_watts_peak as f64,
            capacity_j,
            reserve_j: site.battery_reserve_wh as f64 * 3600.0,
            battery_j: capacity_j * cfg.initial_soc,
            trace,
            last_ms: None,
            extra_load_w: 0.0,
            job_load: None,
            cfg,
        }
    }

    /// Solar power (W) at `t_ms`: the trace if one is given, else a clear-sky shape from
    /// the sun's elevation at the site times seeded clouds.
    pub fn solar_w(&self, t_ms: u64) -> f64 {
        if let Some(trace) = &self.trace {
            return trace_at(trace, (t_ms / 1000 % 86_400) as f64);
        }
        let clear = attest::solar::clear_sky_fraction(sun_elevation(self.lat, self.lon, t_ms));
        let clouds = 1.0 - self.cfg.cloudiness * cloud_noise(self.cfg.seed, t_ms / 60_000);
        (self.panel_w * clear * clouds).max(0.0)
    }

    /// Load power (W) at `t_ms`: base load, GPU busy from 08:00 to 22:00 local solar time,
    /// plus any extra load.
    pub fn load_w(&self, t_ms: u64) -> (f64, f64) {
        let local_h = ((t_ms as f64 / 3.6e6) + self.lon / 15.0).rem_euclid(24.0);
        let gpu = if (8.0..22.0).contains(&local_h) {
            self.cfg.gpu_w
        } else {
            0.0
        } + self.extra_load_w;
        (self.cfg.base_load_w + gpu, gpu)
    }

    /// The battery's state of charge, per mille.
    pub fn soc_permille(&self) -> u16 {
        if self.capacity_j <= 0.0 {
            return 0;
        }
        ((self.battery_j / self.capacity_j) * 1000.0)
            .round()
            .clamp(0.0, 1000.0) as u16
    }
}

pub use attest::solar::sun_elevation;

/// Smooth pseudo-random cloud cover in 0..=1 from a seed and a minute index.
fn cloud_noise(seed: u64, minute: u64) -> f64 {
    let r = |i: u64| {
        let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % 10_000) as f64 / 10_000.0
    };
    // Clouds drift on a 15-minute scale: interpolate between knots.
    let (k, f) = (minute / 15, (minute % 15) as f64 / 15.0);
    r(k) * (1.0 - f) + r(k + 1) * f
}

fn parse_trace(text: &str) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((
                it.next()?.trim().parse().ok()?,
                it.next()?.trim().parse().ok()?,
            ))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn trace_at(trace: &[(f64, f64)], s: f64) -> f64 {
    match trace.iter().position(|(t, _)| *t > s) {
        None => trace.last().map_or(0.0, |p| p.1),
        Some(0) => trace[0].1,
        Some(i) => {
            let ((t0, w0), (t1, w1)) = (trace[i - 1], trace[i]);
            w0 + (w1 - w0) * (s - t0) / (t1 - t0)
        }
    }
}

impl PowerSource for Simulator {
    fn describe(&self) -> String {
        format!(
            "simulator(seed {}, cloudiness {})",
            self.cfg.seed, self.cfg.cloudiness
        )
    }

    fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    fn attach_job_load(&mut self, load: std::sync::Arc<super::JobLoad>) -> bool {
        let seen = load.drawn_uj.load(std::sync::atomic::Ordering::Relaxed);
        self.job_load = Some((load, seen));
        true
    }

    fn sample(&mut self, now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError> {
        let dt = self
            .last_ms
            .map_or(0.0, |l| now_ms.saturating_sub(l) as f64 / 1000.0);
        self.last_ms = Some(now_ms);
        let solar = self.solar_w(now_ms);
        let (mut load, mut gpu) = self.load_w(now_ms);
        if let Some((jl, seen)) = &mut self.job_load {
            let now = jl.drawn_uj.load(std::sync::atomic::Ordering::Relaxed);
            if dt > 0.0 {
                let w = now.saturating_sub(*seen) as f64 / 1e6 / dt;
                load += w;
                gpu += w;
            }
            *seen = now;
        }
        let (mut charge, mut discharge, mut grid) = (0.0, 0.0, 0.0);
        if solar >= load {
            let room = (self.capacity_j - self.battery_j).max(0.0);
            charge = if dt > 0.0 {
                (solar - load).min(room / dt)
            } else {
                0.0
            };
            self.battery_j += charge * dt;
        } else {
            let deficit = load - solar;
            let available = (self.battery_j - self.reserve_j).max(0.0);
            discharge = if dt > 0.0 {
                deficit.min(available / dt)
            } else {
                0.0
            };
            self.battery_j -= discharge * dt;
            grid = deficit - discharge;
        }
        let mw = |w: f64| {
            Some(Sample {
                power_mw: (w * 1000.0).round().max(0.0) as u64,
                ..Sample::default()
            })
        };
        let soc = Some(self.soc_permille());
        let mut out = vec![
            mw(solar),
            mw(charge),
            mw(discharge),
            mw(grid),
            mw(load),
            mw(gpu),
        ];
        for s in out[1..3].iter_mut().flatten() {
            s.soc_permille = soc;
            s.voltage_mv = Some(25_600);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteConfig {
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
            ..SiteConfig::new(52.5, 13.4)
        }
    }

    fn cfg() -> SimulatorConfig {
        SimulatorConfig {
            seed: 1,
            cloudiness: 0.0,
            base_load_w: 40.0,
            gpu_w: 60.0,
            initial_soc: 0.5,
            trace_csv: None,
        }
    }

    const MIDSUMMER_NOON_BERLIN: u64 = 1_782_000_000_000 + 11 * 3_600_000; // 11:00 UTC ~ solar noon

    #[test]
    fn the_sun_is_up_at_noon_and_down_at_midnight() {
        let s = Simulator::new(cfg(), &site());
        let noon = s.solar_w(MIDSUMMER_NOON_BERLIN);
        assert!(noon > 250.0 && noon <= 400.0, "noon {noon} W");
        assert_eq!(s.solar_w(MIDSUMMER_NOON_BERLIN + 12 * 3_600_000), 0.0);
        // Elevation at solar noon on 21 June in Berlin: 90 - 52.5 + 23.44 = 60.9 degrees.
        let e =
            sun_elevation(52.5, 13.4, 1_782_000_000_000 + 3_600_000 * 11 + 6 * 60_000).to_degrees();
        assert!((e - 60.9).abs() < 1.0, "elevation {e}");
    }

    #[test]
    fn energy_balances_and_the_battery_stays_within_its_limits() {
        let mut s = Simulator::new(
            SimulatorConfig {
                cloudiness: 0.5,
                ..cfg()
            },
            &site(),
        );
        let start = 1_782_000_000_000;
        for i in 0..86_400 / 10 {
            let t = start + i * 10_000;
            let v = s.sample(t).unwrap();
            let p = |i: usize| v[i].unwrap().power_mw as i64;
            // solar + discharge + grid = load + charge (within rounding), unless the battery is full
            let lhs = p(0) + p(2) + p(3);
            let rhs = p(4) + p(1);
            assert!(lhs >= rhs - 3, "at {i}: supply {lhs} < demand {rhs}");
            let soc = s.soc_permille();
            assert!((200..=1000).contains(&soc), "soc {soc}");
        }
    }

    #[test]
    fn a_csv_trace_replaces_the_clear_sky_model() {
        let dir = std::env::temp_dir().join(format!("sim-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("trace.csv");
        std::fs::write(&p, "seconds,watts\n0,0\n43200,300\n86400,0\n").unwrap();
        let s = Simulator::new(
            SimulatorConfig {
                trace_csv: Some(p),
                ..cfg()
            },
            &site(),
        );
        assert_eq!(s.solar_w(1_782_000_000_000 + 43_200_000), 300.0);
        assert_eq!(s.solar_w(1_782_000_000_000 + 21_600_000), 150.0);
    }
}
