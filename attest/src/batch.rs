//! Many envelopes in one MQTT payload, for draining a backlog after an outage.
//!
//! ```text
//! 0x01 (version) 0xB0 (batch marker) count:varint { len:varint envelope-bytes }*count
//! ```
//!
//! The batch itself is not signed: each envelope inside carries its own signature, so a
//! damaged item costs only that item. Framing errors (bad counts, lengths past the end)
//! refuse the whole payload. A single envelope's first two bytes are the version and a kind
//! byte (1..=8), so a receiver tells the two apart by the second byte.

use alloc::vec::Vec;

use crate::envelope::{DecodeError, Envelope, MAX_ENVELOPE_LEN, VERSION};

/// The second byte of a batch payload.
pub const BATCH_MARKER: u8 = 0xB0;

/// At most this many envelopes in one batch.
pub const MAX_BATCH_ITEMS: usize = 4096;

/// At most this many bytes in one batch payload.
pub const MAX_BATCH_LEN: usize = 1024 * 1024;

/// Why a batch payload was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Larger than [`MAX_BATCH_LEN`].
    #[error("batch too long: {len} bytes, at most {MAX_BATCH_LEN}")]
    TooLong { len: usize },
    /// Not a batch (wrong version or marker).
    #[error("not a batch payload")]
    NotABatch,
    /// More items than [`MAX_BATCH_ITEMS`].
    #[error("batch declares {count} items, at most {MAX_BATCH_ITEMS}")]
    TooManyItems { count: u64 },
    /// A varint is malformed or a length runs past the end.
    #[error("batch framing broken at byte {at}")]
    Truncated { at: usize },
    /// Bytes after the last item.
    #[error("{count} trailing bytes after the last batch item")]
    TrailingBytes { count: usize },
}

/// Whether a payload is a batch (as opposed to a single envelope).
pub fn is_batch(payload: &[u8]) -> bool {
    payload.len() >= 2 && payload[0] == VERSION && payload[1] == BATCH_MARKER
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, BatchError> {
    let start = *at;
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(BatchError::Truncated { at: start })?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BatchError::Truncated { at: start })
}

/// Frames envelopes as one batch payload. The caller keeps batches under [`MAX_BATCH_LEN`]
/// and [`MAX_BATCH_ITEMS`] (see [`BatchBuilder`]).
pub fn encode<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let items: Vec<&[u8]> = items.into_iter().collect();
    let mut out = Vec::with_capacity(4 + items.iter().map(|i| i.len() + 2).sum::<usize>());
    out.push(VERSION);
    out.push(BATCH_MARKER);
    put_varint(&mut out, items.len() as u64);
    for i in items {
        put_varint(&mut out, i.len() as u64);
        out.extend_from_slice(i);
    }
    out
}

/// Splits a batch payload. The outer error refuses the whole payload; each item has its
/// own result so one damaged envelope does not cost the others.
pub fn decode(payload: &[u8]) -> Result<Vec<Result<Envelope, DecodeError>>, BatchError> {
    if payload.len() > MAX_BATCH_LEN {
        return Err(BatchError::TooLong { len: payload.len() });
    }
    if !is_batch(payload) {
        return Err(BatchError::NotABatch);
    }
    let mut at = 2;
    let count = get_varint(payload, &mut at)?;
    if count > MAX_BATCH_ITEMS as u64 {
        return Err(BatchError::TooManyItems { count });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = at;
        let len = get_varint(payload, &mut at)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= payload.len())
            .ok_or(BatchError::Truncated { at: start })?;
        let item = &payload[at..end];
        at = end;
        out.push(if item.len() > MAX_ENVELOPE_LEN {
            Err(DecodeError::TooLong {
                len: item.len(),
                max: MAX_ENVELOPE_LEN,
            })
        } else {
            Envelope::decode(item)
        });
    }
    if at != payload.len() {
        return Err(BatchError::TrailingBytes {
            count: payload.len() - at,
        });
    }
    Ok(out)
}

/// Accumulates envelopes into batches that respect the limits.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    items: Vec<Vec<u8>>,
    bytes: usize,
}

impl BatchBuilder {
    /// Adds an envelope; returns `false` (and adds nothing) when it would not fit.
    pub fn push(&mut self, envelope: &[u8]) -> bool {
        let cost = envelope.len() + 10;
        if self.items.len() >= MAX_BATCH_ITEMS || 12 + self.bytes + cost > MAX_BATCH_LEN {
            return false;
        }
        self.bytes += cost;
        self.items.push(envelope.to_vec());
        true
    }

    /// Number of envelopes held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The batch payload; the builder is emptied.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = encode(self.items.iter().map(|v| v.as_slice()));
        self.items.clear();
        self.bytes = 0;
        out
    }
}
