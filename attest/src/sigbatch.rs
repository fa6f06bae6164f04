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
//! Both paths use the cofactored equation (RFC 8032 section 5.1.7 allows it; this is
//! what ZIP-215 calls it): the batch checks `[8](...) == 0`, and the single check,
//! [`verify_one`] (what [`crate::Envelope::verify`] calls), checks `[8]([s]B - R - [k]A) ==
//! 0` rather than dalek's cofactorless `verify_strict`. Small-order components of `R` or
//! `A` then cancel in both, so both accept exactly the same signatures (except with
//! probability about 2^-128 for the random `z_i`). Before, the batch was cofactorless with
//! random `z_i` and the single check was `verify_strict`: an `R` with a small-order
//! component failed the single check but passed the batch for one draw of `z_i` in eight,
//! so one bundle could verify or not depending on the path. Both paths also require `s`
//! canonical, and `R` and the key canonical encodings of points not of small order
//! ([`strict_point`]). It may only say "all valid" or "something is invalid"; callers find
//! the bad one with the single check, one by one.

use alloc::boxed::Box;
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
/// a canonical encoding (`y < p`; a zero `x` with the sign bit set names a small-order
/// point, refused anyway) of a point not of small order. Both signature paths require it.
pub fn strict_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_y(bytes) {
        return None;
    }
    let p = CompressedEdwardsY(*bytes).decompress()?;
    (!p.is_small_order()).then_some(p)
}

/// Whether the low 255 bits (y) are below `p = 2^255 - 19`: the 19 encodings of `y` in
/// `p..2^255` name the same points as `0..19` and are refused.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    bytes[31] & 0x7f != 0x7f || bytes[1..31].iter().any(|&b| b != 0xff) || bytes[0] < 0xed
}

/// `k = SHA-512(R || A || M) mod l`.
fn challenge(r: &[u8; 32], key: &PublicKey, message: &[u8]) -> ([u8; 64], Scalar) {
    let mut h = Sha512::new();
    h.update(r);
    h.update(key.0);
    h.update(message);
    let hram: [u8; 64] = h.finalize().into();
    (hram, Scalar::from_bytes_mod_order_wide(&hram))
}

/// The single check: [`strict_point`] on the key and on `R`, a canonical `s`, then the
/// cofactored equation `[8]([s]B - [k]A - R) == 0`. Accepts exactly what [`verify_all`]
/// accepts.
pub fn verify_one(
    message: &[u8],
    signature: &[u8; 64],
    key: &PublicKey,
) -> Result<(), crate::envelope::SignatureError> {
    use crate::envelope::SignatureError;
    let a = strict_point(&key.0).ok_or(SignatureError::BadKey)?;
    let r_bytes: [u8; 32] = signature[..32].try_into().expect("32 bytes");
    let s_bytes: [u8; 32] = signature[32..].try_into().expect("32 bytes");
    let r = strict_point(&r_bytes).ok_or(SignatureError::BadSignature)?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
        .ok_or(SignatureError::BadSignature)?;
    let (_, k) = challenge(&r_bytes, key, message);
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(-k), &a, &s);
    if (sb_minus_ka - r).mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(SignatureError::BadSignature)
    }
}

/// Checks the signatures of decoded chain messages, each under the given key, which must be
/// the key of the device the message names (ids derive from keys): in one batch, and one by
/// one only when the batch fails. Each comes back [`crate::Verified`], or with why not.
pub fn verify_messages(
    items: Vec<(crate::Envelope, crate::msg::ChainMessage, &PublicKey)>,
) -> Vec<Result<crate::Verified<crate::msg::ChainMessage>, Box<Unverified>>> {
    use crate::envelope::SignatureError;
    let batch: Vec<Item<'_>> = items
        .iter()
        .map(|(env, _, key)| Item {
            message: env.signed_bytes(),
            signature: env.signature(),
            key,
        })
        .collect();
    let all_good = verify_all(&batch);
    drop(batch);
    items
        .into_iter()
        .map(|(env, msg, key)| {
            if key.device_id() != msg.link().device {
                return Err(Box::new(Unverified {
                    envelope: env,
                    message: msg,
                    error: SignatureError::BadKey,
                }));
            }
            let ok = all_good || verify_one(env.signed_bytes(), &env.signature(), key).is_ok();
            if ok {
                Ok(crate::Verified::assume_signature_checked(env, msg))
            } else {
                Err(Box::new(Unverified {
                    envelope: env,
                    message: msg,
                    error: SignatureError::BadSignature,
                }))
            }
        })
        .collect()
}

/// A chain message whose signature did not verify, with why.
#[derive(Debug)]
pub struct Unverified {
    /// The envelope as received.
    pub envelope: crate::Envelope,
    /// Its decoded payload.
    pub message: crate::msg::ChainMessage,
    /// Why.
    pub error: crate::envelope::SignatureError,
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
        let (hram, k) = challenge(&r_bytes, it.key, it.message);
        seed.update(hram);
        seed.update(s_bytes);
        ks.push(k);
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
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
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

    /// A key `aB + T` with an order-8 `T`, and a signature by it over `msg` (`k` over that
    /// key's bytes, `s = r + k a`): the cofactorless equation misses by `[k]T` (seven times
    /// in eight), the cofactored one holds.
    fn mixed_order_key_signature(msg: &[u8]) -> (PublicKey, [u8; 64]) {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let a = Scalar::from_bytes_mod_order([7u8; 32]);
        let key = PublicKey(
            (ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1])
                .compress()
                .0,
        );
        let r = Scalar::from_bytes_mod_order([0x5a; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r).compress();
        let (_, k) = challenge(&big_r.0, &key, msg);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice((r + k * a).as_bytes());
        (key, sig)
    }

    /// Both paths, many times (the batch's coefficients are random).
    fn both_paths(msg: &[u8], sig: [u8; 64], key: &PublicKey) -> (bool, Vec<bool>) {
        let single = verify_one(msg, &sig, key).is_ok();
        let batch = (0..64)
            .map(|_| {
                verify_one_batch(&[Item {
                    message: msg,
                    signature: sig,
                    key,
                }])
            })
            .collect();
        (single, batch)
    }

    #[test]
    fn an_r_with_a_small_order_component_gets_one_answer_from_both_paths_every_time() {
        let key = KeyPair::from_seed(&[3; 32]);
        let pk = key.public();
        let msg = b"a record".to_vec();
        let sig = key.sign_with_torsioned_r(&msg);
        // dalek's cofactorless single check refuses it; the old batch let it through for
        // one draw of coefficients in eight.
        let vk = pk.verifying_key().unwrap();
        assert!(
            vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_err()
        );
        let (single, batch) = both_paths(&msg, sig, &pk);
        assert!(single, "the cofactored single check accepts it");
        assert!(batch.iter().all(|b| *b == single), "{batch:?}");
        // With the message changed, both refuse it, every time.
        let (single, batch) = both_paths(b"another record", sig, &pk);
        assert!(!single);
        assert!(batch.iter().all(|b| !b), "{batch:?}");
    }

    #[test]
    fn a_key_with_a_small_order_component_gets_one_answer_from_both_paths() {
        for i in 0u8..16 {
            let msg = [i; 8];
            let (key, sig) = mixed_order_key_signature(&msg);
            let (single, batch) = both_paths(&msg, sig, &key);
            assert!(single, "message {i}");
            assert!(batch.iter().all(|b| *b), "message {i}: {batch:?}");
            let mut bad = sig;
            bad[40] ^= 1;
            let (single, batch) = both_paths(&msg, bad, &key);
            assert!(!single && batch.iter().all(|b| !b), "message {i}");
        }
    }

    #[test]
    fn only_a_signature_by_the_device_a_message_names_makes_it_verified() {
        let mut dev = crate::sample::SampleDevice::new(1);
        let other = KeyPair::from_seed(&[2; 32]).public();
        let own = dev.key.public();
        let env = dev.record_at(crate::sample::SAMPLE_START.0);
        let msg = crate::msg::ChainMessage::open(&env).unwrap();
        let mut forged = env.as_bytes().to_vec();
        let n = forged.len();
        forged[n - 1] ^= 1;
        let forged = crate::Envelope::decode(&forged).unwrap();
        let out = verify_messages(vec![
            (env.clone(), msg.clone(), &own),
            (env.clone(), msg.clone(), &other),
            (forged, msg, &own),
        ]);
        assert!(out[0].is_ok());
        assert_eq!(
            out[1].as_ref().unwrap_err().error,
            crate::envelope::SignatureError::BadKey,
            "another key, even one that signed it, does not vouch for this device"
        );
        assert_eq!(
            out[2].as_ref().unwrap_err().error,
            crate::envelope::SignatureError::BadSignature
        );
    }

    #[test]
    fn small_order_and_non_canonical_points_are_refused_by_both_paths() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let key = KeyPair::from_seed(&[4; 32]);
        let msg = b"m".to_vec();
        let good = key.sign(&msg);
        // A small-order key (weak key) and a small-order R.
        let weak = PublicKey(EIGHT_TORSION[1].compress().0);
        assert!(!both_paths(&msg, good, &weak).0);
        assert!(both_paths(&msg, good, &weak).1.iter().all(|b| !b));
        let mut small_r = good;
        small_r[..32].copy_from_slice(&EIGHT_TORSION[2].compress().0);
        let (single, batch) = both_paths(&msg, small_r, &key.public());
        assert!(!single && batch.iter().all(|b| !b));
        // A non-canonical y (p + 1 names the same point as 1).
        let mut p_plus_1 = [0xff; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        assert!(strict_point(&p_plus_1).is_none());
        assert!(strict_point(&key.public().0).is_some());
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
