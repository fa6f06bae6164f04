//! Identity: ed25519 key pairs and the self-certifying device id.
//!
//! A [`DeviceId`] is the first 16 bytes of `SHA-256("heliostat/device-id/v1" || public key)`,
//! so anyone holding a device's public key can check the id it claims. Its human form is
//! `hs-` followed by 29 Crockford base32 characters encoding the 16 id bytes and a 2-byte
//! checksum (the first two bytes of SHA-256 of the id), so a mistyped id is refused rather
//! than silently pointing at another device.

use core::fmt;
use core::str::FromStr;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::Hash32;

/// Domain tag hashed in front of the public key to derive a device id.
pub const DEVICE_ID_DOMAIN: &[u8] = b"heliostat/device-id/v1";

/// Prefix of a device id's human form.
pub const DEVICE_ID_PREFIX: &str = "hs-";

/// Crockford's base32 alphabet (no I, L, O, U), lower case.
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The 16-byte device id, derived from the device's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 16]);

/// Why a device id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with `hs-`.
    #[error("device id must start with \"hs-\"")]
    MissingPrefix,
    /// Wrong number of characters after the prefix.
    #[error("device id must have 29 characters after \"hs-\", got {0}")]
    WrongLength(usize),
    /// A character outside Crockford's base32 alphabet.
    #[error("invalid character {0:?} in device id (Crockford base32: 0-9, a-z without i, l, o, u)")]
    BadChar(char),
    /// The checksum does not match: the id was mistyped or altered.
    #[error("device id checksum mismatch (mistyped id?)")]
    BadChecksum,
}

impl DeviceId {
    /// Derives the id of a public key.
    pub fn from_public_key(key: &PublicKey) -> DeviceId {
        let h = Hash32::digest_parts(&[DEVICE_ID_DOMAIN, &key.0]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.0[..16]);
        DeviceId(id)
    }

    fn checksum(&self) -> [u8; 2] {
        let h = Hash32::digest(&self.0);
        [h.0[0], h.0[1]]
    }

    /// Parses the human form, checking the checksum.
    pub fn parse(s: &str) -> Result<DeviceId, IdError> {
        let body = s
            .strip_prefix(DEVICE_ID_PREFIX)
            .ok_or(IdError::MissingPrefix)?;
        if body.len() != 29 {
            return Err(IdError::WrongLength(body.chars().count()));
        }
        // 29 characters carry 145 bits; the 144 data bits are followed by one zero bit.
        let mut acc: u32 = 0;
        let mut nbits = 0;
        let mut out = [0u8; 18];
        let mut n = 0;
        for c in body.chars() {
            let lc = c.to_ascii_lowercase();
            let v = CROCKFORD
                .iter()
                .position(|&a| a as char == lc)
                .ok_or(IdError::BadChar(c))? as u32;
            acc = (acc << 5) | v;
            nbits += 5;
            if nbits >= 8 {
                nbits -= 8;
                out[n] = (acc >> nbits) as u8;
                n += 1;
                acc &= (1 << nbits) - 1;
            }
        }
        if acc != 0 {
            // The trailing padding bit must be zero: otherwise two strings map to one id.
            return Err(IdError::BadChecksum);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&out[..16]);
        let id = DeviceId(id);
        if id.checksum() != [out[16], out[17]] {
            return Err(IdError::BadChecksum);
        }
        Ok(id)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = [0u8; 18];
        data[..16].copy_from_slice(&self.0);
        data[16..].copy_from_slice(&self.checksum());
        f.write_str(DEVICE_ID_PREFIX)?;
        let mut acc: u32 = 0;
        let mut nbits = 0;
        for b in data {
            acc = (acc << 8) | b as u32;
            nbits += 8;
            while nbits >= 5 {
                nbits -= 5;
                f.write_fmt(format_args!(
                    "{}",
                    CROCKFORD[((acc >> nbits) & 31) as usize] as char
                ))?;
            }
            acc &= (1 << nbits) - 1;
        }
        if nbits > 0 {
            f.write_fmt(format_args!(
                "{}",
                CROCKFORD[((acc << (5 - nbits)) & 31) as usize] as char
            ))?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::parse(s)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            crate::hex::serde_fixed::serialize(&self.0, s)
        }
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <alloc::string::String as Deserialize>::deserialize(d)?;
            DeviceId::parse(&s).map_err(serde::de::Error::custom)
        } else {
            crate::hex::serde_fixed::deserialize(d).map(DeviceId)
        }
    }
}

/// An ed25519 public key (32 bytes, hex for humans).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// Why a public key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bytes are not a valid ed25519 public key")]
pub struct BadPublicKey;

impl PublicKey {
    /// The dalek verifying key; fails on bytes that are not a curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, BadPublicKey> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| BadPublicKey)
    }

    /// The device id this key certifies.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_public_key(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", crate::hex::encode(&self.0))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex::serde_fixed::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex::serde_fixed::deserialize(d).map(PublicKey)
    }
}

/// An ed25519 key pair: a device's or the controller's signing identity.
///
/// The secret is either here (a seed) or held elsewhere, by a token that signs on request
/// ([`KeyPair::external`]: the controller's key in a PKCS#11 token). The secret never
/// appears in `Debug` output.
#[derive(Clone)]
pub struct KeyPair {
    inner: Secret,
}

/// Signs a message with a secret held elsewhere.
pub type ExternalSigner = alloc::sync::Arc<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

#[derive(Clone)]
enum Secret {
    Seed(SigningKey),
    External {
        public: PublicKey,
        sign: ExternalSigner,
    },
}

/// A device's key pair.
pub type DeviceKey = KeyPair;

impl KeyPair {
    /// Builds a key pair from its 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair {
            inner: Secret::Seed(SigningKey::from_bytes(seed)),
        }
    }

    /// A key pair whose secret is held elsewhere: `sign` returns the ed25519 signature of a
    /// message under the secret of `public` (the caller checks one before trusting it).
    pub fn external(public: PublicKey, sign: ExternalSigner) -> KeyPair {
        KeyPair {
            inner: Secret::External { public, sign },
        }
    }

    fn seeded(&self) -> Option<&SigningKey> {
        match &self.inner {
            Secret::Seed(k) => Some(k),
            Secret::External { .. } => None,
        }
    }

    /// Generates a fresh key pair from the operating system's random source.
    #[cfg(feature = "std")]
    pub fn generate() -> Result<KeyPair, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(KeyPair::from_seed(&seed))
    }

    /// The 32-byte secret seed (store it with file mode 0600; never log it); `None` when the
    /// secret is held elsewhere.
    pub fn seed(&self) -> Option<[u8; 32]> {
        self.seeded().map(|k| k.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        match &self.inner {
            Secret::Seed(k) => PublicKey(k.verifying_key().to_bytes()),
            Secret::External { public, .. } => *public,
        }
    }

    /// The device id of this key.
    pub fn device_id(&self) -> DeviceId {
        self.public().device_id()
    }

    /// Signs `msg` (ed25519, deterministic).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        match &self.inner {
            Secret::Seed(k) => k.sign(msg).to_bytes(),
            Secret::External { sign, .. } => sign(msg),
        }
    }

    /// For regression tests of the signature checks only: a signature of `msg` whose `R`
    /// carries an order-8 component (`R = rB + T`, `s = r + k a` with `k` over that `R`).
    /// The cofactorless equation misses by `T`, so a check that lets such an `R` through
    /// accepts it for one draw of batch coefficients in eight; both of ours must refuse it.
    #[doc(hidden)]
    pub fn sign_with_torsioned_r(&self, msg: &[u8]) -> [u8; 64] {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest, Sha512};
        let a = self
            .seeded()
            .expect("a test helper for seeded keys")
            .to_scalar();
        let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(msg).into());
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1]).compress();
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(self.public().0);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair(public: {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn device_id_round_trips_through_its_human_form() {
        for seed in 0u8..50 {
            let id = KeyPair::from_seed(&[seed; 32]).device_id();
            let s = id.to_string();
            assert_eq!(s.len(), 32, "{s}");
            assert!(s.starts_with("hs-"));
            assert_eq!(DeviceId::parse(&s), Ok(id));
            assert_eq!(
                DeviceId::parse(&s.to_ascii_uppercase().replace("HS-", "hs-")),
                Ok(id)
            );
        }
    }

    #[test]
    fn bad_device_ids_are_refused_with_a_reason() {
        let s = KeyPair::from_seed(&[7; 32]).device_id().to_string();
        assert_eq!(DeviceId::parse(&s[3..]), Err(IdError::MissingPrefix));
        assert_eq!(DeviceId::parse(&s[..31]), Err(IdError::WrongLength(28)));
        let mut bad = s.clone().into_bytes();
        bad[10] = b'u';
        assert_eq!(
            DeviceId::parse(core::str::from_utf8(&bad).unwrap()),
            Err(IdError::BadChar('u'))
        );
        // Every single-character substitution is caught by the checksum.
        for pos in 3..s.len() {
            for &c in CROCKFORD.iter() {
                let mut t = s.clone().into_bytes();
                if t[pos] == c {
                    continue;
                }
                t[pos] = c;
                let t = alloc::string::String::from_utf8(t).unwrap();
                assert!(DeviceId::parse(&t).is_err(), "{t} was accepted");
            }
        }
    }

    #[test]
    fn device_id_is_derived_from_the_public_key() {
        let k = KeyPair::from_seed(&[1; 32]);
        assert_eq!(k.device_id(), DeviceId::from_public_key(&k.public()));
        assert_ne!(k.device_id(), KeyPair::from_seed(&[2; 32]).device_id());
    }
}
