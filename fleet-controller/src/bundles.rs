//! Proof bundles for a device-period: the signed messages in the period, their inclusion
//! proofs in their epochs' trees, the epochs' local anchor entries, the device's hello, and
//! the statement computed with `attest`'s own arithmetic (with the plausibility flags the
//! records raise, which lower its tier), so `attest verify` accepts it.

use std::collections::BTreeMap;

use attest::account::{StatementInput, compute_statement};
use attest::bundle::{AnchorRef, BUNDLE_FORMAT, Blob, EpochProof, Evidence, ProofBundle};
use attest::carbon::BatteryState;
use attest::merkle::{MerkleTree, TreeHead};
use attest::msg::{ChainMessage, Hello, Subject};
use attest::{DeviceId, Envelope, EpochId, PublicKey};

use crate::intensity::IntensityResolver;
use crate::store::{Store, StoreError};

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such device.
    #[error("no device {0}")]
    UnknownDevice(DeviceId),
    /// Nothing stored in the period.
    #[error("no messages of {0} in that period")]
    Empty(DeviceId),
    /// A message in the period is not anchored yet.
    #[error("message {seq} is not in a closed epoch yet: wait for the epoch to close")]
    NotAnchored { seq: u64 },
    /// The statement could not be computed.
    #[error("statement: {0}")]
    Statement(String),
}

/// The statement for a device over its chain messages: `attest`'s arithmetic with the
/// intensity of the device's region (its hello's `site.grid_region`) hour by hour, the
/// plausibility flags the records raise, and no battery content assumed at the start.
/// Shared by bundles, the API's hour views and fleet accounting.
pub fn device_statement(
    hello: &Hello,
    chain: &[ChainMessage],
    intensity: &IntensityResolver,
) -> Result<attest::msg::Statement, attest::account::AccountError> {
    let region = intensity.for_region(&hello.site.grid_region);
    let mut statement = compute_statement(&StatementInput {
        subject: Subject::DevicePeriod {
            device: hello.device,
        },
        hello,
        chain,
        intensity: &|hour| region.at(hour).mg_per_kwh,
        intensity_source: String::new(),
        battery_initial: BatteryState::default(),
        flags: crate::plausibility::check_chain(&hello.site, chain),
        embodied_mg: 0,
        functional_units: 0,
    })?;
    // Which sources a period used is known once its hours are. `compute_statement` only
    // copies the source text into the statement, so naming it now gives the very statement
    // that text as input would have given, and the verifier recomputes it from the stated
    // text and the stated per-hour figures.
    statement.intensity_source = region.describe(statement.hours.iter().map(|h| h.hour));
    Ok(statement)
}

/// Builds the bundle for `device` over messages with timestamps in `from_ms..=to_ms`.
/// With `trim_unanchored`, the period ends before the first message whose epoch is still
/// open; without it, such a message is an error.
pub fn device_period<S: Store>(
    store: &S,
    controller: PublicKey,
    device: DeviceId,
    from_ms: u64,
    to_ms: u64,
    intensity: &IntensityResolver,
    trim_unanchored: bool,
) -> Result<ProofBundle, BundleError> {
    let dev = store
        .device(device)?
        .ok_or(BundleError::UnknownDevice(device))?;
    let mut items = store.items_between(device, from_ms, to_ms)?;
    if trim_unanchored {
        let anchored = items.iter().take_while(|i| i.placed.is_some()).count();
        items.truncate(anchored);
    }
    if items.is_empty() {
        return Err(BundleError::Empty(device));
    }
    let mut trees: BTreeMap<u64, MerkleTree> = BTreeMap::new();
    let mut epochs = Vec::new();
    let mut evidence = Vec::with_capacity(items.len());
    let mut chain = Vec::with_capacity(items.len());
    for it in &items {
        let (epoch, leaf) = it.placed.ok_or(BundleError::NotAnchored { seq: it.seq })?;
        if let std::collections::btree_map::Entry::Vacant(slot) = trees.entry(epoch) {
            let row = store
                .epoch(epoch)?
                .ok_or_else(|| StoreError::Corrupt(format!("epoch {epoch} missing")))?;
            let tree = MerkleTree::from_leaves(&store.epoch_leaves(epoch)?);
            if tree.head()
                != (TreeHead {
                    size: row.tree_size,
                    root: row.root,
                })
            {
                return Err(StoreError::Corrupt(format!(
                    "epoch {epoch}'s leaves do not give its stored root"
                ))
                .into());
            }
            // An epoch confirmed on chain is proven there (`attest verify --rpc`);
            // otherwise by the controller-signed local log.
            let anchor = match store.evm_anchor(epoch)? {
                Some(a) if a.block_number.is_some() => AnchorRef::Evm {
                    chain_id: a.chain_id,
                    contract: attest::bundle::Address(a.contract),
                    tx_hash: a.tx_hash,
                    block_number: a.block_number.unwrap_or_default(),
                },
                _ => AnchorRef::Local {
                    entry: Blob(row.anchor_entry.clone()),
                    controller_key: controller,
                },
            };
            epochs.push(EpochProof {
                epoch: EpochId(epoch),
                head: tree.head(),
                anchor,
            });
            slot.insert(tree);
        }
        let proof = trees[&epoch]
            .inclusion_proof(leaf)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        evidence.push(Evidence {
            envelope: Blob(it.envelope.clone()),
            epoch: EpochId(epoch),
            proof,
        });
        let env = Envelope::decode(&it.envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        chain.push(ChainMessage::open(&env).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    let hello: Hello = Envelope::decode(&dev.hello)
        .and_then(|e| e.open())
        .map_err(|e| StoreError::Corrupt(format!("stored hello: {e}")))?;
    let statement = device_statement(&hello, &chain, intensity)
        .map_err(|e| BundleError::Statement(e.to_string()))?;
    Ok(ProofBundle {
        format: BUNDLE_FORMAT,
        statement,
        devices: vec![Blob(dev.hello)],
        evidence,
        epochs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epochs::close_epoch;
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use crate::store::sqlite::SqliteStore;
    use attest::KeyPair;
    use attest::bundle::{Check, VerifyOptions, verify};
    use attest::sample::{SAMPLE_START, SampleDevice};

    #[test]
    fn a_bundle_over_two_anchored_epochs_verifies_and_an_unanchored_period_is_refused() {
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let cfg = IngestConfig::auto_approving();
        let mut ing = Ingest::new(SqliteStore::in_memory().unwrap(), key.clone(), cfg);
        let mut dev = SampleDevice::new(5);
        let chain = dev.chain(40, 60_000);
        let topic = |leaf: &str| format!("{PREFIX}{}/{leaf}", dev.key.device_id());
        let now = SAMPLE_START.0 + 86_400_000;
        let mut first = vec![(topic("hello"), dev.hello().into_bytes())];
        first.extend(
            chain[..25]
                .iter()
                .map(|e| (topic("records"), e.as_bytes().to_vec())),
        );
        ing.handle(&first, now).unwrap();
        let e0 = close_epoch(ing.store_mut(), &key, now).unwrap().unwrap();
        assert_eq!((e0.epoch, e0.tree_size), (0, 25));
        assert!(
            close_epoch(ing.store_mut(), &key, now).unwrap().is_none(),
            "nothing new, no epoch"
        );
        let rest: Vec<_> = chain[25..]
            .iter()
            .map(|e| (topic("records"), e.as_bytes().to_vec()))
            .collect();
        ing.handle(&rest, now).unwrap();
        let id = dev.key.device_id();
        let intensity = IntensityResolver::flat(380_000, "test:flat");
        let not_yet = device_period(
            ing.store(),
            key.public(),
            id,
            0,
            u64::MAX,
            &intensity,
            false,
        );
        assert!(matches!(not_yet, Err(BundleError::NotAnchored { seq: 25 })));
        let e1 = close_epoch(ing.store_mut(), &key, now + 1)
            .unwrap()
            .unwrap();
        assert_eq!((e1.epoch, e1.tree_size, e1.anchor_index), (1, 15, 1));
        let b = device_period(
            ing.store(),
            key.public(),
            id,
            0,
            u64::MAX,
            &intensity,
            false,
        )
        .unwrap();
        assert_eq!(b.epochs.len(), 2);
        let opts = VerifyOptions {
            controller_key: Some(key.public()),
            now: attest::TimestampMs(now),
        };
        let r = verify(&b, &opts).unwrap();
        assert_eq!(r.records, 40);
        // The anchor log chains: entry 1 names entry 0's hash.
        let entry: attest::msg::AnchorEntry =
            Envelope::decode(&e1.anchor_entry).unwrap().open().unwrap();
        assert_eq!(entry.prev, attest::Hash32::digest(&e0.anchor_entry));
        // A narrower period verifies too; a tampered one does not.
        let part = device_period(
            ing.store(),
            key.public(),
            id,
            SAMPLE_START.0 + 10 * 60_000,
            SAMPLE_START.0 + 30 * 60_000,
            &intensity,
            false,
        )
        .unwrap();
        assert_eq!(verify(&part, &opts).unwrap().records, 21);
        let mut bad = part.clone();
        bad.statement.co2e_mg += 1;
        assert_eq!(verify(&bad, &opts).unwrap_err().check, Check::Carbon);
    }

    #[test]
    fn implausible_records_are_flagged_in_the_statement_and_lower_its_tier() {
        use attest::msg::{ChannelKind, ChannelReading, MeterRecord, TrustTier};
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let cfg = IngestConfig::auto_approving();
        let mut ing = Ingest::new(SqliteStore::in_memory().unwrap(), key.clone(), cfg);
        let mut dev = SampleDevice::new(7);
        let id = dev.key.device_id();
        let topic = |leaf: &str| format!("{PREFIX}{id}/{leaf}");
        let mut batch = vec![(topic("hello"), dev.hello().into_bytes())];
        // Solar energy at 01:00 UTC in Berlin (the sun is well below the horizon): 100 W.
        for i in 0..3u64 {
            let t = SAMPLE_START.0 + 3_600_000 + i * 10_000;
            let rec = MeterRecord {
                link: dev.next_link(t),
                channels: vec![ChannelReading {
                    channel: attest::ChannelId(0),
                    kind: ChannelKind::Solar,
                    energy: attest::Millijoules(i * 1_000_000),
                    power: attest::Milliwatts(if i == 0 { 0 } else { 100_000 }),
                    voltage_mv: None,
                    soc_permille: None,
                }],
            };
            batch.push((topic("records"), dev.seal_chained(&rec).into_bytes()));
        }
        let now = SAMPLE_START.0 + 86_400_000;
        ing.handle(&batch, now).unwrap();
        close_epoch(ing.store_mut(), &key, now).unwrap();
        let intensity = IntensityResolver::flat(380_000, "test");
        let b = device_period(
            ing.store(),
            key.public(),
            dev.key.device_id(),
            0,
            u64::MAX,
            &intensity,
            false,
        )
        .unwrap();
        let codes: Vec<_> = b.statement.flags.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![attest::msg::FlagCode::SolarAtNight; 2]);
        assert_eq!(
            b.statement.tier,
            TrustTier::SoftwareEstimate,
            "hardware meter lowered by the flags"
        );
        let opts = VerifyOptions {
            controller_key: Some(key.public()),
            now: attest::TimestampMs(now),
        };
        verify(&b, &opts).unwrap();
        // Dropping the flags does not fool the verifier: the stated tier no longer follows.
        let mut hidden = b.clone();
        hidden.statement.flags.clear();
        assert_eq!(verify(&hidden, &opts).unwrap_err().check, Check::Tier);
    }
}
