//! [`TagStore`] on SQLite (table `device_tags`, migration 19).

use std::collections::BTreeMap;

use attest::DeviceId;
use rusqlite::params;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::tags::{MAX_TAGS, TagStore};

impl TagStore for SqliteStore {
    fn all_tags(&self) -> Result<BTreeMap<DeviceId, Vec<String>>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT device, tag FROM device_tags ORDER BY device, tag")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out: BTreeMap<DeviceId, Vec<String>> = BTreeMap::new();
        for row in rows {
            let (d, tag) = row?;
            let d = <[u8; 16]>::try_from(d.as_slice())
                .map_err(|_| StoreError::Corrupt("device_tags.device length".into()))?;
            out.entry(DeviceId(d)).or_default().push(tag);
        }
        Ok(out)
    }

    fn add_tag(&mut self, devices: &[DeviceId], tag: &str) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        for d in devices {
            let have: i64 = tx.query_row(
                "SELECT COUNT(*) FROM device_tags WHERE device = ?1",
                [&d.0[..]],
                |r| r.get(0),
            )?;
            if have as usize >= MAX_TAGS {
                continue;
            }
            n += tx.execute(
                "INSERT INTO device_tags (device, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![&d.0[..], tag],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn remove_tag(&mut self, devices: &[DeviceId], tag: &str) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        for d in devices {
            n += tx.execute(
                "DELETE FROM device_tags WHERE device = ?1 AND tag = ?2",
                params![&d.0[..], tag],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tags::valid_tag;

    #[test]
    fn tags_are_added_once_removed_and_capped() {
        let mut st = SqliteStore::in_memory().unwrap();
        let (a, b) = (DeviceId([1; 16]), DeviceId([2; 16]));
        assert_eq!(st.add_tag(&[a, b], "site-nairobi").unwrap(), 2);
        assert_eq!(st.add_tag(&[a], "site-nairobi").unwrap(), 0);
        assert_eq!(st.add_tag(&[a], "batch-7").unwrap(), 1);
        let all = st.all_tags().unwrap();
        assert_eq!(all[&a], ["batch-7", "site-nairobi"]);
        assert_eq!(st.remove_tag(&[a, b], "site-nairobi").unwrap(), 2);
        assert_eq!(st.all_tags().unwrap().get(&b), None);
        for i in 0..20 {
            st.add_tag(&[b], &format!("t{i}")).unwrap();
        }
        assert_eq!(st.all_tags().unwrap()[&b].len(), MAX_TAGS);
        assert!(
            valid_tag("site-nairobi.3")
                && !valid_tag("Site")
                && !valid_tag("")
                && !valid_tag(&"a".repeat(33))
        );
    }
}
