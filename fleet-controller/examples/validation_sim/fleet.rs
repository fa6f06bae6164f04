//! One fleet under one policy: buyer jobs handed one by one to devices still given work
//! (uniformly: every device sees the same job rate), each result checked as the policy says
//! for its kernel, liars caught and struck off. A sans-IO state machine driven by
//! [`Fleet::job`]: no clock, the randomness passed in as a seed.
//!
//! How a check ends:
//! - Freivalds: a faked product escapes with probability 2^-30; an honest one is rejected
//!   with the false-rejection rate measured on real honest products (`honest.rs`).
//! - `sample:k`: k distinct positions drawn after upload (the device cannot know them); a
//!   faked item among them catches the device. Deterministic kernels: an honest output
//!   always passes.
//! - spot, redundant, adaptive: outputs compared. Liars do not collude, so every faked
//!   output differs from every other and only the honest output can be shared by two runs:
//!   the job runs on further devices until two agree ("a tie runs once more"), and every
//!   run that disagrees with them is caught, checker runs included.
//!
//! A rejected result (Freivalds, sample) is forgotten and the job runs again elsewhere; a
//! compared job takes the agreed output. A caught device gets no more work. The fleet is
//! established: honest devices start past the adaptive policy's warm-up, liars join new.

use crate::cost::CheckCost;
use crate::model::{ADAPTIVE_N, ADAPTIVE_WARMUP, Check, Job, LiarKind, Output, Policy};
use crate::rng::Rng;

/// A wrong product passes one round of Freivalds' check with probability at most 1/2.
const FREIVALDS_ESCAPE: f64 = 1.0 / (1u64 << fleet_controller::validate::FREIVALDS_ROUNDS) as f64;

/// Devices on one job at most that the simulation keeps apart (a job that needs more runs
/// than this, a long streak of liars, may reuse a device: at 20 % liars that is about
/// 0.2^14 of compared jobs).
const MAX_RUNS: usize = 16;

/// One liar's fate.
#[derive(Clone, Copy, Debug)]
pub struct LiarRecord {
    /// Its runs up to and including the one that caught it; `None` if never caught.
    pub caught_at: Option<u32>,
    /// Its runs in all.
    pub runs: u32,
}

/// What a fleet's run measured. Sums, so that replicate fleets add up.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub jobs: u64,
    /// Runs on devices, checker and repeated runs included.
    pub runs: u64,
    pub honest_runs: u64,
    /// Jobs whose accepted (paid) output was faked.
    pub wrong_accepted: u64,
    /// Honest devices struck off.
    pub false_accusations: u64,
    /// Jobs two or more liars ran among their first compared runs: had they colluded
    /// (one provider, the same wrong output), they could have agreed.
    pub liar_pairs: u64,
    /// Jobs left undone because no device was left to run them.
    pub unserved: u64,
    /// Device-hours and kWh of one run of every job, and of the runs beyond it.
    pub job_hours: f64,
    pub extra_hours: f64,
    pub job_kwh: f64,
    pub extra_kwh: f64,
    /// The controller's CPU time for its own checks (Freivalds, samples), ms.
    pub controller_ms: f64,
    pub liars: Vec<LiarRecord>,
}

impl Tally {
    /// Adds another fleet's figures to these.
    pub fn add(&mut self, o: &Tally) {
        self.jobs += o.jobs;
        self.runs += o.runs;
        self.honest_runs += o.honest_runs;
        self.wrong_accepted += o.wrong_accepted;
        self.false_accusations += o.false_accusations;
        self.liar_pairs += o.liar_pairs;
        self.unserved += o.unserved;
        self.job_hours += o.job_hours;
        self.extra_hours += o.extra_hours;
        self.job_kwh += o.job_kwh;
        self.extra_kwh += o.extra_kwh;
        self.controller_ms += o.controller_ms;
        self.liars.extend_from_slice(&o.liars);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Device {
    liar: bool,
    runs: u32,
    /// Results validated (any check), for the adaptive policy.
    validated: u32,
    caught_at: Option<u32>,
    /// Its index in `active` while it is there.
    slot: u32,
}

/// A few device ids with no allocation: the devices one job has run on.
#[derive(Clone, Copy)]
struct Runs {
    ids: [u32; MAX_RUNS],
    faked: [bool; MAX_RUNS],
    len: usize,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            ids: [0; MAX_RUNS],
            faked: [false; MAX_RUNS],
            len: 0,
        }
    }

    fn push(&mut self, id: u32, faked: bool) {
        if self.len < MAX_RUNS {
            self.ids[self.len] = id;
            self.faked[self.len] = faked;
            self.len += 1;
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.ids[..self.len].contains(&id)
    }
}

/// A fleet under one policy, with one kind of liar.
pub struct Fleet<'a> {
    policy: &'a Policy,
    kind: LiarKind,
    cost: &'a CheckCost,
    /// Freivalds' false-rejection rate per honest product (measured).
    false_reject: f64,
    rng: Rng,
    devices: Vec<Device>,
    /// Devices still given work.
    active: Vec<u32>,
    tally: Tally,
}

impl<'a> Fleet<'a> {
    /// `devices` devices of which `liars` lie.
    pub fn new(
        policy: &'a Policy,
        kind: LiarKind,
        cost: &'a CheckCost,
        false_reject: f64,
        (devices, liars): (usize, usize),
        rng: Rng,
    ) -> Fleet<'a> {
        // Jobs go to devices uniformly, so which ones lie does not matter: the first ones.
        // The fleet is established: honest devices have a validated record (past the
        // adaptive policy's warm-up); the liars join new.
        let devices: Vec<Device> = (0..devices)
            .map(|i| Device {
                liar: i < liars,
                validated: if i < liars { 0 } else { ADAPTIVE_WARMUP },
                slot: i as u32,
                ..Device::default()
            })
            .collect();
        let active = (0..devices.len() as u32).collect();
        Fleet {
            policy,
            kind,
            cost,
            false_reject,
            rng,
            devices,
            active,
            tally: Tally::default(),
        }
    }

    /// One buyer job, from arrival to an accepted result.
    pub fn job(&mut self) {
        let job = Job::draw(&mut self.rng);
        let runs_before = self.tally.runs;
        self.tally.jobs += 1;
        self.tally.job_hours += job.hours;
        self.tally.job_kwh += job.hours * job.watts / 1e3;
        let check = self.policy.check(job.kernel);
        let mut used = Runs::new();
        loop {
            let Some(d) = self.pick(&used) else {
                self.tally.unserved += 1;
                break;
            };
            let out = self.run(d, &job);
            used.push(d, out.is_faked());
            let rejected = match check {
                Check::Freivalds => {
                    self.tally.controller_ms += self.cost.freivalds_ms[job.matmul_size];
                    match out {
                        Output::Faked { .. } => !self.rng.chance(FREIVALDS_ESCAPE),
                        Output::Honest => self.rng.chance(self.false_reject),
                    }
                }
                Check::Sample(k) => {
                    self.tally.controller_ms += f64::from(k) * self.cost.item_ms(job.kernel);
                    match out {
                        Output::Faked { items } => !self.sample_escapes(items, job.items(), k),
                        Output::Honest => false,
                    }
                }
                Check::Trust => false,
                Check::Spot(s) => {
                    if self.rng.chance(s) {
                        self.compare(&job, &mut used, 1);
                    } else {
                        self.accept(out);
                    }
                    break;
                }
                Check::Redundant(r) => {
                    self.compare(&job, &mut used, r - 1);
                    break;
                }
                Check::Adaptive => {
                    let rate = if self.devices[d as usize].validated < ADAPTIVE_WARMUP {
                        1.0
                    } else {
                        1.0 / ADAPTIVE_N
                    };
                    if self.rng.chance(rate) {
                        self.compare(&job, &mut used, 1);
                    } else {
                        self.accept(out);
                    }
                    break;
                }
            };
            if rejected {
                // Forgotten; the job runs again on a device not yet tried.
                self.catch(d);
                continue;
            }
            if check != Check::Trust {
                self.devices[d as usize].validated += 1;
            }
            self.accept(out);
            break;
        }
        let extra = (self.tally.runs - runs_before).saturating_sub(1) as f64;
        self.tally.extra_hours += extra * job.hours;
        self.tally.extra_kwh += extra * job.hours * job.watts / 1e3;
    }

    /// The figures, with every liar's fate.
    pub fn finish(mut self) -> Tally {
        self.tally.liars = self
            .devices
            .iter()
            .filter(|d| d.liar)
            .map(|d| LiarRecord {
                caught_at: d.caught_at,
                runs: d.runs,
            })
            .collect();
        self.tally
    }

    /// A device still given work that has not run this job yet.
    fn pick(&mut self, used: &Runs) -> Option<u32> {
        for _ in 0..64 {
            if self.active.is_empty() {
                return None;
            }
            let d = self.active[self.rng.below(self.active.len())];
            if !used.contains(d) {
                return Some(d);
            }
        }
        None
    }

    /// Device `d` runs `job`.
    fn run(&mut self, d: u32, job: &Job) -> Output {
        let dev = &mut self.devices[d as usize];
        let done = dev.runs;
        dev.runs += 1;
        self.tally.runs += 1;
        if dev.liar {
            self.kind.output(job, done, &mut self.rng)
        } else {
            self.tally.honest_runs += 1;
            Output::Honest
        }
    }

    /// The job's result is paid for.
    fn accept(&mut self, out: Output) {
        if out.is_faked() {
            self.tally.wrong_accepted += 1;
        }
    }

    /// Device `d` is found wrong: marked, and given no more work.
    fn catch(&mut self, d: u32) {
        let dev = &mut self.devices[d as usize];
        if dev.caught_at.is_some() {
            return;
        }
        dev.caught_at = Some(dev.runs);
        if !dev.liar {
            self.tally.false_accusations += 1;
        }
        let slot = dev.slot as usize;
        self.active.swap_remove(slot);
        if let Some(&moved) = self.active.get(slot) {
            self.devices[moved as usize].slot = slot as u32;
        }
    }

    /// Whether a sample of `k` distinct positions out of `items` misses all `faked` ones
    /// (drawn one by one without replacement: the hypergeometric chance, simulated).
    fn sample_escapes(&mut self, faked: u32, items: u32, k: u32) -> bool {
        if faked >= items {
            return k == 0;
        }
        (0..k.min(items)).all(|i| {
            let left = f64::from(items - i);
            !self.rng.chance(f64::from(faked) / left)
        })
    }

    /// The job's first run (in `used`) is compared with `more` runs on other devices, and
    /// further ones until two agree; every run that disagrees is caught.
    fn compare(&mut self, job: &Job, used: &mut Runs, more: u32) {
        let first = used.ids[0];
        for _ in 0..more {
            let Some(c) = self.pick(used) else { break };
            let out = self.run(c, job);
            used.push(c, out.is_faked());
        }
        let liars = used.ids[..used.len]
            .iter()
            .filter(|&&d| self.devices[d as usize].liar)
            .count();
        if liars >= 2 {
            self.tally.liar_pairs += 1;
        }
        // Faked outputs are all different, so the honest one is the only one two runs can
        // share: run again until it has two.
        let honest = |u: &Runs| u.faked[..u.len].iter().filter(|f| !**f).count();
        while honest(used) < 2 {
            let Some(c) = self.pick(used).filter(|_| used.len < MAX_RUNS) else {
                self.tally.unserved += 1;
                return;
            };
            let out = self.run(c, job);
            used.push(c, out.is_faked());
        }
        for i in 0..used.len {
            if used.faked[i] {
                self.catch(used.ids[i]);
            }
        }
        if !used.faked[0] {
            self.devices[first as usize].validated += 1;
        }
    }
}
