//! Jobs under a power budget, on the simulated rig with a simulated clock (`jobs::sim`):
//!
//! 1. energy per job and jobs per kWh with the budget at 100 %, 50 % and 25 % of the
//!    simulated GPU's draw (60 W; the budget is a grid allowance at night, no sun, no
//!    battery, so it is exact), counting the GPU alone and the whole rig (its 40 W of base
//!    load runs while the job runs);
//! 2. the governor's reaction time to a budget drop (the sun falling from 200 W to 70 W in
//!    one second, from a trace), for several meter sample intervals: from the drop until
//!    the job's draw is within the budget + 5 %.
//!
//! `cargo run --release -p heliostat-agent --example jobs_bench`

use attest::msg::{ChannelKind, JobId, JobLimits, JobOutcome, JobSpec};
use attest::{Millijoules, TimestampMs};
use heliostat_agent::config::SiteConfig;
use heliostat_agent::governor::GovernorConfig;
use heliostat_agent::jobs::kernel::Sha256Batch;
use heliostat_agent::jobs::sim::SimRig;
use heliostat_agent::jobs::{Builtin, ComputeBackend, CpuBackend};
use heliostat_agent::power::simulator::SimulatorConfig;

const JOB_W: f64 = 60.0;
const WORK_PER_S: f64 = 100_000.0;
/// 2026-06-21 00:00 UTC.
const JUNE_21: u64 = 1_781_999_999_999 - 1_781_999_999_999 % 86_400_000;

fn site() -> SiteConfig {
    SiteConfig {
        panel_watts_peak: 300,
        grid_region: "bench".into(),
        ..SiteConfig::new(0.0, 0.0)
    }
}

fn sim(trace: Option<std::path::PathBuf>) -> SimulatorConfig {
    SimulatorConfig {
        seed: 1,
        cloudiness: 0.0,
        base_load_w: 40.0,
        gpu_w: 0.0,
        initial_soc: 0.0,
        trace_csv: trace,
    }
}

/// 3,000 chunks of 20 ms: a minute at full speed.
fn job(n: u8, deadline: u64) -> (JobSpec, Vec<Vec<u8>>) {
    let count = 3_000;
    let spec = JobSpec {
        id: JobId([n; 16]),
        workload: Builtin::Sha256Batch(Sha256Batch::new(count, 32).unwrap()).to_workload(),
        inputs: vec![],
        input_sizes: vec![],
        output_sizes: vec![count as u64 * 32],
        limits: JobLimits {
            max_energy: Millijoules(0),
            max_duration_ms: 0,
            deadline: TimestampMs(deadline),
        },
    };
    (spec, vec![vec![n; count as usize * 32]])
}

fn main() {
    let cpu = ComputeBackend::Cpu(CpuBackend::with_threads(1));
    println!(
        "1. energy per job (3,000 chunks, 60 s at full speed on a 60 W GPU, rig base load 40 W)"
    );
    println!(
        "| budget | job wall time | GPU energy per job | rig energy per job | jobs per kWh (GPU) | jobs per kWh (rig) |"
    );
    println!("|---|---|---|---|---|---|");
    for share in [1.0, 0.5, 0.25] {
        let gov = GovernorConfig {
            grid_allowance_w: JOB_W * share,
            hard_cap_w: 1_000.0,
            ..Default::default()
        };
        // Midnight: no sun; the grid allowance is the whole budget.
        let mut rig = SimRig::new(site(), sim(None), gov, JUNE_21, JOB_W, WORK_PER_S);
        let jobs = 5;
        let (mut gpu_j, mut rig_j, mut wall_s) = (0.0, 0.0, 0.0);
        for n in 0..jobs {
            let (spec, inputs) = job(n, rig.now + 6 * 3_600_000);
            let out = rig.run_job(&cpu, spec, inputs, 2_000).unwrap();
            let r = &out.receipt;
            assert_eq!(r.outcome, JobOutcome::Completed, "{r:?}");
            gpu_j += r.energy(ChannelKind::Gpu).unwrap().0 as f64 / 1000.0;
            rig_j += r.energy(ChannelKind::Load).unwrap().0 as f64 / 1000.0;
            wall_s += (r.ended.0 - r.started.0) as f64 / 1000.0;
        }
        let n = jobs as f64;
        println!(
            "| {:.0} % ({:.0} W) | {:.1} s | {:.0} J | {:.0} J | {:.1} | {:.1} |",
            share * 100.0,
            JOB_W * share,
            wall_s / n,
            gpu_j / n,
            rig_j / n,
            3.6e6 / (gpu_j / n),
            3.6e6 / (rig_j / n)
        );
    }

    println!();
    println!("2. reaction to a budget drop (sun 200 W -> 70 W within one second at 12:00:00)");
    println!(
        "| meter sample interval | reaction (end of the drop to draw <= budget + 5 %) | energy above what the sun left |"
    );
    println!("|---|---|---|");
    let dir = std::env::temp_dir().join(format!("jobs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("step.csv");
    std::fs::write(&trace, "0,200\n43200,200\n43201,70\n86399,70\n").unwrap();
    for sample_ms in [50u64, 100, 250, 1_000] {
        let start = JUNE_21 + 12 * 3_600_000 - 30_000;
        let mut rig = SimRig::new(
            site(),
            sim(Some(trace.clone())),
            GovernorConfig::default(),
            start,
            JOB_W,
            WORK_PER_S,
        );
        rig.sample_ms = sample_ms;
        // Long enough to straddle the drop: 3,000 chunks take over a minute at 30 W.
        let (spec, inputs) = job(9, start + 3_600_000);
        rig.run_job(&cpu, spec, inputs, 2_000).unwrap();
        let drop_at = JUNE_21 + 12 * 3_600_000;
        // The budget after the drop: 70 W of sun less 40 W of rig = 30 W.
        let after = 30.0;
        let first_ok = rig
            .trace
            .iter()
            .filter(|p| p.t > drop_at + 1_000)
            .find(|p| p.job_w <= after * 1.05)
            .map(|p| p.t)
            .unwrap();
        let over_j: f64 = rig
            .trace
            .iter()
            .filter(|p| p.t > drop_at && p.t <= first_ok)
            // Against what the sun really left at that sample (not the governor's lagged
            // view of it).
            .map(|p| (p.job_w - (p.solar_w - 40.0).max(0.0)).max(0.0) * sample_ms as f64 / 1000.0)
            .sum();
        println!(
            "| {sample_ms} ms | {} ms after the drop ended | {over_j:.2} J |",
            first_ok - (drop_at + 1_000)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
