//! Enrollment tokens: an operator makes one (single- or multi-use, expiring); an installer
//! puts it in a device's provisioning file; on first boot the device proves its new key
//! (a hello it signed) and redeems the token, which approves it without an operator's
//! click. A device the controller has not heard from yet is approved when its first hello
//! arrives (the enrollment is taken then, once); a pending one is approved at once.
//!
//! Invariants every backend keeps: a use is counted in the same database transaction that
//! records the enrollment; a revoked, expired or used-up token enrols nothing; a revoked
//! device is never approved by a token; a device enrolled once is not enrolled again (a
//! retried redemption answers the same and uses nothing).

use attest::DeviceId;

use super::StoreError;
use crate::accounts::TokenHash;

/// An enrollment token as the operator lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnrollmentToken {
    /// Its number.
    pub id: u64,
    /// What it is for (`site Nairobi-3, batch 7`).
    pub label: String,
    /// Enrollments it still allows.
    pub uses_left: u64,
    /// When it stops working (ms).
    pub expires_ms: u64,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When an operator revoked it (ms).
    pub revoked_ms: Option<u64>,
    /// Devices it enrolled.
    pub enrolled: u64,
}

/// What an enrollment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// A pending device, approved now.
    Approved,
    /// A device not heard from yet: approved when its first hello arrives.
    Preapproved,
    /// Enrolled before (a retried redemption): nothing changed, no use counted.
    Already,
}

/// Why a token enrolled nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// Unknown, revoked, expired or used up (which one is not told).
    #[error("the enrollment token is not valid (unknown, revoked, expired or used up)")]
    BadToken,
    /// The device was revoked by an operator: a token does not bring it back.
    #[error("device {0} is revoked; an operator must approve it")]
    DeviceRevoked(DeviceId),
}

/// The enrollment part of the store.
pub trait EnrollmentStore {
    /// Stores a new token's hash; its number.
    fn create_enrollment_token(
        &mut self,
        hash: TokenHash,
        label: &str,
        uses: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError>;
    /// Every token, newest first.
    fn enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>, StoreError>;
    /// Revokes a token; false when there is no such token.
    fn revoke_enrollment_token(&mut self, id: u64, now_ms: u64) -> Result<bool, StoreError>;
    /// Redeems a token for `device` (whose key the caller checked), in one transaction.
    fn enroll(
        &mut self,
        token: TokenHash,
        device: DeviceId,
        now_ms: u64,
    ) -> Result<Result<Enrolled, EnrollError>, StoreError>;
}
