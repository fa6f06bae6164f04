//! The controller's key history: which key was the controller's when.
//!
//! A rotation is a [`KeyRotation`] signed twice ([`KeyLink`]): by the old key, which hands
//! its role over from `at` on, and by the new key, which accepts it. Links chain into a
//! line `k0 → k1 → … → kn` with rising `at`; key `ki` speaks for the controller from
//! `at(i)` (from the beginning for `k0`) until the next rotation.
//!
//! Whoever pins any key of the line ([`KeyHistory::from_links`]) trusts the whole line, but
//! each key only for its own time ([`KeyHistory::key_at`]): a key retired because it leaked
//! cannot sign for a time after its retirement. A device, which pins the key it was
//! provisioned with, follows the line to the newest ([`KeyHistory::newest`]) and from then
//! on believes only that one. A fork (two successors of one key), a gap, a link whose two
//! signatures or two copies disagree, or a line without the pinned key is refused.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::bundle::Blob;
use crate::envelope::Envelope;
use crate::id::{KeyPair, PublicKey};
use crate::msg::KeyRotation;
use crate::units::TimestampMs;

/// At most this many rotations in a history.
pub const MAX_LINKS: usize = 64;

/// Largest encoded list of links accepted.
pub const MAX_LINKS_LEN: usize = 64 * 1024;

/// One rotation, signed by both keys: the same `KeyRotation` sealed by `from` and by `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLink {
    /// Sealed by the key handing over.
    pub by_old: Blob,
    /// Sealed by the key taking over.
    pub by_new: Blob,
}

impl KeyLink {
    /// The link that hands `old`'s role to `new` from `at` on.
    pub fn new(old: &KeyPair, new: &KeyPair, at: TimestampMs) -> KeyLink {
        let r = KeyRotation {
            from: old.public(),
            to: new.public(),
            at,
        };
        KeyLink {
            by_old: Blob(Envelope::seal(&r, old).into_bytes()),
            by_new: Blob(Envelope::seal(&r, new).into_bytes()),
        }
    }

    /// The link as stored (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a link serialises")
    }

    /// A link from [`KeyLink::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KeyLink, String> {
        if bytes.len() > MAX_LINKS_LEN {
            return Err(format!("{} bytes, at most {MAX_LINKS_LEN}", bytes.len()));
        }
        postcard::from_bytes(bytes).map_err(|e| format!("{e}"))
    }

    /// The rotation, once both signatures and both copies check.
    pub fn rotation(&self) -> Result<KeyRotation, String> {
        let old = Envelope::decode(&self.by_old.0).map_err(|e| format!("{e}"))?;
        let new = Envelope::decode(&self.by_new.0).map_err(|e| format!("{e}"))?;
        let r: KeyRotation = old.open().map_err(|e| format!("{e}"))?;
        let again: KeyRotation = new.open().map_err(|e| format!("{e}"))?;
        if r != again {
            return Err("its two copies differ".into());
        }
        old.verify(&r.from)
            .map_err(|e| format!("not signed by the old key {}: {e}", r.from))?;
        new.verify(&r.to)
            .map_err(|e| format!("not signed by the new key {}: {e}", r.to))?;
        if r.from == r.to {
            return Err("a key rotated to itself".into());
        }
        Ok(r)
    }
}

/// Links as they travel on their own (the controller's retained `keys` topic): postcard.
pub fn encode_links(links: &[KeyLink]) -> Vec<u8> {
    postcard::to_allocvec(links).expect("links serialise")
}

/// Links from [`encode_links`], bounded in size and count.
pub fn decode_links(bytes: &[u8]) -> Result<Vec<KeyLink>, String> {
    if bytes.len() > MAX_LINKS_LEN {
        return Err(format!("{} bytes, at most {MAX_LINKS_LEN}", bytes.len()));
    }
    let links: Vec<KeyLink> = postcard::from_bytes(bytes).map_err(|e| format!("{e}"))?;
    if links.len() > MAX_LINKS {
        return Err(format!("{} rotations, at most {MAX_LINKS}", links.len()));
    }
    Ok(links)
}

/// The line of controller keys and when each took over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHistory {
    /// Each key and the time it took over (`None`: from the beginning), oldest first.
    keys: Vec<(PublicKey, Option<TimestampMs>)>,
}

impl KeyHistory {
    /// A history of one key, never rotated.
    pub fn single(key: PublicKey) -> KeyHistory {
        KeyHistory {
            keys: alloc::vec![(key, None)],
        }
    }

    /// The line the links make, which must hold `pinned` (module documentation). No links:
    /// `pinned` alone.
    pub fn from_links(pinned: PublicKey, links: &[KeyLink]) -> Result<KeyHistory, String> {
        if links.len() > MAX_LINKS {
            return Err(format!("{} rotations, at most {MAX_LINKS}", links.len()));
        }
        let mut rotations = Vec::with_capacity(links.len());
        for (i, l) in links.iter().enumerate() {
            rotations.push(
                l.rotation()
                    .map_err(|e| format!("key rotation #{i}: {e}"))?,
            );
        }
        rotations.sort_by_key(|r| r.at);
        // The first key is the one no rotation hands to.
        let first = match rotations.first() {
            None => return Ok(KeyHistory::single(pinned)),
            Some(r) => r.from,
        };
        let mut keys = alloc::vec![(first, None)];
        for (i, r) in rotations.iter().enumerate() {
            let (current, since) = keys[keys.len() - 1];
            if r.from != current {
                return Err(format!(
                    "key rotation at {} ms hands over from {}, but the key then was {current} (a fork or a gap)",
                    r.at.0, r.from
                ));
            }
            if since.is_some_and(|s| r.at <= s) || (i > 0 && r.at == rotations[i - 1].at) {
                return Err(format!("two key rotations at {} ms", r.at.0));
            }
            if keys.iter().any(|(k, _)| *k == r.to) {
                return Err(format!("key {} comes back in the line", r.to));
            }
            keys.push((r.to, Some(r.at)));
        }
        if !keys.iter().any(|(k, _)| *k == pinned) {
            return Err(format!(
                "the pinned controller key {pinned} is not in the line of rotations"
            ));
        }
        Ok(KeyHistory { keys })
    }

    /// The controller's key at `t`.
    pub fn key_at(&self, t: TimestampMs) -> PublicKey {
        self.keys
            .iter()
            .rev()
            .find(|(_, since)| since.is_none_or(|s| s <= t))
            .map_or(self.keys[0].0, |(k, _)| *k)
    }

    /// The newest key.
    pub fn newest(&self) -> PublicKey {
        self.keys[self.keys.len() - 1].0
    }

    /// Whether `key` is in the line.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// How many keys the line holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a history holds at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyPair {
        KeyPair::from_seed(&[n; 32])
    }

    #[test]
    fn each_key_speaks_for_its_own_time_whichever_key_is_pinned() {
        let (k0, k1, k2) = (key(1), key(2), key(3));
        let links = [
            KeyLink::new(&k1, &k2, TimestampMs(2_000)),
            KeyLink::new(&k0, &k1, TimestampMs(1_000)),
        ];
        for pinned in [k0.public(), k1.public(), k2.public()] {
            let h = KeyHistory::from_links(pinned, &links).unwrap();
            assert_eq!(h.len(), 3);
            assert_eq!(h.key_at(TimestampMs(0)), k0.public());
            assert_eq!(h.key_at(TimestampMs(999)), k0.public());
            assert_eq!(h.key_at(TimestampMs(1_000)), k1.public());
            assert_eq!(h.key_at(TimestampMs(5_000)), k2.public());
            assert_eq!(h.newest(), k2.public());
        }
        let e = KeyHistory::from_links(key(9).public(), &links).unwrap_err();
        assert!(e.contains("not in the line"), "{e}");
        let lone = KeyHistory::from_links(k0.public(), &[]).unwrap();
        assert_eq!(lone.key_at(TimestampMs(u64::MAX)), k0.public());
    }

    #[test]
    fn forks_gaps_and_half_signed_links_are_refused() {
        let (k0, k1, k2) = (key(1), key(2), key(3));
        let fork = [
            KeyLink::new(&k0, &k1, TimestampMs(1_000)),
            KeyLink::new(&k0, &k2, TimestampMs(2_000)),
        ];
        assert!(
            KeyHistory::from_links(k0.public(), &fork)
                .unwrap_err()
                .contains("fork")
        );
        let gap = [
            KeyLink::new(&k1, &k2, TimestampMs(2_000)),
            KeyLink::new(&k0, &key(4), TimestampMs(1_000)),
        ];
        assert!(KeyHistory::from_links(k0.public(), &gap).is_err());
        // Signed by the old key only (the new one's copy signed by a stranger).
        let mut half = KeyLink::new(&k0, &k1, TimestampMs(1_000));
        half.by_new = KeyLink::new(&k0, &key(7), TimestampMs(1_000)).by_new;
        assert!(KeyHistory::from_links(k0.public(), &[half]).is_err());
        // A copy changed after signing.
        let mut bent = KeyLink::new(&k0, &k1, TimestampMs(1_000));
        let last = bent.by_old.0.len() - 70;
        bent.by_old.0[last] ^= 1;
        assert!(KeyHistory::from_links(k0.public(), &[bent]).is_err());
    }

    #[test]
    fn links_travel_and_come_back_bounded() {
        let links = alloc::vec![KeyLink::new(&key(1), &key(2), TimestampMs(7))];
        let bytes = encode_links(&links);
        assert_eq!(decode_links(&bytes).unwrap(), links);
        assert!(decode_links(&[0xff; 16]).is_err());
        assert!(decode_links(&alloc::vec![0u8; MAX_LINKS_LEN + 1]).is_err());
    }
}
