//! What dispatch saw each device do ([`crate::reputation`]'s marks), with the evidence of
//! a wrong result kept beside it.

use attest::DeviceId;
use attest::msg::JobId;

use super::StoreError;
use crate::reputation::MarkKind;

/// One stored mark.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMark {
    /// The device.
    #[serde(serialize_with = "crate::store::marks::device_str")]
    pub device: DeviceId,
    /// When (controller clock, ms).
    pub at_ms: u64,
    /// What it did.
    #[serde(serialize_with = "crate::store::marks::kind_str")]
    pub kind: MarkKind,
    /// The job, if one.
    #[serde(serialize_with = "crate::store::marks::job_str")]
    pub job: Option<JobId>,
    /// Why, and for a wrong result its evidence (JSON text: the receipt's sequence number
    /// and output hash, the outputs' hashes, what the check found).
    pub detail: String,
}

pub(crate) fn device_str<S: serde::Serializer>(d: &DeviceId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}
pub(crate) fn kind_str<S: serde::Serializer>(k: &MarkKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}
pub(crate) fn job_str<S: serde::Serializer>(j: &Option<JobId>, s: S) -> Result<S::Ok, S::Error> {
    match j {
        Some(j) => s.serialize_str(&j.to_string()),
        None => s.serialize_none(),
    }
}

/// The marks part of the store.
pub trait MarkStore {
    /// Stores a mark.
    fn mark_device(&mut self, mark: &DeviceMark) -> Result<(), StoreError>;
    /// A device's marks since `since_ms`, oldest first.
    fn device_marks(&self, device: DeviceId, since_ms: u64) -> Result<Vec<DeviceMark>, StoreError>;
}
