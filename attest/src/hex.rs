//! Lower-case hexadecimal, used for hashes, keys and signatures in every human-readable form.

use alloc::string::String;
use alloc::vec::Vec;

/// Why a hexadecimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The string does not have an even number of digits.
    #[error("hex string has odd length {0}")]
    OddLength(usize),
    /// A character that is not a hexadecimal digit.
    #[error("invalid hex character {0:?} at {1}")]
    BadChar(char, usize),
    /// The decoded length is not the one the field needs.
    #[error("expected {expected} bytes of hex, got {got}")]
    WrongLength { expected: usize, got: usize },
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn nibble(c: u8, at: usize) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::BadChar(c as char, at)),
    }
}

/// Decodes hex (either case), with an optional `0x` prefix.
pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(HexError::OddLength(b.len()));
    }
    b.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| Ok((nibble(pair[0], 2 * i)? << 4) | nibble(pair[1], 2 * i + 1)?))
        .collect()
}

/// Decodes hex into an array of exactly `N` bytes.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let v = decode(s)?;
    v.try_into().map_err(|v: Vec<u8>| HexError::WrongLength {
        expected: N,
        got: v.len(),
    })
}

/// Serde helpers that write fixed byte arrays as hex for humans and as raw bytes for postcard.
pub(crate) mod serde_fixed {
    use core::fmt;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&super::encode(b))
        } else {
            let mut t = s.serialize_tuple(N)?;
            for x in b {
                t.serialize_element(x)?;
            }
            t.end()
        }
    }

    struct Fixed<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for Fixed<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{N} bytes (hex in human-readable formats)")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            super::decode_array(v).map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(Fixed::<N>)
        } else {
            d.deserialize_tuple(N, Fixed::<N>)
        }
    }
}

/// Serde helpers for variable-length byte strings: hex for humans, length-prefixed bytes for postcard.
pub(crate) mod serde_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&super::encode(b))
        } else {
            s.serialize_bytes(b)
        }
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string (hex in human-readable formats)")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            super::decode(v).map_err(E::custom)
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(Bytes)
        } else {
            d.deserialize_byte_buf(Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode("00ABff").unwrap(), [0, 0xab, 0xff]);
        assert_eq!(decode("0x01").unwrap(), [1]);
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("zz"), Err(HexError::BadChar('z', 0)));
        assert_eq!(
            decode_array::<2>("00"),
            Err(HexError::WrongLength {
                expected: 2,
                got: 1
            })
        );
    }
}
