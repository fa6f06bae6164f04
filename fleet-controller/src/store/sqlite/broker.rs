//! [`BrokerStore`] on SQLite (table `broker_credentials`, migration 21).

use attest::DeviceId;
use rusqlite::params;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::broker::BrokerStore;

impl BrokerStore for SqliteStore {
    fn set_broker_credential(
        &mut self,
        device: DeviceId,
        hash: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO broker_credentials (device, hash, issued_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (device) DO UPDATE SET hash = excluded.hash, issued_ms = excluded.issued_ms",
            params![&device.0[..], hash, now_ms as i64],
        )?;
        Ok(())
    }

    fn broker_credentials(&self) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT c.device, c.hash FROM broker_credentials c
             JOIN devices d ON d.id = c.device
             WHERE d.state = 'approved' ORDER BY c.device",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, hash) = row?;
            let d = <[u8; 16]>::try_from(d.as_slice())
                .map_err(|_| StoreError::Corrupt("broker_credentials.device length".into()))?;
            out.push((DeviceId(d), hash));
        }
        Ok(out)
    }
}
