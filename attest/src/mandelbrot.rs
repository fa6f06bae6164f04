//! The Mandelbrot kernel's arithmetic, shared by the agent (which runs it, on the CPU and
//! in CUDA) and the controller (which recomputes sampled pixels of a device's output to
//! check it): one definition, so the two cannot drift apart.

/// Fractional bits of the Mandelbrot fixed-point format: Q8.56 in an `i64`
/// (the value is `raw / 2^56`, range [-128, 128)).
pub const FRAC_BITS: u32 = 56;
/// 1.0 in Q8.56.
pub const FIXED_ONE: i64 = 1 << FRAC_BITS;
/// Q8.56 product: the full 128-bit signed product shifted right arithmetically by
/// [`FRAC_BITS`], then truncated to its low 64 bits (two's complement wrap). CUDA computes
/// the same bits as `(hi << 8) | (lo >> 56)` from `__mul64hi` and the low product.
#[inline]
pub fn fixed_mul(a: i64, b: i64) -> i64 {
    ((i128::from(a) * i128::from(b)) >> FRAC_BITS) as i64
}

/// The escape count of the point `cx + cy·i` (raw Q8.56): the definition both backends
/// implement, operation for operation.
///
/// ```text
/// x = y = 0
/// for i in 0..max_iter:
///     x2 = x*x; y2 = y*y                  (fixed_mul)
///     if x2 + y2 > 4: return i            (wrapping add, signed compare)
///     xy = x*y                            (fixed_mul)
///     y  = xy + xy + cy                   (wrapping adds)
///     x  = x2 - y2 + cx                   (wrapping sub, add)
/// return max_iter
/// ```
///
/// So the origin gives `max_iter`, 2+2i gives 1 and 1+0i gives 3 (z: 0, 1, 2, 5). With
/// |cx|, |cy| ≤ 4 a point that has not escaped has |x|, |y| ≤ 8, so nothing wraps; the
/// wrapping is written out only so that the rule is total and the same in C.
#[inline]
pub fn escape_count(cx: i64, cy: i64, max_iter: u32) -> u32 {
    const FOUR: i64 = 4 << FRAC_BITS;
    let (mut x, mut y) = (0i64, 0i64);
    for i in 0..max_iter {
        let x2 = fixed_mul(x, x);
        let y2 = fixed_mul(y, y);
        if x2.wrapping_add(y2) > FOUR {
            return i;
        }
        let xy = fixed_mul(x, y);
        y = xy.wrapping_add(xy).wrapping_add(cy);
        x = x2.wrapping_sub(y2).wrapping_add(cx);
    }
    max_iter
}
