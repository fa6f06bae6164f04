//! Any bytes as a proof bundle (JSON or postcard).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = attest::bundle::ProofBundle::decode(data) {
        let again = attest::bundle::ProofBundle::decode(&b.to_postcard()).expect("re-encoded bundle decodes");
        assert_eq!(again, b);
    }
});
