//! Epochs and the local anchor: every epoch, the stored messages not yet anchored become
//! the leaves of one RFC 6962 tree (ordered by device, then sequence), and its root goes
//! into the controller-signed, hash-chained anchor log, all in one transaction: an epoch is
//! either wholly closed and anchored or not at all, and never twice.

use attest::msg::AnchorEntry;
use attest::{Envelope, EpochId, Hash32, KeyPair, SeqNo, TimestampMs};

use crate::store::certificates::CertificateStore;
use crate::store::ledger::LedgerStore;
use crate::store::{EpochRow, Store, StoreError};

/// Closes the next epoch over every unanchored stored message; `None` when there is none.
pub fn close_epoch<S: Store + LedgerStore + CertificateStore>(
    store: &mut S,
    key: &KeyPair,
    now_ms: u64,
) -> Result<Option<EpochRow>, StoreError> {
    let _span = tracing::info_span!("anchor.epoch").entered();
    let items = store.unplaced()?;
    // The ledger's transactions since the last epoch, signed now: leaves after the chain
    // messages, so that a statement of account verifies offline.
    let ledger: Vec<(u64, Vec<u8>)> = store
        .unsealed_ledger()?
        .iter()
        .map(|entry| (entry.id, Envelope::seal(entry, key).into_bytes()))
        .collect();
    // Certificates retired since, signed now: leaves after the ledger's, so that a job's
    // bundle proves each.
    let retired: Vec<(u64, Vec<u8>)> = store
        .unsealed_retirements()?
        .iter()
        .map(|r| (r.id, Envelope::seal(r, key).into_bytes()))
        .collect();
    if items.is_empty() && ledger.is_empty() && retired.is_empty() {
        return Ok(None);
    }
    let leaves: Vec<&[u8]> = items
        .iter()
        .map(|(_, _, e)| e.as_slice())
        .chain(ledger.iter().map(|(_, e)| e.as_slice()))
        .chain(retired.iter().map(|(_, e)| e.as_slice()))
        .collect();
    let head = attest::merkle::TreeHead::from_leaf_hashes(
        &leaves
            .iter()
            .map(|l| attest::merkle::leaf_hash(l))
            .collect::<Vec<_>>(),
    );
    let last = store.last_epoch()?;
    let epoch = last.as_ref().map_or(EpochId(0), |e| e.epoch.next());
    let (index, prev) = match &last {
        Some(e) => (e.anchor_index + 1, Hash32::digest(&e.anchor_entry)),
        None => (0, Hash32::ZERO),
    };
    let entry = AnchorEntry {
        index,
        prev,
        epoch,
        tree_size: head.size,
        root: head.root,
        timestamp: TimestampMs(now_ms),
    };
    let row = EpochRow {
        epoch,
        tree_size: head.size,
        root: head.root,
        closed_ms: now_ms,
        anchor_entry: Envelope::seal(&entry, key).into_bytes(),
        anchor_index: index,
    };
    let placed: Vec<(attest::DeviceId, SeqNo)> = items.iter().map(|(d, s, _)| (*d, *s)).collect();
    store.commit_epoch(&row, &placed, &ledger, &retired)?;
    crate::crash::point("epoch-closed");
    tracing::info!(epoch = epoch.0, leaves = head.size, root = %head.root, "epoch anchored (local log)");
    Ok(Some(row))
}
