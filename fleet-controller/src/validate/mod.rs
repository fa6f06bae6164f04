//! Checking results the controller did not compute (sans-IO).
//!
//! **Freivalds' check** of a matrix product C = A·B (`matmul_f32`): instead of computing
//! A·B again (m·k·n products), pick a random vector r of ±1 and compare C·r with A·(B·r)
//! (m·k + k·n + m·n products). A wrong C passes one round with probability at most 1/2, so
//! [`FREIVALDS_ROUNDS`] rounds with fresh vectors let a wrong result through with
//! probability at most 2⁻ʳᵒᵘⁿᵈˢ. The device cannot aim its error at the check: r is drawn
//! by the controller after the outputs are in.
//!
//! **Tolerance for `f32`.** The device computes each c_ij as a sum of k products in `f32`,
//! in any order, with or without fused multiply-add; its error is at most γ_k·S_ij with
//! S_ij = Σ_p |a_ip·b_pj| and γ_k = k·u/(1 − k·u), u = 2⁻²⁴ (Higham, *Accuracy and
//! Stability of Numerical Algorithms*, §3.1: the bound holds for every summation order).
//! Row i of C·r then differs from the exact (A·B·r)_i by at most γ_k·T_i, where
//! T_i = Σ_j S_ij = Σ_p |a_ip|·Σ_j |b_pj| (r_j = ±1). The controller computes both sides in
//! `f64`, whose own rounding adds at most (n + k + 2)·2⁻⁵³ of the magnitudes summed; and
//! subnormal `f32` products may each lose up to 2⁻¹⁴⁹ (n·k of them per row). The tolerance
//! of row i is the sum of the three. An element off by more than it is caught with
//! probability at least 1/2 per round whatever the others do (fix every r_j but its own:
//! at most one of its two signs lands the row's difference inside the tolerance). Errors
//! within it are rounding, not cheating, and pass.
//!
//! A product with a non-finite input or output cannot be bounded this way: it is reported
//! as unverifiable, not as wrong.
//!
//! **Sampled recomputation** of per-item kernels (`sha256_batch`, `mandelbrot`): see
//! [`sample`].

mod sample;

pub use sample::{MandelbrotFrame, SAMPLE_CHECKS, SampleError, sample_mandelbrot, sample_sha256};

/// Little-endian `f32`s from bytes (a trailing partial value is ignored).
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Rounds of Freivalds' check: a wrong product passes with probability at most 2⁻³⁰.
pub const FREIVALDS_ROUNDS: u32 = 30;

/// What Freivalds' check found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FreivaldsError {
    /// A buffer is not the product's size.
    #[error("a buffer is {got} bytes; the product needs {expected}")]
    Size {
        /// Its size.
        got: usize,
        /// What it should be.
        expected: usize,
    },
    /// Some input or output is NaN or infinite: no bound applies.
    #[error("a non-finite value in {0}: the product cannot be checked by Freivalds' method")]
    Unverifiable(&'static str),
    /// Row `row` of C·r is off by more than the tolerance.
    #[error(
        "round {round}: row {row} of C·r is {got:e}, A·(B·r) is {expected:e}; they may differ by {tolerance:e}"
    )]
    Wrong {
        /// The round that caught it.
        round: u32,
        /// The row.
        row: u32,
        /// (C·r)_row.
        got: f64,
        /// (A·(B·r))_row.
        expected: f64,
        /// The allowed difference.
        tolerance: f64,
    },
}

impl FreivaldsError {
    /// Whether the result was found wrong (not merely unverifiable or malformed).
    pub fn is_wrong(&self) -> bool {
        matches!(
            self,
            FreivaldsError::Wrong { .. } | FreivaldsError::Size { .. }
        )
    }
}

/// A small, fast generator for the ±1 vectors (SplitMix64): the seed comes from the
/// operating system, so the device cannot know the vectors.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Checks C (m × n) = A (m × k) · B (k × n), all row-major `f32` little-endian bytes, with
/// `rounds` rounds of ±1 vectors drawn from `seed`.
pub fn freivalds(
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    b: &[u8],
    c: &[u8],
    rounds: u32,
    seed: u64,
) -> Result<(), FreivaldsError> {
    for (got, elems) in [(a.len(), m * k), (b.len(), k * n), (c.len(), m * n)] {
        if got != 4 * elems {
            return Err(FreivaldsError::Size {
                got,
                expected: 4 * elems,
            });
        }
    }
    let (a, b, c) = (f32s(a), f32s(b), f32s(c));
    for (what, v) in [("A", &a), ("B", &b), ("C", &c)] {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(FreivaldsError::Unverifiable(what));
        }
    }
    let u = f64::from(f32::EPSILON) / 2.0;
    let ku = k as f64 * u;
    let gamma = ku / (1.0 - ku);
    let u64_ = f64::EPSILON / 2.0;
    let slack = (n + k + 2) as f64 * u64_;
    let subnormal = (n * k) as f64 * 2f64.powi(-149);
    // T_i = Σ_p |a_ip| · Σ_j |b_pj|, and Σ_j |c_ij|: the magnitudes the bounds scale with.
    let b_abs_rows: Vec<f64> = (0..k)
        .map(|p| {
            b[p * n..(p + 1) * n]
                .iter()
                .map(|x| f64::from(x.abs()))
                .sum()
        })
        .collect();
    let t: Vec<f64> = (0..m)
        .map(|i| {
            (0..k)
                .map(|p| f64::from(a[i * k + p].abs()) * b_abs_rows[p])
                .sum()
        })
        .collect();
    let c_abs: Vec<f64> = (0..m)
        .map(|i| {
            c[i * n..(i + 1) * n]
                .iter()
                .map(|x| f64::from(x.abs()))
                .sum()
        })
        .collect();
    // All rounds at once: R is n × rounds (row-major), so every inner loop runs along the
    // rounds, contiguous and free of a sum's order (the compiler vectorises it).
    let t_r = rounds as usize;
    let mut rng = SplitMix(seed);
    let r: Vec<f64> = (0..n * t_r)
        .map(|_| if rng.next() & 1 == 0 { 1.0 } else { -1.0 })
        .collect();
    // B·R (k × rounds), A·(B·R) and C·R (m × rounds).
    let mut br = vec![0f64; k * t_r];
    for p in 0..k {
        let out = &mut br[p * t_r..(p + 1) * t_r];
        for (j, x) in b[p * n..(p + 1) * n].iter().enumerate() {
            let x = f64::from(*x);
            for (o, s) in out.iter_mut().zip(&r[j * t_r..(j + 1) * t_r]) {
                *o += x * s;
            }
        }
    }
    let mut expected = vec![0f64; t_r];
    let mut got = vec![0f64; t_r];
    for i in 0..m {
        expected.iter_mut().for_each(|v| *v = 0.0);
        got.iter_mut().for_each(|v| *v = 0.0);
        for (p, x) in a[i * k..(i + 1) * k].iter().enumerate() {
            let x = f64::from(*x);
            for (o, y) in expected.iter_mut().zip(&br[p * t_r..(p + 1) * t_r]) {
                *o += x * y;
            }
        }
        for (j, x) in c[i * n..(i + 1) * n].iter().enumerate() {
            let x = f64::from(*x);
            for (o, s) in got.iter_mut().zip(&r[j * t_r..(j + 1) * t_r]) {
                *o += x * s;
            }
        }
        let tolerance = gamma * t[i] + slack * (t[i] + c_abs[i]) + subnormal;
        if let Some(round) = (0..t_r).find(|&q| (got[q] - expected[q]).abs() > tolerance) {
            return Err(FreivaldsError::Wrong {
                round: round as u32,
                row: i as u32,
                got: got[round],
                expected: expected[round],
                tolerance,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A (m × k), B (k × n) of varied magnitudes, and C = A·B in `f32` summed in the order
    /// `order` (0: forward, 1: backward, 2: pairwise halves) as different GPUs would.
    fn case(m: usize, n: usize, k: usize, order: u8) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 1e-3)
            .collect();
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let terms: Vec<f32> = (0..k).map(|p| a[i * k + p] * b[p * n + j]).collect();
                c[i * n + j] = match order {
                    0 => terms.iter().fold(0.0, |s, x| s + x),
                    1 => terms.iter().rev().fold(0.0, |s, x| s + x),
                    _ => {
                        fn pair(t: &[f32]) -> f32 {
                            match t.len() {
                                0 => 0.0,
                                1 => t[0],
                                l => pair(&t[..l / 2]) + pair(&t[l / 2..]),
                            }
                        }
                        pair(&terms)
                    }
                };
            }
        }
        (a, b, c)
    }

    #[test]
    fn an_honest_product_passes_whatever_its_summation_order() {
        for order in 0..3 {
            let (m, n, k) = (17, 23, 301);
            let (a, b, c) = case(m, n, k, order);
            for seed in 0..20 {
                freivalds(
                    (m, n, k),
                    &bytes(&a),
                    &bytes(&b),
                    &bytes(&c),
                    FREIVALDS_ROUNDS,
                    seed,
                )
                .unwrap_or_else(|e| panic!("order {order} seed {seed}: {e}"));
            }
        }
    }

    #[test]
    fn a_product_with_one_element_off_is_caught_in_every_seed() {
        let (m, n, k) = (9, 11, 64);
        let (a, b, mut c) = case(m, n, k, 0);
        // Off by far less than the element itself, far more than rounding.
        c[4 * n + 7] += 0.05;
        for seed in 0..50 {
            let e = freivalds((m, n, k), &bytes(&a), &bytes(&b), &bytes(&c), 30, seed).unwrap_err();
            assert!(e.is_wrong(), "{e}");
            assert!(matches!(e, FreivaldsError::Wrong { row: 4, .. }), "{e}");
        }
    }

    #[test]
    fn wrong_rows_that_cancel_in_one_round_are_caught_in_the_next() {
        // Two errors of equal size in a row: half of all sign vectors cancel them, but not
        // thirty in a row.
        let (m, n, k) = (3, 4, 8);
        let (a, b, mut c) = case(m, n, k, 0);
        c[n] += 1.0;
        c[n + 1] += 1.0;
        for seed in 0..200 {
            assert!(freivalds((m, n, k), &bytes(&a), &bytes(&b), &bytes(&c), 30, seed).is_err());
        }
        // With a single round some seeds do let it through: the check is probabilistic.
        let passed = (0..200)
            .filter(|s| freivalds((m, n, k), &bytes(&a), &bytes(&b), &bytes(&c), 1, *s).is_ok())
            .count();
        assert!(
            (50..150).contains(&passed),
            "{passed} of 200 passed one round"
        );
    }

    #[test]
    fn sizes_and_non_finite_values_are_named() {
        let (a, b, c) = case(2, 2, 2, 0);
        assert!(matches!(
            freivalds((2, 2, 2), &bytes(&a), &bytes(&b), &bytes(&c[..3]), 1, 0),
            Err(FreivaldsError::Size {
                got: 12,
                expected: 16
            })
        ));
        let mut c2 = c.clone();
        c2[0] = f32::NAN;
        let e = freivalds((2, 2, 2), &bytes(&a), &bytes(&b), &bytes(&c2), 1, 0).unwrap_err();
        assert_eq!(e, FreivaldsError::Unverifiable("C"));
        assert!(!e.is_wrong());
    }
}
