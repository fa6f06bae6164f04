//! Dispatch's unit tests: a real SQLite store, a real scheduler, signed messages.

use std::collections::HashMap;

use attest::Hash32;
use attest::msg::{Backend, TrustTier};
use attest::sample::{SAMPLE_START, SampleDevice};

use super::*;
use crate::accounts::{self, AccountKind, Token};
use crate::ingest::{Ingest, IngestConfig, PREFIX};
use crate::market::SchedulerConfig;
use crate::store::blobs::BlobStore;
use crate::store::jobs::NewJob;

mod replicas;
use crate::store::sqlite::SqliteStore;

/// A store with one approved sample device that has sent records up to `t` (ms), and a
/// buyer's queued job due in a day.
fn fleet(t: u64) -> (Ingest<SqliteStore>, SampleDevice, JobId, KeyPair) {
    let key = KeyPair::from_seed(&[0xc0; 32]);
    let mut ing = Ingest::new(
        SqliteStore::in_memory().unwrap(),
        key.clone(),
        IngestConfig::auto_approving(),
    );
    let mut dev = SampleDevice::new(8);
    let id = dev.key.device_id();
    let topic = |leaf: &str| format!("{PREFIX}{id}/{leaf}");
    let mut msgs = vec![(topic("hello"), dev.hello().into_bytes())];
    let mut at = SAMPLE_START.0;
    while at <= t {
        msgs.push((topic("records"), dev.record_at(at).into_bytes()));
        at += 600_000;
    }
    ing.handle(&msgs, t).unwrap();
    let s = ing.store_mut();
    let buyer = accounts::create(
        s,
        AccountKind::Buyer,
        "alice",
        1 << 20,
        None,
        "",
        Token::from_secret([1; 32]),
        1,
    )
    .unwrap()
    .account
    .id;
    let input = Hash32::digest(b"abc");
    s.grant_blob(buyer, input, 3, 50).unwrap();
    let req = serde_json::from_value(serde_json::json!({
        "workload": {"builtin": {"kernel": "sha256_batch",
            "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
        "inputs": [input],
        "deadline_ms": t + 86_400_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
    }))
    .unwrap();
    let order = crate::jobs::validate(req, t, &HashMap::from([(input, 3)])).unwrap();
    let job = JobId([0x42; 16]);
    s.insert_job(
        &NewJob {
            id: job,
            owner: buyer,
            order,
            created_ms: t,
            escrow: 0,
        },
        "accepted",
    )
    .unwrap();
    (ing, dev, job, key)
}

fn dispatcher(key: &KeyPair) -> Dispatcher {
    Dispatcher::new(
        Scheduler::with_bundled_table(SchedulerConfig::default()).unwrap(),
        key.clone(),
        DispatchConfig::default(),
    )
}

fn state(ing: &Ingest<SqliteStore>, job: JobId) -> Option<JobState> {
    ing.store()
        .open_jobs()
        .unwrap()
        .iter()
        .find(|j| j.id == job)
        .map(|j| j.state)
}

fn receipt(dev: &mut SampleDevice, job: JobId, t: u64, outcome: JobOutcome) -> Envelope {
    let r = JobReceipt {
        link: dev.next_link(t),
        job,
        outcome,
        output_hash: Hash32::digest(b"out"),
        started: TimestampMs(t),
        ended: TimestampMs(t),
        start_counters: vec![],
        end_counters: vec![],
        chunks: 1,
        pauses: 0,
        backend: Backend::Cpu,
        tier: TrustTier::HardwareMeter,
    };
    dev.seal_chained(&r)
}

#[test]
fn a_queued_job_is_placed_with_a_signed_run_job_and_done_when_its_receipt_comes() {
    // Noon on the sample's June day: sun on the rig.
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, mut dev, job, key) = fleet(noon);
    let mut d = dispatcher(&key);
    let out = d.tick(ing.store_mut(), noon + 1_000).unwrap();
    assert_eq!(out.len(), 1, "one RunJob");
    let id = dev.key.device_id();
    assert_eq!(out[0].topic, topics::device(&id, Leaf::Cmd));
    let env = Envelope::decode(&out[0].payload).unwrap();
    env.verify(&key.public()).unwrap();
    let cmd: Command = env.open().unwrap();
    match &cmd.body {
        CommandBody::RunJob(spec) => {
            assert_eq!(spec.id, job);
            assert_eq!(spec.input_sizes, vec![3]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&ing, job), Some(JobState::Scheduled));
    assert_eq!(ing.store().job_lease(job).unwrap().unwrap().device, id);
    // Nothing more to send while it runs.
    assert!(d.tick(ing.store_mut(), noon + 2_000).unwrap().is_empty());
    // Its receipt arrives through ingest.
    let topic = format!("{PREFIX}{id}/records");
    let r = receipt(&mut dev, job, noon + 3_000, JobOutcome::Completed);
    ing.handle(&[(topic, r.into_bytes())], noon + 3_000)
        .unwrap();
    d.tick(ing.store_mut(), noon + 4_000).unwrap();
    assert_eq!(state(&ing, job), None, "no longer open");
    let history: Vec<JobState> = ing
        .store()
        .job_history(job)
        .unwrap()
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        history,
        vec![
            JobState::Queued,
            JobState::Scheduled,
            JobState::Running,
            JobState::Done
        ]
    );
    assert_eq!(
        ing.store().job_lease(job).unwrap().map(|l| l.device),
        Some(id),
        "where it ran stays known"
    );
}

#[test]
fn a_job_whose_device_falls_silent_past_the_grace_is_cancelled_there_and_sent_to_another() {
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, first, job, key) = fleet(noon);
    // A second rig, as sunny.
    let mut second = SampleDevice::new(9);
    let topic = |d: &SampleDevice, leaf: &str| format!("{PREFIX}{}/{leaf}", d.key.device_id());
    let mut msgs = vec![(topic(&second, "hello"), second.hello().into_bytes())];
    let mut at = SAMPLE_START.0;
    while at <= noon {
        msgs.push((topic(&second, "records"), second.record_at(at).into_bytes()));
        at += 600_000;
    }
    ing.handle(&msgs, noon).unwrap();
    let mut d = dispatcher(&key);
    let out = d.tick(ing.store_mut(), noon + 1_000).unwrap();
    assert_eq!(out.len(), 1);
    let placed: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
    let (gone, other) = if placed.device == first.key.device_id() {
        (first.key.device_id(), second)
    } else {
        (second.key.device_id(), first)
    };
    let mut other = other;
    // The other rig keeps reporting; the one with the job falls silent.
    let grace = SchedulerConfig::default().lease_grace_ms;
    let mut t = noon + 1_000;
    let mut revoked = Vec::new();
    while t < noon + grace + 10 * 60_000 {
        t += 60_000;
        let r = other.record_at(t);
        ing.handle(&[(topic(&other, "records"), r.into_bytes())], t)
            .unwrap();
        revoked.extend(d.tick(ing.store_mut(), t).unwrap());
        if !revoked.is_empty() {
            break;
        }
    }
    assert!(
        t > noon + grace,
        "not revoked within the grace: {} min",
        (t - noon) / 60_000
    );
    let commands: Vec<Command> = revoked
        .iter()
        .map(|o| Envelope::decode(&o.payload).unwrap().open().unwrap())
        .collect();
    assert!(
        commands
            .iter()
            .any(|c| c.device == gone && c.body == CommandBody::Cancel { job }),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.device == other.key.device_id()
            && matches!(&c.body, CommandBody::RunJob(s) if s.id == job)),
        "placed again on the other rig: {commands:?}"
    );
    assert_eq!(
        ing.store().job_lease(job).unwrap().map(|l| l.device),
        Some(other.key.device_id())
    );
    let reasons: Vec<String> = ing
        .store()
        .job_history(job)
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("silent")), "{reasons:?}");
}

#[test]
fn a_refused_job_is_queued_again_and_not_sent_back_to_the_device_that_refused_it() {
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, mut dev, job, key) = fleet(noon);
    let mut d = dispatcher(&key);
    assert_eq!(d.tick(ing.store_mut(), noon + 1_000).unwrap().len(), 1);
    let id = dev.key.device_id();
    let r = receipt(
        &mut dev,
        job,
        noon + 2_000,
        JobOutcome::Refused("the budget cannot pay for it".into()),
    );
    ing.handle(
        &[(format!("{PREFIX}{id}/records"), r.into_bytes())],
        noon + 2_000,
    )
    .unwrap();
    let out = d.tick(ing.store_mut(), noon + 3_000).unwrap();
    assert!(out.is_empty(), "the only device refused it: {out:?}");
    assert_eq!(state(&ing, job), Some(JobState::Queued));
    let last = ing.store().job_history(job).unwrap().pop().unwrap();
    assert!(last.reason.contains("refused"), "{}", last.reason);
}

#[test]
fn a_job_the_buyer_cancels_while_placed_is_cancelled_on_its_device() {
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, dev, job, key) = fleet(noon);
    let mut d = dispatcher(&key);
    assert_eq!(d.tick(ing.store_mut(), noon + 1_000).unwrap().len(), 1);
    let t = JobState::Scheduled
        .transition(JobState::Cancelled, noon + 1_500, "by its buyer")
        .unwrap();
    assert!(ing.store_mut().apply_transition(job, &t).unwrap());
    let out = d.tick(ing.store_mut(), noon + 2_000).unwrap();
    assert_eq!(out.len(), 1);
    let cmd: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
    assert_eq!(cmd.device, dev.key.device_id());
    assert_eq!(cmd.body, CommandBody::Cancel { job });
    assert_eq!(ing.store().job_lease(job).unwrap(), None);
}

#[test]
fn job_events_move_a_placed_job_and_a_job_whose_online_device_stops_reporting_goes_elsewhere() {
    use attest::live::JobEvent;
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, mut dev, job, key) = fleet(noon);
    let mut d = dispatcher(&key);
    assert_eq!(d.tick(ing.store_mut(), noon + 1_000).unwrap().len(), 1);
    let id = dev.key.device_id();
    let progress = |done: u64, paused: bool| JobEvent::Progress {
        job,
        chunks_done: done,
        chunks: 10,
        paused,
        decision: None,
    };
    // Another device's word on this job changes nothing.
    let stranger = KeyPair::from_seed(&[0x77; 32]).device_id();
    assert_eq!(
        d.job_event(ing.store_mut(), stranger, &progress(5, false), noon + 1_500)
            .unwrap(),
        EventEffect::Ignored
    );
    assert_eq!(state(&ing, job), Some(JobState::Scheduled));
    // Its device's: started, progress, a pause by the power budget, running again.
    let started = JobEvent::Started {
        job,
        chunks: 10,
        budget_w: 42.0,
    };
    assert_eq!(
        d.job_event(ing.store_mut(), id, &started, noon + 2_000)
            .unwrap(),
        EventEffect::Moved(JobState::Running)
    );
    assert_eq!(
        d.job_event(ing.store_mut(), id, &progress(3, false), noon + 3_000)
            .unwrap(),
        EventEffect::Progress
    );
    let lease = ing.store().job_lease(job).unwrap().unwrap();
    assert_eq!(
        lease
            .progress
            .map(|p| (p.chunks_done, p.chunks, p.paused, p.at_ms)),
        Some((3, 10, false, noon + 3_000))
    );
    assert_eq!(
        d.job_event(ing.store_mut(), id, &progress(4, true), noon + 4_000)
            .unwrap(),
        EventEffect::Moved(JobState::Paused)
    );
    assert_eq!(
        d.job_event(ing.store_mut(), id, &progress(4, false), noon + 5_000)
            .unwrap(),
        EventEffect::Moved(JobState::Running)
    );
    // Malformed or oversize events are refused before they reach dispatch.
    assert!(parse_job_event(b"{\"event\":\"progress\"}", 1024).is_err());
    assert!(parse_job_event(&[b' '; 2048], 1024).is_err());
    let states: Vec<(JobState, String)> = ing
        .store()
        .job_history(job)
        .unwrap()
        .into_iter()
        .map(|e| (e.state, e.reason))
        .collect();
    assert_eq!(
        states.iter().map(|s| s.0).collect::<Vec<_>>(),
        [
            JobState::Queued,
            JobState::Scheduled,
            JobState::Running,
            JobState::Paused,
            JobState::Running
        ]
    );
    assert!(states[2].1.contains("10 chunks under 42.0 W"), "{states:?}");
    assert!(states[3].1.contains("power budget"), "{states:?}");
    // The device stays online (its records keep coming) but says nothing of the job.
    let topic = format!("{PREFIX}{id}/records");
    let grace = DispatchConfig::default().progress_grace_ms;
    let mut t = noon + 5_000;
    let mut out = Vec::new();
    while out.is_empty() && t < noon + 5_000 + 2 * grace {
        t += 30_000;
        let r = dev.record_at(t);
        ing.handle(&[(topic.clone(), r.into_bytes())], t).unwrap();
        out = d.tick(ing.store_mut(), t).unwrap();
    }
    assert!(t > noon + 5_000 + grace, "moved before the grace: {t}");
    let commands: Vec<Command> = out
        .iter()
        .map(|o| Envelope::decode(&o.payload).unwrap().open().unwrap())
        .collect();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].body, CommandBody::Cancel { job });
    assert_eq!(state(&ing, job), Some(JobState::Queued));
    assert!(ing.store().job_lease(job).unwrap().is_none());
    let last = ing.store().job_history(job).unwrap().pop().unwrap();
    assert!(last.reason.contains("no progress"), "{last:?}");
    // Never sent back there: the only device, so it waits.
    for k in 1..5 {
        assert!(d.tick(ing.store_mut(), t + k * 1_000).unwrap().is_empty());
    }
    assert_eq!(state(&ing, job), Some(JobState::Queued));
}

#[test]
fn a_receipt_for_a_paused_job_ends_it_through_running() {
    use attest::live::JobEvent;
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let (mut ing, mut dev, job, key) = fleet(noon);
    let mut d = dispatcher(&key);
    d.tick(ing.store_mut(), noon + 1_000).unwrap();
    let id = dev.key.device_id();
    let paused = JobEvent::Progress {
        job,
        chunks_done: 0,
        chunks: 1,
        paused: true,
        decision: None,
    };
    assert_eq!(
        d.job_event(ing.store_mut(), id, &paused, noon + 2_000)
            .unwrap(),
        EventEffect::Moved(JobState::Paused)
    );
    let r = receipt(&mut dev, job, noon + 3_000, JobOutcome::Completed);
    ing.handle(
        &[(format!("{PREFIX}{id}/records"), r.into_bytes())],
        noon + 3_000,
    )
    .unwrap();
    d.tick(ing.store_mut(), noon + 4_000).unwrap();
    let states: Vec<JobState> = ing
        .store()
        .job_history(job)
        .unwrap()
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Scheduled,
            JobState::Running,
            JobState::Paused,
            JobState::Running,
            JobState::Done
        ]
    );
}

#[test]
fn an_operator_forecast_file_changes_what_a_placement_expects() {
    // Noon with sun on the rig: placed at once, all renewable by the clear-sky curve; with
    // the operator's forecast of an overcast day, refused.
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let placement = |forecast: bool| -> String {
        let (mut ing, dev, job, key) = fleet(noon);
        // A long job (10 hours at 60 W): more than the battery holds.
        let mut d = Dispatcher::new(
            Scheduler::with_bundled_table(SchedulerConfig::default()).unwrap(),
            key.clone(),
            DispatchConfig {
                default_run_ms: 10 * 3_600_000,
                ..DispatchConfig::default()
            },
        );
        if forecast {
            let id = dev.key.device_id();
            let first = noon / 3_600_000;
            let text = (0..48)
                .map(|h| format!("{id},{},0\n", (first + h) * 3_600))
                .collect::<String>();
            let f = forecasts::parse_solar_forecasts(
                "sun.csv",
                &format!("device,hour_start_utc,solar_wh\n{text}"),
            )
            .unwrap();
            d.set_solar_forecasts(f);
        }
        d.tick(ing.store_mut(), noon + 1_000).unwrap();
        ing.store()
            .job_history(job)
            .unwrap()
            .last()
            .unwrap()
            .reason
            .clone()
    };
    let clear = placement(false);
    let overcast = placement(true);
    // Clear sky: the sun carries it. The operator's overcast day: the battery cannot, and
    // the rig takes no grid power, so no budget can finish it.
    assert!(clear.contains("expected 100 % renewable"), "{clear}");
    assert!(
        overcast.contains("no device's forecast power budget"),
        "{overcast}"
    );
}

/// A store with one sunny sample device and a buyer's queued `matmul_f32` job (2 × 4 by
/// 4 × 3) with its inputs in the blob folder `blobs`; the inputs and C = A·B.
fn matmul_fleet(
    t: u64,
    blobs: &std::path::Path,
) -> (Ingest<SqliteStore>, SampleDevice, JobId, KeyPair, Vec<f32>) {
    let (mut ing, dev, _, key) = fleet(t);
    let (m, n, k) = (2usize, 3usize, 4usize);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 1.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| 2.0 - i as f32 * 0.25).collect();
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ab, bb) = (le(&a), le(&b));
    let s = ing.store_mut();
    let buyer = s.open_jobs().unwrap()[0].owner;
    let mut owned = HashMap::new();
    for bytes in [&ab, &bb] {
        let h = Hash32::digest(bytes);
        std::fs::write(blobs.join(h.to_hex()), bytes).unwrap();
        s.grant_blob(buyer, h, bytes.len() as u64, 50).unwrap();
        owned.insert(h, bytes.len() as u64);
    }
    let req = serde_json::from_value(serde_json::json!({
        "workload": {"builtin": {"kernel": "matmul_f32",
            "params": [{"name": "m", "value": m}, {"name": "n", "value": n}, {"name": "k", "value": k}]}},
        "inputs": [Hash32::digest(&ab), Hash32::digest(&bb)],
        "deadline_ms": t + 86_400_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
    }))
    .unwrap();
    let order = crate::jobs::validate(req, t, &owned).unwrap();
    // The sha256 job of `fleet` out of the way: only the product is open.
    let old = s.open_jobs().unwrap()[0].id;
    let t0 = JobState::Queued
        .transition(JobState::Cancelled, t, "not this one")
        .unwrap();
    s.apply_transition(old, &t0).unwrap();
    let job = JobId([0x77; 16]);
    s.insert_job(
        &NewJob {
            id: job,
            owner: buyer,
            order,
            created_ms: t,
            escrow: 0,
        },
        "accepted",
    )
    .unwrap();
    (ing, dev, job, key, c)
}

/// Runs `job` on `dev`'s rig: placed, a completed receipt for output `c`, the output
/// uploaded into `blobs`; returns the job's state after the next tick.
fn run_matmul(
    ing: &mut Ingest<SqliteStore>,
    d: &mut Dispatcher,
    dev: &mut SampleDevice,
    job: JobId,
    c: &[f32],
    blobs: &std::path::Path,
    t: u64,
) -> Option<JobState> {
    let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
    run_uploaded(ing, d, dev, job, bytes, blobs, t)
}

/// Runs `job` on `dev`'s rig: placed, a completed receipt for `bytes`, which are then
/// uploaded into `blobs`; returns the job's state after the next tick.
fn run_uploaded(
    ing: &mut Ingest<SqliteStore>,
    d: &mut Dispatcher,
    dev: &mut SampleDevice,
    job: JobId,
    bytes: Vec<u8>,
    blobs: &std::path::Path,
    t: u64,
) -> Option<JobState> {
    let out = d.tick(ing.store_mut(), t).unwrap();
    assert_eq!(out.len(), 1, "one RunJob");
    let h = Hash32::digest(&bytes);
    let id = dev.key.device_id();
    let r = JobReceipt {
        link: dev.next_link(t + 1_500),
        job,
        outcome: JobOutcome::Completed,
        output_hash: h,
        started: TimestampMs(t),
        ended: TimestampMs(t + 1_500),
        start_counters: vec![],
        end_counters: vec![],
        chunks: 2,
        pauses: 0,
        backend: Backend::Cpu,
        tier: TrustTier::HardwareMeter,
    };
    let env = dev.seal_chained(&r);
    ing.handle(
        &[(format!("{PREFIX}{id}/records"), env.into_bytes())],
        t + 1_500,
    )
    .unwrap();
    d.tick(ing.store_mut(), t + 2_000).unwrap();
    assert_eq!(state(ing, job), Some(JobState::Validating));
    std::fs::write(blobs.join(h.to_hex()), &bytes).unwrap();
    ing.store_mut()
        .put_job_output(
            job,
            &crate::store::jobs::JobOutput {
                index: 0,
                hash: h,
                bytes: bytes.len() as u64,
            },
        )
        .unwrap();
    d.tick(ing.store_mut(), t + 3_000).unwrap();
    ing.store().job(job).unwrap().map(|j| j.state)
}

#[test]
fn a_matrix_product_is_done_when_freivalds_check_holds_and_queued_elsewhere_when_it_does_not() {
    use crate::store::marks::MarkStore;
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let dir = hil_tests::TempDir::new("dispatch-validate");
    for wrong in [false, true] {
        let blobs = dir.path().join(format!("blobs-{wrong}"));
        std::fs::create_dir_all(&blobs).unwrap();
        let (mut ing, mut dev, job, key, mut c) = matmul_fleet(noon, &blobs);
        let mut d = dispatcher(&key).with_blob_dir(blobs.clone());
        if wrong {
            c[4] += 1.0;
        }
        let got = run_matmul(&mut ing, &mut d, &mut dev, job, &c, &blobs, noon + 1_000);
        let id = dev.key.device_id();
        let marks = ing.store().device_marks(id, 0).unwrap();
        let history = ing.store().job_history(job).unwrap();
        let last = history.last().unwrap();
        if !wrong {
            assert_eq!(got, Some(JobState::Done), "{history:?}");
            assert!(
                last.reason.contains("result validated (Freivalds"),
                "{last:?}"
            );
            assert_eq!(
                marks.iter().map(|m| m.kind).collect::<Vec<_>>(),
                [MarkKind::Validated]
            );
            continue;
        }
        assert_eq!(got, Some(JobState::Queued), "{history:?}");
        assert!(last.reason.contains("its result is wrong"), "{last:?}");
        assert!(ing.store().job_lease(job).unwrap().is_none());
        assert!(ing.store().job_outputs(job).unwrap().is_empty());
        assert_eq!(d.excluded_for(job), [id]);
        // The evidence: the receipt, the output's hash, what the check found.
        let m = marks.iter().find(|m| m.kind == MarkKind::Wrong).unwrap();
        let ev: serde_json::Value = serde_json::from_str(&m.detail).unwrap();
        assert_eq!(ev["check"], "freivalds");
        assert!(ev["found"].as_str().unwrap().contains("row 1"), "{ev}");
        assert!(ev["receipt_seq"].as_u64().is_some());
        // Its reputation is gone: no more work there, this job or another.
        assert!(
            d.reputation(ing.store(), id, noon + 4_000).unwrap() < crate::reputation::MIN_SCORE
        );
        for k in 1..4 {
            assert!(
                d.tick(ing.store_mut(), noon + 4_000 + k * 1_000)
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(state(&ing, job), Some(JobState::Queued));
    }
}

#[test]
fn a_hash_batch_is_done_when_its_sampled_digests_hold_and_queued_elsewhere_when_not() {
    use crate::store::marks::MarkStore;
    use sha2::Digest;
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let dir = hil_tests::TempDir::new("dispatch-sample");
    for wrong in [false, true] {
        let blobs = dir.path().join(format!("blobs-{wrong}"));
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(Hash32::digest(b"abc").to_hex()), b"abc").unwrap();
        let (mut ing, mut dev, job, key) = fleet(noon);
        let mut d = dispatcher(&key).with_blob_dir(blobs.clone());
        let mut out = sha2::Sha256::digest(b"abc").to_vec();
        if wrong {
            out[31] ^= 0x80;
        }
        let got = run_uploaded(&mut ing, &mut d, &mut dev, job, out, &blobs, noon + 1_000);
        let id = dev.key.device_id();
        let marks = ing.store().device_marks(id, 0).unwrap();
        let history = ing.store().job_history(job).unwrap();
        let last = history.last().unwrap();
        if !wrong {
            assert_eq!(got, Some(JobState::Done), "{history:?}");
            assert!(
                last.reason.contains("64 sampled digests recomputed"),
                "{last:?}"
            );
            continue;
        }
        assert_eq!(got, Some(JobState::Queued), "{history:?}");
        assert_eq!(d.excluded_for(job), [id]);
        let m = marks.iter().find(|m| m.kind == MarkKind::Wrong).unwrap();
        let ev: serde_json::Value = serde_json::from_str(&m.detail).unwrap();
        assert_eq!(ev["check"], "sampled");
        let found = ev["found"].as_str().unwrap();
        assert!(found.starts_with("item 0: the output holds"), "{ev}");
        assert!(
            found.ends_with(&hex_of(&sha2::Sha256::digest(b"abc"))),
            "{ev}"
        );
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_idle_providers_device_gets_a_probe_and_its_answer_is_judged() {
    use crate::store::accounts::AccountStore;
    use crate::store::marks::MarkStore;
    use crate::store::probes::ProbeStore;
    use sha2::Digest;
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    let dir = hil_tests::TempDir::new("dispatch-probe");
    for right in [true, false] {
        let blobs = dir.path().join(format!("blobs-{right}"));
        std::fs::create_dir_all(&blobs).unwrap();
        let (mut ing, mut dev, job, key) = fleet(noon);
        let s = ing.store_mut();
        // The buyer's job out of the way: the device is idle. A provider runs it.
        let t = JobState::Queued
            .transition(JobState::Cancelled, noon, "not now")
            .unwrap();
        s.apply_transition(job, &t).unwrap();
        let provider = accounts::create(
            s,
            AccountKind::Provider,
            "rigs",
            1 << 20,
            None,
            "",
            Token::from_secret([2; 32]),
            1,
        )
        .unwrap()
        .account
        .id;
        let id = dev.key.device_id();
        s.set_device_provider(id, Some(provider), 1).unwrap();
        let mut d = Dispatcher::new(
            Scheduler::with_bundled_table(SchedulerConfig::default()).unwrap(),
            key.clone(),
            DispatchConfig {
                probe_every_ms: 3_600_000,
                ..DispatchConfig::default()
            },
        )
        .with_blob_dir(blobs.clone());
        let out = d.tick(ing.store_mut(), noon + 1_000).unwrap();
        assert_eq!(out.len(), 1, "one probe");
        let cmd: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
        let CommandBody::RunJob(spec) = &cmd.body else {
            panic!("{cmd:?}")
        };
        assert_eq!(cmd.device, id);
        // Its input is in the blob store; the right answer is the items' hashes.
        let input = std::fs::read(blobs.join(spec.inputs[0].to_hex())).unwrap();
        let mut answer = sha2::Sha256::new();
        for item in input.chunks(64) {
            answer.update(sha2::Sha256::digest(item));
        }
        let answer = Hash32(answer.finalize().into());
        assert_eq!(
            ing.store().probe(spec.id).unwrap().unwrap().expected,
            answer
        );
        // The device answers, in two seconds, on its CPU.
        let r = JobReceipt {
            link: dev.next_link(noon + 3_000),
            job: spec.id,
            outcome: JobOutcome::Completed,
            output_hash: if right {
                answer
            } else {
                Hash32::digest(b"wrong")
            },
            started: TimestampMs(noon + 1_000),
            ended: TimestampMs(noon + 3_000),
            start_counters: vec![],
            end_counters: vec![],
            chunks: 1,
            pauses: 0,
            backend: Backend::Cpu,
            tier: TrustTier::HardwareMeter,
        };
        let env = dev.seal_chained(&r);
        ing.handle(
            &[(format!("{PREFIX}{id}/records"), env.into_bytes())],
            noon + 3_000,
        )
        .unwrap();
        assert!(
            d.tick(ing.store_mut(), noon + 4_000).unwrap().is_empty(),
            "no probe again within the hour"
        );
        let marks: Vec<MarkKind> = ing
            .store()
            .device_marks(id, 0)
            .unwrap()
            .iter()
            .map(|m| m.kind)
            .collect();
        assert!(
            !blobs.join(spec.inputs[0].to_hex()).exists(),
            "the probe's input is removed once it is judged"
        );
        let probe = ing.store().probe(spec.id).unwrap().unwrap();
        let result = probe.result.unwrap();
        let state = ing.store().job(spec.id).unwrap().unwrap().state;
        if right {
            assert_eq!(state, JobState::Done);
            assert!(result.right);
            assert_eq!(result.items_per_s, 4_096.0);
            assert_eq!(result.backend, "cpu");
            assert_eq!(marks[0], MarkKind::Validated);
            assert!(ing.store().last_good_probe(id).unwrap().is_some());
        } else {
            assert_eq!(state, JobState::Failed);
            assert!(!result.right);
            assert_eq!(marks, [MarkKind::Wrong]);
            assert!(ing.store().last_good_probe(id).unwrap().is_none());
        }
    }
}
