//! False accusations by Freivalds' check, measured: honest `f32` products of random seeded
//! matrices (sizes 64-256 in each dimension, entries of mixed sign and magnitude, 10^-3 to
//! 10^3), each computed in several summation orders as different devices would, all checked
//! with the controller's own `fleet_controller::validate::freivalds`. An honest product it
//! rejects is a false accusation. Also counted: how often two honest orders give the same
//! bits (what comparing outputs by hash would need), and, as a control, that a product
//! with one element zeroed is caught.

use std::time::Instant;

use fleet_controller::validate::{FREIVALDS_ROUNDS, freivalds};

use crate::rng::Rng;

/// The summation orders of an honest product, all accumulating in `f32`.
pub const ORDERS: [&str; 4] = [
    "naive (k ascending)",
    "k-blocked (blocks of 32, partial sums added)",
    "reversed (k descending)",
    "fused multiply-add (k ascending, one rounding a step)",
];

/// What the trial found.
#[derive(Clone, Debug)]
pub struct HonestTrial {
    pub trials: usize,
    /// Honest products rejected, per order in [`ORDERS`].
    pub rejected: [usize; 4],
    /// Products bit-identical to the naive order's, per order.
    pub bit_identical: [usize; 4],
    /// Products with one element zeroed that the check caught.
    pub control_caught: usize,
    pub seconds: f64,
}

impl HonestTrial {
    /// Honest checks in all.
    pub fn checks(&self) -> usize {
        self.trials * ORDERS.len()
    }

    /// False rejections in all.
    pub fn false_rejections(&self) -> usize {
        self.rejected.iter().sum()
    }
}

/// One order's product C (m x n) = A (m x k) · B (k x n), row-major. Rows are built in
/// i-p-j order, so each element's sum still runs over p in the order named.
fn product(order: usize, (m, n, k): (usize, usize, usize), a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    let mut part = vec![0f32; n];
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        let axpy = |acc: &mut [f32], p: usize| {
            let x = a[i * k + p];
            for (o, y) in acc.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *o += x * y;
            }
        };
        match order {
            0 => (0..k).for_each(|p| axpy(row, p)),
            1 => {
                for start in (0..k).step_by(32) {
                    part.iter_mut().for_each(|v| *v = 0.0);
                    (start..(start + 32).min(k)).for_each(|p| axpy(&mut part[..], p));
                    row.iter_mut().zip(&part).for_each(|(o, v)| *o += v);
                }
            }
            2 => (0..k).rev().for_each(|p| axpy(row, p)),
            _ => {
                // The product of two f32s is exact in f64; the sum is rounded to f32 once a
                // step, as a fused multiply-add does (up to a double rounding in f64 first,
                // 2^-53 relative: far below the check's tolerance).
                for p in 0..k {
                    let x = f64::from(a[i * k + p]);
                    for (o, y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *o = (x * f64::from(*y) + f64::from(*o)) as f32;
                    }
                }
            }
        }
    }
    c
}

/// A matrix of `len` entries: sign and magnitude (10^-3 to 10^3) at random.
fn mixed(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let v = 10f64.powf(rng.range(-3.0, 3.0));
            (if rng.chance(0.5) { v } else { -v }) as f32
        })
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What one product showed: rejected and bit-identical per order, and the control caught.
struct Outcome {
    rejected: [bool; 4],
    identical: [bool; 4],
    control_caught: bool,
}

/// Runs `trials` random products through every order and the check, on `threads` threads.
pub fn run(seed: u64, trials: usize, threads: usize) -> HonestTrial {
    let started = Instant::now();
    let threads = threads.max(1);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..trials)
                        .step_by(threads)
                        .map(|t| one(seed, t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a trial thread panicked"))
            .collect()
    });
    let mut out = HonestTrial {
        trials,
        rejected: [0; 4],
        bit_identical: [0; 4],
        control_caught: 0,
        seconds: 0.0,
    };
    for o in &outcomes {
        for i in 0..ORDERS.len() {
            out.rejected[i] += usize::from(o.rejected[i]);
            out.bit_identical[i] += usize::from(o.identical[i]);
        }
        out.control_caught += usize::from(o.control_caught);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

/// Trial `t`: its own matrices and vectors from (seed, t).
fn one(seed: u64, t: usize) -> Outcome {
    let mut rng = Rng::for_parts(seed, 0xf7e1, t as u64);
    let dims = (
        64 + rng.below(193),
        64 + rng.below(193),
        64 + rng.below(193),
    );
    let (m, n, k) = dims;
    let (a, b) = (mixed(&mut rng, m * k), mixed(&mut rng, k * n));
    let (ab, bb) = (bytes(&a), bytes(&b));
    let naive = product(0, dims, &a, &b);
    let mut out = Outcome {
        rejected: [false; 4],
        identical: [false; 4],
        control_caught: false,
    };
    for order in 0..ORDERS.len() {
        let c = if order == 0 {
            naive.clone()
        } else {
            product(order, dims, &a, &b)
        };
        out.identical[order] = c
            .iter()
            .zip(&naive)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        // The controller draws its vectors' seed after upload; any seed will do here.
        out.rejected[order] =
            freivalds(dims, &ab, &bb, &bytes(&c), FREIVALDS_ROUNDS, rng.next_u64()).is_err();
    }
    // Control: the largest element of a random row left out (a skipped output).
    let mut c = naive;
    let i = rng.below(m);
    let j = (0..n)
        .max_by(|&x, &y| c[i * n + x].abs().total_cmp(&c[i * n + y].abs()))
        .unwrap_or(0);
    c[i * n + j] = 0.0;
    let check = freivalds(dims, &ab, &bb, &bytes(&c), FREIVALDS_ROUNDS, rng.next_u64());
    out.control_caught = check.is_err_and(|e| e.is_wrong());
    out
}
