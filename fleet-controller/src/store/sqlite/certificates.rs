//! [`CertificateStore`] on SQLite (tables of migration 15).

use attest::msg::{Certificate, CertificateScheme, JobId, Retirement};
use attest::{DeviceId, TimestampMs};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, to_i64};
use crate::accounts::AccountId;
use crate::store::StoreError;
use crate::store::certificates::{CertificateStore, Cover, Held, RetireError, RetireRequest};
use crate::store::ledger::SealedEntries;

const CERT_COLUMNS: &str = "c.id, c.scheme, c.start_ms, c.end_ms, c.source, c.technology, \
     c.producer, c.region, c.volume_wh, c.issuer";

/// A certificate from the first ten columns of a row ([`CERT_COLUMNS`]).
fn certificate(r: &Row<'_>) -> rusqlite::Result<Certificate> {
    certificate_at(r, 0)
}

/// A certificate from [`CERT_COLUMNS`] starting at column `i`.
fn certificate_at(r: &Row<'_>, i: usize) -> rusqlite::Result<Certificate> {
    let scheme: String = r.get(i + 1)?;
    Ok(Certificate {
        id: r.get(i)?,
        // The table's CHECK allows only the two names.
        scheme: CertificateScheme::parse(&scheme).unwrap_or(CertificateScheme::Rec),
        start: TimestampMs(r.get::<_, i64>(i + 2)? as u64),
        end: TimestampMs(r.get::<_, i64>(i + 3)? as u64),
        source: r.get(i + 4)?,
        technology: r.get(i + 5)?,
        producer: r.get(i + 6)?,
        region: r.get(i + 7)?,
        volume_wh: r.get::<_, i64>(i + 8)? as u64,
        issuer: r.get(i + 9)?,
    })
}

const RETIREMENT_COLUMNS: &str = "r.id, r.job, r.device, r.hour, r.account, r.covered_mg, r.at_ms";

/// A retirement from [`RETIREMENT_COLUMNS`] then [`CERT_COLUMNS`].
fn retirement(r: &Row<'_>) -> rusqlite::Result<(Retirement, Vec<u8>, Vec<u8>)> {
    Ok((
        Retirement {
            id: r.get::<_, i64>(0)? as u64,
            certificate: certificate_at(r, 7)?,
            job: JobId([0; 16]),
            device: DeviceId([0; 16]),
            hour: r.get::<_, i64>(3)? as u64,
            account: r.get::<_, i64>(4)? as u64,
            covered_mg: r.get::<_, i64>(5)? as u64,
            at: TimestampMs(r.get::<_, i64>(6)? as u64),
        },
        r.get(1)?,
        r.get(2)?,
    ))
}

/// Retirements matching `filter` (a condition on `r`), in order.
fn retirements(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Retirement>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {RETIREMENT_COLUMNS}, {CERT_COLUMNS} FROM retirements r
         JOIN certificates c ON c.id = r.certificate WHERE {filter} ORDER BY r.id"
    ))?;
    let rows = st
        .query_map(args, retirement)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(mut r, job, device)| {
            r.job = JobId(
                job.try_into()
                    .map_err(|_| StoreError::Corrupt(format!("retirement {}: job id", r.id)))?,
            );
            r.device = DeviceId(
                device
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("retirement {}: device id", r.id)))?,
            );
            Ok(r)
        })
        .collect()
}

impl CertificateStore for SqliteStore {
    fn import_certificates(
        &mut self,
        account: AccountId,
        certificates: &[Certificate],
        at_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM certificates WHERE id = ?1")?;
            let mut put = tx.prepare_cached(
                "INSERT INTO certificates (id, scheme, start_ms, end_ms, source, technology,
                     producer, region, volume_wh, issuer, account, imported_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for c in certificates {
                if exists.exists([&c.id])? {
                    return Ok(Some(c.id.clone()));
                }
                put.execute(params![
                    c.id,
                    c.scheme.as_str(),
                    to_i64(c.start.0),
                    to_i64(c.end.0),
                    c.source,
                    c.technology,
                    c.producer,
                    c.region,
                    to_i64(c.volume_wh),
                    c.issuer,
                    to_i64(account.0),
                    to_i64(at_ms)
                ])?;
            }
        }
        tx.commit()?;
        Ok(None)
    }

    fn certificates(&self, account: Option<AccountId>) -> Result<Vec<Held>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {CERT_COLUMNS}, c.account, c.imported_ms, r.id FROM certificates c
             LEFT JOIN retirements r ON r.certificate = c.id
             WHERE ?1 IS NULL OR c.account = ?1 ORDER BY c.rowid"
        ))?;
        let rows = st
            .query_map([account.map(|a| to_i64(a.0))], |r| {
                Ok((
                    certificate(r)?,
                    r.get::<_, i64>(10)?,
                    r.get::<_, i64>(11)?,
                    r.get::<_, Option<i64>>(12)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(certificate, account, imported, retired)| {
                let retired = match retired {
                    Some(id) => retirements(&self.conn, "r.id = ?1", &[&id])?.pop(),
                    None => None,
                };
                Ok(Held {
                    certificate,
                    account: AccountId(account as u64),
                    imported_ms: imported as u64,
                    retired,
                })
            })
            .collect()
    }

    fn retire(
        &mut self,
        q: &RetireRequest<'_>,
        cover: &Cover<'_>,
    ) -> Result<Result<Retirement, RetireError>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held = tx
            .query_row(
                &format!(
                    "SELECT {CERT_COLUMNS} FROM certificates c WHERE c.id = ?1 AND c.account = ?2"
                ),
                params![q.certificate, to_i64(q.account.0)],
                certificate,
            )
            .optional()?;
        let Some(cert) = held else {
            return Ok(Err(RetireError::UnknownCertificate(q.certificate.into())));
        };
        if let Some(done) = retirements(&tx, "r.certificate = ?1", &[&q.certificate])?.pop() {
            return Ok(Err(RetireError::AlreadyRetired {
                id: cert.id,
                retirement: done.id,
                job: done.job,
                hour: done.hour,
            }));
        }
        let earlier = retirements(
            &tx,
            "r.job = ?1 AND r.device = ?2",
            &[&&q.job.0[..], &&q.device.0[..]],
        )?;
        let covered_mg = match cover(&cert, &earlier) {
            Ok(mg) => mg,
            Err(e) => return Ok(Err(e.into())),
        };
        tx.execute(
            "INSERT INTO retirements (certificate, job, device, hour, account, covered_mg, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                cert.id,
                &q.job.0[..],
                &q.device.0[..],
                to_i64(q.hour),
                to_i64(q.account.0),
                to_i64(covered_mg),
                to_i64(q.at_ms)
            ],
        )?;
        let id = tx.last_insert_rowid() as u64;
        tx.commit()?;
        Ok(Ok(Retirement {
            id,
            certificate: cert,
            job: q.job,
            device: q.device,
            hour: q.hour,
            account: q.account.0,
            covered_mg,
            at: TimestampMs(q.at_ms),
        }))
    }

    fn job_retirements(&self, job: JobId, device: DeviceId) -> Result<Vec<Retirement>, StoreError> {
        retirements(
            &self.conn,
            "r.job = ?1 AND r.device = ?2",
            &[&&job.0[..], &&device.0[..]],
        )
    }

    fn unsealed_retirements(&self) -> Result<Vec<Retirement>, StoreError> {
        retirements(&self.conn, "r.epoch IS NULL", &[])
    }

    fn sealed_retirements(
        &self,
        job: JobId,
        device: DeviceId,
    ) -> Result<SealedEntries, StoreError> {
        super::ledger::sealed_entries(
            &self.conn,
            "retirements",
            "job = ?1 AND device = ?2",
            &[&&job.0[..], &&device.0[..]],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use attest::coverage::CoverageError;

    fn store() -> SqliteStore {
        let s = SqliteStore::in_memory().unwrap();
        s.conn
            .execute_batch(
                "INSERT INTO accounts (id, kind, name, quota_bytes, created_ms)
                 VALUES (2, 'buyer', 'b', 0, 0), (3, 'buyer', 'c', 0, 0);",
            )
            .unwrap();
        s
    }

    fn cert(id: &str) -> Certificate {
        Certificate {
            id: id.into(),
            scheme: CertificateScheme::Granular,
            start: TimestampMs(7 * 3_600_000),
            end: TimestampMs(8 * 3_600_000),
            source: "solar".into(),
            technology: "photovoltaic".into(),
            producer: "PV-1".into(),
            region: "DE".into(),
            volume_wh: 5,
            issuer: "registry".into(),
        }
    }

    fn ask(account: u64, certificate: &str) -> RetireRequest<'_> {
        RetireRequest {
            account: AccountId(account),
            certificate,
            job: JobId([4; 16]),
            device: DeviceId([5; 16]),
            hour: 7,
            at_ms: 99,
        }
    }

    #[test]
    fn an_id_is_imported_once_and_an_import_is_all_or_nothing() {
        let mut s = store();
        assert_eq!(
            s.import_certificates(AccountId(2), &[cert("a"), cert("b")], 1)
                .unwrap(),
            None
        );
        assert_eq!(
            s.import_certificates(AccountId(3), &[cert("c"), cert("a")], 2)
                .unwrap(),
            Some("a".into())
        );
        let all = s.certificates(None).unwrap();
        assert_eq!(
            all.iter()
                .map(|h| h.certificate.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(all[0].certificate, cert("a"));
        assert!(s.certificates(Some(AccountId(3))).unwrap().is_empty());
    }

    #[test]
    fn a_certificate_is_retired_once_by_its_holder_and_sealed_into_the_next_epoch() {
        let mut s = store();
        s.import_certificates(AccountId(2), &[cert("a"), cert("b")], 1)
            .unwrap();
        let covers = |mg: u64| move |_: &Certificate, _: &[Retirement]| Ok(mg);
        // Not the holder's: as if it did not exist.
        assert_eq!(
            s.retire(&ask(3, "a"), &covers(10)).unwrap(),
            Err(RetireError::UnknownCertificate("a".into()))
        );
        // The rules refuse it: nothing stored.
        let refuse = |_: &Certificate, _: &[Retirement]| Err(CoverageError::NoEmissions(7));
        assert_eq!(
            s.retire(&ask(2, "a"), &refuse).unwrap(),
            Err(RetireError::Coverage(CoverageError::NoEmissions(7)))
        );
        let first = s.retire(&ask(2, "a"), &covers(10)).unwrap().unwrap();
        assert_eq!((first.id, first.covered_mg, first.hour), (1, 10, 7));
        // The next one sees the first among the job's earlier retirements.
        let seen = |_: &Certificate, earlier: &[Retirement]| Ok(earlier.len() as u64 * 100);
        let second = s.retire(&ask(2, "b"), &seen).unwrap().unwrap();
        assert_eq!(second.covered_mg, 100);
        assert!(matches!(
            s.retire(&ask(2, "a"), &covers(1)).unwrap(),
            Err(RetireError::AlreadyRetired {
                retirement: 1,
                hour: 7,
                ..
            })
        ));
        assert_eq!(
            s.job_retirements(JobId([4; 16]), DeviceId([5; 16]))
                .unwrap(),
            vec![first.clone(), second.clone()]
        );

        // The next epoch signs and holds both, after every other leaf.
        let key = attest::KeyPair::from_seed(&[1; 32]);
        assert_eq!(s.unsealed_retirements().unwrap().len(), 2);
        let epoch = crate::anchor::local::close_epoch(&mut s, &key, 5)
            .unwrap()
            .unwrap();
        assert!(s.unsealed_retirements().unwrap().is_empty());
        let sealed = s
            .sealed_retirements(JobId([4; 16]), DeviceId([5; 16]))
            .unwrap();
        assert_eq!(sealed.pending, 0);
        let leaves = s.epoch_leaves(epoch.epoch).unwrap();
        assert_eq!(leaves.len() as u64, epoch.tree_size);
        for ((envelope, at, leaf), expected) in sealed.sealed.iter().zip([&first, &second]) {
            assert_eq!(*at, epoch.epoch);
            assert_eq!(&leaves[*leaf as usize], envelope);
            let signed = attest::Envelope::decode(envelope).unwrap();
            signed.verify(&key.public()).unwrap();
            assert_eq!(&signed.open::<Retirement>().unwrap(), expected);
        }
        let held = s.certificates(Some(AccountId(2))).unwrap();
        assert_eq!(held[1].retired.as_ref(), Some(&second));
    }
}
