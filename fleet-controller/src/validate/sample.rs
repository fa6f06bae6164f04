//! Sampled recomputation of the per-item built-ins (sans-IO).
//!
//! `sha256_batch` and `mandelbrot` make one output item per input item (a digest, a
//! pixel), each computable alone. Once a device's output is uploaded (hash-checked against
//! its signed receipt), the controller draws [`SAMPLE_CHECKS`] item positions with
//! randomness from the operating system and recomputes those items itself. The device
//! cannot tell which items will be checked: the positions are drawn after its output is
//! fixed. An output with a fraction f of its items wrong passes with probability
//! (1 − f)^k: a fabricated output (f = 1) never passes; a device skipping 1 % of the work
//! passes a 64-item check 53 % of the time per job, and twenty such jobs in a row 3·10⁻⁶ of
//! the time. These kernels are integer and hash arithmetic, identical on every backend, so
//! an honest output never fails (no false accusation). The cost is k items of the job's
//! compute at the controller: for a 8192-item batch, 0.8 % of it, and no device time.

use sha2::{Digest, Sha256};

use super::SplitMix;

/// Items recomputed per sampled check.
pub const SAMPLE_CHECKS: u32 = 64;

/// What a sampled check found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// A buffer is not the size the job's parameters make.
    #[error("{what} is {got} bytes; the job's parameters make {expected}")]
    Size {
        /// Which buffer.
        what: &'static str,
        /// Its size.
        got: u64,
        /// What it should be.
        expected: u64,
    },
    /// Item `item` is not what the kernel computes.
    #[error("item {item}: the output holds {got}, the kernel gives {expected}")]
    Wrong {
        /// The item's position.
        item: u64,
        /// What the output holds (hex).
        got: String,
        /// What the controller computed (hex).
        expected: String,
    },
}

fn size(what: &'static str, got: usize, expected: u64) -> Result<(), SampleError> {
    if got as u64 != expected {
        return Err(SampleError::Size {
            what,
            got: got as u64,
            expected,
        });
    }
    Ok(())
}

/// `k` positions below `items`, uniform, drawn from `seed` (with repeats).
fn positions(items: u64, k: u32, seed: u64) -> impl Iterator<Item = u64> {
    let mut rng = SplitMix(seed);
    (0..k).map(move |_| {
        // Lemire's multiply-shift: uniform enough for 64-bit draws over any item count.
        ((u128::from(rng.next()) * u128::from(items)) >> 64) as u64
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `k` random digests of a `sha256_batch` output against the input: `count` items
/// of `item_len` bytes in, `32 × count` bytes out. Returns how many items were checked.
pub fn sample_sha256(
    (count, item_len): (u64, u64),
    input: &[u8],
    output: &[u8],
    k: u32,
    seed: u64,
) -> Result<u32, SampleError> {
    size("the input", input.len(), count * item_len)?;
    size("the output", output.len(), 32 * count)?;
    let len = item_len as usize;
    for item in positions(count, k, seed) {
        let at = item as usize;
        let expected = Sha256::digest(&input[at * len..(at + 1) * len]);
        let got = &output[at * 32..(at + 1) * 32];
        if got != expected.as_slice() {
            return Err(SampleError::Wrong {
                item,
                got: hex(got),
                expected: hex(&expected),
            });
        }
    }
    Ok(k)
}

/// A `mandelbrot` job's frame, as its parameters give it (raw Q8.56 coordinates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MandelbrotFrame {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// The real part of pixel (0, 0).
    pub x0: i64,
    /// The imaginary part of pixel (0, 0).
    pub y0: i64,
    /// The distance between neighbouring pixels.
    pub step: i64,
    /// The iteration cap.
    pub max_iter: u32,
}

/// Checks `k` random pixels of a `mandelbrot` output (`u32` escape counts, little-endian,
/// row-major). Returns how many pixels were checked.
pub fn sample_mandelbrot(
    f: &MandelbrotFrame,
    output: &[u8],
    k: u32,
    seed: u64,
) -> Result<u32, SampleError> {
    let pixels = u64::from(f.width) * u64::from(f.height);
    size("the output", output.len(), 4 * pixels)?;
    for item in positions(pixels, k, seed) {
        let (col, row) = (item % u64::from(f.width), item / u64::from(f.width));
        let cx = f.x0.wrapping_add((col as i64).wrapping_mul(f.step));
        let cy = f.y0.wrapping_add((row as i64).wrapping_mul(f.step));
        let expected = attest::mandelbrot::escape_count(cx, cy, f.max_iter);
        let at = item as usize * 4;
        let got = u32::from_le_bytes([output[at], output[at + 1], output[at + 2], output[at + 3]]);
        if got != expected {
            return Err(SampleError::Wrong {
                item,
                got: got.to_string(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest::mandelbrot::FIXED_ONE;

    fn batch(count: u64, len: u64) -> (Vec<u8>, Vec<u8>) {
        let input: Vec<u8> = (0..count * len).map(|i| (i * 7 + 3) as u8).collect();
        let output = input
            .chunks_exact(len as usize)
            .flat_map(|c| Sha256::digest(c).to_vec())
            .collect();
        (input, output)
    }

    fn frame() -> MandelbrotFrame {
        MandelbrotFrame {
            width: 40,
            height: 30,
            x0: -2 * FIXED_ONE,
            y0: -FIXED_ONE,
            step: FIXED_ONE / 16,
            max_iter: 200,
        }
    }

    fn image(f: &MandelbrotFrame) -> Vec<u8> {
        let mut out = Vec::new();
        for row in 0..f.height {
            for col in 0..f.width {
                let cx = f.x0 + i64::from(col) * f.step;
                let cy = f.y0 + i64::from(row) * f.step;
                let n = attest::mandelbrot::escape_count(cx, cy, f.max_iter);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn honest_outputs_pass_for_every_seed() {
        let (input, output) = batch(300, 17);
        let f = frame();
        let img = image(&f);
        for seed in 0..50 {
            assert_eq!(sample_sha256((300, 17), &input, &output, 64, seed), Ok(64));
            assert_eq!(sample_mandelbrot(&f, &img, 64, seed), Ok(64));
        }
    }

    #[test]
    fn a_fabricated_output_is_caught_and_names_the_item() {
        let (input, _) = batch(300, 17);
        let zeros = vec![0u8; 300 * 32];
        let e = sample_sha256((300, 17), &input, &zeros, 64, 9).unwrap_err();
        let SampleError::Wrong {
            item,
            got,
            expected,
        } = e
        else {
            panic!("{e:?}")
        };
        assert!(item < 300);
        assert_eq!(got, "00".repeat(32));
        assert_eq!(
            expected,
            hex(&Sha256::digest(&input[item as usize * 17..][..17]))
        );
        let f = frame();
        let flat = vec![0u8; img_len(&f)];
        assert!(matches!(
            sample_mandelbrot(&f, &flat, 64, 9),
            Err(SampleError::Wrong { .. })
        ));
    }

    fn img_len(f: &MandelbrotFrame) -> usize {
        4 * f.width as usize * f.height as usize
    }

    #[test]
    fn a_tenth_of_the_items_wrong_is_caught_about_as_often_as_theory_says() {
        // f = 0.1, k = 16: escapes with (0.9)^16 = 18.5 % of the time.
        let (input, mut output) = batch(1000, 8);
        for item in (0..1000).step_by(10) {
            output[item * 32] ^= 1;
        }
        let escaped = (0..2000)
            .filter(|&seed| sample_sha256((1000, 8), &input, &output, 16, seed).is_ok())
            .count();
        assert!((300..=450).contains(&escaped), "{escaped} of 2000 escaped");
    }

    #[test]
    fn a_buffer_of_the_wrong_size_is_refused() {
        let (input, output) = batch(10, 4);
        assert!(matches!(
            sample_sha256((10, 4), &input, &output[..300], 8, 1),
            Err(SampleError::Size {
                what: "the output",
                got: 300,
                expected: 320
            })
        ));
        assert!(matches!(
            sample_mandelbrot(&frame(), &[0u8; 12], 8, 1),
            Err(SampleError::Size { .. })
        ));
    }
}
