//! What the controller's own checks cost it, measured on this machine (one core): Freivalds'
//! check of a product at each simulated size (`fleet_controller::validate::freivalds`), and
//! recomputing one sampled item of a `sha256_batch` (64-byte items, as in the GPU
//! benchmark) or of a `mandelbrot` tile (1,000 iterations at most, the tile over the set, so
//! many pixels run all of them: `attest::mandelbrot::escape_count`, the controller's own
//! definition). The fleet simulation charges these per check.

use std::hint::black_box;
use std::time::Instant;

use attest::mandelbrot::{FIXED_ONE, escape_count};
use fleet_controller::validate::{FREIVALDS_ROUNDS, freivalds};
use sha2::{Digest, Sha256};

use crate::model::{Kernel, MANDELBROT_ITEMS, MATMUL_N, SAMPLE_K};
use crate::rng::Rng;

/// Bytes of one `sha256_batch` item assumed.
pub const SHA_ITEM_BYTES: usize = 64;
/// Iteration limit of the `mandelbrot` jobs assumed.
pub const MANDELBROT_MAX_ITER: u32 = 1_000;

/// Controller CPU time per check, ms (one core).
#[derive(Clone, Debug)]
pub struct CheckCost {
    /// Freivalds' check ([`FREIVALDS_ROUNDS`] rounds) per size in [`MATMUL_N`].
    pub freivalds_ms: [f64; 3],
    /// One sampled `sha256_batch` item recomputed.
    pub sha_item_ms: f64,
    /// One sampled `mandelbrot` pixel recomputed.
    pub mandelbrot_item_ms: f64,
}

impl CheckCost {
    /// One sampled item of `kernel` (0 for kernels not sampled).
    pub fn item_ms(&self, kernel: Kernel) -> f64 {
        match kernel {
            Kernel::Sha256 => self.sha_item_ms,
            Kernel::Mandelbrot => self.mandelbrot_item_ms,
            Kernel::Matmul | Kernel::Ptx => 0.0,
        }
    }
}

/// Measures the checks here.
pub fn measure(seed: u64) -> CheckCost {
    let mut rng = Rng::for_parts(seed, 0xc057, 0);
    let mut freivalds_ms = [0.0; 3];
    for (slot, &n) in freivalds_ms.iter_mut().zip(MATMUL_N.iter()) {
        // C = A·I = A: an exact product, so the check runs all its rows (it stops at the
        // first wrong one); its work does not depend on the values.
        let a: Vec<f32> = (0..n * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
        let mut b = vec![0f32; n * n];
        (0..n).for_each(|i| b[i * n + i] = 1.0);
        let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (ab, bb) = (le(&a), le(&b));
        // Best of two: the machine is shared with builds.
        *slot = (0..2)
            .map(|s| {
                let t = Instant::now();
                freivalds((n, n, n), &ab, &bb, &ab, FREIVALDS_ROUNDS, s)
                    .expect("an exact product passes");
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
    }

    let items: Vec<[u8; SHA_ITEM_BYTES]> = (0..SAMPLE_K)
        .map(|_| std::array::from_fn(|_| rng.next_u64() as u8))
        .collect();
    let reps = 2_000;
    let t = Instant::now();
    for _ in 0..reps {
        for item in &items {
            black_box(Sha256::digest(black_box(item)));
        }
    }
    let sha_item_ms = t.elapsed().as_secs_f64() * 1e3 / (reps * items.len()) as f64;

    // A 1024 x 1024 tile over [-2, 0.5] x [-1.25, 1.25]: pixels drawn at random.
    let side = (MANDELBROT_ITEMS as f64).sqrt() as u64;
    let step = 2.5 / side as f64;
    let fixed = |v: f64| (v * FIXED_ONE as f64) as i64;
    let pixels = 64 * 300;
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..pixels {
        let (col, row) = (rng.next_u64() % side, rng.next_u64() % side);
        let (cx, cy) = (-2.0 + col as f64 * step, -1.25 + row as f64 * step);
        sum += u64::from(escape_count(fixed(cx), fixed(cy), MANDELBROT_MAX_ITER));
    }
    black_box(sum);
    let mandelbrot_item_ms = t.elapsed().as_secs_f64() * 1e3 / pixels as f64;
    CheckCost {
        freivalds_ms,
        sha_item_ms,
        mandelbrot_item_ms,
    }
}
