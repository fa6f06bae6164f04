//! The chain checker: every outcome and every rejection reason, driven with plain data.

use attest::chain::{ChainPolicy, ChainVerifier, Outcome, Rejection};
use attest::msg::{ChainRestart, MeterRecord, RestartReason};
use attest::sample::{SAMPLE_START, SampleDevice};
use attest::{ChannelId, Envelope, Hash32, Millijoules, SeqNo, TimestampMs};

const LATER: TimestampMs = TimestampMs(SAMPLE_START.0 + 7 * 86_400_000);

fn checker(dev: &SampleDevice) -> ChainVerifier {
    ChainVerifier::new(&dev.key.public(), ChainPolicy::default()).unwrap()
}

fn accepted(o: Result<Outcome, Rejection>) -> SeqNo {
    match o {
        Ok(Outcome::Accepted(v)) => v.link().seq,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// Re-signs a record after `edit`, keeping the device's key (a device that misbehaves).
fn resign(dev: &SampleDevice, env: &Envelope, edit: impl FnOnce(&mut MeterRecord)) -> Envelope {
    let mut rec: MeterRecord = env.open().unwrap();
    edit(&mut rec);
    Envelope::seal(&rec, &dev.key)
}

#[test]
fn a_clean_chain_is_accepted_in_order_and_redelivery_is_a_duplicate() {
    let mut dev = SampleDevice::new(1);
    let chain = dev.chain(30, 10_000);
    let mut v = checker(&dev);
    for (i, env) in chain.iter().enumerate() {
        assert_eq!(accepted(v.feed(env, LATER)), SeqNo(i as u64));
    }
    assert!(matches!(
        v.feed(&chain[29], LATER),
        Ok(Outcome::Duplicate { seq: SeqNo(29) })
    ));
    assert!(matches!(
        v.feed(&chain[20], LATER),
        Ok(Outcome::Duplicate { seq: SeqNo(20) })
    ));
    assert_eq!(v.tip().unwrap().seq, SeqNo(29));
    assert_eq!(v.tip().unwrap().hash, chain[29].hash());
}

#[test]
fn a_forged_signature_is_rejected() {
    let mut dev = SampleDevice::new(2);
    let chain = dev.chain(2, 10_000);
    let mut v = checker(&dev);
    let mut forged = chain[0].as_bytes().to_vec();
    let n = forged.len();
    forged[n - 1] ^= 1;
    let forged = Envelope::decode(&forged).unwrap();
    assert_eq!(
        v.feed(&forged, LATER).unwrap_err(),
        Rejection::BadSignature { seq: SeqNo(0) }
    );
    // Signed by another key entirely.
    let other = SampleDevice::new(3);
    let stolen = resign(&other, &chain[0], |_| {});
    assert_eq!(
        v.feed(&stolen, LATER).unwrap_err().reason(),
        "bad_signature"
    );
    accepted(v.feed(&chain[0], LATER));
}

#[test]
fn a_record_of_another_device_is_rejected() {
    let mut a = SampleDevice::new(4);
    let mut b = SampleDevice::new(5);
    let _ = a.chain(1, 10_000);
    let theirs = b.chain(1, 10_000);
    let mut v = checker(&a);
    assert!(matches!(
        v.feed(&theirs[0], LATER),
        Err(Rejection::WrongDevice { .. })
    ));
}

#[test]
fn gaps_forks_and_broken_links_are_rejected_by_reason() {
    let mut dev = SampleDevice::new(6);
    let chain = dev.chain(5, 10_000);
    let mut v = checker(&dev);
    assert_eq!(
        v.feed(&chain[1], LATER).unwrap_err(),
        Rejection::SequenceGap {
            expected: SeqNo(0),
            got: SeqNo(1)
        }
    );
    accepted(v.feed(&chain[0], LATER));
    accepted(v.feed(&chain[1], LATER));
    assert_eq!(
        v.feed(&chain[3], LATER).unwrap_err(),
        Rejection::SequenceGap {
            expected: SeqNo(2),
            got: SeqNo(3)
        }
    );
    // Fork: same sequence number, different content, validly signed.
    let fork = resign(&dev, &chain[1], |r| r.channels[0].energy.0 += 1);
    assert_eq!(
        v.feed(&fork, LATER).unwrap_err(),
        Rejection::Fork { seq: SeqNo(1) }
    );
    // Prev-hash mismatch.
    let unlinked = resign(&dev, &chain[2], |r| r.link.prev = Hash32([9; 32]));
    assert_eq!(
        v.feed(&unlinked, LATER).unwrap_err(),
        Rejection::PrevMismatch { seq: SeqNo(2) }
    );
    accepted(v.feed(&chain[2], LATER));
    // A genesis with a non-zero prev is refused.
    let mut fresh = checker(&dev);
    let bad_genesis = resign(&dev, &chain[0], |r| r.link.prev = Hash32([1; 32]));
    assert_eq!(
        fresh.feed(&bad_genesis, LATER).unwrap_err(),
        Rejection::PrevMismatch { seq: SeqNo(0) }
    );
}

#[test]
fn counters_going_backwards_or_changing_kind_are_rejected() {
    let mut dev = SampleDevice::new(7);
    let chain = dev.chain(3, 3_600_000);
    let mut v = checker(&dev);
    accepted(v.feed(&chain[0], LATER));
    accepted(v.feed(&chain[1], LATER));
    let back = resign(&dev, &chain[2], |r| r.channels[4].energy = Millijoules(0));
    assert!(matches!(
        v.feed(&back, LATER).unwrap_err(),
        Rejection::CounterBackwards {
            seq: SeqNo(2),
            channel: ChannelId(4),
            ..
        }
    ));
    let kind = resign(&dev, &chain[2], |r| {
        r.channels[0].kind = attest::msg::ChannelKind::Load
    });
    assert_eq!(
        v.feed(&kind, LATER).unwrap_err(),
        Rejection::ChannelKindChanged {
            seq: SeqNo(2),
            channel: ChannelId(0)
        }
    );
    accepted(v.feed(&chain[2], LATER));
}

#[test]
fn clock_skew_and_time_going_backwards_are_rejected() {
    let mut dev = SampleDevice::new(8);
    let chain = dev.chain(3, 10_000);
    let policy = ChainPolicy {
        max_future_skew_ms: 5_000,
        ..ChainPolicy::default()
    };
    let mut v = ChainVerifier::new(&dev.key.public(), policy).unwrap();
    // The checker's clock is 6 s behind the first record.
    let now = TimestampMs(SAMPLE_START.0 - 6_000);
    assert!(matches!(
        v.feed(&chain[0], now).unwrap_err(),
        Rejection::FutureTimestamp { .. }
    ));
    accepted(v.feed(&chain[0], TimestampMs(SAMPLE_START.0 - 4_000)));
    let earlier = resign(&dev, &chain[1], |r| {
        r.link.timestamp = TimestampMs(SAMPLE_START.0 - 1)
    });
    assert!(matches!(
        v.feed(&earlier, LATER).unwrap_err(),
        Rejection::TimeBackwards { .. }
    ));
    accepted(v.feed(&chain[1], LATER));
}

#[test]
fn a_chain_restart_starts_fresh_counters_above_every_used_sequence() {
    let mut dev = SampleDevice::new(9);
    let chain = dev.chain(3, 10_000);
    let mut v = checker(&dev);
    for e in &chain {
        accepted(v.feed(e, LATER));
    }
    // The device lost its state: a new chain from a higher sequence, counters from zero.
    let mut fresh = SampleDevice::new(9);
    let mut link = fresh.next_link(SAMPLE_START.0 + 100_000);
    link.seq = SeqNo(1_000);
    let restart = ChainRestart {
        link,
        reason: RestartReason::StateLost,
        last_known: None,
        last_known_hash: None,
    };
    let restart_env = Envelope::seal(&restart, &fresh.key);
    assert_eq!(accepted(v.feed(&restart_env, LATER)), SeqNo(1_000));
    // The next record links to the restart, with counters near zero.
    let first: MeterRecord = fresh.record_at(SAMPLE_START.0 + 110_000).open().unwrap();
    let mut next = first.clone();
    next.link.seq = SeqNo(1_001);
    next.link.prev = restart_env.hash();
    assert_eq!(
        accepted(v.feed(&Envelope::seal(&next, &fresh.key), LATER)),
        SeqNo(1_001)
    );
    // A restart that reuses an old sequence number is refused.
    let mut reuse = restart.clone();
    reuse.link.seq = SeqNo(2);
    let r = v
        .feed(&Envelope::seal(&reuse, &dev.key), LATER)
        .unwrap_err();
    assert!(
        matches!(r, Rejection::BelowWindow { .. } | Rejection::Fork { .. }),
        "{r:?}"
    );
}

#[test]
fn a_resumed_checker_continues_after_a_known_tip() {
    let mut dev = SampleDevice::new(10);
    let chain = dev.chain(4, 10_000);
    let mut v = checker(&dev);
    accepted(v.feed(&chain[0], LATER));
    accepted(v.feed(&chain[1], LATER));
    let tip = v.tip().unwrap().clone();
    let mut resumed =
        ChainVerifier::resume(&dev.key.public(), ChainPolicy::default(), tip).unwrap();
    assert!(matches!(
        resumed.feed(&chain[1], LATER),
        Ok(Outcome::Duplicate { .. })
    ));
    assert_eq!(accepted(resumed.feed(&chain[2], LATER)), SeqNo(2));
    // The resumed tip keeps the counters: a load counter below seq 2's is refused.
    let back = resign(&dev, &chain[3], |r| r.channels[4].energy.0 = 1);
    let r = resumed.feed(&back, LATER);
    assert!(
        matches!(r, Err(Rejection::CounterBackwards { .. })),
        "{r:?}"
    );
}

#[test]
fn non_chain_messages_are_refused() {
    let dev = SampleDevice::new(11);
    let mut v = checker(&dev);
    assert!(matches!(
        v.feed(&dev.hello(), LATER),
        Err(Rejection::NotChained(_))
    ));
}
