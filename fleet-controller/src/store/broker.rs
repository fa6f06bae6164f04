//! Devices' broker credentials: the hash of the password each enrolled device logs in to
//! the broker with (`broker_perimeter` writes them into Mosquitto's password file).

use attest::DeviceId;

use super::StoreError;

/// The broker credentials part of the store.
pub trait BrokerStore {
    /// Stores (or replaces) `device`'s password hash.
    fn set_broker_credential(
        &mut self,
        device: DeviceId,
        hash: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// The hashes of approved devices, by device: revoked and pending devices have none
    /// at the broker.
    fn broker_credentials(&self) -> Result<Vec<(DeviceId, String)>, StoreError>;
}
