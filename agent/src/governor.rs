//! The power governor (sans-IO): what a job may draw now, and how to hold it there.
//!
//! **Budget** (watts a job may draw), recomputed on every meter sample:
//!
//! ```text
//! rest of rig    = load - job
//! solar surplus  = max(0, solar - rest of rig)
//! battery        = max(0, (stored - reserve) / the job's expected remaining time
//!                         - what the sun does not cover of the rest of the rig)
//! grid           = policy allowance (0: never buy grid power for jobs)
//! budget         = min(hard cap, solar surplus + battery + grid)
//! ```
//!
//! **Levers**, in order: a power limit the GPU enforces itself (NVML, discrete GPUs); a
//! frequency cap (Jetson devfreq); duty-cycling between chunk launches (run a chunk, rest in
//! proportion); pause (when even the smallest duty would overshoot); refuse (admission, when
//! the budget cannot pay for the job by its deadline).
//!
//! The loop closes on *measured* job power (the GPU channel above its idle baseline): the
//! job's full-speed draw is learned from what the meter saw while chunks ran, so a wrong
//! configured `power_w` corrects itself within a few samples.

use serde::Serialize;

/// Policy, from the `[jobs]` config table.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorConfig {
    /// Grid power jobs may use, watts (0: none).
    pub grid_allowance_w: f64,
    /// Never more than this, watts.
    pub hard_cap_w: f64,
    /// The job's draw at full speed until measured, watts.
    pub job_power_w: f64,
    /// Below this duty the job pauses instead (short bursts would overshoot the budget
    /// within a measurement window).
    pub min_duty: f64,
    /// The battery's usable capacity above reserve is spread over at least this long,
    /// seconds (so a short job does not get the whole battery as a rate).
    pub battery_min_horizon_s: f64,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            grid_allowance_w: 0.0,
            hard_cap_w: 250.0,
            job_power_w: 60.0,
            min_duty: 0.1,
            battery_min_horizon_s: 600.0,
        }
    }
}

/// What the meter says right now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerNow {
    /// Solar production, watts.
    pub solar_w: f64,
    /// The whole rig's load (job included), watts.
    pub load_w: f64,
    /// The job's measured draw (GPU channel above its idle baseline), watts.
    pub job_w: f64,
    /// Battery energy above its reserve, watt-hours.
    pub battery_above_reserve_wh: f64,
}

impl PowerNow {
    /// What the meter's last samples say; the job's draw is the GPU channel above
    /// `gpu_baseline_w` (what it drew before the job), the battery is its reported state of
    /// charge over `battery_wh` less `reserve_wh`.
    pub fn from_meter(
        meter: &crate::meter::Meter,
        battery_wh: u32,
        reserve_wh: u32,
        gpu_baseline_w: f64,
    ) -> PowerNow {
        use attest::msg::ChannelKind as K;
        PowerNow {
            solar_w: meter.power_w(K::Solar),
            load_w: meter.power_w(K::Load),
            job_w: (meter.power_w(K::Gpu) - gpu_baseline_w).max(0.0),
            battery_above_reserve_wh: meter.soc_permille().map_or(0.0, |soc| {
                soc as f64 / 1000.0 * battery_wh as f64 - reserve_wh as f64
            }),
        }
    }
}

/// The budget and where it comes from (shown in `heliostat-agent status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Budget {
    /// Solar beyond the rest of the rig's load, watts.
    pub solar_surplus_w: f64,
    /// The battery above reserve as a rate over the job's remaining time, less what the
    /// rest of the rig draws from it, watts.
    pub battery_w: f64,
    /// The grid allowance, watts.
    pub grid_w: f64,
    /// The hard cap, watts.
    pub cap_w: f64,
    /// What the job may draw: min(cap, surplus + battery + grid).
    pub total_w: f64,
}

/// The budget for a job expected to run `remaining_s` more seconds at full speed.
pub fn budget(cfg: &GovernorConfig, p: &PowerNow, remaining_s: f64) -> Budget {
    let rest_of_rig = (p.load_w - p.job_w).max(0.0);
    let solar_surplus_w = (p.solar_w - rest_of_rig).max(0.0);
    // What the sun does not cover of the rest of the rig comes out of the battery first.
    let deficit_w = (rest_of_rig - p.solar_w).max(0.0);
    let horizon = remaining_s.max(cfg.battery_min_horizon_s).max(1.0);
    let battery_w = ((p.battery_above_reserve_wh.max(0.0) * 3600.0) / horizon - deficit_w).max(0.0);
    let grid_w = cfg.grid_allowance_w.max(0.0);
    let total_w = (solar_surplus_w + battery_w + grid_w).min(cfg.hard_cap_w.max(0.0));
    Budget {
        solar_surplus_w,
        battery_w,
        grid_w,
        cap_w: cfg.hard_cap_w,
        total_w,
    }
}

/// Why admission refused a job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// No budget at all right now.
    #[error(
        "no power budget: solar surplus {solar:.1} W, battery at reserve, grid allowance {grid:.1} W"
    )]
    NoBudget { solar: f64, grid: f64 },
    /// The budget cannot pay for the job by its deadline.
    #[error(
        "the job needs about {need_j:.0} J by its deadline; a budget of {budget_w:.1} W for {secs:.0} s gives {have_j:.0} J"
    )]
    Deadline {
        need_j: f64,
        have_j: f64,
        budget_w: f64,
        secs: f64,
    },
    /// The job's own energy limit is below its estimate.
    #[error("the job's energy estimate {need_j:.0} J exceeds its limit {limit_j:.0} J")]
    OverLimit { need_j: f64, limit_j: f64 },
}

/// Admission: can the budget pay for `full_s` seconds at `power_w` within `secs_left`?
/// (It assumes today's budget holds until the deadline: optimistic at dusk, pessimistic at
/// dawn; the governor then holds the job to the real budget, and a job that cannot finish
/// reports `DeadlineMissed`.)
pub fn admit(
    b: &Budget,
    power_w: f64,
    full_s: f64,
    secs_left: f64,
    max_energy_j: Option<f64>,
) -> Result<(), Refusal> {
    let need_j = power_w * full_s;
    if let Some(limit_j) = max_energy_j
        && need_j > limit_j
    {
        return Err(Refusal::OverLimit { need_j, limit_j });
    }
    if b.total_w <= 0.0 {
        return Err(Refusal::NoBudget {
            solar: b.solar_surplus_w,
            grid: b.grid_w,
        });
    }
    // At most `power_w` is useful; the job runs at min(budget, power) for the time left.
    let have_j = b.total_w.min(power_w) * secs_left.max(0.0);
    if have_j < need_j {
        return Err(Refusal::Deadline {
            need_j,
            have_j,
            budget_w: b.total_w,
            secs: secs_left,
        });
    }
    Ok(())
}

/// Admission of a job of `full_s` seconds at full speed with `limits`, at `now` (ms):
/// the budget it would start under, or why not.
pub fn admit_job(
    g: &Governor,
    p: &PowerNow,
    limits: &attest::msg::JobLimits,
    full_s: f64,
    now: u64,
) -> Result<Budget, Refusal> {
    let secs_left = limits.deadline.0.saturating_sub(now) as f64 / 1000.0;
    let max_j = (limits.max_energy.0 > 0).then(|| limits.max_energy.0 as f64 / 1000.0);
    let b = budget(g.config(), p, full_s);
    admit(&b, g.full_w(), full_s, secs_left, max_j).map(|()| b)
}

/// A hardware lever that lowers the job's full-speed draw (power limit, frequency cap).
pub trait Lever: Send {
    /// A name for status.
    fn name(&self) -> &'static str;
    /// Asks the hardware to hold the job near `target_w` given its full-speed draw; returns
    /// the fraction of full-speed power the job will draw at 100 % duty (1.0: no effect).
    fn apply(&mut self, target_w: f64, full_w: f64) -> f64;
    /// Removes any limit (job finished).
    fn release(&mut self);
}

/// What the governor decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    /// The budget it held the job to.
    pub budget: Budget,
    /// Fraction of time chunks may run (0..=1).
    pub duty: f64,
    /// The job must not run now.
    pub pause: bool,
    /// Fraction of full-speed power the hardware levers allow at 100 % duty.
    pub lever_fraction: f64,
    /// The learned full-speed draw of the job, watts.
    pub full_w: f64,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            budget: Budget::default(),
            duty: 1.0,
            pause: false,
            lever_fraction: 1.0,
            full_w: 0.0,
        }
    }
}

/// The control loop.
pub struct Governor {
    cfg: GovernorConfig,
    full_w: f64,
    levers: Vec<Box<dyn Lever>>,
}

impl Governor {
    /// A governor with hardware levers, in the order they are tried.
    pub fn new(cfg: GovernorConfig, levers: Vec<Box<dyn Lever>>) -> Governor {
        Governor {
            full_w: cfg.job_power_w.max(0.1),
            cfg,
            levers,
        }
    }

    /// The policy.
    pub fn config(&self) -> &GovernorConfig {
        &self.cfg
    }

    /// The job's full-speed draw as learned so far, watts.
    pub fn full_w(&self) -> f64 {
        self.full_w
    }

    /// One control step. `ran_fraction` is the share of the last interval that chunks were
    /// running (so measured job power / ran_fraction is the full-speed draw at the levers'
    /// setting); `lever_fraction_before` is the levers' fraction during that interval.
    pub fn update(
        &mut self,
        p: &PowerNow,
        remaining_s: f64,
        ran_fraction: f64,
        lever_fraction_before: f64,
    ) -> Decision {
        // Learn the full-speed draw from what the meter saw (only from intervals that ran
        // long enough to say something).
        if ran_fraction >= 0.2 && p.job_w > 0.0 {
            let seen = p.job_w / ran_fraction / lever_fraction_before.max(0.05);
            self.full_w = 0.7 * self.full_w + 0.3 * seen;
        }
        let b = budget(&self.cfg, p, remaining_s);
        let mut lever_fraction: f64 = 1.0;
        for l in self.levers.iter_mut() {
            lever_fraction = lever_fraction.min(l.apply(b.total_w, self.full_w));
        }
        let at_full = self.full_w * lever_fraction;
        let duty = if at_full <= 0.0 {
            1.0
        } else {
            (b.total_w / at_full).clamp(0.0, 1.0)
        };
        let pause = duty < self.cfg.min_duty;
        Decision {
            budget: b,
            duty: if pause { 0.0 } else { duty },
            pause,
            lever_fraction,
            full_w: self.full_w,
        }
    }

    /// Lifts every hardware limit (no job running).
    pub fn release(&mut self) {
        for l in self.levers.iter_mut() {
            l.release();
        }
    }

    /// The levers' names, in order.
    pub fn lever_names(&self) -> Vec<&'static str> {
        self.levers.iter().map(|l| l.name()).collect()
    }
}

/// Jetson GPU frequency cap through devfreq sysfs: writes `max_freq` with the highest of
/// `available_frequencies` at or below `ratio x the highest`, assuming power roughly follows
/// frequency (conservative: dynamic power falls faster, with voltage). The directory is
/// configurable (`/sys/class/devfreq/17000000.ga10b` on Orin; a temp dir in tests).
pub struct DevfreqLever {
    dir: std::path::PathBuf,
    freqs: Vec<u64>,
    original_max: Option<String>,
    last_error: Option<String>,
}

impl DevfreqLever {
    /// Opens a devfreq directory (reads `available_frequencies`).
    pub fn open(dir: &std::path::Path) -> std::io::Result<DevfreqLever> {
        let text = std::fs::read_to_string(dir.join("available_frequencies"))?;
        let mut freqs: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        freqs.sort_unstable();
        freqs.dedup();
        if freqs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "available_frequencies lists no frequency",
            ));
        }
        let original_max = std::fs::read_to_string(dir.join("max_freq")).ok();
        Ok(DevfreqLever {
            dir: dir.to_path_buf(),
            freqs,
            original_max,
            last_error: None,
        })
    }

    fn write_max(&mut self, value: &str) {
        if let Err(e) = std::fs::write(self.dir.join("max_freq"), value) {
            let msg = e.to_string();
            if self.last_error.as_deref() != Some(&msg) {
                tracing::warn!(dir = %self.dir.display(), error = %msg, "devfreq: cannot set max_freq");
            }
            self.last_error = Some(msg);
        }
    }
}

impl Lever for DevfreqLever {
    fn name(&self) -> &'static str {
        "devfreq"
    }

    fn apply(&mut self, target_w: f64, full_w: f64) -> f64 {
        let top = *self.freqs.last().expect("non-empty");
        let ratio = if full_w > 0.0 {
            (target_w / full_w).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let want = (top as f64 * ratio) as u64;
        let f = self
            .freqs
            .iter()
            .rev()
            .find(|f| **f <= want)
            .copied()
            .unwrap_or(self.freqs[0]);
        self.write_max(&f.to_string());
        f as f64 / top as f64
    }

    fn release(&mut self) {
        let v = self
            .original_max
            .clone()
            .unwrap_or_else(|| self.freqs.last().expect("non-empty").to_string());
        self.write_max(v.trim());
    }
}

/// NVML power limit on a discrete GPU: the GPU holds its own draw at the limit (within
/// its allowed range). Needs root; a refusal is logged once and the lever reports no
/// effect, so duty-cycling takes over.
pub struct NvmlLimitLever {
    nvml: nvml_wrapper::Nvml,
    index: u32,
    range_mw: (u32, u32),
    default_mw: u32,
    failed: bool,
}

impl NvmlLimitLever {
    /// Opens GPU `index` through NVML.
    pub fn open(index: u32) -> Result<NvmlLimitLever, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let (range_mw, default_mw) = {
            let d = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML GPU {index}: {e}"))?;
            let c = d
                .power_management_limit_constraints()
                .map_err(|e| format!("NVML power limit range: {e}"))?;
            let def = d
                .power_management_limit_default()
                .map_err(|e| format!("NVML default power limit: {e}"))?;
            ((c.min_limit, c.max_limit), def)
        };
        Ok(NvmlLimitLever {
            nvml,
            index,
            range_mw,
            default_mw,
            failed: false,
        })
    }

    fn set(&mut self, mw: u32) -> bool {
        if self.failed {
            return false;
        }
        let r = self
            .nvml
            .device_by_index(self.index)
            .and_then(|mut d| d.set_power_management_limit(mw));
        if let Err(e) = r {
            tracing::warn!(error = %e, "NVML: cannot set the power limit (needs root); duty-cycling instead");
            self.failed = true;
            return false;
        }
        true
    }
}

impl Lever for NvmlLimitLever {
    fn name(&self) -> &'static str {
        "nvml-power-limit"
    }

    fn apply(&mut self, target_w: f64, full_w: f64) -> f64 {
        let mw = ((target_w * 1000.0) as u32).clamp(self.range_mw.0, self.range_mw.1);
        if !self.set(mw) || full_w <= 0.0 {
            return 1.0;
        }
        (mw as f64 / 1000.0 / full_w).clamp(0.0, 1.0)
    }

    fn release(&mut self) {
        let d = self.default_mw;
        self.set(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(solar: f64, load: f64, job: f64, batt: f64) -> PowerNow {
        PowerNow {
            solar_w: solar,
            load_w: load,
            job_w: job,
            battery_above_reserve_wh: batt,
        }
    }

    #[test]
    fn the_budget_adds_surplus_battery_and_grid_under_the_cap() {
        let cfg = GovernorConfig {
            grid_allowance_w: 5.0,
            hard_cap_w: 100.0,
            ..Default::default()
        };
        // 120 W of sun, the rig uses 40 W besides a 30 W job: 80 W surplus; 10 Wh over an
        // hour is 10 W; 5 W grid.
        let b = budget(&cfg, &p(120.0, 70.0, 30.0, 10.0), 3600.0);
        assert_eq!(
            (b.solar_surplus_w, b.battery_w, b.grid_w, b.total_w),
            (80.0, 10.0, 5.0, 95.0)
        );
        // The cap wins.
        let b = budget(&cfg, &p(500.0, 40.0, 0.0, 10.0), 3600.0);
        assert_eq!(b.total_w, 100.0);
        // At night with the battery at reserve and no grid allowance: nothing.
        let cfg0 = GovernorConfig::default();
        assert_eq!(budget(&cfg0, &p(0.0, 40.0, 0.0, 0.0), 60.0).total_w, 0.0);
        // A short job does not get the whole battery as a rate, and the rest of the rig's
        // draw at night comes out of it first: 10 Wh over 600 s is 60 W, less 40 W.
        let b = budget(&cfg0, &p(0.0, 40.0, 0.0, 10.0), 1.0);
        assert_eq!(b.battery_w, 10.0 * 3600.0 / 600.0 - 40.0);
    }

    #[test]
    fn admission_refuses_with_a_reason_the_scheduler_can_act_on() {
        let cfg = GovernorConfig::default();
        let night = budget(&cfg, &p(0.0, 40.0, 0.0, 0.0), 600.0);
        let r = admit(&night, 60.0, 600.0, 3600.0, None).unwrap_err();
        assert!(matches!(r, Refusal::NoBudget { .. }), "{r}");
        assert!(r.to_string().contains("battery at reserve"));
        // 20 W for 10 minutes is 12 kJ; the job needs 60 W x 600 s = 36 kJ.
        let dim = budget(&cfg, &p(60.0, 40.0, 0.0, 0.0), 600.0);
        let r = admit(&dim, 60.0, 600.0, 600.0, None).unwrap_err();
        assert_eq!(
            r,
            Refusal::Deadline {
                need_j: 36_000.0,
                have_j: 12_000.0,
                budget_w: 20.0,
                secs: 600.0
            }
        );
        // With three times as long it fits.
        admit(&dim, 60.0, 600.0, 1800.0, None).unwrap();
        // Its own limit.
        let sunny = budget(&cfg, &p(300.0, 40.0, 0.0, 0.0), 600.0);
        assert!(matches!(
            admit(&sunny, 60.0, 600.0, 3600.0, Some(1000.0)),
            Err(Refusal::OverLimit { .. })
        ));
    }

    #[test]
    fn duty_follows_the_budget_and_the_learned_draw_and_pauses_below_the_minimum() {
        let mut g = Governor::new(GovernorConfig::default(), vec![]);
        // Configured 60 W; budget 30 W: half duty.
        let d = g.update(&p(70.0, 40.0, 0.0, 0.0), 600.0, 0.0, 1.0);
        assert!((d.duty - 0.5).abs() < 1e-9 && !d.pause, "{d:?}");
        // The meter says the job really draws 80 W at full speed (40 W at half duty): the
        // governor learns it and lowers the duty.
        for _ in 0..30 {
            g.update(&p(110.0, 80.0, 40.0, 0.0), 600.0, 0.5, 1.0);
        }
        assert!((g.full_w() - 80.0).abs() < 0.5, "{}", g.full_w());
        let d = g.update(&p(110.0, 80.0, 40.0, 0.0), 600.0, 0.5, 1.0);
        assert!((d.duty - 70.0 / 80.0).abs() < 0.01, "{d:?}");
        // Sunset: 4 W of budget is under 10 % of 80 W: pause.
        let d = g.update(&p(44.0, 40.0, 0.0, 0.0), 600.0, 0.0, 1.0);
        assert!(d.pause && d.duty == 0.0, "{d:?}");
    }

    #[test]
    fn the_devfreq_lever_caps_the_frequency_and_restores_it() {
        let dir = std::env::temp_dir().join(format!("heliostat-devfreq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("available_frequencies"),
            "306000000 408000000 612000000 816000000 1020000000\n",
        )
        .unwrap();
        std::fs::write(dir.join("max_freq"), "1020000000\n").unwrap();
        let mut l = DevfreqLever::open(&dir).unwrap();
        let mut g = Governor::new(GovernorConfig::default(), vec![Box::new(l)]);
        // 36 W of a 60 W job: at most 0.6 x 1020 MHz = 612 MHz.
        let d = g.update(&p(76.0, 40.0, 0.0, 0.0), 600.0, 0.0, 1.0);
        assert_eq!(
            std::fs::read_to_string(dir.join("max_freq")).unwrap(),
            "612000000"
        );
        assert!((d.lever_fraction - 0.6).abs() < 1e-9, "{d:?}");
        assert!((d.duty - 1.0).abs() < 1e-9, "{d:?}");
        g.release();
        assert_eq!(
            std::fs::read_to_string(dir.join("max_freq")).unwrap(),
            "1020000000"
        );
        // A directory without the files is refused at open.
        l = match DevfreqLever::open(&dir.join("missing")) {
            Ok(_) => panic!("opened a missing devfreq dir"),
            Err(_) => DevfreqLever::open(&dir).unwrap(),
        };
        assert_eq!(l.name(), "devfreq");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
