//! Verification of a valid sample bundle with fuzzer-chosen bytes written over part of its
//! postcard encoding: it must fail cleanly (or pass only if nothing that matters changed).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn base() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| attest::sample::bundle(1, 13, 300_000, &attest::KeyPair::from_seed(&[0xc0; 32])).to_postcard())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mut bytes = base().clone();
    let at = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize % bytes.len();
    for (i, b) in data[4..].iter().enumerate().take(64) {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot ^= b;
        }
    }
    if let Ok(b) = attest::bundle::ProofBundle::decode(&bytes) {
        let opts = attest::bundle::VerifyOptions { controller_key: None, now: attest::TimestampMs(u64::MAX / 2) };
        let _ = attest::bundle::verify(&b, &opts);
    }
});
