//! What is simulated: the marketplace's job mix, the kinds of lying device, and the
//! validation policies (one check per kernel) the controller can run. Plain data and pure
//! functions; the fleet that uses them is in `fleet.rs`.

use crate::rng::Rng;

/// Buyer jobs per device-hour: the scheduler simulation's world runs 100 jobs an hour
/// (2,400 a day) over 1,000 devices (BENCHMARKS.md, "scheduler simulation").
pub const JOBS_PER_DEVICE_HOUR: f64 = 0.1;

/// Window of the issue's target: a liar should be caught within this many of its jobs.
pub const WINDOW: u32 = 500;

/// Jobs after which an "honest until trusted" liar starts to lie.
pub const TRUSTED_AFTER: u32 = 50;

/// The adaptive (BOINC-like) policy: every job checked until this many validated results,
/// then one in [`ADAPTIVE_N`].
pub const ADAPTIVE_WARMUP: u32 = 10;
/// See [`ADAPTIVE_WARMUP`].
pub const ADAPTIVE_N: f64 = 100.0;

/// Items the controller recomputes per sampled job (`sample:k`, the default k).
pub const SAMPLE_K: u32 = 64;

/// The kernels of the job mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `sha256_batch` of [`SHA_ITEMS`] items: per-item outputs (digests).
    Sha256,
    /// `mandelbrot` 1024 x 1024: per-pixel outputs (escape counts).
    Mandelbrot,
    /// `matmul_f32`, square, n in {512, 1024, 2048}.
    Matmul,
    /// An opaque PTX module: its output can only be compared whole, by hash.
    Ptx,
}

/// Items of a `sha256_batch` job.
pub const SHA_ITEMS: u32 = 8_192;
/// Pixels of a `mandelbrot` job.
pub const MANDELBROT_ITEMS: u32 = 1_024 * 1_024;
/// The matrix sizes of `matmul_f32` jobs, equally likely.
pub const MATMUL_N: [usize; 3] = [512, 1_024, 2_048];

/// The job mix, cumulative shares in 1/65,536 (40 % sha256, 30 % mandelbrot, 20 % matmul,
/// 10 % PTX), so that one 16-bit slice of a random word picks the kernel.
const MIX_CUMULATIVE: [(u64, Kernel); 4] = [
    (26_214, Kernel::Sha256),
    (45_875, Kernel::Mandelbrot),
    (58_982, Kernel::Matmul),
    (65_536, Kernel::Ptx),
];

/// The mix as shares, for the report and the closed-form checks.
pub const MIX: [(Kernel, f64); 4] = [
    (Kernel::Sha256, 0.40),
    (Kernel::Mandelbrot, 0.30),
    (Kernel::Matmul, 0.20),
    (Kernel::Ptx, 0.10),
];

/// One buyer job as the simulation needs it.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub kernel: Kernel,
    /// Index into [`MATMUL_N`] (matrix products only).
    pub matmul_size: usize,
    /// Device-hours of one run (the scheduler simulation's 0.5-4 h).
    pub hours: f64,
    /// Nominal power of its GPU class, W (25, 300 or 500, the scheduler's classes in its
    /// shares: half embedded, 35 % consumer, 15 % datacenter).
    pub watts: f64,
}

impl Job {
    /// Draws a job from one random word: bits 0-15 the kernel, 16-31 the class, 32-55 the
    /// hours, 56-63 the matrix size.
    #[inline]
    pub fn draw(rng: &mut Rng) -> Job {
        let w = rng.next_u64();
        let k = w & 0xffff;
        let kernel = MIX_CUMULATIVE
            .iter()
            .find(|(edge, _)| k < *edge)
            .map_or(Kernel::Ptx, |(_, kernel)| *kernel);
        let c = (w >> 16) & 0xffff;
        let watts = if c < 32_768 {
            25.0
        } else if c < 55_706 {
            300.0
        } else {
            500.0
        };
        let hours = 0.5 + 3.5 * ((w >> 32) & 0xff_ffff) as f64 / (1u64 << 24) as f64;
        let matmul_size = (((w >> 56) * 3) >> 8) as usize;
        Job {
            kernel,
            matmul_size,
            hours,
            watts,
        }
    }

    /// Output items (what a partial liar fakes a share of, and what a sample draws from).
    pub fn items(&self) -> u32 {
        match self.kernel {
            Kernel::Sha256 => SHA_ITEMS,
            Kernel::Mandelbrot => MANDELBROT_ITEMS,
            Kernel::Matmul => (MATMUL_N[self.matmul_size] * MATMUL_N[self.matmul_size]) as u32,
            Kernel::Ptx => 1,
        }
    }
}

/// What a device's output is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    Honest,
    /// Wrong in this many of the job's items (at least one). Each faked output differs
    /// from every other: liars do not collude.
    Faked {
        items: u32,
    },
}

impl Output {
    /// Whether anything in it is wrong.
    pub fn is_faked(self) -> bool {
        matches!(self, Output::Faked { .. })
    }
}

/// The kinds of lying device (test-only, simulated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiarKind {
    /// Every job, every item faked.
    Always,
    /// 1 % of its jobs, every item of those faked.
    OnePercentOfJobs,
    /// Every job, 1 % of its items faked (a lazy device skipping work).
    PartialItems,
    /// Honest for its first [`TRUSTED_AFTER`] jobs, then every job faked.
    TrustedThenAlways,
    /// Honest for its first [`TRUSTED_AFTER`] jobs, then 1 % of its jobs faked.
    TrustedThenOnePercent,
    /// 1 % of its jobs overall, all of them PTX (10 % of its PTX jobs): a liar that knows
    /// which kernel is checked least and cheats only there.
    OnePercentPtxOnly,
}

/// Every kind, in the order the tables list them.
pub const LIAR_KINDS: [LiarKind; 6] = [
    LiarKind::Always,
    LiarKind::OnePercentOfJobs,
    LiarKind::PartialItems,
    LiarKind::TrustedThenAlways,
    LiarKind::TrustedThenOnePercent,
    LiarKind::OnePercentPtxOnly,
];

impl LiarKind {
    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            LiarKind::Always => "always wrong",
            LiarKind::OnePercentOfJobs => "1 % of jobs",
            LiarKind::PartialItems => "1 % of items, every job",
            LiarKind::TrustedThenAlways => "honest 50, then always",
            LiarKind::TrustedThenOnePercent => "honest 50, then 1 % of jobs",
            LiarKind::OnePercentPtxOnly => "1 % of jobs, PTX only",
        }
    }

    /// Its output for `job`, its `done`-th run (0-based: the runs before this one).
    #[inline]
    pub fn output(self, job: &Job, done: u32, rng: &mut Rng) -> Output {
        let all = Output::Faked { items: job.items() };
        match self {
            LiarKind::Always => all,
            LiarKind::OnePercentOfJobs if rng.chance(0.01) => all,
            LiarKind::PartialItems => Output::Faked {
                items: (job.items() / 100).max(1),
            },
            LiarKind::TrustedThenAlways if done >= TRUSTED_AFTER => all,
            LiarKind::TrustedThenOnePercent if done >= TRUSTED_AFTER && rng.chance(0.01) => all,
            LiarKind::OnePercentPtxOnly if job.kernel == Kernel::Ptx && rng.chance(0.1) => all,
            _ => Output::Honest,
        }
    }
}

/// How one kernel's results are checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    /// Trusted on the device's receipt.
    Trust,
    /// Freivalds' check at the controller ([`fleet_controller::validate::FREIVALDS_ROUNDS`]
    /// rounds): matrix products only.
    Freivalds,
    /// The controller recomputes `k` output items drawn after upload.
    Sample(u32),
    /// With this probability the job runs again on another device, outputs compared.
    Spot(f64),
    /// This many devices run it, outputs compared, majority wins.
    Redundant(u32),
    /// Every job checked (as `Spot`) until [`ADAPTIVE_WARMUP`] validated results, then one
    /// in [`ADAPTIVE_N`]; a wrong result resets the count (moot here: a caught liar gets no
    /// more work).
    Adaptive,
}

/// A named policy: the check for each kernel, in [`Kernel`] order.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub checks: [Check; 4],
}

impl Policy {
    /// The check `kernel`'s results get.
    #[inline]
    pub fn check(&self, kernel: Kernel) -> Check {
        self.checks[kernel as usize]
    }
}

/// The policies compared: the modes that can check any job (spot, redundant, adaptive) on
/// every kernel, then `auto` (matmul: Freivalds; sha256 and mandelbrot: `sample:64`) with
/// each candidate for PTX. Freivalds and sampling appear only inside `auto`, since each can
/// check only its own kernels.
pub fn policies() -> Vec<Policy> {
    let all = |name: String, c: Check| Policy {
        name,
        checks: [c; 4],
    };
    let mut out = vec![all("none".into(), Check::Trust)];
    for s in [0.01, 0.05, 0.10, 0.25] {
        out.push(all(format!("spot:{:.0}%", s * 100.0), Check::Spot(s)));
    }
    for r in [2, 3] {
        out.push(all(format!("redundant:{r}"), Check::Redundant(r)));
    }
    out.push(all("adaptive".into(), Check::Adaptive));
    out.push(auto("trusted", Check::Trust));
    out.extend([0.05, 0.10, 0.25, 0.50].map(auto_with_ptx_spot));
    out.push(auto("adaptive", Check::Adaptive));
    out.push(auto("redundant:2", Check::Redundant(2)));
    out
}

/// The closed form the simulation is checked against: the chance that a liar which fakes
/// (every item of) a run of kernel K with probability `fake[K]`, honest for its first
/// `honest` runs, is caught within `window` runs.
///
/// A device's runs are the jobs it is given plus the checker runs it is drawn for (spot,
/// redundant, adaptive), each checker run compared. Per run it is caught with probability
///
/// ```text
/// λ = Σ_K mix_K · fake_K · (c_K + e_K) / (1 + Σ_K mix_K · e_K)
/// ```
///
/// with c_K the chance a faked first run is checked (1 for Freivalds, samples and
/// redundancy; s for spot checks) and e_K the checker runs per job, and it escapes n runs
/// with probability (1 − λ)^n. The adaptive check counts as spot:100 % for a new device's
/// first [`ADAPTIVE_WARMUP`] runs and spot:1/N after, its checker runs at 1/N (the fleet
/// around it is established).
pub fn caught_within(policy: &Policy, fake: [f64; 4], honest: u32, window: u32) -> f64 {
    let lambda = |adaptive_checked: f64| {
        let (mut caught, mut checker_runs) = (0.0, 0.0);
        for (kernel, share) in MIX {
            let (c, e) = match policy.check(kernel) {
                Check::Trust => (0.0, 0.0),
                Check::Freivalds | Check::Sample(_) => (1.0, 0.0),
                Check::Spot(s) => (s, s),
                Check::Redundant(r) => (1.0, f64::from(r - 1)),
                Check::Adaptive => (adaptive_checked, 1.0 / ADAPTIVE_N),
            };
            caught += share * fake[kernel as usize] * (c + e);
            checker_runs += share * e;
        }
        caught / (1.0 + checker_runs)
    };
    let (warm, after) = (lambda(1.0), lambda(1.0 / ADAPTIVE_N));
    let warm_lies = ADAPTIVE_WARMUP.saturating_sub(honest).min(window);
    let later_lies = window.saturating_sub(honest.max(ADAPTIVE_WARMUP));
    1.0 - (1.0 - warm).powi(warm_lies as i32) * (1.0 - after).powi(later_lies as i32)
}

/// `auto`: Freivalds for matrix products, `sample:64` for sha256 and mandelbrot, and `ptx`
/// (named `ptx_name`) for opaque PTX.
pub fn auto(ptx_name: &str, ptx: Check) -> Policy {
    Policy {
        name: format!("auto, PTX {ptx_name}"),
        checks: [
            Check::Sample(SAMPLE_K),
            Check::Sample(SAMPLE_K),
            Check::Freivalds,
            ptx,
        ],
    }
}

/// `auto` with spot checks at rate `s` for PTX.
pub fn auto_with_ptx_spot(s: f64) -> Policy {
    auto(&format!("spot:{:.0}%", s * 100.0), Check::Spot(s))
}
