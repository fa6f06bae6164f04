//! The SQLite backend: WAL journal, versioned migrations, one connection owned by the
//! writer (callers serialise access; the ingest task is the one writer). The market's
//! traits are implemented one file each: `sqlite/accounts.rs`, `sqlite/blobs.rs`,
//! `sqlite/jobs.rs`.

mod accounts;
mod alerts;
mod audit;
mod blobs;
mod broker;
mod certificates;
mod console;
mod enrollment;
mod epochs;
mod jobs;
pub(crate) mod ledger;
mod marks;
mod open;
mod probes;
mod runs;
mod settlement;
mod tags;

use epochs::{EPOCH_COLUMNS, EVM_COLUMNS, NOT_ON_CHAIN, epoch_row, evm_row, to_epoch, to_evm};

use attest::{DeviceId, EpochId, PublicKey, SeqNo};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DeviceRow, DeviceState, EpochRow, EvmAnchorRow, InsertReport, NewItem, PlacedItem, Store,
    StoreError,
};

/// Migrations in order; entry `i` takes the schema from version `i` to `i + 1`.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Db(e.to_string())
    }
}

pub use super::migrations::SCHEMA_VERSION;

/// A SQLite store.
pub struct SqliteStore {
    pub(super) conn: Connection,
}

fn id_of(bytes: Vec<u8>) -> Result<DeviceId, StoreError> {
    bytes
        .try_into()
        .map(DeviceId)
        .map_err(|_| StoreError::Corrupt("device id is not 16 bytes".into()))
}

fn to_i64(v: u64) -> i64 {
    // Sequence numbers and milliseconds stay far below 2^63.
    v.min(i64::MAX as u64) as i64
}

impl SqliteStore {
    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    }

    fn device_row(raw: RawDevice) -> Result<DeviceRow, StoreError> {
        let (id, key, state, hello, first, last) = raw;
        Ok(DeviceRow {
            id: id_of(id)?,
            public_key: PublicKey(
                key.try_into()
                    .map_err(|_| StoreError::Corrupt("public key is not 32 bytes".into()))?,
            ),
            state: DeviceState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("device state {state}")))?,
            hello,
            first_seen_ms: first as u64,
            last_seen_ms: last as u64,
        })
    }
}

/// A `devices` row as read: id, key, state, hello, first seen, last seen.
type RawDevice = (Vec<u8>, Vec<u8>, String, Vec<u8>, i64, i64);

const DEVICE_COLUMNS: &str = "id, public_key, state, hello, first_seen_ms, last_seen_ms";

/// An `epochs` row as read: epoch, size, root, closed, anchor entry, anchor index.
impl Store for SqliteStore {
    fn upsert_device(
        &mut self,
        id: DeviceId,
        key: PublicKey,
        hello: &[u8],
        now_ms: u64,
        initial: DeviceState,
    ) -> Result<DeviceRow, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO devices (id, public_key, state, hello, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (id) DO UPDATE SET hello = excluded.hello, last_seen_ms = excluded.last_seen_ms",
            params![&id.0[..], &key.0[..], initial.as_str(), hello, to_i64(now_ms)],
        )?;
        tx.commit()?;
        self.device(id)?
            .ok_or_else(|| StoreError::Corrupt("device vanished after upsert".into()))
    }

    fn device(&self, id: DeviceId) -> Result<Option<DeviceRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                params![&id.0[..]],
                Self::row,
            )
            .optional()?;
        raw.map(Self::device_row).transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY first_seen_ms, id"
        ))?;
        let rows = st
            .query_map([], Self::row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::device_row).collect()
    }

    fn record_hello(
        &mut self,
        id: DeviceId,
        timestamp_ms: u64,
        hello: &[u8],
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let insert = "INSERT INTO hellos (device, timestamp_ms, envelope) VALUES (?1, ?2, ?3)
                      ON CONFLICT (device, timestamp_ms) DO NOTHING";
        let has_history: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM hellos WHERE device = ?1)",
            params![&id.0[..]],
            |r| r.get(0),
        )?;
        if !has_history {
            // A device known from before the history was kept (schema 3): its current
            // hello is its first version.
            let current: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT hello FROM devices WHERE id = ?1",
                    params![&id.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(bytes) = current
                && let Ok(h) =
                    attest::Envelope::decode(&bytes).and_then(|e| e.open::<attest::msg::Hello>())
            {
                tx.execute(insert, params![&id.0[..], to_i64(h.timestamp.0), bytes])?;
            }
        }
        tx.execute(insert, params![&id.0[..], to_i64(timestamp_ms), hello])?;
        tx.commit()?;
        Ok(())
    }

    fn mark_seen(&mut self, ids: &[DeviceId], now_ms: u64) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE devices SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
            )?;
            for id in ids {
                st.execute(params![&id.0[..], to_i64(now_ms)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn take_enrollment(&mut self, id: DeviceId) -> Result<bool, StoreError> {
        enrollment::take(&self.conn, id)
    }

    fn count_pending(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM devices WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn expire_pending(&mut self, before_ms: u64) -> Result<Vec<DeviceId>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let ids: Vec<Vec<u8>> = {
            let mut st =
                tx.prepare("SELECT id FROM devices WHERE state = 'pending' AND last_seen_ms < ?1")?;
            st.query_map(params![to_i64(before_ms)], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in &ids {
            // A pending device's messages are never in an epoch; the guard keeps it so.
            tx.execute(
                "DELETE FROM chain_items WHERE device = ?1 AND epoch IS NULL",
                params![id],
            )?;
            tx.execute("DELETE FROM hellos WHERE device = ?1", params![id])?;
            tx.execute(
                "DELETE FROM devices WHERE id = ?1 AND NOT EXISTS
                 (SELECT 1 FROM chain_items WHERE device = ?1)",
                params![id],
            )?;
        }
        tx.commit()?;
        ids.into_iter().map(id_of).collect()
    }

    fn hellos(&self, id: DeviceId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT envelope FROM hellos WHERE device = ?1 ORDER BY timestamp_ms",
        )?;
        let rows = st
            .query_map(params![&id.0[..]], |r| r.get(0))?
            .collect::<Result<Vec<Vec<u8>>, _>>()?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        // A database from before the history (schema 3): the current hello only.
        Ok(self.device(id)?.map(|d| vec![d.hello]).unwrap_or_default())
    }

    fn set_state(&mut self, id: DeviceId, state: DeviceState) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE devices SET state = ?2 WHERE id = ?1",
            params![&id.0[..], state.as_str()],
        )?;
        Ok(n == 1)
    }

    fn insert_items(&mut self, items: &[NewItem]) -> Result<InsertReport, StoreError> {
        self.insert_items_seen(items, &[], 0)
    }

    fn insert_items_seen(
        &mut self,
        items: &[NewItem],
        seen: &[DeviceId],
        now_ms: u64,
    ) -> Result<InsertReport, StoreError> {
        let mut report = InsertReport::default();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut touch = tx.prepare_cached(
                "UPDATE devices SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
            )?;
            for id in seen {
                touch.execute(params![&id.0[..], to_i64(now_ms)])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO chain_items (device, seq, kind, timestamp_ms, hash, envelope, counted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (device, seq) DO NOTHING",
            )?;
            let mut existing =
                tx.prepare_cached("SELECT hash FROM chain_items WHERE device = ?1 AND seq = ?2")?;
            for it in items {
                let n = insert.execute(params![
                    &it.device.0[..],
                    to_i64(it.seq.0),
                    it.kind,
                    to_i64(it.timestamp_ms),
                    &it.hash.0[..],
                    &it.envelope,
                    it.counted
                ])?;
                if n == 1 {
                    report.inserted += 1;
                    continue;
                }
                let hash: Vec<u8> = existing
                    .query_row(params![&it.device.0[..], to_i64(it.seq.0)], |r| r.get(0))?;
                if hash == it.hash.0 {
                    report.duplicates += 1;
                } else {
                    report.conflicts += 1;
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    fn last_item(&self, id: DeviceId) -> Result<Option<(SeqNo, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, envelope FROM chain_items WHERE device = ?1 ORDER BY seq DESC LIMIT 1",
                params![&id.0[..]],
                |r| Ok((SeqNo(r.get::<_, i64>(0)? as u64), r.get(1)?)),
            )
            .optional()?)
    }

    fn items(
        &self,
        id: DeviceId,
        from: SeqNo,
        to: SeqNo,
    ) -> Result<Vec<(SeqNo, Vec<u8>)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, envelope FROM chain_items WHERE device = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
        )?;
        let rows = st
            .query_map(params![&id.0[..], to_i64(from.0), to_i64(to.0)], |r| {
                Ok((SeqNo(r.get::<_, i64>(0)? as u64), r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn unplaced(&self) -> Result<Vec<(DeviceId, SeqNo, Vec<u8>)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT device, seq, envelope FROM chain_items WHERE epoch IS NULL
             AND device NOT IN (SELECT id FROM devices WHERE state = 'pending')
             ORDER BY device, seq",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    SeqNo(r.get::<_, i64>(1)? as u64),
                    r.get(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(d, s, e)| Ok((id_of(d)?, s, e)))
            .collect()
    }

    fn commit_epoch(
        &mut self,
        e: &EpochRow,
        leaves: &[(DeviceId, SeqNo)],
        ledger: &[(u64, Vec<u8>)],
        retirements: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!("INSERT INTO epochs ({EPOCH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                to_i64(e.epoch.0),
                to_i64(e.tree_size),
                &e.root.0[..],
                to_i64(e.closed_ms),
                &e.anchor_entry,
                to_i64(e.anchor_index)
            ],
        )?;
        {
            let mut place = tx.prepare_cached(
                "UPDATE chain_items SET epoch = ?3, leaf_index = ?4 WHERE device = ?1 AND seq = ?2 AND epoch IS NULL",
            )?;
            for (i, (d, s)) in leaves.iter().enumerate() {
                let n =
                    place.execute(params![&d.0[..], to_i64(s.0), to_i64(e.epoch.0), i as i64])?;
                if n != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "message {d}/{s} is missing or already in an epoch"
                    )));
                }
            }
            let mut seal = tx.prepare_cached(
                "UPDATE ledger_tx SET envelope = ?2, epoch = ?3, leaf = ?4 WHERE id = ?1 AND epoch IS NULL",
            )?;
            for (i, (id, envelope)) in ledger.iter().enumerate() {
                let leaf = (leaves.len() + i) as i64;
                let n = seal.execute(params![to_i64(*id), envelope, to_i64(e.epoch.0), leaf])?;
                if n != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "ledger transaction {id} is missing or already in an epoch"
                    )));
                }
            }
            let mut seal = tx.prepare_cached(
                "UPDATE retirements SET envelope = ?2, epoch = ?3, leaf = ?4 WHERE id = ?1 AND epoch IS NULL",
            )?;
            for (i, (id, envelope)) in retirements.iter().enumerate() {
                let leaf = (leaves.len() + ledger.len() + i) as i64;
                let n = seal.execute(params![to_i64(*id), envelope, to_i64(e.epoch.0), leaf])?;
                if n != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "retirement {id} is missing or already in an epoch"
                    )));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn last_epoch(&self) -> Result<Option<EpochRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY epoch DESC LIMIT 1"),
                [],
                epoch_row,
            )
            .optional()?;
        raw.map(to_epoch).transpose()
    }

    fn epoch(&self, epoch: EpochId) -> Result<Option<EpochRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE epoch = ?1"),
                params![to_i64(epoch.0)],
                epoch_row,
            )
            .optional()?;
        raw.map(to_epoch).transpose()
    }

    fn epoch_leaves(&self, epoch: EpochId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT envelope FROM (
                 SELECT envelope, leaf_index AS leaf FROM chain_items WHERE epoch = ?1
                 UNION ALL SELECT envelope, leaf FROM ledger_tx WHERE epoch = ?1
                 UNION ALL SELECT envelope, leaf FROM retirements WHERE epoch = ?1)
             ORDER BY leaf",
        )?;
        let rows = st
            .query_map(params![to_i64(epoch.0)], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn evm_anchor(&self, epoch: EpochId) -> Result<Option<EvmAnchorRow>, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {EVM_COLUMNS} FROM evm_anchors WHERE epoch = ?1"),
                [to_i64(epoch.0)],
                evm_row,
            )
            .optional()?;
        raw.map(to_evm).transpose()
    }

    fn put_evm_anchor(&mut self, r: &EvmAnchorRow) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let confirmed: Option<Option<i64>> = tx
            .query_row(
                "SELECT block_number FROM evm_anchors WHERE epoch = ?1",
                [to_i64(r.epoch.0)],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(Some(_)) = confirmed {
            return Err(StoreError::Corrupt(format!(
                "epoch {} is already anchored on chain; refusing to replace its anchor",
                r.epoch
            )));
        }
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO evm_anchors ({EVM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                to_i64(r.epoch.0),
                to_i64(r.chain_id),
                &r.contract[..],
                to_i64(r.nonce),
                &r.tx_hash.0[..],
                &r.raw_tx,
                r.block_number.map(to_i64),
                r.gas_used.map(to_i64),
                to_i64(r.signed_ms)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn drop_unconfirmed_evm_anchor(&mut self, epoch: EpochId) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM evm_anchors WHERE epoch = ?1 AND block_number IS NULL",
            [to_i64(epoch.0)],
        )?;
        Ok(())
    }

    fn count_epochs_not_on_chain(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM epochs e WHERE {NOT_ON_CHAIN}"),
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn epochs_not_on_chain(&self) -> Result<Vec<EpochRow>, StoreError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {} FROM epochs e WHERE {NOT_ON_CHAIN} ORDER BY e.epoch",
            EPOCH_COLUMNS
                .split(", ")
                .map(|c| format!("e.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let rows = st.query_map([], epoch_row)?;
        rows.map(|r| to_epoch(r?)).collect()
    }

    fn items_between(
        &self,
        id: DeviceId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<PlacedItem>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, timestamp_ms, envelope, epoch, leaf_index, counted FROM chain_items
             WHERE device = ?1 AND timestamp_ms BETWEEN ?2 AND ?3 ORDER BY seq",
        )?;
        let rows = st
            .query_map(params![&id.0[..], to_i64(from_ms), to_i64(to_ms)], |r| {
                let epoch: Option<i64> = r.get(3)?;
                let leaf: Option<i64> = r.get(4)?;
                Ok(PlacedItem {
                    seq: SeqNo(r.get::<_, i64>(0)? as u64),
                    timestamp_ms: r.get::<_, i64>(1)? as u64,
                    envelope: r.get(2)?,
                    placed: epoch.zip(leaf).map(|(e, l)| (EpochId(e as u64), l as u64)),
                    counted: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn count_items(&self, id: DeviceId) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM chain_items WHERE device = ?1",
            params![&id.0[..]],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    fn key_rotations(&self) -> Result<Vec<attest::keys::KeyLink>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT link FROM key_rotations ORDER BY at_ms, id")?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(
                attest::keys::KeyLink::decode(&row?)
                    .map_err(|e| StoreError::Corrupt(format!("key_rotations.link: {e}")))?,
            );
        }
        Ok(out)
    }

    fn add_key_rotation(
        &mut self,
        link: &attest::keys::KeyLink,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO key_rotations (at_ms, link) VALUES (?1, ?2)",
            params![at_ms as i64, link.encode()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest::sample::SampleDevice;

    fn item(dev: &SampleDevice, env: &attest::Envelope, counted: bool) -> NewItem {
        let msg = attest::msg::ChainMessage::open(env).unwrap();
        let key = dev.key.public();
        let v = attest::sigbatch::verify_messages(vec![(env.clone(), msg, &key)])
            .pop()
            .unwrap()
            .unwrap();
        NewItem::from_verified(v, counted)
    }

    #[test]
    fn records_are_stored_once_and_a_different_second_version_is_refused() {
        let mut s = SqliteStore::in_memory().unwrap();
        let mut dev = SampleDevice::new(1);
        let chain = dev.chain(10, 10_000);
        let items: Vec<NewItem> = chain.iter().map(|e| item(&dev, e, true)).collect();
        assert_eq!(
            s.insert_items(&items).unwrap(),
            InsertReport {
                inserted: 10,
                duplicates: 0,
                conflicts: 0
            }
        );
        assert_eq!(
            s.insert_items(&items[3..5]).unwrap(),
            InsertReport {
                inserted: 0,
                duplicates: 2,
                conflicts: 0
            }
        );
        let mut forged = items[4].clone();
        forged.hash.0[0] ^= 1;
        assert_eq!(s.insert_items(&[forged]).unwrap().conflicts, 1);
        assert_eq!(s.count_items(dev.key.device_id()).unwrap(), 10);
        assert_eq!(
            s.items(dev.key.device_id(), SeqNo(4), SeqNo(4)).unwrap()[0].1,
            chain[4].as_bytes()
        );
        assert_eq!(
            s.last_item(dev.key.device_id()).unwrap().unwrap().0,
            SeqNo(9)
        );
    }

    #[test]
    fn devices_register_as_pending_keep_their_state_and_can_be_approved() {
        let mut s = SqliteStore::in_memory().unwrap();
        let dev = SampleDevice::new(2);
        let hello = dev.hello();
        let id = dev.key.device_id();
        let row = s
            .upsert_device(
                id,
                dev.key.public(),
                hello.as_bytes(),
                100,
                DeviceState::Pending,
            )
            .unwrap();
        assert_eq!(row.state, DeviceState::Pending);
        assert!(s.set_state(id, DeviceState::Approved).unwrap());
        let row = s
            .upsert_device(
                id,
                dev.key.public(),
                hello.as_bytes(),
                200,
                DeviceState::Pending,
            )
            .unwrap();
        assert_eq!(
            (row.state, row.first_seen_ms, row.last_seen_ms),
            (DeviceState::Approved, 100, 200)
        );
        assert!(
            !s.set_state(SampleDevice::new(3).key.device_id(), DeviceState::Approved)
                .unwrap()
        );
        assert_eq!(s.devices().unwrap().len(), 1);
    }

    #[test]
    fn an_evm_anchor_is_replaced_while_unconfirmed_and_never_after() {
        let mut s = SqliteStore::in_memory().unwrap();
        let e = EpochRow {
            epoch: EpochId(0),
            tree_size: 3,
            root: attest::Hash32([1; 32]),
            closed_ms: 5,
            anchor_entry: vec![1, 2, 3],
            anchor_index: 0,
        };
        s.commit_epoch(&e, &[], &[], &[]).unwrap();
        assert_eq!(s.epochs_not_on_chain().unwrap(), vec![e.clone()]);
        assert_eq!(s.count_epochs_not_on_chain().unwrap(), 1);
        let mut a = EvmAnchorRow {
            epoch: EpochId(0),
            chain_id: 31337,
            contract: [9; 20],
            nonce: 4,
            tx_hash: attest::Hash32([2; 32]),
            raw_tx: vec![0xaa; 10],
            block_number: None,
            gas_used: None,
            signed_ms: 6,
        };
        s.put_evm_anchor(&a).unwrap();
        // Sent but unconfirmed: still pending, and a re-signed transaction replaces it.
        assert_eq!(s.epochs_not_on_chain().unwrap().len(), 1);
        a.tx_hash = attest::Hash32([3; 32]);
        a.nonce = 5;
        s.put_evm_anchor(&a).unwrap();
        assert_eq!(s.evm_anchor(EpochId(0)).unwrap().unwrap().nonce, 5);
        a.block_number = Some(12);
        a.gas_used = Some(74_000);
        s.put_evm_anchor(&a).unwrap();
        assert!(s.epochs_not_on_chain().unwrap().is_empty());
        assert_eq!(s.count_epochs_not_on_chain().unwrap(), 0);
        assert_eq!(s.evm_anchor(EpochId(0)).unwrap().unwrap(), a);
        // Confirmed: never replaced, never dropped.
        let mut other = a.clone();
        other.tx_hash = attest::Hash32([4; 32]);
        assert!(matches!(
            s.put_evm_anchor(&other),
            Err(StoreError::Corrupt(_))
        ));
        s.drop_unconfirmed_evm_anchor(EpochId(0)).unwrap();
        assert_eq!(s.evm_anchor(EpochId(0)).unwrap().unwrap(), a);
    }

    #[test]
    fn the_database_survives_reopening_and_refuses_a_newer_schema() {
        let dir = std::env::temp_dir().join(format!("store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("controller.db");
        let mut dev = SampleDevice::new(4);
        let chain = dev.chain(3, 10_000);
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.insert_items(
                &chain
                    .iter()
                    .map(|e| item(&dev, e, false))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.count_items(dev.key.device_id()).unwrap(), 3);
        s.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(s);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { .. })
        ));
    }

    #[test]
    fn a_device_from_before_the_hello_history_keeps_its_first_hello_as_a_version() {
        let mut s = SqliteStore::in_memory().unwrap();
        let dev = SampleDevice::new(3);
        let id = dev.key.device_id();
        let first = dev.hello();
        // Registered by an older controller: a device row, no history.
        s.upsert_device(
            id,
            dev.key.public(),
            first.as_bytes(),
            1,
            DeviceState::Approved,
        )
        .unwrap();
        let mut moved: attest::msg::Hello = first.open().unwrap();
        moved.timestamp.0 += 1_000;
        moved.site.grid_region = "FR".into();
        let moved = attest::Envelope::seal(&moved, &dev.key);
        s.record_hello(id, 1_782_000_001_000, moved.as_bytes())
            .unwrap();
        assert_eq!(
            s.hellos(id).unwrap(),
            vec![first.as_bytes().to_vec(), moved.as_bytes().to_vec()]
        );
    }
}
