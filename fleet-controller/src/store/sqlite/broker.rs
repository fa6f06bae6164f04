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
             LEFT JOIN devices d ON d.id = c.device
             WHERE d.state IS NULL OR d.state != 'revoked' ORDER BY c.device",
        )?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, hash) = row?;
            out.push((device(&d)?, hash));
        }
        Ok(out)
    }

    fn revoked_broker_logins(&self) -> Result<Vec<DeviceId>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT c.device FROM broker_credentials c
             JOIN devices d ON d.id = c.device WHERE d.state = 'revoked' ORDER BY c.device",
        )?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(device(&row?)?);
        }
        Ok(out)
    }
}

fn device(bytes: &[u8]) -> Result<DeviceId, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(DeviceId)
        .map_err(|_| StoreError::Corrupt("broker_credentials.device length".into()))
}
