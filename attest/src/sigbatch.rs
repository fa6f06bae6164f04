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
//! Before the equation, every `R` and every key must pass [`strict_point`]: a canonical
//! encoding of a point in the prime-order subgroup (torsion-free) that is not of small
//! order; `s` must be canonical. [`crate::Envelope::verify`], the single check, requires the
//! same of `R` and `A` and then `verify_strict`'s cofactorless equation. For torsion-free
//! points the batch and the single equations hold together, so both paths accept exactly the
//! same signatures (except with probability 2^-128 for the random `z_i`); without the
//! torsion check an `R` with a small-order component could pass the batch for one draw of
//! `z_i` in eight and fail the single check. It may only say "all valid" or "something is
//! invalid"; callers find the bad one with the single check, one by one.

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

/// The point an encoding names, if the protocol accepts it as a signature's `R` or a key:
/// the canonical encoding (the same 32 bytes come back from compressing it), not of small
/// order, and torsion-free (in the prime-order subgroup). Both signature paths require it.
pub fn strict_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let p = CompressedEdwardsY(*bytes).decompress()?;
    let ok = p.compress().to_bytes() == *bytes && !p.is_small_order() && p.is_torsion_free();
    ok.then_some(p)
}

/// The single check: [`strict_point`] on the key and on `R`, then ed25519's strict
/// cofactorless equation (`verify_strict`: canonical `s`, `R` recomputed and compared
/// byte for byte). Accepts exactly what [`verify_all`] accepts.
pub fn verify_one(
    message: &[u8],
    signature: &[u8; 64],
    key: &PublicKey,
) -> Result<(), crate::envelope::SignatureError> {
    use crate::envelope::SignatureError;
    strict_point(&key.0).ok_or(SignatureError::BadKey)?;
    let vk = key.verifying_key().map_err(|_| SignatureError::BadKey)?;
    let r: &[u8; 32] = signature[..32].try_into().expect("32 bytes");
    strict_point(r).ok_or(SignatureError::BadSignature)?;
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    vk.verify_strict(message, &sig)
        .map_err(|_| SignatureError::BadSignature)
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
                let Some(a) = strict_point(&it.key.0) else {
                    return false;
                };
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
        let Some(r) = strict_point(&r_bytes) else {
            return false;
        };
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

    /// `aB + T` for an order-8 `T`: a key with a small-order component, and a signature by
    /// it over some `msg` that dalek's `verify_strict` accepts (its `k` is a multiple of 8,
    /// found by trying messages), with the message.
    fn mixed_order_key_and_accepted_signature() -> (PublicKey, Vec<u8>, [u8; 64]) {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let a = Scalar::from_bytes_mod_order([7u8; 32]);
        let big_a = (ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1]).compress();
        let key = PublicKey(big_a.to_bytes());
        for i in 0u32.. {
            let msg = i.to_le_bytes().to_vec();
            let r = Scalar::from_bytes_mod_order([i as u8 ^ 0x5a; 32]) + Scalar::ONE;
            let big_r = (ED25519_BASEPOINT_POINT * r).compress();
            let mut h = Sha512::new();
            h.update(big_r.as_bytes());
            h.update(key.0);
            h.update(&msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let s = r + k * a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(big_r.as_bytes());
            sig[32..].copy_from_slice(s.as_bytes());
            let vk = key.verifying_key().unwrap();
            if vk
                .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_ok()
            {
                return (key, msg, sig);
            }
        }
        unreachable!()
    }

    #[test]
    fn a_key_with_a_small_order_component_is_refused_by_both_checks() {
        let (key, msg, sig) = mixed_order_key_and_accepted_signature();
        let item = [Item {
            message: &msg,
            signature: sig,
            key: &key,
        }];
        assert!(!verify_all(&item), "batch accepted a mixed-order key");
        assert_eq!(
            verify_one(&msg, &sig, &key),
            Err(crate::envelope::SignatureError::BadKey)
        );
    }

    #[test]
    fn an_r_with_a_small_order_component_is_refused_by_both_checks_every_time() {
        let key = KeyPair::from_seed(&[3; 32]);
        let pk = key.public();
        let msg = b"a record".to_vec();
        let sig = key.sign_with_torsioned_r(&msg);
        assert_eq!(
            verify_one(&msg, &sig, &pk),
            Err(crate::envelope::SignatureError::BadSignature)
        );
        // Before the torsion check, the batch equation held for one z in eight.
        for run in 0..64 {
            let item = [Item {
                message: &msg,
                signature: sig,
                key: &pk,
            }];
            assert!(!verify_one_batch(&item), "batch accepted it in run {run}");
        }
        // And a good signature still passes both.
        let good = key.sign(&msg);
        assert!(verify_one(&msg, &good, &pk).is_ok());
        let item = [Item {
            message: &msg,
            signature: good,
            key: &pk,
        }];
        assert!(verify_all(&item));
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
