//! What validating a matrix product costs the controller, against recomputing it: Freivalds'
//! check (30 rounds, `fleet_controller::validate`) and a plain f32 product on the
//! controller's CPU, for square products of growing size. Prints a table for BENCHMARKS.md.
//!
//! `cargo run --release -p fleet-controller --example freivalds_cost`

use std::time::Instant;

use fleet_controller::validate::{FREIVALDS_ROUNDS, freivalds};

fn main() {
    println!("| n (n x n by n x n) | Freivalds, 30 rounds | f32 product, one core | ratio |");
    println!("|---|---|---|---|");
    for n in [128usize, 256, 512, 1024] {
        let a: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..n * n)
            .map(|i| ((i * 104_729) % 997) as f32 / 498.0 - 1.0)
            .collect();
        // The product, i-p-j order (what a CPU backend would do), timed.
        let t0 = Instant::now();
        let mut c = vec![0f32; n * n];
        for i in 0..n {
            for p in 0..n {
                let x = a[i * n + p];
                let row = &b[p * n..(p + 1) * n];
                for (cj, bj) in c[i * n..(i + 1) * n].iter_mut().zip(row) {
                    *cj += x * bj;
                }
            }
        }
        let product = t0.elapsed();
        let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (ab, bb, cb) = (le(&a), le(&b), le(&c));
        let t1 = Instant::now();
        freivalds((n, n, n), &ab, &bb, &cb, FREIVALDS_ROUNDS, 42).expect("an honest product");
        let check = t1.elapsed();
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.2} |",
            check.as_secs_f64() * 1e3,
            product.as_secs_f64() * 1e3,
            check.as_secs_f64() / product.as_secs_f64()
        );
    }
}
