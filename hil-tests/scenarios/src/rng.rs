//! The scenarios' seeded choices: the same seed gives the same faults at the same steps, so
//! a failing run can be replayed. (SplitMix64, the outbox campaign's generator.)

use heliostat_agent::outbox::power_cut::Mix;

/// A seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(Mix);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(Mix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.range(lo, hi)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_ranges_hold() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.range(10, 20)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.range(10, 20)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (10..20).contains(x)));
        assert!(xs.iter().collect::<std::collections::BTreeSet<_>>().len() > 5);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
