//! The first stage of a batch: decoding and the coalesced signature check, which need no
//! state but the devices' keys. A device's key never changes (its id is derived from it), so
//! this stage may run ahead on a thread of its own, checking batch N+1 while
//! [`super::Ingest::handle_prepared`] checks chains and commits batch N. A message whose
//! device is not known yet (its hello may be in the same batch) is left for the second
//! stage, which checks it after the hellos.

use attest::msg::ChainMessage;
use attest::sigbatch::Unverified;
use attest::topics::{self, Leaf};
use attest::{DeviceId, Envelope, PublicKey, Verified};

/// A rejection found while decoding, counted by the second stage (which owns the counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Early {
    pub device: Option<DeviceId>,
    pub reason: &'static str,
    pub detail: String,
}

/// A batch decoded, its signatures checked where the device's key was known.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Hellos, in arrival order: `(device of the topic, payload)`.
    pub(super) hellos: Vec<(DeviceId, Vec<u8>)>,
    /// What did not decode, in arrival order.
    pub(super) early: Vec<Early>,
    /// Chain messages signature-checked under their device's key (or why not).
    pub(super) checked: Vec<Result<Verified<ChainMessage>, Box<Unverified>>>,
    /// Chain messages of devices whose key was not known here.
    pub(super) unchecked: Vec<(DeviceId, Envelope, ChainMessage)>,
}

impl Prepared {
    /// Chain messages in the batch (checked or not).
    pub fn chain_messages(&self) -> usize {
        self.checked.len() + self.unchecked.len()
    }
}

/// Decodes `batch` and checks the signatures of every chain message whose device `key_of`
/// knows, in one coalesced batch (split over the machine's cores).
pub fn prepare(
    batch: &[(String, Vec<u8>)],
    mut key_of: impl FnMut(DeviceId) -> Option<PublicKey>,
) -> Prepared {
    let mut p = Prepared::default();
    let mut chain_msgs: Vec<(DeviceId, Envelope, ChainMessage)> = Vec::new();
    for (topic, payload) in batch {
        let Some((id, leaf)) = topics::parse(topic) else {
            p.early.push(Early {
                device: None,
                reason: "bad_topic",
                detail: topic.clone(),
            });
            continue;
        };
        match leaf {
            Leaf::Hello => p.hellos.push((id, payload.clone())),
            Leaf::Records => decode_records(id, payload, &mut chain_msgs, &mut p.early),
            _ => {}
        }
    }
    let mut keys: std::collections::HashMap<DeviceId, Option<PublicKey>> = Default::default();
    let (mut known, mut known_keys) = (Vec::new(), Vec::new());
    for (id, env, msg) in chain_msgs {
        match *keys.entry(id).or_insert_with(|| key_of(id)) {
            Some(key) => {
                known.push((env, msg));
                known_keys.push(key);
            }
            None => p.unchecked.push((id, env, msg)),
        }
    }
    p.checked = attest::sigbatch::verify_messages(
        known
            .into_iter()
            .zip(&known_keys)
            .map(|((env, msg), key)| (env, msg, key))
            .collect(),
    );
    p
}

/// The chain messages of one records payload (a single envelope or a batch), each checked
/// to name the device of its topic.
fn decode_records(
    id: DeviceId,
    payload: &[u8],
    out: &mut Vec<(DeviceId, Envelope, ChainMessage)>,
    early: &mut Vec<Early>,
) {
    let envs = if attest::batch::is_batch(payload) {
        match attest::batch::decode(payload) {
            Ok(items) => items,
            Err(e) => {
                early.push(Early {
                    device: Some(id),
                    reason: "malformed_batch",
                    detail: e.to_string(),
                });
                return;
            }
        }
    } else {
        vec![Envelope::decode(payload)]
    };
    for env in envs {
        let decoded = env.map_err(|e| e.to_string()).and_then(|env| {
            let msg = ChainMessage::open(&env).map_err(|e| e.to_string())?;
            Ok((env, msg))
        });
        match decoded {
            Ok((env, msg)) if msg.link().device == id => out.push((id, env, msg)),
            Ok((_, msg)) => early.push(Early {
                device: Some(id),
                reason: "wrong_topic",
                detail: format!("message of {} on the topic of {id}", msg.link().device),
            }),
            Err(e) => early.push(Early {
                device: Some(id),
                reason: "malformed",
                detail: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use attest::sample::SampleDevice;

    use super::*;

    fn records(dev: &SampleDevice, envs: &[Envelope]) -> (String, Vec<u8>) {
        (
            topics::device(&dev.key.device_id(), Leaf::Records),
            attest::batch::encode(envs.iter().map(|e| e.as_bytes())),
        )
    }

    #[test]
    fn known_keys_are_checked_ahead_unknown_ones_are_left_and_bad_input_is_named() {
        let mut known = SampleDevice::new(1);
        let mut unknown = SampleDevice::new(2);
        let chain = known.chain(3, 10_000);
        let other = unknown.chain(2, 10_000);
        let mut forged = chain[2].as_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let batch = vec![
            records(&known, &chain[..2]),
            (
                topics::device(&known.key.device_id(), Leaf::Records),
                forged,
            ),
            records(&unknown, &other),
            ("not/a/topic".to_string(), vec![1]),
            (
                topics::device(&known.key.device_id(), Leaf::Records),
                vec![1, 2, 3],
            ),
            (
                topics::device(&unknown.key.device_id(), Leaf::Hello),
                unknown.hello().into_bytes(),
            ),
        ];
        let key = known.key.public();
        let p = prepare(&batch, |id| (id == key.device_id()).then_some(key));
        assert_eq!(p.checked.len(), 3);
        assert_eq!(p.checked.iter().filter(|c| c.is_ok()).count(), 2);
        assert_eq!(p.unchecked.len(), 2, "left for after the hello");
        assert_eq!(p.hellos.len(), 1);
        let reasons: Vec<&str> = p.early.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec!["bad_topic", "malformed"]);
        assert_eq!(p.chain_messages(), 5);
    }
}
