//! One policy's run through the world: the clock, the scheduler's ticks, and the physics
//! that executes its placements. Energy a job draws comes from the sun first, then the
//! battery above its reserve, then the grid up to the device's allowance (an off-grid
//! device's job stalls when all three fall short), so each job's renewable share and
//! grams are measured here, not taken from the scheduler's estimate.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use attest::intensity::RegionTable;
use attest::msg::JobId;
use attest::{DeviceId, Milliwatts, TimestampMs};
use fleet_controller::market::{Decision, DeviceOffer, RefuseReason, Scheduler, SchedulerConfig};

use crate::world::{HOUR, World, rng_for};

/// How a policy is set up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub name: &'static str,
    pub config: SchedulerConfig,
    /// The relative error of the solar forecasts it is given; `None` for none (the
    /// scheduler's own clear-sky model then).
    pub forecast_error: Option<f64>,
}

/// What happened to one job.
#[derive(Clone, Debug, Default)]
pub struct JobStat {
    pub flexible: bool,
    pub submitted: u64,
    pub deadline: u64,
    /// The first decision was a refusal.
    pub refused_at_once: bool,
    /// Refused after it had been accepted (a promise broken).
    pub refused_later: bool,
    pub decided: bool,
    pub first_start: Option<u64>,
    pub finished: Option<u64>,
    pub sun_wh: f64,
    pub battery_wh: f64,
    pub grid_wh: f64,
    pub co2e_mg: f64,
    pub placements: u32,
    /// Refused after acceptance because its carbon limit could no longer be met.
    pub dropped_on_carbon: bool,
    /// Times a device failed it: refused it, went silent past the grace, fell behind.
    pub setbacks: u32,
}

/// A policy's run, measured.
pub struct Outcome {
    pub name: &'static str,
    pub jobs: Vec<JobStat>,
    /// Seconds per decision, one sample per decision (its tick's time over its decisions).
    pub per_decision_s: Vec<f64>,
    /// All the scheduler's time (every tick, with or without decisions), seconds.
    pub scheduler_s: f64,
    pub ticks: usize,
    pub revocations: u32,
    pub admission_refusals: u32,
    pub progress_misses: u32,
}

struct Running {
    job: usize,
    start: u64,
    expected_end: u64,
    left_wh: f64,
}

struct DeviceState {
    battery_wh: f64,
    silent: bool,
    /// The job running (first) and at most one placed to start after it.
    jobs: VecDeque<Running>,
}

/// A job id's index in the world's arrivals (ids carry their 1-based number).
fn job_index(id: JobId) -> usize {
    let mut n = [0u8; 8];
    n.copy_from_slice(&id.0[8..]);
    u64::from_be_bytes(n) as usize - 1
}

/// A device id's index in the fleet (ids carry it in their first 8 bytes).
fn device_index(id: DeviceId) -> usize {
    let mut n = [0u8; 8];
    n.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(n) as usize
}

/// Runs one policy through the world.
pub fn run(world: &World, setup: Setup) -> Outcome {
    let p = &world.p;
    let table = RegionTable::bundled().expect("bundled table");
    let mut sched = Scheduler::new(setup.config, table.clone());
    let mg_per_kwh: Vec<f64> = world
        .devices
        .iter()
        .map(|d| f64::from(table.figure(&d.site.grid_region, p.start_ms / HOUR)))
        .collect();
    let mut jobs: Vec<JobStat> = world
        .arrivals
        .iter()
        .map(|a| JobStat {
            flexible: a.job.flexible,
            submitted: a.at,
            deadline: a.job.deadline.0,
            ..JobStat::default()
        })
        .collect();
    let mut devs: Vec<DeviceState> = world
        .devices
        .iter()
        .map(|d| DeviceState {
            battery_wh: d.initial_wh,
            silent: false,
            jobs: VecDeque::new(),
        })
        .collect();
    let mut offers: Vec<DeviceOffer> = world
        .devices
        .iter()
        .map(|d| DeviceOffer {
            device: d.id,
            site: d.site.clone(),
            gpu: d.gpu,
            price_per_gpu_hour: d.price,
            reliability: d.reliability,
            online: true,
            job_power: d.job_power(),
            base_load: Milliwatts((d.base_w * 1_000.0) as u32),
            grid_allowance: Milliwatts((d.grid_w * 1_000.0) as u32),
            battery_soc_permille: 0,
            solar_now: Milliwatts(0),
            sky_ratio: None,
            leased: Vec::new(),
        })
        .collect();
    let mut out = Outcome {
        name: setup.name,
        jobs: Vec::new(),
        per_decision_s: Vec::new(),
        scheduler_s: 0.0,
        ticks: 0,
        revocations: 0,
        admission_refusals: 0,
        progress_misses: 0,
    };
    let horizon = setup.config.horizon_hours as usize;
    let (mut next_arrival, mut next_outage) = (0, 0);
    let mut outage_ends: BTreeMap<(u64, usize), ()> = BTreeMap::new();
    for step in 0..p.steps() {
        let t = p.start_ms + step as u64 * p.step_ms;
        // Outages that start or end by now.
        while let Some(o) = world.outages.get(next_outage).filter(|o| o.from <= t) {
            devs[o.device].silent = true;
            sched.device_silent(world.devices[o.device].id, TimestampMs(o.from));
            outage_ends.insert((o.to, o.device), ());
            next_outage += 1;
        }
        while let Some((&(to, d), _)) = outage_ends.first_key_value() {
            if to > t {
                break;
            }
            outage_ends.pop_first();
            devs[d].silent = false;
            sched.device_heard(world.devices[d].id);
        }
        while let Some(a) = world.arrivals.get(next_arrival).filter(|a| a.at <= t) {
            sched.submit(a.job.clone()).expect("new job");
            next_arrival += 1;
        }
        if t.is_multiple_of(HOUR)
            && let Some(error) = setup.forecast_error
        {
            for (d, dev) in world.devices.iter().enumerate() {
                sched.set_solar_forecast(dev.id, world.forecast(d, t, horizon, error));
            }
        }
        for (d, o) in offers.iter_mut().enumerate() {
            let dev = &world.devices[d];
            o.online = !devs[d].silent;
            o.battery_soc_permille = if dev.battery_wh > 0.0 {
                (devs[d].battery_wh / dev.battery_wh * 1_000.0).round() as u16
            } else {
                0
            };
            o.solar_now = Milliwatts((world.solar[d][step] * 1_000.0) as u32);
        }
        let started = Instant::now();
        let decisions = sched.tick(TimestampMs(t), &offers);
        let took = started.elapsed().as_secs_f64();
        out.scheduler_s += took;
        out.ticks += 1;
        let n = decisions.len();
        out.per_decision_s
            .extend(std::iter::repeat_n(took / n.max(1) as f64, n));
        for d in decisions {
            apply(world, &mut sched, &mut jobs, &mut devs, &mut out, d);
        }
        // The physics of [t, t + step), a minute at a time.
        for sub in 0..p.step_ms / 60_000 {
            let at = Moment {
                step,
                t: t + sub * 60_000,
                dt: 60_000,
            };
            physics(
                world,
                &mut sched,
                &mut jobs,
                &mut devs,
                &mut out,
                &mg_per_kwh,
                at,
            );
        }
    }
    out.jobs = jobs;
    out
}

/// A stretch of simulated time: the tick's step (for the solar trace), its start and length.
#[derive(Clone, Copy)]
struct Moment {
    step: usize,
    t: u64,
    dt: u64,
}

/// Moves every device through `at`: sun to the base load, then to the running job, then
/// into the battery; the job's shortfall from the battery above its reserve, then the grid.
fn physics(
    world: &World,
    sched: &mut Scheduler,
    jobs: &mut [JobStat],
    devs: &mut [DeviceState],
    out: &mut Outcome,
    mg_per_kwh: &[f64],
    at: Moment,
) {
    let dt_h = at.dt as f64 / HOUR as f64;
    for (d, dev) in world.devices.iter().enumerate() {
        let s = &mut devs[d];
        let solar = f64::from(world.solar[d][at.step]) * dt_h;
        let base = dev.base_w * dt_h;
        let sun_to_base = solar.min(base);
        let mut spare = solar - sun_to_base;
        // The first job runs from its start on, unless the device is down.
        let running_from = match (s.jobs.front(), s.silent) {
            (Some(r), false) if r.start < at.t + at.dt => r.start.max(at.t),
            _ => at.t + at.dt,
        };
        let want = dev.job_w * (at.t + at.dt - running_from) as f64 / HOUR as f64;
        let from_sun = want.min(spare);
        spare -= from_sun;
        s.battery_wh = (s.battery_wh + spare).min(dev.battery_wh);
        let above = (s.battery_wh - dev.reserve_wh).max(0.0);
        let from_batt = (want - from_sun).min(above);
        s.battery_wh -= from_batt;
        let from_grid = (want - from_sun - from_batt).min(dev.grid_w * dt_h);
        // The base load takes the battery (reserve included), then the grid.
        s.battery_wh = (s.battery_wh - (base - sun_to_base)).max(0.0);
        if want <= 0.0 {
            continue;
        }
        let Some(r) = s.jobs.front_mut() else {
            continue;
        };
        let got = from_sun + from_batt + from_grid;
        let share = if got >= r.left_wh && got > 0.0 {
            r.left_wh / got
        } else {
            1.0
        };
        let j = &mut jobs[r.job];
        j.sun_wh += from_sun * share;
        j.battery_wh += from_batt * share;
        j.grid_wh += from_grid * share;
        j.co2e_mg += from_grid * share * mg_per_kwh[d] / 1_000.0;
        r.left_wh -= got;
        if r.left_wh <= 1e-9 {
            let ran = (at.t + at.dt - running_from) as f64 * share;
            j.finished = Some(running_from + ran as u64);
            sched.job_finished(world.arrivals[r.job].job.id);
            s.jobs.pop_front();
        } else if at.t + at.dt > r.start + (r.expected_end - r.start) * 3 / 2 + HOUR / 2 {
            // Far behind what the scheduler expected: it is told, and the job is moved.
            sched.progress_missed(world.arrivals[r.job].job.id, dev.id);
            out.progress_misses += 1;
            jobs[r.job].setbacks += 1;
            s.jobs.pop_front();
        }
    }
}

fn apply(
    world: &World,
    sched: &mut Scheduler,
    jobs: &mut [JobStat],
    devs: &mut [DeviceState],
    out: &mut Outcome,
    decision: Decision,
) {
    let j = job_index(decision.job());
    let first = !jobs[j].decided;
    jobs[j].decided = true;
    match decision {
        Decision::Place(p) => {
            let d = device_index(p.device);
            let attempt = u64::from(jobs[j].placements);
            jobs[j].placements += 1;
            // A device refuses now and then (its own budget check disagrees), and always
            // when it is busy or silent.
            let refuses = rng_for(world.p.seed ^ 0xad, j as u64, attempt).unit() < 0.02;
            if refuses || devs[d].jobs.len() >= 2 || devs[d].silent {
                sched.admission_refused(p.job, p.device);
                out.admission_refusals += 1;
                jobs[j].setbacks += 1;
                return;
            }
            jobs[j].first_start.get_or_insert(p.start_at.0);
            devs[d].jobs.push_back(Running {
                job: j,
                start: p.start_at.0,
                expected_end: p.expected_end.0.max(p.start_at.0 + 1),
                left_wh: world.arrivals[j].job.work.energy().0 as f64 / 3_600_000.0,
            });
        }
        Decision::Wait { .. } => {}
        Decision::Refuse { reason, .. } => {
            if first {
                jobs[j].refused_at_once = true;
            } else {
                jobs[j].refused_later = true;
                jobs[j].dropped_on_carbon = matches!(reason, RefuseReason::CarbonLimit { .. });
            }
        }
        Decision::Revoke { device, .. } => {
            out.revocations += 1;
            jobs[j].setbacks += 1;
            let d = device_index(device);
            devs[d].jobs.retain(|r| r.job != j);
        }
    }
}
