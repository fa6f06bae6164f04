//! Verification of a valid sample bundle with fuzzer-chosen bytes written over part of its
//! postcard encoding: it must fail cleanly, or, if it still verifies, state exactly the
//! figures of the original (a mutation that changes a verified number is a bug).
#![no_main]
use std::sync::OnceLock;

use attest::msg::Statement;
use libfuzzer_sys::fuzz_target;

fn controller() -> attest::KeyPair {
    attest::KeyPair::from_seed(&[0xc0; 32])
}

fn base() -> &'static (Vec<u8>, Statement) {
    static B: OnceLock<(Vec<u8>, Statement)> = OnceLock::new();
    B.get_or_init(|| {
        let b = attest::sample::bundle(1, 13, 300_000, &controller());
        let s = b.statement().expect("the sample statement decodes");
        (b.to_postcard(), s)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (original, statement) = base();
    let mut bytes = original.clone();
    let at = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize % bytes.len();
    for (i, b) in data[4..].iter().enumerate().take(64) {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot ^= b;
        }
    }
    if let Ok(b) = attest::bundle::ProofBundle::decode(&bytes) {
        let opts = attest::bundle::VerifyOptions::pinned(
            controller().public(),
            attest::TimestampMs(u64::MAX / 2),
        );
        if let Ok(report) = attest::bundle::verify(&b, &opts) {
            assert_eq!(
                &report.statement, statement,
                "a mutated bundle verified with other figures"
            );
        }
    }
});
