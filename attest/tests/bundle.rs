//! Proof bundles: a valid one verifies, and tampering with any part is caught by the
//! check that guards it.

use attest::bundle::{AnchorRef, Blob, Check, ProofBundle, VerifyOptions, verify};
use attest::msg::{AnchorEntry, MeterRecord};
use attest::sample::{self, SAMPLE_START};
use attest::{Envelope, Hash32, KeyPair, TimestampMs};

fn controller() -> KeyPair {
    KeyPair::from_seed(&[0xc0; 32])
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        controller_key: None,
        now: TimestampMs(SAMPLE_START.0 + 30 * 86_400_000),
    }
}

/// A day of records every 5 minutes.
fn day_bundle() -> ProofBundle {
    sample::bundle(1, 289, 300_000, &controller())
}

fn failed_check(b: &ProofBundle) -> Check {
    match verify(b, &opts()) {
        Ok(_) => panic!("tampered bundle verified"),
        Err(e) => e.check,
    }
}

#[test]
fn a_valid_bundle_verifies_and_its_numbers_are_recomputed() {
    let b = day_bundle();
    let r = verify(&b, &opts()).unwrap();
    assert_eq!(r.evidence, 289);
    assert_eq!(r.records, 289);
    assert_eq!(r.statement, b.statement);
    let s = &b.statement;
    assert_eq!(s.hours.len(), 24);
    // The sample's load is 45 W all day plus 35 W from 08:00 to 22:00: 1.57 kWh.
    let kwh = s.energy.load.kwh();
    assert!((kwh - 1.57).abs() < 0.01, "load {kwh} kWh");
    // Solar by day, battery by night: most of the load is matched to renewable supply,
    // some comes from the grid in the early morning.
    assert!(
        s.renewable_share_ppm > 500_000 && s.renewable_share_ppm < 1_000_000,
        "{}",
        s.renewable_share_ppm
    );
    assert!(s.co2e_mg > 0);
    // Both encodings round-trip.
    assert_eq!(ProofBundle::decode(b.to_json().as_bytes()).unwrap(), b);
    assert_eq!(ProofBundle::decode(&b.to_postcard()).unwrap(), b);
}

fn resign_record(b: &mut ProofBundle, i: usize, edit: impl FnOnce(&mut MeterRecord)) {
    let dev = attest::sample::SampleDevice::new(1);
    let env = Envelope::decode(&b.evidence[i].envelope.0).unwrap();
    let mut r: MeterRecord = env.open().unwrap();
    edit(&mut r);
    b.evidence[i].envelope = Blob(Envelope::seal(&r, &dev.key).into_bytes());
}

#[test]
fn tampering_with_a_record_fails_the_signature_check() {
    let mut b = day_bundle();
    let env = &mut b.evidence[100].envelope.0;
    // Flip a bit in the payload (inside the first channel's counter area).
    env[40] ^= 0x01;
    let check = failed_check(&b);
    assert!(
        matches!(check, Check::Signature | Check::Decode),
        "{check:?}"
    );
    let mut b = day_bundle();
    let n = b.evidence[100].envelope.0.len();
    b.evidence[100].envelope.0[n - 5] ^= 0x10;
    assert_eq!(failed_check(&b), Check::Signature);
}

#[test]
fn a_counter_changed_by_the_device_itself_breaks_the_chain_or_the_proof() {
    // The device re-signs record 100 with a bigger counter: the signature holds, but the
    // next record's prev-hash no longer matches.
    let mut b = day_bundle();
    resign_record(&mut b, 100, |r| r.channels[0].energy.0 += 1_000_000);
    assert_eq!(failed_check(&b), Check::Chain);
    // Re-signed last record: the chain holds, but it is not the leaf in the anchored tree.
    let mut b = day_bundle();
    resign_record(&mut b, 288, |r| r.channels[0].energy.0 += 1_000_000);
    assert_eq!(failed_check(&b), Check::Inclusion);
}

#[test]
fn a_changed_proof_node_fails_the_inclusion_check() {
    let mut b = day_bundle();
    b.evidence[7].proof.path[2].0[0] ^= 0x80;
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Inclusion);
    assert!(e.to_string().contains("evidence #7"), "{e}");
}

#[test]
fn a_changed_root_fails_inclusion_and_a_changed_anchor_fails_the_anchor_check() {
    let mut b = day_bundle();
    b.epochs[0].head.root = Hash32([1; 32]);
    assert_eq!(failed_check(&b), Check::Inclusion);

    // Recompute a consistent tree head but keep the old anchor entry: the anchor disagrees.
    let mut b = day_bundle();
    let AnchorRef::Local { entry, .. } = &mut b.epochs[0].anchor else {
        unreachable!()
    };
    let env = Envelope::decode(&entry.0).unwrap();
    let mut a: AnchorEntry = env.open().unwrap();
    a.root = Hash32([2; 32]);
    *entry = Blob(Envelope::seal(&a, &controller()).into_bytes());
    assert_eq!(failed_check(&b), Check::Anchor);

    // An anchor entry signed by someone else.
    let mut b = day_bundle();
    let AnchorRef::Local { entry, .. } = &mut b.epochs[0].anchor else {
        unreachable!()
    };
    let a: AnchorEntry = Envelope::decode(&entry.0).unwrap().open().unwrap();
    *entry = Blob(Envelope::seal(&a, &KeyPair::from_seed(&[0xee; 32])).into_bytes());
    assert_eq!(failed_check(&b), Check::Anchor);

    // A pinned controller key that is not the bundle's.
    let b = day_bundle();
    let pinned = VerifyOptions {
        controller_key: Some(KeyPair::from_seed(&[9; 32]).public()),
        ..opts()
    };
    assert_eq!(verify(&b, &pinned).unwrap_err().check, Check::Anchor);
    let right = VerifyOptions {
        controller_key: Some(controller().public()),
        ..opts()
    };
    verify(&b, &right).unwrap();
}

#[test]
fn stated_numbers_that_do_not_follow_from_the_records_are_caught() {
    let mut b = day_bundle();
    b.statement.energy.solar.0 += 1;
    assert_eq!(failed_check(&b), Check::Energy);
    let mut b = day_bundle();
    b.statement.hours[12].energy.load.0 -= 1;
    assert_eq!(failed_check(&b), Check::Energy);
    let mut b = day_bundle();
    b.statement.renewable_share_ppm += 1;
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    b.statement.co2e_mg = b.statement.co2e_mg.saturating_sub(1_000);
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    b.statement.hours[3].co2e_mg += 1;
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    b.statement.tier = attest::msg::TrustTier::AttestedAgent;
    assert_eq!(failed_check(&b), Check::Tier);
    let mut b = day_bundle();
    b.statement.from.0 -= 1;
    assert_eq!(failed_check(&b), Check::Energy);
}

#[test]
fn dropping_a_record_from_the_middle_breaks_the_chain() {
    let mut b = day_bundle();
    b.evidence.remove(50);
    assert_eq!(failed_check(&b), Check::Chain);
}

#[test]
fn a_bundle_without_the_devices_hello_or_with_a_bad_format_is_refused() {
    let mut b = day_bundle();
    b.devices.clear();
    assert_eq!(failed_check(&b), Check::Device);
    let mut b = day_bundle();
    b.format = 9;
    assert_eq!(failed_check(&b), Check::Format);
    assert_eq!(
        ProofBundle::decode(b"{not json").unwrap_err().check,
        Check::Format
    );
    assert_eq!(
        ProofBundle::decode(&[0xff; 10]).unwrap_err().check,
        Check::Format
    );
}

#[test]
fn a_job_statement_takes_its_share_of_the_period_from_the_receipt() {
    use attest::account::{StatementInput, compute_statement};
    use attest::carbon::BatteryState;
    use attest::msg::{
        Backend, ChainMessage, CounterSnapshot, JobId, JobOutcome, JobReceipt, Subject, TrustTier,
    };
    use attest::{ChannelId, Millijoules};

    let mut dev = attest::sample::SampleDevice::new(1);
    let hello = dev.hello();
    let mut chain: Vec<Envelope> = dev.chain(13, 300_000); // one hour
    let first: MeterRecord = chain[2].open().unwrap();
    let last: MeterRecord = chain[12].open().unwrap();
    let snap = |r: &MeterRecord| {
        vec![CounterSnapshot {
            channel: ChannelId(5),
            kind: attest::msg::ChannelKind::Gpu,
            energy: r.channels[5].energy,
        }]
    };
    let receipt = JobReceipt {
        link: dev.next_link(last.link.timestamp.0),
        job: JobId([7; 16]),
        outcome: JobOutcome::Completed,
        output_hash: Hash32::digest(b"output"),
        started: first.link.timestamp,
        ended: last.link.timestamp,
        start_counters: snap(&first),
        end_counters: snap(&last),
        chunks: 40,
        pauses: 0,
        backend: Backend::Cpu,
        tier: TrustTier::HardwareMeter,
    };
    chain.push(dev.seal_chained(&receipt));
    chain.push(dev.record_at(attest::sample::SAMPLE_START.0 + 13 * 300_000));
    let mut b = sample::bundle_from_chain(&hello, &chain, &controller(), attest::EpochId(3));
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg = hello.open().unwrap();
    let intensity = |_| 380_000;
    let input = StatementInput {
        subject: Subject::Job {
            device: dev.key.device_id(),
            job: JobId([7; 16]),
        },
        hello: &hello_msg,
        chain: &messages,
        intensity: &intensity,
        intensity_source: "sample".into(),
        battery_initial: BatteryState::default(),
        flags: vec![],
        embodied_mg: 1_000,
        functional_units: 1,
    };
    b.statement = compute_statement(&input).unwrap();
    let job = b.statement.job.unwrap();
    assert_eq!(
        job.energy,
        Millijoules(last.channels[5].energy.0 - first.channels[5].energy.0)
    );
    let sci = b.statement.sci.clone().unwrap();
    assert_eq!(sci.per_unit_mg, job.co2e_mg + 1_000);
    verify(&b, &opts()).unwrap();
    b.statement.job = Some(attest::msg::JobAccount {
        co2e_mg: job.co2e_mg + 1,
        ..job
    });
    assert_eq!(failed_check(&b), Check::Job);
}
