//! Scenario tests of the scheduler: night and day, needs, prices, carbon limits, outages,
//! budgets, determinism. Time is 21 June 2026 (UTC midnight is night in Berlin, morning in
//! Tokyo).

use attest::intensity::RegionTable;
use attest::msg::{JobId, Site};
use attest::solar::sun_elevation;
use attest::{DeviceId, Millijoules, Milliwatts, TimestampMs};

use super::*;

/// 2026-06-21T00:00:00Z.
const MIDNIGHT: u64 = 1_782_000_000_000;
const H: u64 = 3_600_000;
const BERLIN: (f64, f64) = (52.5, 13.4);
const TOKYO: (f64, f64) = (35.7, 139.7);

fn device(n: u8, (lat, lon): (f64, f64), region: &str) -> DeviceOffer {
    DeviceOffer {
        device: DeviceId([n; 16]),
        site: Site {
            lat_microdeg: (lat * 1e6) as i32,
            lon_microdeg: (lon * 1e6) as i32,
            panel_watts_peak: 1_000,
            battery_wh: 1_000,
            battery_reserve_wh: 200,
            grid_region: region.into(),
        },
        gpu: GpuOffer {
            class: GpuClass::Consumer,
            vram_mib: 24_576,
            capability: ComputeCapability::new(8, 9),
        },
        price_per_gpu_hour: MicroCredits(300_000),
        reliability: 0.99,
        online: true,
        job_power: Milliwatts(100_000),
        base_load: Milliwatts(10_000),
        grid_allowance: Milliwatts(100_000),
        // At the reserve: nothing in the battery for jobs.
        battery_soc_permille: 200,
        solar_now: Milliwatts(0),
        sky_ratio: Some(1.0),
        leased: Vec::new(),
    }
}

/// A job of `wh` watt-hours due `deadline_h` hours after midnight.
fn job(n: u8, wh: u64, flexible: bool, deadline_h: u64) -> JobRequest {
    JobRequest {
        id: JobId([n; 16]),
        needs: JobNeeds {
            gpu_class: Some(GpuClass::Consumer),
            min_vram_mib: 16_384,
            min_capability: ComputeCapability::new(8, 0),
        },
        work: Work::Energy(Millijoules(wh * 3_600_000)),
        deadline: TimestampMs(MIDNIGHT + deadline_h * H),
        max_price_per_gpu_hour: MicroCredits(1_000_000),
        carbon: CarbonLimit::None,
        flexible,
        submitted: TimestampMs(MIDNIGHT),
    }
}

fn scheduler() -> Scheduler {
    Scheduler::with_bundled_table(SchedulerConfig::default()).unwrap()
}

fn decide(
    s: &mut Scheduler,
    jobs: Vec<JobRequest>,
    at: u64,
    offers: &[DeviceOffer],
) -> Vec<Decision> {
    for j in jobs {
        s.submit(j).unwrap();
    }
    s.tick(TimestampMs(at), offers)
}

fn placement(d: &Decision) -> Placement {
    match d {
        Decision::Place(p) => *p,
        other => panic!("expected a placement, got {other:?}"),
    }
}

#[test]
fn a_flexible_job_at_night_runs_now_in_a_sunlit_time_zone() {
    let offers = [device(1, BERLIN, "DE"), device(2, TOKYO, "JP")];
    let d = decide(
        &mut scheduler(),
        vec![job(1, 200, true, 24)],
        MIDNIGHT,
        &offers,
    );
    assert_eq!(d.len(), 1);
    let p = placement(&d[0]);
    assert_eq!(
        p.device,
        DeviceId([2; 16]),
        "Tokyo is at 9 am, Berlin at 2 am"
    );
    assert_eq!(p.start_at, TimestampMs(MIDNIGHT));
    assert_eq!(p.renewable, SharePpm::ALL, "{p:?}");
    assert_eq!(p.co2e, Co2eMg(0));
    // 200 Wh at 100 W: two hours at full power.
    assert_eq!(p.expected_end, TimestampMs(MIDNIGHT + 2 * H));
    assert_eq!(p.price, MicroCredits(600_000));
}

#[test]
fn a_flexible_job_with_no_sunlit_device_waits_for_sunrise_and_holds_the_device() {
    let mut tokyo = device(2, TOKYO, "JP");
    tokyo.gpu.vram_mib = 8_192; // below the job's 16 GiB
    let offers = [device(1, BERLIN, "DE"), tokyo];
    let mut s = scheduler();
    let d = decide(&mut s, vec![job(1, 200, true, 24)], MIDNIGHT, &offers);
    let Decision::Wait { until, why, .. } = d[0] else {
        panic!("expected a wait, got {d:?}");
    };
    assert_eq!(
        why,
        WaitReason::Sun {
            device: DeviceId([1; 16])
        }
    );
    // Berlin's sun rises about 02:45 UTC; the run is planned on an hour once the panel
    // can carry the job, within the morning; the wait ends the lead (a minute) before it.
    let lead = SchedulerConfig::default().lead_ms;
    let start = until.0 + lead;
    assert_eq!(start % H, 0);
    let elevation = sun_elevation(BERLIN.0, BERLIN.1, start).to_degrees();
    assert!(
        start > MIDNIGHT + 2 * H && start <= MIDNIGHT + 9 * H,
        "{}",
        (start - MIDNIGHT) / H
    );
    assert!(elevation > 5.0, "{elevation}");
    assert_eq!(s.queued(), 1);
    // Nothing is decided before then; then it is placed there, to start on the hour, on sun.
    assert!(s.tick(TimestampMs(MIDNIGHT + H), &offers).is_empty());
    let d = s.tick(until, &offers);
    let p = placement(&d[0]);
    assert_eq!(p.start_at, TimestampMs(start));
    assert_eq!(p.device, DeviceId([1; 16]));
    assert_eq!(p.renewable, SharePpm::ALL);
}

#[test]
fn an_inflexible_job_at_night_is_placed_now_on_the_grid() {
    let offers = [device(1, BERLIN, "DE")];
    let d = decide(
        &mut scheduler(),
        vec![job(1, 200, false, 24)],
        MIDNIGHT,
        &offers,
    );
    let p = placement(&d[0]);
    assert_eq!(p.start_at, TimestampMs(MIDNIGHT));
    assert_eq!(p.renewable, SharePpm(0));
    // 0.2 kWh at Germany's 342.06 g/kWh (bundled Ember table) is 68.412 g.
    assert!(p.co2e.0.abs_diff(68_412) <= 1, "{:?}", p.co2e);
}

#[test]
fn an_inflexible_job_prefers_the_cleaner_grid_when_no_sun_shines() {
    let table = RegionTable::bundled().unwrap();
    assert!(table.figure("FR", MIDNIGHT / H) < table.figure("DE", MIDNIGHT / H));
    let offers = [device(1, BERLIN, "DE"), device(2, (48.9, 2.35), "FR")];
    let d = decide(
        &mut scheduler(),
        vec![job(1, 200, false, 24)],
        MIDNIGHT,
        &offers,
    );
    assert_eq!(placement(&d[0]).device, DeviceId([2; 16]));
}

#[test]
fn needs_filter_devices_and_a_job_no_device_can_run_is_refused() {
    let mut small = device(1, TOKYO, "JP");
    small.gpu.vram_mib = 8_192;
    let mut old = device(2, TOKYO, "JP");
    old.gpu.capability = ComputeCapability::new(7, 5);
    let mut embedded = device(3, TOKYO, "JP");
    embedded.gpu.class = GpuClass::Embedded;
    let fits = device(4, BERLIN, "DE");
    let mut s = scheduler();
    let mut j = job(1, 200, false, 24);
    j.needs.min_capability = ComputeCapability::new(8, 6);
    // Only the night-time Berlin device fits: it is chosen over three sunlit ones.
    let d = decide(
        &mut s,
        vec![j],
        MIDNIGHT,
        &[small.clone(), old.clone(), embedded.clone(), fits],
    );
    assert_eq!(placement(&d[0]).device, DeviceId([4; 16]));
    let d = decide(
        &mut s,
        vec![job(2, 200, false, 24)],
        MIDNIGHT,
        &[small, old, embedded],
    );
    assert_eq!(
        d,
        vec![Decision::Refuse {
            job: JobId([2; 16]),
            reason: RefuseReason::NoDeviceMeetsNeeds
        }]
    );
}

#[test]
fn a_price_ceiling_below_every_asking_price_is_refused_with_the_cheapest() {
    let mut dear = device(1, TOKYO, "JP");
    dear.price_per_gpu_hour = MicroCredits(900_000);
    let mut cheaper = device(2, BERLIN, "DE");
    cheaper.price_per_gpu_hour = MicroCredits(400_000);
    let mut j = job(1, 200, false, 24);
    j.max_price_per_gpu_hour = MicroCredits(350_000);
    let d = decide(
        &mut scheduler(),
        vec![j],
        MIDNIGHT,
        &[dear.clone(), cheaper.clone()],
    );
    assert_eq!(
        d[0],
        Decision::Refuse {
            job: JobId([1; 16]),
            reason: RefuseReason::AbovePriceCeiling {
                cheapest: MicroCredits(400_000)
            }
        }
    );
    // At 500k the sunlit device is still too dear: the job runs in Berlin.
    let mut j = job(2, 200, false, 24);
    j.max_price_per_gpu_hour = MicroCredits(500_000);
    let d = decide(&mut scheduler(), vec![j], MIDNIGHT, &[dear, cheaper]);
    assert_eq!(placement(&d[0]).device, DeviceId([2; 16]));
}

#[test]
fn carbon_limits_that_no_run_before_the_deadline_meets_are_refused() {
    let offers = [device(1, BERLIN, "DE")];
    let mut j = job(1, 200, true, 3);
    j.carbon = CarbonLimit::MinRenewable(SharePpm(900_000));
    let mut k = job(2, 200, true, 3);
    k.carbon = CarbonLimit::MaxEmissions(Co2eMg(1_000));
    let d = decide(&mut scheduler(), vec![j, k], MIDNIGHT, &offers);
    assert_eq!(d.len(), 2);
    for (i, d) in d.iter().enumerate() {
        let Decision::Refuse {
            reason:
                RefuseReason::CarbonLimit {
                    best_renewable,
                    best_co2e,
                },
            ..
        } = d
        else {
            panic!("job {i}: expected a carbon refusal, got {d:?}");
        };
        assert_eq!(*best_renewable, SharePpm(0));
        assert!(best_co2e.0.abs_diff(68_412) <= 1, "{best_co2e:?}");
    }
    // With a day to go the same limit is met by waiting for the sun.
    let mut j = job(3, 200, true, 24);
    j.carbon = CarbonLimit::MinRenewable(SharePpm(900_000));
    let d = decide(&mut scheduler(), vec![j], MIDNIGHT, &offers);
    assert!(
        matches!(
            d[0],
            Decision::Wait {
                why: WaitReason::Sun { .. },
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn a_lease_survives_an_outage_shorter_than_the_grace_and_moves_after_it() {
    let mut offers = vec![device(1, TOKYO, "JP"), device(2, BERLIN, "DE")];
    let mut s = scheduler();
    let d = decide(&mut s, vec![job(1, 200, false, 24)], MIDNIGHT, &offers);
    assert_eq!(placement(&d[0]).device, DeviceId([1; 16]));
    let id = JobId([1; 16]);
    // Silent for 20 minutes (grace 30): the lease holds, and holds after it is heard.
    s.device_silent(DeviceId([1; 16]), TimestampMs(MIDNIGHT + 60_000));
    offers[0].online = false;
    assert!(
        s.tick(TimestampMs(MIDNIGHT + 20 * 60_000), &offers)
            .is_empty()
    );
    offers[0].online = true;
    assert!(
        s.tick(TimestampMs(MIDNIGHT + 25 * 60_000), &offers)
            .is_empty()
    );
    assert_eq!(s.lease(id).unwrap().device, DeviceId([1; 16]));
    assert!(
        s.tick(TimestampMs(MIDNIGHT + 60 * 60_000), &offers)
            .is_empty()
    );
    // Silent again from 61 min; still leased at 90 min, revoked and moved at 92 min.
    offers[0].online = false;
    let silent_from = MIDNIGHT + 61 * 60_000;
    assert!(s.tick(TimestampMs(silent_from), &offers).is_empty());
    assert!(
        s.tick(TimestampMs(MIDNIGHT + 90 * 60_000), &offers)
            .is_empty()
    );
    assert!(s.lease(id).is_some());
    let d = s.tick(TimestampMs(MIDNIGHT + 92 * 60_000), &offers);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        d[0],
        Decision::Revoke {
            job: id,
            device: DeviceId([1; 16]),
            why: RevokeReason::SilentPastGrace {
                since: TimestampMs(silent_from)
            }
        }
    );
    assert_eq!(placement(&d[1]).device, DeviceId([2; 16]));
    // Back online, the device that lost the job is not given it again.
    offers[0].online = true;
    s.admission_refused(id, DeviceId([2; 16]));
    let d = s.tick(TimestampMs(MIDNIGHT + 95 * 60_000), &offers);
    assert_eq!(
        d,
        vec![Decision::Wait {
            job: id,
            until: TimestampMs(MIDNIGHT + 100 * 60_000),
            why: WaitReason::NoDeviceOnline
        }]
    );
}

#[test]
fn a_device_whose_budget_cannot_finish_before_the_deadline_is_not_chosen() {
    // Off the grid, battery 50 Wh above its reserve: 200 Wh cannot be paid before dawn.
    let mut off_grid = device(1, (48.9, 2.35), "FR");
    off_grid.grid_allowance = Milliwatts(0);
    off_grid.battery_soc_permille = 250;
    off_grid.price_per_gpu_hour = MicroCredits(1_000);
    let on_grid = device(2, BERLIN, "DE");
    let d = decide(
        &mut scheduler(),
        vec![job(1, 200, false, 3)],
        MIDNIGHT,
        &[off_grid.clone(), on_grid],
    );
    assert_eq!(placement(&d[0]).device, DeviceId([2; 16]));
    let d = decide(
        &mut scheduler(),
        vec![job(2, 200, false, 3)],
        MIDNIGHT,
        &[off_grid.clone()],
    );
    assert_eq!(
        d[0],
        Decision::Refuse {
            job: JobId([2; 16]),
            reason: RefuseReason::DeadlineCannotBeMet
        }
    );
    // A job the battery can pay for does run there, all renewable.
    let d = decide(
        &mut scheduler(),
        vec![job(3, 40, false, 3)],
        MIDNIGHT,
        &[off_grid],
    );
    assert_eq!(placement(&d[0]).renewable, SharePpm::ALL);
}

#[test]
fn the_same_inputs_give_the_same_decisions() {
    let run = || {
        let mut s = scheduler();
        let offers: Vec<DeviceOffer> = (0..24u8)
            .map(|i| {
                let mut d = device(
                    i,
                    (-40.0 + 4.0 * f64::from(i), -170.0 + 15.0 * f64::from(i)),
                    ["DE", "FR", "JP", "AU", "BR"][usize::from(i) % 5],
                );
                d.price_per_gpu_hour = MicroCredits(200_000 + 10_000 * u64::from(i % 7));
                d.battery_soc_permille = 200 + 30 * u16::from(i % 9);
                d
            })
            .collect();
        let jobs = (0..60u8)
            .map(|i| job(i, 50 + 10 * u64::from(i), i % 3 != 0, 2 + u64::from(i % 30)))
            .collect();
        let mut all = decide(&mut s, jobs, MIDNIGHT, &offers);
        for t in 1..30 {
            all.extend(s.tick(TimestampMs(MIDNIGHT + t * H / 2), &offers));
        }
        all
    };
    let a = run();
    assert!(a.len() >= 60, "{}", a.len());
    assert!(a.iter().any(|d| matches!(d, Decision::Place(_))));
    assert!(a.iter().any(|d| matches!(d, Decision::Wait { .. })));
    assert_eq!(a, run());
}

#[test]
fn an_inflexible_job_starts_now_where_a_flexible_one_waits_for_the_busy_sunlit_device() {
    let mut tokyo = device(2, TOKYO, "JP");
    // Busy for another hour with work the caller knows of.
    tokyo.leased.push(LeasedJob {
        job: JobId([9; 16]),
        until: TimestampMs(MIDNIGHT + H),
    });
    let offers = [device(1, BERLIN, "DE"), tokyo];
    let mut s = scheduler();
    let d = decide(&mut s, vec![job(1, 200, false, 24)], MIDNIGHT, &offers);
    let p = placement(&d[0]);
    assert_eq!(
        (p.device, p.start_at),
        (DeviceId([1; 16]), TimestampMs(MIDNIGHT))
    );
    let d = decide(&mut s, vec![job(2, 200, true, 24)], MIDNIGHT, &offers);
    assert_eq!(
        d,
        vec![Decision::Wait {
            job: JobId([2; 16]),
            until: TimestampMs(MIDNIGHT + H - SchedulerConfig::default().lead_ms),
            why: WaitReason::Busy {
                device: Some(DeviceId([2; 16]))
            }
        }]
    );
}

#[test]
fn a_later_hold_keeps_its_place_when_the_job_before_it_runs_as_planned() {
    // One device, night: two flexible jobs wait for Berlin's sun, one after the other.
    let offers = [device(1, BERLIN, "DE")];
    let mut s = scheduler();
    let d = decide(
        &mut s,
        vec![job(1, 200, true, 24), job(2, 200, true, 24)],
        MIDNIGHT,
        &offers,
    );
    let until = |d: &Decision| match d {
        Decision::Wait { until, .. } => until.0,
        other => panic!("expected a wait, got {other:?}"),
    };
    let (first, second) = (until(&d[0]), until(&d[1]));
    assert!(
        second >= first + 2 * H,
        "the second runs after the first's two hours"
    );
    // The first is placed; the second's hold still stands, so it is not decided again.
    let d = s.tick(TimestampMs(first), &offers);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(placement(&d[0]).job, JobId([1; 16]));
    let d = s.tick(TimestampMs(second), &offers);
    let p = placement(&d[0]);
    assert_eq!(p.job, JobId([2; 16]));
    assert_eq!(p.renewable, SharePpm::ALL);
}

#[test]
fn the_scheduler_can_live_behind_the_api_s_shared_state() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Scheduler>();
}

#[test]
fn a_job_waiting_for_a_device_is_placed_as_soon_as_one_comes_online() {
    let mut s = scheduler();
    let id = job(1, 50, false, 12).id;
    s.submit(job(1, 50, false, 12)).unwrap();
    let mut offers = vec![device(1, BERLIN, "DE")];
    offers[0].online = false;
    let d = s.tick(TimestampMs(MIDNIGHT), &offers);
    assert!(
        matches!(d[..], [Decision::Wait { why: WaitReason::NoDeviceOnline, until, .. }] if until.0 > MIDNIGHT + 60_000),
        "{d:?}"
    );
    // Nothing new a minute on: still waiting for its retry.
    assert!(s.tick(TimestampMs(MIDNIGHT + 60_000), &offers).is_empty());
    // The device comes online: decided at once, not at the retry.
    offers[0].online = true;
    let d = s.tick(TimestampMs(MIDNIGHT + 61_000), &offers);
    assert_eq!(placement(&d[0]).job, id, "{d:?}");
}
