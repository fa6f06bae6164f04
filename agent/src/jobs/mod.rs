//! The job kernel layer: what runs a job's compute, one chunk at a time, on the GPU or the
//! CPU. The runner, governor and receipts sit on top of this and decide *when* chunks run.
//!
//! Map:
//! - [`kernel`]: the built-in kernels parsed from a workload into a validated [`Builtin`]
//!   (sizes, work estimates, chunk plans, the fixed-point and tolerance rules).
//! - [`exec`]: one job's execution (sans-IO): run the next chunk, rest (duty cycle), pause,
//!   or finish, given the governor's decision.
//! - [`runner`]: the thread that drives an execution with the wall clock.
//! - [`desk`]: a job's lifecycle on the device (sans-IO): refuse, prepare, start, control,
//!   close with exactly one receipt.
//! - [`sim`]: jobs on the simulated rig with a simulated clock (governor tests, bench).
//! - [`cpu`]: the CPU backend (every built-in; no PTX).
//! - [`cuda`]: the CUDA backend (cudarc, loaded at run time; built-ins compiled by NVRTC,
//!   and user PTX modules with the argument convention documented there).
//! - [`worker`]: the same, in a worker process without the device key, with limits: how
//!   the running agent runs every job.
//!
//! Use:
//!
//! ```no_run
//! # use heliostat_agent::jobs::{select_backend, Builtin};
//! # use heliostat_agent::jobs::kernel::Sha256Batch;
//! let (backend, fallback) = select_backend(true);
//! if let Some(why) = fallback {
//!     eprintln!("running jobs on the CPU: {why}");
//! }
//! let workload = Builtin::Sha256Batch(Sha256Batch::new(2, 3).unwrap()).to_workload();
//! let mut job = backend
//!     .prepare(&workload, None, vec![b"abcxyz".to_vec()], &[64], backend.default_chunk_work())
//!     .unwrap();
//! for i in 0..job.chunk_count() {
//!     job.run_chunk(i).unwrap(); // the runner may pause or duty-cycle between chunks
//! }
//! let outputs = job.finish().unwrap();
//! ```

pub mod confine;
pub mod cpu;
pub mod cuda;
pub mod desk;
pub mod exec;
pub mod kernel;
pub mod runner;
pub mod sim;
mod test_faults;
pub mod worker;

use attest::Hash32;
use attest::msg::Workload;

/// The channels whose counters a job receipt carries (its energy is their delta).
pub const RECEIPT_KINDS: [attest::msg::ChannelKind; 2] = [
    attest::msg::ChannelKind::Load,
    attest::msg::ChannelKind::Gpu,
];

pub use cpu::CpuBackend;
pub use cuda::{CudaBackend, CudaError};
pub use kernel::{Builtin, ChunkPlan, KernelError};

use cpu::CpuJob;
use cuda::{CudaJob, PtxShape};
use kernel::{MAX_INPUT_BYTES, MAX_OUTPUT_BYTES};

/// At most this many inputs or outputs for a PTX job (as many as a `JobSpec` may name).
pub const MAX_PTX_BUFFERS: usize = 64;
/// At most this many threads per block (CUDA's limit on every current GPU).
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;

/// Why a job could not be prepared, run or finished. The variants are the reasons a runner
/// reports in a `Failed` outcome (and counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The built-in workload is invalid.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The job was released during a long pause and not taken over again.
    #[error("the job's worker was released during a pause")]
    Released,
    /// Wrong number of inputs.
    #[error("the job gives {got} inputs; the workload takes {expected}")]
    InputCount {
        /// What the workload takes.
        expected: usize,
        /// What the job gave.
        got: usize,
    },
    /// An input of the wrong size.
    #[error("input {index} is {got} bytes; the workload takes {expected}")]
    InputSize {
        /// Which input.
        index: usize,
        /// What the workload takes.
        expected: u64,
        /// Its size.
        got: u64,
    },
    /// The job declares a different number of outputs than the workload produces.
    #[error("the job declares {declared} outputs; the workload produces {expected}")]
    OutputCount {
        /// What the workload produces.
        expected: usize,
        /// What the job's `output_sizes` says.
        declared: usize,
    },
    /// The job declares an output size the workload does not produce.
    #[error("output {index}: the job declares {declared} bytes; the workload produces {expected}")]
    OutputSize {
        /// Which output.
        index: usize,
        /// What the workload produces.
        expected: u64,
        /// What the job's `output_sizes` says.
        declared: u64,
    },
    /// A PTX job's buffers are too many or too large.
    #[error("{what} of {bytes} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Which buffer(s).
        what: &'static str,
        /// The size asked for.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A PTX job on a backend that cannot run PTX.
    #[error("PTX workloads need the CUDA backend; this one is the CPU")]
    PtxNeedsGpu,
    /// A PTX job prepared without its module.
    #[error("the PTX module was not supplied")]
    MissingModule,
    /// The PTX module's bytes do not hash to the workload's `module`.
    #[error("the PTX module hashes to {got}, not {expected}")]
    ModuleHashMismatch {
        /// The workload's hash.
        expected: Hash32,
        /// The supplied module's SHA-256.
        got: Hash32,
    },
    /// A PTX launch shape that cannot run.
    #[error("bad PTX launch shape: {0}")]
    BadLaunch(&'static str),
    /// The PTX entry's parameters do not follow the argument convention (checked on the
    /// module's text before it is loaded).
    #[error(transparent)]
    PtxConvention(#[from] attest::ptx::PtxConventionError),
    /// Chunks must run in order, each once.
    #[error("chunk {got} asked for; the next chunk is {expected}")]
    ChunkOutOfOrder {
        /// The next chunk to run.
        expected: u32,
        /// The chunk asked for.
        got: u32,
    },
    /// `finish` before every chunk ran.
    #[error("finish after {done} of {total} chunks")]
    Incomplete {
        /// Chunks run.
        done: u32,
        /// Chunks in the job.
        total: u32,
    },
    /// The CUDA backend failed.
    #[error(transparent)]
    Cuda(#[from] CudaError),
    /// The worker process failed, died or was killed (the reason says which).
    #[error("job worker: {0}")]
    Worker(String),
    /// A checkpoint that does not fit the job.
    #[error("checkpoint: {0}")]
    BadCheckpoint(String),
}

/// Where jobs run: the CPU, or one CUDA device.
#[derive(Debug, Clone)]
pub enum ComputeBackend {
    /// The CPU fallback.
    Cpu(CpuBackend),
    /// A CUDA device.
    Cuda(CudaBackend),
}

/// Opens the GPU if `prefer_gpu` and one can be opened, else the CPU. The second value says
/// why the CPU was chosen when a GPU was wanted (for logs and `agent status`); it is `None`
/// when the GPU opened or was not wanted.
pub fn select_backend(prefer_gpu: bool) -> (ComputeBackend, Option<String>) {
    let cpu = || ComputeBackend::Cpu(CpuBackend::new());
    if !prefer_gpu {
        return (cpu(), None);
    }
    match CudaBackend::open(0) {
        Ok(gpu) => (ComputeBackend::Cuda(gpu), None),
        Err(e) => (
            cpu(),
            Some(format!("no usable CUDA GPU ({e}); jobs run on the CPU")),
        ),
    }
}

impl ComputeBackend {
    /// What a receipt records as the backend.
    pub fn kind(&self) -> attest::msg::Backend {
        match self {
            ComputeBackend::Cpu(_) => attest::msg::Backend::Cpu,
            ComputeBackend::Cuda(gpu) => attest::msg::Backend::Cuda(gpu.name().into()),
        }
    }

    /// A starting chunk size in work units, meant to make one chunk last tens of
    /// milliseconds on a fast machine: short enough for the governor to pause or
    /// duty-cycle promptly, long enough that launches cost little. On an H100 the built-ins
    /// run at roughly 3–7 × 10¹² units/s, so a GPU chunk is about 15–40 ms there (and
    /// tens of times longer on a Jetson): calibrate from measured chunk times.
    pub fn default_chunk_work(&self) -> u64 {
        match self {
            ComputeBackend::Cpu(cpu) => 50_000_000 * cpu.threads() as u64,
            ComputeBackend::Cuda(_) => 100_000_000_000,
        }
    }

    /// Checks a job against its workload and loads it onto this backend, ready to run in
    /// chunks of about `chunk_work` work units.
    ///
    /// - `ptx_module`: the PTX text a `Workload::Ptx` names by hash (checked here against
    ///   that hash); ignored for built-ins.
    /// - `inputs`: the job's input blobs, in order, already fetched and hash-checked.
    /// - `output_sizes`: the job's declared output sizes; a built-in's must equal what it
    ///   produces, a PTX job gets zeroed outputs of these sizes.
    pub fn prepare(
        &self,
        workload: &Workload,
        ptx_module: Option<&[u8]>,
        inputs: Vec<Vec<u8>>,
        output_sizes: &[u64],
        chunk_work: u64,
    ) -> Result<PreparedJob, JobError> {
        match workload {
            Workload::Builtin { kernel, params } => {
                let builtin = Builtin::parse(kernel, params)?;
                check_builtin_buffers(&builtin, &inputs, output_sizes)?;
                let plan = builtin.chunk_plan(chunk_work);
                let work = builtin.work_units();
                let state = match self {
                    ComputeBackend::Cpu(cpu) => State::Cpu(CpuJob::new(cpu, builtin, inputs)),
                    ComputeBackend::Cuda(gpu) => {
                        State::Cuda(CudaJob::builtin(gpu, builtin, &inputs)?)
                    }
                };
                Ok(PreparedJob::new(self.kind(), plan, work, state))
            }
            Workload::Ptx {
                module,
                kernel,
                grid,
                block,
                shared_mem_bytes,
                ..
            } => {
                let ComputeBackend::Cuda(gpu) = self else {
                    return Err(JobError::PtxNeedsGpu);
                };
                let text = ptx_module.ok_or(JobError::MissingModule)?;
                let got = Hash32::digest(text);
                if got != *module {
                    return Err(JobError::ModuleHashMismatch {
                        expected: *module,
                        got,
                    });
                }
                check_ptx_shape(*grid, *block)?;
                check_ptx_buffers(&inputs, output_sizes)?;
                attest::ptx::check_convention(text, kernel, inputs.len(), output_sizes.len())?;
                let threads_per_block = u64::from(block[0] * block[1] * block[2]);
                let per_x_block = threads_per_block * u64::from(grid[1]) * u64::from(grid[2]);
                let plan = ChunkPlan::new(u64::from(grid[0]), per_x_block, chunk_work);
                let shape = PtxShape {
                    grid: *grid,
                    block: *block,
                    shared_mem_bytes: *shared_mem_bytes,
                };
                let job = CudaJob::ptx(gpu, text, kernel, shape, &inputs, output_sizes)?;
                let work = u64::from(grid[0]) * per_x_block;
                Ok(PreparedJob::new(self.kind(), plan, work, State::Cuda(job)))
            }
        }
    }
}

fn check_builtin_buffers(
    builtin: &Builtin,
    inputs: &[Vec<u8>],
    output_sizes: &[u64],
) -> Result<(), JobError> {
    let sizes = builtin.input_sizes();
    if inputs.len() != sizes.len() {
        return Err(JobError::InputCount {
            expected: sizes.len(),
            got: inputs.len(),
        });
    }
    for (index, (input, &expected)) in inputs.iter().zip(&sizes).enumerate() {
        if input.len() as u64 != expected {
            return Err(JobError::InputSize {
                index,
                expected,
                got: input.len() as u64,
            });
        }
    }
    let [declared] = output_sizes else {
        return Err(JobError::OutputCount {
            expected: 1,
            declared: output_sizes.len(),
        });
    };
    if *declared != builtin.output_size() {
        return Err(JobError::OutputSize {
            index: 0,
            expected: builtin.output_size(),
            declared: *declared,
        });
    }
    Ok(())
}

fn check_ptx_shape(grid: [u32; 3], block: [u32; 3]) -> Result<(), JobError> {
    if grid.contains(&0) {
        return Err(JobError::BadLaunch("a grid dimension is 0"));
    }
    if block.contains(&0) {
        return Err(JobError::BadLaunch("a block dimension is 0"));
    }
    let threads: u64 = block.iter().map(|&b| u64::from(b)).product();
    if threads > MAX_THREADS_PER_BLOCK {
        return Err(JobError::BadLaunch("more than 1024 threads per block"));
    }
    Ok(())
}

fn check_ptx_buffers(inputs: &[Vec<u8>], output_sizes: &[u64]) -> Result<(), JobError> {
    if inputs.len() > MAX_PTX_BUFFERS || output_sizes.len() > MAX_PTX_BUFFERS {
        return Err(JobError::TooLarge {
            what: "the buffer count",
            bytes: inputs.len().max(output_sizes.len()) as u64,
            max: MAX_PTX_BUFFERS as u64,
        });
    }
    let input_bytes: u64 = inputs.iter().map(|i| i.len() as u64).sum();
    if input_bytes > MAX_INPUT_BYTES {
        return Err(JobError::TooLarge {
            what: "inputs",
            bytes: input_bytes,
            max: MAX_INPUT_BYTES,
        });
    }
    let output_bytes = output_sizes
        .iter()
        .fold(0u64, |sum, &s| sum.saturating_add(s));
    if output_bytes > MAX_OUTPUT_BYTES {
        return Err(JobError::TooLarge {
            what: "outputs",
            bytes: output_bytes,
            max: MAX_OUTPUT_BYTES,
        });
    }
    Ok(())
}

/// A job loaded onto a backend, run one chunk at a time, in order. Between any two chunks
/// the job holds no thread and no lock: the runner may wait as long as it likes (pause,
/// duty cycle) and then go on, or drop the job (cancel).
pub struct PreparedJob {
    backend: attest::msg::Backend,
    plan: ChunkPlan,
    work: u64,
    done: u32,
    state: State,
}

enum State {
    Cpu(CpuJob),
    Cuda(CudaJob),
    /// In a worker process (see [`worker`]).
    Worker(worker::WorkerJob),
    /// Let go during a long pause (its worker ended, its GPU memory freed); its progress is
    /// in the checkpoint it was released at, and [`PreparedJob::take_over`] brings it back.
    Released,
}

impl std::fmt::Debug for PreparedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedJob")
            .field("backend", &self.backend)
            .field("plan", &self.plan)
            .field("work", &self.work)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PreparedJob {
    fn new(backend: attest::msg::Backend, plan: ChunkPlan, work: u64, state: State) -> Self {
        PreparedJob {
            backend,
            plan,
            work,
            done: 0,
            state,
        }
    }

    /// Where the job runs (the receipt's `backend`).
    pub fn backend(&self) -> &attest::msg::Backend {
        &self.backend
    }

    /// The number of chunks (kernel launches on a GPU): the receipt's `chunks`.
    pub fn chunk_count(&self) -> u32 {
        self.plan.chunks()
    }

    /// Chunks run so far; the next chunk to run has this index.
    pub fn chunks_done(&self) -> u32 {
        self.done
    }

    /// Lets the job's resources go (its worker process, its GPU context and memory) while
    /// it waits; take a checkpoint first: [`take_over`](Self::take_over) continues from it.
    pub fn release(&mut self) {
        self.state = State::Released;
    }

    /// Whether [`release`](Self::release)d.
    pub fn is_released(&self) -> bool {
        matches!(self.state, State::Released)
    }

    /// Continues a released job in `fresh`: the same job prepared again and restored from
    /// the checkpoint taken at its release (so at the same chunk).
    pub fn take_over(&mut self, fresh: PreparedJob) -> Result<(), JobError> {
        if fresh.done != self.done || fresh.plan != self.plan {
            return Err(JobError::BadCheckpoint(format!(
                "taken over at chunk {} of {}, released at {} of {}",
                fresh.done,
                fresh.plan.chunks(),
                self.done,
                self.plan.chunks()
            )));
        }
        self.backend = fresh.backend;
        self.state = fresh.state;
        Ok(())
    }

    /// Whether every chunk has run.
    pub fn is_complete(&self) -> bool {
        self.done == self.plan.chunks()
    }

    /// Estimated work units of the whole job (see [`kernel::WORK_PER_SHA256_BLOCK`]; for
    /// PTX, one unit per thread).
    pub fn work_units(&self) -> u64 {
        self.work
    }

    /// Estimated work units of chunk `i` (`i < chunk_count()`).
    pub fn chunk_work_units(&self, i: u32) -> u64 {
        let r = self.plan.range(i);
        let per = self.work / self.plan.items();
        (r.end - r.start) * per
    }

    /// Runs chunk `i`, which must be [`chunks_done`](Self::chunks_done); returns when it has
    /// finished. A failed chunk is not counted and may be retried (after a CUDA fault the
    /// device context is usually unusable: drop the job).
    pub fn run_chunk(&mut self, i: u32) -> Result<(), JobError> {
        if i != self.done || i >= self.plan.chunks() {
            return Err(JobError::ChunkOutOfOrder {
                expected: self.done,
                got: i,
            });
        }
        let items = self.plan.range(i);
        match &mut self.state {
            State::Cpu(job) => job.run(items),
            State::Cuda(job) => job.run(items)?,
            State::Worker(job) => job.run(i)?,
            State::Released => return Err(JobError::Released),
        }
        self.done += 1;
        Ok(())
    }

    /// The outputs so far, with the chunks done: a checkpoint to resume from after a
    /// restart ([`PreparedJob::restore`]).
    pub fn snapshot(&mut self) -> Result<(u32, Vec<Vec<u8>>), JobError> {
        let outputs = match &mut self.state {
            State::Cpu(job) => job.snapshot(),
            State::Cuda(job) => job.snapshot()?,
            State::Worker(job) => job.snapshot()?,
            State::Released => return Err(JobError::Released),
        };
        Ok((self.done, outputs))
    }

    /// Continues from a checkpoint: `done` chunks ran and left `outputs`. Only on a job
    /// that has run nothing yet.
    pub fn restore(&mut self, done: u32, outputs: Vec<Vec<u8>>) -> Result<(), JobError> {
        if self.done != 0 || done > self.plan.chunks() {
            return Err(JobError::BadCheckpoint(format!(
                "{done} chunks done of {} (this run has done {})",
                self.plan.chunks(),
                self.done
            )));
        }
        let fits = match &mut self.state {
            State::Cpu(job) => job.restore(outputs),
            State::Cuda(job) => job.restore(outputs)?,
            State::Worker(job) => job.restore(done, outputs)?,
            State::Released => return Err(JobError::Released),
        };
        if !fits {
            return Err(JobError::BadCheckpoint(
                "its outputs are not the job's sizes".into(),
            ));
        }
        self.done = done;
        Ok(())
    }

    /// The outputs, in order, each of its declared size. Every chunk must have run.
    pub fn finish(self) -> Result<Vec<Vec<u8>>, JobError> {
        if !self.is_complete() {
            return Err(JobError::Incomplete {
                done: self.done,
                total: self.plan.chunks(),
            });
        }
        match self.state {
            State::Cpu(job) => Ok(job.finish()),
            State::Cuda(job) => Ok(job.finish()?),
            State::Worker(job) => job.finish(),
            State::Released => Err(JobError::Released),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::kernel::{FIXED_ONE, Mandelbrot, MatmulF32, Sha256Batch};

    fn cpu() -> ComputeBackend {
        ComputeBackend::Cpu(CpuBackend::with_threads(2))
    }

    fn run(job: &mut PreparedJob) {
        for i in 0..job.chunk_count() {
            job.run_chunk(i).unwrap();
        }
    }

    #[test]
    fn a_prepared_job_runs_chunk_by_chunk_and_yields_its_output() {
        let b = Builtin::Sha256Batch(Sha256Batch::new(4, 3).unwrap());
        let per_item = b.work_per_item();
        let mut job = cpu()
            .prepare(
                &b.to_workload(),
                None,
                vec![b"abcabcabcabc".to_vec()],
                &[128],
                per_item,
            )
            .unwrap();
        assert_eq!(job.chunk_count(), 4);
        assert_eq!(job.backend(), &attest::msg::Backend::Cpu);
        assert_eq!(job.work_units(), 4 * per_item);
        assert_eq!(job.chunk_work_units(1), per_item);
        job.run_chunk(0).unwrap();
        assert_eq!(job.chunks_done(), 1);
        assert!(!job.is_complete());
        job.run_chunk(1).unwrap();
        job.run_chunk(2).unwrap();
        job.run_chunk(3).unwrap();
        assert!(job.is_complete());
        let out = job.finish().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][96..], Hash32::digest(b"abc").as_bytes());
    }

    #[test]
    fn chunks_out_of_order_and_early_finish_are_refused() {
        let b = Builtin::MatmulF32(MatmulF32::new(4, 1, 1).unwrap());
        let one = 1f32.to_le_bytes().repeat(4);
        let mut job = cpu()
            .prepare(
                &b.to_workload(),
                None,
                vec![one, 1f32.to_le_bytes().to_vec()],
                &[16],
                1,
            )
            .unwrap();
        assert_eq!(job.chunk_count(), 4);
        assert_eq!(
            job.run_chunk(1),
            Err(JobError::ChunkOutOfOrder {
                expected: 0,
                got: 1
            })
        );
        job.run_chunk(0).unwrap();
        assert_eq!(
            job.run_chunk(0),
            Err(JobError::ChunkOutOfOrder {
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            job.finish().unwrap_err(),
            JobError::Incomplete { done: 1, total: 4 }
        );
    }

    #[test]
    fn sizes_that_disagree_with_the_workload_are_refused() {
        let w = Builtin::MatmulF32(MatmulF32::new(2, 3, 4).unwrap()).to_workload();
        let (a, b) = (vec![0u8; 32], vec![0u8; 48]);
        let prep = |inputs: Vec<Vec<u8>>, outs: &[u64]| {
            cpu().prepare(&w, None, inputs, outs, 1).map(|_| ())
        };
        assert_eq!(
            prep(vec![a.clone()], &[24]),
            Err(JobError::InputCount {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            prep(vec![a.clone(), vec![0u8; 47]], &[24]),
            Err(JobError::InputSize {
                index: 1,
                expected: 48,
                got: 47
            })
        );
        assert_eq!(
            prep(vec![a.clone(), b.clone()], &[24, 8]),
            Err(JobError::OutputCount {
                expected: 1,
                declared: 2
            })
        );
        assert_eq!(
            prep(vec![a.clone(), b.clone()], &[23]),
            Err(JobError::OutputSize {
                index: 0,
                expected: 24,
                declared: 23
            })
        );
        assert_eq!(prep(vec![a, b], &[24]), Ok(()));
    }

    #[test]
    fn bad_parameters_surface_as_a_typed_kernel_error() {
        let w = Workload::Builtin {
            kernel: "mandelbrot".into(),
            params: vec![attest::msg::Param {
                name: "width".into(),
                value: 4,
            }],
        };
        assert_eq!(
            cpu().prepare(&w, None, vec![], &[16], 1).unwrap_err(),
            JobError::Kernel(KernelError::MissingParam {
                kernel: "mandelbrot",
                param: "height"
            })
        );
    }

    #[test]
    fn ptx_on_the_cpu_is_refused() {
        let w = Workload::Ptx {
            module: Hash32::digest(b""),
            module_size: 0,
            kernel: "k".into(),
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
        };
        assert_eq!(
            cpu().prepare(&w, Some(b""), vec![], &[], 1).unwrap_err(),
            JobError::PtxNeedsGpu
        );
    }

    #[test]
    fn ptx_shapes_and_buffers_are_checked() {
        assert!(check_ptx_shape([1, 1, 1], [1024, 1, 1]).is_ok());
        assert_eq!(
            check_ptx_shape([0, 1, 1], [1, 1, 1]),
            Err(JobError::BadLaunch("a grid dimension is 0"))
        );
        assert!(matches!(
            check_ptx_shape([1, 1, 1], [32, 32, 2]),
            Err(JobError::BadLaunch(_))
        ));
        assert!(matches!(
            check_ptx_buffers(&[], &[MAX_OUTPUT_BYTES, 1]),
            Err(JobError::TooLarge {
                what: "outputs",
                ..
            })
        ));
        assert!(check_ptx_buffers(&[vec![1]], &[MAX_OUTPUT_BYTES]).is_ok());
    }

    #[test]
    fn chunking_does_not_change_a_mandelbrot_tile() {
        let t = Builtin::Mandelbrot(
            Mandelbrot::new(64, 48, -2 * FIXED_ONE, -FIXED_ONE, FIXED_ONE / 24, 300).unwrap(),
        );
        let w = t.to_workload();
        let size = [t.output_size()];
        let mut one = cpu().prepare(&w, None, vec![], &size, u64::MAX).unwrap();
        let mut many = cpu().prepare(&w, None, vec![], &size, 1).unwrap();
        assert_eq!((one.chunk_count(), many.chunk_count()), (1, 48));
        run(&mut one);
        run(&mut many);
        assert_eq!(one.finish().unwrap(), many.finish().unwrap());
    }

    #[test]
    fn selecting_the_cpu_on_purpose_gives_no_fallback_reason() {
        let (backend, why) = select_backend(false);
        assert!(matches!(backend, ComputeBackend::Cpu(_)));
        assert_eq!(why, None);
        assert_eq!(backend.kind(), attest::msg::Backend::Cpu);
    }

    #[test]
    fn a_job_restored_from_a_checkpoint_finishes_with_the_outputs_of_one_uninterrupted_run() {
        let b = Builtin::Sha256Batch(Sha256Batch::new(50, 16).unwrap());
        let input: Vec<u8> = (0..800u32).map(|i| (i * 7 % 251) as u8).collect();
        let cpu = ComputeBackend::Cpu(CpuBackend::new());
        let prep = || {
            cpu.prepare(
                &b.to_workload(),
                None,
                vec![input.clone()],
                &[b.output_size()],
                1,
            )
            .unwrap()
        };
        let mut whole = prep();
        for i in 0..whole.chunk_count() {
            whole.run_chunk(i).unwrap();
        }
        let whole = whole.finish().unwrap();
        let mut first = prep();
        for i in 0..7 {
            first.run_chunk(i).unwrap();
        }
        let (done, outputs) = first.snapshot().unwrap();
        assert_eq!(done, 7);
        let mut second = prep();
        assert!(matches!(
            second.restore(done, vec![vec![0; 3]]),
            Err(JobError::BadCheckpoint(_))
        ));
        second.restore(done, outputs).unwrap();
        assert_eq!(second.chunks_done(), 7);
        assert!(matches!(
            second.run_chunk(0),
            Err(JobError::ChunkOutOfOrder {
                expected: 7,
                got: 0
            })
        ));
        for i in 7..second.chunk_count() {
            second.run_chunk(i).unwrap();
        }
        assert_eq!(second.finish().unwrap(), whole);
    }

    #[test]
    fn prepared_jobs_and_backends_can_move_to_a_worker_thread() {
        fn send<T: Send>() {}
        send::<PreparedJob>();
        send::<ComputeBackend>();
        fn sync<T: Sync>() {}
        sync::<ComputeBackend>();
    }
}
