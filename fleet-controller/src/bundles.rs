//! Proof bundles for a device-period or for one job on a device: the device's signed
//! messages from the start of its chain to the period's end (the ones before the period give the battery's content at its
//! start), their inclusion proofs in their epochs' trees, the epochs' anchors, the device's
//! hello, the intensity datasets the statement names, and the statement computed with
//! `attest`'s own arithmetic and signed with the controller key, so `attest verify`
//! accepts it (with that key pinned).

use std::collections::BTreeMap;

use attest::account::AccountError;
use attest::bundle::{BUNDLE_FORMAT, Blob, EpochProof, Evidence, ProofBundle};
use attest::merkle::{MerkleTree, TreeHead};
use attest::msg::{ChainMessage, JobId, JobReceipt, Subject};
use attest::{DeviceId, Envelope, EpochId, KeyPair, SeqNo};

use crate::accounting::{counted_period, statement_for, stored_hellos};
use crate::anchor::{Anchor, EvmContract, LocalLog};
use crate::intensity::IntensityResolver;
use crate::store::certificates::CertificateStore;
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
    NotAnchored { seq: SeqNo },
    /// The statement could not be computed.
    #[error("statement: {0}")]
    Statement(String),
    /// No receipt of that job from that device (yet).
    #[error("no receipt of job {job} from {device}")]
    NoReceipt { device: DeviceId, job: JobId },
    /// Nothing in the period counts: the device was pending or revoked throughout.
    #[error("no message of {0} in that period counts (the device was not approved then)")]
    NotCounted(DeviceId),
}

/// Builds the bundle for `device` over the period of messages with timestamps in
/// `from_ms..=to_ms`, signed with the controller key. With `trim_unanchored`, the period
/// ends before the first message whose epoch is still open; without it, such a message is
/// an error.
pub fn device_period<S: Store>(
    store: &S,
    controller: &KeyPair,
    device: DeviceId,
    from_ms: u64,
    to_ms: u64,
    intensity: &IntensityResolver,
    trim_unanchored: bool,
) -> Result<ProofBundle, BundleError> {
    let subject = Subject::DevicePeriod { device };
    period(
        store,
        controller,
        subject,
        from_ms,
        to_ms,
        intensity,
        trim_unanchored,
    )
}

/// The bundle for one job on `device`: its receipt, the records from the one sealed when
/// the job started to the receipt (so the job's share of the sun, the battery and the grid
/// is taken over the job's own hours), everything a device-period bundle carries, and the
/// certificates retired for the job there whose epochs have closed. Every message up to
/// the receipt must be anchored.
pub fn job<S: Store + CertificateStore>(
    store: &S,
    controller: &KeyPair,
    device: DeviceId,
    job: JobId,
    intensity: &IntensityResolver,
) -> Result<ProofBundle, BundleError> {
    let receipt = job_receipt(store, device, job)?;
    let subject = Subject::Job { device, job };
    let mut bundle = period(
        store,
        controller,
        subject,
        receipt.started.0,
        receipt.link.timestamp.0,
        intensity,
        false,
    )?;
    let mut trees: BTreeMap<EpochId, MerkleTree> = BTreeMap::new();
    for (envelope, epoch, leaf) in store.sealed_retirements(job, device)?.sealed {
        if let std::collections::btree_map::Entry::Vacant(slot) = trees.entry(epoch) {
            let (tree, proof) = epoch_tree(store, controller, epoch)?;
            if !bundle.epochs.iter().any(|e| e.epoch == epoch) {
                bundle.epochs.push(proof);
            }
            slot.insert(tree);
        }
        let proof = trees[&epoch].inclusion_proof(leaf).map_err(|e| {
            StoreError::Corrupt(format!("retirement leaf {leaf} of epoch {epoch}: {e}"))
        })?;
        bundle.retirements.push(Evidence {
            envelope: Blob(envelope),
            epoch,
            proof,
        });
    }
    Ok(bundle)
}

/// A job's statement on `device` from its stored messages, anchored or not (what a
/// retirement is checked against), with the device's hellos.
pub fn job_statement<S: Store>(
    store: &S,
    device: DeviceId,
    job: JobId,
    intensity: &IntensityResolver,
) -> Result<(attest::msg::Statement, Vec<attest::msg::Hello>), BundleError> {
    let receipt = job_receipt(store, device, job)?;
    let mut items = store.items_between(device, 0, receipt.link.timestamp.0)?;
    let (from, end) =
        counted_period(&items, receipt.started.0).ok_or(BundleError::NotCounted(device))?;
    items.truncate(end);
    let chain = items
        .iter()
        .map(|it| {
            let env =
                Envelope::decode(&it.envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            ChainMessage::open(&env).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let hellos = stored_hellos(store, device)?;
    let made = statement_for(
        Subject::Job { device, job },
        &hellos,
        &chain,
        from,
        intensity,
    )
    .map_err(|e| BundleError::Statement(e.to_string()))?;
    Ok((made.statement, hellos))
}

/// The receipt of `job` from `device` (its last, should there be more).
fn job_receipt<S: Store>(
    store: &S,
    device: DeviceId,
    job: JobId,
) -> Result<JobReceipt, BundleError> {
    store
        .device(device)?
        .ok_or(BundleError::UnknownDevice(device))?;
    store
        .items_between(device, 0, u64::MAX / 2)?
        .into_iter()
        .rev()
        .filter(|it| it.envelope.get(1) == Some(&(attest::Kind::JobReceipt as u8)))
        .find_map(|it| {
            let r: JobReceipt = Envelope::decode(&it.envelope).ok()?.open().ok()?;
            (r.job == job).then_some(r)
        })
        .ok_or(BundleError::NoReceipt { device, job })
}

fn period<S: Store>(
    store: &S,
    controller: &KeyPair,
    subject: Subject,
    from_ms: u64,
    to_ms: u64,
    intensity: &IntensityResolver,
    trim_unanchored: bool,
) -> Result<ProofBundle, BundleError> {
    let device = subject.device();
    store
        .device(device)?
        .ok_or(BundleError::UnknownDevice(device))?;
    // From the chain's start: the battery's content at `from_ms` is derived from there.
    let mut items = store.items_between(device, 0, to_ms)?;
    if trim_unanchored {
        let anchored = items.iter().take_while(|i| i.placed.is_some()).count();
        items.truncate(anchored);
    }
    if !items.iter().any(|i| i.timestamp_ms >= from_ms) {
        return Err(BundleError::Empty(device));
    }
    let (from, end) = counted_period(&items, from_ms).ok_or(BundleError::NotCounted(device))?;
    items.truncate(end);
    let mut trees: BTreeMap<EpochId, MerkleTree> = BTreeMap::new();
    let mut epochs = Vec::new();
    let mut evidence = Vec::with_capacity(items.len());
    let mut chain = Vec::with_capacity(items.len());
    for it in &items {
        let (epoch, leaf) = it.placed.ok_or(BundleError::NotAnchored { seq: it.seq })?;
        if let std::collections::btree_map::Entry::Vacant(slot) = trees.entry(epoch) {
            let (tree, proof) = epoch_tree(store, controller, epoch)?;
            epochs.push(proof);
            slot.insert(tree);
        }
        let proof = trees[&epoch]
            .inclusion_proof(leaf)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        evidence.push(Evidence {
            envelope: Blob(it.envelope.clone()),
            epoch,
            proof,
        });
        let env = Envelope::decode(&it.envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        chain.push(ChainMessage::open(&env).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    let hellos = stored_hellos(store, device)?;
    let made = match statement_for(subject, &hellos, &chain, from, intensity) {
        Ok(s) => s,
        Err(AccountError::NoRecords) => return Err(BundleError::Empty(device)),
        Err(e) => return Err(BundleError::Statement(e.to_string())),
    };
    Ok(ProofBundle {
        format: BUNDLE_FORMAT,
        statement: ProofBundle::sign_statement(&made.statement, controller),
        devices: store.hellos(device)?.into_iter().map(Blob).collect(),
        datasets: made.datasets,
        evidence,
        epochs,
        retirements: Vec::new(),
        key_rotations: store.key_rotations()?,
    })
}

/// An epoch's tree rebuilt from its stored leaves (checked against its stored root) and
/// its proof for a bundle: anchored on chain when confirmed there, else in the
/// controller-signed local log.
pub(crate) fn epoch_tree<S: Store>(
    store: &S,
    controller: &KeyPair,
    epoch: EpochId,
) -> Result<(MerkleTree, EpochProof), BundleError> {
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
    let mut keys = vec![controller.public()];
    for link in store.key_rotations()?.iter().rev() {
        if let Ok(r) = link.rotation() {
            keys.push(r.from);
        }
    }
    let local = LocalLog { keys };
    let anchor = match EvmContract.cite(store, &row)? {
        Some(a) => a,
        None => local
            .cite(store, &row)?
            .ok_or_else(|| StoreError::Corrupt(format!("epoch {epoch} unanchored")))?,
    };
    let proof = EpochProof {
        epoch,
        head: tree.head(),
        anchor,
    };
    Ok((tree, proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::local::close_epoch;
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use crate::store::sqlite::SqliteStore;
    use attest::KeyPair;
    use attest::bundle::{Check, VerifyOptions, verify};
    use attest::sample::{SAMPLE_START, SampleDevice};

    #[test]
    fn a_jobs_bundle_covers_the_jobs_own_hours_and_verifies() {
        use attest::msg::{
            Backend, ChannelKind, CounterSnapshot, JobOutcome, MeterRecord, TrustTier,
        };
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let mut ing = Ingest::new(
            SqliteStore::in_memory().unwrap(),
            key.clone(),
            IngestConfig::auto_approving(),
        );
        let mut dev = SampleDevice::new(6);
        let dev_id = dev.key.device_id();
        let topic = |leaf: &str| format!("{PREFIX}{dev_id}/{leaf}");
        let mut msgs = vec![(topic("hello"), dev.hello().into_bytes())];
        // Records every 30 minutes over a day; a job from 10:00 to 13:00 with its receipt.
        let half_hour = 1_800_000;
        let mut at_start: Option<MeterRecord> = None;
        let mut job_id = None;
        for i in 0..48u64 {
            let t = SAMPLE_START.0 + i * half_hour;
            let env = dev.record_at(t);
            let rec: MeterRecord = env.open().unwrap();
            msgs.push((topic("records"), env.into_bytes()));
            if i == 20 {
                at_start = Some(rec.clone());
            }
            if i == 26 {
                let first = at_start.clone().unwrap();
                let snap = |r: &MeterRecord| {
                    vec![CounterSnapshot {
                        channel: attest::ChannelId(5),
                        kind: ChannelKind::Gpu,
                        energy: r.channels[5].energy,
                    }]
                };
                let receipt = JobReceipt {
                    link: dev.next_link(t),
                    job: JobId([0x33; 16]),
                    outcome: JobOutcome::Completed,
                    output_hash: attest::Hash32::digest(b"out"),
                    started: first.link.timestamp,
                    ended: rec.link.timestamp,
                    start_counters: snap(&first),
                    end_counters: snap(&rec),
                    chunks: 6,
                    pauses: 0,
                    backend: Backend::Cpu,
                    tier: TrustTier::HardwareMeter,
                };
                job_id = Some(receipt.job);
                msgs.push((topic("records"), dev.seal_chained(&receipt).into_bytes()));
            }
        }
        let now = SAMPLE_START.0 + 2 * 86_400_000;
        ing.handle(&msgs, now).unwrap();
        let id = dev.key.device_id();
        let intensity = IntensityResolver::bundled(None).unwrap();
        let job_id = job_id.unwrap();
        assert!(matches!(
            job(ing.store(), &key, id, job_id, &intensity),
            Err(BundleError::NotAnchored { .. })
        ));
        close_epoch(ing.store_mut(), &key, now).unwrap().unwrap();
        assert!(matches!(
            job(ing.store(), &key, id, JobId([9; 16]), &intensity),
            Err(BundleError::NoReceipt { .. })
        ));
        let b = job(ing.store(), &key, id, job_id, &intensity).unwrap();
        let opts = VerifyOptions::pinned(key.public(), attest::TimestampMs(now));
        let r = verify(&b, &opts).unwrap();
        assert_eq!(
            r.statement.subject,
            Subject::Job {
                device: id,
                job: job_id
            }
        );
        let account = r.statement.job.expect("a job account");
        assert!(account.energy.0 > 0, "{account:?}");
        assert!(
            account.renewable <= account.energy,
            "renewable within the job's energy: {account:?}"
        );
        // Midday in June in Berlin: the job's hours are sunny, most of its energy renewable.
        assert!(account.renewable.0 * 2 > account.energy.0, "{account:?}");
        // The period is the job's: from its start record to its receipt.
        assert_eq!(r.statement.from, at_start.unwrap().link.timestamp);
    }

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
        assert_eq!((e0.epoch, e0.tree_size), (EpochId(0), 25));
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
        let intensity = IntensityResolver::bundled(None).unwrap();
        let not_yet = device_period(ing.store(), &key, id, 0, u64::MAX, &intensity, false);
        assert!(matches!(
            not_yet,
            Err(BundleError::NotAnchored { seq: SeqNo(25) })
        ));
        let e1 = close_epoch(ing.store_mut(), &key, now + 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e1.epoch, e1.tree_size, e1.anchor_index),
            (EpochId(1), 15, 1)
        );
        let b = device_period(ing.store(), &key, id, 0, u64::MAX, &intensity, false).unwrap();
        assert_eq!(b.epochs.len(), 2);
        let opts = VerifyOptions::pinned(key.public(), attest::TimestampMs(now));
        let r = verify(&b, &opts).unwrap();
        assert_eq!(r.records, 40);
        // The anchor log chains: entry 1 names entry 0's hash.
        let entry: attest::msg::AnchorEntry =
            Envelope::decode(&e1.anchor_entry).unwrap().open().unwrap();
        assert_eq!(entry.prev, attest::Hash32::digest(&e0.anchor_entry));
        // A narrower period verifies too; a tampered one does not.
        let part = device_period(
            ing.store(),
            &key,
            id,
            SAMPLE_START.0 + 10 * 60_000,
            SAMPLE_START.0 + 30 * 60_000,
            &intensity,
            false,
        )
        .unwrap();
        // Evidence from the chain's start: the 10 records before the period give the
        // battery's content at its start; the statement covers the 21 of the period.
        let r = verify(&part, &opts).unwrap();
        assert_eq!(r.records, 31);
        let s = part.statement().unwrap();
        assert_eq!(s.from.0, SAMPLE_START.0 + 10 * 60_000);
        assert_eq!(s.to.0, SAMPLE_START.0 + 30 * 60_000);
        // A restated figure is caught even when the controller signs it again.
        let mut bad = part.clone();
        let mut forged = s.clone();
        forged.co2e_mg += 1;
        bad.statement = ProofBundle::sign_statement(&forged, &key);
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
                unmetered: vec![],
            };
            batch.push((topic("records"), dev.seal_chained(&rec).into_bytes()));
        }
        let now = SAMPLE_START.0 + 86_400_000;
        ing.handle(&batch, now).unwrap();
        close_epoch(ing.store_mut(), &key, now).unwrap();
        let intensity = IntensityResolver::bundled(None).unwrap();
        let b = device_period(
            ing.store(),
            &key,
            dev.key.device_id(),
            0,
            u64::MAX,
            &intensity,
            false,
        )
        .unwrap();
        let s = b.statement().unwrap();
        let codes: Vec<_> = s.flags.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![attest::msg::FlagCode::SolarAtNight; 2]);
        assert_eq!(
            s.tier,
            TrustTier::SoftwareEstimate,
            "hardware meter lowered by the flags"
        );
        let opts = VerifyOptions::pinned(key.public(), attest::TimestampMs(now));
        verify(&b, &opts).unwrap();
        // Dropping the flags does not fool the verifier, even with the tier raised to
        // match and the statement signed again: it raises the flags itself.
        let mut hidden = b.clone();
        let mut forged = s.clone();
        forged.flags.clear();
        forged.tier = TrustTier::HardwareMeter;
        hidden.statement = ProofBundle::sign_statement(&forged, &key);
        assert_eq!(verify(&hidden, &opts).unwrap_err().check, Check::Tier);
    }

    #[test]
    fn records_from_before_approval_are_evidence_but_never_counted() {
        use crate::store::DeviceState;
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let mut ing = Ingest::new(
            SqliteStore::in_memory().unwrap(),
            key.clone(),
            IngestConfig::default(),
        );
        let mut dev = SampleDevice::new(9);
        let id = dev.key.device_id();
        let chain = dev.chain(30, 60_000);
        let topic = |leaf: &str| format!("{PREFIX}{id}/{leaf}");
        let now = SAMPLE_START.0 + 86_400_000;
        let mut first = vec![(topic("hello"), dev.hello().into_bytes())];
        first.extend(
            chain[..10]
                .iter()
                .map(|e| (topic("records"), e.as_bytes().to_vec())),
        );
        ing.handle(&first, now).unwrap();
        assert_eq!(
            ing.store().device(id).unwrap().unwrap().state,
            DeviceState::Pending
        );
        ing.store_mut()
            .set_state(id, DeviceState::Approved)
            .unwrap();
        let rest: Vec<_> = chain[10..]
            .iter()
            .map(|e| (topic("records"), e.as_bytes().to_vec()))
            .collect();
        ing.handle(&rest, now).unwrap();
        close_epoch(ing.store_mut(), &key, now).unwrap().unwrap();
        let intensity = IntensityResolver::bundled(None).unwrap();
        // Asked from the start, the statement starts at the first approved record; the
        // pending ones travel (anchored) only as the battery's history.
        let b = device_period(ing.store(), &key, id, 0, u64::MAX / 2, &intensity, false).unwrap();
        let s = b.statement().unwrap();
        assert_eq!(s.from.0, SAMPLE_START.0 + 10 * 60_000);
        assert_eq!(b.evidence.len(), 30);
        let opts = VerifyOptions::pinned(key.public(), attest::TimestampMs(now));
        verify(&b, &opts).unwrap();
        // The hours view counts the same span.
        let row = ing.store().device(id).unwrap().unwrap();
        let hours = crate::accounting::device_hours(ing.store(), &row, &intensity, 0, u64::MAX / 2)
            .unwrap();
        assert_eq!(hours.statement, s);
        // A period wholly before approval has nothing to prove.
        let e = device_period(
            ing.store(),
            &key,
            id,
            0,
            SAMPLE_START.0 + 9 * 60_000,
            &intensity,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::NotCounted(_)), "{e}");
    }

    #[test]
    fn a_device_that_moves_is_charged_by_the_hello_valid_in_each_hour() {
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let cfg = IngestConfig::auto_approving();
        let mut ing = Ingest::new(SqliteStore::in_memory().unwrap(), key.clone(), cfg);
        let mut dev = SampleDevice::new(12);
        let id = dev.key.device_id();
        let topic = |leaf: &str| format!("{PREFIX}{id}/{leaf}");
        let chain = dev.chain(25, 600_000); // 04:00 in ten-minute steps
        let mut moved: attest::msg::Hello = dev.hello().open().unwrap();
        moved.timestamp = attest::TimestampMs(SAMPLE_START.0 + 2 * 3_600_000);
        moved.site.grid_region = "FR".into();
        let now = SAMPLE_START.0 + 86_400_000;
        let mut batch = vec![(topic("hello"), dev.hello().into_bytes())];
        batch.extend(
            chain[..12]
                .iter()
                .map(|e| (topic("records"), e.as_bytes().to_vec())),
        );
        batch.push((
            topic("hello"),
            Envelope::seal(&moved, &dev.key).into_bytes(),
        ));
        batch.extend(
            chain[12..]
                .iter()
                .map(|e| (topic("records"), e.as_bytes().to_vec())),
        );
        ing.handle(&batch, now).unwrap();
        close_epoch(ing.store_mut(), &key, now).unwrap().unwrap();
        let intensity = IntensityResolver::bundled(None).unwrap();
        let b = device_period(ing.store(), &key, id, 0, u64::MAX / 2, &intensity, false).unwrap();
        assert_eq!(b.devices.len(), 2, "both versions travel");
        let figures: Vec<u32> = b
            .statement()
            .unwrap()
            .hours
            .iter()
            .map(|h| h.intensity_mg_per_kwh)
            .collect();
        assert_eq!(figures, vec![342_060, 342_060, 44_180, 44_180]);
        let opts = VerifyOptions::pinned(key.public(), attest::TimestampMs(now));
        verify(&b, &opts).unwrap();
    }
}
