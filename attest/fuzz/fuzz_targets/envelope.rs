//! Any bytes as an envelope, then as every message kind.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = attest::Envelope::decode(data) {
        if let Ok(msg) = attest::msg::AnyMessage::open(&env) {
            // What decodes must re-encode to the same payload (canonical encoding).
            let again = match &msg {
                attest::msg::AnyMessage::MeterRecord(m) => postcard::to_allocvec(m).ok(),
                _ => None,
            };
            if let Some(again) = again {
                assert_eq!(again, env.payload());
            }
        }
        let _ = attest::msg::ChainMessage::open(&env);
    }
});
