//! What the controller checks of a workload before it accepts a job: the built-in kernels
//! the agents ship (names, parameters and ranges, and the sizes of their inputs and output)
//! and a PTX job's launch shape and buffers.
//!
//! The agent checks the same again before it runs anything (`agent/src/jobs/kernel.rs`);
//! these rules mirror its table, and `fleet-controller/tests/builtin_agreement.rs` holds
//! the two to the same answers so they cannot drift apart unnoticed.
//!
//! | kernel | parameters | inputs | output |
//! | --- | --- | --- | --- |
//! | `sha256_batch` | `count` (1..=8 Mi), `item_len` (0..=1 GiB) | one of `count × item_len` bytes (at most 1 GiB) | `32 × count` |
//! | `mandelbrot` | `width`, `height` (1..=65536), `x0`, `y0` (Q8.56, ±4), `step` (1..=4 in Q8.56), `max_iter` (1..=2^20) | none | `4 × width × height` (at most 256 MiB) |
//! | `matmul_f32` | `m`, `n`, `k` (1..=65536) | A `4·m·k` and B `4·k·n` (each at most 1 GiB) | `4 × m × n` (at most 256 MiB) |

use attest::msg::Param;

/// Most inputs or outputs of one job (what a `JobSpec` may carry to a device).
pub const MAX_JOB_ITEMS: usize = 64;
/// Largest output of a job (all its outputs together), as the agent allows.
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;
/// Largest input of a job (each built-in input; all of a PTX job's together).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Largest dimension of a built-in.
const MAX_DIM: i64 = 1 << 16;
/// 4.0 in the Mandelbrot kernel's Q8.56 fixed point: the plane's edge.
const PLANE_LIMIT: i64 = 4 << 56;
/// Largest Mandelbrot iteration cap.
const MAX_ITER: i64 = 1 << 20;
/// Most threads in one block (CUDA's limit on every current GPU).
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;

/// Why a workload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// No built-in has this name.
    #[error("unknown built-in kernel {0:?} (known: sha256_batch, mandelbrot, matmul_f32)")]
    UnknownKernel(String),
    /// A parameter missing, unknown, repeated or out of range.
    #[error("{0}")]
    BadParam(String),
    /// The parameters ask for more memory than a job may have.
    #[error("{0}")]
    TooLarge(String),
    /// A PTX launch shape the GPU cannot take.
    #[error("{0}")]
    BadLaunch(String),
}

/// The sizes a built-in takes and makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinShape {
    /// The exact size of each input, in order.
    pub input_sizes: Vec<u64>,
    /// The size of its one output.
    pub output_size: u64,
}

struct Params<'a> {
    kernel: &'static str,
    given: &'a [Param],
}

impl<'a> Params<'a> {
    fn new(
        kernel: &'static str,
        given: &'a [Param],
        known: &[&str],
    ) -> Result<Self, WorkloadError> {
        for (i, p) in given.iter().enumerate() {
            if !known.contains(&p.name.as_str()) {
                return Err(WorkloadError::BadParam(format!(
                    "{kernel}: unknown parameter `{}` (takes {})",
                    p.name,
                    known.join(", ")
                )));
            }
            if given[..i].iter().any(|q| q.name == p.name) {
                return Err(WorkloadError::BadParam(format!(
                    "{kernel}: parameter `{}` given more than once",
                    p.name
                )));
            }
        }
        Ok(Params { kernel, given })
    }

    fn get(&self, name: &str, min: i64, max: i64) -> Result<i64, WorkloadError> {
        let k = self.kernel;
        let p =
            self.given.iter().find(|p| p.name == name).ok_or_else(|| {
                WorkloadError::BadParam(format!("{k}: missing parameter `{name}`"))
            })?;
        if p.value < min || p.value > max {
            return Err(WorkloadError::BadParam(format!(
                "{k}: parameter `{name}` = {} is outside {min}..={max}",
                p.value
            )));
        }
        Ok(p.value)
    }
}

fn at_most(kernel: &str, what: &str, bytes: u64, max: u64) -> Result<(), WorkloadError> {
    if bytes > max {
        return Err(WorkloadError::TooLarge(format!(
            "{kernel}: {what} would be {bytes} bytes, over the {max}-byte limit"
        )));
    }
    Ok(())
}

/// The shape of the built-in `kernel` with `params`, or why the agent would refuse it.
pub fn builtin_shape(kernel: &str, params: &[Param]) -> Result<BuiltinShape, WorkloadError> {
    match kernel {
        "sha256_batch" => {
            const K: &str = "sha256_batch";
            let p = Params::new(K, params, &["count", "item_len"])?;
            let count = p.get("count", 1, (MAX_OUTPUT_BYTES / 32) as i64)? as u64;
            let item_len = p.get("item_len", 0, MAX_INPUT_BYTES as i64)? as u64;
            at_most(K, "the input", count * item_len, MAX_INPUT_BYTES)?;
            Ok(BuiltinShape {
                input_sizes: vec![count * item_len],
                output_size: 32 * count,
            })
        }
        "mandelbrot" => {
            const K: &str = "mandelbrot";
            let p = Params::new(
                K,
                params,
                &["width", "height", "x0", "y0", "step", "max_iter"],
            )?;
            let width = p.get("width", 1, MAX_DIM)?;
            let height = p.get("height", 1, MAX_DIM)?;
            let output = 4 * width as u64 * height as u64;
            at_most(K, "the output", output, MAX_OUTPUT_BYTES)?;
            let x0 = p.get("x0", -PLANE_LIMIT, PLANE_LIMIT)?;
            let y0 = p.get("y0", -PLANE_LIMIT, PLANE_LIMIT)?;
            let step = p.get("step", 1, PLANE_LIMIT)?;
            p.get("max_iter", 1, MAX_ITER)?;
            let edge =
                |start: i64, n: i64| i128::from(start) + i128::from(n - 1) * i128::from(step);
            if edge(x0, width) > i128::from(PLANE_LIMIT)
                || edge(y0, height) > i128::from(PLANE_LIMIT)
            {
                return Err(WorkloadError::BadParam(
                    "mandelbrot: parameter `step` puts the tile outside [-4, 4]".into(),
                ));
            }
            Ok(BuiltinShape {
                input_sizes: vec![],
                output_size: output,
            })
        }
        "matmul_f32" => {
            const K: &str = "matmul_f32";
            let p = Params::new(K, params, &["m", "n", "k"])?;
            let m = p.get("m", 1, MAX_DIM)? as u64;
            let n = p.get("n", 1, MAX_DIM)? as u64;
            let k = p.get("k", 1, MAX_DIM)? as u64;
            at_most(K, "output C", 4 * m * n, MAX_OUTPUT_BYTES)?;
            at_most(K, "input A", 4 * m * k, MAX_INPUT_BYTES)?;
            at_most(K, "input B", 4 * k * n, MAX_INPUT_BYTES)?;
            Ok(BuiltinShape {
                input_sizes: vec![4 * m * k, 4 * k * n],
                output_size: 4 * m * n,
            })
        }
        other => Err(WorkloadError::UnknownKernel(other.into())),
    }
}

/// Checks a PTX job's kernel name and launch shape.
pub fn check_ptx_launch(
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
) -> Result<(), WorkloadError> {
    let ident = !kernel.is_empty()
        && kernel.len() <= attest::msg::MAX_TEXT
        && kernel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.')
        && !kernel.as_bytes()[0].is_ascii_digit();
    if !ident {
        return Err(WorkloadError::BadLaunch(format!(
            "kernel {kernel:?} is not a PTX entry name"
        )));
    }
    if grid.contains(&0) {
        return Err(WorkloadError::BadLaunch("a grid dimension is 0".into()));
    }
    if block.contains(&0) {
        return Err(WorkloadError::BadLaunch("a block dimension is 0".into()));
    }
    let threads: u64 = block.iter().map(|&b| u64::from(b)).product();
    if threads > MAX_THREADS_PER_BLOCK {
        return Err(WorkloadError::BadLaunch(format!(
            "{threads} threads per block; at most {MAX_THREADS_PER_BLOCK}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, i64)]) -> Vec<Param> {
        pairs
            .iter()
            .map(|(n, v)| Param {
                name: (*n).into(),
                value: *v,
            })
            .collect()
    }

    #[test]
    fn built_ins_give_their_sizes_and_refuse_bad_parameters_by_name() {
        let s = builtin_shape("sha256_batch", &p(&[("count", 10), ("item_len", 64)])).unwrap();
        assert_eq!(s.input_sizes, vec![640]);
        assert_eq!(s.output_size, 320);
        let s = builtin_shape("matmul_f32", &p(&[("m", 2), ("n", 3), ("k", 4)])).unwrap();
        assert_eq!((s.input_sizes, s.output_size), (vec![32, 48], 24));
        let one = 1i64 << 56;
        let s = builtin_shape(
            "mandelbrot",
            &p(&[
                ("width", 8),
                ("height", 4),
                ("x0", -2 * one),
                ("y0", -one),
                ("step", one / 4),
                ("max_iter", 100),
            ]),
        )
        .unwrap();
        assert_eq!((s.input_sizes.len(), s.output_size), (0, 128));

        for (kernel, params, says) in [
            ("bitcoin", p(&[]), "unknown built-in kernel \"bitcoin\""),
            (
                "sha256_batch",
                p(&[("count", 1)]),
                "missing parameter `item_len`",
            ),
            (
                "sha256_batch",
                p(&[("count", 1), ("item_len", 1), ("count", 2)]),
                "given more than once",
            ),
            (
                "sha256_batch",
                p(&[("count", 0), ("item_len", 1)]),
                "`count` = 0 is outside",
            ),
            (
                "matmul_f32",
                p(&[("m", 1), ("n", 1), ("k", 1), ("j", 1)]),
                "unknown parameter `j`",
            ),
            (
                "matmul_f32",
                p(&[("m", 65536), ("n", 65536), ("k", 1)]),
                "output C would be",
            ),
        ] {
            let e = builtin_shape(kernel, &params).unwrap_err().to_string();
            assert!(e.contains(says), "{kernel} {params:?}: {e}");
        }
    }

    #[test]
    fn a_ptx_launch_needs_an_entry_name_no_zero_dimension_and_at_most_1024_threads() {
        assert!(check_ptx_launch("scale", [4, 1, 1], [256, 4, 1]).is_ok());
        for (kernel, grid, block, says) in [
            ("", [1, 1, 1], [1, 1, 1], "not a PTX entry name"),
            ("9lives", [1, 1, 1], [1, 1, 1], "not a PTX entry name"),
            ("a b", [1, 1, 1], [1, 1, 1], "not a PTX entry name"),
            ("k", [1, 0, 1], [1, 1, 1], "a grid dimension is 0"),
            ("k", [1, 1, 1], [0, 1, 1], "a block dimension is 0"),
            ("k", [1, 1, 1], [1024, 2, 1], "2048 threads per block"),
        ] {
            let e = check_ptx_launch(kernel, grid, block)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{kernel}: {e}");
        }
    }
}
