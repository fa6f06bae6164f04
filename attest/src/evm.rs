//! The on-chain anchor check: `attest verify --rpc URL` sends its requests over HTTP; the
//! in-browser verifier (`attest/wasm`) has the browser send them. Both judge the answers
//! with [`check_answers`].
//!
//! The anchor contract (built by the controller, source under `fleet-controller/`) exposes
//!
//! ```solidity
//! function getAnchor(uint64 epoch) external view
//!     returns (bytes32 root, uint64 leafCount, uint64 blockNumber);
//! event Anchored(uint64 indexed epoch, bytes32 root, uint64 leafCount);
//! ```
//!
//! The check asks the node, over plain JSON-RPC: `eth_chainId` equals the bundle's chain id;
//! `eth_getTransactionReceipt(tx)` succeeded (status 1), is in the stated block and went to
//! the stated contract; and `eth_call getAnchor(epoch)` returns the bundle's root and size.

use alloc::format;
use alloc::string::String;
use serde_json::{Value, json};
use sha3::{Digest, Keccak256};

use crate::bundle::Address;
use crate::hash::Hash32;
use crate::merkle::TreeHead;
use crate::units::EpochId;

/// The Solidity signature of the read call.
pub const GET_ANCHOR_SIGNATURE: &str = "getAnchor(uint64)";

/// The 4-byte selector of [`GET_ANCHOR_SIGNATURE`].
pub fn get_anchor_selector() -> [u8; 4] {
    let h = Keccak256::digest(GET_ANCHOR_SIGNATURE.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// ABI call data for `getAnchor(epoch)`.
pub fn get_anchor_calldata(epoch: EpochId) -> alloc::vec::Vec<u8> {
    let mut data = get_anchor_selector().to_vec();
    let mut word = [0u8; 32];
    word[24..].copy_from_slice(&epoch.0.to_be_bytes());
    data.extend_from_slice(&word);
    data
}

/// What `getAnchor` returned, decoded from its 96-byte ABI result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnChainAnchor {
    /// The anchored root (zero when the epoch was never anchored).
    pub root: Hash32,
    /// The leaf count recorded with it.
    pub leaf_count: u64,
    /// The block in which it was recorded.
    pub block_number: u64,
}

/// Why the on-chain check failed.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// The node could not be reached or answered garbage.
    #[error("RPC {method}: {detail}")]
    Rpc {
        method: &'static str,
        detail: String,
    },
    /// The node is on another chain.
    #[error("node is on chain {got}, the bundle says {expected}")]
    WrongChain { expected: u64, got: u64 },
    /// The anchoring transaction is missing, failed, or is not what the bundle says.
    #[error("transaction {tx}: {detail}")]
    Transaction { tx: Hash32, detail: String },
    /// The contract holds another root or size for the epoch (or none).
    #[error(
        "epoch {epoch}: contract records root {got_root} size {got_size}, bundle says root {root} size {size}"
    )]
    RootMismatch {
        epoch: EpochId,
        root: Hash32,
        size: u64,
        got_root: Hash32,
        got_size: u64,
    },
}

/// Decodes `getAnchor`'s ABI return value.
pub fn decode_get_anchor(data: &[u8]) -> Option<OnChainAnchor> {
    if data.len() != 96 {
        return None;
    }
    let word_u64 = |w: &[u8]| -> Option<u64> {
        if w[..24].iter().any(|&b| b != 0) {
            return None;
        }
        Some(u64::from_be_bytes(w[24..32].try_into().ok()?))
    };
    let mut root = [0u8; 32];
    root.copy_from_slice(&data[..32]);
    Some(OnChainAnchor {
        root: Hash32(root),
        leaf_count: word_u64(&data[32..64])?,
        block_number: word_u64(&data[64..96])?,
    })
}

/// The three JSON-RPC requests that check one anchor, as `(method, params)`, in order:
/// `eth_chainId`, `eth_getTransactionReceipt(tx)`, `eth_call getAnchor(epoch)`. Whoever
/// sends them (this crate's CLI over HTTP, a browser's `fetch`) hands the results to
/// [`check_answers`], which alone judges them.
pub fn anchor_requests(
    epoch: EpochId,
    contract: &Address,
    tx_hash: &Hash32,
) -> [(&'static str, Value); 3] {
    [
        ("eth_chainId", json!([])),
        (
            "eth_getTransactionReceipt",
            json!([format!("0x{}", tx_hash.to_hex())]),
        ),
        (
            "eth_call",
            json!([{"to": format!("{contract}"), "data": format!("0x{}", crate::hex::encode(&get_anchor_calldata(epoch)))}, "latest"]),
        ),
    ]
}

fn hex_u64(v: &Value, method: &'static str) -> Result<u64, EvmError> {
    let s = v.as_str().ok_or(EvmError::Rpc {
        method,
        detail: "expected a hex quantity".into(),
    })?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| EvmError::Rpc {
        method,
        detail: format!("bad quantity {s}: {e}"),
    })
}

/// What the node answered to [`anchor_requests`], in the same order (each the JSON-RPC
/// `result`).
pub struct Answers<'a> {
    /// `eth_chainId`.
    pub chain_id: &'a Value,
    /// `eth_getTransactionReceipt`.
    pub receipt: &'a Value,
    /// `eth_call getAnchor`.
    pub call: &'a Value,
}

/// Judges a node's answers about one EVM anchor: right chain; the anchoring transaction
/// succeeded, in the stated block, to the stated contract; the contract records the
/// bundle's root and size for the epoch.
#[allow(clippy::too_many_arguments)]
pub fn check_answers(
    answers: &Answers<'_>,
    epoch: EpochId,
    head: &TreeHead,
    chain_id: u64,
    contract: &Address,
    tx_hash: &Hash32,
    block_number: u64,
) -> Result<OnChainAnchor, EvmError> {
    let got = hex_u64(answers.chain_id, "eth_chainId")?;
    if got != chain_id {
        return Err(EvmError::WrongChain {
            expected: chain_id,
            got,
        });
    }
    let receipt = answers.receipt;
    let terr = |detail: String| EvmError::Transaction {
        tx: *tx_hash,
        detail,
    };
    if receipt.is_null() {
        return Err(terr("not found on chain".into()));
    }
    if receipt.get("status").and_then(Value::as_str) != Some("0x1") {
        return Err(terr("did not succeed (status is not 1)".into()));
    }
    let block = hex_u64(
        receipt.get("blockNumber").unwrap_or(&Value::Null),
        "eth_getTransactionReceipt",
    )?;
    if block != block_number {
        return Err(terr(format!(
            "is in block {block}, the bundle says {block_number}"
        )));
    }
    let to = receipt
        .get("to")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if to != format!("{contract}") {
        return Err(terr(format!(
            "went to {to}, not the anchor contract {contract}"
        )));
    }
    let data = crate::hex::decode(answers.call.as_str().unwrap_or_default()).map_err(|e| {
        EvmError::Rpc {
            method: "eth_call",
            detail: format!("bad hex: {e}"),
        }
    })?;
    let a = decode_get_anchor(&data).ok_or(EvmError::Rpc {
        method: "eth_call",
        detail: format!("unexpected {}-byte result", data.len()),
    })?;
    if a.root != head.root || a.leaf_count != head.size {
        return Err(EvmError::RootMismatch {
            epoch,
            root: head.root,
            size: head.size,
            got_root: a.root,
            got_size: a.leaf_count,
        });
    }
    Ok(a)
}

#[cfg(feature = "cli")]
fn rpc(url: &str, method: &'static str, params: &Value) -> Result<Value, EvmError> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let err = |detail: String| EvmError::Rpc { method, detail };
    let mut resp = ureq::post(url)
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .map_err(|e| err(format!("{e}")))?;
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| err(format!("{e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("bad JSON: {e}")))?;
    if let Some(e) = v.get("error") {
        return Err(err(format!("node error: {e}")));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| err("no result".into()))
}

/// Checks one EVM anchor against a node at `url` (JSON-RPC over HTTP).
#[cfg(feature = "cli")]
pub fn check_anchor(
    url: &str,
    epoch: EpochId,
    head: &TreeHead,
    chain_id: u64,
    contract: &Address,
    tx_hash: &Hash32,
    block_number: u64,
) -> Result<OnChainAnchor, EvmError> {
    let [a, b, c] = anchor_requests(epoch, contract, tx_hash);
    let chain = rpc(url, a.0, &a.1)?;
    let receipt = rpc(url, b.0, &b.1)?;
    let call = rpc(url, c.0, &c.1)?;
    check_answers(
        &Answers {
            chain_id: &chain,
            receipt: &receipt,
            call: &call,
        },
        epoch,
        head,
        chain_id,
        contract,
        tx_hash,
        block_number,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_use_keccak_as_solidity_does() {
        // The ERC-20 `transfer(address,uint256)` selector is a9059cbb.
        let h = Keccak256::digest(b"transfer(address,uint256)");
        assert_eq!(&h[..4], &[0xa9, 0x05, 0x9c, 0xbb]);
    }

    #[test]
    fn calldata_is_the_selector_and_one_abi_word() {
        let d = get_anchor_calldata(EpochId(0x0102));
        assert_eq!(d.len(), 36);
        assert_eq!(&d[..4], &get_anchor_selector());
        assert_eq!(&d[34..], &[1, 2]);
    }

    #[test]
    fn answers_are_judged_whoever_fetched_them() {
        let contract = Address([0xab; 20]);
        let tx = Hash32([3; 32]);
        let head = TreeHead {
            size: 5,
            root: Hash32([7; 32]),
        };
        let reqs = anchor_requests(EpochId(2), &contract, &tx);
        assert_eq!(
            reqs.clone().map(|r| r.0),
            ["eth_chainId", "eth_getTransactionReceipt", "eth_call"]
        );
        assert_eq!(reqs[2].1[0]["to"], format!("{contract}"));
        let mut word = [0u8; 96];
        word[..32].copy_from_slice(&[7; 32]);
        word[63] = 5;
        word[95] = 9;
        let call = Value::String(format!("0x{}", crate::hex::encode(&word)));
        let receipt = json!({"status": "0x1", "blockNumber": "0x9", "to": format!("{contract}")});
        let chain = json!("0x7a69");
        let judge = |chain: &Value, receipt: &Value, call: &Value| {
            check_answers(
                &Answers {
                    chain_id: chain,
                    receipt,
                    call,
                },
                EpochId(2),
                &head,
                31337,
                &contract,
                &tx,
                9,
            )
        };
        assert_eq!(judge(&chain, &receipt, &call).unwrap().block_number, 9);
        assert!(matches!(
            judge(&json!("0x1"), &receipt, &call),
            Err(EvmError::WrongChain { got: 1, .. })
        ));
        let failed = json!({"status": "0x0", "blockNumber": "0x9", "to": format!("{contract}")});
        assert!(matches!(
            judge(&chain, &failed, &call),
            Err(EvmError::Transaction { .. })
        ));
        assert!(matches!(
            judge(&chain, &Value::Null, &call),
            Err(EvmError::Transaction { .. })
        ));
        word[0] = 8;
        let other_root = Value::String(format!("0x{}", crate::hex::encode(&word)));
        assert!(matches!(
            judge(&chain, &receipt, &other_root),
            Err(EvmError::RootMismatch { .. })
        ));
    }

    #[test]
    fn get_anchor_results_decode_and_reject_dirty_words() {
        let mut data = [0u8; 96];
        data[..32].copy_from_slice(&[7; 32]);
        data[63] = 5;
        data[95] = 9;
        let a = decode_get_anchor(&data).unwrap();
        assert_eq!(
            (a.root, a.leaf_count, a.block_number),
            (Hash32([7; 32]), 5, 9)
        );
        data[40] = 1;
        assert_eq!(decode_get_anchor(&data), None);
        assert_eq!(decode_get_anchor(&data[..64]), None);
    }
}
