//! Proof bundles: a valid one verifies, and tampering with any part is caught by the
//! check that guards it. The consistent rewrites (a controller that restates an input and
//! recomputes everything after it, then signs) are refused too: every input of a statement
//! is signed, named or derived.

use attest::bundle::{
    Address, AnchorRef, Blob, Check, EvmPin, ProofBundle, Trust, VerifyOptions, verify,
};
use attest::carbon::{BatteryState, HourInput, match_hours, share_ppm, totals};
use attest::intensity::{Dataset, bundled_digest};
use attest::msg::{AnchorEntry, ChainMessage, MeterRecord, Statement, Subject, TrustTier};
use attest::sample::{self, SAMPLE_START, SampleDevice};
use attest::{Envelope, EpochId, Hash32, KeyPair, Millijoules, TimestampMs};

fn controller() -> KeyPair {
    KeyPair::from_seed(&[0xc0; 32])
}

fn now() -> TimestampMs {
    TimestampMs(SAMPLE_START.0 + 30 * 86_400_000)
}

fn opts() -> VerifyOptions {
    VerifyOptions::pinned(controller().public(), now())
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

/// The controller restates its own statement and signs it again, as a lying controller
/// with its key could.
fn restate(b: &mut ProofBundle, edit: impl FnOnce(&mut Statement)) {
    let mut s = b.statement().unwrap();
    edit(&mut s);
    b.statement = ProofBundle::sign_statement(&s, &controller());
}

/// Recomputes every figure after the hour lines' inputs (matching, totals) from `initial`,
/// as a controller restating one input consistently would.
fn rematch(s: &mut Statement, initial: BatteryState) {
    let inputs: Vec<HourInput> = s
        .hours
        .iter()
        .map(|h| HourInput {
            hour: h.hour,
            energy: h.energy,
            intensity_mg_per_kwh: h.intensity_mg_per_kwh,
            dataset: h.dataset,
        })
        .collect();
    let (hours, fin) = match_hours(&inputs, initial);
    let (energy, renewable, co2e) = totals(&hours);
    s.hours = hours;
    s.battery_initial = initial;
    s.battery_final = fin;
    s.energy = energy;
    s.renewable = renewable;
    s.renewable_share_ppm = share_ppm(renewable, energy.load);
    s.co2e_mg = co2e;
}

#[test]
fn a_valid_bundle_verifies_and_its_numbers_are_recomputed() {
    let b = day_bundle();
    let r = verify(&b, &opts()).unwrap();
    assert_eq!(r.evidence, 289);
    assert_eq!(r.records, 289);
    let s = b.statement().unwrap();
    assert_eq!(r.statement, s);
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
    // Every hour charged at the bundled table's German figure, named by its digest.
    assert!(
        s.hours
            .iter()
            .all(|h| h.dataset == bundled_digest() && h.intensity_mg_per_kwh == 342_060)
    );
    assert_eq!(r.datasets.len(), 1);
    assert!(r.datasets[0].bundled);
    assert_eq!(r.datasets[0].hours, 24);
    // The chain starts at genesis, where the battery's content is unknown: taken as full
    // (the hello's 1 kWh) and none of it renewable, the worst case for the claim.
    assert_eq!(
        s.battery_initial,
        BatteryState {
            stored: Millijoules(3_600_000_000),
            renewable: Millijoules(0)
        }
    );
    // Both encodings round-trip.
    assert_eq!(ProofBundle::decode(b.to_json().as_bytes()).unwrap(), b);
    assert_eq!(ProofBundle::decode(&b.to_postcard()).unwrap(), b);
}

fn resign_record(b: &mut ProofBundle, i: usize, edit: impl FnOnce(&mut MeterRecord)) {
    let dev = SampleDevice::new(1);
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
fn a_record_signed_with_a_torsioned_r_gets_one_answer_whatever_the_path() {
    // The last record signed by the device's own key with an order-8 component in R: the
    // batch path (all signatures at once) and the single path (one by one, which the
    // verifier falls back to) must agree on it every time; before, the batch accepted it
    // for one draw in eight and the single check refused it.
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let mut chain = dev.chain(288, 300_000);
    let last: MeterRecord = dev
        .record_at(SAMPLE_START.0 + 288 * 300_000)
        .open()
        .unwrap();
    let unsigned = Envelope::seal_with(&last, |_| [0; 64]);
    let torsioned = Envelope::seal_with(&last, |bytes| {
        assert_eq!(bytes, unsigned.signed_bytes());
        dev.key.sign_with_torsioned_r(bytes)
    });
    chain.push(torsioned.clone());
    let b = sample::bundle_from_chain(&hello, &chain, &controller(), EpochId(0));
    for run in 0..32 {
        let r = verify(&b, &opts()).unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(r.records, 289);
    }
    assert!(
        torsioned.verify(&dev.key.public()).is_ok(),
        "the single path"
    );
    // The same R with another message is refused, on every path.
    let mut bad = b.clone();
    let n = bad.evidence[288].envelope.0.len();
    bad.evidence[288].envelope.0[n - 70] ^= 1;
    for _ in 0..8 {
        let check = failed_check(&bad);
        assert!(
            matches!(check, Check::Signature | Check::Decode),
            "{check:?}"
        );
    }
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
}

#[test]
fn a_bundle_is_checked_against_the_pinned_controller_key_never_its_own() {
    // Pinned to another controller: the statement's signature is the first thing to fail.
    let b = day_bundle();
    let other = VerifyOptions::pinned(KeyPair::from_seed(&[9; 32]).public(), now());
    assert_eq!(verify(&b, &other).unwrap_err().check, Check::Statement);
    // A whole bundle made by an impostor controller (statement and anchors its own).
    let impostor = KeyPair::from_seed(&[0xee; 32]);
    let forged = sample::bundle(1, 289, 300_000, &impostor);
    let e = verify(&forged, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Statement, "{e}");
    // A statement edited without the controller's signature.
    let mut b = day_bundle();
    let n = b.statement.0.len();
    b.statement.0[n - 70] ^= 1;
    assert_eq!(failed_check(&b), Check::Statement);
}

#[test]
fn an_evm_anchor_verifies_only_against_a_pinned_chain_and_contract() {
    let mut b = day_bundle();
    let contract = Address([0xab; 20]);
    b.epochs[0].anchor = AnchorRef::Evm {
        chain_id: 31337,
        contract,
        tx_hash: Hash32([5; 32]),
        block_number: 9,
    };
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Anchor);
    assert!(e.to_string().contains("UNPINNED"), "{e}");
    let mut pinned = opts();
    pinned.trust = Trust {
        controller_key: controller().public(),
        evm: Some(EvmPin {
            chain_id: 31337,
            contract: Address([0xcd; 20]),
        }),
    };
    assert_eq!(verify(&b, &pinned).unwrap_err().check, Check::Anchor);
    pinned.trust.evm = Some(EvmPin {
        chain_id: 31337,
        contract,
    });
    let r = verify(&b, &pinned).unwrap();
    assert!(
        r.onchain_unchecked,
        "the root on chain is for --rpc to check"
    );
}

#[test]
fn stated_numbers_that_do_not_follow_from_the_records_are_caught() {
    let mut b = day_bundle();
    restate(&mut b, |s| s.energy.solar.0 += 1);
    assert_eq!(failed_check(&b), Check::Energy);
    let mut b = day_bundle();
    restate(&mut b, |s| s.hours[12].energy.load.0 -= 1);
    assert_eq!(failed_check(&b), Check::Energy);
    let mut b = day_bundle();
    restate(&mut b, |s| s.renewable_share_ppm += 1);
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    restate(&mut b, |s| s.co2e_mg = s.co2e_mg.saturating_sub(1_000));
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    restate(&mut b, |s| s.hours[3].co2e_mg += 1);
    assert_eq!(failed_check(&b), Check::Carbon);
    let mut b = day_bundle();
    restate(&mut b, |s| s.tier = TrustTier::AttestedAgent);
    assert_eq!(failed_check(&b), Check::Tier);
    let mut b = day_bundle();
    restate(&mut b, |s| s.from.0 -= 1);
    assert_eq!(failed_check(&b), Check::Energy);
}

#[test]
fn a_battery_declared_full_of_solar_at_the_start_is_refused() {
    let mut b = day_bundle();
    let honest = b.statement().unwrap();
    // 1 kWh of sunshine said to be in the battery at midnight, everything recomputed.
    let full = BatteryState {
        stored: Millijoules(3_600_000_000),
        renewable: Millijoules(3_600_000_000),
    };
    restate(&mut b, |s| rematch(s, full));
    let forged = b.statement().unwrap();
    assert!(
        forged.renewable_share_ppm > honest.renewable_share_ppm,
        "the forgery claims more: {} > {}",
        forged.renewable_share_ppm,
        honest.renewable_share_ppm
    );
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Carbon, "{e}");
    assert!(e.to_string().contains("battery"), "{e}");
}

#[test]
fn the_battery_at_a_later_start_is_derived_from_the_records_before_it() {
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let chain = dev.chain(289, 300_000);
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg: attest::msg::Hello = hello.open().unwrap();
    // The afternoon: the morning's sunshine is in the battery at 14:00.
    let from = TimestampMs(SAMPLE_START.0 + 14 * 3_600_000);
    let subject = Subject::DevicePeriod {
        device: hello_msg.device,
    };
    let s = sample::statement(&hello_msg, &messages, subject, from);
    assert_eq!(s.from, from);
    assert!(s.battery_initial.renewable.0 > 0, "{:?}", s.battery_initial);
    assert_eq!(s.hours.len(), 10);
    let b = sample::bundle_with_statement(&hello, &chain, &controller(), EpochId(0), &s);
    let r = verify(&b, &opts()).unwrap();
    assert_eq!(r.statement, s);
    // Declaring it empty instead (a lower claim, but a restated input all the same).
    let mut lower = b.clone();
    restate(&mut lower, |s| rematch(s, BatteryState::default()));
    assert_eq!(failed_check(&lower), Check::Carbon);
    // Without the morning's records the content cannot be derived: the chain must start
    // at its genesis (or a restart).
    let mut cut = b.clone();
    cut.evidence.drain(..10);
    let e = verify(&cut, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Chain, "{e}");
    assert!(e.to_string().contains("chain's start"), "{e}");
}

#[test]
fn a_chain_restart_resets_the_battery_to_its_worst_case() {
    // Records to 14:00, a restart without state, records to midnight: the sunshine stored
    // before the restart is not carried over it (what happened to the battery while nothing
    // was metered is unknown).
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let mut chain: Vec<Envelope> = (0..=56u64)
        .map(|i| dev.record_at(SAMPLE_START.0 + i * 900_000))
        .collect();
    chain.push(dev.restart(SAMPLE_START.0 + 56 * 900_000 + 60_000));
    chain.extend((57..=96u64).map(|i| dev.record_at(SAMPLE_START.0 + i * 900_000)));
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg: attest::msg::Hello = hello.open().unwrap();
    let from = TimestampMs(SAMPLE_START.0 + 15 * 3_600_000);
    let subject = Subject::DevicePeriod {
        device: hello_msg.device,
    };
    let after = sample::statement(&hello_msg, &messages, subject, from);
    assert_eq!(
        after.battery_initial,
        BatteryState {
            stored: Millijoules(3_600_000_000),
            renewable: Millijoules(0)
        },
        "reset at the restart's hour (14:00); 14:15 to 15:00 sees no solar surplus to store"
    );
    // The same chain without the restart carries the morning's sunshine into 15:00.
    let mut dev = SampleDevice::new(1);
    let plain: Vec<ChainMessage> = (0..=96u64)
        .map(|i| ChainMessage::open(&dev.record_at(SAMPLE_START.0 + i * 900_000)).unwrap())
        .collect();
    let without = sample::statement(&hello_msg, &plain, subject, from);
    assert!(without.battery_initial.renewable.0 > 0);
    let b = sample::bundle_with_statement(&hello, &chain, &controller(), EpochId(0), &after);
    verify(&b, &opts()).unwrap();
}

#[test]
fn each_hour_is_judged_by_the_hello_valid_at_that_hour() {
    // The device moves from DE to FR at 12:00 (a new hello, a later timestamp): the morning
    // is charged at the German figure, the afternoon at the French one.
    let mut dev = SampleDevice::new(1);
    let hello_de = dev.hello();
    let mut moved: attest::msg::Hello = hello_de.open().unwrap();
    moved.timestamp = TimestampMs(SAMPLE_START.0 + 12 * 3_600_000);
    moved.site.grid_region = "FR".into();
    let hello_fr = Envelope::seal(&moved, &dev.key);
    let chain = dev.chain(289, 300_000);
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let versions: Vec<attest::msg::Hello> = vec![hello_de.open().unwrap(), moved.clone()];
    let statement = attest::account::compute_statement(&attest::account::StatementInput {
        subject: Subject::DevicePeriod {
            device: moved.device,
        },
        hellos: &versions,
        chain: &messages,
        from: TimestampMs(0),
        intensity: &|h| {
            let t = TimestampMs(h * 3_600_000);
            let region = &attest::msg::hello_at(&versions, t)
                .unwrap()
                .site
                .grid_region;
            sample::bundled_figure(region, h)
        },
    })
    .unwrap();
    let figures: Vec<u32> = statement
        .hours
        .iter()
        .map(|h| h.intensity_mg_per_kwh)
        .collect();
    assert_eq!(&figures[..12], &[342_060; 12]);
    assert_eq!(&figures[12..], &[44_180; 12]);
    let mut b =
        sample::bundle_with_statement(&hello_de, &chain, &controller(), EpochId(0), &statement);
    b.devices.push(Blob(hello_fr.as_bytes().to_vec()));
    verify(&b, &opts()).unwrap();
    // Judged by today's hello alone (the older version left out), the morning's figures
    // no longer follow.
    let mut today_only = b.clone();
    today_only.devices.remove(0);
    assert_eq!(failed_check(&today_only), Check::Intensity);
    // Two versions with one timestamp are refused.
    let mut twice = b.clone();
    let mut same = moved.clone();
    same.site.grid_region = "PL".into();
    twice
        .devices
        .push(Blob(Envelope::seal(&same, &dev.key).as_bytes().to_vec()));
    assert_eq!(failed_check(&twice), Check::Device);
}

#[test]
fn intensities_replaced_with_the_source_renamed_are_refused_unless_accepted() {
    // Every hour charged at 1 mg/kWh from a dataset the controller made up, carried in the
    // bundle under a reassuring name, emissions recomputed.
    let fake = Dataset::Flat {
        name: "anything at all".into(),
        mg_per_kwh: 1,
    };
    let mut b = day_bundle();
    b.datasets.push(fake.clone());
    restate(&mut b, |s| {
        for h in &mut s.hours {
            h.intensity_mg_per_kwh = 1;
            h.dataset = fake.digest();
        }
        let initial = s.battery_initial;
        rematch(s, initial);
    });
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Intensity, "{e}");
    assert!(e.to_string().contains("anything at all"), "{e}");
    assert!(e.to_string().contains("--accept-dataset"), "{e}");
    // A user who checked that dataset and accepts it gets it, named as not bundled.
    let mut accepting = opts();
    accepting.accepted_datasets.push(fake.digest());
    let r = verify(&b, &accepting).unwrap();
    assert_eq!(r.datasets.len(), 1);
    assert!(!r.datasets[0].bundled);
    assert_eq!(r.datasets[0].name, "anything at all");

    // The same figures under the bundled table's name: the table says otherwise.
    let mut b = day_bundle();
    restate(&mut b, |s| {
        for h in &mut s.hours {
            h.intensity_mg_per_kwh = 1;
        }
        let initial = s.battery_initial;
        rematch(s, initial);
    });
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Intensity, "{e}");
    assert!(e.to_string().contains("342060"), "{e}");

    // A dataset named but not carried.
    let mut b = day_bundle();
    restate(&mut b, |s| s.hours[0].dataset = Hash32([7; 32]));
    assert_eq!(failed_check(&b), Check::Intensity);
}

/// A day of sample records with, at 12:00, a solar counter that jumps by 10 kWh in five
/// minutes (120 kW from a 400 W array): implausible, so flagged.
fn flagged_bundle() -> ProofBundle {
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let mut chain: Vec<Envelope> = Vec::new();
    let mut jump = 0;
    for i in 0..289u64 {
        let env = dev.record_at(SAMPLE_START.0 + i * 300_000);
        let mut r: MeterRecord = env.open().unwrap();
        if i == 144 {
            jump = 36_000_000_000;
        }
        if jump > 0 {
            // Re-seal with the solar counter raised from here on (the chain stays intact).
            r.channels[0].energy.0 += jump;
            r.link.prev = chain.last().map_or(Hash32::ZERO, |e| e.hash());
            chain.push(Envelope::seal(&r, &dev.key));
        } else {
            chain.push(env);
        }
    }
    sample::bundle_from_chain(&hello, &chain, &controller(), EpochId(0))
}

#[test]
fn a_flag_removed_with_the_tier_raised_is_refused() {
    let b = flagged_bundle();
    let s = b.statement().unwrap();
    assert!(
        s.flags
            .iter()
            .any(|f| f.code == attest::msg::FlagCode::CounterJump && f.seq.0 == 144),
        "{:?}",
        s.flags
    );
    assert_eq!(
        s.tier,
        TrustTier::SoftwareEstimate,
        "hardware meter lowered"
    );
    verify(&b, &opts()).unwrap();
    let mut hidden = b.clone();
    restate(&mut hidden, |s| {
        s.flags.clear();
        s.tier = TrustTier::HardwareMeter;
    });
    let e = verify(&hidden, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Tier, "{e}");
    assert!(e.to_string().contains("flags"), "{e}");
    // Nor can a flag be invented to discredit a device.
    let mut extra = day_bundle();
    restate(&mut extra, |s| {
        s.flags.push(attest::msg::Flag {
            code: attest::msg::FlagCode::SolarAtNight,
            seq: attest::SeqNo(3),
            detail: "made up".into(),
        });
        s.tier = s.tier.lowered();
    });
    assert_eq!(failed_check(&extra), Check::Tier);
}

#[test]
fn time_nobody_metered_is_charged_at_its_worst_and_flagged_never_dropped() {
    // At 02:00 the agent comes back after 10 minutes down; no source counter covered the
    // grid channel, so the record says so. The rig draws at most 400 W (its hello).
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let mut chain = Vec::new();
    for i in 0..=48u64 {
        if i == 8 {
            dev.unmetered_grid(600_000);
        }
        chain.push(dev.record_at(SAMPLE_START.0 + i * 900_000));
    }
    let b = sample::bundle_from_chain(&hello, &chain, &controller(), EpochId(0));
    let s = verify(&b, &opts()).unwrap().statement;
    // 400 W x 600 s = 240 kJ from the grid, at the hour's intensity.
    assert_eq!(s.energy.unmetered, Millijoules(240_000_000));
    let h = s.hours.iter().find(|h| h.energy.unmetered.0 > 0).unwrap();
    assert_eq!(
        h.co2e_mg,
        attest::carbon::emissions_mg(
            Millijoules(h.energy.grid_import.0 + h.energy.unmetered.0),
            h.intensity_mg_per_kwh
        )
    );
    assert!(
        s.flags
            .iter()
            .any(|f| f.code == attest::msg::FlagCode::Unmetered && f.seq.0 == 8),
        "{:?}",
        s.flags
    );
    // A controller that drops the worst case (and its flag) to look cleaner is caught.
    let mut b2 = b.clone();
    restate(&mut b2, |s| {
        for h in &mut s.hours {
            h.energy.unmetered = Millijoules(0);
            h.co2e_mg = attest::carbon::emissions_mg(h.energy.grid_import, h.intensity_mg_per_kwh);
        }
        s.energy.unmetered = Millijoules(0);
        s.co2e_mg = s.hours.iter().map(|h| h.co2e_mg).sum();
        s.flags
            .retain(|f| f.code != attest::msg::FlagCode::Unmetered);
    });
    assert_eq!(failed_check(&b2), Check::Energy);
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

fn job_chain(inflate: u64) -> (Envelope, Vec<Envelope>, MeterRecord, MeterRecord) {
    sample::job_chain(inflate)
}

fn job_subject() -> Subject {
    sample::job_subject()
}

#[test]
fn a_job_statement_takes_its_share_from_the_receipt_and_its_embodied_part_from_the_hello() {
    let (hello, chain, first, last) = job_chain(0);
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg: attest::msg::Hello = hello.open().unwrap();
    let s = sample::statement(&hello_msg, &messages, job_subject(), TimestampMs(0));
    let job = s.job.unwrap();
    assert_eq!(
        job.energy,
        Millijoules(last.channels[5].energy.0 - first.channels[5].energy.0)
    );
    let sci = s.sci.clone().unwrap();
    // M = TE x TiR / EL: 150 kg over five years, for 50 minutes.
    let run_ms = last.link.timestamp.0 - first.link.timestamp.0;
    let expected_m = 150_000_000u128 * run_ms as u128 / (5u128 * 8_766 * 3_600_000);
    assert_eq!(sci.embodied_mg, expected_m as u64);
    assert!(sci.embodied_mg > 0);
    assert_eq!(sci.per_unit_mg, job.co2e_mg + sci.embodied_mg);
    let b = sample::bundle_with_statement(&hello, &chain, &controller(), EpochId(3), &s);
    verify(&b, &opts()).unwrap();
    let mut bad = b.clone();
    restate(&mut bad, |s| {
        s.job = Some(attest::msg::JobAccount {
            co2e_mg: job.co2e_mg + 1,
            ..job
        })
    });
    assert_eq!(failed_check(&bad), Check::Job);
    let mut bad = b.clone();
    restate(&mut bad, |s| {
        let sci = s.sci.as_mut().unwrap();
        sci.embodied_mg = 0;
        sci.per_unit_mg = sci.operational_mg;
    });
    assert_eq!(failed_check(&bad), Check::Job);
}

#[test]
fn a_receipt_whose_energy_is_inflated_beyond_its_records_is_refused() {
    // The device signs a receipt claiming 555 Wh more than its GPU counter shows.
    let (hello, chain, _, _) = job_chain(555 * 3_600_000);
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg: attest::msg::Hello = hello.open().unwrap();
    let err = attest::account::compute_statement(&attest::account::StatementInput {
        subject: job_subject(),
        hellos: std::slice::from_ref(&hello_msg),
        chain: &messages,
        from: TimestampMs(0),
        intensity: &|h| sample::bundled_figure("DE", h),
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            attest::account::AccountError::ReceiptCounterMismatch { end: "end", .. }
        ),
        "{err}"
    );
    // A controller that states the inflated job anyway: the verifier recomputes and refuses.
    let (_, honest_chain, _, _) = job_chain(0);
    let honest: Vec<ChainMessage> = honest_chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let mut s = sample::statement(&hello_msg, &honest, job_subject(), TimestampMs(0));
    let job = s.job.as_mut().unwrap();
    job.energy.0 += 555 * 3_600_000;
    let b = sample::bundle_with_statement(&hello, &chain, &controller(), EpochId(3), &s);
    let e = verify(&b, &opts()).unwrap_err();
    assert_eq!(e.check, Check::Job, "{e}");
    assert!(e.to_string().contains("counter"), "{e}");
}
