//! [`AlertStore`] on SQLite (tables of migration 18).

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, to_i64};
use crate::store::StoreError;
use crate::store::alerts::{AlertChange, AlertEvent, AlertState, AlertStore, FailedJob, Silence};

const EVENT_COLUMNS: &str = "id, rule, kind, subject, status, value, threshold, detail, at_ms, silenced, delivered_ms, attempts, last_error";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertEvent> {
    Ok(AlertEvent {
        id: r.get::<_, i64>(0)? as u64,
        rule: r.get(1)?,
        kind: r.get(2)?,
        subject: r.get(3)?,
        status: r.get(4)?,
        value: r.get(5)?,
        threshold: r.get(6)?,
        detail: r.get(7)?,
        at_ms: r.get::<_, i64>(8)? as u64,
        silenced: r.get::<_, i64>(9)? != 0,
        delivered_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        attempts: r.get::<_, i64>(11)? as u32,
        last_error: r.get(12)?,
    })
}

impl AlertStore for SqliteStore {
    fn alert_states(&self) -> Result<Vec<AlertState>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT rule, subject, state, value, since_ms FROM alert_states ORDER BY rule, subject",
        )?;
        let rows = st.query_map([], |r| {
            Ok(AlertState {
                rule: r.get(0)?,
                subject: r.get(1)?,
                firing: r.get::<_, String>(2)? == "firing",
                value: r.get(3)?,
                since_ms: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn apply_alert_changes(&mut self, changes: &[AlertChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for c in changes {
            match &c.state {
                Some(s) => {
                    tx.execute(
                        "INSERT INTO alert_states (rule, subject, state, value, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (rule, subject) DO UPDATE SET state = excluded.state, value = excluded.value, since_ms = excluded.since_ms",
                        params![c.rule, c.subject, if s.firing { "firing" } else { "pending" }, s.value, to_i64(s.since_ms)],
                    )?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM alert_states WHERE rule = ?1 AND subject = ?2",
                        params![c.rule, c.subject],
                    )?;
                }
            }
            if let Some(e) = &c.event {
                tx.execute(
                    "INSERT INTO alert_events (rule, kind, subject, status, value, threshold, detail, at_ms, silenced)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![e.rule, e.kind, e.subject, e.status, e.value, e.threshold, e.detail, to_i64(e.at_ms), e.silenced as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn undelivered_alerts(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM alert_events WHERE delivered_ms IS NULL AND silenced = 0 ORDER BY id LIMIT ?1"
        ))?;
        let rows = st.query_map([limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_alert_delivery(
        &mut self,
        id: u64,
        now: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        match error {
            None => self.conn.execute(
                "UPDATE alert_events SET delivered_ms = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![to_i64(id), to_i64(now)],
            )?,
            Some(e) => self.conn.execute(
                "UPDATE alert_events SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![to_i64(id), e],
            )?,
        };
        Ok(())
    }

    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM alert_events ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map([limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn silences(&self, now: u64) -> Result<Vec<Silence>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, rule, subject, until_ms, reason FROM alert_silences WHERE until_ms > ?1 ORDER BY id",
        )?;
        let rows = st.query_map([to_i64(now)], |r| {
            Ok(Silence {
                id: r.get::<_, i64>(0)? as u64,
                rule: r.get(1)?,
                subject: r.get(2)?,
                until_ms: r.get::<_, i64>(3)? as u64,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_silence(
        &mut self,
        s: &Silence,
        account: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.conn.execute(
            "INSERT INTO alert_silences (rule, subject, until_ms, reason, account, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.rule, s.subject, to_i64(s.until_ms), s.reason, account.map(to_i64), to_i64(now)],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    fn end_silence(&mut self, id: u64, now: u64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE alert_silences SET until_ms = ?2 WHERE id = ?1 AND until_ms > ?2",
            params![to_i64(id), to_i64(now)],
        )? == 1)
    }

    fn failed_jobs_since(&self, after_ms: u64) -> Result<Vec<FailedJob>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT e.job, l.device, e.reason, e.at_ms FROM job_events e
             LEFT JOIN job_leases l ON l.job = e.job
             WHERE e.state = 'failed' AND e.at_ms > ?1 ORDER BY e.at_ms, e.job",
        )?;
        let rows = st.query_map([to_i64(after_ms)], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (job, device, reason, at) = row?;
            let device = device
                .and_then(|d| <[u8; 16]>::try_from(d.as_slice()).ok())
                .map(|d| attest::DeviceId(d).to_string());
            out.push(FailedJob {
                job: attest::hex::encode(&job),
                device,
                reason,
                at_ms: at,
            });
        }
        Ok(out)
    }

    fn alert_mark(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT at_ms FROM alert_marks WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    fn set_alert_mark(&mut self, name: &str, at_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO alert_marks (name, at_ms) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms",
            params![name, to_i64(at_ms)],
        )?;
        Ok(())
    }
}
