//! The checks a bundle and a statement of account share: every piece of evidence in its
//! epoch's tree, every epoch's anchor under the pinned trust.

use alloc::collections::BTreeMap;
use alloc::format;

use super::{AnchorRef, Blob, Check, EpochProof, Evidence, VerifyError, VerifyOptions, fail};
use crate::envelope::Envelope;
use crate::id::PublicKey;
use crate::keys::KeyHistory;
use crate::merkle::leaf_hash;
use crate::msg::AnchorEntry;
use crate::units::EpochId;

/// Checks every piece of evidence against its epoch's tree head (each epoch listed once).
pub(super) fn check_inclusion(
    what: &str,
    evidence: &[Evidence],
    epochs_in: &[EpochProof],
) -> Result<(), VerifyError> {
    let mut epochs: BTreeMap<EpochId, &EpochProof> = BTreeMap::new();
    for ep in epochs_in {
        if epochs.insert(ep.epoch, ep).is_some() {
            return fail(Check::Format, format!("epoch {} listed twice", ep.epoch));
        }
    }
    let mut checkers: BTreeMap<EpochId, crate::merkle::InclusionChecker> = epochs
        .iter()
        .map(|(id, ep)| (*id, crate::merkle::InclusionChecker::new(ep.head)))
        .collect();
    for (index, ev) in evidence.iter().enumerate() {
        let Some(checker) = checkers.get_mut(&ev.epoch) else {
            return fail(
                Check::Inclusion,
                format!("{what} #{index}: epoch {} is not in the bundle", ev.epoch),
            );
        };
        checker
            .verify(&leaf_hash(&ev.envelope.0), &ev.proof)
            .or_else(|e| {
                fail(
                    Check::Inclusion,
                    format!("{what} #{index} in epoch {}: {e}", ev.epoch),
                )
            })?;
    }

    Ok(())
}

/// Checks every epoch's anchor against the pinned trust (a local entry must be signed by
/// the controller key of its time in `keys`); true when some are on an EVM chain and were
/// only checked offline.
pub(super) fn check_anchors(
    epochs: &[EpochProof],
    opts: &VerifyOptions,
    keys: &KeyHistory,
) -> Result<bool, VerifyError> {
    let mut onchain_unchecked = false;
    for ep in epochs {
        match &ep.anchor {
            AnchorRef::Local {
                entry,
                controller_key,
            } => check_local_anchor(ep, entry, controller_key, keys)?,
            AnchorRef::Evm {
                chain_id, contract, ..
            } => {
                let pinned = opts.trust.evm.as_ref();
                if pinned.is_none_or(|p| p.chain_id != *chain_id || p.contract != *contract) {
                    return fail(
                        Check::Anchor,
                        format!(
                            "UNPINNED: epoch {} is anchored on chain {chain_id} at {contract}, \
                             but the pinned EVM anchor is {}",
                            ep.epoch,
                            pinned.map_or("none".into(), |p| format!(
                                "chain {} at {}",
                                p.chain_id, p.contract
                            ))
                        ),
                    );
                }
                onchain_unchecked = true;
            }
        }
    }

    Ok(onchain_unchecked)
}

fn check_local_anchor(
    ep: &EpochProof,
    entry: &Blob,
    key: &PublicKey,
    keys: &KeyHistory,
) -> Result<(), VerifyError> {
    let e = ep.epoch;
    let env = Envelope::decode(&entry.0)
        .or_else(|err| fail(Check::Anchor, format!("epoch {e}: {err}")))?;
    let a: AnchorEntry = env
        .open()
        .or_else(|err| fail(Check::Anchor, format!("epoch {e}: {err}")))?;
    let trusted = keys.key_at(a.timestamp);
    if *key != trusted {
        return fail(
            Check::Anchor,
            format!(
                "epoch {e}: anchor signed by {key}, not the trusted controller key of its time {trusted}"
            ),
        );
    }
    env.verify(key)
        .or_else(|err| fail(Check::Anchor, format!("epoch {e}: anchor entry {err}")))?;
    if a.epoch != ep.epoch || a.root != ep.head.root || a.tree_size != ep.head.size {
        return fail(
            Check::Anchor,
            format!(
                "epoch {e}: anchor entry records epoch {} root {} size {}, bundle says root {} size {}",
                a.epoch, a.root, a.tree_size, ep.head.root, ep.head.size
            ),
        );
    }
    Ok(())
}
