//! `attest`'s offline verifier as a WebAssembly module with a plain C ABI (no generated
//! glue): the console's "verify in this browser" page loads it and passes bytes in and
//! JSON out. The page's script only moves bytes (the bundle file, the answers of the
//! JSON-RPC node the buyer chose); every judgment is made here, by the same code as the
//! `attest verify` command.
//!
//! ABI: `hs_alloc(len) -> ptr` and `hs_free(ptr, len)` manage buffers; each call takes
//! `(ptr, len)` pairs of UTF-8 or raw bytes and returns a `u64` packing the output's pointer
//! (high 32 bits) and length (low 32 bits), a JSON document the caller frees with `hs_free`.
//!
//! - `hs_verify(bundle, options)`: `{"ok": true, "report": ...}` or
//!   `{"ok": false, "check": ..., "error": ...}`. Options: `{"controller_key": hex,
//!   "now_ms": n, "evm": {"chain_id": n, "contract": "0x..."}?, "any_dataset": bool?}`.
//! - `hs_anchor_requests(bundle, options)`: for each EVM anchor of a verified bundle,
//!   `{"epoch", "requests": [{"method", "params"}, ...]}` to send to a node.
//! - `hs_anchor_check(bundle, options, answers)`: judges the node's answers
//!   (`[{"epoch", "results": [r0, r1, r2]}]`): `[{"epoch", "ok", "error"?}]`.

use attest::bundle::{Address, AnchorRef, EvmPin, ProofBundle, Report, Trust, VerifyOptions};
use attest::{Hash32, PublicKey};
use serde::Deserialize;
use serde_json::{Value, json};

/// The caller's options.
#[derive(Debug, Deserialize)]
struct Options {
    controller_key: String,
    now_ms: u64,
    #[serde(default)]
    evm: Option<EvmOption>,
    #[serde(default)]
    any_dataset: bool,
}

#[derive(Debug, Deserialize)]
struct EvmOption {
    chain_id: u64,
    contract: String,
}

fn options(bytes: &[u8]) -> Result<VerifyOptions, String> {
    let o: Options = serde_json::from_slice(bytes).map_err(|e| format!("options: {e}"))?;
    let key = attest::hex::decode_array::<32>(o.controller_key.trim())
        .map_err(|e| format!("controller key: {e}"))?;
    let controller_key = PublicKey(key);
    let evm = match o.evm {
        Some(e) => Some(EvmPin {
            chain_id: e.chain_id,
            contract: Address(
                attest::hex::decode_array::<20>(e.contract.trim().trim_start_matches("0x"))
                    .map_err(|e| format!("contract: {e}"))?,
            ),
        }),
        None => None,
    };
    let mut v = VerifyOptions::pinned(controller_key, attest::units::TimestampMs(o.now_ms));
    v.trust = Trust {
        controller_key,
        evm,
    };
    v.any_dataset = o.any_dataset;
    Ok(v)
}

fn decode(bundle: &[u8]) -> Result<ProofBundle, Value> {
    let first = bundle.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        if bundle.len() > attest::bundle::MAX_BUNDLE_LEN {
            return Err(
                json!({"ok": false, "check": "format", "error": "the bundle is too large"}),
            );
        }
        serde_json::from_slice(bundle).map_err(
            |e| json!({"ok": false, "check": "format", "error": format!("JSON bundle: {e}")}),
        )
    } else {
        ProofBundle::decode(bundle)
            .map_err(|e| json!({"ok": false, "check": e.check, "error": e.to_string()}))
    }
}

/// Verifies a bundle: the report, or why not.
pub fn verify(bundle: &[u8], opts: &[u8]) -> Result<(ProofBundle, Report), Value> {
    let opts = options(opts).map_err(|e| json!({"ok": false, "check": "options", "error": e}))?;
    let b = decode(bundle)?;
    let report = attest::bundle::verify(&b, &opts)
        .map_err(|e| json!({"ok": false, "check": e.check, "error": e.to_string()}))?;
    Ok((b, report))
}

fn verify_json(bundle: &[u8], opts: &[u8]) -> Value {
    match verify(bundle, opts) {
        Ok((_, report)) => json!({"ok": true, "report": report}),
        Err(e) => e,
    }
}

/// The EVM anchors of a verified report: (epoch, head, chain, contract, tx, block).
fn evm_anchors(
    report: &Report,
) -> Vec<(
    attest::units::EpochId,
    attest::merkle::TreeHead,
    u64,
    Address,
    Hash32,
    u64,
)> {
    report
        .anchors
        .iter()
        .filter_map(|(epoch, head, a)| match a {
            AnchorRef::Evm {
                chain_id,
                contract,
                tx_hash,
                block_number,
            } => Some((*epoch, *head, *chain_id, *contract, *tx_hash, *block_number)),
            AnchorRef::Local { .. } => None,
        })
        .collect()
}

fn requests_json(bundle: &[u8], opts: &[u8]) -> Value {
    match verify(bundle, opts) {
        Ok((_, report)) => Value::Array(
            evm_anchors(&report)
                .into_iter()
                .map(|(epoch, _, _, contract, tx, _)| {
                    let reqs: Vec<Value> = attest::evm::anchor_requests(epoch, &contract, &tx)
                        .into_iter()
                        .map(|(m, p)| json!({"method": m, "params": p}))
                        .collect();
                    json!({"epoch": epoch.0, "requests": reqs})
                })
                .collect(),
        ),
        Err(e) => e,
    }
}

fn check_json(bundle: &[u8], opts: &[u8], answers: &[u8]) -> Value {
    let report = match verify(bundle, opts) {
        Ok((_, r)) => r,
        Err(e) => return e,
    };
    let answers: Vec<Value> = match serde_json::from_slice(answers) {
        Ok(a) => a,
        Err(e) => return json!({"ok": false, "check": "answers", "error": format!("answers: {e}")}),
    };
    Value::Array(
        evm_anchors(&report)
            .into_iter()
            .map(|(epoch, head, chain, contract, tx, block)| {
                let results = answers
                    .iter()
                    .find(|a| a["epoch"].as_u64() == Some(epoch.0))
                    .and_then(|a| a["results"].as_array());
                let Some([c, r, call]) = results.map(|r| r.as_slice()) else {
                    return json!({"epoch": epoch.0, "ok": false, "error": "the node's three answers are missing"});
                };
                let judged = attest::evm::check_answers(
                    &attest::evm::Answers {
                        chain_id: c,
                        receipt: r,
                        call,
                    },
                    epoch,
                    &head,
                    chain,
                    &contract,
                    &tx,
                    block,
                );
                match judged {
                    Ok(a) => json!({"epoch": epoch.0, "ok": true, "block_number": a.block_number}),
                    Err(e) => json!({"epoch": epoch.0, "ok": false, "error": e.to_string()}),
                }
            })
            .collect(),
    )
}

// The C ABI. Pointers are offsets into the module's memory, given out by `hs_alloc`.

fn out(v: Value) -> u64 {
    let bytes = v.to_string().into_bytes().into_boxed_slice();
    let len = bytes.len() as u64;
    let ptr = Box::into_raw(bytes) as *mut u8 as usize as u64;
    (ptr << 32) | len
}

/// # Safety
/// `ptr..ptr+len` must be a buffer from [`hs_alloc`] the caller filled.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller passes a live buffer of `len` bytes it got from `hs_alloc`.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// A buffer of `len` bytes for the caller to fill.
#[unsafe(no_mangle)]
pub extern "C" fn hs_alloc(len: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; len].into_boxed_slice()) as *mut u8
}

/// Frees a buffer from [`hs_alloc`] or an output.
///
/// # Safety
/// `ptr` and `len` must be exactly a buffer this module gave out, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hs_free(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the caller returns a boxed slice of `len` bytes this module leaked.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
}

/// Verifies a bundle (see the module documentation).
///
/// # Safety
/// Both pairs must be buffers from [`hs_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hs_verify(b: *const u8, bl: usize, o: *const u8, ol: usize) -> u64 {
    // SAFETY: as documented, both are live buffers.
    out(verify_json(unsafe { input(b, bl) }, unsafe {
        input(o, ol)
    }))
}

/// The node requests that check a bundle's EVM anchors.
///
/// # Safety
/// Both pairs must be buffers from [`hs_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hs_anchor_requests(
    b: *const u8,
    bl: usize,
    o: *const u8,
    ol: usize,
) -> u64 {
    // SAFETY: as documented, both are live buffers.
    out(requests_json(unsafe { input(b, bl) }, unsafe {
        input(o, ol)
    }))
}

/// Judges a node's answers about a bundle's EVM anchors.
///
/// # Safety
/// All three pairs must be buffers from [`hs_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hs_anchor_check(
    b: *const u8,
    bl: usize,
    o: *const u8,
    ol: usize,
    a: *const u8,
    al: usize,
) -> u64 {
    // SAFETY: as documented, all three are live buffers.
    out(check_json(
        unsafe { input(b, bl) },
        unsafe { input(o, ol) },
        unsafe { input(a, al) },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = include_str!("../../tests/vectors/bundle.json");
    const KEY: &str = "5b9437adeaffbe8f41b13d96ed49d2f51cd6c266cd8ecc284b0552ec4912b8dd";

    fn opts(key: &str) -> Vec<u8> {
        json!({"controller_key": key, "now_ms": 4_000_000_000_000u64})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_test_vector_verifies_and_a_flipped_byte_does_not() {
        let v = verify_json(VECTOR.as_bytes(), &opts(KEY));
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["report"]["records"].as_u64().unwrap() > 0);
        // Another controller key: refused, naming the check.
        let other = verify_json(VECTOR.as_bytes(), &opts(&"11".repeat(32)));
        assert_eq!(other["ok"], false, "{other}");
        // A changed digit in the evidence: refused.
        let mut bad = VECTOR.to_string();
        let at = bad
            .find("\"records\"")
            .or_else(|| bad.find("\"evidence\""))
            .unwrap();
        let digit = bad[at..]
            .find(|c: char| c.is_ascii_hexdigit() && c != '0')
            .unwrap()
            + at;
        let c = if &bad[digit..=digit] == "1" { "2" } else { "1" };
        bad.replace_range(digit..=digit, c);
        assert_eq!(verify_json(bad.as_bytes(), &opts(KEY))["ok"], false);
        assert_eq!(verify_json(b"{not json", &opts(KEY))["check"], "format");
    }

    // The packed (pointer, length) answer holds 32-bit pointers: wasm32's.
    #[cfg(target_pointer_width = "32")]
    #[test]
    fn the_abi_round_trips_through_linear_memory() {
        let o = opts(KEY);
        let (b, ol) = (hs_alloc(VECTOR.len()), o.len());
        let op = hs_alloc(ol);
        // SAFETY: the buffers are this module's, of these lengths.
        let v = unsafe {
            std::ptr::copy_nonoverlapping(VECTOR.as_ptr(), b, VECTOR.len());
            std::ptr::copy_nonoverlapping(o.as_ptr(), op, ol);
            let packed = hs_verify(b, VECTOR.len(), op, ol);
            let (p, l) = (
                (packed >> 32) as usize as *mut u8,
                (packed & 0xffff_ffff) as usize,
            );
            let v: Value = serde_json::from_slice(std::slice::from_raw_parts(p, l)).unwrap();
            hs_free(p, l);
            hs_free(b, VECTOR.len());
            hs_free(op, ol);
            v
        };
        assert_eq!(v["ok"], true);
    }
}
