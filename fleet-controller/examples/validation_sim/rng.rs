//! The simulation's seeded randomness: SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014), written out here so that a run is
//! reproducible from `--seed` alone and the example needs no dependency the crate lacks.

/// A SplitMix64 generator: 64 bits of state, one add and one mix per draw.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one (seed, a, b) triple, so that what a stream is for, not the
    /// order the streams are made in (or the thread that runs them), fixes its numbers.
    pub fn for_parts(seed: u64, a: u64, b: u64) -> Rng {
        Rng(mix(seed ^ mix(a.wrapping_add(mix(b ^ 0x5bd1_e995)))))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1), 53 bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n > 0), by the multiply-high reduction of 32 random bits: no
    /// division, and a bias below n / 2^32, far under anything this simulation resolves.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// SplitMix64's output mix (a variant of MurmurHash3's 64-bit finaliser).
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
