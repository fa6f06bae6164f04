//! [`JobStore`] on SQLite: tables `jobs`, `job_events` and `job_blobs` (migration 5).

use attest::Hash32;
use attest::msg::JobId;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::accounts::AccountId;
use crate::jobs::{JobOrder, JobState, Transition};
use crate::store::StoreError;
use crate::store::jobs::{
    JobEvent, JobLease, JobOutput, JobRecord, JobStore, LeaseProgress, NewJob,
};

const JOB_COLUMNS: &str = "id, owner, state, job_order, created_ms, updated_ms";

type RawJob = (Vec<u8>, i64, String, String, i64, i64);

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn state(s: &str) -> Result<JobState, StoreError> {
    JobState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("job state {s}")))
}

fn to_job(raw: RawJob) -> Result<JobRecord, StoreError> {
    let (id, owner, st, order, created, updated) = raw;
    let id = JobId(
        id.try_into()
            .map_err(|_| StoreError::Corrupt("job id is not 16 bytes".into()))?,
    );
    let order: JobOrder = serde_json::from_str(&order)
        .map_err(|e| StoreError::Corrupt(format!("job {id}: its order: {e}")))?;
    Ok(JobRecord {
        id,
        owner: AccountId(owner as u64),
        state: state(&st)?,
        order,
        created_ms: created as u64,
        updated_ms: updated as u64,
    })
}

impl JobStore for SqliteStore {
    fn insert_job(&mut self, job: &NewJob, reason: &str) -> Result<(), StoreError> {
        let order = serde_json::to_string(&job.order)
            .map_err(|e| StoreError::Corrupt(format!("job {}: its order: {e}", job.id)))?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "INSERT INTO jobs ({JOB_COLUMNS}, deadline_ms, flexible)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?4, ?5, ?6)"
            ),
            params![
                &job.id.0[..],
                to_i64(job.owner.0),
                order,
                to_i64(job.created_ms),
                to_i64(job.order.deadline().0),
                job.order.flexible()
            ],
        )?;
        tx.execute(
            "INSERT INTO job_events (job, seq, state, at_ms, reason) VALUES (?1, 0, 'queued', ?2, ?3)",
            params![&job.id.0[..], to_i64(job.created_ms), reason],
        )?;
        if job.escrow > 0 {
            let cap: Option<i64> = tx.query_row(
                "SELECT spend_cap_micro FROM accounts WHERE id = ?1",
                [to_i64(job.owner.0)],
                |r| r.get(0),
            )?;
            if let Some(cap) = cap {
                let wallet = crate::ledger::Book::Wallet(job.owner).to_string();
                let spent: i64 = tx.query_row(
                    "SELECT COALESCE(SUM(-p.amount), 0) FROM ledger_tx t
                     JOIN ledger_postings p ON p.tx = t.id
                     WHERE t.kind = 'escrow' AND t.at_ms > ?1 AND p.book = ?2",
                    params![to_i64(job.created_ms.saturating_sub(86_400_000)), wallet],
                    |r| r.get(0),
                )?;
                if spent.max(0) as u64 + job.escrow > cap.max(0) as u64 {
                    return Err(crate::ledger::LedgerError::SpendCap {
                        cap: cap.max(0) as u64,
                        spent: spent.max(0) as u64,
                        needed: job.escrow,
                    }
                    .into());
                }
            }
            let hold = crate::ledger::escrow(job.owner, job.id, job.escrow)?;
            super::ledger::post_in(&tx, &hold, job.created_ms)?;
        }
        {
            let mut blob = tx.prepare_cached(
                "INSERT INTO job_blobs (job, role, idx, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, h) in job.order.inputs().iter().enumerate() {
                blob.execute(params![&job.id.0[..], "input", i as i64, &h.0[..]])?;
            }
            if let Some(m) = job.order.module() {
                blob.execute(params![&job.id.0[..], "module", 0, &m.0[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn job_of(&self, owner: AccountId, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND owner = ?2"),
                params![&id.0[..], to_i64(owner.0)],
                job_row,
            )
            .optional()?;
        raw.map(to_job).transpose()
    }

    fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![&id.0[..]],
                job_row,
            )
            .optional()?;
        raw.map(to_job).transpose()
    }

    fn open_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE state IN ('queued', 'scheduled', 'running', 'paused', 'validating')
             ORDER BY created_ms, id"
        ))?;
        let rows = st.query_map([], job_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(to_job).collect()
    }

    fn job_lease(&self, id: JobId) -> Result<Option<JobLease>, StoreError> {
        type Row = (
            Vec<u8>,
            i64,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<bool>,
            Option<i64>,
        );
        let raw: Option<Row> = self
            .conn
            .query_row(
                "SELECT device, start_ms, expected_end_ms, nonce,
                        chunks_done, chunks, paused, progress_ms
                 FROM job_leases WHERE job = ?1",
                params![&id.0[..]],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .optional()?;
        raw.map(|(d, start, end, nonce, done, chunks, paused, at)| {
            let device = attest::DeviceId(
                d.try_into()
                    .map_err(|_| StoreError::Corrupt(format!("job {id}: its lease's device")))?,
            );
            let progress = match (done, chunks, at) {
                (Some(done), Some(chunks), Some(at)) => Some(LeaseProgress {
                    chunks_done: done as u64,
                    chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
                    paused: paused.unwrap_or(false),
                    at_ms: at as u64,
                }),
                _ => None,
            };
            Ok(JobLease {
                device,
                start_ms: start as u64,
                expected_end_ms: end as u64,
                nonce: nonce as u64,
                progress,
            })
        })
        .transpose()
    }

    fn set_job_progress(
        &mut self,
        id: JobId,
        device: attest::DeviceId,
        p: &LeaseProgress,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE job_leases SET chunks_done = ?3, chunks = ?4, paused = ?5, progress_ms = ?6
             WHERE job = ?1 AND device = ?2",
            params![
                &id.0[..],
                &device.0[..],
                to_i64(p.chunks_done),
                i64::from(p.chunks),
                p.paused,
                to_i64(p.at_ms)
            ],
        )?;
        Ok(n == 1)
    }

    fn put_job_lease(&mut self, id: JobId, l: &JobLease) -> Result<(), StoreError> {
        let p = l.progress.as_ref();
        self.conn.execute(
            "INSERT OR REPLACE INTO job_leases
                 (job, device, start_ms, expected_end_ms, nonce,
                  chunks_done, chunks, paused, progress_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                &id.0[..],
                &l.device.0[..],
                to_i64(l.start_ms),
                to_i64(l.expected_end_ms),
                to_i64(l.nonce),
                p.map(|p| to_i64(p.chunks_done)),
                p.map(|p| i64::from(p.chunks)),
                p.map(|p| p.paused),
                p.map(|p| to_i64(p.at_ms))
            ],
        )?;
        Ok(())
    }

    fn drop_job_lease(&mut self, id: JobId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM job_leases WHERE job = ?1", params![&id.0[..]])?;
        Ok(())
    }

    fn clear_job_outputs(&mut self, id: JobId) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM job_blobs WHERE job = ?1 AND role = 'output'",
            params![&id.0[..]],
        )?;
        Ok(())
    }

    fn jobs_of(&self, owner: AccountId, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs_of_page(owner, limit, None)
    }

    fn jobs_of_page(
        &self,
        owner: AccountId,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        // The cursor is a job of the same owner; an unknown one starts nowhere (empty page).
        let (created, id): (i64, Vec<u8>) = match before {
            None => (i64::MAX, Vec::new()),
            Some(b) => match self
                .conn
                .query_row(
                    "SELECT created_ms FROM jobs WHERE id = ?1 AND owner = ?2",
                    params![&b.0[..], to_i64(owner.0)],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
            {
                Some(c) => (c, b.0.to_vec()),
                None => return Ok(Vec::new()),
            },
        };
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?1
               AND (created_ms < ?2 OR (created_ms = ?2 AND id > ?3))
             ORDER BY created_ms DESC, id LIMIT ?4"
        ))?;
        let rows = st
            .query_map(params![to_i64(owner.0), created, id, limit as i64], job_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(to_job).collect()
    }

    fn job_history(&self, id: JobId) -> Result<Vec<JobEvent>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, state, at_ms, reason FROM job_events WHERE job = ?1 ORDER BY seq",
        )?;
        let rows = st
            .query_map([&id.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, s, at, reason)| {
                Ok(JobEvent {
                    seq: u32::try_from(seq)
                        .map_err(|_| StoreError::Corrupt(format!("job {id}: event seq {seq}")))?,
                    state: state(&s)?,
                    at_ms: at as u64,
                    reason,
                })
            })
            .collect()
    }

    fn apply_transition(&mut self, id: JobId, t: &Transition) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE jobs SET state = ?3, updated_ms = max(updated_ms, ?4)
             WHERE id = ?1 AND state = ?2",
            params![
                &id.0[..],
                t.from().as_str(),
                t.to().as_str(),
                to_i64(t.at_ms())
            ],
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO job_events (job, seq, state, at_ms, reason)
             SELECT ?1, COALESCE(MAX(seq), -1) + 1, ?2, ?3, ?4 FROM job_events WHERE job = ?1",
            params![&id.0[..], t.to().as_str(), to_i64(t.at_ms()), t.reason()],
        )?;
        if t.to().is_final() {
            let owner: i64 =
                tx.query_row("SELECT owner FROM jobs WHERE id = ?1", [&id.0[..]], |r| {
                    r.get(0)
                })?;
            let held = super::ledger::balance_in(&tx, crate::ledger::Book::Escrow(id))?;
            let payouts = if t.to() == JobState::Done {
                t.payouts()
            } else {
                &[]
            };
            let memo = format!("job {}: {}", t.to(), t.reason());
            if let Some(settle) =
                crate::ledger::settle(AccountId(owner as u64), id, held, payouts, &memo)?
            {
                super::ledger::post_in(&tx, &settle, t.at_ms())?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    fn job_outputs(&self, id: JobId) -> Result<Vec<JobOutput>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT idx, hash, bytes FROM job_blobs WHERE job = ?1 AND role = 'output'
             ORDER BY idx",
        )?;
        let rows = st
            .query_map([&id.0[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(i, h, b)| {
                Ok(JobOutput {
                    index: i as u32,
                    hash: Hash32(
                        h.try_into().map_err(|_| {
                            StoreError::Corrupt("output hash is not 32 bytes".into())
                        })?,
                    ),
                    bytes: b.unwrap_or(0) as u64,
                })
            })
            .collect()
    }

    fn put_job_output(&mut self, id: JobId, o: &JobOutput) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
            [&id.0[..]],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(false);
        }
        let existing: Option<(Vec<u8>, Option<i64>)> = tx
            .query_row(
                "SELECT hash, bytes FROM job_blobs WHERE job = ?1 AND role = 'output' AND idx = ?2",
                params![&id.0[..], i64::from(o.index)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let ok = match existing {
            Some((h, b)) => h == o.hash.0 && b == Some(to_i64(o.bytes)),
            None => {
                tx.execute(
                    "INSERT INTO job_blobs (job, role, idx, hash, bytes) VALUES (?1, 'output', ?2, ?3, ?4)",
                    params![&id.0[..], i64::from(o.index), &o.hash.0[..], to_i64(o.bytes)],
                )?;
                true
            }
        };
        tx.commit()?;
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{self, AccountKind, Token};
    use crate::store::accounts::AccountStore;
    use crate::store::blobs::BlobStore;
    use std::collections::HashMap;

    fn buyer(s: &mut SqliteStore, name: &str, seed: u8) -> AccountId {
        accounts::create(
            s,
            AccountKind::Buyer,
            name,
            1 << 20,
            None,
            "",
            Token::from_secret([seed; 32]),
            1,
        )
        .unwrap()
        .account
        .id
    }

    fn order(input: Hash32) -> JobOrder {
        let req = serde_json::from_value(serde_json::json!({
            "workload": {"builtin": {"kernel": "sha256_batch",
                "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
            "inputs": [input],
            "deadline_ms": 10_000,
            "max_price_micro_per_gpu_hour": 1,
        }))
        .unwrap();
        crate::jobs::validate(req, 100, &HashMap::from([(input, 3)])).unwrap()
    }

    #[test]
    fn a_job_is_read_only_by_its_owner_and_moves_only_from_the_state_it_is_in() {
        let mut s = SqliteStore::in_memory().unwrap();
        let (alice, bob) = (buyer(&mut s, "alice", 1), buyer(&mut s, "bob", 2));
        let input = Hash32::digest(b"abc");
        s.grant_blob(alice, input, 3, 50).unwrap();
        let id = JobId([9; 16]);
        let job = NewJob {
            id,
            owner: alice,
            order: order(input),
            created_ms: 100,
            escrow: 0,
        };
        s.insert_job(&job, "accepted").unwrap();
        let rec = s.job_of(alice, id).unwrap().unwrap();
        assert_eq!(
            (rec.state, rec.order, rec.created_ms),
            (JobState::Queued, job.order.clone(), 100)
        );
        assert_eq!(s.job_of(bob, id).unwrap(), None);
        assert!(s.jobs_of(bob, 10).unwrap().is_empty());
        assert_eq!(s.jobs_of(alice, 10).unwrap().len(), 1);

        let t = JobState::Queued
            .transition(JobState::Scheduled, 200, "placed")
            .unwrap();
        assert!(s.apply_transition(id, &t).unwrap());
        // The same move again: the job is no longer queued, nothing changes.
        assert!(!s.apply_transition(id, &t).unwrap());
        let c = JobState::Scheduled
            .transition(JobState::Cancelled, 300, "cancelled by its buyer")
            .unwrap();
        assert!(s.apply_transition(id, &c).unwrap());
        let h = s.job_history(id).unwrap();
        let got: Vec<(JobState, u64, &str)> = h
            .iter()
            .map(|e| (e.state, e.at_ms, e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (JobState::Queued, 100, "accepted"),
                (JobState::Scheduled, 200, "placed"),
                (JobState::Cancelled, 300, "cancelled by its buyer"),
            ]
        );
        assert_eq!(s.job_of(alice, id).unwrap().unwrap().updated_ms, 300);
    }

    #[test]
    fn outputs_are_kept_once_per_index_and_make_the_blob_readable_by_the_buyer_only() {
        let mut s = SqliteStore::in_memory().unwrap();
        let alice = buyer(&mut s, "alice", 1);
        buyer(&mut s, "bob", 2);
        let input = Hash32::digest(b"abc");
        s.grant_blob(alice, input, 3, 50).unwrap();
        let id = JobId([3; 16]);
        let new = NewJob {
            id,
            owner: alice,
            order: order(input),
            created_ms: 100,
            escrow: 0,
        };
        s.insert_job(&new, "accepted").unwrap();
        let out = JobOutput {
            index: 0,
            hash: Hash32::digest(b"result"),
            bytes: 32,
        };
        assert!(s.put_job_output(id, &out).unwrap());
        assert!(
            s.put_job_output(id, &out).unwrap(),
            "the same again is fine"
        );
        let other = JobOutput {
            hash: Hash32::digest(b"forged"),
            ..out
        };
        assert!(!s.put_job_output(id, &other).unwrap());
        assert!(!s.put_job_output(JobId([4; 16]), &out).unwrap());
        assert_eq!(s.job_outputs(id).unwrap(), vec![out]);
        let caller = |s: &SqliteStore, seed: u8| {
            s.caller(&Token::from_secret([seed; 32]).hash())
                .unwrap()
                .unwrap()
        };
        assert!(s.can_read_blob(&caller(&s, 1), out.hash).unwrap());
        assert!(!s.can_read_blob(&caller(&s, 2), out.hash).unwrap());
        assert!(!s.can_read_blob(&caller(&s, 2), input).unwrap());
    }
}
