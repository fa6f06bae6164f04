//! Epoch and EVM anchor rows on SQLite: their columns and their conversions.

use attest::EpochId;

use crate::store::{EpochRow, EvmAnchorRow, StoreError};

type RawEpoch = (i64, i64, Vec<u8>, i64, Vec<u8>, i64);

pub(super) fn epoch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEpoch> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

pub(super) fn to_epoch(raw: RawEpoch) -> Result<EpochRow, StoreError> {
    let (epoch, size, root, closed, entry, index) = raw;
    Ok(EpochRow {
        epoch: EpochId(epoch as u64),
        tree_size: size as u64,
        root: attest::Hash32(
            root.try_into()
                .map_err(|_| StoreError::Corrupt("epoch root is not 32 bytes".into()))?,
        ),
        closed_ms: closed as u64,
        anchor_entry: entry,
        anchor_index: index as u64,
    })
}

pub(super) const EPOCH_COLUMNS: &str =
    "epoch, tree_size, root, closed_ms, anchor_entry, anchor_index";

/// Epoch `e` has no confirmed EVM anchor.
pub(super) const NOT_ON_CHAIN: &str = "NOT EXISTS (SELECT 1 FROM evm_anchors a \
     WHERE a.epoch = e.epoch AND a.block_number IS NOT NULL)";

pub(super) const EVM_COLUMNS: &str =
    "epoch, chain_id, contract, nonce, tx_hash, raw_tx, block_number, gas_used, signed_ms";

type RawEvm = (
    i64,
    i64,
    Vec<u8>,
    i64,
    Vec<u8>,
    Vec<u8>,
    Option<i64>,
    Option<i64>,
    i64,
);

pub(super) fn evm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvm> {
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
    ))
}

pub(super) fn to_evm(raw: RawEvm) -> Result<EvmAnchorRow, StoreError> {
    let (epoch, chain_id, contract, nonce, tx_hash, raw_tx, block, gas, signed) = raw;
    Ok(EvmAnchorRow {
        epoch: EpochId(epoch as u64),
        chain_id: chain_id as u64,
        contract: contract
            .try_into()
            .map_err(|_| StoreError::Corrupt("contract address is not 20 bytes".into()))?,
        nonce: nonce as u64,
        tx_hash: attest::Hash32(
            tx_hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("tx hash is not 32 bytes".into()))?,
        ),
        raw_tx,
        block_number: block.map(|b| b as u64),
        gas_used: gas.map(|g| g as u64),
        signed_ms: signed as u64,
    })
}
