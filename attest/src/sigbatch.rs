//! Batch verification of ed25519 signatures, coalesced by key.
//!
//! A bundle holds hundreds of records signed by one device, so the batch equation
//!
//! ```text
//! -(sum z_i s_i) B + sum z_i R_i + sum_A (sum_{i signed by A} z_i k_i) A == 0
//! ```
//!
//! (with `k_i = SHA-512(R_i || A_i || M_i) mod l` and random 128-bit `z_i`) needs one point
//! per signature plus one per distinct key, instead of two per signature as in
//! `ed25519_dalek::verify_batch`: about half the multiscalar multiplication. The `z_i` come
//! from SHA-512 over every signature's `R`, `A`, `s` and message hash (so a signer cannot
//! pick them after seeing them) and, with `std`, 32 bytes of operating-system randomness.
//!
//! Like `verify_strict`, it refuses non-canonical `s`, small-order `R` and small-order keys.
//! It may only say "all valid" or "something is invalid"; callers find the bad one with
//! `verify_strict`, one by one.

use alloc::vec::Vec;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use crate::id::PublicKey;

/// One signature to check.
#[derive(Clone, Copy)]
pub struct Item<'a> {
    /// The signed bytes.
    pub message: &'a [u8],
    /// The 64-byte signature `R || s`.
    pub signature: [u8; 64],
    /// The signer's key.
    pub key: &'a PublicKey,
}

/// Whether every signature verifies. `false` says only that at least one does not.
///
/// With `std`, large batches are split over the machine's cores (each part is an
/// independent batch equation with its own random coefficients).
pub fn verify_all(items: &[Item<'_>]) -> bool {
    #[cfg(feature = "std")]
    {
        const MIN_PART: usize = 128;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = cores.min(items.len() / MIN_PART).max(1);
        if parts > 1 {
            let chunk = items.len().div_ceil(parts);
            return std::thread::scope(|scope| {
                let handles: Vec<_> = items
                    .chunks(chunk)
                    .map(|c| scope.spawn(move || verify_one_batch(c)))
                    .collect();
                handles.into_iter().all(|h| h.join().unwrap_or(false))
            });
        }
    }
    verify_one_batch(items)
}

/// [`verify_all`] on the calling thread only, as one batch equation.
pub fn verify_one_batch(items: &[Item<'_>]) -> bool {
    if items.is_empty() {
        return true;
    }
    // Distinct keys, decompressed once.
    let mut keys: Vec<(&PublicKey, EdwardsPoint, Scalar)> = Vec::new();
    let mut key_of: Vec<usize> = Vec::with_capacity(items.len());
    for it in items {
        let idx = match keys.iter().position(|(k, _, _)| *k == it.key) {
            Some(i) => i,
            None => {
                let Some(a) = CompressedEdwardsY(it.key.0).decompress() else {
                    return false;
                };
                if a.is_small_order() {
                    return false;
                }
                keys.push((it.key, a, Scalar::ZERO));
                keys.len() - 1
            }
        };
        key_of.push(idx);
    }

    let mut seed = Sha512::new();
    seed.update(b"heliostat/ed25519-batch/v1");
    #[cfg(feature = "std")]
    {
        let mut noise = [0u8; 32];
        if getrandom::fill(&mut noise).is_ok() {
            seed.update(noise);
        }
    }
    let mut ks = Vec::with_capacity(items.len());
    let mut rs = Vec::with_capacity(items.len());
    let mut ss = Vec::with_capacity(items.len());
    for it in items {
        let (r_bytes, s_bytes) = it.signature.split_at(32);
        let r_bytes: [u8; 32] = r_bytes.try_into().expect("32 bytes");
        let s_bytes: [u8; 32] = s_bytes.try_into().expect("32 bytes");
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        if r.is_small_order() {
            return false;
        }
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(it.key.0);
        h.update(it.message);
        let hram: [u8; 64] = h.finalize().into();
        seed.update(hram);
        seed.update(s_bytes);
        ks.push(Scalar::from_bytes_mod_order_wide(&hram));
        rs.push(r);
        ss.push(s);
    }
    let seed: [u8; 64] = seed.finalize().into();

    let mut b_coeff = Scalar::ZERO;
    let mut zs = Vec::with_capacity(items.len());
    for (i, (s, k)) in ss.iter().zip(&ks).enumerate() {
        let mut h = Sha512::new();
        h.update(seed);
        h.update((i as u64).to_le_bytes());
        let out = h.finalize();
        let mut z = [0u8; 32];
        z[..16].copy_from_slice(&out[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        b_coeff += z * s;
        keys[key_of[i]].2 += z * k;
        zs.push(z);
    }

    let scalars = core::iter::once(-b_coeff)
        .chain(zs)
        .chain(keys.iter().map(|(_, _, c)| *c));
    let points = core::iter::once(ED25519_BASEPOINT_POINT)
        .chain(rs)
        .chain(keys.iter().map(|(_, a, _)| *a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::KeyPair;
    use alloc::vec;

    fn signed(n: usize) -> (Vec<KeyPair>, Vec<Vec<u8>>, Vec<[u8; 64]>) {
        let keys: Vec<KeyPair> = (0..n)
            .map(|i| KeyPair::from_seed(&[(i % 3) as u8 + 1; 32]))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i + 1]).collect();
        let sigs = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        (keys, msgs, sigs)
    }

    fn items<'a>(pks: &'a [PublicKey], msgs: &'a [Vec<u8>], sigs: &[[u8; 64]]) -> Vec<Item<'a>> {
        (0..msgs.len())
            .map(|i| Item {
                message: &msgs[i],
                signature: sigs[i],
                key: &pks[i],
            })
            .collect()
    }

    #[test]
    fn valid_signatures_from_several_keys_pass_and_any_bad_one_fails_the_batch() {
        let (keys, msgs, sigs) = signed(40);
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        assert!(verify_all(&items(&pks, &msgs, &sigs)));
        assert!(verify_all(&[]));
        for i in [0, 17, 39] {
            let mut bad = sigs.clone();
            bad[i][5] ^= 1; // R
            assert!(
                !verify_all(&items(&pks, &msgs, &bad)),
                "bad R at {i} passed"
            );
            let mut bad = sigs.clone();
            bad[i][40] ^= 1; // s
            assert!(
                !verify_all(&items(&pks, &msgs, &bad)),
                "bad s at {i} passed"
            );
            let mut msgs2 = msgs.clone();
            msgs2[i][0] ^= 1;
            assert!(
                !verify_all(&items(&pks, &msgs2, &sigs)),
                "changed message at {i} passed"
            );
            let mut pks2 = pks.clone();
            pks2[i] = KeyPair::from_seed(&[99; 32]).public();
            assert!(
                !verify_all(&items(&pks2, &msgs, &sigs)),
                "wrong key at {i} passed"
            );
        }
    }

    #[test]
    fn two_wrong_signatures_that_cancel_out_under_one_key_still_fail() {
        // Swap the s halves of two signatures by the same key: each is invalid, and a batch
        // with fixed coefficients could balance them; random z_i must not.
        let (keys, msgs, sigs) = signed(6);
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let mut bad = sigs.clone();
        let (a, b) = (0, 3); // same key (i % 3)
        let sa: [u8; 32] = bad[a][32..].try_into().unwrap();
        let sb: [u8; 32] = bad[b][32..].try_into().unwrap();
        bad[a][32..].copy_from_slice(&sb);
        bad[b][32..].copy_from_slice(&sa);
        assert!(!verify_all(&items(&pks, &msgs, &bad)));
    }

    #[test]
    fn a_non_canonical_s_is_refused_like_verify_strict_does() {
        let (keys, msgs, sigs) = signed(1);
        let pks = [keys[0].public()];
        let mut bad = sigs.clone();
        // s + l is the same scalar mod l but not canonical.
        // l = 2^252 + 27742317777372353535851937790883648493, little-endian (RFC 8032).
        let l: [u8; 32] = crate::hex::decode_array(
            "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
        )
        .unwrap();
        let mut carry = 0u16;
        for j in 0..32 {
            let v = bad[0][32 + j] as u16 + l[j] as u16 + carry;
            bad[0][32 + j] = v as u8;
            carry = v >> 8;
        }
        assert!(!verify_all(&items(&pks, &msgs, &bad)));
    }
}
