//! The CUDA backend (cudarc, loaded at run time): built-in kernels compiled from the CUDA C
//! in [`BUILTIN_SOURCE`] by NVRTC on first use, and user PTX modules.
//!
//! The binary needs no CUDA to build or start. [`CudaBackend::open`] looks for the driver
//! library before calling into it (cudarc panics when the library is absent) and returns
//! [`CudaError::NoDriver`]; a machine with a driver but no NVRTC library can still run PTX
//! jobs, and built-ins there fail with [`CudaError::NvrtcMissing`] (run them on the CPU).
//!
//! Every chunk is one kernel launch followed by a stream synchronisation, so a chunk has
//! finished (and its errors are known) when [`PreparedJob::run_chunk`] returns.
//! Outputs stay on the device until [`PreparedJob::finish`] copies them back.
//!
//! # PTX argument convention
//!
//! A PTX workload's kernel (`.visible .entry`, C linkage) takes, in this order:
//!
//! ```c
//! extern "C" __global__ void kernel(
//!     const uint8_t* in0, uint64_t in0_len,   // one pointer/length pair per input, in job order
//!     ...,
//!     uint8_t* out0, uint64_t out0_len,       // one pair per output, as in output_sizes
//!     ...,
//!     uint32_t block_offset);                 // x index of this launch's first block
//! ```
//!
//! Outputs start zeroed. The job's `grid` is split along x into chunks of consecutive blocks,
//! one launch each, so a kernel must compute its global block index as
//! `blockIdx.x + block_offset` (it is 0 when the job runs in one chunk); y and z are never
//! split. Inputs are read-only by contract. Buffers are 256-byte aligned; a zero-length
//! buffer still gets a valid (1-byte) pointer. The kernel must stay within its lengths:
//! an out-of-bounds access faults the whole CUDA context (see [`CudaError::Driver`]).
//! The entry's parameter list is checked against this convention on the module's text
//! before the module is loaded (`attest::ptx::check_convention`, which the controller can
//! run at submission too): a kernel declaring other parameters is refused, not launched.
//!
//! [`PreparedJob::run_chunk`]: super::PreparedJob::run_chunk
//! [`PreparedJob::finish`]: super::PreparedJob::finish

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::kernel::Builtin;

/// The CUDA C source of the built-in kernels, compiled by NVRTC for the device's compute
/// capability. Each mirrors the CPU definition in [`super::kernel`] operation for
/// operation (see [`super::kernel::escape_count`] for the Mandelbrot rules); there is no
/// `#include` because NVRTC has no standard headers.
pub const BUILTIN_SOURCE: &str = include_str!("builtin.cu");

const SHA_BLOCK: u32 = 128;
const MANDELBROT_BLOCK: u32 = 256;
const MATMUL_TILE: u32 = 16;

/// Why the CUDA backend could not open or run something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library on this machine.
    #[error("no CUDA driver library (libcuda.so) found: no NVIDIA driver on this machine")]
    NoDriver,
    /// The driver is there but would not initialise.
    #[error("the CUDA driver failed to initialise: {0}")]
    Init(String),
    /// No device with that ordinal.
    #[error("no CUDA device {ordinal}: the driver reports {count}")]
    NoDevice {
        /// The device asked for.
        ordinal: usize,
        /// How many there are.
        count: usize,
    },
    /// Built-in kernels need NVRTC, which this machine lacks.
    #[error(
        "no NVRTC library (libnvrtc.so): built-in kernels cannot be compiled for the GPU; run them on the CPU backend"
    )]
    NvrtcMissing,
    /// NVRTC rejected the built-in source (a bug, or an NVRTC that does not know the GPU).
    #[error("NVRTC could not compile the built-in kernels: {0}")]
    Compile(String),
    /// A PTX module the driver will not load.
    #[error("PTX module rejected: {0}")]
    BadPtx(String),
    /// The PTX module has no kernel of that name.
    #[error("the PTX module has no kernel `{0}`")]
    NoSuchKernel(String),
    /// A driver call failed (a kernel fault shows up here, on the launch's synchronisation).
    #[error("CUDA {op}: {error}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's error name and description.
        error: String,
    },
    /// cudarc panicked (for example, a driver too old to have a symbol it needs).
    #[error("the CUDA library panicked while {op}: {message}")]
    Panicked {
        /// What was being done.
        op: &'static str,
        /// The panic message.
        message: String,
    },
}

fn driver(op: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |e| CudaError::Driver {
        op,
        error: e.to_string(),
    }
}

/// Runs `f`, turning a panic inside cudarc into [`CudaError::Panicked`].
fn guarded<T>(op: &'static str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(CudaError::Panicked { op, message })
    })
}

/// One CUDA device, its stream and the compiled built-ins. Cheap to clone (shared).
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    nvrtc: bool,
    /// The built-in module, compiled on first use and kept for the backend's life.
    builtins: Mutex<Option<Arc<CudaModule>>>,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend")
            .field("name", &self.inner.name)
            .field("compute_capability", &self.inner.compute_capability)
            .field("nvrtc", &self.inner.nvrtc)
            .finish()
    }
}

/// True when the CUDA driver library can be loaded (no driver call is made).
pub fn driver_present() -> bool {
    // SAFETY: dlopen of the driver library; its initialisers are NVIDIA's and run once.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// True when the NVRTC library can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: as for `driver_present`, with libnvrtc.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

impl CudaBackend {
    /// Opens device `ordinal`, or says why not. Never panics, with or without a driver.
    pub fn open(ordinal: usize) -> Result<CudaBackend, CudaError> {
        // Checked first: cudarc panics on its first call if the library is missing.
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        guarded("opening the device", || {
            cudarc::driver::result::init().map_err(|e| CudaError::Init(e.to_string()))?;
            let count =
                cudarc::driver::result::device::get_count().map_err(driver("counting devices"))?;
            let count = usize::try_from(count).unwrap_or(0);
            if ordinal >= count {
                return Err(CudaError::NoDevice { ordinal, count });
            }
            let ctx = CudaContext::new(ordinal).map_err(driver("creating the context"))?;
            let name = ctx.name().map_err(driver("reading the device name"))?;
            let compute_capability = ctx
                .compute_capability()
                .map_err(driver("reading the compute capability"))?;
            let stream = ctx.default_stream();
            Ok(CudaBackend {
                inner: Arc::new(Inner {
                    ctx,
                    stream,
                    name,
                    compute_capability,
                    nvrtc: nvrtc_present(),
                    builtins: Mutex::new(None),
                }),
            })
        })
    }

    /// The device's name (e.g. "NVIDIA H100 80GB HBM3"), as receipts give it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// Whether built-in kernels can run here (NVRTC was found).
    pub fn has_nvrtc(&self) -> bool {
        self.inner.nvrtc
    }

    /// The built-in module, compiling [`BUILTIN_SOURCE`] on first use.
    fn builtin_module(&self) -> Result<Arc<CudaModule>, CudaError> {
        if !self.inner.nvrtc {
            return Err(CudaError::NvrtcMissing);
        }
        // A poisoned lock only means another thread panicked while compiling: the cache
        // holds either nothing or a complete module, so it is still usable.
        let mut cache = self
            .inner
            .builtins
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(module) = cache.as_ref() {
            return Ok(module.clone());
        }
        let (major, minor) = self.inner.compute_capability;
        let module = guarded("compiling the built-in kernels", || {
            let opts = CompileOptions {
                options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
                name: Some("heliostat_builtins.cu".into()),
                ..Default::default()
            };
            let ptx = cudarc::nvrtc::compile_ptx_with_opts(BUILTIN_SOURCE, opts)
                .map_err(|e| CudaError::Compile(compile_error_text(&e)))?;
            self.inner
                .ctx
                .load_module(ptx)
                .map_err(driver("loading the built-in kernels"))
        })?;
        *cache = Some(module.clone());
        Ok(module)
    }

    /// Loads a user PTX module (text; one trailing NUL allowed) and finds its kernel.
    fn ptx_function(&self, module: &[u8], kernel: &str) -> Result<CudaFunction, CudaError> {
        let text = module.strip_suffix(&[0]).unwrap_or(module);
        if text.contains(&0) {
            return Err(CudaError::BadPtx("a NUL byte inside the text".into()));
        }
        let text = std::str::from_utf8(text)
            .map_err(|e| CudaError::BadPtx(format!("not UTF-8 text: {e}")))?;
        if kernel.is_empty() || kernel.contains('\0') {
            return Err(CudaError::NoSuchKernel(kernel.into()));
        }
        guarded("loading a PTX module", || {
            let module = self
                .inner
                .ctx
                .load_module(Ptx::from_src(text))
                .map_err(|e| CudaError::BadPtx(e.to_string()))?;
            module
                .load_function(kernel)
                .map_err(|_| CudaError::NoSuchKernel(kernel.into()))
        })
    }

    fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>, CudaError> {
        let stream = &self.inner.stream;
        // A zero-length allocation is an error in CUDA: give empty buffers one byte.
        if bytes.is_empty() {
            stream.alloc_zeros(1)
        } else {
            stream.clone_htod(bytes)
        }
        .map_err(driver("copying an input to the device"))
    }

    fn zeroed(&self, len: u64) -> Result<CudaSlice<u8>, CudaError> {
        self.inner
            .stream
            .alloc_zeros(len.max(1) as usize)
            .map_err(driver("allocating an output"))
    }
}

fn compile_error_text(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => {
            format!("{nvrtc:?}: {}", log.to_string_lossy())
        }
        other => format!("{other:?}"),
    }
}

/// A PTX job's launch shape (checked by the caller: no zero dimension, at most 1024
/// threads per block).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PtxShape {
    pub(crate) grid: [u32; 3],
    pub(crate) block: [u32; 3],
    pub(crate) shared_mem_bytes: u32,
}

/// What a job launches.
enum Launch {
    Builtin(Builtin),
    Ptx(PtxShape),
}

/// A job's state on the device: its function, inputs and outputs (device memory), and
/// the declared byte length of each (the device buffers may be longer).
pub(crate) struct CudaJob {
    backend: CudaBackend,
    func: CudaFunction,
    launch: Launch,
    inputs: Vec<(CudaSlice<u8>, u64)>,
    outputs: Vec<(CudaSlice<u8>, u64)>,
}

impl CudaJob {
    /// A built-in job; `inputs` have the built-in's sizes (the caller checks).
    pub(crate) fn builtin(
        backend: &CudaBackend,
        builtin: Builtin,
        inputs: &[Vec<u8>],
    ) -> Result<CudaJob, CudaError> {
        let module = backend.builtin_module()?;
        let func = guarded("loading a built-in kernel", || {
            module
                .load_function(builtin.name())
                .map_err(driver("finding a built-in kernel"))
        })?;
        let out = builtin.output_size();
        CudaJob::new(backend, func, Launch::Builtin(builtin), inputs, &[out])
    }

    /// A PTX job.
    pub(crate) fn ptx(
        backend: &CudaBackend,
        module: &[u8],
        kernel: &str,
        shape: PtxShape,
        inputs: &[Vec<u8>],
        output_sizes: &[u64],
    ) -> Result<CudaJob, CudaError> {
        let func = backend.ptx_function(module, kernel)?;
        CudaJob::new(backend, func, Launch::Ptx(shape), inputs, output_sizes)
    }

    fn new(
        backend: &CudaBackend,
        func: CudaFunction,
        launch: Launch,
        inputs: &[Vec<u8>],
        output_sizes: &[u64],
    ) -> Result<CudaJob, CudaError> {
        guarded("allocating job buffers", || {
            let inputs = inputs
                .iter()
                .map(|i| Ok((backend.upload(i)?, i.len() as u64)))
                .collect::<Result<Vec<_>, CudaError>>()?;
            let outputs = output_sizes
                .iter()
                .map(|&len| Ok((backend.zeroed(len)?, len)))
                .collect::<Result<Vec<_>, CudaError>>()?;
            Ok(CudaJob {
                backend: backend.clone(),
                func,
                launch,
                inputs,
                outputs,
            })
        })
    }

    /// Launches the kernel over `items` (one chunk) and waits for it.
    pub(crate) fn run(&mut self, items: core::ops::Range<u64>) -> Result<(), CudaError> {
        guarded("running a chunk", || {
            self.launch(items)?;
            self.backend
                .inner
                .stream
                .synchronize()
                .map_err(driver("running a chunk"))
        })
    }

    fn launch(&mut self, items: core::ops::Range<u64>) -> Result<(), CudaError> {
        let CudaJob {
            backend,
            func,
            launch,
            inputs,
            outputs,
        } = self;
        let stream = &backend.inner.stream;
        let mut args = stream.launch_builder(func);
        let (first, end) = (items.start, items.end);
        let n = end - first;
        // Each branch binds its scalar arguments first: the builder holds references to them.
        // SAFETY (all launches): each built-in's arguments match its signature in
        // BUILTIN_SOURCE, and its grid stays within the buffers it is given; a PTX kernel's
        // arguments follow the documented convention, and what it does with them is its
        // author's contract (a fault is reported by the driver on synchronisation).
        let launched = match launch {
            Launch::Builtin(Builtin::Sha256Batch(s)) => {
                let item_len = u64::from(s.item_len());
                args.arg(&inputs[0].0)
                    .arg(&item_len)
                    .arg(&first)
                    .arg(&end)
                    .arg(&mut outputs[0].0);
                unsafe { args.launch(linear(n, SHA_BLOCK)) }
            }
            Launch::Builtin(Builtin::Mandelbrot(t)) => {
                let (x0, y0, step) = (t.x0(), t.y0(), t.step());
                let (width, max_iter) = (t.width(), t.max_iter());
                // Rows to pixels.
                let (p0, p1) = (first * u64::from(width), end * u64::from(width));
                args.arg(&x0)
                    .arg(&y0)
                    .arg(&step)
                    .arg(&width)
                    .arg(&max_iter)
                    .arg(&p0)
                    .arg(&p1)
                    .arg(&mut outputs[0].0);
                unsafe { args.launch(linear(p1 - p0, MANDELBROT_BLOCK)) }
            }
            Launch::Builtin(Builtin::MatmulF32(mm)) => {
                let (cols, k) = (mm.n(), mm.k());
                // Rows are at most MAX_DIM (2^16): they fit u32.
                let (row0, row_end) = (first as u32, end as u32);
                let cfg = LaunchConfig {
                    grid_dim: (
                        cols.div_ceil(MATMUL_TILE),
                        (n as u32).div_ceil(MATMUL_TILE),
                        1,
                    ),
                    block_dim: (MATMUL_TILE, MATMUL_TILE, 1),
                    shared_mem_bytes: 0,
                };
                args.arg(&inputs[0].0)
                    .arg(&inputs[1].0)
                    .arg(&mut outputs[0].0)
                    .arg(&cols)
                    .arg(&k)
                    .arg(&row0)
                    .arg(&row_end);
                unsafe { args.launch(cfg) }
            }
            Launch::Ptx(PtxShape {
                grid,
                block,
                shared_mem_bytes,
            }) => {
                // Blocks are counted in u32 (grid[0] is a u32).
                let block_offset = first as u32;
                let cfg = LaunchConfig {
                    grid_dim: (n as u32, grid[1], grid[2]),
                    block_dim: (block[0], block[1], block[2]),
                    shared_mem_bytes: *shared_mem_bytes,
                };
                for (buf, len) in inputs.iter() {
                    args.arg(buf).arg(len);
                }
                for (buf, len) in outputs.iter() {
                    args.arg(buf).arg(len);
                }
                args.arg(&block_offset);
                unsafe { args.launch(cfg) }
            }
        };
        launched.map(|_| ()).map_err(driver("launching a kernel"))
    }

    /// The outputs so far (a checkpoint; all of them once every chunk ran), copied back
    /// from the device, each at its declared length.
    pub(crate) fn snapshot(&self) -> Result<Vec<Vec<u8>>, CudaError> {
        guarded("copying outputs back", || {
            let stream = &self.backend.inner.stream;
            self.outputs
                .iter()
                .map(|(buf, len)| {
                    let len = *len as usize;
                    if len == 0 {
                        return Ok(Vec::new());
                    }
                    stream
                        .clone_dtoh(&buf.slice(..len))
                        .map_err(driver("copying an output back"))
                })
                .collect()
        })
    }

    /// Puts back outputs saved by [`CudaJob::snapshot`]; `Ok(false)` when they do not fit.
    pub(crate) fn restore(&mut self, outputs: Vec<Vec<u8>>) -> Result<bool, CudaError> {
        if outputs.len() != self.outputs.len()
            || outputs
                .iter()
                .zip(&self.outputs)
                .any(|(o, (_, len))| o.len() as u64 != *len)
        {
            return Ok(false);
        }
        guarded("restoring a checkpoint", || {
            let stream = self.backend.inner.stream.clone();
            for (o, (buf, len)) in outputs.iter().zip(self.outputs.iter_mut()) {
                if *len == 0 {
                    continue;
                }
                let mut view = buf.slice_mut(..*len as usize);
                stream
                    .memcpy_htod(&o[..], &mut view)
                    .map_err(driver("restoring a checkpoint"))?;
            }
            stream
                .synchronize()
                .map_err(driver("restoring a checkpoint"))?;
            Ok(true)
        })
    }

    /// Copies the outputs back, each at its declared length.
    pub(crate) fn finish(self) -> Result<Vec<Vec<u8>>, CudaError> {
        self.snapshot()
    }
}

/// A 1-D launch covering `n` threads in blocks of `block`.
fn linear(n: u64, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(u64::from(block)) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}
