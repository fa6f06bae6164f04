//! Times the phases of verifying a 1,000-record bundle (a rough profile; the criterion
//! bench is the figure of record). `cargo run --release -p attest --example profile_verify`
use std::time::Instant;

use attest::bundle::{VerifyOptions, verify};
use attest::merkle::leaf_hash;
use attest::sample::SAMPLE_START;
use attest::{Envelope, KeyPair, TimestampMs};
use ed25519_dalek::{Signature, VerifyingKey};

fn main() {
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    let b = attest::sample::bundle(1, 1_000, 10_000, &controller);
    let opts = VerifyOptions::pinned(
        controller.public(),
        TimestampMs(SAMPLE_START.0 + 86_400_000),
    );
    let envs: Vec<Envelope> = b
        .evidence
        .iter()
        .map(|e| Envelope::decode(&e.envelope.0).unwrap())
        .collect();
    let vk: VerifyingKey = attest::sample::SampleDevice::new(1)
        .key
        .public()
        .verifying_key()
        .unwrap();
    let runs = 20;
    let time = |name: &str, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..runs {
            f();
        }
        println!(
            "{name:<28} {:>8.3} ms",
            t.elapsed().as_secs_f64() * 1000.0 / runs as f64
        );
    };
    time("whole verify", &mut || {
        verify(&b, &opts).unwrap();
    });
    time("decode envelopes", &mut || {
        for e in &b.evidence {
            let env = Envelope::decode(&e.envelope.0).unwrap();
            attest::msg::ChainMessage::open(&env).unwrap();
        }
    });
    let msgs: Vec<&[u8]> = envs.iter().map(|e| e.signed_bytes()).collect();
    let sigs: Vec<Signature> = envs
        .iter()
        .map(|e| Signature::from_bytes(&e.signature()))
        .collect();
    let vks = vec![vk; envs.len()];
    time("batch verify 1000", &mut || {
        ed25519_dalek::verify_batch(&msgs, &sigs, &vks).unwrap()
    });
    let pk = attest::sample::SampleDevice::new(1).key.public();
    let items: Vec<attest::sigbatch::Item> = envs
        .iter()
        .map(|e| attest::sigbatch::Item {
            message: e.signed_bytes(),
            signature: e.signature(),
            key: &pk,
        })
        .collect();
    time("coalesced batch verify 1000", &mut || {
        assert!(attest::sigbatch::verify_all(&items))
    });
    time("inclusion proofs", &mut || {
        for e in &b.evidence {
            b.epochs[0]
                .head
                .verify_inclusion(&leaf_hash(&e.envelope.0), &e.proof)
                .unwrap();
        }
    });
    time("inclusion, shared checker", &mut || {
        let mut c = attest::merkle::InclusionChecker::new(b.epochs[0].head);
        for e in &b.evidence {
            c.verify(&leaf_hash(&e.envelope.0), &e.proof).unwrap();
        }
    });
    let msgs: Vec<attest::msg::ChainMessage> = envs
        .iter()
        .map(|e| attest::msg::ChainMessage::open(e).unwrap())
        .collect();
    let hello: attest::msg::Hello = Envelope::decode(&b.devices[0].0).unwrap().open().unwrap();
    time("compute statement", &mut || {
        attest::account::compute_statement(&attest::account::StatementInput {
            subject: b.statement().unwrap().subject,
            hellos: std::slice::from_ref(&hello),
            chain: &msgs,
            from: TimestampMs(0),
            intensity: &|h| attest::sample::bundled_figure("DE", h),
        })
        .unwrap();
    });
    let verified: Vec<_> = attest::sigbatch::verify_messages(
        envs.iter()
            .zip(&msgs)
            .map(|(e, m)| (e.clone(), m.clone(), &pk))
            .collect(),
    )
    .into_iter()
    .map(|r| r.unwrap())
    .collect();
    time("chain check", &mut || {
        let mut v = attest::chain::ChainVerifier::trust_first(&pk, Default::default()).unwrap();
        for m in &verified {
            v.feed_verified(m, opts.now).unwrap();
        }
    });
    time("decompress 1000 R", &mut || {
        for e in &envs {
            let r: [u8; 32] = e.signature()[..32].try_into().unwrap();
            std::hint::black_box(curve25519_dalek::edwards::CompressedEdwardsY(r).decompress());
        }
    });
    time("envelope hashes", &mut || {
        for e in &envs {
            std::hint::black_box(e.hash());
        }
    });
}
