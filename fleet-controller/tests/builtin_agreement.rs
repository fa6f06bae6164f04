//! The controller accepts a built-in job exactly when the agent would run it, with the
//! same sizes: the controller's rules (`jobs/workload.rs`) mirror the agent's
//! (`agent/src/jobs/kernel.rs`), and this holds them together over edge values and a
//! seeded sweep. (The agent is a test-only dependency: the controller never imports it.)

use attest::msg::Param;
use fleet_controller::jobs::workload::builtin_shape;
use heliostat_agent::jobs::Builtin;

const ONE: i64 = 1 << 56;

/// Values where the rules turn: zeros, ones, the limits and one past them.
const EDGES: &[i64] = &[
    i64::MIN,
    -(4 * ONE) - 1,
    -(4 * ONE),
    -2 * ONE,
    -1,
    0,
    1,
    2,
    3,
    16,
    64,
    4096,
    65_535,
    65_536,
    65_537,
    1 << 20,
    (1 << 20) + 1,
    (1 << 23) - 1,
    1 << 23,
    (1 << 23) + 1,
    (1 << 30) - 1,
    1 << 30,
    (1 << 30) + 1,
    ONE / 1024,
    ONE,
    4 * ONE,
    4 * ONE + 1,
    i64::MAX,
];

fn params(names: &[&str], values: &[i64]) -> Vec<Param> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| Param {
            name: (*n).into(),
            value: *v,
        })
        .collect()
}

/// Checks one workload; returns whether it was accepted.
fn agree(kernel: &str, params: &[Param]) -> bool {
    let controller = builtin_shape(kernel, params);
    let agent = Builtin::parse(kernel, params);
    match (&controller, &agent) {
        (Ok(c), Ok(a)) => {
            assert_eq!(c.input_sizes, a.input_sizes(), "{kernel} {params:?}");
            assert_eq!(c.output_size, a.output_size(), "{kernel} {params:?}");
            true
        }
        (Err(_), Err(_)) => false,
        _ => panic!("{kernel} {params:?}: controller {controller:?}, agent {agent:?}"),
    }
}

/// A small deterministic generator (xorshift64*), so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn value(&mut self) -> i64 {
        let edge = EDGES[(self.next() % EDGES.len() as u64) as usize];
        match self.next() % 4 {
            0 => edge,
            1 => edge.saturating_add((self.next() % 5) as i64 - 2),
            2 => (self.next() % 70_000) as i64,
            _ => (self.next() as i64) >> (self.next() % 64),
        }
    }
}

#[test]
fn the_controller_accepts_a_built_in_exactly_when_the_agent_would_with_the_same_sizes() {
    let kernels: [(&str, &[&str]); 3] = [
        ("sha256_batch", &["count", "item_len"]),
        ("matmul_f32", &["m", "n", "k"]),
        (
            "mandelbrot",
            &["width", "height", "x0", "y0", "step", "max_iter"],
        ),
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for (kernel, names) in kernels {
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..20_000 {
            let values: Vec<i64> = names.iter().map(|_| rng.value()).collect();
            if agree(kernel, &params(names, &values)) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // The sweep reaches both sides of the rules for every kernel.
        assert!(
            accepted > 100 && refused > 100,
            "{kernel}: {accepted} accepted, {refused} refused"
        );
    }
    // Names and shapes of parameters: missing, unknown, repeated, unknown kernel.
    for (kernel, ps) in [
        ("sha256_batch", params(&["count"], &[1])),
        (
            "sha256_batch",
            params(&["count", "item_len", "extra"], &[1, 1, 1]),
        ),
        (
            "sha256_batch",
            params(&["count", "count", "item_len"], &[1, 1, 1]),
        ),
        ("matmul_f32", params(&["m", "n", "k"], &[2, 3, 4])),
        ("sha256_batch", params(&["item_len", "count"], &[64, 10])),
        ("bitcoin", vec![]),
        ("", vec![]),
    ] {
        agree(kernel, &ps);
    }
}
