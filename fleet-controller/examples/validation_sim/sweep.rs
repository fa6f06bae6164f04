//! Every policy against every liar kind at every liar share: enough independent fleets per
//! case that it holds at least `min_liars` liars (a 1 % share of 1,000 devices is only ten),
//! spread over the machine's cores. Each fleet's randomness comes from (seed, case, fleet),
//! and each case's fleets are added in order, so the figures do not depend on the threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cost::CheckCost;
use crate::fleet::{Fleet, Tally};
use crate::model::{LIAR_KINDS, LiarKind, Policy};
use crate::rng::Rng;

/// Shares of lying devices simulated.
pub const LIAR_SHARES: [f64; 3] = [0.01, 0.05, 0.20];

/// How big the sweep is.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub seed: u64,
    pub devices: usize,
    /// Buyer jobs per fleet (the fleet's lifetime).
    pub jobs: u64,
    /// Liars per case at least (fleets are added until there are).
    pub min_liars: usize,
    pub threads: usize,
}

impl Setup {
    /// Liars in one fleet at `share` (at least one).
    pub fn liars_per_fleet(&self, share: f64) -> usize {
        ((share * self.devices as f64).round() as usize).clamp(1, self.devices)
    }

    /// Fleets a case at `share` needs.
    pub fn fleets(&self, share: f64) -> usize {
        self.min_liars.div_ceil(self.liars_per_fleet(share))
    }
}

/// One case: a policy, a liar kind, a liar share, and its fleets' figures added up.
pub struct Case {
    pub policy: usize,
    pub kind: LiarKind,
    pub share: f64,
    pub fleets: usize,
    pub tally: Tally,
}

/// Runs every case; `false_reject` is Freivalds' measured false-rejection rate.
pub fn run(setup: Setup, policies: &[Policy], cost: &CheckCost, false_reject: f64) -> Vec<Case> {
    let mut cases = Vec::new();
    for p in 0..policies.len() {
        for kind in LIAR_KINDS {
            for share in LIAR_SHARES {
                cases.push(Case {
                    policy: p,
                    kind,
                    share,
                    fleets: setup.fleets(share),
                    tally: Tally::default(),
                });
            }
        }
    }
    // Work units: (case, fleet).
    let units: Vec<(usize, usize)> = cases
        .iter()
        .enumerate()
        .flat_map(|(c, case)| (0..case.fleets).map(move |f| (c, f)))
        .collect();
    let done: Mutex<Vec<Option<Tally>>> = Mutex::new(vec![None; units.len()]);
    let next = AtomicUsize::new(0);
    let progress = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..setup.threads.max(1) {
            s.spawn(|| {
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, f)) = units.get(u) else { break };
                    let case = &cases[c];
                    let key = (case.policy as u64) << 16
                        | (LIAR_KINDS.iter().position(|k| *k == case.kind).unwrap_or(0) as u64)
                            << 8
                        | LIAR_SHARES
                            .iter()
                            .position(|x| *x == case.share)
                            .unwrap_or(0) as u64;
                    let mut fleet = Fleet::new(
                        &policies[case.policy],
                        case.kind,
                        cost,
                        false_reject,
                        (setup.devices, setup.liars_per_fleet(case.share)),
                        Rng::for_parts(setup.seed, key, f as u64),
                    );
                    for _ in 0..setup.jobs {
                        fleet.job();
                    }
                    let tally = fleet.finish();
                    done.lock().expect("no thread panics holding it")[u] = Some(tally);
                    let n = progress.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of((units.len() / 10).max(1)) {
                        eprintln!("  {n} of {} fleets", units.len());
                    }
                }
            });
        }
    });
    let done = done.into_inner().expect("no thread panics holding it");
    for (&(c, _), tally) in units.iter().zip(done) {
        cases[c].tally.add(&tally.expect("every unit ran"));
    }
    cases
}
