//! Merkle trees per RFC 6962 section 2.1 (SHA-256, domain-separated leaf and node hashes),
//! with inclusion and consistency proofs; verification follows RFC 9162 sections 2.1.3.2
//! and 2.1.4.2.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::hash::Hash32;

/// Longest proof any tree of up to 2^64 leaves needs.
pub const MAX_PROOF_LEN: usize = 64;

/// `SHA-256(0x00 || data)`: the hash of a leaf (RFC 6962 section 2.1).
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    Hash32::digest_parts(&[&[0x00], data])
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    Hash32::digest_parts(&[&[0x01], &left.0, &right.0])
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The proof has the wrong number of hashes for the sizes.
    #[error("proof has the wrong length for these tree sizes")]
    WrongProofLength,
    /// The recomputed root differs from the one claimed.
    #[error("recomputed root does not match")]
    RootMismatch,
    /// A consistency proof between sizes that are not in order (or from an empty tree).
    #[error("no consistency proof from size {size1} to {size2}")]
    BadSizes { size1: u64, size2: u64 },
}

/// A tree head: a root together with the number of leaves it was computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// The root hash (`SHA-256("")` for the empty tree).
    pub root: Hash32,
}

/// An audit path for one leaf (RFC 6962 section 2.1.1), siblings from the leaf upward.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The leaf's index, from 0.
    pub leaf_index: u64,
    /// The size of the tree the path is for.
    pub tree_size: u64,
    /// Sibling hashes from the leaf up.
    pub path: Vec<Hash32>,
}

/// A consistency proof between two sizes of one append-only tree (RFC 6962 section 2.1.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub size1: u64,
    /// The newer size.
    pub size2: u64,
    /// The proof hashes.
    pub path: Vec<Hash32>,
}

fn is_pow2(n: u64) -> bool {
    n != 0 && n & (n - 1) == 0
}

/// The largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

impl TreeHead {
    /// The head of a tree over `leaves` (already leaf-hashed), computed in one pass with a
    /// stack of perfect subtrees: O(n) hashes, O(log n) memory.
    pub fn from_leaf_hashes<'a>(leaves: impl IntoIterator<Item = &'a Hash32>) -> TreeHead {
        let mut stack: Vec<(u64, Hash32)> = Vec::with_capacity(64);
        let mut size = 0u64;
        for l in leaves {
            let mut node = (1u64, *l);
            while let Some(&(n, h)) = stack.last() {
                if n != node.0 {
                    break;
                }
                stack.pop();
                node = (n * 2, node_hash(&h, &node.1));
            }
            stack.push(node);
            size += 1;
        }
        let root = match stack.pop() {
            None => Hash32::digest(&[]),
            Some((_, mut r)) => {
                while let Some((_, h)) = stack.pop() {
                    r = node_hash(&h, &r);
                }
                r
            }
        };
        TreeHead { size, root }
    }

    /// Checks that `leaf` (the leaf's data hash, see [`leaf_hash`]) is in this tree.
    pub fn verify_inclusion(
        &self,
        leaf: &Hash32,
        proof: &InclusionProof,
    ) -> Result<(), MerkleError> {
        if proof.tree_size != self.size {
            return Err(MerkleError::WrongProofLength);
        }
        let root = root_from_inclusion(leaf, proof)?;
        if root != self.root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(())
    }

    /// Checks that `newer` extends this tree (RFC 9162 section 2.1.4.2).
    pub fn verify_consistency(
        &self,
        newer: &TreeHead,
        proof: &ConsistencyProof,
    ) -> Result<(), MerkleError> {
        let (size1, size2) = (self.size, newer.size);
        if proof.size1 != size1 || proof.size2 != size2 {
            return Err(MerkleError::WrongProofLength);
        }
        if size1 == 0 || size1 > size2 {
            return Err(MerkleError::BadSizes { size1, size2 });
        }
        if size1 == size2 {
            if !proof.path.is_empty() {
                return Err(MerkleError::WrongProofLength);
            }
            return if self.root == newer.root {
                Ok(())
            } else {
                Err(MerkleError::RootMismatch)
            };
        }
        if proof.path.is_empty() || proof.path.len() > MAX_PROOF_LEN {
            return Err(MerkleError::WrongProofLength);
        }
        let mut path: Vec<Hash32> = Vec::with_capacity(proof.path.len() + 1);
        if is_pow2(size1) {
            path.push(self.root);
        }
        path.extend_from_slice(&proof.path);
        let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        let (mut fr, mut sr) = (path[0], path[0]);
        for c in &path[1..] {
            if sn == 0 {
                return Err(MerkleError::WrongProofLength);
            }
            if fn_ & 1 == 1 || fn_ == sn {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        if sn != 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fr != self.root || sr != newer.root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(())
    }
}

/// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2).
pub fn root_from_inclusion(leaf: &Hash32, proof: &InclusionProof) -> Result<Hash32, MerkleError> {
    let (index, size) = (proof.leaf_index, proof.tree_size);
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    if proof.path.len() > MAX_PROOF_LEN {
        return Err(MerkleError::WrongProofLength);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in &proof.path {
        if sn == 0 {
            return Err(MerkleError::WrongProofLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::WrongProofLength);
    }
    Ok(r)
}

/// Verifies many inclusion proofs against one tree head, sharing work: a node that an
/// earlier proof already tied to the root ends the walk for later proofs that reach it, so
/// `n` neighbouring leaves cost about `2n` hashes instead of `n log n`.
#[derive(Debug)]
pub struct InclusionChecker {
    head: TreeHead,
    /// (level, index) -> node hash, for nodes proven to lead to the root.
    known: NodeMap,
}

/// Node positions are small integers: with std a hash map with a multiply-shift hash is
/// several times faster than a B-tree here; without std the B-tree does.
#[cfg(feature = "std")]
type NodeMap =
    std::collections::HashMap<(u32, u64), Hash32, core::hash::BuildHasherDefault<PositionHasher>>;
#[cfg(not(feature = "std"))]
type NodeMap = alloc::collections::BTreeMap<(u32, u64), Hash32>;

/// A fast hasher for node positions (not for untrusted keys chosen to collide: positions
/// come from proofs whose length is bounded, so the worst case is a slow bundle, not a DoS).
#[cfg(feature = "std")]
#[derive(Default)]
struct PositionHasher(u64);

#[cfg(feature = "std")]
impl core::hash::Hasher for PositionHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl InclusionChecker {
    /// A checker for proofs against `head`.
    pub fn new(head: TreeHead) -> InclusionChecker {
        InclusionChecker {
            head,
            known: Default::default(),
        }
    }

    /// Checks one leaf hash with its proof; same verdicts as [`TreeHead::verify_inclusion`].
    pub fn verify(&mut self, leaf: &Hash32, proof: &InclusionProof) -> Result<(), MerkleError> {
        if proof.tree_size != self.head.size {
            return Err(MerkleError::WrongProofLength);
        }
        let (index, size) = (proof.leaf_index, proof.tree_size);
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        if proof.path.len() != expected_path_len(index, size) {
            return Err(MerkleError::WrongProofLength);
        }
        // The RFC 9162 walk, tracking where each node sits in the tree kept level by level
        // (a lone last node is carried up: shifts without hashing). Once the walk meets a node
        // an earlier proof tied to the root, it stops hashing but still checks every later
        // sibling against the ones that proof used, so a padded or altered path is refused.
        let (mut fn_, mut sn, mut level) = (index, size - 1, 0u32);
        let mut r = *leaf;
        let mut proven = false;
        let mut seen: Vec<((u32, u64), Hash32)> = Vec::with_capacity(2 * proof.path.len());
        let meet = |pos: (u32, u64), r: &Hash32, proven: &mut bool, seen: &mut Vec<_>| {
            if *proven {
                return Ok(());
            }
            match self.known.get(&pos) {
                Some(k) if k != r => Err(MerkleError::RootMismatch),
                Some(_) => {
                    *proven = true;
                    Ok(())
                }
                None => {
                    seen.push((pos, *r));
                    Ok(())
                }
            }
        };
        for p in &proof.path {
            meet((level, fn_), &r, &mut proven, &mut seen)?;
            let left = fn_ & 1 == 1 || fn_ == sn;
            if left {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                    level += 1;
                    meet((level, fn_), &r, &mut proven, &mut seen)?;
                }
            }
            let sibling = (level, if left { fn_.wrapping_sub(1) } else { fn_ + 1 });
            match self.known.get(&sibling) {
                Some(k) if k != p => return Err(MerkleError::RootMismatch),
                Some(_) => {}
                None if proven => return Err(MerkleError::RootMismatch),
                None => seen.push((sibling, *p)),
            }
            if !proven {
                r = if left {
                    node_hash(p, &r)
                } else {
                    node_hash(&r, p)
                };
            }
            fn_ >>= 1;
            sn >>= 1;
            level += 1;
        }
        if !proven && r != self.head.root {
            return Err(MerkleError::RootMismatch);
        }
        self.known.extend(seen);
        Ok(())
    }
}

/// How many hashes an inclusion proof for `index` in a tree of `size` leaves has.
fn expected_path_len(index: u64, size: u64) -> usize {
    let (mut fn_, mut sn, mut n) = (index, size - 1, 0);
    while sn != 0 {
        if fn_ & 1 == 1 || fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        fn_ >>= 1;
        sn >>= 1;
        n += 1;
    }
    n
}

/// A whole tree kept level by level, for producing proofs. Level 0 holds the leaf hashes;
/// a level's last node without a sibling is carried up unchanged, which gives exactly the
/// RFC 6962 shape (the left subtree is always the largest perfect one).
#[derive(Clone, Debug)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree over leaf data.
    pub fn from_leaves<T: AsRef<[u8]>>(leaves: &[T]) -> MerkleTree {
        Self::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// Builds the tree over leaf hashes.
    pub fn from_leaf_hashes(leaves: Vec<Hash32>) -> MerkleTree {
        let mut levels = alloc::vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("non-empty");
            let mut up = Vec::with_capacity(below.len().div_ceil(2));
            for pair in below.chunks(2) {
                up.push(match pair {
                    [l, r] => node_hash(l, r),
                    [lone] => *lone,
                    _ => unreachable!("chunks(2)"),
                });
            }
            levels.push(up);
        }
        MerkleTree { levels }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The tree head.
    pub fn head(&self) -> TreeHead {
        let root = match self.levels.last().and_then(|l| l.first()) {
            Some(r) if self.size() > 0 => *r,
            _ => Hash32::digest(&[]),
        };
        TreeHead {
            size: self.size(),
            root,
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash32> {
        self.levels[0].get(usize::try_from(index).ok()?).copied()
    }

    /// The audit path of leaf `index`.
    pub fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, MerkleError> {
        let size = self.size();
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let mut path = Vec::new();
        let mut i = index as usize;
        for level in &self.levels[..self.levels.len() - 1] {
            let sib = i ^ 1;
            if sib < level.len() {
                path.push(level[sib]);
            }
            i >>= 1;
        }
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            path,
        })
    }

    /// The root of leaves `[lo, hi)` (RFC 6962's MTH of that range), using stored perfect
    /// subtrees where the range is aligned.
    fn subtree_root(&self, lo: u64, hi: u64) -> Hash32 {
        let n = hi - lo;
        if n == 1 {
            return self.levels[0][lo as usize];
        }
        if is_pow2(n) && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(lo >> level) as usize];
        }
        let k = split_point(n);
        node_hash(
            &self.subtree_root(lo, lo + k),
            &self.subtree_root(lo + k, hi),
        )
    }

    /// A consistency proof from the first `size1` leaves to the first `size2` leaves.
    pub fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<ConsistencyProof, MerkleError> {
        if size1 == 0 || size1 > size2 || size2 > self.size() {
            return Err(MerkleError::BadSizes { size1, size2 });
        }
        let mut path = Vec::new();
        self.subproof(size1, 0, size2, true, &mut path);
        Ok(ConsistencyProof { size1, size2, path })
    }

    /// RFC 6962 section 2.1.2 SUBPROOF(m, D[lo:hi], b).
    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<Hash32>) {
        let n = hi - lo;
        if m == n {
            if !b {
                out.push(self.subtree_root(lo, hi));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, b, out);
            out.push(self.subtree_root(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.subtree_root(lo, lo + k));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Vectors from the Certificate Transparency reference tests:
    //! google/certificate-transparency `cpp/merkletree/merkle_tree_test.cc`
    //! (commit 0e901cacd1388fa16f78b184612f6cd16e5ceec1) and transparency-dev/merkle
    //! `testonly/constants.go` and `proof/verify_test.go`
    //! (commit 9ca563d3ac2bab915317cf153ed4f952f6e74c07). The 8 leaves, the roots for every
    //! size 0..=8, the audit paths and the consistency proofs below are copied from there.
    use super::*;
    use alloc::vec;

    fn h(s: &str) -> Hash32 {
        Hash32::from_hex(s).unwrap()
    }

    fn leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| crate::hex::decode(s).unwrap())
        .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn head(size: u64) -> TreeHead {
        TreeHead {
            size,
            root: h(ROOTS[size as usize]),
        }
    }

    #[test]
    fn roots_match_the_certificate_transparency_vectors_for_every_size() {
        let l = leaves();
        for n in 0..=8usize {
            let hashes: Vec<Hash32> = l[..n].iter().map(|d| leaf_hash(d)).collect();
            assert_eq!(
                TreeHead::from_leaf_hashes(&hashes).root,
                h(ROOTS[n]),
                "streaming, size {n}"
            );
            assert_eq!(
                MerkleTree::from_leaves(&l[..n]).head().root,
                h(ROOTS[n]),
                "levels, size {n}"
            );
        }
    }

    #[test]
    fn inclusion_paths_match_the_vectors_and_verify() {
        // (0-based leaf index, tree size, path)
        let cases: Vec<(u64, u64, Vec<&str>)> = vec![
            (0, 1, vec![]),
            (
                0,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                vec![
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let l = leaves();
        for (index, size, path) in cases {
            let tree = MerkleTree::from_leaves(&l[..size as usize]);
            let proof = tree.inclusion_proof(index).unwrap();
            let want: Vec<Hash32> = path.iter().map(|s| h(s)).collect();
            assert_eq!(proof.path, want, "path for leaf {index} of {size}");
            let leaf = leaf_hash(&l[index as usize]);
            head(size).verify_inclusion(&leaf, &proof).unwrap();
            // The wrong leaf, a changed node or a wrong index must fail.
            assert!(
                head(size)
                    .verify_inclusion(&leaf_hash(b"other"), &proof)
                    .is_err()
            );
            if !proof.path.is_empty() {
                let mut bad = proof.clone();
                bad.path[0].0[0] ^= 1;
                assert_eq!(
                    head(size).verify_inclusion(&leaf, &bad),
                    Err(MerkleError::RootMismatch)
                );
                let mut short = proof.clone();
                short.path.pop();
                assert!(head(size).verify_inclusion(&leaf, &short).is_err());
            }
            let mut moved = proof.clone();
            moved.leaf_index = size;
            assert!(matches!(
                head(size).verify_inclusion(&leaf, &moved),
                Err(MerkleError::IndexOutOfRange { .. })
            ));
        }
    }

    #[test]
    fn consistency_proofs_match_the_vectors_and_verify() {
        let cases: Vec<(u64, u64, Vec<&str>)> = vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let tree = MerkleTree::from_leaves(&leaves());
        for (s1, s2, path) in cases {
            let proof = tree.consistency_proof(s1, s2).unwrap();
            let want: Vec<Hash32> = path.iter().map(|s| h(s)).collect();
            assert_eq!(proof.path, want, "proof {s1} -> {s2}");
            head(s1).verify_consistency(&head(s2), &proof).unwrap();
            if !proof.path.is_empty() {
                let mut bad = proof.clone();
                bad.path[0].0[31] ^= 0x80;
                assert!(head(s1).verify_consistency(&head(s2), &bad).is_err());
                let wrong_new = TreeHead {
                    size: s2,
                    root: h(ROOTS[0]),
                };
                assert!(head(s1).verify_consistency(&wrong_new, &proof).is_err());
            }
        }
        // Negative cases from the same test suites.
        let empty = |a, b| ConsistencyProof {
            size1: a,
            size2: b,
            path: vec![],
        };
        assert!(head(1).verify_consistency(&head(0), &empty(1, 0)).is_err());
        assert!(head(2).verify_consistency(&head(1), &empty(2, 1)).is_err());
        assert!(head(1).verify_consistency(&head(2), &empty(1, 2)).is_err());
        assert!(head(0).verify_consistency(&head(1), &empty(0, 1)).is_err());
        let diff = TreeHead {
            size: 1,
            root: h(ROOTS[2]),
        };
        assert!(head(1).verify_consistency(&diff, &empty(1, 1)).is_err());
    }

    #[test]
    fn the_shared_work_checker_agrees_with_single_proofs() {
        let data: Vec<[u8; 4]> = (0u32..70).map(|i| i.to_le_bytes()).collect();
        for n in 1..=data.len() {
            let tree = MerkleTree::from_leaves(&data[..n]);
            let mut c = InclusionChecker::new(tree.head());
            for i in (0..n as u64).rev().chain(0..n as u64) {
                let proof = tree.inclusion_proof(i).unwrap();
                assert_eq!(proof.path.len(), expected_path_len(i, n as u64));
                c.verify(&tree.leaf(i).unwrap(), &proof)
                    .unwrap_or_else(|e| panic!("n={n} i={i}: {e}"));
                // A wrong leaf, a wrong node or a padded path is refused even when the walk
                // meets nodes already known.
                assert!(c.verify(&leaf_hash(b"x"), &proof).is_err());
                if let Some(first) = proof.path.first() {
                    let mut bad = proof.clone();
                    bad.path[0] = node_hash(first, first);
                    assert!(c.verify(&tree.leaf(i).unwrap(), &bad).is_err());
                }
                let mut long = proof.clone();
                long.path.push(Hash32::ZERO);
                assert_eq!(
                    c.verify(&tree.leaf(i).unwrap(), &long),
                    Err(MerkleError::WrongProofLength)
                );
            }
        }
    }

    #[test]
    fn every_proof_of_larger_trees_verifies() {
        let data: Vec<[u8; 4]> = (0u32..70).map(|i| i.to_le_bytes()).collect();
        for n in 1..=data.len() {
            let tree = MerkleTree::from_leaves(&data[..n]);
            let hd = tree.head();
            let hashes: Vec<Hash32> = data[..n].iter().map(|d| leaf_hash(d)).collect();
            assert_eq!(TreeHead::from_leaf_hashes(&hashes), hd);
            for i in 0..n as u64 {
                hd.verify_inclusion(&tree.leaf(i).unwrap(), &tree.inclusion_proof(i).unwrap())
                    .unwrap();
            }
            for m in 1..=n as u64 {
                let old = MerkleTree::from_leaves(&data[..m as usize]).head();
                old.verify_consistency(&hd, &tree.consistency_proof(m, n as u64).unwrap())
                    .unwrap();
            }
        }
    }
}
