//! Performance probes as stored: which known-answer job went to which device, its answer,
//! and what the device's receipt showed (right or not, how fast, on what).

use attest::DeviceId;
use attest::msg::JobId;

use super::StoreError;

/// One probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The probe job.
    pub job: JobId,
    /// The device it went to.
    pub device: DeviceId,
    /// When it was sent (ms).
    pub sent_ms: u64,
    /// Items it hashes.
    pub items: u64,
    /// The output hash the right answer has.
    pub expected: attest::Hash32,
    /// Its outcome, once its receipt came.
    pub result: Option<ProbeResult>,
}

/// What a probe's receipt showed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// When the receipt came (ms).
    pub at_ms: u64,
    /// Whether its output was the known answer.
    pub right: bool,
    /// Items hashed per second over the receipt's run time.
    pub items_per_s: f64,
    /// GPU energy per item, millijoules (none without a GPU counter).
    pub mj_per_item: Option<f64>,
    /// Where it ran (`cpu`, `cuda:<device>`).
    pub backend: String,
}

/// The probes part of the store.
pub trait ProbeStore {
    /// Records a probe sent.
    fn put_probe(&mut self, probe: &Probe) -> Result<(), StoreError>;
    /// The probe a job is, if it is one.
    fn probe(&self, job: JobId) -> Result<Option<Probe>, StoreError>;
    /// A device's latest probe.
    fn last_probe(&self, device: DeviceId) -> Result<Option<Probe>, StoreError>;
    /// A device's latest probe that came back right (its measured figures).
    fn last_good_probe(&self, device: DeviceId) -> Result<Option<Probe>, StoreError>;
    /// Records a probe's outcome.
    fn finish_probe(&mut self, job: JobId, result: &ProbeResult) -> Result<(), StoreError>;
}
