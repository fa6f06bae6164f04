//! The power governor on the simulated rig with a simulated clock (`jobs::sim`): the real
//! simulator, meter, governor, execution and CPU compute, hours of sun and night in
//! seconds. Sunny, cloudy, on battery at night, at reserve, across a sunset.

use attest::msg::{ChannelKind, JobId, JobLimits, JobOutcome, JobSpec, MeterRecord};
use attest::{Millijoules, TimestampMs};
use heliostat_agent::config::SiteConfig;
use heliostat_agent::governor::GovernorConfig;
use heliostat_agent::jobs::kernel::Sha256Batch;
use heliostat_agent::jobs::sim::{SimRig, TracePoint};
use heliostat_agent::jobs::{Builtin, ComputeBackend, CpuBackend};
use heliostat_agent::power::simulator::SimulatorConfig;

/// The simulated GPU: 60 W at full speed, 100,000 work units a second, so a 2,000-unit
/// chunk (one SHA-256 block) takes 20 ms.
const JOB_W: f64 = 60.0;
const WORK_PER_S: f64 = 100_000.0;
const CHUNK_WORK: u64 = 2_000;
const DAY_MS: u64 = 86_400_000;
/// 2026-06-21 00:00 UTC.
const JUNE_21: u64 = 1_782_000_000_000 - 1_782_000_000_000 % DAY_MS;

fn site(panel_w: u32, battery_wh: u32, reserve_wh: u32) -> SiteConfig {
    SiteConfig {
        panel_watts_peak: panel_w,
        battery_wh,
        battery_reserve_wh: reserve_wh,
        grid_region: "test".into(),
        ..SiteConfig::new(0.0, 0.0)
    }
}

fn sim(cloudiness: f64, soc: f64) -> SimulatorConfig {
    SimulatorConfig {
        seed: 7,
        cloudiness,
        base_load_w: 40.0,
        // No other GPU work: the GPU channel is the job's.
        gpu_w: 0.0,
        initial_soc: soc,
        trace_csv: None,
    }
}

/// `count` SHA-256 items of 32 bytes: `count` chunks of 20 ms at full speed.
fn job(count: i64, deadline: u64) -> (JobSpec, Vec<Vec<u8>>) {
    let b = Sha256Batch::new(count, 32).unwrap();
    let spec = JobSpec {
        id: JobId([count as u8; 16]),
        workload: Builtin::Sha256Batch(b).to_workload(),
        inputs: vec![],
        input_sizes: vec![],
        output_sizes: vec![count as u64 * 32],
        limits: JobLimits {
            max_energy: Millijoules(0),
            max_duration_ms: 0,
            deadline: TimestampMs(deadline),
        },
    };
    let input: Vec<u8> = (0..count as usize * 32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    (spec, vec![input])
}

fn cpu() -> ComputeBackend {
    ComputeBackend::Cpu(CpuBackend::with_threads(1))
}

/// Every 5-second window: the job's mean measured draw is within the mean budget + 5 %.
fn assert_within_budget(trace: &[TracePoint], sample_ms: u64) {
    let n = (5_000 / sample_ms) as usize;
    assert!(trace.len() > n, "only {} samples", trace.len());
    let mut worst: f64 = 0.0;
    for w in trace.windows(n) {
        let job: f64 = w.iter().map(|p| p.job_w).sum::<f64>() / n as f64;
        let budget: f64 = w.iter().map(|p| p.budget_w).sum::<f64>() / n as f64;
        worst = worst.max(job - budget);
        assert!(
            job <= budget * 1.05 + 1e-6,
            "window at {} ms: job {job:.2} W over budget {budget:.2} W",
            w[0].t
        );
    }
    eprintln!("worst window excess {worst:.3} W");
}

fn gpu_energy(rec: &attest::Envelope) -> u64 {
    let r: MeterRecord = rec.open().unwrap();
    r.channels
        .iter()
        .find(|c| c.kind == ChannelKind::Gpu)
        .unwrap()
        .energy
        .0
}

fn reference_hash(inputs: &[Vec<u8>], count: i64) -> attest::Hash32 {
    let (spec, _) = job(count, u64::MAX);
    let backend = cpu();
    let mut j = backend
        .prepare(
            &spec.workload,
            None,
            inputs.to_vec(),
            &spec.output_sizes,
            u64::MAX,
        )
        .unwrap();
    for i in 0..j.chunk_count() {
        j.run_chunk(i).unwrap();
    }
    heliostat_agent::jobs::exec::output_hash(&j.finish().unwrap())
}

#[test]
fn job_power_stays_within_budget_in_sun_cloud_and_on_battery_and_receipts_match_the_counters() {
    // (name, start, panel W, battery Wh, reserve Wh, cloudiness, initial soc)
    let scenarios = [
        // Noon, a small panel: about 60 W of sun, 40 W of rig: the budget binds.
        ("sunny", JUNE_21 + 12 * 3_600_000, 100, 100, 100, 0.0, 1.0),
        // Noon under moving cloud.
        ("cloudy", JUNE_21 + 12 * 3_600_000, 150, 100, 100, 0.6, 1.0),
        // Night on a battery with 15 Wh above reserve: 90 W over ten minutes, less the
        // rig's own 40 W, and falling as the battery drains.
        ("night-battery", JUNE_21, 100, 115, 100, 0.0, 1.0),
    ];
    for (name, start, panel, batt, reserve, cloud, soc) in scenarios {
        let mut rig = SimRig::new(
            site(panel, batt, reserve),
            sim(cloud, soc),
            GovernorConfig::default(),
            start,
            JOB_W,
            WORK_PER_S,
        );
        let (spec, inputs) = job(6_000, start + 3_600_000);
        let out = rig
            .run_job(&cpu(), spec, inputs.clone(), CHUNK_WORK)
            .unwrap();
        let r = &out.receipt;
        assert_eq!(r.outcome, JobOutcome::Completed, "{name}: {r:?}");
        assert_eq!(r.chunks, 6_000, "{name}");
        assert_eq!(r.output_hash, reference_hash(&inputs, 6_000), "{name}");
        let slowed = rig.trace.iter().filter(|p| p.budget_w < JOB_W).count();
        let (lo, hi) = rig.trace.iter().fold((f64::MAX, 0f64), |(lo, hi), p| {
            (lo.min(p.budget_w), hi.max(p.budget_w))
        });
        eprintln!(
            "{name}: {} samples, budget {lo:.1}..{hi:.1} W, below the job's draw in {slowed}",
            rig.trace.len()
        );
        assert!(
            slowed > rig.trace.len() / 10,
            "{name}: the budget hardly bound"
        );
        assert_within_budget(&rig.trace, rig.sample_ms);

        // The receipt's energy is the counter delta between the signed records sealed at
        // its start and end, and it is what the job drew (the model's full power x
        // running time) to within 1 %.
        let at = |t: u64| {
            rig.chain
                .iter()
                .find(|e| {
                    e.open::<MeterRecord>()
                        .is_ok_and(|m| m.link.timestamp.0 == t)
                })
                .unwrap_or_else(|| panic!("{name}: no record at {t}"))
        };
        let delta = gpu_energy(at(r.ended.0)) - gpu_energy(at(r.started.0));
        assert_eq!(
            r.energy(ChannelKind::Gpu),
            Some(Millijoules(delta)),
            "{name}"
        );
        let model = out.modelled_mj as f64;
        assert!(
            (delta as f64 - model).abs() <= model * 0.01,
            "{name}: metered {delta} mJ, modelled {model} mJ"
        );
        // The whole chain (records and the receipt) verifies from genesis.
        let bytes: Vec<Vec<u8>> = rig.chain.iter().map(|e| e.as_bytes().to_vec()).collect();
        hil_tests::assert_chain_from_genesis(
            &rig.key().public(),
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| (attest::SeqNo(i as u64), b.as_slice())),
        );
    }
}

#[test]
fn a_job_is_refused_when_the_battery_is_at_reserve_at_night() {
    let mut rig = SimRig::new(
        site(400, 1_000, 200),
        sim(0.0, 0.2),
        GovernorConfig::default(),
        JUNE_21 + 2 * 3_600_000,
        JOB_W,
        WORK_PER_S,
    );
    let (spec, inputs) = job(1_000, JUNE_21 + 3 * 3_600_000);
    let out = rig.run_job(&cpu(), spec, inputs, CHUNK_WORK).unwrap();
    let r = &out.receipt;
    match &r.outcome {
        JobOutcome::Refused(why) => assert!(why.contains("battery at reserve"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!((r.chunks, r.output_hash), (0, attest::Hash32::ZERO));
    assert!(rig.trace.is_empty(), "nothing ran");

    // With a grid allowance by policy, the same job is admitted and runs on it.
    let mut rig = SimRig::new(
        site(400, 1_000, 200),
        sim(0.0, 0.2),
        GovernorConfig {
            grid_allowance_w: 30.0,
            ..Default::default()
        },
        JUNE_21 + 2 * 3_600_000,
        JOB_W,
        WORK_PER_S,
    );
    let (spec, inputs) = job(1_000, JUNE_21 + 3 * 3_600_000);
    let out = rig.run_job(&cpu(), spec, inputs, CHUNK_WORK).unwrap();
    assert_eq!(out.receipt.outcome, JobOutcome::Completed);
    assert_within_budget(&rig.trace, rig.sample_ms);
}

/// When the rig's solar surplus falls below the smallest useful duty (10 % of 60 W) on
/// the evening of June 21 at (0, 0).
fn dusk() -> u64 {
    let s = heliostat_agent::power::simulator::Simulator::new(sim(0.0, 0.0), &site(100, 0, 0));
    let mut t = JUNE_21 + 12 * 3_600_000;
    while s.solar_w(t) > 40.0 + 6.0 {
        t += 10_000;
    }
    t
}

#[test]
fn a_job_pauses_at_sunset_and_resumes_at_sunrise() {
    let start = dusk() - 5 * 60_000;
    let mut rig = SimRig::new(
        site(100, 0, 0),
        sim(0.0, 0.0),
        GovernorConfig::default(),
        start,
        JOB_W,
        WORK_PER_S,
    );
    rig.sample_ms = 100;
    // 30,000 chunks: 10 minutes at full speed, more than the evening's sun can pay for.
    let (spec, inputs) = job(30_000, start + DAY_MS);
    let out = rig
        .run_job(&cpu(), spec, inputs.clone(), CHUNK_WORK)
        .unwrap();
    let r = &out.receipt;
    assert_eq!(r.outcome, JobOutcome::Completed, "{r:?}");
    assert_eq!(r.output_hash, reference_hash(&inputs, 30_000));
    assert!(r.pauses >= 1, "{r:?}");
    // No draw at all while the sun is down.
    for p in &rig.trace {
        if p.solar_w == 0.0 {
            assert_eq!(p.job_w, 0.0, "ran in the dark at {}", p.t);
        }
    }
    // One long pause across the night, ended by the sun.
    let mut longest = (0, 0);
    let mut since = None;
    for p in &rig.trace {
        match (p.paused, since) {
            (true, None) => since = Some(p.t),
            (false, Some(s)) => {
                if p.t - s > longest.1 - longest.0 {
                    longest = (s, p.t);
                }
                since = None;
            }
            _ => {}
        }
    }
    let hours = (longest.1 - longest.0) as f64 / 3.6e6;
    assert!(hours > 10.0, "longest pause {hours:.1} h");
    let resumed = rig.trace.iter().find(|p| p.t >= longest.1).unwrap();
    assert!(resumed.solar_w > 40.0, "resumed without sun: {resumed:?}");
    assert!(
        (longest.0 - start) < 3_600_000,
        "paused at dusk, not later: {}",
        longest.0 - start
    );
    assert_within_budget(&rig.trace, rig.sample_ms);
}

#[test]
fn a_job_that_cannot_finish_by_its_deadline_reports_it_at_sunset() {
    let start = dusk() - 5 * 60_000;
    let mut rig = SimRig::new(
        site(100, 0, 0),
        sim(0.0, 0.0),
        GovernorConfig::default(),
        start,
        JOB_W,
        WORK_PER_S,
    );
    rig.sample_ms = 100;
    // Admitted at dusk (that budget, held for 2 hours, would pay for it), then the sun
    // goes: the job waits paused and, once it could not finish even at full speed, reports
    // that with the chunks it did (its checkpoint) rather than running on grid or battery.
    let deadline = start + 2 * 3_600_000;
    let (spec, inputs) = job(30_000, deadline);
    let out = rig.run_job(&cpu(), spec, inputs, CHUNK_WORK).unwrap();
    let r = &out.receipt;
    assert_eq!(r.outcome, JobOutcome::DeadlineMissed, "{r:?}");
    assert!(r.chunks > 0 && r.chunks < 30_000, "{r:?}");
    assert!(r.pauses >= 1, "{r:?}");
    // Reported as soon as even full speed could no longer make it: the work left at
    // 20 ms a chunk no longer fits before the deadline (one sample and one poll of slack).
    let left_ms = (30_000 - r.chunks as u64) * 20;
    let early = deadline - r.ended.0;
    assert!(
        r.ended.0 < deadline && early <= left_ms && early + 500 >= left_ms,
        "reported {early} ms before the deadline with {left_ms} ms of work left"
    );
    assert_eq!(out.outputs.len(), 0, "no outputs from an unfinished job");
}
