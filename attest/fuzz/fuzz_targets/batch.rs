//! Any bytes as a batch of envelopes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = attest::batch::decode(data) {
        assert!(items.len() <= attest::batch::MAX_BATCH_ITEMS);
        // Re-framing the good items and decoding again gives the same items.
        let good: Vec<Vec<u8>> = items.into_iter().flatten().map(|e| e.into_bytes()).collect();
        let again = attest::batch::encode(good.iter().map(|v| v.as_slice()));
        let back = attest::batch::decode(&again).expect("re-framed batch decodes");
        assert_eq!(back.len(), good.len());
    }
});
