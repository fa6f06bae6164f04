//! The figures of each run and the targets, printed as Markdown tables.

use crate::run::Outcome;

/// One policy's figures.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    pub refused: usize,
    pub accepted: usize,
    pub completed: usize,
    /// Renewable share of accepted flexible jobs' energy, and of all accepted jobs'.
    pub renewable_flexible: f64,
    pub renewable_all: f64,
    pub grams_per_job: f64,
    pub grams_per_kwh: f64,
    pub misses_pct: f64,
    pub misses: usize,
    /// Of those, after a device failed the job (refused it, fell silent, fell behind).
    pub misses_after_setback: usize,
    /// Accepted, then refused because the carbon limit could no longer be met.
    pub dropped_on_carbon: usize,
    pub mean_wait_h: f64,
    pub decision_mean_us: f64,
    pub decision_p99_us: f64,
    pub decisions: usize,
    pub revocations: u32,
    pub admission_refusals: u32,
    pub progress_misses: u32,
}

/// The figures of one run.
pub fn row(o: &Outcome) -> Row {
    let accepted: Vec<_> = o
        .jobs
        .iter()
        .filter(|j| j.decided && !j.refused_at_once)
        .collect();
    let share = |flexible_only: bool| {
        let (mut ren, mut all) = (0.0, 0.0);
        for j in accepted.iter().filter(|j| j.flexible || !flexible_only) {
            ren += j.sun_wh + j.battery_wh;
            all += j.sun_wh + j.battery_wh + j.grid_wh;
        }
        if all > 0.0 { ren / all } else { 0.0 }
    };
    let completed = accepted.iter().filter(|j| j.finished.is_some()).count();
    let energy_kwh: f64 = accepted
        .iter()
        .map(|j| (j.sun_wh + j.battery_wh + j.grid_wh) / 1e3)
        .sum();
    let grams: f64 = accepted.iter().map(|j| j.co2e_mg / 1e3).sum();
    // A deadline miss: finished late, or never (refused later for its deadline, or lost).
    // Jobs refused later because their carbon limit could no longer be met are counted
    // apart: no deadline policy would have run them.
    let missed = accepted
        .iter()
        .filter(|j| !j.dropped_on_carbon && j.finished.is_none_or(|f| f > j.deadline))
        .count();
    let dropped = accepted.iter().filter(|j| j.dropped_on_carbon).count();
    let missed_after_setback = accepted
        .iter()
        .filter(|j| !j.dropped_on_carbon && j.finished.is_none_or(|f| f > j.deadline))
        .filter(|j| j.setbacks > 0)
        .count();
    let waits: Vec<f64> = accepted
        .iter()
        .filter_map(|j| j.first_start.map(|s| (s - j.submitted) as f64 / 3.6e6))
        .collect();
    let mut per = o.per_decision_s.clone();
    per.sort_by(f64::total_cmp);
    let p99 = per
        .get((per.len() * 99 / 100).min(per.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Row {
        name: o.name,
        refused: o.jobs.iter().filter(|j| j.refused_at_once).count(),
        accepted: accepted.len(),
        completed,
        renewable_flexible: share(true),
        renewable_all: share(false),
        grams_per_job: grams / completed.max(1) as f64,
        grams_per_kwh: grams / energy_kwh.max(1e-9),
        misses_pct: 100.0 * missed as f64 / accepted.len().max(1) as f64,
        misses: missed,
        misses_after_setback: missed_after_setback,
        dropped_on_carbon: dropped,
        mean_wait_h: waits.iter().sum::<f64>() / waits.len().max(1) as f64,
        decision_mean_us: 1e6 * o.scheduler_s / per.len().max(1) as f64,
        decision_p99_us: 1e6 * p99,
        decisions: per.len(),
        revocations: o.revocations,
        admission_refusals: o.admission_refusals,
        progress_misses: o.progress_misses,
    }
}

/// Prints the figures table.
pub fn print_table(rows: &[Row]) {
    println!(
        "| policy | renewable, flexible jobs | renewable, all jobs | g CO2e per job | g CO2e per kWh | deadline misses | mean wait | per decision, mean | per decision, p99 | accepted / refused / completed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.2} % | {:.2} % | {:.2} | {:.1} | {:.2} % | {:.2} h | {:.0} µs | {:.0} µs | {} / {} / {} |",
            r.name,
            100.0 * r.renewable_flexible,
            100.0 * r.renewable_all,
            r.grams_per_job,
            r.grams_per_kwh,
            r.misses_pct,
            r.mean_wait_h,
            r.decision_mean_us,
            r.decision_p99_us,
            r.accepted,
            r.refused,
            r.completed
        );
    }
    println!();
    println!(
        "| policy | deadline misses (jobs; after a device failed the job) | dropped on carbon limit after acceptance | decisions | revocations (silent past grace) | admission refusals | progress misses |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} |",
            r.name,
            r.misses,
            r.misses_after_setback,
            r.dropped_on_carbon,
            r.decisions,
            r.revocations,
            r.admission_refusals,
            r.progress_misses
        );
    }
}

/// Prints the targets against the carbon-aware run (`ours`).
pub fn print_targets(ours: &Row, oracle: &Row, fifo: &Row) {
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!("| target | figure | met |");
    println!("|---|---|---|");
    println!(
        "| >= 98 % of accepted flexible job energy from sun or battery | {:.2} % | {} |",
        100.0 * ours.renewable_flexible,
        yes(ours.renewable_flexible >= 0.98)
    );
    let vs_oracle = ours.grams_per_job / oracle.grams_per_job.max(1e-12) - 1.0;
    println!(
        "| within 5 % of the oracle's CO2e per job | {:.2} g against {:.2} g ({:+.1} %) | {} |",
        ours.grams_per_job,
        oracle.grams_per_job,
        100.0 * vs_oracle,
        yes(vs_oracle <= 0.05)
    );
    let vs_fifo = 1.0 - ours.grams_per_job / fifo.grams_per_job.max(1e-12);
    println!(
        "| >= 60 % less CO2e per job than FIFO | {:.1} % less ({:.2} g against {:.2} g) | {} |",
        100.0 * vs_fifo,
        ours.grams_per_job,
        fifo.grams_per_job,
        yes(vs_fifo >= 0.6)
    );
    println!(
        "| <= 2 % deadline misses, and no more than FIFO | {:.2} % (FIFO {:.2} %) | {} |",
        ours.misses_pct,
        fifo.misses_pct,
        yes(ours.misses_pct <= 2.0 && ours.misses_pct <= fifo.misses_pct)
    );
    println!(
        "| < 1 ms per decision at 1,000 devices | mean {:.0} µs, p99 {:.0} µs | {} |",
        ours.decision_mean_us,
        ours.decision_p99_us,
        yes(ours.decision_p99_us < 1_000.0)
    );
}
