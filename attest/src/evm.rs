//! The on-chain anchor check used by `attest verify --rpc URL`.
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

fn rpc(url: &str, method: &'static str, params: Value) -> Result<Value, EvmError> {
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

/// Checks one EVM anchor against a node.
pub fn check_anchor(
    url: &str,
    epoch: EpochId,
    head: &TreeHead,
    chain_id: u64,
    contract: &Address,
    tx_hash: &Hash32,
    block_number: u64,
) -> Result<OnChainAnchor, EvmError> {
    let got = hex_u64(&rpc(url, "eth_chainId", json!([]))?, "eth_chainId")?;
    if got != chain_id {
        return Err(EvmError::WrongChain {
            expected: chain_id,
            got,
        });
    }
    let tx = format!("0x{}", tx_hash.to_hex());
    let receipt = rpc(url, "eth_getTransactionReceipt", json!([tx]))?;
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
    let call = json!([{"to": format!("{contract}"), "data": format!("0x{}", crate::hex::encode(&get_anchor_calldata(epoch)))}, "latest"]);
    let out = rpc(url, "eth_call", call)?;
    let data = crate::hex::decode(out.as_str().unwrap_or_default()).map_err(|e| EvmError::Rpc {
        method: "eth_call",
        detail: format!("bad hex: {e}"),
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
