//! [`ProbeStore`] on SQLite (migration 12).

use attest::msg::JobId;
use attest::{DeviceId, Hash32};
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::store::StoreError;
use crate::store::probes::{Probe, ProbeResult, ProbeStore};

const COLUMNS: &str =
    "job, device, sent_ms, items, expected, at_ms, right, items_per_s, mj_per_item, backend";

type Row = (
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    Vec<u8>,
    Option<i64>,
    Option<bool>,
    Option<f64>,
    Option<f64>,
    Option<String>,
);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn to_probe(
    (job, device, sent, items, expected, at, right, rate, mj, backend): Row,
) -> Result<Probe, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("a probe's {what}"));
    Ok(Probe {
        job: JobId(job.try_into().map_err(|_| bad("job"))?),
        device: DeviceId(device.try_into().map_err(|_| bad("device"))?),
        sent_ms: sent as u64,
        items: items as u64,
        expected: Hash32(expected.try_into().map_err(|_| bad("expected hash"))?),
        result: match (at, right, rate, backend) {
            (Some(at), Some(right), Some(items_per_s), Some(backend)) => Some(ProbeResult {
                at_ms: at as u64,
                right,
                items_per_s,
                mj_per_item: mj,
                backend,
            }),
            _ => None,
        },
    })
}

impl SqliteStore {
    fn probe_where(&self, sql: &str, arg: &[u8]) -> Result<Option<Probe>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM probes WHERE {sql}"),
                [arg],
                row,
            )
            .optional()?
            .map(to_probe)
            .transpose()
    }
}

impl ProbeStore for SqliteStore {
    fn put_probe(&mut self, p: &Probe) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO probes (job, device, sent_ms, items, expected) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &p.job.0[..],
                &p.device.0[..],
                to_i64(p.sent_ms),
                to_i64(p.items),
                &p.expected.0[..]
            ],
        )?;
        Ok(())
    }

    fn probe(&self, job: JobId) -> Result<Option<Probe>, StoreError> {
        self.probe_where("job = ?1", &job.0)
    }

    fn last_probe(&self, device: DeviceId) -> Result<Option<Probe>, StoreError> {
        self.probe_where("device = ?1 ORDER BY sent_ms DESC LIMIT 1", &device.0)
    }

    fn last_good_probe(&self, device: DeviceId) -> Result<Option<Probe>, StoreError> {
        self.probe_where(
            "device = ?1 AND right = 1 ORDER BY sent_ms DESC LIMIT 1",
            &device.0,
        )
    }

    fn finish_probe(&mut self, job: JobId, r: &ProbeResult) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE probes SET at_ms = ?2, right = ?3, items_per_s = ?4, mj_per_item = ?5,
                 backend = ?6 WHERE job = ?1",
            params![
                &job.0[..],
                to_i64(r.at_ms),
                r.right,
                r.items_per_s,
                r.mj_per_item,
                r.backend
            ],
        )?;
        Ok(())
    }
}
