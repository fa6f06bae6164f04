//! Result validation against lying devices: how each of the controller's validation modes
//! catches liars, what it lets through, whom it wrongly accuses and what it costs, for a
//! fleet where a share of devices lie (1 %, 5 %, 20 %) in one of six ways. It answers the
//! issue's question: which default catches a device that cheats on 1 % of its jobs within
//! 500 of its jobs with 99 % probability, at no more than 3 % of the fleet's compute and
//! at most one false accusation in 10,000 honest jobs.
//!
//! The map:
//! - `model.rs`: the job mix, the liar kinds, the checks and the policies compared;
//! - `fleet.rs`: one fleet under one policy, job by job (sans-IO, seeded);
//! - `sweep.rs`: every policy x liar kind x share, enough fleets for enough liars, on
//!   every core;
//! - `honest.rs`: Freivalds' false accusations measured on real honest products;
//! - `cost.rs`: the controller's CPU per check, measured here;
//! - `summary.rs`, `report.rs`: the figures and the Markdown tables.
//!
//! The world's rates are the scheduler simulation's (`examples/scheduler_sim`): 1,000
//! devices, 2,400 jobs a day, jobs of 0.5-4 device-hours at their GPU class's power.
//!
//! `cargo run --release -p fleet-controller --example validation_sim [-- --devices N
//! --jobs J --seed S --liars L]` (J: buyer jobs in each fleet's life, default 600 per
//! device; L: liars simulated per case at least, default 1,000).

mod cost;
mod fleet;
mod honest;
mod model;
mod report;
mod rng;
mod summary;
mod sweep;

use std::time::Instant;

use report::Grid;
use summary::{JOBS_PER_DAY, Summary};
use sweep::{LIAR_SHARES, Setup};

/// Honest products put through Freivalds' check, per summation order.
const HONEST_TRIALS: usize = 1_500;

fn main() {
    let started = Instant::now();
    let mut setup = Setup {
        seed: 20_261_129,
        devices: 1_000,
        jobs: 0,
        min_liars: 1_000,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--devices" => setup.devices = value.parse().unwrap_or_else(|_| usage()),
            "--jobs" => setup.jobs = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => setup.seed = value.parse().unwrap_or_else(|_| usage()),
            "--liars" => setup.min_liars = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if setup.devices < 10 {
        usage();
    }
    if setup.jobs == 0 {
        setup.jobs = 600 * setup.devices as u64;
    }
    let policies = model::policies();
    let days = setup.jobs as f64 / (JOBS_PER_DAY * setup.devices as f64 / 1_000.0);
    println!(
        "world: {} devices, {} buyer jobs per fleet ({:.0} per device, {days:.0} days at 2,400 jobs a day per 1,000 devices), liar shares {:?} %, at least {} liars per case, seed {}, {} threads",
        setup.devices,
        setup.jobs,
        setup.jobs as f64 / setup.devices as f64,
        LIAR_SHARES.map(|s| s * 100.0),
        setup.min_liars,
        setup.seed,
        setup.threads
    );
    println!(
        "job mix: 40 % sha256_batch (8,192 items), 30 % mandelbrot 1024 x 1024, 20 % matmul_f32 (512, 1,024 or 2,048 square), 10 % opaque PTX; each 0.5-4 device-hours at 25, 300 or 500 W (50 / 35 / 15 % of jobs)"
    );
    println!();

    let honest = honest::run(setup.seed, HONEST_TRIALS, setup.threads);
    report::print_honest(&honest);
    let false_reject = honest.false_rejections() as f64 / honest.checks() as f64;
    println!();
    let cost = cost::measure(setup.seed);
    report::print_cost(&cost);
    println!();

    let swept = Instant::now();
    let cases = sweep::run(setup, &policies, &cost, false_reject);
    let sweep_s = swept.elapsed().as_secs_f64();
    let grid = Grid {
        policies: &policies,
        cases: cases.iter().map(|c| (c, Summary::of(&c.tally))).collect(),
    };
    let fleets: usize = cases.iter().map(|c| c.fleets).sum();
    let jobs: u64 = cases.iter().map(|c| c.tally.jobs).sum();
    println!(
        "simulated: {} cases, {fleets} fleets, {:.2e} buyer jobs in {sweep_s:.1} s",
        cases.len(),
        jobs as f64
    );
    println!();
    report::print_targets(&grid);
    println!();
    report::print_ptx_rate();
    println!();
    report::print_hard_cheaters(&grid);
    println!();
    report::print_kinds(&grid, 0.05);
    println!();
    report::print_wrong(&grid, 0.05);
    println!();
    report::print_pairs(&grid);
    println!();
    report::print_all(&grid);
    println!();
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
}

fn usage() -> ! {
    eprintln!("usage: validation_sim [--devices N (>= 10)] [--jobs J] [--seed S] [--liars L]");
    std::process::exit(2)
}
