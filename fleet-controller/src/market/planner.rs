//! Choosing where and when one job runs, over the tick's outlooks, and the decision that
//! follows: a placement, a wait holding the device, or a refusal with the reason the
//! candidates stopped at.
//!
//! Every device that meets the job's needs, is online, has not failed the job before and
//! asks no more than its ceiling is a candidate. For each, the start times tried depend on
//! the strategy:
//! - carbon-aware, flexible job: the first moment the device is free, then every hour
//!   boundary after it while the job can still finish before its deadline (temporal
//!   shifting; trying every device is the spatial shifting);
//! - carbon-aware, inflexible job: the first moment the device is free (its wait weighs
//!   more than any emissions, so it starts now wherever it can);
//! - first-fit and cheapest: now, on a device free now.
//!
//! A start is feasible when the device's forecast budget (sun, battery above reserve, grid
//! allowance) finishes the job before its deadline less a safety slack, and the run does
//! not overlap work already committed there. The carbon-aware strategy also checks the
//! job's carbon limit and scores what remains, lower is better, in milligrams CO2e and
//! milligram-equivalents of the other concerns:
//!
//! `score = expected grid mg + wait_h x kWh x wait weight + price x price weight
//!          + (1 - reliability) x kWh x unreliability weight [+ no room to recover]`
//!
//! where a run that would leave no time to run the job again after a lost lease (the
//! grace period plus a run at full power) weighs `no_room_to_recover_mg`: by default
//! more than any emissions, so that such a run is chosen only when none leaves that room.
//!
//! Only the first term depends on the walk through the slots, so the walk is skipped (and
//! later starts on that device are not tried) once the other terms alone exceed the best
//! score so far.

use attest::msg::JobId;
use attest::{DeviceId, TimestampMs};

use super::config::{SchedulerConfig, Strategy};
use super::decision::{Decision, Placement, RefuseReason, WaitReason};
use super::forecast::{Commit, HOUR_MS, Outlook, RunPlan};
use super::job::{CarbonLimit, Co2eMg, JobRequest, MicroCredits, SharePpm};
use super::offer::DeviceOffer;

/// What an hour's wait weighs for an inflexible job: more than any emissions.
const INFLEXIBLE_WAIT_MG_PER_HOUR: f64 = 1e15;

/// The chosen run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chosen {
    /// Index into the tick's outlooks.
    pub outlook: usize,
    pub plan: RunPlan,
    pub price: MicroCredits,
    /// The device was busy until this start (it is its first free moment after now).
    pub busy_before: bool,
}

/// How far the candidates got, for the refusal's reason when none is feasible.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Funnel {
    pub meets_needs: bool,
    pub candidate: bool,
    pub cheapest_above_ceiling: Option<MicroCredits>,
    pub price_ok: bool,
    pub busy_now: bool,
    pub finishes: bool,
    pub best_failing: Option<(SharePpm, Co2eMg)>,
}

/// What the job needs from a run, computed once per job.
struct Ask<'a> {
    job: &'a JobRequest,
    energy_wh: f64,
    kwh: f64,
    now: u64,
}

/// Picks the best feasible run for `job`, or says how far the candidates got.
pub(crate) fn choose(
    cfg: &SchedulerConfig,
    job: &JobRequest,
    excluded: &[DeviceId],
    now: u64,
    offers: &[DeviceOffer],
    outlooks: &[Outlook],
) -> Result<Chosen, Funnel> {
    let energy_wh = job.work.wh();
    let ask = Ask {
        job,
        energy_wh,
        kwh: energy_wh / 1_000.0,
        now,
    };
    let mut funnel = Funnel {
        meets_needs: offers.iter().any(|o| job.needs.met_by(&o.gpu)),
        ..Funnel::default()
    };
    let mut best: Option<(f64, Chosen)> = None;
    for (i, o) in outlooks.iter().enumerate() {
        let offer = &offers[o.index];
        if !job.needs.met_by(&offer.gpu) || excluded.contains(&o.device) || o.job_w <= 0.0 {
            continue;
        }
        funnel.candidate = true;
        if offer.price_per_gpu_hour > job.max_price_per_gpu_hour {
            let c = funnel
                .cheapest_above_ceiling
                .get_or_insert(offer.price_per_gpu_hour);
            *c = (*c).min(offer.price_per_gpu_hour);
            continue;
        }
        funnel.price_ok = true;
        let found = match cfg.strategy {
            Strategy::CarbonAware => best_start(cfg, &ask, offer, o, i, &mut funnel, best),
            Strategy::FirstFit | Strategy::Cheapest => {
                if o.free_from(now) > now {
                    funnel.busy_now = true;
                    None
                } else {
                    feasible(cfg, &ask, o, now, &mut funnel, false)
                        .ok()
                        .map(|plan| {
                            let price = price_of(offer, &plan);
                            let score = match cfg.strategy {
                                Strategy::Cheapest => offer.price_per_gpu_hour.0 as f64,
                                _ => 0.0,
                            };
                            (score, chosen(i, plan, price, false))
                        })
                }
            }
        };
        if let Some((score, c)) = found {
            if best.is_none_or(|(b, _)| score < b) {
                best = Some((score, c));
            }
            if cfg.strategy == Strategy::FirstFit {
                break;
            }
        }
    }
    best.map(|(_, c)| c).ok_or(funnel)
}

fn chosen(outlook: usize, plan: RunPlan, price: MicroCredits, busy_before: bool) -> Chosen {
    Chosen {
        outlook,
        plan,
        price,
        busy_before,
    }
}

/// The carbon-aware strategy's best start on one device, if it beats `best`.
fn best_start(
    cfg: &SchedulerConfig,
    ask: &Ask,
    offer: &DeviceOffer,
    o: &Outlook,
    index: usize,
    funnel: &mut Funnel,
    best: Option<(f64, Chosen)>,
) -> Option<(f64, Chosen)> {
    let w = &cfg.weights;
    let earliest = o.free_from(ask.now);
    let full_power_ms = ask.energy_wh / o.job_w * HOUR_MS as f64;
    let fixed = w.price_mg_per_micro_credit
        * offer.price_per_gpu_hour.0 as f64
        * (full_power_ms / HOUR_MS as f64)
        + (1.0 - offer.reliability.clamp(0.0, 1.0)) * ask.kwh * w.unreliability_mg_per_kwh;
    let mut best_here: Option<(f64, Chosen)> = None;
    let mut bar = best.map_or(f64::INFINITY, |(b, _)| b);
    let mut start = earliest;
    while start < o.horizon_end() {
        let wait_h = (start - ask.now) as f64 / HOUR_MS as f64;
        // An inflexible job starts now wherever it can; it waits for a busy device only
        // when every device is busy, and then for the one free first.
        let per_hour = if ask.job.flexible {
            ask.kwh * w.wait_mg_per_kwh_hour
        } else {
            INFLEXIBLE_WAIT_MG_PER_HOUR
        };
        let lower = fixed + wait_h * per_hour;
        if lower >= bar {
            break;
        }
        match feasible(cfg, ask, o, start, funnel, true) {
            Ok(plan) => {
                let room = plan.end + cfg.lease_grace_ms + full_power_ms as u64;
                let risk = if room > ask.job.deadline.0 {
                    w.no_room_to_recover_mg
                } else {
                    0.0
                };
                let score = plan.co2e_mg + lower + risk;
                if score < bar {
                    bar = score;
                    let busy = start == earliest && start > ask.now;
                    best_here = Some((score, chosen(index, plan, price_of(offer, &plan), busy)));
                }
            }
            // A later start finishes no earlier: this device cannot do better.
            Err(Infeasible::Unfinished | Infeasible::Late) => break,
            Err(Infeasible::Overlaps | Infeasible::Carbon) => {}
        }
        if !ask.job.flexible {
            break;
        }
        start = (start / HOUR_MS + 1) * HOUR_MS;
    }
    best_here
}

/// Why a start does not work.
enum Infeasible {
    /// The job would not finish within the horizon.
    Unfinished,
    /// It would finish after its deadline (less the slack).
    Late,
    /// It would overlap committed work.
    Overlaps,
    /// It would break its carbon limit.
    Carbon,
}

/// The run from `start`, if it finishes in time, fits between committed work and (when
/// `carbon` is asked) keeps the job's carbon limit.
fn feasible(
    cfg: &SchedulerConfig,
    ask: &Ask,
    o: &Outlook,
    start: u64,
    funnel: &mut Funnel,
    carbon: bool,
) -> Result<RunPlan, Infeasible> {
    let plan = o.run(start, ask.energy_wh).ok_or(Infeasible::Unfinished)?;
    // The further the end lies from now, the more can delay it (the job before it
    // overrunning, an outage, a refused admission): the slack grows with it.
    let span_ms = plan.end - ask.now;
    let mut slack = cfg
        .deadline_slack_min_ms
        .max((span_ms as f64 * cfg.deadline_slack_fraction) as u64);
    if ask.job.flexible && start > ask.now + cfg.lead_ms {
        // Choosing to wait must not spend the room to recover: a lease lost at the end of
        // the run (silent past the grace) still leaves time to run it again elsewhere.
        slack = slack.max(cfg.lease_grace_ms + (plan.end - plan.start));
    }
    if plan.end.saturating_add(slack) > ask.job.deadline.0 {
        return Err(Infeasible::Late);
    }
    if !o.is_free(start, plan.end) {
        return Err(Infeasible::Overlaps);
    }
    funnel.finishes = true;
    if carbon {
        let share = SharePpm::from_fraction(plan.renewable_wh / ask.energy_wh.max(1e-12));
        let co2e = Co2eMg(plan.co2e_mg.ceil() as u64);
        let ok = match ask.job.carbon {
            CarbonLimit::None => true,
            CarbonLimit::MinRenewable(min) => share >= min,
            CarbonLimit::MaxEmissions(max) => co2e <= max,
        };
        if !ok {
            let b = funnel.best_failing.get_or_insert((share, co2e));
            *b = (b.0.max(share), b.1.min(co2e));
            return Err(Infeasible::Carbon);
        }
    }
    Ok(plan)
}

/// The run of `job` from `start` on the device of `o`, if it is still feasible there (a
/// hold checked again after a job before it changed the device's plan).
pub(crate) fn fits_at(
    cfg: &SchedulerConfig,
    job: &JobRequest,
    o: &Outlook,
    now: u64,
    start: u64,
) -> Option<RunPlan> {
    let energy_wh = job.work.wh();
    let ask = Ask {
        job,
        energy_wh,
        kwh: energy_wh / 1_000.0,
        now,
    };
    let carbon = cfg.strategy == Strategy::CarbonAware;
    feasible(cfg, &ask, o, start, &mut Funnel::default(), carbon).ok()
}

fn price_of(offer: &DeviceOffer, plan: &RunPlan) -> MicroCredits {
    let hours = (plan.end - plan.start) as f64 / HOUR_MS as f64;
    MicroCredits((offer.price_per_gpu_hour.0 as f64 * hours).ceil() as u64)
}

/// No feasible run: a refusal with the reason the candidates stopped at, or a wait
/// when more time (devices freeing up, coming online, the horizon moving) may help.
pub(crate) fn explain(
    cfg: &SchedulerConfig,
    job: &JobRequest,
    f: Funnel,
    now: u64,
    outlooks: &[Outlook],
) -> Decision {
    let id = job.id;
    let retry = now + cfg.retry_ms;
    let wait = |why| Decision::Wait {
        job: id,
        until: TimestampMs(retry),
        why,
    };
    if !f.meets_needs {
        return refuse(id, RefuseReason::NoDeviceMeetsNeeds);
    }
    if !f.candidate {
        return if retry < job.deadline.0 {
            wait(WaitReason::NoDeviceOnline)
        } else {
            refuse(id, RefuseReason::DeadlineCannotBeMet)
        };
    }
    if !f.price_ok {
        let cheapest = f.cheapest_above_ceiling.unwrap_or_default();
        return refuse(id, RefuseReason::AbovePriceCeiling { cheapest });
    }
    if f.busy_now && retry < job.deadline.0 {
        return wait(WaitReason::Busy { device: None });
    }
    let horizon_end = outlooks
        .iter()
        .map(Outlook::horizon_end)
        .max()
        .unwrap_or(now);
    let beyond = job.deadline.0 > horizon_end;
    if !f.finishes {
        return if beyond {
            wait(WaitReason::BeyondHorizon)
        } else {
            refuse(id, RefuseReason::DeadlineCannotBeMet)
        };
    }
    if beyond {
        return Decision::Wait {
            job: id,
            until: TimestampMs(now + HOUR_MS),
            why: WaitReason::BeyondHorizon,
        };
    }
    let (best_renewable, best_co2e) = f.best_failing.unwrap_or_default();
    refuse(
        id,
        RefuseReason::CarbonLimit {
            best_renewable,
            best_co2e,
        },
    )
}

/// Places the chosen run when it starts within `lead` of now, or holds its device and
/// waits until `lead` before it starts.
pub(crate) fn accept(
    job: &JobRequest,
    c: Chosen,
    now: u64,
    lead: u64,
    outlooks: &mut [Outlook],
) -> Decision {
    let o = &mut outlooks[c.outlook];
    let device = o.device;
    let wait = c.plan.start > now + lead;
    o.commit(Commit {
        job: job.id,
        start: c.plan.start,
        end: c.plan.end,
        watts: o.job_w,
        energy_wh: job.work.wh(),
        hold: wait,
    });
    if wait {
        let why = if c.busy_before {
            WaitReason::Busy {
                device: Some(device),
            }
        } else {
            WaitReason::Sun { device }
        };
        return Decision::Wait {
            job: job.id,
            until: TimestampMs(c.plan.start - lead),
            why,
        };
    }
    let energy = job.work.wh().max(1e-12);
    Decision::Place(Placement {
        job: job.id,
        device,
        start_at: TimestampMs(c.plan.start),
        expected_end: TimestampMs(c.plan.end),
        renewable: SharePpm::from_fraction(c.plan.renewable_wh / energy),
        co2e: Co2eMg(c.plan.co2e_mg.ceil() as u64),
        price: c.price,
    })
}

pub(crate) fn refuse(job: JobId, reason: RefuseReason) -> Decision {
    Decision::Refuse { job, reason }
}
