//! [`RunStore`] on SQLite (table of migration 14).

use attest::msg::JobId;
use attest::{DeviceId, Hash32};
use rusqlite::params;

use super::{SqliteStore, to_i64};
use crate::accounts::AccountId;
use crate::store::StoreError;
use crate::store::runs::{JobRun, RunStore};

impl RunStore for SqliteStore {
    fn add_job_run(&mut self, job: JobId, r: &JobRun) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO job_runs (job, run, device, start_ms, receipt_seq, output_hash,
                 provider, price, needed, why, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                &job.0[..],
                r.run,
                &r.device.0[..],
                to_i64(r.start_ms),
                to_i64(r.receipt_seq),
                &r.output_hash.0[..],
                r.provider.map(|p| to_i64(p.0)),
                to_i64(r.price),
                r.needed,
                r.why,
                to_i64(r.at_ms)
            ],
        )?;
        Ok(())
    }

    fn job_runs(&self, job: JobId) -> Result<Vec<JobRun>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT run, device, start_ms, receipt_seq, output_hash, provider, price, needed,
                 why, at_ms FROM job_runs WHERE job = ?1 ORDER BY run",
        )?;
        let rows = st
            .query_map([&job.0[..]], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, u32>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(run, device, start, seq, hash, provider, price, needed, why, at)| {
                    let bad = |what: &str| StoreError::Corrupt(format!("job run {run}: {what}"));
                    Ok(JobRun {
                        run,
                        device: DeviceId(device.try_into().map_err(|_| bad("device id"))?),
                        start_ms: start as u64,
                        receipt_seq: seq as u64,
                        output_hash: Hash32(hash.try_into().map_err(|_| bad("output hash"))?),
                        provider: provider.map(|p| AccountId(p as u64)),
                        price: price as u64,
                        needed,
                        why,
                        at_ms: at as u64,
                    })
                },
            )
            .collect()
    }
}
