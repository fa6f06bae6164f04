//! Any bytes as the controller's retained key rotations (what a device reads from the
//! broker): decoding and following them never panics, and a history they give holds the
//! pinned key and answers for every time.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pinned = attest::KeyPair::from_seed(&[7; 32]).public();
    if let Ok(links) = attest::keys::decode_links(data) {
        if let Ok(h) = attest::keys::KeyHistory::from_links(pinned, &links) {
            assert!(h.contains(&pinned));
            let _ = h.key_at(attest::TimestampMs(0));
            let _ = h.key_at(attest::TimestampMs(u64::MAX));
        }
    }
});
