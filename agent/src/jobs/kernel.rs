//! The built-in kernels as typed, validated values, and the arithmetic both backends agree
//! on.
//!
//! A job names a built-in as `Workload::Builtin { kernel, params }` with named `i64`
//! parameters; [`Builtin::parse`] turns that into a [`Builtin`] whose sizes are bounded
//! (no output over [`MAX_OUTPUT_BYTES`], no input over [`MAX_INPUT_BYTES`]) or into a
//! [`KernelError`] naming the bad parameter.
//!
//! | kernel | parameters | inputs | output | chunk = a range of |
//! | --- | --- | --- | --- | --- |
//! | `sha256_batch` | `count`, `item_len` | one blob of `count × item_len` bytes | `count` 32-byte SHA-256 digests (FIPS 180-4), in item order | items |
//! | `mandelbrot` | `width`, `height`, `x0`, `y0`, `step`, `max_iter` | none | `width × height` escape counts, `u32` LE, row-major | rows |
//! | `matmul_f32` | `m`, `n`, `k` | A (`m × k`) and B (`k × n`), row-major `f32` LE | C = A·B (`m × n`), row-major `f32` LE | rows of C |
//!
//! The Mandelbrot arithmetic is fixed point so that the CPU and CUDA results are
//! bit-identical: see [`escape_count`], which is the definition the CUDA source mirrors.
//! The matrix product is compared with a tolerance: see [`MatmulF32::compare`].

use core::ops::Range;

use attest::msg::{Param, Workload};

mod matmul;
pub use matmul::MatmulMismatch;
pub(crate) use matmul::f32s;

/// Largest output a built-in may produce (256 MiB).
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;
/// Largest single input a built-in may take (1 GiB).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Work units (a rough count of arithmetic operations, for sizing chunks and a first
/// energy estimate) per SHA-256 compression of one 64-byte block.
pub const WORK_PER_SHA256_BLOCK: u64 = 2_000;
/// Work units per Mandelbrot iteration (three 64×64→128-bit products and a few adds).
pub const WORK_PER_MANDELBROT_ITER: u64 = 20;
/// Work units per `f32` multiply-add of the matrix product.
pub const WORK_PER_MAC: u64 = 2;

pub use attest::mandelbrot::{FIXED_ONE, FRAC_BITS, escape_count, fixed_mul};
/// Every pixel's coordinates must lie in [-PLANE_LIMIT, PLANE_LIMIT] (raw Q8.56 of 4.0):
/// with that bound and the escape test at |z|² > 4, no intermediate value can overflow.
pub const PLANE_LIMIT: i64 = 4 << FRAC_BITS;
/// Largest `max_iter` a Mandelbrot job may ask for.
pub const MAX_MANDELBROT_ITER: i64 = 1 << 20;
/// Largest dimension (width, height, m, n, k) of any built-in.
pub const MAX_DIM: i64 = 1 << 16;

/// A parsed, validated built-in kernel with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    /// SHA-256 of each of `count` equal-length items.
    Sha256Batch(Sha256Batch),
    /// A fixed-point Mandelbrot tile.
    Mandelbrot(Mandelbrot),
    /// A single-precision matrix product.
    MatmulF32(MatmulF32),
}

/// `sha256_batch`: one input blob split into `count` items of `item_len` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Batch {
    count: u32,
    item_len: u32,
}

/// `mandelbrot`: a `width × height` tile whose pixel (col, row) is the point
/// `(x0 + col·step) + (y0 + row·step)i`, all in Q8.56 (row 0 is `y0`; rows go up in y).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mandelbrot {
    width: u32,
    height: u32,
    x0: i64,
    y0: i64,
    step: i64,
    max_iter: u32,
}

/// `matmul_f32`: C (m × n) = A (m × k) · B (k × n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulF32 {
    m: u32,
    n: u32,
    k: u32,
}

/// Why a built-in workload was refused. Each variant names the kernel and, where there is
/// one, the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// No built-in has this name.
    #[error("unknown built-in kernel `{0}` (known: sha256_batch, mandelbrot, matmul_f32)")]
    UnknownKernel(String),
    /// A required parameter is absent.
    #[error("{kernel}: missing parameter `{param}`")]
    MissingParam {
        /// The kernel.
        kernel: &'static str,
        /// The parameter.
        param: &'static str,
    },
    /// A parameter the kernel does not take.
    #[error("{kernel}: unknown parameter `{param}`")]
    UnknownParam {
        /// The kernel.
        kernel: &'static str,
        /// The parameter as given.
        param: String,
    },
    /// The same parameter twice.
    #[error("{kernel}: parameter `{param}` given more than once")]
    DuplicateParam {
        /// The kernel.
        kernel: &'static str,
        /// The parameter.
        param: &'static str,
    },
    /// A parameter outside its allowed range.
    #[error("{kernel}: parameter `{param}` = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The kernel.
        kernel: &'static str,
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
    },
    /// The parameters are each in range but together ask for too much memory.
    #[error(
        "{kernel}: {what} would be {bytes} bytes, over the {max}-byte limit (parameter `{param}`)"
    )]
    TooLarge {
        /// The kernel.
        kernel: &'static str,
        /// The last parameter that made it too large.
        param: &'static str,
        /// Which buffer ("output", "input A", ...).
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Part of the Mandelbrot tile lies outside [-4, 4] on an axis.
    #[error(
        "mandelbrot: parameter `{param}` puts the tile's {axis} range outside [-4, 4] (Q8.56 raw limit ±{limit})",
        limit = PLANE_LIMIT
    )]
    OutsidePlane {
        /// `x0`, `y0` or `step`.
        param: &'static str,
        /// `x` or `y`.
        axis: char,
    },
}

/// The parameters of one workload, checked for unknown and duplicated names once, then read
/// one at a time with their ranges.
struct Params<'a> {
    kernel: &'static str,
    given: &'a [Param],
}

impl<'a> Params<'a> {
    fn new(
        kernel: &'static str,
        given: &'a [Param],
        known: &[&'static str],
    ) -> Result<Self, KernelError> {
        for (i, p) in given.iter().enumerate() {
            let Some(name) = known.iter().find(|k| **k == p.name) else {
                return Err(KernelError::UnknownParam {
                    kernel,
                    param: p.name.clone(),
                });
            };
            if given[..i].iter().any(|q| q.name == p.name) {
                return Err(KernelError::DuplicateParam {
                    kernel,
                    param: name,
                });
            }
        }
        Ok(Params { kernel, given })
    }

    fn get(&self, param: &'static str, min: i64, max: i64) -> Result<i64, KernelError> {
        let p = self
            .given
            .iter()
            .find(|p| p.name == param)
            .ok_or(KernelError::MissingParam {
                kernel: self.kernel,
                param,
            })?;
        if p.value < min || p.value > max {
            return Err(KernelError::OutOfRange {
                kernel: self.kernel,
                param,
                value: p.value,
                min,
                max,
            });
        }
        Ok(p.value)
    }
}

fn check_size(
    kernel: &'static str,
    param: &'static str,
    what: &'static str,
    bytes: u64,
    max: u64,
) -> Result<(), KernelError> {
    if bytes > max {
        return Err(KernelError::TooLarge {
            kernel,
            param,
            what,
            bytes,
            max,
        });
    }
    Ok(())
}

fn param(name: &str, value: i64) -> Param {
    Param {
        name: name.into(),
        value,
    }
}

impl Builtin {
    /// Parses and validates a built-in workload's kernel name and parameters.
    pub fn parse(kernel: &str, params: &[Param]) -> Result<Builtin, KernelError> {
        match kernel {
            "sha256_batch" => Sha256Batch::parse(params).map(Builtin::Sha256Batch),
            "mandelbrot" => Mandelbrot::parse(params).map(Builtin::Mandelbrot),
            "matmul_f32" => MatmulF32::parse(params).map(Builtin::MatmulF32),
            other => Err(KernelError::UnknownKernel(other.into())),
        }
    }

    /// The kernel's name as a job spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Sha256Batch(_) => "sha256_batch",
            Builtin::Mandelbrot(_) => "mandelbrot",
            Builtin::MatmulF32(_) => "matmul_f32",
        }
    }

    /// The workload that names this built-in (what a controller puts in a `JobSpec`).
    pub fn to_workload(&self) -> Workload {
        let params = match self {
            Builtin::Sha256Batch(s) => vec![
                param("count", s.count.into()),
                param("item_len", s.item_len.into()),
            ],
            Builtin::Mandelbrot(t) => vec![
                param("width", t.width.into()),
                param("height", t.height.into()),
                param("x0", t.x0),
                param("y0", t.y0),
                param("step", t.step),
                param("max_iter", t.max_iter.into()),
            ],
            Builtin::MatmulF32(mm) => vec![
                param("m", mm.m.into()),
                param("n", mm.n.into()),
                param("k", mm.k.into()),
            ],
        };
        Workload::Builtin {
            kernel: self.name().into(),
            params,
        }
    }

    /// The exact size in bytes of each input the kernel takes, in order.
    pub fn input_sizes(&self) -> Vec<u64> {
        match self {
            Builtin::Sha256Batch(s) => vec![u64::from(s.count) * u64::from(s.item_len)],
            Builtin::Mandelbrot(_) => vec![],
            Builtin::MatmulF32(mm) => vec![
                4 * u64::from(mm.m) * u64::from(mm.k),
                4 * u64::from(mm.k) * u64::from(mm.n),
            ],
        }
    }

    /// The size in bytes of the kernel's one output.
    pub fn output_size(&self) -> u64 {
        self.items() * self.output_bytes_per_item()
    }

    /// How many chunkable items the kernel has: SHA-256 items, Mandelbrot rows or rows of C.
    pub fn items(&self) -> u64 {
        match self {
            Builtin::Sha256Batch(s) => s.count.into(),
            Builtin::Mandelbrot(t) => t.height.into(),
            Builtin::MatmulF32(mm) => mm.m.into(),
        }
    }

    /// Output bytes written per item.
    pub fn output_bytes_per_item(&self) -> u64 {
        match self {
            Builtin::Sha256Batch(_) => 32,
            Builtin::Mandelbrot(t) => 4 * u64::from(t.width),
            Builtin::MatmulF32(mm) => 4 * u64::from(mm.n),
        }
    }

    /// Estimated work units per item (see [`WORK_PER_SHA256_BLOCK`] and its neighbours;
    /// for Mandelbrot an upper bound, every pixel running to `max_iter`).
    pub fn work_per_item(&self) -> u64 {
        match self {
            Builtin::Sha256Batch(s) => {
                // Padding adds a 0x80 byte and the 8-byte length (FIPS 180-4 §5.1.1).
                (u64::from(s.item_len) + 9).div_ceil(64) * WORK_PER_SHA256_BLOCK
            }
            Builtin::Mandelbrot(t) => {
                u64::from(t.width) * u64::from(t.max_iter) * WORK_PER_MANDELBROT_ITER
            }
            Builtin::MatmulF32(mm) => u64::from(mm.n) * u64::from(mm.k) * WORK_PER_MAC,
        }
    }

    /// Estimated work units of the whole job.
    pub fn work_units(&self) -> u64 {
        self.items().saturating_mul(self.work_per_item())
    }

    /// How the job splits into chunks of about `target_work` units each.
    pub fn chunk_plan(&self, target_work: u64) -> ChunkPlan {
        ChunkPlan::new(self.items(), self.work_per_item(), target_work)
    }

    /// The number of chunks of about `target_work` units each.
    pub fn chunk_count(&self, target_work: u64) -> u32 {
        self.chunk_plan(target_work).chunks()
    }
}

impl Sha256Batch {
    /// A batch of `count` items of `item_len` bytes, validated as [`Builtin::parse`] does.
    pub fn new(count: i64, item_len: i64) -> Result<Self, KernelError> {
        Self::parse(&[param("count", count), param("item_len", item_len)])
    }

    fn parse(params: &[Param]) -> Result<Self, KernelError> {
        const K: &str = "sha256_batch";
        let p = Params::new(K, params, &["count", "item_len"])?;
        let count = p.get("count", 1, (MAX_OUTPUT_BYTES / 32) as i64)?;
        let item_len = p.get("item_len", 0, MAX_INPUT_BYTES as i64)?;
        let input = (count as u64) * (item_len as u64);
        check_size(K, "item_len", "input", input, MAX_INPUT_BYTES)?;
        Ok(Sha256Batch {
            count: count as u32,
            item_len: item_len as u32,
        })
    }

    /// Number of items.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes per item.
    pub fn item_len(&self) -> u32 {
        self.item_len
    }
}

impl Mandelbrot {
    /// A tile, validated as [`Builtin::parse`] does (`x0`, `y0`, `step` are raw Q8.56).
    pub fn new(
        width: i64,
        height: i64,
        x0: i64,
        y0: i64,
        step: i64,
        max_iter: i64,
    ) -> Result<Self, KernelError> {
        Self::parse(&[
            param("width", width),
            param("height", height),
            param("x0", x0),
            param("y0", y0),
            param("step", step),
            param("max_iter", max_iter),
        ])
    }

    fn parse(params: &[Param]) -> Result<Self, KernelError> {
        const K: &str = "mandelbrot";
        let p = Params::new(
            K,
            params,
            &["width", "height", "x0", "y0", "step", "max_iter"],
        )?;
        let width = p.get("width", 1, MAX_DIM)?;
        let height = p.get("height", 1, MAX_DIM)?;
        check_size(
            K,
            "height",
            "output",
            4 * (width as u64) * (height as u64),
            MAX_OUTPUT_BYTES,
        )?;
        let x0 = p.get("x0", -PLANE_LIMIT, PLANE_LIMIT)?;
        let y0 = p.get("y0", -PLANE_LIMIT, PLANE_LIMIT)?;
        let step = p.get("step", 1, PLANE_LIMIT)?;
        let max_iter = p.get("max_iter", 1, MAX_MANDELBROT_ITER)?;
        // The far edges, in i128 so that the check itself cannot overflow.
        let limit = i128::from(PLANE_LIMIT);
        if i128::from(x0) + i128::from(width - 1) * i128::from(step) > limit {
            return Err(KernelError::OutsidePlane {
                param: "step",
                axis: 'x',
            });
        }
        if i128::from(y0) + i128::from(height - 1) * i128::from(step) > limit {
            return Err(KernelError::OutsidePlane {
                param: "step",
                axis: 'y',
            });
        }
        Ok(Mandelbrot {
            width: width as u32,
            height: height as u32,
            x0,
            y0,
            step,
            max_iter: max_iter as u32,
        })
    }

    /// Pixels per row.
    pub fn width(&self) -> u32 {
        self.width
    }
    /// Rows.
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Real part of column 0 (raw Q8.56).
    pub fn x0(&self) -> i64 {
        self.x0
    }
    /// Imaginary part of row 0 (raw Q8.56).
    pub fn y0(&self) -> i64 {
        self.y0
    }
    /// Distance between neighbouring pixels (raw Q8.56).
    pub fn step(&self) -> i64 {
        self.step
    }
    /// Iteration cap: points still bounded after this many get `max_iter`.
    pub fn max_iter(&self) -> u32 {
        self.max_iter
    }

    /// The escape count of pixel (`col`, `row`).
    pub fn pixel(&self, col: u32, row: u32) -> u32 {
        // Validation bounds every coordinate to ±4: these products and sums cannot wrap.
        let cx = self.x0.wrapping_add(i64::from(col).wrapping_mul(self.step));
        let cy = self.y0.wrapping_add(i64::from(row).wrapping_mul(self.step));
        escape_count(cx, cy, self.max_iter)
    }
}

/// Nearest Q8.56 value to `v` (for building jobs; never used in the kernel itself).
pub fn fixed_from_f64(v: f64) -> i64 {
    (v * FIXED_ONE as f64).round() as i64
}

/// How a job's items (SHA-256 items, rows, PTX blocks) are split into chunks: contiguous,
/// in order, sizes differing by at most one item, every chunk non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    items: u64,
    chunks: u32,
}

impl ChunkPlan {
    /// Splits `items` items of `work_per_item` units each into chunks of about
    /// `target_work` units (at least one item per chunk, at least one chunk).
    pub fn new(items: u64, work_per_item: u64, target_work: u64) -> ChunkPlan {
        let items = items.max(1);
        let work = u128::from(items) * u128::from(work_per_item.max(1));
        let wanted = work.div_ceil(u128::from(target_work.max(1)));
        let max = u128::from(items.min(u64::from(u32::MAX)));
        ChunkPlan {
            items,
            chunks: wanted.clamp(1, max) as u32,
        }
    }

    /// A plan of `chunks` chunks over `items` items, as another process made it: `None`
    /// unless `1 <= chunks <= items`.
    pub fn from_parts(items: u64, chunks: u32) -> Option<ChunkPlan> {
        (chunks >= 1 && u64::from(chunks) <= items).then_some(ChunkPlan { items, chunks })
    }

    /// The number of chunks.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The number of items.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The items of chunk `i` (`i < chunks()`).
    pub fn range(&self, i: u32) -> Range<u64> {
        let at = |c: u32| (u128::from(self.items) * u128::from(c) / u128::from(self.chunks)) as u64;
        at(i)..at(i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, i64)]) -> Vec<Param> {
        list.iter().map(|(n, v)| param(n, *v)).collect()
    }

    #[test]
    fn each_builtin_round_trips_through_its_workload() {
        let all = [
            Builtin::Sha256Batch(Sha256Batch::new(3, 5).unwrap()),
            Builtin::Mandelbrot(Mandelbrot::new(4, 3, -FIXED_ONE, 0, FIXED_ONE / 8, 50).unwrap()),
            Builtin::MatmulF32(MatmulF32::new(2, 3, 4).unwrap()),
        ];
        for b in all {
            let Workload::Builtin { kernel, params } = b.to_workload() else {
                panic!("not a builtin");
            };
            assert_eq!(Builtin::parse(&kernel, &params), Ok(b));
        }
    }

    #[test]
    fn sizes_follow_the_parameters() {
        let b = Builtin::parse("matmul_f32", &params(&[("m", 2), ("n", 3), ("k", 5)])).unwrap();
        assert_eq!(b.input_sizes(), vec![40, 60]);
        assert_eq!(b.output_size(), 24);
        assert_eq!(b.work_units(), 2 * 3 * 5 * WORK_PER_MAC);
        let s =
            Builtin::parse("sha256_batch", &params(&[("count", 10), ("item_len", 55)])).unwrap();
        assert_eq!(s.input_sizes(), vec![550]);
        assert_eq!(s.output_size(), 320);
        // 55 + 9 = 64 bytes: one block; 56 + 9 needs two.
        assert_eq!(s.work_per_item(), WORK_PER_SHA256_BLOCK);
        assert_eq!(
            Sha256Batch::new(1, 56).map(|x| Builtin::Sha256Batch(x).work_per_item()),
            Ok(2 * WORK_PER_SHA256_BLOCK)
        );
        let t = Builtin::parse(
            "mandelbrot",
            &params(&[
                ("width", 7),
                ("height", 3),
                ("x0", 0),
                ("y0", 0),
                ("step", 1),
                ("max_iter", 9),
            ]),
        )
        .unwrap();
        assert_eq!(t.input_sizes(), Vec::<u64>::new());
        assert_eq!(t.output_size(), 7 * 3 * 4);
        assert_eq!(t.items(), 3);
    }

    #[test]
    fn unknown_kernel_is_rejected_by_name() {
        assert_eq!(
            Builtin::parse("bitcoin", &[]),
            Err(KernelError::UnknownKernel("bitcoin".into()))
        );
    }

    #[test]
    fn missing_unknown_and_duplicate_parameters_are_named() {
        assert_eq!(
            Builtin::parse("matmul_f32", &params(&[("m", 2), ("n", 3)])),
            Err(KernelError::MissingParam {
                kernel: "matmul_f32",
                param: "k"
            })
        );
        assert_eq!(
            Builtin::parse(
                "matmul_f32",
                &params(&[("m", 2), ("n", 3), ("k", 1), ("z", 1)])
            ),
            Err(KernelError::UnknownParam {
                kernel: "matmul_f32",
                param: "z".into()
            })
        );
        assert_eq!(
            Builtin::parse(
                "matmul_f32",
                &params(&[("m", 2), ("n", 3), ("k", 1), ("m", 1)])
            ),
            Err(KernelError::DuplicateParam {
                kernel: "matmul_f32",
                param: "m"
            })
        );
    }

    #[test]
    fn out_of_range_parameters_are_named_with_their_bounds() {
        assert_eq!(
            Sha256Batch::new(0, 4),
            Err(KernelError::OutOfRange {
                kernel: "sha256_batch",
                param: "count",
                value: 0,
                min: 1,
                max: (MAX_OUTPUT_BYTES / 32) as i64
            })
        );
        assert!(matches!(
            Sha256Batch::new(1, -1),
            Err(KernelError::OutOfRange {
                param: "item_len",
                ..
            })
        ));
        assert!(matches!(
            MatmulF32::new(1, 1, MAX_DIM + 1),
            Err(KernelError::OutOfRange { param: "k", value, .. }) if value == MAX_DIM + 1
        ));
        assert!(matches!(
            Mandelbrot::new(8, 8, 0, 0, 0, 10),
            Err(KernelError::OutOfRange { param: "step", .. })
        ));
        assert!(matches!(
            Mandelbrot::new(8, 8, 0, 0, 1, 0),
            Err(KernelError::OutOfRange {
                param: "max_iter",
                ..
            })
        ));
        assert!(matches!(
            Mandelbrot::new(8, 8, PLANE_LIMIT + 1, 0, 1, 10),
            Err(KernelError::OutOfRange { param: "x0", .. })
        ));
    }

    #[test]
    fn absurd_memory_is_refused() {
        // 65536 × 65536 × 4 bytes = 16 GiB of output.
        assert_eq!(
            MatmulF32::new(MAX_DIM, MAX_DIM, 1),
            Err(KernelError::TooLarge {
                kernel: "matmul_f32",
                param: "n",
                what: "output C",
                bytes: 4 << 32,
                max: MAX_OUTPUT_BYTES
            })
        );
        assert!(matches!(
            MatmulF32::new(8192, 1, MAX_DIM),
            Err(KernelError::TooLarge {
                what: "input A",
                ..
            })
        ));
        assert!(matches!(
            Sha256Batch::new(1 << 20, 4096),
            Err(KernelError::TooLarge { what: "input", .. })
        ));
        assert!(matches!(
            Mandelbrot::new(MAX_DIM, MAX_DIM, 0, 0, 1, 10),
            Err(KernelError::TooLarge {
                what: "output",
                param: "height",
                ..
            })
        ));
    }

    #[test]
    fn a_tile_reaching_past_four_is_refused() {
        let quarter = FIXED_ONE / 4;
        // 3 + 4 × 0.25 = 4: allowed; 3 + 5 × 0.25 > 4: not.
        assert!(Mandelbrot::new(5, 1, 3 * FIXED_ONE, 0, quarter, 10).is_ok());
        assert_eq!(
            Mandelbrot::new(6, 1, 3 * FIXED_ONE, 0, quarter, 10),
            Err(KernelError::OutsidePlane {
                param: "step",
                axis: 'x'
            })
        );
        assert_eq!(
            Mandelbrot::new(1, 6, 0, 3 * FIXED_ONE, quarter, 10),
            Err(KernelError::OutsidePlane {
                param: "step",
                axis: 'y'
            })
        );
    }

    #[test]
    fn fixed_point_product_matches_the_real_product_and_rounds_toward_minus_infinity() {
        let half = FIXED_ONE / 2;
        assert_eq!(fixed_mul(FIXED_ONE, FIXED_ONE), FIXED_ONE);
        assert_eq!(fixed_mul(half, -half), -FIXED_ONE / 4);
        assert_eq!(fixed_mul(8 * FIXED_ONE, 8 * FIXED_ONE), 64 * FIXED_ONE);
        // 1 ulp × 0.5 = 0.5 ulp: the arithmetic shift floors it to 0, and -0.5 ulp to -1.
        assert_eq!(fixed_mul(1, half), 0);
        assert_eq!(fixed_mul(-1, half), -1);
        assert_eq!(fixed_from_f64(-1.5), -3 * half);
    }

    #[test]
    fn known_points_have_exact_escape_counts() {
        let one = FIXED_ONE;
        // In the set: the origin, -1 (period 2), i (period 2 after a step), -2 (z stays 2).
        assert_eq!(escape_count(0, 0, 1000), 1000);
        assert_eq!(escape_count(-one, 0, 1000), 1000);
        assert_eq!(escape_count(0, one, 1000), 1000);
        assert_eq!(escape_count(-2 * one, 0, 1000), 1000);
        // Outside: 2+2i (z1 = 2+2i, |z1|² = 8), 1 (z: 0, 1, 2, 5), 0.5 (escapes at 5).
        assert_eq!(escape_count(2 * one, 2 * one, 1000), 1);
        assert_eq!(escape_count(one, 0, 1000), 3);
        assert_eq!(escape_count(one / 2, 0, 1000), 5);
        // Escaping beats the cap only if it happens before it.
        assert_eq!(escape_count(one, 0, 3), 3);
        assert_eq!(escape_count(one, 0, 2), 2);
        // The far corner of the plane escapes at once.
        assert_eq!(escape_count(PLANE_LIMIT, PLANE_LIMIT, 1000), 1);
        assert_eq!(escape_count(-PLANE_LIMIT, -PLANE_LIMIT, 1000), 1);
    }

    #[test]
    fn chunk_plans_cover_every_item_once_in_order() {
        for (items, per, target) in [
            (10u64, 1u64, 3u64),
            (7, 100, 1),
            (1, 5, 1000),
            (1000, 7, 999),
        ] {
            let plan = ChunkPlan::new(items, per, target);
            assert!(plan.chunks() >= 1 && u64::from(plan.chunks()) <= items);
            let mut next = 0;
            for i in 0..plan.chunks() {
                let r = plan.range(i);
                assert_eq!(r.start, next);
                assert!(r.end > r.start, "empty chunk {i} in {plan:?}");
                next = r.end;
            }
            assert_eq!(next, items);
        }
        assert_eq!(ChunkPlan::new(10, 1, 3).chunks(), 4);
        assert_eq!(ChunkPlan::new(7, 100, 1).chunks(), 7);
        assert_eq!(ChunkPlan::new(1000, 7, 999).chunks(), 8);
        assert_eq!(ChunkPlan::new(1000, 7, u64::MAX).chunks(), 1);
    }

    #[test]
    fn matmul_compare_accepts_reordered_sums_and_rejects_a_wrong_element() {
        let mm = MatmulF32::new(1, 1, 3).unwrap();
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let a = bytes(&[1.0, 1e-8, -1.0]);
        let b = bytes(&[1.0, 1.0, 1.0]);
        // (1 + 1e-8) - 1 = 0 in f32; 1 + (1e-8 - 1) = 5.96e-8: both legitimate orders.
        assert!(
            mm.compare(&a, &b, &bytes(&[0.0]), &bytes(&[5.96e-8]))
                .is_ok()
        );
        assert!(matches!(
            mm.compare(&a, &b, &bytes(&[0.0]), &bytes(&[1e-3])),
            Err(MatmulMismatch::Element { row: 0, col: 0, .. })
        ));
        assert!(
            mm.compare(&a, &b, &bytes(&[f32::NAN]), &bytes(&[f32::NAN]))
                .is_ok()
        );
        assert!(
            mm.compare(&a, &b, &bytes(&[f32::NAN]), &bytes(&[0.0]))
                .is_err()
        );
        assert_eq!(
            mm.compare(&a, &b, &bytes(&[0.0]), &[]),
            Err(MatmulMismatch::Size)
        );
    }
}
