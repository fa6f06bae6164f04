//! Jobs as buyers submit them: what a job asks for, the checks it passes before it is
//! accepted, and the states it goes through. All sans-IO: the API and the store sit around
//! these values.
//!
//! Map:
//! - [`submit`]: a [`JobRequest`] (the JSON a buyer posts) checked into a [`JobOrder`]
//!   (what is stored and what the scheduler places), or a [`submit::SubmitError`] saying
//!   which rule it broke.
//! - [`workload`]: the built-in kernels' parameters and sizes, and a PTX job's launch shape.
//! - [`state`]: queued, scheduled, running, paused, validating, done, failed, cancelled,
//!   expired, and the legal moves between them.

pub mod state;
pub mod submit;
pub mod workload;

use attest::msg::{JobId, JobLimits, JobSpec, Workload};
use attest::{Hash32, Millijoules, TimestampMs};
use serde::{Deserialize, Serialize};

pub use state::{IllegalTransition, JobState, Transition};
pub use submit::{SubmitError, validate};

/// A job as a buyer posts it (`POST /api/v1/jobs`), before any check. Unknown keys are
/// refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A built-in kernel with its parameters, or a PTX module (by hash) with its kernel and
    /// launch shape: attest's `Workload`, as a device receives it.
    pub workload: Workload,
    /// Inputs by SHA-256: blobs the buyer uploaded.
    #[serde(default)]
    pub inputs: Vec<Hash32>,
    /// Output sizes in bytes: derived for a built-in (given, they must agree), required
    /// for PTX.
    #[serde(default)]
    pub output_sizes: Option<Vec<u64>>,
    /// What hardware it needs.
    #[serde(default)]
    pub hardware: HardwareRequest,
    /// When its result is due (ms since the Unix epoch).
    pub deadline_ms: u64,
    /// The most the buyer pays, in millionths of a currency unit per GPU-hour (the unit of
    /// a device's offer).
    pub max_price_micro_per_gpu_hour: u64,
    /// A minimum renewable share or a maximum of emissions; none when absent.
    #[serde(default)]
    pub carbon: Option<CarbonConstraint>,
    /// Whether it may wait (for the sun, a cleaner hour) as long as its deadline allows.
    #[serde(default)]
    pub flexible: bool,
    /// On how many devices it runs, outputs compared (1 to [`MAX_REDUNDANCY`]).
    #[serde(default = "default_redundancy")]
    pub redundancy: u8,
    /// The most energy it may use, millijoules (0: no limit of its own).
    #[serde(default)]
    pub max_energy_mj: u64,
    /// The longest it may run, ms of run time (0: no limit of its own).
    #[serde(default)]
    pub max_duration_ms: u64,
}

const fn default_redundancy() -> u8 {
    1
}

/// Most devices one job runs on.
pub const MAX_REDUNDANCY: u8 = 5;

/// Hardware needs as posted (strings checked by [`validate`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareRequest {
    /// A GPU class that the device's GPU model must contain ("orin", "rtx 4090"), any case.
    #[serde(default)]
    pub gpu_class: Option<String>,
    /// Least GPU memory, MiB.
    #[serde(default)]
    pub min_vram_mib: Option<u32>,
    /// Least CUDA compute capability, `"major.minor"` ("8.7").
    #[serde(default)]
    pub min_cuda_capability: Option<String>,
}

/// Hardware needs, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareNeeds {
    /// A GPU class the device's GPU model must contain (lower case).
    pub gpu_class: Option<String>,
    /// Least GPU memory, MiB.
    pub min_vram_mib: Option<u32>,
    /// Least CUDA compute capability.
    pub min_cuda_capability: Option<CudaCapability>,
}

/// A CUDA compute capability (`8.7` is Jetson Orin; a device's `sm_87`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CudaCapability {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl CudaCapability {
    /// Parses `"major.minor"` (`"8.7"`).
    pub fn parse(s: &str) -> Option<CudaCapability> {
        let (major, minor) = s.split_once('.')?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(CudaCapability {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for CudaCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Serialize for CudaCapability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CudaCapability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CudaCapability::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a CUDA capability")))
    }
}

/// A job's carbon constraint: one of the two, in the units of the controller's statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CarbonConstraint {
    /// At least this share of its energy renewable (hourly matched), parts per million
    /// (`800000` = 80 %).
    MinRenewableSharePpm(u32),
    /// At most this much CO2e for the job, milligrams (`5000` = 5 g).
    MaxCo2eMg(u64),
}

/// A job that passed [`validate`]: what the store keeps and the scheduler places. Only
/// [`validate`] makes one (the store reads back what it stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrder {
    workload: Workload,
    inputs: Vec<Hash32>,
    /// Each input's size, bytes (what the device is told before it fetches a byte).
    #[serde(default)]
    input_sizes: Vec<u64>,
    output_sizes: Vec<u64>,
    hardware: HardwareNeeds,
    // Spelt as in the request, so that an order reads back like what was posted.
    #[serde(rename = "deadline_ms")]
    deadline: TimestampMs,
    max_price_micro_per_gpu_hour: u64,
    carbon: Option<CarbonConstraint>,
    flexible: bool,
    redundancy: u8,
    max_energy_mj: u64,
    max_duration_ms: u64,
}

impl JobOrder {
    /// The workload.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }
    /// Inputs by hash, in order.
    pub fn inputs(&self) -> &[Hash32] {
        &self.inputs
    }
    /// The PTX module, for a PTX job.
    pub fn module(&self) -> Option<Hash32> {
        match &self.workload {
            Workload::Ptx { module, .. } => Some(*module),
            Workload::Builtin { .. } => None,
        }
    }
    /// Output sizes in bytes.
    pub fn output_sizes(&self) -> &[u64] {
        &self.output_sizes
    }
    /// Hardware needs.
    pub fn hardware(&self) -> &HardwareNeeds {
        &self.hardware
    }
    /// When the result is due.
    pub fn deadline(&self) -> TimestampMs {
        self.deadline
    }
    /// The price ceiling, micro-units per GPU-hour.
    pub fn max_price_micro_per_gpu_hour(&self) -> u64 {
        self.max_price_micro_per_gpu_hour
    }
    /// The carbon constraint.
    pub fn carbon(&self) -> Option<CarbonConstraint> {
        self.carbon
    }
    /// Whether it may be shifted in time.
    pub fn flexible(&self) -> bool {
        self.flexible
    }
    /// On how many devices it runs.
    pub fn redundancy(&self) -> u8 {
        self.redundancy
    }

    /// What a device is sent to run this job (inside a controller-signed `RunJob`).
    pub fn job_spec(&self, id: JobId) -> JobSpec {
        JobSpec {
            id,
            workload: self.workload.clone(),
            inputs: self.inputs.clone(),
            input_sizes: self.input_sizes.clone(),
            output_sizes: self.output_sizes.clone(),
            limits: JobLimits {
                max_energy: Millijoules(self.max_energy_mj),
                max_duration_ms: self.max_duration_ms,
                deadline: self.deadline,
            },
        }
    }
}

/// `span`, made a span of job `id`'s trace (one trace per job across the controller and
/// its device: `heliostat_telemetry::job_context`).
pub fn traced(span: tracing::Span, id: JobId) -> tracing::Span {
    heliostat_telemetry::in_job(&span, &id.0);
    span
}

/// A new job id: 16 bytes from the operating system's random source (ids are not
/// guessable, so a job's existence does not leak through them).
pub fn new_job_id() -> Result<JobId, getrandom::Error> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)?;
    Ok(JobId(id))
}

/// Parses a job id (32 hex digits).
pub fn parse_job_id(s: &str) -> Option<JobId> {
    if s.len() != 32 {
        return None;
    }
    attest::hex::decode_array::<16>(s).ok().map(JobId)
}
