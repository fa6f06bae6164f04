//! The soak: a fleet of agent processes (50 by default) for a long run, with faults from
//! the injector's whole vocabulary at random (seeded: the same seed replays the same
//! faults at the same steps), ending with the full count.
//!
//! Time: agents record every `record_ms` of real time (100 ms by default) instead of every
//! 10 s, so each real second holds 100 s of a default-configured device's records; the
//! report says how many such record-hours the fleet covered. The agents' clocks are not
//! accelerated (the controller checks timestamps against its own clock).

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::faults::Fault;
use crate::fleet::{Bins, Fleet, FleetOptions};
use crate::netns::Impairment;
use crate::report::Report;
use crate::rng::Rng;

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub agents: usize,
    /// Agents with a network namespace of their own (partitions and bad links).
    pub netns_agents: usize,
    pub duration: Duration,
    pub seed: u64,
    pub record_ms: u64,
    /// Mean seconds between faults.
    pub fault_every_s: u64,
    /// Agents reading simulated hardware over the real interfaces (`FleetOptions`).
    pub hardware_agents: usize,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            agents: 50,
            netns_agents: 10,
            duration: Duration::from_secs(600),
            seed: 1,
            record_ms: 100,
            fault_every_s: 5,
            hardware_agents: 5,
        }
    }
}

/// A fault to undo later.
enum Undo {
    Heal(usize),
    Thaw(usize),
}

/// The seconds of a default device's records (one every 10 s) that `records` stand for.
pub fn record_hours(records: u64) -> f64 {
    records as f64 * 10.0 / 3_600.0
}

/// Runs the soak and returns its report (with the record-hours in its events).
pub fn run(bins: Bins, opts: &SoakOptions) -> Result<Report> {
    let mut rng = Rng::new(opts.seed);
    let fleet_opts = FleetOptions {
        agents: opts.agents,
        netns_agents: opts.netns_agents.min(opts.agents),
        record_ms: opts.record_ms,
        epoch_ms: 2_000,
        hardware_agents: opts.hardware_agents,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-soak", bins, fleet_opts)?;
    let started = Instant::now();
    let mut undo: Vec<(Instant, Undo)> = Vec::new();
    while started.elapsed() < opts.duration {
        let wait = rng.range(opts.fault_every_s * 500, opts.fault_every_s * 1_500);
        std::thread::sleep(Duration::from_millis(wait));
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = undo.into_iter().partition(|(t, _)| *t <= now);
        undo = later;
        for (_, u) in due {
            match u {
                Undo::Heal(a) => fleet.inject(Fault::Heal(a))?,
                Undo::Thaw(a) => fleet.inject(Fault::AgentThaw(a))?,
            }
        }
        let agent = rng.range(0, opts.agents as u64) as usize;
        let busy = |a: usize, u: &[(Instant, Undo)]| {
            u.iter()
                .any(|(_, x)| matches!(x, Undo::Heal(b) | Undo::Thaw(b) if *b == a))
        };
        if busy(agent, &undo) {
            continue;
        }
        let ms = |lo, hi, rng: &mut Rng| Duration::from_millis(rng.range(lo, hi));
        match rng.range(0, 9) {
            0 => fleet.inject(Fault::BrokerRestart {
                down: ms(100, 3_000, &mut rng),
            })?,
            1 | 2 => fleet.inject(Fault::AgentKill9 {
                agent,
                down: ms(0, 2_000, &mut rng),
            })?,
            3 => {
                fleet.inject(Fault::AgentFreeze(agent))?;
                undo.push((now + ms(1_000, 8_000, &mut rng), Undo::Thaw(agent)));
            }
            4 => fleet.inject(Fault::ControllerKill9 {
                down: ms(0, 3_000, &mut rng),
            })?,
            5 => {
                let point = ["ingest-committed", "epoch-closed"][rng.range(0, 2) as usize];
                fleet.inject(Fault::ControllerCrashAt(point))?;
            }
            6 if agent < opts.netns_agents => {
                fleet.inject(Fault::Partition(agent))?;
                undo.push((now + ms(2_000, 60_000, &mut rng), Undo::Heal(agent)));
            }
            7 if agent < opts.netns_agents => {
                let impairment = Impairment {
                    loss_pct: rng.range(1, 30) as u32,
                    delay_ms: rng.range(10, 300) as u32,
                    jitter_ms: 20,
                    reorder_pct: 10,
                    rate_kbit: rng.chance(0.5).then_some(64),
                };
                fleet.inject(Fault::Impair { agent, impairment })?;
                undo.push((now + ms(5_000, 30_000, &mut rng), Undo::Heal(agent)));
            }
            8 if rng.chance(0.8) => fleet.inject(Fault::TornOutboxTail(agent))?,
            8 => {
                let cut = rng.range(1, 200);
                fleet.inject(Fault::DamageOutbox { agent, cut })?;
            }
            _ => fleet.inject(Fault::AgentKill9 {
                agent,
                down: ms(0, 500, &mut rng),
            })?,
        }
    }
    let mut report = fleet.finish("soak", opts.seed)?;
    report.events.push(format!(
        "covered {:.1} record-hours of default-configured devices ({} records at one per {} ms of real time)",
        record_hours(report.produced),
        report.produced,
        opts.record_ms
    ));
    Ok(report)
}
