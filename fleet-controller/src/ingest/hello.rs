//! Hellos: a device's signed introduction, versioned by its timestamp, and enrollment
//! (approval, quotas for pending devices, re-approval after a site or tier change).

use attest::Envelope;
use attest::msg::Hello;
use attest::{DeviceId, SeqNo};

use super::{Gap, Ingest};
use crate::store::{DeviceState, Store, StoreError};

impl<S: Store> Ingest<S> {
    /// Takes a hello published on `topic_id`'s topic.
    pub(super) fn hello(
        &mut self,
        topic_id: DeviceId,
        payload: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        let checked = Envelope::decode(payload)
            .map_err(|e| ("malformed", e.to_string()))
            .and_then(|env| {
                let hello: Hello = env.open().map_err(|e| ("malformed", e.to_string()))?;
                env.verify(&hello.public_key)
                    .map_err(|e| ("bad_signature", e.to_string()))?;
                if hello.device != topic_id {
                    return Err((
                        "wrong_topic",
                        format!("hello of {} on the topic of {topic_id}", hello.device),
                    ));
                }
                Ok((env, hello))
            });
        match checked {
            Ok((env, hello)) => {
                // Hellos are versioned by their timestamp: the same one again (a retained
                // message redelivered) changes nothing, an older one is refused.
                let known = self.store.device(hello.device)?;
                let current: Option<Hello> = known
                    .as_ref()
                    .and_then(|row| Envelope::decode(&row.hello).ok()?.open().ok());
                if known
                    .as_ref()
                    .is_some_and(|row| row.hello == env.as_bytes())
                {
                    return Ok(());
                }
                if let Some(cur) = current.as_ref().filter(|c| hello.timestamp <= c.timestamp) {
                    let detail = format!(
                        "hello of {} at {} is not newer than the one at {}",
                        hello.device, hello.timestamp.0, cur.timestamp.0
                    );
                    self.reject(Some(topic_id), "stale_hello", &detail, now);
                    return Ok(());
                }
                let e = &self.cfg.enrollment;
                // Approved by configuration, or (a new device's first hello) enrolled with
                // a token by its provisioning.
                let preapproved = e.auto_approve
                    || e.approved.contains(&hello.device)
                    || (known.is_none() && self.store.take_enrollment(hello.device)?);
                let initial = if preapproved {
                    DeviceState::Approved
                } else {
                    DeviceState::Pending
                };
                if known.is_none() && initial == DeviceState::Pending {
                    let (max, expiry) = (e.max_pending, e.pending_expiry_ms);
                    if self.store.count_pending()? >= max {
                        let gone = self.store.expire_pending(now.saturating_sub(expiry))?;
                        for id in &gone {
                            self.chains.remove(id);
                            tracing::info!(device = %id, "pending device expired");
                        }
                    }
                    if self.store.count_pending()? >= max {
                        let detail = format!("{max} devices already wait for approval");
                        self.reject(Some(topic_id), "pending_quota", &detail, now);
                        return Ok(());
                    }
                }
                // A new version (anything but its timestamp changed) joins the history that
                // statements judge each hour by.
                let changed = current.as_ref().is_none_or(|c| {
                    let mut c = c.clone();
                    c.timestamp = hello.timestamp;
                    c != hello
                });
                if changed {
                    self.store
                        .record_hello(hello.device, hello.timestamp.0, env.as_bytes())?;
                }
                let row = self.store.upsert_device(
                    hello.device,
                    hello.public_key,
                    env.as_bytes(),
                    now,
                    initial,
                )?;
                // A site or a channel tier changed after approval: an operator approves it
                // again (its records count from then on only).
                let moved = current
                    .as_ref()
                    .is_some_and(|c| c.site != hello.site || c.channels != hello.channels);
                let row = if moved && row.state == DeviceState::Approved && !preapproved {
                    self.store.set_state(hello.device, DeviceState::Pending)?;
                    tracing::warn!(
                        device = %hello.device,
                        "the device's site or channel tiers changed: pending until approved again"
                    );
                    crate::store::DeviceRow {
                        state: DeviceState::Pending,
                        ..row
                    }
                } else {
                    row
                };
                if self.unknown_seen.remove(&hello.device) {
                    // Its records were refused before its hello: ask for them again now.
                    let from = self
                        .store
                        .last_item(hello.device)?
                        .map_or(SeqNo(0), |(seq, _)| SeqNo(seq.0 + 1));
                    self.gaps.insert(
                        hello.device,
                        Gap {
                            expected: from,
                            asked: None,
                        },
                    );
                }
                tracing::info!(device = %hello.device, state = row.state.as_str(), "hello");
            }
            Err((reason, detail)) => self.reject(Some(topic_id), reason, &detail, now),
        }
        Ok(())
    }
}
