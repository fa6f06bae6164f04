//! [`MarkStore`] on SQLite (migration 10).

use attest::DeviceId;
use attest::msg::JobId;
use rusqlite::params;

use super::{SqliteStore, to_i64};
use crate::reputation::MarkKind;
use crate::store::StoreError;
use crate::store::marks::{DeviceMark, MarkStore};

impl MarkStore for SqliteStore {
    fn mark_device(&mut self, m: &DeviceMark) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO device_marks (device, at_ms, kind, job, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &m.device.0[..],
                to_i64(m.at_ms),
                m.kind.as_str(),
                m.job.map(|j| j.0.to_vec()),
                m.detail
            ],
        )?;
        Ok(())
    }

    fn device_marks(&self, device: DeviceId, since_ms: u64) -> Result<Vec<DeviceMark>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT at_ms, kind, job, detail FROM device_marks
             WHERE device = ?1 AND at_ms >= ?2 ORDER BY at_ms, id",
        )?;
        let rows = st
            .query_map(params![&device.0[..], to_i64(since_ms)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(at, kind, job, detail)| {
                Ok(DeviceMark {
                    device,
                    at_ms: at as u64,
                    kind: MarkKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("device mark kind {kind:?}")))?,
                    job: job
                        .map(|j| {
                            j.try_into()
                                .map(JobId)
                                .map_err(|_| StoreError::Corrupt("a job id is not 16 bytes".into()))
                        })
                        .transpose()?,
                    detail,
                })
            })
            .collect()
    }
}
