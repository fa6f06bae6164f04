//! Jobs: what the controller asks a device to run ([`JobSpec`]) and the device's signed
//! account of running it ([`JobReceipt`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CounterSnapshot, Link, MAX_CHANNELS, TrustTier, check_len, check_text};
use crate::envelope::{DecodeError, Kind, Message};
use crate::hash::Hash32;
use crate::units::{Millijoules, TimestampMs};

/// At most this many inputs, outputs or parameters in one job.
pub const MAX_JOB_ITEMS: usize = 64;

/// A job's 16-byte id (hex for humans).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub [u8; 16]);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}
impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}
impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex::serde_fixed::serialize(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex::serde_fixed::deserialize(d).map(JobId)
    }
}

/// What to run, with which inputs, within which limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's id.
    pub id: JobId,
    /// The workload.
    pub workload: Workload,
    /// Inputs by content hash (SHA-256), checked before use.
    pub inputs: Vec<Hash32>,
    /// Each input's size in bytes, in the order of `inputs`: a device knows what a job
    /// will take from its disk before it fetches a byte, and refuses a blob of another size.
    pub input_sizes: Vec<u64>,
    /// Expected output sizes in bytes.
    pub output_sizes: Vec<u64>,
    /// Energy, time and deadline limits.
    pub limits: JobLimits,
}

/// A workload: a built-in kernel or a PTX module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// A kernel the agent ships (e.g. "sha256_batch", "mandelbrot", "matmul_f32").
    Builtin { kernel: String, params: Vec<Param> },
    /// A PTX module fetched by hash, with the kernel to launch and its shape.
    Ptx {
        module: Hash32,
        /// The module's size in bytes (checked like an input's). In JSON it may be left out
        /// where whoever fills it in knows the blob (the controller, at submission).
        #[serde(default)]
        module_size: u64,
        kernel: String,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
    },
}

/// A named integer parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: i64,
}

/// A job's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Most energy the job may use.
    pub max_energy: Millijoules,
    /// Longest it may run, in milliseconds of run time.
    pub max_duration_ms: u64,
    /// When its result is due.
    pub deadline: TimestampMs,
}

impl JobSpec {
    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        check_len("job inputs", &self.inputs, MAX_JOB_ITEMS)?;
        if self.input_sizes.len() != self.inputs.len() {
            return Err(DecodeError::Invalid {
                what: "job input_sizes (one per input)",
            });
        }
        check_len("job outputs", &self.output_sizes, MAX_JOB_ITEMS)?;
        match &self.workload {
            Workload::Builtin { kernel, params } => {
                check_text("kernel", kernel)?;
                check_len("kernel params", params, MAX_JOB_ITEMS)?;
                for p in params {
                    check_text("param name", &p.name)?;
                }
            }
            Workload::Ptx { kernel, .. } => check_text("kernel", kernel)?,
        }
        Ok(())
    }
}

/// The device's signed account of a job, in its hash chain: energy is derived from the
/// same cumulative counters as the meter records (end minus start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReceipt {
    /// Device, sequence, time (the job's end) and previous hash.
    pub link: Link,
    /// The job.
    pub job: JobId,
    /// How it ended.
    pub outcome: JobOutcome,
    /// SHA-256 of the output (zero when there is none).
    pub output_hash: Hash32,
    /// When it started.
    pub started: TimestampMs,
    /// When it ended.
    pub ended: TimestampMs,
    /// Load/GPU counters when it started.
    pub start_counters: Vec<CounterSnapshot>,
    /// The same counters when it ended.
    pub end_counters: Vec<CounterSnapshot>,
    /// Kernel launches.
    pub chunks: u32,
    /// Times the governor paused it.
    pub pauses: u32,
    /// Where it ran.
    pub backend: Backend,
    /// How far its energy figure can be trusted.
    pub tier: TrustTier,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// Ran to the end.
    Completed,
    /// Cancelled by command.
    Cancelled,
    /// Could not finish by its deadline within the power budget.
    DeadlineMissed,
    /// Failed, with the reason.
    Failed(String),
    /// Never started: the power budget cannot pay for it by its deadline (or it asks for
    /// more energy than its own limit); the reason says which, for the scheduler.
    Refused(String),
}

/// Where a job ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A CUDA device, by name.
    Cuda(String),
    /// The CPU fallback.
    Cpu,
}

impl Message for JobReceipt {
    const KIND: Kind = Kind::JobReceipt;

    fn validate(&self) -> Result<(), DecodeError> {
        check_len("start_counters", &self.start_counters, MAX_CHANNELS)?;
        check_len("end_counters", &self.end_counters, MAX_CHANNELS)?;
        if let JobOutcome::Failed(s) | JobOutcome::Refused(s) = &self.outcome {
            check_text("outcome reason", s)?;
        }
        if let Backend::Cuda(s) = &self.backend {
            check_text("backend", s)?;
        }
        if self.ended < self.started {
            return Err(DecodeError::Invalid {
                what: "job times (ended before started)",
            });
        }
        Ok(())
    }
}

impl JobReceipt {
    /// Energy of one channel kind between the start and end counters, if both are present
    /// and the counter did not go backwards.
    pub fn energy(&self, kind: super::ChannelKind) -> Option<Millijoules> {
        let start = self.start_counters.iter().find(|c| c.kind == kind)?;
        let end = self
            .end_counters
            .iter()
            .find(|c| c.channel == start.channel)?;
        end.energy.0.checked_sub(start.energy.0).map(Millijoules)
    }
}
