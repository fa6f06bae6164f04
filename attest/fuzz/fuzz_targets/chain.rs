//! A sequence of fuzzer-made envelopes fed to one device's chain checker, after a valid
//! prefix: nothing panics, and the tip only ever moves forward.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dev = attest::sample::SampleDevice::new(1);
    let policy = attest::chain::ChainPolicy::default();
    let mut v = attest::chain::ChainVerifier::new(&dev.key.public(), policy).expect("sample key");
    let now = attest::TimestampMs(attest::sample::SAMPLE_START.0 + 86_400_000);
    for env in dev.chain(3, 10_000) {
        v.feed(&env, now).expect("valid prefix");
    }
    for chunk in data.split(|&b| b == 0xff).take(32) {
        if let Ok(env) = attest::Envelope::decode(chunk) {
            let before = v.tip().map(|t| t.seq);
            let _ = v.feed(&env, now);
            assert!(v.tip().map(|t| t.seq) >= before);
        }
    }
});
