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
//! the budget cannot pay for the job by its deadline). The hardware levers themselves (sysfs,
//! NVML) live in [`crate::levers`]; this file only decides.
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
}
