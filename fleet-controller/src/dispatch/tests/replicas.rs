//! Jobs run on more than one device: outputs compared by hash, the majority paid, the
//! device that disagreed marked and slashed.

use super::*;
use crate::accounts::AccountId;
use crate::ledger::Book;
use crate::store::ledger::LedgerStore;
use crate::store::marks::MarkStore;
use crate::store::runs::RunStore;

/// Brings `dev` online (its hello and records up to `t`), run by a new provider with a
/// stake; returns the provider.
fn join(ing: &mut Ingest<SqliteStore>, dev: &mut SampleDevice, name: &str, t: u64) -> AccountId {
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
    let p = accounts::create(
        s,
        AccountKind::Provider,
        name,
        1 << 20,
        None,
        "",
        Token::from_secret([id.0, id.0].concat().try_into().unwrap()),
        t,
    )
    .unwrap()
    .account
    .id;
    s.set_device_provider(id, Some(p), t).unwrap();
    s.post(&crate::ledger::deposit(p, 1_000_000, "stake").unwrap(), t)
        .unwrap();
    s.post(&crate::ledger::stake(p, 1_000_000).unwrap(), t)
        .unwrap();
    p
}

#[test]
fn a_redundant_job_is_done_by_the_majority_and_the_device_that_disagreed_is_marked_and_slashed() {
    let noon = SAMPLE_START.0 + 12 * 3_600_000;
    // The liar is alone online at first: the job's first run is its.
    let key = KeyPair::from_seed(&[0xc0; 32]);
    let mut ing = Ingest::new(
        SqliteStore::in_memory().unwrap(),
        key.clone(),
        IngestConfig::auto_approving(),
    );
    let mut devs = [
        SampleDevice::new(31),
        SampleDevice::new(32),
        SampleDevice::new(33),
    ];
    let liar_p = join(&mut ing, &mut devs[0], "liar", noon);
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
    s.post(
        &crate::ledger::deposit(buyer, 10_000_000, "paid").unwrap(),
        1,
    )
    .unwrap();
    let input = Hash32::digest(b"abc");
    s.grant_blob(buyer, input, 3, 50).unwrap();
    let req = serde_json::from_value(serde_json::json!({
        "workload": {"builtin": {"kernel": "sha256_batch",
            "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
        "inputs": [input],
        "deadline_ms": noon + 86_400_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
        "redundancy": 2,
    }))
    .unwrap();
    let order = crate::jobs::validate(req, noon, &HashMap::from([(input, 3)])).unwrap();
    let job = JobId([0x55; 16]);
    let escrow = 3 * crate::ledger::ceiling(1_000_000, 60_000);
    s.post(&crate::ledger::escrow(buyer, job, escrow).unwrap(), noon)
        .unwrap();
    s.insert_job(
        &NewJob {
            id: job,
            owner: buyer,
            order,
            created_ms: noon,
            escrow: 0,
        },
        "accepted",
    )
    .unwrap();
    let mut d = dispatcher(&key);
    let (good, bad) = (Hash32::digest(b"right"), Hash32::digest(b"wrong"));
    let mut t = noon + 1_000;
    let mut ran = Vec::new();
    for step in 0..3 {
        // The second and third devices come online one run at a time.
        if step == 1 {
            join(&mut ing, &mut devs[1], "honest-one", t);
        }
        if step == 2 {
            join(&mut ing, &mut devs[2], "honest-two", t);
        }
        // A device that ran it already is refused at placement; the scheduler then picks
        // another within a few ticks.
        let mut out = Vec::new();
        for _ in 0..5 {
            out = d.tick(ing.store_mut(), t).unwrap();
            if !out.is_empty() {
                break;
            }
            t += 1_000;
        }
        assert_eq!(out.len(), 1, "step {step}: one RunJob");
        let cmd: Command = Envelope::decode(&out[0].payload).unwrap().open().unwrap();
        let i = devs
            .iter()
            .position(|d| d.key.device_id() == cmd.device)
            .unwrap();
        ran.push(i);
        let dev = &mut devs[i];
        let r = JobReceipt {
            link: dev.next_link(t + 1_500),
            job,
            outcome: JobOutcome::Completed,
            output_hash: if i == 0 { bad } else { good },
            started: TimestampMs(t),
            ended: TimestampMs(t + 1_500),
            start_counters: vec![],
            end_counters: vec![],
            chunks: 1,
            pauses: 0,
            backend: Backend::Cpu,
            tier: TrustTier::HardwareMeter,
        };
        let id = dev.key.device_id();
        ing.handle(
            &[(
                format!("{PREFIX}{id}/records"),
                dev.seal_chained(&r).into_bytes(),
            )],
            t + 1_500,
        )
        .unwrap();
        d.tick(ing.store_mut(), t + 2_000).unwrap();
        t += 10_000;
    }
    // Run 1 (the liar), run 2 (honest): a tie, so a third run, on the third provider.
    assert_eq!(ran, [0, 1, 2]);
    let rec = ing.store().job(job).unwrap().unwrap();
    let history = ing.store().job_history(job).unwrap();
    assert_eq!(rec.state, JobState::Done, "{history:?}");
    let last = &history.last().unwrap().reason;
    assert!(last.contains("2 of 3 runs agree"), "{last}");
    assert!(
        history
            .iter()
            .any(|e| e.reason.contains("run 1 of 2 (redundancy)"))
    );
    assert!(
        history
            .iter()
            .any(|e| e.reason.contains("no output has a majority"))
    );
    let runs = ing.store().job_runs(job).unwrap();
    assert_eq!(runs.len(), 3);
    // The liar: marked wrong with every run as evidence, its stake slashed by a tenth.
    let liar = devs[0].key.device_id();
    let marks = ing.store().device_marks(liar, 0).unwrap();
    let wrong = marks.iter().find(|m| m.kind == MarkKind::Wrong).unwrap();
    let ev: serde_json::Value = serde_json::from_str(&wrong.detail).unwrap();
    assert_eq!(ev["check"], "redundancy");
    assert_eq!(ev["majority"], good.to_hex());
    assert_eq!(ev["runs"].as_array().unwrap().len(), 3);
    assert_eq!(ing.store().balance(Book::Stake(liar_p)).unwrap(), 900_000);
    assert_eq!(ing.store().balance(Book::Wallet(liar_p)).unwrap(), 0);
    // The honest two: validated and paid their price (less the fee) each; the escrow is
    // empty and the buyer got the rest back.
    // The sample devices ask 250,000 micro-credits a GPU-hour.
    let price = crate::ledger::price_of(250_000, 1_500);
    for dev in &devs[1..] {
        let id = dev.key.device_id();
        let m = ing.store().device_marks(id, 0).unwrap();
        assert_eq!(
            m.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [MarkKind::Validated]
        );
        let p = ing.store().device_provider(id).unwrap().unwrap();
        let fee = crate::ledger::fee_of(price, DispatchConfig::default().fee_ppm);
        assert_eq!(
            ing.store().balance(Book::Wallet(p)).unwrap(),
            (price - fee) as i64
        );
    }
    assert_eq!(ing.store().balance(Book::Escrow(job)).unwrap(), 0);
    assert_eq!(ing.store().ledger_sum().unwrap(), 0);
}
