//! `matmul_f32`: C = A·B in `f32`, its parameters, its chunks (rows of C) and the tolerance
//! by which two backends' products are compared (see [`MatmulF32::compare`]).

use super::*;

impl MatmulF32 {
    /// C (m × n) = A (m × k) · B (k × n), validated as [`Builtin::parse`] does.
    pub fn new(m: i64, n: i64, k: i64) -> Result<Self, KernelError> {
        Self::parse(&[param("m", m), param("n", n), param("k", k)])
    }

    pub(super) fn parse(params: &[Param]) -> Result<Self, KernelError> {
        const K: &str = "matmul_f32";
        let p = Params::new(K, params, &["m", "n", "k"])?;
        let m = p.get("m", 1, MAX_DIM)? as u64;
        let n = p.get("n", 1, MAX_DIM)? as u64;
        let k = p.get("k", 1, MAX_DIM)? as u64;
        check_size(K, "n", "output C", 4 * m * n, MAX_OUTPUT_BYTES)?;
        check_size(K, "k", "input A", 4 * m * k, MAX_INPUT_BYTES)?;
        check_size(K, "k", "input B", 4 * k * n, MAX_INPUT_BYTES)?;
        Ok(MatmulF32 {
            m: m as u32,
            n: n as u32,
            k: k as u32,
        })
    }

    /// Rows of A and C.
    pub fn m(&self) -> u32 {
        self.m
    }
    /// Columns of B and C.
    pub fn n(&self) -> u32 {
        self.n
    }
    /// Columns of A, rows of B.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// Checks that two results of this product (say the CPU's and a GPU's) agree within the
    /// tolerance that any summation order of `f32` products allows.
    ///
    /// Each element of C is a sum of `k` products. Computed in `f32` in any order, with or
    /// without fused multiply-add, its error is at most `γ_k · S` where
    /// `S = Σ_p |a_ip · b_pj|` and `γ_k = k·u / (1 − k·u)`, `u = 2⁻²⁴` (Higham, *Accuracy
    /// and Stability of Numerical Algorithms*, §3.1). Two such results therefore differ by
    /// at most `2 γ_k S`; we allow that plus `k · 2⁻¹²⁶` for subnormal rounding. So the
    /// tolerance grows linearly with `k` and with the magnitudes of the entries (e.g. for
    /// k = 1024 and entries in [-1, 1], at most about 1.2e-4 · S). Non-finite results must
    /// match exactly (both NaN, or the same infinity).
    ///
    /// `a`, `b`, `c1`, `c2` are the job's byte blobs (row-major `f32` LE); their sizes must
    /// be this product's.
    pub fn compare(&self, a: &[u8], b: &[u8], c1: &[u8], c2: &[u8]) -> Result<(), MatmulMismatch> {
        let (m, n, k) = (self.m as usize, self.n as usize, self.k as usize);
        let sizes = [
            (a.len(), m * k),
            (b.len(), k * n),
            (c1.len(), m * n),
            (c2.len(), m * n),
        ];
        if sizes.iter().any(|&(got, elems)| got != 4 * elems) {
            return Err(MatmulMismatch::Size);
        }
        let a = f32s(a);
        let b = f32s(b);
        let (c1, c2) = (f32s(c1), f32s(c2));
        let u = f64::from(f32::EPSILON) / 2.0;
        let ku = k as f64 * u;
        let gamma = ku / (1.0 - ku);
        let floor = k as f64 * f64::from(f32::MIN_POSITIVE);
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (c1[i * n + j], c2[i * n + j]);
                let diff = if x.is_finite() && y.is_finite() {
                    (f64::from(x) - f64::from(y)).abs()
                } else if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                    continue;
                } else {
                    f64::INFINITY
                };
                let s: f64 = (0..k)
                    .map(|p| (f64::from(a[i * k + p]) * f64::from(b[p * n + j])).abs())
                    .sum();
                let tolerance = 2.0 * gamma * s + floor;
                if diff > tolerance {
                    return Err(MatmulMismatch::Element {
                        row: i as u32,
                        col: j as u32,
                        left: x,
                        right: y,
                        tolerance,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Little-endian `f32`s from bytes (a trailing partial value is ignored).
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Two matrix products that disagree beyond [`MatmulF32::compare`]'s tolerance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatmulMismatch {
    /// A buffer does not have the product's size.
    #[error("a buffer does not have the matrix product's size")]
    Size,
    /// The first element found outside the tolerance.
    #[error("C[{row}][{col}]: {left} vs {right}, beyond the tolerance {tolerance:e}")]
    Element {
        /// Its row.
        row: u32,
        /// Its column.
        col: u32,
        /// The first result's value.
        left: f32,
        /// The second result's value.
        right: f32,
        /// The allowed difference there.
        tolerance: f64,
    },
}
