//! The run's figures as Markdown tables: the honest-product trial, the controller's cost per
//! check, the target rows, every liar kind at a 5 % share, the collusion exposure of
//! compared runs, and the full grid.

use crate::cost::{CheckCost, MANDELBROT_MAX_ITER, SHA_ITEM_BYTES};
use crate::honest::{HonestTrial, ORDERS};
use crate::model::{
    LIAR_KINDS, LiarKind, MANDELBROT_ITEMS, MATMUL_N, Policy, SAMPLE_K, SHA_ITEMS, TRUSTED_AFTER,
    WINDOW, auto_with_ptx_spot, caught_within,
};
use crate::summary::{Summary, pct};
use crate::sweep::{Case, LIAR_SHARES};

/// The cases with their summaries, looked up by (policy, kind, share).
pub struct Grid<'a> {
    pub policies: &'a [Policy],
    pub cases: Vec<(&'a Case, Summary)>,
}

impl Grid<'_> {
    fn get(&self, policy: usize, kind: LiarKind, share: f64) -> &Summary {
        self.cases
            .iter()
            .find(|(c, _)| c.policy == policy && c.kind == kind && c.share == share)
            .map(|(_, s)| s)
            .expect("every case ran")
    }
}

/// Freivalds' check on honest products, and the control.
pub fn print_honest(t: &HonestTrial) {
    println!(
        "| summation order (f32 accumulation) | honest products checked | rejected (false accusations) | bit-identical to the naive order |"
    );
    println!("|---|---|---|---|");
    for (i, name) in ORDERS.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} |",
            t.trials, t.rejected[i], t.bit_identical[i]
        );
    }
    let checks = t.checks();
    let bound = 3.0 / checks as f64;
    println!();
    println!(
        "Freivalds rejected {} of {checks} honest products ({:.1} s). With none rejected, the false-accusation rate per matrix product is below {:.2} % (95 % confidence, rule of three: 3 / {checks}); with matrix products 20 % of jobs, below {:.1} per 10,000 jobs. Control: the largest element of a row zeroed was caught in {} of {} products.",
        t.false_rejections(),
        t.seconds,
        100.0 * bound,
        1e4 * bound * 0.2,
        t.control_caught,
        t.trials
    );
    let others = t.trials * (ORDERS.len() - 1);
    let same: usize = t.bit_identical[1..].iter().sum();
    println!();
    println!(
        "Bit-identical to the naive order: {same} of {others} products in another order. Comparing matrix products by hash would accuse honest devices whose backends sum differently (CPU against GPU, fused multiply-add or not), so the simulation's spot and redundant checks compare matrix products within the Freivalds tolerance, not by hash."
    );
}

/// What each of the controller's checks costs it.
pub fn print_cost(c: &CheckCost) {
    println!(
        "| check | controller CPU per check (one core, measured here) | its share of the job's own compute | device time |"
    );
    println!("|---|---|---|---|");
    for (i, n) in MATMUL_N.iter().enumerate() {
        println!(
            "| Freivalds, 30 rounds, matmul {n}^3 | {:.1} ms | {:.1} % of n^3 (90 n^2 f64 multiply-adds) | none |",
            c.freivalds_ms[i],
            100.0 * 90.0 / *n as f64
        );
    }
    println!(
        "| sample:{SAMPLE_K}, sha256_batch of {SHA_ITEMS} x {SHA_ITEM_BYTES} B | {:.3} ms | {:.2} % of the items | none |",
        f64::from(SAMPLE_K) * c.sha_item_ms,
        100.0 * f64::from(SAMPLE_K) / f64::from(SHA_ITEMS)
    );
    println!(
        "| sample:{SAMPLE_K}, mandelbrot 1024 x 1024, {MANDELBROT_MAX_ITER} iterations at most | {:.2} ms | {:.4} % of the pixels | none |",
        f64::from(SAMPLE_K) * c.mandelbrot_item_ms,
        100.0 * f64::from(SAMPLE_K) / f64::from(MANDELBROT_ITEMS)
    );
    println!();
    println!(
        "Sampled kernels are integer and fixed-point arithmetic and SHA-256, bit-identical on every backend: an honest output never fails a sample, and outputs compared by hash agree (0 false accusations by construction, not measured)."
    );
}

/// A liar that fakes 1 % of its runs of every kernel.
const ONE_PERCENT: [f64; 4] = [0.01; 4];
/// A liar that fakes 10 % of its PTX runs (1 % of its runs) and nothing else.
const PTX_ONLY: [f64; 4] = [0.0, 0.0, 0.0, 0.1];

/// The target rows: a device that cheats on 1 % of its jobs.
pub fn print_targets(g: &Grid) {
    println!(
        "| policy | 1 % cheater caught within {WINDOW} jobs, at 1 % / 5 % / 20 % liars | pooled, 95 % interval | closed form | runs per job | extra device compute | extra device energy | controller CPU per job (share of a core) | false accusations per 10,000 honest jobs | target met |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (p, policy) in g.policies.iter().enumerate() {
        let s: Vec<&Summary> = LIAR_SHARES
            .iter()
            .map(|&x| g.get(p, LiarKind::OnePercentOfJobs, x))
            .collect();
        let caught: usize = s.iter().map(|x| x.window_caught).sum();
        let n = s.iter().map(|x| x.window_liars).sum::<usize>().max(1) as f64;
        let pooled = caught as f64 / n;
        let half = 1.96 * (pooled * (1.0 - pooled) / n).sqrt();
        let closed = caught_within(policy, ONE_PERCENT, 0, WINDOW);
        // Detection is judged by the closed form: the simulation agrees with it within its
        // interval, which is wider than the margins around 99 % here.
        let detect = closed >= 0.99;
        let cost = s.iter().all(|x| x.extra_compute_pct <= 3.0);
        let honest = s.iter().all(|x| x.false_per_10k_honest <= 1.0);
        let mut why = Vec::new();
        if !detect {
            why.push("detection");
        }
        if !cost {
            why.push("cost");
        }
        if !honest {
            why.push("false accusations");
        }
        let met = if why.is_empty() {
            "yes".to_string()
        } else {
            format!("no ({})", why.join(", "))
        };
        let mid = s[1];
        println!(
            "| {} | {} / {} / {} | {} ± {:.1} | {} | {:.3} | {:.2} % | {:.1} kWh a day | {:.2} ms ({:.3} %) | {:.2} | {met} |",
            policy.name,
            pct(s[0].within_window),
            pct(s[1].within_window),
            pct(s[2].within_window),
            pct(pooled),
            100.0 * half,
            pct2(closed),
            mid.runs_per_job,
            mid.extra_compute_pct,
            mid.extra_kwh_per_day,
            mid.controller_ms_per_job,
            mid.controller_core_pct,
            mid.false_per_10k_honest,
        );
    }
}

/// A share as a percentage with two decimals (closed forms near the 99 % line).
fn pct2(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// The other two 1 % cheaters: honest until trusted, and the one that cheats only on PTX.
pub fn print_hard_cheaters(g: &Grid) {
    println!(
        "| policy (5 % liars) | honest {TRUSTED_AFTER}, then 1 %: caught within {WINDOW} | closed form | 1 % of jobs, PTX only: caught within {WINDOW} | closed form | by the end | its wrong results paid per 10,000 jobs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (p, policy) in g.policies.iter().enumerate() {
        let t = g.get(p, LiarKind::TrustedThenOnePercent, 0.05);
        let x = g.get(p, LiarKind::OnePercentPtxOnly, 0.05);
        let closed_t = caught_within(policy, ONE_PERCENT, TRUSTED_AFTER, WINDOW);
        let closed_x = caught_within(policy, PTX_ONLY, 0, WINDOW);
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            policy.name,
            pct(t.within_window),
            pct2(closed_t),
            pct(x.within_window),
            pct2(closed_x),
            pct(x.by_end),
            x.wrong_per_10k,
        );
    }
}

/// The least PTX spot rate with which `auto` catches each 1 % cheater within the window
/// with 99 % probability (closed form), and what that rate costs.
pub fn print_ptx_rate() {
    println!(
        "| 1 % cheater | least PTX spot rate in auto for 99 % within {WINDOW} jobs (closed form) | its extra device compute (PTX: 10 % of jobs) |"
    );
    println!("|---|---|---|");
    for (kind, fake, honest) in [
        (LiarKind::OnePercentOfJobs, ONE_PERCENT, 0),
        (LiarKind::TrustedThenOnePercent, ONE_PERCENT, TRUSTED_AFTER),
        (LiarKind::OnePercentPtxOnly, PTX_ONLY, 0),
    ] {
        let at = |s: f64| caught_within(&auto_with_ptx_spot(s), fake, honest, WINDOW);
        if at(1.0) < 0.99 {
            println!(
                "| {} | none: {} even at 100 % | - |",
                kind.name(),
                pct2(at(1.0))
            );
            continue;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if at(mid) >= 0.99 { hi = mid } else { lo = mid }
        }
        println!(
            "| {} | {:.1} % | {:.2} % |",
            kind.name(),
            100.0 * hi,
            100.0 * 0.1 * hi
        );
    }
}

/// Every liar kind at one share: detection within the window and the median time.
pub fn print_kinds(g: &Grid, share: f64) {
    let head: Vec<&str> = LIAR_KINDS.iter().map(|k| k.name()).collect();
    println!(
        "| policy ({:.0} % liars): caught within {WINDOW} jobs · median jobs to detection | {} |",
        share * 100.0,
        head.join(" | ")
    );
    println!("|---|{}", "---|".repeat(LIAR_KINDS.len()));
    for (p, policy) in g.policies.iter().enumerate() {
        let cells: Vec<String> = LIAR_KINDS
            .iter()
            .map(|&k| {
                let s = g.get(p, k, share);
                let median = s.median.map_or("never".into(), |m| m.to_string());
                format!("{} · {median}", pct(s.within_window))
            })
            .collect();
        println!("| {} | {} |", policy.name, cells.join(" | "));
    }
}

/// Wrong results paid for per 10,000 jobs, every liar kind at one share.
pub fn print_wrong(g: &Grid, share: f64) {
    let head: Vec<&str> = LIAR_KINDS.iter().map(|k| k.name()).collect();
    println!(
        "| policy ({:.0} % liars): wrong results paid per 10,000 jobs | {} |",
        share * 100.0,
        head.join(" | ")
    );
    println!("|---|{}", "---|".repeat(LIAR_KINDS.len()));
    for (p, policy) in g.policies.iter().enumerate() {
        let cells: Vec<String> = LIAR_KINDS
            .iter()
            .map(|&k| format!("{:.2}", g.get(p, k, share).wrong_per_10k))
            .collect();
        println!("| {} | {} |", policy.name, cells.join(" | "));
    }
}

/// Jobs that two or more liars ran (and could have agreed on, had they colluded): at the
/// start, when every liar is still at work, and measured over the run with the 1 %
/// cheaters, whose share falls as they are caught.
pub fn print_pairs(g: &Grid) {
    let find = |name: &str| g.policies.iter().position(|p| p.name == name);
    println!(
        "| liar share | redundant:2: jobs per 10,000 both run by liars, at the start (p^2) / measured over the run | redundant:3: two or three liars (3p^2 - 2p^3) / measured | spot:25%: original and checker both liars (p^2 / 4) / measured |"
    );
    println!("|---|---|---|---|");
    for share in LIAR_SHARES {
        let measured = |name: &str| {
            find(name).map_or("-".into(), |p| {
                format!(
                    "{:.1}",
                    g.get(p, LiarKind::OnePercentOfJobs, share).pairs_per_10k
                )
            })
        };
        let p = share;
        println!(
            "| {:.0} % | {:.1} / {} | {:.1} / {} | {:.1} / {} |",
            share * 100.0,
            1e4 * p * p,
            measured("redundant:2"),
            1e4 * (3.0 * p * p - 2.0 * p * p * p),
            measured("redundant:3"),
            1e4 * 0.25 * p * p,
            measured("spot:25%"),
        );
    }
}

/// Every case, one row each.
pub fn print_all(g: &Grid) {
    println!(
        "| policy | liar kind | liars | liars simulated | caught within {WINDOW} | by the end | jobs to detection, median / p99 (time at the job rate) | wrong paid per 10,000 jobs | false accusations per 10,000 honest jobs | extra device compute |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (case, s) in &g.cases {
        println!(
            "| {} | {} | {:.0} % | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} % |",
            g.policies[case.policy].name,
            case.kind.name(),
            case.share * 100.0,
            s.liars,
            pct(s.within_window),
            pct(s.by_end),
            s.time_to_detection(),
            s.wrong_per_10k,
            s.false_per_10k_honest,
            s.extra_compute_pct,
        );
    }
}
