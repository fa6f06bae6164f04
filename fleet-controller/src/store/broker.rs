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
    /// The hashes of every device that has one and is not revoked (enrolled devices may not
    /// have said hello yet), by device.
    fn broker_credentials(&self) -> Result<Vec<(DeviceId, String)>, StoreError>;
    /// Revoked devices that were given a broker login: the broker must not know them.
    fn revoked_broker_logins(&self) -> Result<Vec<DeviceId>, StoreError>;
}
