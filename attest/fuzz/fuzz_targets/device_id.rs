//! Any string as a device id: parses only what formats back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = attest::DeviceId::parse(s) {
            assert_eq!(id.to_string(), s.to_ascii_lowercase());
        }
    }
});
