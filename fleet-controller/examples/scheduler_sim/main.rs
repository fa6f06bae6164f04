//! The scheduler's 7-day simulation: 1,000 devices at sites in twenty cities over every
//! inhabited time zone band, solar from the site model (`attest::solar`) times seeded
//! weather (cloudiness per site per day, passing clouds), batteries, grid intensities from
//! the bundled table per region, a seeded stream of flexible and urgent jobs, outages and
//! refused admissions. The same world runs under each policy in turn:
//!
//! - carbon-aware: the scheduler as shipped, given hourly solar forecasts with a seeded
//!   error of 10 % (part per site and day, part per hour);
//! - carbon-aware, site model: no forecasts given; the scheduler's clear-sky curve scaled
//!   by each site's measured ratio;
//! - carbon-aware, deadline risk not weighed: a run that leaves no room to recover from a
//!   lost lease is not avoided (`no_room_to_recover_mg` = 0);
//! - oracle: the carbon-aware scheduler given the future sun exactly (and no margin);
//! - FIFO: the first device in the fleet's order that is free now and fits;
//! - cheapest: the cheapest device that is free now and fits.
//!
//! The clock is the simulation's own: the scheduler reads none. Its time per decision is
//! measured with the process clock around each tick.
//!
//! `cargo run --release -p fleet-controller --example scheduler_sim [-- --devices N
//! --days D --jobs-per-hour R --seed S]`

mod report;
mod run;
mod world;

use fleet_controller::market::{SchedulerConfig, Strategy, Weights};

use run::Setup;
use world::{Params, World};

fn main() {
    let mut p = Params {
        seed: 20_261_129,
        devices: 1_000,
        days: 7,
        drain_days: 2,
        jobs_per_hour: 100.0,
        // 2026-11-29T00:00:00Z.
        start_ms: 1_795_910_400_000,
        step_ms: 5 * 60_000,
        forecast_error: 0.10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--devices" => p.devices = value.parse().unwrap_or_else(|_| usage()),
            "--days" => p.days = value.parse().unwrap_or_else(|_| usage()),
            "--jobs-per-hour" => p.jobs_per_hour = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => p.seed = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let made = std::time::Instant::now();
    let world = World::new(p);
    println!(
        "world: {} devices, {} days of arrivals (+{} to drain), {} jobs, {} outages, seed {} ({:.1} s to build)",
        p.devices,
        p.days,
        p.drain_days,
        world.arrivals.len(),
        world.outages.len(),
        p.seed,
        made.elapsed().as_secs_f64()
    );
    let load = world.load();
    println!(
        "load: {:.0} jobs a day asking {:.0} kWh; the fleet's panels give {:.0} kWh a day; jobs take {:.0} % of the fleet's device-hours at nominal power",
        load.jobs_per_day,
        load.job_kwh_per_day,
        load.solar_kwh_per_day,
        100.0 * load.utilisation
    );
    // The simulation ticks every step: a wait must end a step before its planned start.
    let ours = SchedulerConfig {
        lead_ms: p.step_ms,
        ..SchedulerConfig::default()
    };
    let setups = [
        Setup {
            name: "carbon-aware",
            config: ours,
            forecast_error: Some(p.forecast_error),
        },
        Setup {
            name: "carbon-aware, site model only",
            config: ours,
            forecast_error: None,
        },
        Setup {
            name: "carbon-aware, deadline risk not weighed",
            config: SchedulerConfig {
                weights: Weights {
                    no_room_to_recover_mg: 0.0,
                    ..ours.weights
                },
                ..ours
            },
            forecast_error: Some(p.forecast_error),
        },
        Setup {
            name: "oracle (future sun known)",
            config: SchedulerConfig {
                forecast_margin: 0.0,
                ..ours
            },
            forecast_error: Some(0.0),
        },
        Setup {
            name: "FIFO",
            config: SchedulerConfig {
                strategy: Strategy::FirstFit,
                ..ours
            },
            forecast_error: Some(p.forecast_error),
        },
        Setup {
            name: "cheapest first",
            config: SchedulerConfig {
                strategy: Strategy::Cheapest,
                ..ours
            },
            forecast_error: Some(p.forecast_error),
        },
    ];
    let mut rows = Vec::new();
    for s in setups {
        let started = std::time::Instant::now();
        let outcome = run::run(&world, s);
        eprintln!("{}: {:.1} s", s.name, started.elapsed().as_secs_f64());
        rows.push(report::row(&outcome));
    }
    println!();
    report::print_table(&rows);
    println!();
    report::print_targets(&rows[0], &rows[3], &rows[4]);
}

fn usage() -> ! {
    eprintln!("usage: scheduler_sim [--devices N] [--days D] [--jobs-per-hour R] [--seed S]");
    std::process::exit(2)
}
