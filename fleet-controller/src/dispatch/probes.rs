//! Performance probes: known-answer jobs the controller sends an idle device that a
//! provider runs, at its first sight and then at random times, `probe_every_ms` apart on
//! average (each interval drawn uniformly from half to one and a half of it, from the
//! operating system's randomness, so a device cannot time its honesty; after a controller
//! restart the first is due `probe_every_ms` after the last). A probe is an ordinary `sha256_batch` job of
//! random items (the device cannot tell it from a buyer's), owned by the platform's probe
//! account, placed directly on its device and unpaid. Its receipt says whether the device
//! computes right (its output against the answer the controller computed), how fast
//! (items a second over the receipt's run time), at what energy (GPU millijoules an item)
//! and where (CPU or GPU). A wrong answer marks the device `wrong` (and slashes its
//! provider's stake); a device whose hello claims a GPU but whose probe ran on its CPU is
//! marked `misclaimed`. The market lists the measured figures beside the claimed GPU.

use attest::msg::{Backend, ChannelKind, CommandBody, JobOutcome, JobReceipt};
use attest::{DeviceId, Hash32};
use serde_json::json;
use sha2::Digest;

use super::{DispatchStore, Dispatcher, mark, move_to};
use crate::accounts::{AccountId, AccountKind, Scopes};
use crate::ingest::Outgoing;
use crate::jobs::JobState;
use crate::market::DeviceOffer;
use crate::reputation::{MIN_SCORE, MarkKind};
use crate::store::StoreError;
use crate::store::accounts::{NewAccount, NewToken};
use crate::store::jobs::{JobLease, JobRecord, NewJob};
use crate::store::probes::{Probe, ProbeResult};

/// Items in a probe.
pub const PROBE_ITEMS: usize = 8_192;
/// Bytes an item.
pub const PROBE_ITEM_LEN: usize = 64;
/// The account that owns the probes.
pub const PROBE_ACCOUNT: &str = "heliostat-probes";

/// An interval drawn uniformly from `[every / 2, 3 every / 2)` (`every` without
/// randomness).
fn jittered(every: u64) -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) if every > 0 => every / 2 + u64::from_le_bytes(b) % every,
        _ => every,
    }
}

impl Dispatcher {
    /// The probe account, made on first use (its token is never shown: nobody logs in).
    fn probe_account<S: DispatchStore>(
        &self,
        store: &mut S,
        now: u64,
    ) -> Result<AccountId, StoreError> {
        if let Some(a) = store.account_by_name(PROBE_ACCOUNT)? {
            return Ok(a.id);
        }
        let token = crate::accounts::Token::generate()
            .map_err(|e| StoreError::Db(format!("random source: {e}")))?;
        let made = store.create_account(
            &NewAccount {
                kind: AccountKind::Buyer,
                name: PROBE_ACCOUNT.into(),
                quota_bytes: 1 << 30,
                created_ms: now,
            },
            &NewToken {
                hash: token.hash(),
                scopes: Scopes::of(&[crate::accounts::Scope::Read]),
                label: "probes".into(),
                created_ms: now,
            },
        )?;
        match made {
            Some((row, _)) => Ok(row.id),
            None => store
                .account_by_name(PROBE_ACCOUNT)?
                .map(|a| a.id)
                .ok_or_else(|| StoreError::Db("the probe account vanished".into())),
        }
    }

    /// Sends one probe (at most, per tick) to an idle online device due for one.
    pub(super) fn send_probe<S: DispatchStore>(
        &mut self,
        store: &mut S,
        offers: &[DeviceOffer],
        now: u64,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), StoreError> {
        let every = self.cfg.probe_every_ms;
        let Some(dir) = self.blob_dir.clone() else {
            return Ok(());
        };
        if every == 0 {
            return Ok(());
        }
        let mut target = None;
        for o in offers.iter().filter(|o| o.online && o.leased.is_empty()) {
            let due = store.last_probe(o.device)?.is_none_or(|p| {
                // One at a time: a probe without a result is in flight for an hour.
                let in_flight = p.result.is_none() && now < p.sent_ms + 3_600_000;
                let due_at = self.probe_due.get(&o.device).copied();
                !in_flight && now >= due_at.unwrap_or(p.sent_ms + every)
            });
            // Devices on the market only: a provider runs them.
            if due
                && store.device_provider(o.device)?.is_some()
                && self.reputation(store, o.device, now)? >= MIN_SCORE
            {
                target = Some(o.device);
                break;
            }
        }
        let Some(device) = target else {
            return Ok(());
        };
        let owner = self.probe_account(store, now)?;
        let mut input = vec![0u8; PROBE_ITEMS * PROBE_ITEM_LEN];
        getrandom::fill(&mut input).map_err(|e| StoreError::Db(format!("random source: {e}")))?;
        let hash = Hash32::digest(&input);
        let mut answer = sha2::Sha256::new();
        for item in input.chunks(PROBE_ITEM_LEN) {
            answer.update(sha2::Sha256::digest(item));
        }
        let expected = Hash32(answer.finalize().into());
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(hash.to_hex()), &input))
            .map_err(|e| {
                StoreError::Db(format!("writing a probe's input in {}: {e}", dir.display()))
            })?;
        store.grant_blob(owner, hash, input.len() as u64, now)?;
        let req = serde_json::from_value(json!({
            "workload": {"builtin": {"kernel": "sha256_batch", "params": [
                {"name": "count", "value": PROBE_ITEMS}, {"name": "item_len", "value": PROBE_ITEM_LEN}]}},
            "inputs": [hash],
            "deadline_ms": now + 3_600_000,
            "max_price_micro_per_gpu_hour": 0,
        }))
        .map_err(|e| StoreError::Db(format!("a probe's order: {e}")))?;
        let owned = std::collections::HashMap::from([(hash, input.len() as u64)]);
        let order = crate::jobs::validate(req, now, &owned)
            .map_err(|e| StoreError::Db(format!("a probe's order: {e}")))?;
        let id =
            crate::jobs::new_job_id().map_err(|e| StoreError::Db(format!("random source: {e}")))?;
        store.insert_job(
            &NewJob {
                id,
                owner,
                order: order.clone(),
                created_ms: now,
                escrow: 0,
            },
            "a performance probe",
        )?;
        let nonce = self.next_nonce(now);
        out.push(self.signed(device, CommandBody::RunJob(order.job_spec(id)), now, nonce));
        store.put_job_lease(
            id,
            &JobLease {
                device,
                start_ms: now,
                expected_end_ms: now + 60_000,
                nonce,
                progress: None,
            },
        )?;
        move_to(
            store,
            id,
            JobState::Queued,
            JobState::Scheduled,
            now,
            &format!("a performance probe sent to {device}"),
        )?;
        store.put_probe(&Probe {
            job: id,
            device,
            sent_ms: now,
            items: PROBE_ITEMS as u64,
            expected,
            result: None,
        })?;
        self.probe_due.insert(device, now + jittered(every));
        tracing::info!(%device, job = %id, "performance probe sent");
        Ok(())
    }

    /// A probe's receipt: judged against its known answer; `false` when `job` is no probe.
    pub(super) fn probe_receipt<S: DispatchStore>(
        &mut self,
        store: &mut S,
        job: &JobRecord,
        device: DeviceId,
        r: &JobReceipt,
        now: u64,
    ) -> Result<bool, StoreError> {
        let Some(p) = store.probe(job.id)? else {
            return Ok(false);
        };
        self.scheduler.job_finished(job.id);
        self.known.remove(&job.id);
        let at = format!("probe receipt seq {} from {device}", r.link.seq);
        let ran_s = (r.ended.0.saturating_sub(r.started.0) as f64 / 1000.0).max(1e-3);
        let backend = match &r.backend {
            Backend::Cpu => "cpu".to_string(),
            Backend::Cuda(g) => format!("cuda:{g}"),
        };
        let (to, reason) = match &r.outcome {
            JobOutcome::Completed if r.output_hash == p.expected => {
                let result = ProbeResult {
                    at_ms: now,
                    right: true,
                    items_per_s: p.items as f64 / ran_s,
                    mj_per_item: r
                        .energy(ChannelKind::Gpu)
                        .map(|e| e.0 as f64 / p.items as f64),
                    backend: backend.clone(),
                };
                store.finish_probe(job.id, &result)?;
                mark(store, device, MarkKind::Validated, Some(job.id), &at, now)?;
                let claims_gpu = store
                    .device(device)?
                    .and_then(|d| {
                        attest::Envelope::decode(&d.hello)
                            .ok()?
                            .open::<attest::msg::Hello>()
                            .ok()
                    })
                    .is_some_and(|h| !h.hardware.gpus.is_empty());
                if claims_gpu && matches!(r.backend, Backend::Cpu) {
                    let why = format!("{at}: its hello claims a GPU; the probe ran on its CPU");
                    mark(store, device, MarkKind::Misclaimed, Some(job.id), &why, now)?;
                }
                (
                    JobState::Done,
                    format!(
                        "{at}: the known answer, {:.0} items/s on {backend}",
                        result.items_per_s
                    ),
                )
            }
            JobOutcome::Completed => {
                store.finish_probe(
                    job.id,
                    &ProbeResult {
                        at_ms: now,
                        right: false,
                        items_per_s: p.items as f64 / ran_s,
                        mj_per_item: None,
                        backend,
                    },
                )?;
                let evidence = json!({
                    "job": job.id.to_string(),
                    "receipt_seq": r.link.seq.0,
                    "output_hash": r.output_hash.to_hex(),
                    "expected": p.expected.to_hex(),
                    "check": "probe",
                });
                mark(
                    store,
                    device,
                    MarkKind::Wrong,
                    Some(job.id),
                    &evidence.to_string(),
                    now,
                )?;
                self.slash_for(store, job, device, "a wrong answer to a probe", now)?;
                (JobState::Failed, format!("{at}: not the known answer"))
            }
            JobOutcome::Refused(why) => (JobState::Failed, format!("{at}: refused ({why})")),
            other => {
                mark(store, device, MarkKind::Failed, Some(job.id), &at, now)?;
                (JobState::Failed, format!("{at}: {other:?}"))
            }
        };
        let mut from = job.state;
        if !matches!(r.outcome, JobOutcome::Refused(_))
            && matches!(from, JobState::Scheduled | JobState::Paused)
            && move_to(store, job.id, from, JobState::Running, now, &at)?
        {
            from = JobState::Running;
        }
        move_to(store, job.id, from, to, now, &reason)?;
        // Its input is no use any more: given up, and its file removed once nothing holds it.
        if let (Some(input), Some(dir)) = (job.order.inputs().first(), self.blob_dir.as_ref()) {
            store.release_blob(job.owner, *input)?;
            if !store.blob_held(*input)? {
                let _ = std::fs::remove_file(dir.join(input.to_hex()));
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::jittered;

    #[test]
    fn probe_intervals_are_drawn_around_the_configured_one() {
        let draws: Vec<u64> = (0..2_000).map(|_| jittered(1_000)).collect();
        assert!(draws.iter().all(|d| (500..1_500).contains(d)), "{draws:?}");
        let mean = draws.iter().sum::<u64>() / draws.len() as u64;
        assert!((950..1_050).contains(&mean), "mean {mean}");
        // Spread over the range, not one value: a device cannot predict the next.
        assert!(draws.iter().any(|d| *d < 600) && draws.iter().any(|d| *d >= 1_400));
        assert_eq!(jittered(0), 0);
    }
}
