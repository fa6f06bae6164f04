//! The scheduler's settings: the ranking strategy, the forecast's margins, the lease
//! grace period and the weights of the carbon-aware score, with their defaults in one
//! place.

/// How jobs are ranked. The baselines exist to measure the carbon-aware strategy against
/// (the simulation runs all three on the same fleet) and to switch it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Least expected emissions, waiting for sun when the deadline allows (see
    /// `planner.rs` for the score).
    #[default]
    CarbonAware,
    /// The first device in the offers' order that is free now and can finish in time.
    /// Carbon limits are not looked at.
    FirstFit,
    /// The cheapest device free now that can finish in time. Carbon limits are not
    /// looked at.
    Cheapest,
}

/// What the carbon-aware score weighs besides emissions, in milligram-equivalents of
/// CO2e (see `planner.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Per hour of waiting, per kWh of the job.
    pub wait_mg_per_kwh_hour: f64,
    /// Per micro-credit of the job's price.
    pub price_mg_per_micro_credit: f64,
    /// Per kWh of the job, times one minus the device's reliability.
    pub unreliability_mg_per_kwh: f64,
    /// A run that would leave no time before the deadline to run the job again after a
    /// lost lease (the grace period plus a run at full power). The default, more than any
    /// emissions, puts deadlines first: an urgent job then prefers a device that finishes
    /// with room to spare over a slower one on sun. 0 weighs emissions alone.
    pub no_room_to_recover_mg: f64,
}

/// The scheduler's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// How jobs are ranked.
    pub strategy: Strategy,
    /// Hours of forecast a job can be planned into.
    pub horizon_hours: u32,
    /// How long a lease survives its device's silence before the job is placed elsewhere.
    pub lease_grace_ms: u64,
    /// When nothing better is known (all devices busy or offline), decide again after this.
    pub retry_ms: u64,
    /// A run that starts within this of now is placed now, with its later `start_at`, so
    /// that the device has it in time; a wait ends this long before its planned start. At
    /// least the caller's tick period (a caller that sends `RunJob` at once starts the job
    /// up to this much early).
    pub lead_ms: u64,
    /// Fraction by which forecast sun is lowered when planning (forecasts err; a job
    /// planned on 100 % of the forecast runs on the grid half the time).
    pub forecast_margin: f64,
    /// The measured/clear-sky ratio the clear-sky forecast assumes far from now.
    pub typical_sky_ratio: f64,
    /// Hours over which the site's recent ratio fades to the typical one.
    pub sky_ratio_fade_hours: f64,
    /// A run must end this fraction of the time from now to its end before the deadline...
    pub deadline_slack_fraction: f64,
    /// ...and at least this long before it, ms.
    pub deadline_slack_min_ms: u64,
    /// A lease past its expected end is assumed to keep its device this much longer, ms.
    pub overrun_ms: u64,
    /// The carbon-aware score's weights.
    pub weights: Weights,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            strategy: Strategy::CarbonAware,
            horizon_hours: 48,
            lease_grace_ms: 30 * 60_000,
            retry_ms: 5 * 60_000,
            // The controller's dispatch ticks every few seconds.
            lead_ms: 60_000,
            forecast_margin: 0.15,
            typical_sky_ratio: 0.7,
            sky_ratio_fade_hours: 4.0,
            deadline_slack_fraction: 0.1,
            deadline_slack_min_ms: 10 * 60_000,
            overrun_ms: 15 * 60_000,
            weights: Weights {
                // Waiting 10 h costs 10 g per kWh: grid energy at 400 g/kWh is worth a
                // long wait, a few percent of it is not.
                wait_mg_per_kwh_hour: 1_000.0,
                // A GPU-hour at 0.3 credits weighs 3 g.
                price_mg_per_micro_credit: 0.01,
                unreliability_mg_per_kwh: 100_000.0,
                // A tonne: above any job's emissions, below an inflexible job's wait.
                no_room_to_recover_mg: 1e12,
            },
        }
    }
}
