//! Fuzzer-chosen inclusion and consistency proofs against a real tree: only genuine proofs verify.
#![no_main]
use libfuzzer_sys::fuzz_target;

use attest::Hash32;
use attest::merkle::{ConsistencyProof, InclusionProof, MerkleTree};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let n = (data[0] as usize % 40) + 1;
    let leaves: Vec<[u8; 1]> = (0..n as u8).map(|i| [i]).collect();
    let tree = MerkleTree::from_leaves(&leaves);
    let head = tree.head();
    let index = data[1] as u64;
    let path: Vec<Hash32> = data[3..]
        .chunks_exact(32)
        .take(70)
        .map(|c| Hash32(c.try_into().expect("32 bytes")))
        .collect();
    let leaf = tree.leaf(index % n as u64).expect("in range");
    let proof = InclusionProof { leaf_index: index, tree_size: data[2] as u64, path: path.clone() };
    if head.verify_inclusion(&leaf, &proof).is_ok() {
        assert_eq!(proof, tree.inclusion_proof(index).expect("index verified"));
    }
    let size1 = (data[2] as u64 % n as u64) + 1;
    let old = MerkleTree::from_leaves(&leaves[..size1 as usize]).head();
    let cp = ConsistencyProof { size1, size2: n as u64, path };
    if old.verify_consistency(&head, &cp).is_ok() {
        assert_eq!(cp, tree.consistency_proof(size1, n as u64).expect("sizes verified"));
    }
});
