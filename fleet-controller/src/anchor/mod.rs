//! Where epoch roots are anchored. Every closed epoch is anchored in the controller-signed,
//! hash-chained local log ([`local`], in the same transaction that closes it); with
//! `epochs.anchor = "evm"` also on the anchor contract ([`evm`], by a thread of its own).
//! A bundle cites, per epoch, the strongest anchor a backend holds ([`Anchor::cite`]): the
//! contract once the transaction is confirmed, the local log otherwise.

pub mod evm;
mod evm_loop;
pub mod local;

use attest::PublicKey;
use attest::bundle::{Address, AnchorRef, Blob};

use crate::store::{EpochRow, Store, StoreError};

/// An anchor backend, as bundles see it.
pub trait Anchor {
    /// How a bundle cites this backend's anchor of a closed epoch; `None` when it holds
    /// none (yet) for it.
    fn cite<S: Store>(&self, store: &S, epoch: &EpochRow) -> Result<Option<AnchorRef>, StoreError>;
}

/// The local log: every closed epoch has its signed entry.
pub struct LocalLog {
    /// The controller's keys, newest first: each entry names the one that signed it (an
    /// entry made before a rotation, the key of its time).
    pub keys: Vec<PublicKey>,
}

impl Anchor for LocalLog {
    fn cite<S: Store>(&self, _: &S, epoch: &EpochRow) -> Result<Option<AnchorRef>, StoreError> {
        let env = attest::Envelope::decode(&epoch.anchor_entry).map_err(|e| {
            StoreError::Corrupt(format!("epoch {}'s anchor entry: {e}", epoch.epoch))
        })?;
        let signer = self
            .keys
            .iter()
            .find(|k| env.verify(k).is_ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "epoch {}'s anchor entry is signed by none of the controller's keys",
                    epoch.epoch
                ))
            })?;
        Ok(Some(AnchorRef::Local {
            entry: Blob(epoch.anchor_entry.clone()),
            controller_key: *signer,
        }))
    }
}

/// The EVM anchor contract: an epoch whose transaction is confirmed.
pub struct EvmContract;

impl Anchor for EvmContract {
    fn cite<S: Store>(&self, store: &S, epoch: &EpochRow) -> Result<Option<AnchorRef>, StoreError> {
        Ok(store.evm_anchor(epoch.epoch)?.and_then(|a| {
            Some(AnchorRef::Evm {
                chain_id: a.chain_id,
                contract: Address(a.contract),
                tx_hash: a.tx_hash,
                block_number: a.block_number?,
            })
        }))
    }
}
