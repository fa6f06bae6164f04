//! The shipped test vectors under `tests/vectors/`: the files are checked on their own
//! terms (a stranger's verifier would do the same), and against what this code produces.
//!
//! Regenerate after an intended wire change with
//! `ATTEST_REGEN_VECTORS=1 cargo test -p attest --test vectors`, and say why in the commit.

use std::path::PathBuf;

use attest::bundle::{ProofBundle, VerifyOptions, verify};
use attest::msg::*;
use attest::sample::{SAMPLE_START, SampleDevice};
use attest::{Envelope, EpochId, Hash32, KeyPair, Millijoules, PublicKey, SeqNo, TimestampMs};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn controller() -> KeyPair {
    KeyPair::from_seed(&[0xc0; 32])
}

fn vector(name: &str, key: &KeyPair, env: &Envelope) -> Value {
    json!({
        "name": name,
        "kind": env.kind().to_string(),
        "signer_seed": attest::hex::encode(&key.seed().unwrap()),
        "signer_public_key": key.public().to_string(),
        "envelope_hex": attest::hex::encode(env.as_bytes()),
        "envelope_sha256": env.hash().to_hex(),
        "message": serde_json::to_value(AnyMessage::open(env).unwrap()).unwrap(),
    })
}

fn make_messages() -> Value {
    let mut dev = SampleDevice::new(1);
    let ctl = controller();
    let hello = dev.hello();
    let r0 = dev.record_at(SAMPLE_START.0);
    let r1 = dev.record_at(SAMPLE_START.0 + 10_000);
    let rec1: MeterRecord = r1.open().unwrap();
    let receipt = JobReceipt {
        link: dev.next_link(SAMPLE_START.0 + 15_000),
        job: JobId([0x11; 16]),
        outcome: JobOutcome::Completed,
        output_hash: Hash32::digest(b"heliostat"),
        started: TimestampMs(SAMPLE_START.0 + 1_000),
        ended: TimestampMs(SAMPLE_START.0 + 14_000),
        start_counters: vec![CounterSnapshot {
            channel: attest::ChannelId(5),
            kind: ChannelKind::Gpu,
            energy: Millijoules(0),
        }],
        end_counters: vec![CounterSnapshot {
            channel: attest::ChannelId(5),
            kind: ChannelKind::Gpu,
            energy: rec1.channels[5].energy,
        }],
        chunks: 3,
        pauses: 0,
        backend: Backend::Cpu,
        tier: TrustTier::HardwareMeter,
    };
    let receipt = dev.seal_chained(&receipt);
    let restart = ChainRestart {
        link: Link {
            seq: SeqNo(1_782_000_020_000),
            ..dev.next_link(SAMPLE_START.0 + 20_000)
        },
        reason: RestartReason::StateCorrupt,
        last_known: Some(SeqNo(2)),
        last_known_hash: Some(receipt.hash()),
    };
    let restart = Envelope::seal(&restart, &dev.key);
    let command = Command {
        device: dev.key.device_id(),
        nonce: 42,
        issued: TimestampMs(SAMPLE_START.0),
        expires: TimestampMs(SAMPLE_START.0 + 60_000),
        body: CommandBody::Resend {
            from: SeqNo(0),
            to: SeqNo(1),
        },
    };
    let ack = Ack {
        device: dev.key.device_id(),
        up_to: SeqNo(1),
        hash: r1.hash(),
        timestamp: TimestampMs(SAMPLE_START.0 + 11_000),
    };
    let anchor = AnchorEntry {
        index: 0,
        prev: Hash32::ZERO,
        epoch: EpochId(0),
        tree_size: 2,
        root: attest::merkle::MerkleTree::from_leaves(&[r0.as_bytes(), r1.as_bytes()])
            .head()
            .root,
        timestamp: TimestampMs(SAMPLE_START.0 + 3_600_000),
    };
    let statement = make_bundle().statement().unwrap();
    let job = match statement.subject {
        attest::msg::Subject::Job { job, .. } => job,
        attest::msg::Subject::DevicePeriod { .. } => unreachable!("the shipped bundle is a job's"),
    };
    let entry = attest::msg::LedgerEntry {
        id: 7,
        kind: "escrow".into(),
        job: Some(job),
        memo: "job submitted: ceiling held".into(),
        at: TimestampMs(SAMPLE_START.0 + 36_000_000),
        postings: vec![
            attest::msg::LedgerPosting {
                book: "wallet:2".into(),
                amount: -1_500_000,
                seq: 3,
                balance: 8_500_000,
            },
            attest::msg::LedgerPosting {
                book: format!("escrow:{job}"),
                amount: 1_500_000,
                seq: 0,
                balance: 1_500_000,
            },
        ],
    };
    let hour = SAMPLE_START.0 / 3_600_000 + 10;
    let retirement = attest::msg::Retirement {
        id: 1,
        certificate: attest::msg::Certificate {
            id: "GC-DE-2026-06-21T10-000001..000040".into(),
            scheme: attest::msg::CertificateScheme::Granular,
            start: TimestampMs(hour * 3_600_000),
            end: TimestampMs((hour + 1) * 3_600_000),
            source: "wind".into(),
            technology: "onshore wind turbine".into(),
            producer: "DE-WIND-17".into(),
            region: "DE".into(),
            volume_wh: 40,
            issuer: "Granular Registry Test".into(),
        },
        job,
        device: dev.key.device_id(),
        hour,
        account: 2,
        covered_mg: 13_680,
        at: TimestampMs(SAMPLE_START.0 + 86_400_000),
    };
    // The controller hands over to a successor (this copy sealed by the old key).
    let rotation = attest::msg::KeyRotation {
        from: ctl.public(),
        to: KeyPair::from_seed(&[0x23; 32]).public(),
        at: TimestampMs(SAMPLE_START.0 + 2 * 86_400_000),
    };
    json!([
        vector("hello", &dev.key, &hello),
        vector("meter_record_seq0", &dev.key, &r0),
        vector("meter_record_seq1", &dev.key, &r1),
        vector("job_receipt_seq2", &dev.key, &receipt),
        vector("chain_restart", &dev.key, &restart),
        vector("command_resend", &ctl, &Envelope::seal(&command, &ctl)),
        vector("ack", &ctl, &Envelope::seal(&ack, &ctl)),
        vector("anchor_entry", &ctl, &Envelope::seal(&anchor, &ctl)),
        vector("statement_job", &ctl, &Envelope::seal(&statement, &ctl)),
        vector("ledger_entry", &ctl, &Envelope::seal(&entry, &ctl)),
        vector("retirement", &ctl, &Envelope::seal(&retirement, &ctl)),
        vector("key_rotation", &ctl, &Envelope::seal(&rotation, &ctl)),
    ])
}

/// A job's bundle over a day of records every 30 minutes, so that the data covers the
/// arithmetic: solar and battery charging by day, battery and grid by night, 20 minutes of
/// grid time nobody metered reported at 02:00 (charged at the hello's maximum draw), a
/// counter jump at 08:00 (a plausibility flag), the job from 10:00 to 13:00 (its receipt's
/// counters are those of the records there), and an agent restart without its state at
/// 18:10 (no energy counted across it; the battery taken at its worst after it).
fn make_bundle() -> ProofBundle {
    let mut dev = SampleDevice::new(1);
    let hello = dev.hello();
    let half_hour = 1_800_000;
    let mut chain = Vec::new();
    let mut at_job_start: Option<MeterRecord> = None;
    for i in 0..=48u64 {
        let t = SAMPLE_START.0 + i * half_hour;
        if i == 37 {
            chain.push(dev.restart(t - 20 * 60_000));
        }
        if i == 4 {
            dev.unmetered_grid(1_200_000);
        }
        if i == 16 {
            dev.bump_counter(0, 3_600_000_000);
        }
        let env = dev.record_at(t);
        let rec: MeterRecord = env.open().unwrap();
        chain.push(env);
        if i == 20 {
            at_job_start = Some(rec.clone());
        }
        if i == 26 {
            let first = at_job_start.clone().unwrap();
            let snap = |r: &MeterRecord| {
                vec![CounterSnapshot {
                    channel: attest::ChannelId(5),
                    kind: ChannelKind::Gpu,
                    energy: r.channels[5].energy,
                }]
            };
            let receipt = JobReceipt {
                link: dev.next_link(t),
                job: JobId([0x22; 16]),
                outcome: JobOutcome::Completed,
                output_hash: Hash32::digest(b"vector job output"),
                started: first.link.timestamp,
                ended: rec.link.timestamp,
                start_counters: snap(&first),
                end_counters: snap(&rec),
                chunks: 12,
                pauses: 1,
                backend: Backend::Cpu,
                tier: TrustTier::HardwareMeter,
            };
            chain.push(dev.seal_chained(&receipt));
        }
    }
    let hello_msg: Hello = hello.open().unwrap();
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let statement = attest::sample::statement(
        &hello_msg,
        &messages,
        Subject::Job {
            device: hello_msg.device,
            job: JobId([0x22; 16]),
        },
        TimestampMs(0),
    );
    attest::sample::bundle_with_statement(&hello, &chain, &controller(), EpochId(0), &statement)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
fn shipped_vectors_match_what_this_code_produces() {
    let messages = pretty(&make_messages());
    let bundle = make_bundle().to_json() + "\n";
    if std::env::var_os("ATTEST_REGEN_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(dir().join("messages.json"), &messages).unwrap();
        std::fs::write(dir().join("bundle.json"), &bundle).unwrap();
    }
    let shipped = std::fs::read_to_string(dir().join("messages.json")).unwrap();
    assert_eq!(
        shipped, messages,
        "messages.json differs from this code's output"
    );
    let shipped = std::fs::read_to_string(dir().join("bundle.json")).unwrap();
    assert_eq!(
        shipped, bundle,
        "bundle.json differs from this code's output"
    );
    let postcard = make_bundle().to_postcard();
    if std::env::var_os("ATTEST_REGEN_VECTORS").is_some() {
        std::fs::write(dir().join("bundle.postcard"), &postcard).unwrap();
    }
    let shipped = std::fs::read(dir().join("bundle.postcard")).unwrap();
    assert!(
        shipped == postcard,
        "bundle.postcard differs from this code's output"
    );
}

#[test]
fn every_shipped_message_verifies_and_decodes_to_its_json_on_its_own_terms() {
    let text = std::fs::read_to_string(dir().join("messages.json")).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    // One of every kind (two meter records).
    let mut kinds: Vec<String> = vectors
        .iter()
        .map(|v| v["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.dedup();
    let all: Vec<String> = attest::Kind::ALL.iter().map(|k| k.to_string()).collect();
    assert_eq!(kinds, all);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let bytes = attest::hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap();
        let key =
            PublicKey(attest::hex::decode_array(v["signer_public_key"].as_str().unwrap()).unwrap());
        let env = Envelope::decode(&bytes).unwrap();
        env.verify(&key).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            env.hash().to_hex(),
            v["envelope_sha256"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            env.kind().to_string(),
            v["kind"].as_str().unwrap(),
            "{name}"
        );
        let decoded = serde_json::to_value(AnyMessage::open(&env).unwrap()).unwrap();
        assert_eq!(decoded, v["message"], "{name}");
        // The seed gives the public key, and re-signing gives the same bytes (ed25519 is deterministic).
        let seed = attest::hex::decode_array::<32>(v["signer_seed"].as_str().unwrap()).unwrap();
        let kp = KeyPair::from_seed(&seed);
        assert_eq!(kp.public(), key, "{name}");
        assert_eq!(kp.sign(env.signed_bytes()), env.signature(), "{name}");
        // Any flipped bit is refused.
        let mut bad = bytes.clone();
        bad[bytes.len() / 2] ^= 4;
        let refused = Envelope::decode(&bad).map_or(true, |e| e.verify(&key).is_err());
        assert!(refused, "{name}: flipped bit accepted");
    }
}

#[test]
fn the_shipped_bundles_verify_and_cover_solar_grid_charging_a_restart_a_job_and_a_flag() {
    let json = std::fs::read(dir().join("bundle.json")).unwrap();
    let postcard = std::fs::read(dir().join("bundle.postcard")).unwrap();
    let b = ProofBundle::decode(&json).unwrap();
    assert_eq!(
        ProofBundle::decode(&postcard).unwrap(),
        b,
        "both forms are one bundle"
    );
    let r = verify(
        &b,
        &VerifyOptions::pinned(
            controller().public(),
            TimestampMs(SAMPLE_START.0 + 86_400_000),
        ),
    )
    .unwrap();
    assert_eq!(r.records, 49);
    let s = b.statement().unwrap();
    assert_eq!(r.statement, s);
    let e = &s.energy;
    assert!(e.solar.0 > 0 && e.grid_import.0 > 0 && e.battery_charge.0 > 0);
    assert!(e.battery_discharge.0 > 0);
    assert!(!s.flags.is_empty(), "the counter jump is flagged");
    assert!(e.unmetered.0 > 0, "the unmetered grid time is charged");
    assert!(s.job.is_some_and(|j| j.energy.0 > 0));
    assert!(s.sci.as_ref().is_some_and(|sci| sci.embodied_mg > 0));
    let restarts = b
        .evidence
        .iter()
        .filter(|ev| Envelope::decode(&ev.envelope.0).unwrap().kind() == attest::Kind::ChainRestart)
        .count();
    assert_eq!(restarts, 1);
}

#[test]
fn bundles_of_the_format_before_key_rotations_still_verify() {
    // bundle-v3.*: the shipped bundle as format 3 wrote it (no key rotations).
    let now = TimestampMs(SAMPLE_START.0 + 400 * 86_400_000);
    for name in ["bundle-v3.json", "bundle-v3.postcard"] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let b = ProofBundle::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.format, 3, "{name}");
        assert!(b.key_rotations.is_empty());
        let key = PublicKey(
            attest::hex::decode_array(
                serde_json::from_slice::<Value>(
                    &std::fs::read(dir().join("bundle-v3.json")).unwrap(),
                )
                .unwrap()["epochs"][0]["anchor"]["local"]["controller_key"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        );
        let mut opts = attest::bundle::VerifyOptions::pinned(key, now);
        opts.any_dataset = true;
        attest::bundle::verify(&b, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
