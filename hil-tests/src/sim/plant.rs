//! A solar, battery and load plant: the one physical truth the hardware simulators report
//! from, so that what a charge controller, a grid meter and the module's rails say at the
//! same instant adds up (the energy balance holds at every step).
//!
//! Per step of `dt`: the panel makes `solar` (a clear-sky day curve scaled by the panel's
//! rating, less the cloud cover); the load draws `base + gpu` (the GPU's share scaled by
//! its frequency cap); the surplus charges the battery up to full and is exported past
//! that, a deficit discharges it down to empty and is imported past that. Every flow
//! integrates into a counter (watt-hours as `f64`), so a test can compare what a device
//! signed with what the plant did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A plant's fixed properties.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantConfig {
    /// Panel rating, watts at full sun.
    pub panel_w: f64,
    /// Battery capacity, watt-hours.
    pub battery_wh: f64,
    /// State of charge at the start, 0..=1.
    pub initial_soc: f64,
    /// The load with the GPU idle, watts.
    pub base_load_w: f64,
    /// What a busy GPU adds at its full clock, watts.
    pub gpu_w: f64,
    /// Local solar noon and day length: the panel makes power from `noon - day/2` to
    /// `noon + day/2` (seconds of the simulated day).
    pub noon_s: f64,
    pub day_s: f64,
}

impl Default for PlantConfig {
    /// A small rig: a 200 W panel, a 1 kWh battery half full, a 15 W module whose GPU adds
    /// 25 W, noon at 12:00 and a 12-hour day.
    fn default() -> Self {
        PlantConfig {
            panel_w: 200.0,
            battery_wh: 1_000.0,
            initial_soc: 0.5,
            base_load_w: 15.0,
            gpu_w: 25.0,
            noon_s: 12.0 * 3_600.0,
            day_s: 12.0 * 3_600.0,
        }
    }
}

/// What the plant is doing now and what it has done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlantState {
    /// Simulated time, milliseconds since the start of the simulated day 0.
    pub t_ms: u64,
    /// Instantaneous flows, watts (all non-negative).
    pub solar_w: f64,
    pub load_w: f64,
    pub gpu_w: f64,
    pub charge_w: f64,
    pub discharge_w: f64,
    pub import_w: f64,
    pub export_w: f64,
    /// Battery state of charge, 0..=1, and its terminal voltage, millivolts.
    pub soc: f64,
    pub battery_mv: f64,
    /// Counters since the start, watt-hours.
    pub solar_wh: f64,
    pub load_wh: f64,
    pub charge_wh: f64,
    pub discharge_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
}

impl PlantState {
    /// Battery current, milliamps: positive while charging, as a charge controller says.
    pub fn battery_ma(&self) -> f64 {
        (self.charge_w - self.discharge_w) / (self.battery_mv / 1000.0) * 1000.0
    }
}

/// The plant.
#[derive(Debug, Clone)]
pub struct Plant {
    cfg: PlantConfig,
    state: PlantState,
    cloud: f64,
    gpu_busy: bool,
    gpu_clock: f64,
}

/// A 12.8 V lithium iron phosphate battery's terminal voltage at `soc`, millivolts.
fn battery_mv(soc: f64) -> f64 {
    12_000.0 + 1_600.0 * soc.clamp(0.0, 1.0)
}

impl Plant {
    /// A plant at the start of simulated day 0 plus `start_s` seconds.
    pub fn new(cfg: PlantConfig, start_s: f64) -> Plant {
        let soc = cfg.initial_soc.clamp(0.0, 1.0);
        let mut plant = Plant {
            state: PlantState {
                t_ms: (start_s * 1000.0) as u64,
                soc,
                battery_mv: battery_mv(soc),
                ..PlantState::default()
            },
            cfg,
            cloud: 0.0,
            gpu_busy: false,
            gpu_clock: 1.0,
        };
        plant.step(Duration::ZERO);
        plant
    }

    pub fn config(&self) -> &PlantConfig {
        &self.cfg
    }

    pub fn state(&self) -> &PlantState {
        &self.state
    }

    /// Cloud cover from now on, 0 (clear) ..= 1 (the panel makes nothing).
    pub fn set_cloud(&mut self, cloud: f64) {
        self.cloud = cloud.clamp(0.0, 1.0);
    }

    /// Whether the GPU is working.
    pub fn set_gpu_busy(&mut self, busy: bool) {
        self.gpu_busy = busy;
    }

    /// The GPU's clock as a fraction of its highest (a devfreq cap): its power scales with it.
    pub fn set_gpu_clock(&mut self, fraction: f64) {
        self.gpu_clock = fraction.clamp(0.0, 1.0);
    }

    /// Clear-sky panel output at second-of-day `s`: a half sine between sunrise and sunset.
    pub fn clear_sky_w(&self, s: f64) -> f64 {
        let s = s.rem_euclid(86_400.0);
        let x = (s - (self.cfg.noon_s - self.cfg.day_s / 2.0)) / self.cfg.day_s;
        if (0.0..=1.0).contains(&x) {
            self.cfg.panel_w * (std::f64::consts::PI * x).sin()
        } else {
            0.0
        }
    }

    /// Advances the plant by `dt` of simulated time and returns its new state.
    pub fn step(&mut self, dt: Duration) -> &PlantState {
        self.state.t_ms += dt.as_millis() as u64;
        let solar = self.clear_sky_w(self.state.t_ms as f64 / 1000.0) * (1.0 - self.cloud);
        let st = &mut self.state;
        let hours = dt.as_secs_f64() / 3_600.0;
        let gpu = if self.gpu_busy {
            self.cfg.gpu_w * self.gpu_clock
        } else {
            0.0
        };
        let load = self.cfg.base_load_w + gpu;
        let net = solar - load;
        let (mut charge, mut discharge, mut import, mut export) = (0.0, 0.0, 0.0, 0.0);
        let room_wh = (1.0 - st.soc) * self.cfg.battery_wh;
        let stored_wh = st.soc * self.cfg.battery_wh;
        if net >= 0.0 {
            charge = if hours > 0.0 {
                net.min(room_wh / hours)
            } else {
                net
            };
            export = net - charge;
        } else {
            discharge = if hours > 0.0 {
                (-net).min(stored_wh / hours)
            } else {
                -net
            };
            import = -net - discharge;
        }
        st.soc = ((stored_wh + (charge - discharge) * hours) / self.cfg.battery_wh).clamp(0.0, 1.0);
        st.battery_mv = battery_mv(st.soc);
        (st.solar_w, st.load_w, st.gpu_w) = (solar, load, gpu);
        (st.charge_w, st.discharge_w) = (charge, discharge);
        (st.import_w, st.export_w) = (import, export);
        st.solar_wh += solar * hours;
        st.load_wh += load * hours;
        st.charge_wh += charge * hours;
        st.discharge_wh += discharge * hours;
        st.import_wh += import * hours;
        st.export_wh += export * hours;
        &self.state
    }
}

/// A plant several simulators read at once.
pub type SharedPlant = Arc<Mutex<Plant>>;

/// Runs a plant's clock on a thread of its own: every `tick` of real time it advances
/// `tick x speed` of simulated time. Stops when dropped.
pub struct PlantClock {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PlantClock {
    pub fn start(plant: SharedPlant, tick: Duration, speed: f64) -> PlantClock {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(tick);
                plant.lock().unwrap().step(tick.mul_f64(speed));
            }
        });
        PlantClock {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PlantClock {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance(st: &PlantState) -> f64 {
        st.solar_wh + st.discharge_wh + st.import_wh - st.load_wh - st.charge_wh - st.export_wh
    }

    #[test]
    fn energy_balances_over_a_day_of_clouds_and_a_battery_that_fills_and_empties_with_a_busy_gpu() {
        let mut plant = Plant::new(
            PlantConfig {
                battery_wh: 300.0,
                initial_soc: 0.2,
                ..PlantConfig::default()
            },
            0.0,
        );
        let mut full = false;
        let mut empty = false;
        for minute in 0..(24 * 60) {
            plant.set_cloud(if (13 * 60..15 * 60).contains(&minute) {
                0.8
            } else {
                0.0
            });
            plant.set_gpu_busy(minute % 7 < 3);
            let st = plant.step(Duration::from_secs(60)).clone();
            full |= st.soc >= 0.999 && st.export_w > 0.0;
            empty |= st.soc <= 0.001 && st.import_w > 0.0;
            assert!(balance(&st).abs() < 1e-6, "minute {minute}: {st:?}");
            assert!((0.0..=1.0).contains(&st.soc));
        }
        assert!(full && empty, "the day both filled and emptied the battery");
        let st = plant.state();
        // A 200 W half-sine over 12 h is 200 x 12 x 2/pi = 1,528 Wh; the two cloudy hours
        // after noon take 0.8 x about 345 Wh = 276 Wh of it.
        assert!((st.solar_wh - 1_252.0).abs() < 5.0, "{}", st.solar_wh);
    }

    #[test]
    fn the_battery_current_is_positive_while_charging_and_negative_while_discharging() {
        let mut plant = Plant::new(PlantConfig::default(), 12.0 * 3_600.0);
        assert!(plant.step(Duration::from_secs(1)).battery_ma() > 0.0);
        plant.set_cloud(1.0);
        assert!(plant.step(Duration::from_secs(1)).battery_ma() < 0.0);
    }
}
