//! Ingest: from MQTT payloads to stored evidence and acknowledgements. Sans-IO: it takes
//! (topic, payload) pairs and the time, writes through the [`Store`], and returns the
//! messages to publish; the MQTT task around it only moves bytes.
//!
//! Per batch of messages: hellos register devices (pending unless pre-approved); chain
//! messages are decoded, their signatures checked in one batch equation coalesced by key
//! (one by one only when the batch fails), each device's chain is checked by its
//! [`ChainVerifier`] (resumed from the store after a restart), accepted messages are stored
//! in one transaction, and only after that commit does each device get a controller-signed,
//! retained `Ack` of its highest stored sequence number. Re-sent messages that are already
//! stored are acknowledged again (the agent may have missed the ack). A gap that persists
//! gets a signed `Resend` command. Every rejection is counted by reason and logged at most
//! once a minute per device and reason.

use std::collections::{BTreeMap, HashMap};

use attest::chain::{ChainPolicy, ChainVerifier, Outcome, Rejection, Tip};
use attest::msg::{Ack, ChainMessage, Command, CommandBody};
use attest::{DeviceId, Envelope, KeyPair, SeqNo, TimestampMs, Verified};

use crate::store::{DeviceState, NewItem, Store, StoreError};

/// MQTT topic prefix of every device topic.
pub use attest::topics::PREFIX;
use attest::topics::{self, Leaf};

mod hello;
mod prepare;

pub use prepare::{Prepared, prepare};

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained?
    pub retain: bool,
}

/// How devices get approved.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// Every new device is approved at once (demo and tests).
    pub auto_approve: bool,
    /// Devices pre-approved by id.
    pub approved: Vec<DeviceId>,
    /// Most devices pending at once: a hello from one more new device is refused
    /// (`pending_quota`) once stale pending devices are expired.
    pub max_pending: u64,
    /// Most messages kept for one pending device; past it its records are refused
    /// (`pending_quota`) and not acknowledged (its agent keeps them until approved).
    pub max_pending_messages: u64,
    /// A pending device not heard from for this long is forgotten when room is needed
    /// (with its messages: none were ever anchored or counted).
    pub pending_expiry_ms: u64,
}

impl Default for Enrollment {
    fn default() -> Self {
        Enrollment {
            auto_approve: false,
            approved: vec![],
            max_pending: 1_000,
            max_pending_messages: 10_000,
            pending_expiry_ms: 7 * 86_400_000,
        }
    }
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Who gets approved on hello.
    pub enrollment: Enrollment,
    /// Chain checking tunables.
    pub policy: ChainPolicy,
    /// How long a gap may persist before a `Resend` is asked, ms.
    pub resend_after_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            enrollment: Enrollment::default(),
            policy: ChainPolicy::default(),
            resend_after_ms: 10_000,
        }
    }
}

impl IngestConfig {
    /// Defaults, approving every device that says hello (demos and tests).
    pub fn auto_approving() -> IngestConfig {
        IngestConfig {
            enrollment: Enrollment {
                auto_approve: true,
                ..Enrollment::default()
            },
            ..IngestConfig::default()
        }
    }
}

/// Rejections counted by reason.
pub type Counters = BTreeMap<&'static str, u64>;

/// Most devices whose rejections are counted one by one.
pub const MAX_REJECTING_DEVICES: usize = 10_000;

/// The ingest state.
pub struct Ingest<S: Store> {
    store: S,
    key: KeyPair,
    cfg: IngestConfig,
    chains: HashMap<DeviceId, ChainVerifier>,
    /// Rejections by reason.
    pub rejected: Counters,
    /// Rejections by device and reason, for the first [`MAX_REJECTING_DEVICES`] devices
    /// that had any (the rest count in `rejected` only): the console shows a device's.
    pub rejected_by_device: HashMap<DeviceId, Counters>,
    /// Messages stored since start.
    pub stored: u64,
    /// Messages that came after a missing one and were held for it, since start.
    pub held_out_of_order: u64,
    logged: HashMap<(Option<DeviceId>, &'static str), u64>,
    gaps: HashMap<DeviceId, Gap>,
    /// Verified messages that came after a missing one, per device by sequence, until it
    /// comes (at most [`HOLD_PER_DEVICE`] a device, [`HOLD_TOTAL`] in all).
    held: HashMap<DeviceId, BTreeMap<SeqNo, Verified<ChainMessage>>>,
    held_total: usize,
    /// Devices whose records came before their hello (a controller that subscribed late).
    unknown_seen: std::collections::HashSet<DeviceId>,
    nonce: u64,
}

/// Most messages held per device while an earlier one is missing.
pub const HOLD_PER_DEVICE: usize = 256;
/// Most messages held in all.
pub const HOLD_TOTAL: usize = 65_536;

/// A device's missing message: which sequence, since when, and when it was last asked for.
#[derive(Debug, Clone, Copy)]
struct Gap {
    expected: SeqNo,
    /// When it was last asked for (controller clock, ms).
    asked: Option<u64>,
}

/// Where a resumed checker continues: the last stored message and the counters of the
/// last record at or before it.
fn tip_from(envelope: &[u8], earlier_record: Option<&[u8]>) -> Option<Tip> {
    let env = Envelope::decode(envelope).ok()?;
    let msg = ChainMessage::open(&env).ok()?;
    let counters_of = |m: &ChainMessage| {
        m.as_record().map(|r| {
            r.channels
                .iter()
                .map(|c| (c.channel, c.kind, c.energy))
                .collect::<Vec<_>>()
        })
    };
    let counters = counters_of(&msg)
        .or_else(|| {
            let e = Envelope::decode(earlier_record?).ok()?;
            counters_of(&ChainMessage::open(&e).ok()?)
        })
        .unwrap_or_default();
    Some(Tip {
        seq: msg.link().seq,
        hash: env.hash(),
        timestamp: msg.link().timestamp,
        counters,
    })
}

impl<S: Store> Ingest<S> {
    /// Ingest over a store, signing acks and commands with `key`.
    pub fn new(store: S, key: KeyPair, cfg: IngestConfig) -> Ingest<S> {
        Ingest {
            store,
            key,
            cfg,
            chains: HashMap::new(),
            rejected: Counters::new(),
            rejected_by_device: HashMap::new(),
            stored: 0,
            held_out_of_order: 0,
            logged: HashMap::new(),
            gaps: HashMap::new(),
            held: HashMap::new(),
            held_total: 0,
            unknown_seen: Default::default(),
            nonce: 0,
        }
    }

    /// The key that signs acks and commands (the controller's).
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (operator actions).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    fn reject(&mut self, device: Option<DeviceId>, reason: &'static str, detail: &str, now: u64) {
        *self.rejected.entry(reason).or_default() += 1;
        if let Some(d) = device
            && (self.rejected_by_device.contains_key(&d)
                || self.rejected_by_device.len() < MAX_REJECTING_DEVICES)
        {
            *self
                .rejected_by_device
                .entry(d)
                .or_default()
                .entry(reason)
                .or_default() += 1;
        }
        let last = self.logged.entry((device, reason)).or_insert(0);
        if *last == 0 || now.saturating_sub(*last) >= 60_000 {
            *last = now.max(1);
            tracing::warn!(device = ?device.map(|d| d.to_string()), reason, detail, "rejected");
        }
    }

    fn verifier(&mut self, id: DeviceId) -> Result<Option<&mut ChainVerifier>, StoreError> {
        if !self.chains.contains_key(&id) {
            let Some(dev) = self.store.device(id)? else {
                return Ok(None);
            };
            let v = match self.store.last_item(id)? {
                None => ChainVerifier::new(&dev.public_key, self.cfg.policy),
                Some((seq, bytes)) => {
                    let earlier = self.store.items(id, SeqNo(seq.0.saturating_sub(8)), seq)?;
                    let record = earlier
                        .iter()
                        .rev()
                        .find(|(_, b)| b.get(1) == Some(&(attest::Kind::MeterRecord as u8)));
                    match tip_from(&bytes, record.map(|(_, b)| b.as_slice())) {
                        Some(tip) => ChainVerifier::resume(&dev.public_key, self.cfg.policy, tip),
                        None => {
                            return Err(StoreError::Corrupt(format!(
                                "stored message {seq} of {id} does not decode"
                            )));
                        }
                    }
                }
            };
            match v {
                Ok(v) => {
                    self.chains.insert(id, v);
                }
                Err(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "device {id} has an invalid public key"
                    )));
                }
            }
        }
        Ok(self.chains.get_mut(&id))
    }

    /// A verified message to store, counted only for an approved device.
    fn accepted(&mut self, state: DeviceState, verified: Verified<ChainMessage>) -> NewItem {
        if state == DeviceState::Revoked {
            // Kept as evidence, never acknowledged (see the acks).
            *self.rejected.entry("revoked").or_default() += 1;
        }
        NewItem::from_verified(verified, state == DeviceState::Approved)
    }

    /// Handles a batch of (topic, payload) messages; returns what to publish. A store error
    /// means nothing of the batch was acknowledged: the devices will send it again.
    pub fn handle(
        &mut self,
        batch: &[(String, Vec<u8>)],
        now: u64,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let store = &self.store;
        let prepared = prepare(batch, |id| {
            store.device(id).ok().flatten().map(|d| d.public_key)
        });
        self.handle_prepared(prepared, now)
    }

    /// The second stage of [`Ingest::handle`], for a batch [`prepare`]d elsewhere (a stage
    /// of its own that checks signatures ahead): hellos, the signatures [`prepare`] could not
    /// check, chains, the store, acks.
    pub fn handle_prepared(
        &mut self,
        prepared: Prepared,
        now: u64,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let _span = tracing::info_span!(
            "ingest.batch",
            messages = prepared.checked.len() + prepared.unchecked.len() + prepared.hellos.len()
        )
        .entered();
        let Prepared {
            hellos,
            early,
            mut checked,
            unchecked,
        } = prepared;
        // 1. Hellos first, so records in the same batch find their device.
        for e in early {
            self.reject(e.device, e.reason, &e.detail, now);
        }
        for (id, payload) in &hellos {
            self.hello(*id, payload, now)?;
        }

        // 2. Signatures [`prepare`] could not check (a device it did not know), in one
        // batch: only attest's check turns a message into a `Verified` one, the only kind
        // the chain check and the store take.
        let mut keys = HashMap::new();
        let mut known: Vec<(DeviceId, Envelope, ChainMessage)> =
            Vec::with_capacity(unchecked.len());
        for (id, env, msg) in unchecked {
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(id) {
                match self.store.device(id)? {
                    Some(d) => {
                        slot.insert(d);
                    }
                    None => {
                        self.reject(Some(id), "unknown_device", "no hello yet", now);
                        self.unknown_seen.insert(id);
                        continue;
                    }
                }
            }
            known.push((id, env, msg));
        }
        checked.extend(attest::sigbatch::verify_messages(
            known
                .into_iter()
                .map(|(id, env, msg)| (env, msg, &keys[&id].public_key))
                .collect(),
        ));
        // Every device of a checked message, for its state.
        for c in &checked {
            let id = match c {
                Ok(v) => v.message().link().device,
                Err(u) => u.message.link().device,
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(id) {
                match self.store.device(id)? {
                    Some(d) => {
                        slot.insert(d);
                    }
                    // Known to the first stage, gone now (expired while pending).
                    None => continue,
                }
            }
        }
        // Per device in sequence order.
        checked.sort_by_key(|c| {
            let l = match c {
                Ok(v) => v.message().link(),
                Err(u) => u.message.link(),
            };
            (l.device, l.seq)
        });

        // 3. Chains.
        let mut to_store = Vec::new();
        let mut touched: BTreeMap<DeviceId, ()> = BTreeMap::new();
        // Messages a pending device may still have kept, counted down in this batch.
        let mut pending_room: HashMap<DeviceId, u64> = HashMap::new();
        for checked in checked {
            let verified = match checked {
                Ok(v) => v,
                Err(u) => {
                    let id = u.message.link().device;
                    let seq = u.message.link().seq;
                    self.reject(Some(id), "bad_signature", &format!("seq {seq}"), now);
                    continue;
                }
            };
            let id = verified.message().link().device;
            let seq = verified.message().link().seq;
            let Some(state) = keys.get(&id).map(|d| d.state) else {
                self.reject(Some(id), "unknown_device", "forgotten while pending", now);
                continue;
            };
            if state == DeviceState::Pending {
                let max = self.cfg.enrollment.max_pending_messages;
                let room = match pending_room.entry(id) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(max.saturating_sub(self.store.count_items(id)?))
                    }
                };
                if *room == 0 {
                    // Refused before the chain check moves on: not stored, not acknowledged.
                    self.reject(
                        Some(id),
                        "pending_quota",
                        &format!("seq {seq}: {max} messages kept while pending"),
                        now,
                    );
                    continue;
                }
                *room -= 1;
            }
            let Some(v) = self.verifier(id)? else {
                continue;
            };
            match v.feed_verified(&verified, TimestampMs(now)) {
                Ok(Outcome::Accepted(accepted)) => {
                    to_store.push(self.accepted(state, *accepted));
                    touched.insert(id, ());
                }
                Ok(Outcome::Duplicate { .. }) => {
                    touched.insert(id, ());
                }
                Err(Rejection::BelowWindow { .. }) | Err(Rejection::Fork { .. }) => {
                    // Older than the checker remembers: the store decides.
                    let stored = self.store.items(id, seq, seq)?;
                    match stored.first() {
                        Some((_, b)) if b == verified.envelope().as_bytes() => {
                            touched.insert(id, ());
                        }
                        _ => self.reject(Some(id), "fork", &format!("seq {seq}"), now),
                    }
                }
                Err(Rejection::SequenceGap { expected, got }) => {
                    // Held (its signature is checked) until the missing one comes, and the
                    // missing one asked for at once; rejected only when the hold is full.
                    let slot = self.held.entry(id).or_default();
                    if slot.len() < HOLD_PER_DEVICE && self.held_total < HOLD_TOTAL {
                        if slot.insert(got, verified).is_none() {
                            self.held_total += 1;
                        }
                        self.held_out_of_order += 1;
                    } else {
                        self.reject(
                            Some(id),
                            "sequence_gap",
                            &format!("expected {expected}, got {got}"),
                            now,
                        );
                    }
                    let gap = self.gaps.entry(id).or_insert(Gap {
                        expected,
                        asked: None,
                    });
                    if gap.expected != expected {
                        // Another message is missing now: its own timer.
                        *gap = Gap {
                            expected,
                            asked: None,
                        };
                    }
                }
                Err(e) => self.reject(Some(id), e.reason(), &e.to_string(), now),
            }
        }
        // Held messages that follow on now.
        let ids: Vec<DeviceId> = self
            .held
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(state) = keys.get(&id).map(|d| d.state) else {
                continue;
            };
            while let Some(next) = self
                .chains
                .get(&id)
                .and_then(|v| v.tip())
                .and_then(|t| t.seq.next())
            {
                let Some(held) = self.held.get_mut(&id).and_then(|h| h.remove(&next)) else {
                    break;
                };
                self.held_total -= 1;
                let Some(v) = self.verifier(id)? else { break };
                match v.feed_verified(&held, TimestampMs(now)) {
                    Ok(Outcome::Accepted(accepted)) => {
                        to_store.push(self.accepted(state, *accepted));
                        touched.insert(id, ());
                    }
                    Ok(Outcome::Duplicate { .. }) => {}
                    Err(e) => self.reject(Some(id), e.reason(), &e.to_string(), now),
                }
            }
            // What the chain has passed is no longer needed.
            let tip = self.chains.get(&id).and_then(|v| v.tip()).map(|t| t.seq);
            if let (Some(tip), Some(h)) = (tip, self.held.get_mut(&id)) {
                let before = h.len();
                h.retain(|s, _| *s > tip);
                self.held_total -= before - h.len();
            }
        }

        // 4. Store in one transaction, then (and only then) acknowledge.
        let seen: Vec<DeviceId> = touched.keys().copied().collect();
        let report = match self.store.insert_items_seen(&to_store, &seen, now) {
            Ok(r) => r,
            Err(e) => {
                // The checkers moved on in memory but nothing was stored: forget them so they
                // resume from the store, or a redelivery would be taken for a duplicate and
                // acknowledged without being stored.
                for id in touched.keys() {
                    self.chains.remove(id);
                }
                return Err(e);
            }
        };
        self.stored += report.inserted as u64;
        if report.conflicts > 0 {
            *self.rejected.entry("fork").or_default() += report.conflicts as u64;
        }
        let mut out = Vec::new();
        for id in touched.keys() {
            // A revoked device's messages are kept as evidence, apart, but not acknowledged
            // as stored: it must not take them for delivered (and counted).
            if keys
                .get(id)
                .is_some_and(|d| d.state == DeviceState::Revoked)
            {
                continue;
            }
            if let Some(tip) = self.chains.get(id).and_then(|v| v.tip()) {
                let ack = Ack {
                    device: *id,
                    up_to: tip.seq,
                    hash: tip.hash,
                    timestamp: TimestampMs(now),
                };
                out.push(Outgoing {
                    topic: topics::device(id, Leaf::Ack),
                    payload: Envelope::seal(&ack, &self.key).into_bytes(),
                    retain: true,
                });
            }
        }
        // 5. Missing messages: asked for at once, and again every `resend_after_ms` while
        // they stay missing (the timer belongs to the missing sequence, so progress on
        // other messages does not put it off).
        let mut due = Vec::new();
        let ids: Vec<DeviceId> = self.gaps.keys().copied().collect();
        for id in ids {
            let gap = self.gaps[&id];
            let still = self
                .chains
                .get(&id)
                .and_then(|v| v.tip())
                .is_none_or(|t| t.seq < gap.expected);
            if !still {
                self.gaps.remove(&id);
                continue;
            }
            if gap
                .asked
                .is_none_or(|at| now.saturating_sub(at) >= self.cfg.resend_after_ms)
            {
                // Up to the first held message, or everything from the missing one on.
                let to = self
                    .held
                    .get(&id)
                    .and_then(|h| h.keys().next())
                    .map_or(SeqNo(u64::MAX / 2), |first| SeqNo(first.0 - 1));
                due.push((id, gap.expected, to));
                if let Some(g) = self.gaps.get_mut(&id) {
                    g.asked = Some(now);
                }
            }
        }
        for (id, from, to) in due {
            self.nonce += 1;
            let cmd = Command {
                device: id,
                nonce: now.wrapping_mul(1_000).wrapping_add(self.nonce),
                issued: TimestampMs(now),
                expires: TimestampMs(now + 60_000),
                body: CommandBody::Resend { from, to },
            };
            out.push(Outgoing {
                topic: topics::device(&id, Leaf::Cmd),
                payload: Envelope::seal(&cmd, &self.key).into_bytes(),
                retain: false,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use attest::sample::SampleDevice;

    fn ingest(auto: bool) -> Ingest<SqliteStore> {
        ingest_with(Enrollment {
            auto_approve: auto,
            ..Enrollment::default()
        })
    }

    fn ingest_with(enrollment: Enrollment) -> Ingest<SqliteStore> {
        let cfg = IngestConfig {
            enrollment,
            resend_after_ms: 1_000,
            ..IngestConfig::default()
        };
        Ingest::new(
            SqliteStore::in_memory().unwrap(),
            KeyPair::from_seed(&[0xc0; 32]),
            cfg,
        )
    }

    fn topic(dev: &SampleDevice, leaf: &str) -> String {
        format!("{PREFIX}{}/{leaf}", dev.key.device_id())
    }

    const NOW: u64 = attest::sample::SAMPLE_START.0 + 86_400_000;

    fn acks(out: &[Outgoing]) -> Vec<Ack> {
        out.iter()
            .filter(|o| o.topic.ends_with("/ack"))
            .map(|o| {
                let env = Envelope::decode(&o.payload).unwrap();
                env.verify(&KeyPair::from_seed(&[0xc0; 32]).public())
                    .unwrap();
                env.open().unwrap()
            })
            .collect()
    }

    #[test]
    fn records_are_stored_once_and_acknowledged_after_the_commit() {
        let mut ing = ingest(true);
        let mut dev = SampleDevice::new(1);
        let chain = dev.chain(20, 10_000);
        let mut batch = vec![(topic(&dev, "hello"), dev.hello().into_bytes())];
        batch.push((
            topic(&dev, "records"),
            attest::batch::encode(chain[..10].iter().map(|e| e.as_bytes())),
        ));
        for e in &chain[10..] {
            batch.push((topic(&dev, "records"), e.as_bytes().to_vec()));
        }
        let out = ing.handle(&batch, NOW).unwrap();
        let a = acks(&out);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].up_to, a[0].hash), (SeqNo(19), chain[19].hash()));
        assert_eq!(ing.store().count_items(dev.key.device_id()).unwrap(), 20);
        // Redelivery stores nothing new and acknowledges again.
        let out = ing
            .handle(
                &[(topic(&dev, "records"), chain[5].as_bytes().to_vec())],
                NOW,
            )
            .unwrap();
        assert_eq!(acks(&out)[0].up_to, SeqNo(19));
        assert_eq!(ing.stored, 20);
        assert!(ing.rejected.is_empty(), "{:?}", ing.rejected);
    }

    #[test]
    fn a_record_signed_with_a_torsioned_r_gets_the_same_answer_in_every_batch() {
        // The device's own key, but an order-8 component in R: the batch check let this
        // through for one draw in eight while the single check refused it, so whether it
        // was stored depended on chance. Both now use the cofactored equation: it is
        // stored, every time; and with a changed byte refused, every time.
        let mut dev = SampleDevice::new(13);
        let chain = dev.chain(1, 10_000);
        let env = &chain[0];
        let mut bytes = env.signed_bytes().to_vec();
        bytes.extend_from_slice(&dev.key.sign_with_torsioned_r(env.signed_bytes()));
        for run in 1..=16u64 {
            let mut ing = ingest(true);
            let batch = vec![
                (topic(&dev, "hello"), dev.hello().into_bytes()),
                (topic(&dev, "records"), bytes.clone()),
            ];
            let out = ing.handle(&batch, NOW).unwrap();
            assert_eq!(acks(&out)[0].up_to, SeqNo(0), "run {run}");
            assert_eq!(ing.rejected.get("bad_signature"), None, "run {run}");
            assert_eq!(ing.store().count_items(dev.key.device_id()).unwrap(), 1);
            let mut ing = ingest(true);
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n - 30] ^= 1; // in s

            let batch = vec![
                (topic(&dev, "hello"), dev.hello().into_bytes()),
                (topic(&dev, "records"), bad),
            ];
            let out = ing.handle(&batch, NOW).unwrap();
            assert!(acks(&out).is_empty(), "run {run}");
            assert_eq!(ing.rejected.get("bad_signature"), Some(&1), "run {run}");
            assert_eq!(ing.store().count_items(dev.key.device_id()).unwrap(), 0);
        }
    }

    #[test]
    fn bad_input_is_rejected_by_reason_and_good_devices_keep_flowing() {
        let mut ing = ingest(true);
        let mut good = SampleDevice::new(1);
        let mut other = SampleDevice::new(2);
        let chain = good.chain(6, 10_000);
        let theirs = other.chain(2, 10_000);
        let mut forged = chain[3].as_bytes().to_vec();
        let n = forged.len();
        forged[n - 1] ^= 1;
        let mut fork = attest::msg::MeterRecord::clone(&chain[2].open().unwrap());
        fork.channels[0].energy.0 += 1;
        let batch = vec![
            (topic(&good, "hello"), good.hello().into_bytes()),
            (topic(&good, "records"), vec![0xde, 0xad]),
            (topic(&good, "records"), vec![1; 100_000]),
            (topic(&good, "records"), forged),
            (topic(&good, "records"), theirs[0].as_bytes().to_vec()), // another device's record on this topic
            (topic(&other, "records"), theirs[0].as_bytes().to_vec()), // no hello yet
            ("heliostat/v1/dev/not-an-id/records".to_string(), vec![1]),
            (topic(&good, "records"), chain[0].as_bytes().to_vec()),
            (topic(&good, "records"), chain[1].as_bytes().to_vec()),
            (topic(&good, "records"), chain[2].as_bytes().to_vec()),
        ];
        ing.handle(&batch, NOW).unwrap();
        let r = &ing.rejected;
        assert_eq!(r.get("malformed"), Some(&2), "{r:?}");
        assert_eq!(r.get("bad_signature"), Some(&1), "{r:?}");
        assert_eq!(r.get("wrong_topic"), Some(&1), "{r:?}");
        assert_eq!(r.get("unknown_device"), Some(&1), "{r:?}");
        assert_eq!(r.get("bad_topic"), Some(&1), "{r:?}");
        assert_eq!(ing.store().count_items(good.key.device_id()).unwrap(), 3);
        // A fork of a stored record, a replay of an old one, and clock skew.
        let fork = Envelope::seal(&fork, &good.key);
        ing.handle(&[(topic(&good, "records"), fork.into_bytes())], NOW)
            .unwrap();
        assert_eq!(ing.rejected.get("fork"), Some(&1));
        // Counted against the device too (the console shows a device's rejects).
        assert_eq!(
            ing.rejected_by_device[&good.key.device_id()].get("fork"),
            Some(&1)
        );
        let out = ing
            .handle(
                &[(topic(&good, "records"), chain[1].as_bytes().to_vec())],
                NOW,
            )
            .unwrap();
        assert_eq!(
            acks(&out)[0].up_to,
            SeqNo(2),
            "a replay is a duplicate: re-acknowledged, not stored"
        );
        let early = ing.handle(
            &[(topic(&good, "records"), chain[3].as_bytes().to_vec())],
            attest::sample::SAMPLE_START.0 - 3_600_000,
        );
        assert!(early.unwrap().is_empty());
        assert_eq!(ing.rejected.get("future_timestamp"), Some(&1));
        // The good device keeps flowing.
        ing.handle(
            &[(
                topic(&good, "records"),
                attest::batch::encode(chain[3..].iter().map(|e| e.as_bytes())),
            )],
            NOW,
        )
        .unwrap();
        assert_eq!(ing.store().count_items(good.key.device_id()).unwrap(), 6);
    }

    #[test]
    fn pending_devices_are_stored_apart_and_a_persistent_gap_asks_for_a_resend() {
        let mut ing = ingest(false);
        let mut dev = SampleDevice::new(3);
        let chain = dev.chain(6, 10_000);
        ing.handle(&[(topic(&dev, "hello"), dev.hello().into_bytes())], NOW)
            .unwrap();
        assert_eq!(
            ing.store()
                .device(dev.key.device_id())
                .unwrap()
                .unwrap()
                .state,
            DeviceState::Pending
        );
        let batch: Vec<_> = [0, 1, 4, 5]
            .iter()
            .map(|&i| (topic(&dev, "records"), chain[i].as_bytes().to_vec()))
            .collect();
        let out = ing.handle(&batch, NOW).unwrap();
        assert_eq!(acks(&out)[0].up_to, SeqNo(1));
        // 4 and 5 are held for 2 and 3, which are asked for at once...
        assert_eq!(ing.held_out_of_order, 2);
        assert_eq!(ing.rejected.get("sequence_gap"), None);
        let resend = |out: &[Outgoing]| -> Vec<CommandBody> {
            out.iter()
                .filter(|o| o.topic.ends_with("/cmd"))
                .map(|o| {
                    Envelope::decode(&o.payload)
                        .unwrap()
                        .open::<Command>()
                        .unwrap()
                        .body
                })
                .collect()
        };
        let asked = CommandBody::Resend {
            from: SeqNo(2),
            to: SeqNo(3),
        };
        assert_eq!(resend(&out), vec![asked.clone()]);
        // ...not again before `resend_after_ms`, and again after it while still missing.
        assert!(resend(&ing.handle(&[], NOW + 500).unwrap()).is_empty());
        assert_eq!(resend(&ing.handle(&[], NOW + 2_000).unwrap()), vec![asked]);
    }

    #[test]
    fn one_lost_message_costs_one_resend_and_the_device_is_back_to_its_normal_delay() {
        // 0..=9 with 5 lost on the way (as the broker dropped one while the controller
        // re-subscribed). Before, 6, 7, ... were each refused as a gap, the gap timer
        // restarted whenever the expected sequence moved, and the device stayed one resend
        // round behind for as long as it ran.
        let mut ing = ingest(true);
        let mut dev = SampleDevice::new(25);
        let id = dev.key.device_id();
        let chain = dev.chain(10, 10_000);
        let send = |ing: &mut Ingest<SqliteStore>, range: &[usize], t: u64| {
            let batch: Vec<_> = range
                .iter()
                .map(|&i| (topic(&dev, "records"), chain[i].as_bytes().to_vec()))
                .collect();
            ing.handle(&batch, t).unwrap()
        };
        ing.handle(&[(topic(&dev, "hello"), dev.hello().into_bytes())], NOW)
            .unwrap();
        send(&mut ing, &[0, 1, 2, 3, 4], NOW);
        let out = send(&mut ing, &[6, 7], NOW + 1);
        assert!(
            acks(&out).iter().all(|a| a.up_to == SeqNo(4)),
            "nothing past the gap acked"
        );
        let cmds: Vec<Command> = out
            .iter()
            .filter(|o| o.topic.ends_with("/cmd"))
            .map(|o| Envelope::decode(&o.payload).unwrap().open().unwrap())
            .collect();
        assert_eq!(
            cmds.iter().map(|c| c.body.clone()).collect::<Vec<_>>(),
            vec![CommandBody::Resend {
                from: SeqNo(5),
                to: SeqNo(5)
            }],
            "exactly the lost one, at once"
        );
        // New records keep coming and are held; the resent 5 brings them all in.
        send(&mut ing, &[8], NOW + 2);
        let out = send(&mut ing, &[5, 9], NOW + 3);
        assert_eq!(acks(&out)[0].up_to, SeqNo(9), "caught up in one round");
        assert_eq!(ing.store().count_items(id).unwrap(), 10);
        assert_eq!(ing.rejected.get("sequence_gap"), None);
        assert_eq!(
            ing.held_out_of_order, 4,
            "6, 7, 8, and 9 (fed after 5, before the held ones)"
        );
        // Nothing left to ask for.
        let out = ing.handle(&[], NOW + 60_000).unwrap();
        assert!(out.iter().all(|o| !o.topic.ends_with("/cmd")), "{out:?}");
    }

    /// `dev`'s hello at `t` with `edit` applied, signed.
    fn hello_at(dev: &SampleDevice, t: u64, edit: impl FnOnce(&mut attest::msg::Hello)) -> Vec<u8> {
        let mut h: attest::msg::Hello = dev.hello().open().unwrap();
        h.timestamp = TimestampMs(t);
        edit(&mut h);
        Envelope::seal(&h, &dev.key).into_bytes()
    }

    #[test]
    fn hellos_are_versioned_an_older_one_is_refused_and_a_redelivered_one_changes_nothing() {
        let mut ing = ingest(true);
        let dev = SampleDevice::new(10);
        let id = dev.key.device_id();
        let t0 = attest::sample::SAMPLE_START.0;
        let first = hello_at(&dev, t0, |_| {});
        ing.handle(&[(topic(&dev, "hello"), first.clone())], NOW)
            .unwrap();
        // The same bytes again (a retained message): nothing.
        ing.handle(&[(topic(&dev, "hello"), first.clone())], NOW)
            .unwrap();
        assert_eq!(ing.rejected.get("stale_hello"), None);
        // A restart's hello, same content, newer: current, but no new version.
        let again = hello_at(&dev, t0 + 1_000, |_| {});
        ing.handle(&[(topic(&dev, "hello"), again.clone())], NOW)
            .unwrap();
        assert_eq!(ing.store().hellos(id).unwrap(), vec![first.clone()]);
        assert_eq!(ing.store().device(id).unwrap().unwrap().hello, again);
        // A moved device: a new version.
        let moved = hello_at(&dev, t0 + 2_000, |h| h.site.grid_region = "FR".into());
        ing.handle(&[(topic(&dev, "hello"), moved.clone())], NOW)
            .unwrap();
        assert_eq!(
            ing.store().hellos(id).unwrap(),
            vec![first.clone(), moved.clone()]
        );
        // An older hello (a replay of a past version, or a stale retained one): refused.
        let old = hello_at(&dev, t0 + 1_500, |h| h.site.grid_region = "PL".into());
        ing.handle(&[(topic(&dev, "hello"), old)], NOW).unwrap();
        assert_eq!(ing.rejected.get("stale_hello"), Some(&1));
        assert_eq!(ing.store().device(id).unwrap().unwrap().hello, moved);
        assert_eq!(ing.store().hellos(id).unwrap().len(), 2);
    }

    #[test]
    fn a_site_or_tier_change_after_approval_needs_approval_again() {
        let mut ing = ingest(false);
        let mut dev = SampleDevice::new(11);
        let id = dev.key.device_id();
        let t0 = attest::sample::SAMPLE_START.0;
        let chain = dev.chain(4, 10_000);
        ing.handle(&[(topic(&dev, "hello"), hello_at(&dev, t0, |_| {}))], NOW)
            .unwrap();
        ing.store_mut()
            .set_state(id, DeviceState::Approved)
            .unwrap();
        let state = |ing: &Ingest<SqliteStore>| ing.store().device(id).unwrap().unwrap().state;
        // Same site and tiers, newer: stays approved.
        ing.handle(
            &[(
                topic(&dev, "hello"),
                hello_at(&dev, t0 + 1, |h| h.agent_version = "2".into()),
            )],
            NOW,
        )
        .unwrap();
        assert_eq!(state(&ing), DeviceState::Approved);
        // A channel claims a higher tier: pending until approved again.
        ing.handle(
            &[(
                topic(&dev, "hello"),
                hello_at(&dev, t0 + 2, |h| {
                    h.channels[0].tier = attest::msg::TrustTier::SigningMeter
                }),
            )],
            NOW,
        )
        .unwrap();
        assert_eq!(state(&ing), DeviceState::Pending);
        let batch: Vec<_> = chain
            .iter()
            .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec()))
            .collect();
        ing.handle(&batch, NOW).unwrap();
        let items = ing.store().items_between(id, 0, u64::MAX / 2).unwrap();
        assert!(items.iter().all(|i| !i.counted), "counted while pending");
        // The same for a site change, after approving again.
        ing.store_mut()
            .set_state(id, DeviceState::Approved)
            .unwrap();
        ing.handle(
            &[(
                topic(&dev, "hello"),
                hello_at(&dev, t0 + 3, |h| h.site.panel_watts_peak *= 10),
            )],
            NOW,
        )
        .unwrap();
        assert_eq!(state(&ing), DeviceState::Pending);
    }

    #[test]
    fn last_seen_moves_with_every_stored_message_not_only_with_a_hello() {
        let mut ing = ingest(true);
        let mut dev = SampleDevice::new(14);
        let id = dev.key.device_id();
        let chain = dev.chain(2, 10_000);
        ing.handle(&[(topic(&dev, "hello"), dev.hello().into_bytes())], NOW)
            .unwrap();
        assert_eq!(ing.store().device(id).unwrap().unwrap().last_seen_ms, NOW);
        ing.handle(
            &[(topic(&dev, "records"), chain[0].as_bytes().to_vec())],
            NOW + 5_000,
        )
        .unwrap();
        assert_eq!(
            ing.store().device(id).unwrap().unwrap().last_seen_ms,
            NOW + 5_000
        );
        // A redelivery at an older controller time does not move it back.
        ing.handle(
            &[(topic(&dev, "records"), chain[0].as_bytes().to_vec())],
            NOW + 1_000,
        )
        .unwrap();
        assert_eq!(
            ing.store().device(id).unwrap().unwrap().last_seen_ms,
            NOW + 5_000
        );
    }

    #[test]
    fn pending_devices_have_a_quota_and_the_stale_ones_make_room() {
        let mut ing = ingest_with(Enrollment {
            max_pending: 2,
            pending_expiry_ms: 60_000,
            ..Enrollment::default()
        });
        let devs: Vec<SampleDevice> = (20..23).map(SampleDevice::new).collect();
        let hello = |ing: &mut Ingest<SqliteStore>, d: &SampleDevice, t: u64| {
            ing.handle(&[(topic(d, "hello"), d.hello().into_bytes())], t)
                .unwrap();
        };
        hello(&mut ing, &devs[0], NOW);
        hello(&mut ing, &devs[1], NOW + 1_000);
        // A third new device, while two wait: refused, not stored.
        hello(&mut ing, &devs[2], NOW + 2_000);
        assert_eq!(ing.rejected.get("pending_quota"), Some(&1));
        assert!(
            ing.store()
                .device(devs[2].key.device_id())
                .unwrap()
                .is_none()
        );
        // A minute later the first has been silent long enough: it is forgotten, the
        // newcomer takes its place.
        hello(&mut ing, &devs[2], NOW + 60_500);
        assert!(
            ing.store()
                .device(devs[0].key.device_id())
                .unwrap()
                .is_none()
        );
        assert!(
            ing.store()
                .device(devs[2].key.device_id())
                .unwrap()
                .is_some()
        );
        assert_eq!(ing.store().count_pending().unwrap(), 2);
    }

    #[test]
    fn a_pending_device_keeps_at_most_its_quota_of_messages_and_the_rest_wait_unacknowledged() {
        let mut ing = ingest_with(Enrollment {
            max_pending_messages: 3,
            ..Enrollment::default()
        });
        let mut dev = SampleDevice::new(24);
        let id = dev.key.device_id();
        let chain = dev.chain(5, 10_000);
        let mut batch = vec![(topic(&dev, "hello"), dev.hello().into_bytes())];
        batch.extend(
            chain
                .iter()
                .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec())),
        );
        let out = ing.handle(&batch, NOW).unwrap();
        assert_eq!(ing.store().count_items(id).unwrap(), 3);
        assert_eq!(
            acks(&out)[0].up_to,
            SeqNo(2),
            "the refused ones are not acked"
        );
        assert_eq!(ing.rejected.get("pending_quota"), Some(&2));
        // No epoch takes a pending device's messages (it may yet be forgotten)...
        assert!(ing.store().unplaced().unwrap().is_empty());
        // ...until it is approved: then they are anchored (still uncounted), and the rest
        // flow once sent again.
        ing.store_mut()
            .set_state(id, DeviceState::Approved)
            .unwrap();
        assert_eq!(ing.store().unplaced().unwrap().len(), 3);
        let rest: Vec<_> = chain[3..]
            .iter()
            .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec()))
            .collect();
        let out = ing.handle(&rest, NOW).unwrap();
        assert_eq!(acks(&out)[0].up_to, SeqNo(4));
        assert_eq!(ing.store().count_items(id).unwrap(), 5);
    }

    #[test]
    fn a_revoked_devices_records_are_kept_apart_and_never_acknowledged() {
        let mut ing = ingest(true);
        let mut dev = SampleDevice::new(8);
        let id = dev.key.device_id();
        let chain = dev.chain(6, 10_000);
        let mut batch = vec![(topic(&dev, "hello"), dev.hello().into_bytes())];
        batch.extend(
            chain[..3]
                .iter()
                .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec())),
        );
        let out = ing.handle(&batch, NOW).unwrap();
        assert_eq!(acks(&out)[0].up_to, SeqNo(2));
        ing.store_mut().set_state(id, DeviceState::Revoked).unwrap();
        let rest: Vec<_> = chain[3..]
            .iter()
            .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec()))
            .collect();
        let out = ing.handle(&rest, NOW).unwrap();
        assert!(acks(&out).is_empty(), "acked a revoked device: {out:?}");
        assert_eq!(ing.rejected.get("revoked"), Some(&3));
        // Stored as evidence, apart: not counted.
        let items = ing.store().items_between(id, 0, u64::MAX / 2).unwrap();
        assert_eq!(items.len(), 6);
        let counted: Vec<bool> = items.iter().map(|i| i.counted).collect();
        assert_eq!(counted, vec![true, true, true, false, false, false]);
        // Its resends are not acknowledged either.
        let out = ing.handle(&rest, NOW + 1).unwrap();
        assert!(acks(&out).is_empty());
    }

    #[test]
    fn records_before_the_hello_are_asked_for_again_as_soon_as_the_hello_comes() {
        let mut ing = ingest(true);
        let mut dev = SampleDevice::new(6);
        let chain = dev.chain(3, 10_000);
        let early: Vec<_> = chain
            .iter()
            .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec()))
            .collect();
        assert!(ing.handle(&early, NOW).unwrap().is_empty());
        assert_eq!(ing.rejected.get("unknown_device"), Some(&3));
        let out = ing
            .handle(&[(topic(&dev, "hello"), dev.hello().into_bytes())], NOW)
            .unwrap();
        let cmd: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
        assert_eq!(
            cmd.body,
            CommandBody::Resend {
                from: SeqNo(0),
                to: SeqNo(u64::MAX / 2)
            }
        );
    }

    #[test]
    fn after_a_restart_the_chain_resumes_from_the_store() {
        let dir = std::env::temp_dir().join(format!("ingest-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.db");
        let mut dev = SampleDevice::new(4);
        let chain = dev.chain(10, 10_000);
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let cfg = IngestConfig::auto_approving();
        {
            let mut ing = Ingest::new(SqliteStore::open(&path).unwrap(), key.clone(), cfg.clone());
            let mut batch = vec![(topic(&dev, "hello"), dev.hello().into_bytes())];
            batch.extend(
                chain[..6]
                    .iter()
                    .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec())),
            );
            ing.handle(&batch, NOW).unwrap();
        }
        let mut ing = Ingest::new(SqliteStore::open(&path).unwrap(), key, cfg);
        let batch: Vec<_> = chain[3..]
            .iter()
            .map(|e| (topic(&dev, "records"), e.as_bytes().to_vec()))
            .collect();
        let out = ing.handle(&batch, NOW).unwrap();
        assert_eq!(acks(&out)[0].up_to, SeqNo(9));
        assert_eq!(ing.store().count_items(dev.key.device_id()).unwrap(), 10);
        assert!(ing.rejected.is_empty(), "{:?}", ing.rejected);
    }
}
