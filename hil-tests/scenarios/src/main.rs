//! `hil`: runs one hardware-in-the-loop scenario or the soak with a seed and prints its
//! report (docs/hil.md). Exit status 0 when every property held, 1 when one broke, 2 when
//! the run itself failed. Needs root for network namespaces and tmpfs, as CI has.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hil_scenarios::fleet::Bins;
use hil_scenarios::scenarios::{Break, SCENARIOS, Timing};
use hil_scenarios::soak::SoakOptions;

#[derive(Parser)]
#[command(
    name = "hil",
    about = "Heliostat hardware-in-the-loop scenarios and soak"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run one scenario.
    Run {
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The partition scenario's partition, seconds.
        #[arg(long, default_value_t = 600)]
        partition_s: u64,
        /// The controller crash campaign's kills.
        #[arg(long, default_value_t = 100)]
        controller_kills: u64,
        /// Break a property on purpose to see the run fail: `delete-record`.
        #[arg(long = "break")]
        brk: Option<String>,
    },
    /// The storage-fault campaign of the agent's outbox: the power cut after every disk
    /// operation, truncations at every offset, bit flips, full disks.
    Storage {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1_200)]
        appends: u64,
        /// Random partial power cuts per crash point.
        #[arg(long, default_value_t = 2)]
        partial: u64,
        #[arg(long, default_value_t = 2_000)]
        flips: u64,
    },
    /// Run the soak.
    Soak {
        #[arg(long, default_value_t = 50)]
        agents: usize,
        #[arg(long, default_value_t = 10)]
        netns_agents: usize,
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Milliseconds between each agent's records.
        #[arg(long, default_value_t = 100)]
        record_ms: u64,
        /// Mean seconds between faults.
        #[arg(long, default_value_t = 5)]
        fault_every_s: u64,
        /// Agents reading simulated hardware over VE.Direct, SunSpec and hwmon.
        #[arg(long, default_value_t = 5)]
        hardware_agents: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let own = std::env::current_exe().expect("this binary's path");
    let bins = || Bins::beside(own.to_str().expect("a UTF-8 path"));
    let result = match cli.cmd {
        Cmd::List => {
            for s in SCENARIOS {
                println!("{s}");
            }
            return ExitCode::SUCCESS;
        }
        Cmd::Run {
            scenario,
            seed,
            partition_s,
            controller_kills,
            brk,
        } => {
            let brk = match brk.as_deref() {
                None => None,
                Some("delete-record") => Some(Break::DeleteStoredRecord),
                Some(other) => {
                    eprintln!("hil: no break {other:?} (there is: delete-record)");
                    return ExitCode::from(2);
                }
            };
            let timing = Timing {
                partition: Duration::from_secs(partition_s),
                controller_kills,
            };
            hil_scenarios::scenarios::run(&scenario, bins(), seed, timing, brk)
        }
        Cmd::Storage {
            seed,
            appends,
            partial,
            flips,
        } => {
            use heliostat_agent::outbox::campaign::{CampaignOptions, campaign};
            let started = std::time::Instant::now();
            let r = campaign(CampaignOptions {
                seed,
                appends,
                partial,
                flips,
                ..CampaignOptions::default()
            });
            print!("{}", r.text());
            println!(
                "took                {:.1} s",
                started.elapsed().as_secs_f64()
            );
            for p in &r.problems {
                println!("problem: {p}");
            }
            return if r.clean() {
                println!("result              nothing lost, invented or altered");
                ExitCode::SUCCESS
            } else {
                println!("result              FAILED");
                ExitCode::from(1)
            };
        }
        Cmd::Soak {
            agents,
            netns_agents,
            minutes,
            seed,
            record_ms,
            fault_every_s,
            hardware_agents,
        } => {
            let opts = SoakOptions {
                agents,
                netns_agents,
                duration: Duration::from_secs(minutes * 60),
                seed,
                record_ms,
                fault_every_s,
                hardware_agents,
            };
            hil_scenarios::soak::run(bins(), &opts)
        }
    };
    match result {
        Err(e) => {
            eprintln!("hil: the run failed: {e:#}");
            ExitCode::from(2)
        }
        Ok(report) => {
            print!("{}", report.text());
            match report.check() {
                Ok(()) => {
                    println!("result        every property held");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let first = format!("{e:#}");
                    println!(
                        "result        FAILED: {}",
                        first.lines().next().unwrap_or_default()
                    );
                    ExitCode::from(1)
                }
            }
        }
    }
}
