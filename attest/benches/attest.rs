//! Criterion benchmarks for the evidence path. Run with `cargo bench -p attest`; the
//! figures and targets are recorded in BENCHMARKS.md.

use std::hint::black_box;

use attest::bundle::{VerifyOptions, verify};
use attest::merkle::{MerkleTree, TreeHead, leaf_hash};
use attest::msg::{ChannelKind, ChannelReading, Link, MeterRecord};
use attest::sample::SAMPLE_START;
use attest::{ChannelId, Envelope, Hash32, KeyPair, Millijoules, Milliwatts, SeqNo, TimestampMs};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, VerifyingKey};

fn record(seq: u64) -> MeterRecord {
    let ch = |id: u8, kind, e: u64| ChannelReading {
        channel: ChannelId(id),
        kind,
        energy: Millijoules(e),
        power: Milliwatts(120_000),
        voltage_mv: Some(25_600),
        soc_permille: None,
    };
    MeterRecord {
        link: Link {
            device: attest::DeviceId([7; 16]),
            seq: SeqNo(seq),
            timestamp: TimestampMs(SAMPLE_START.0 + seq * 10_000),
            prev: Hash32([1; 32]),
        },
        channels: vec![
            ch(0, ChannelKind::Solar, 1_000_000_000 + seq),
            ch(1, ChannelKind::BatteryCharge, 2_000_000_000 + seq),
            ch(2, ChannelKind::GridImport, 3_000_000_000 + seq),
            ch(3, ChannelKind::Load, 4_000_000_000 + seq),
        ],
        unmetered: vec![],
    }
}

fn signing(c: &mut Criterion) {
    let key = KeyPair::from_seed(&[7; 32]);
    let rec = record(1);
    c.bench_function("encode_and_sign_4ch_record", |b| {
        b.iter(|| Envelope::seal(black_box(&rec), &key))
    });
}

fn verification(c: &mut Criterion) {
    const N: usize = 256;
    let keys: Vec<KeyPair> = (0..16u8).map(|i| KeyPair::from_seed(&[i; 32])).collect();
    let envs: Vec<Envelope> = (0..N)
        .map(|i| Envelope::seal(&record(i as u64), &keys[i % 16]))
        .collect();
    let msgs: Vec<&[u8]> = envs.iter().map(|e| e.signed_bytes()).collect();
    let sigs: Vec<Signature> = envs
        .iter()
        .map(|e| Signature::from_bytes(&e.signature()))
        .collect();
    let vks: Vec<VerifyingKey> = (0..N)
        .map(|i| keys[i % 16].public().verifying_key().unwrap())
        .collect();
    let mut g = c.benchmark_group("verify_256_signatures");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("single", |b| {
        b.iter(|| {
            for i in 0..N {
                vks[i].verify_strict(msgs[i], &sigs[i]).unwrap();
            }
        })
    });
    g.bench_function("dalek_batch", |b| {
        b.iter(|| ed25519_dalek::verify_batch(&msgs, &sigs, &vks).unwrap())
    });
    let pks: Vec<attest::PublicKey> = (0..N).map(|i| keys[i % 16].public()).collect();
    let items: Vec<attest::sigbatch::Item> = (0..N)
        .map(|i| attest::sigbatch::Item {
            message: msgs[i],
            signature: envs[i].signature(),
            key: &pks[i],
        })
        .collect();
    g.bench_function("coalesced_batch_one_thread", |b| {
        b.iter(|| assert!(attest::sigbatch::verify_one_batch(&items)))
    });
    g.bench_function("coalesced_batch_all_cores", |b| {
        b.iter(|| assert!(attest::sigbatch::verify_all(&items)))
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    const N: usize = 100_000;
    let leaves: Vec<Hash32> = (0..N as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let mut g = c.benchmark_group("merkle_100k_leaves");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("root_streaming", |b| {
        b.iter(|| TreeHead::from_leaf_hashes(black_box(&leaves)))
    });
    g.bench_function("tree_with_levels", |b| {
        b.iter_batched(
            || leaves.clone(),
            MerkleTree::from_leaf_hashes,
            BatchSize::LargeInput,
        )
    });
    g.finish();
    let tree = MerkleTree::from_leaf_hashes(leaves.clone());
    let head = tree.head();
    let proof = tree.inclusion_proof(54_321).unwrap();
    c.bench_function("inclusion_proof_verify_100k_tree", |b| {
        b.iter(|| {
            head.verify_inclusion(black_box(&leaves[54_321]), black_box(&proof))
                .unwrap()
        })
    });
}

fn bundles(c: &mut Criterion) {
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    let b = attest::sample::bundle(1, 1_000, 10_000, &controller);
    let opts = VerifyOptions::pinned(
        controller.public(),
        TimestampMs(SAMPLE_START.0 + 86_400_000),
    );
    let mut g = c.benchmark_group("bundle");
    g.sample_size(30);
    g.bench_function("verify_1000_records", |bch| {
        bch.iter(|| verify(black_box(&b), &opts).unwrap())
    });
    g.finish();
}

criterion_group!(benches, signing, verification, merkle, bundles);
criterion_main!(benches);
