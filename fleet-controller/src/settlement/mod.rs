//! Settlement of provider earnings on chain (sans-IO here: the leaves, the tree and the
//! proofs; [`chain`] sends and reads the contract).
//!
//! Each settlement round moves every provider's earned credits (its wallet, at least
//! `settlement.min_micro`) out of the ledger, one `settlement` transaction a provider
//! (`wallet:{provider}` → `settled`, anchored in the epochs like every entry), to the
//! payout address the provider registered. The round's payouts become the leaves of a
//! Merkle tree whose root the controller publishes to the `HeliostatSettlement` contract
//! (`contracts/HeliostatSettlement.sol`) with the round's total in tokens (one token unit =
//! one micro-credit; the demo token has 6 decimals). A provider claims its payout with its
//! leaf's proof, once; a second claim or a wrong proof reverts in the contract.
//!
//! The tree is the contract's: a leaf is
//! `keccak256(keccak256(abi.encode(uint64 round, address account, uint256 amount)))`, an
//! inner node `keccak256` of its two children in ascending order, and a node without a
//! sibling moves up a level unchanged.

pub mod chain;
mod run;

pub use run::{SettlementConfig, spawn};

use alloy::primitives::{Address, B256, keccak256};

/// One payout of a round: its position among the round's leaves, who, how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// The address the tokens go to.
    pub address: Address,
    /// Micro-credits (token units).
    pub amount: u64,
}

/// The leaf of `line` in round `round`.
pub fn leaf(round: u64, line: &Line) -> B256 {
    let mut enc = [0u8; 96];
    enc[24..32].copy_from_slice(&round.to_be_bytes());
    enc[44..64].copy_from_slice(line.address.as_slice());
    enc[88..96].copy_from_slice(&line.amount.to_be_bytes());
    keccak256(keccak256(enc))
}

fn parent(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// The levels of the tree over `leaves`, leaves first, root last (none when empty).
fn levels(leaves: Vec<B256>) -> Vec<Vec<B256>> {
    let mut out = vec![leaves];
    while out.last().is_some_and(|l| l.len() > 1) {
        let below = out.last().expect("checked");
        let next = below
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    parent(p[0], p[1])
                } else {
                    p[0]
                }
            })
            .collect();
        out.push(next);
    }
    out
}

/// The root of round `round` over `lines` (in their order), or `None` when there are none.
pub fn root(round: u64, lines: &[Line]) -> Option<B256> {
    let leaves = lines.iter().map(|l| leaf(round, l)).collect();
    levels(leaves).last().and_then(|top| top.first().copied())
}

/// The proof of line `index` of round `round` over `lines`: the siblings from its leaf up.
pub fn proof(round: u64, lines: &[Line], index: usize) -> Vec<B256> {
    let leaves = lines.iter().map(|l| leaf(round, l)).collect();
    let mut at = index;
    let mut out = Vec::new();
    for level in levels(leaves).iter().filter(|l| l.len() > 1) {
        if let Some(sib) = level.get(at ^ 1) {
            out.push(*sib);
        }
        at /= 2;
    }
    out
}

/// Whether `proof` leads from `line`'s leaf in round `round` to `root` (what the contract
/// checks).
pub fn verify(round: u64, line: &Line, proof: &[B256], root: B256) -> bool {
    proof.iter().fold(leaf(round, line), |n, s| parent(n, *s)) == root
}

/// A payout address as a provider gives it: `0x` and 40 hex digits, not the zero address.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let a = crate::anchor::evm::parse_address(s)?;
    if a == Address::ZERO {
        return Err("the zero address burns what is sent to it".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<Line> {
        (0..n)
            .map(|i| Line {
                address: Address::from([i as u8 + 1; 20]),
                amount: 1_000 * (i as u64 + 1),
            })
            .collect()
    }

    #[test]
    fn every_line_of_trees_of_every_shape_proves_and_no_other_does() {
        for n in 1..=17 {
            let ls = lines(n);
            let r = root(9, &ls).unwrap();
            for (i, l) in ls.iter().enumerate() {
                let p = proof(9, &ls, i);
                assert!(verify(9, l, &p, r), "n {n} line {i}");
                // Another amount, another round or another line's proof: no.
                let more = Line {
                    amount: l.amount + 1,
                    ..*l
                };
                assert!(!verify(9, &more, &p, r));
                assert!(!verify(10, l, &p, r));
                if n > 1 {
                    assert!(!verify(9, l, &proof(9, &ls, (i + 1) % n), r));
                }
            }
        }
        assert_eq!(root(1, &[]), None);
    }

    #[test]
    fn a_single_line_is_its_own_root_and_the_leaf_matches_solidity() {
        let l = Line {
            address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
            amount: 1_234_567,
        };
        let r = root(3, &[l]).unwrap();
        assert_eq!(r, leaf(3, &l));
        // keccak256(bytes.concat(keccak256(abi.encode(uint64(3), addr, uint256(1234567)))))
        let inner = keccak256(
            [
                &[0u8; 31][..],
                &[3],
                &[0; 12],
                l.address.as_slice(),
                &[0; 29],
                &1_234_567u32.to_be_bytes()[1..],
            ]
            .concat(),
        );
        assert_eq!(r, keccak256(inner));
    }

    #[test]
    fn addresses_are_checked() {
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").is_ok());
        assert!(parse_address("0x70997970c51812dc3a010c7d01b50e0d17dc79c8").is_ok());
        assert!(parse_address("70997970C51812dc3A010C7d01b50e0d17dc79C8").is_err());
        assert!(parse_address("0x7099").is_err());
        assert!(parse_address(&format!("0x{}", "0".repeat(40))).is_err());
        assert!(parse_address(&format!("0x{}", "g".repeat(40))).is_err());
    }
}
