//! The envelope and its decoders against hostile bytes: bounds first, typed reasons, no panics.

use attest::envelope::{DecodeError, MAX_ENVELOPE_LEN, MIN_ENVELOPE_LEN, Message};
use attest::msg::{
    Ack, AnyMessage, ChannelKind, ChannelReading, Command, CommandBody, Link, MeterRecord,
};
use attest::sample::SampleDevice;
use attest::{
    ChannelId, Envelope, Hash32, Kind, Millijoules, Milliwatts, SeqNo, TimestampMs, batch,
};

fn four_channel_record(dev: &SampleDevice) -> MeterRecord {
    // Realistic worst-ish values: a year of a 1 kW array in the solar counter (45 bits),
    // two years of load, voltages on every channel, SoC on the battery.
    let ch = |id: u8, kind, energy: u64, power: u32, soc: Option<u16>| ChannelReading {
        channel: ChannelId(id),
        kind,
        energy: Millijoules(energy),
        power: Milliwatts(power),
        voltage_mv: Some(25_600),
        soc_permille: soc,
    };
    MeterRecord {
        link: Link {
            device: dev.key.device_id(),
            seq: SeqNo(3_153_600), // a year of records at 10 s
            timestamp: TimestampMs(1_782_000_000_000),
            prev: Hash32([0xab; 32]),
        },
        channels: vec![
            ch(0, ChannelKind::Solar, 31_536_000_000_000, 1_000_000, None),
            ch(
                1,
                ChannelKind::BatteryCharge,
                9_000_000_000_000,
                400_000,
                Some(1000),
            ),
            ch(2, ChannelKind::GridImport, 5_000_000_000_000, 250_000, None),
            ch(3, ChannelKind::Load, 40_000_000_000_000, 300_000, None),
        ],
        unmetered: vec![],
    }
}

#[test]
fn a_signed_four_channel_record_encodes_in_at_most_200_bytes() {
    let dev = SampleDevice::new(1);
    let env = Envelope::seal(&four_channel_record(&dev), &dev.key);
    let len = env.as_bytes().len();
    eprintln!("4-channel signed record: {len} bytes");
    assert!(len <= 200, "4-channel signed record is {len} bytes");
    // And it opens to the same value.
    assert_eq!(
        env.open::<MeterRecord>().unwrap(),
        four_channel_record(&dev)
    );
}

#[test]
fn truncated_oversize_wrong_version_and_unknown_kind_are_refused_by_reason() {
    let dev = SampleDevice::new(2);
    let env = Envelope::seal(&four_channel_record(&dev), &dev.key);
    let bytes = env.as_bytes();
    assert_eq!(
        Envelope::decode(&bytes[..10]),
        Err(DecodeError::TooShort { len: 10 })
    );
    assert_eq!(Envelope::decode(&[]), Err(DecodeError::TooShort { len: 0 }));
    let big = vec![1u8; MAX_ENVELOPE_LEN + 1];
    assert_eq!(
        Envelope::decode(&big),
        Err(DecodeError::TooLong {
            len: MAX_ENVELOPE_LEN + 1,
            max: MAX_ENVELOPE_LEN
        })
    );
    let mut v2 = bytes.to_vec();
    v2[0] = 2;
    assert_eq!(
        Envelope::decode(&v2),
        Err(DecodeError::UnsupportedVersion(2))
    );
    let mut k = bytes.to_vec();
    k[1] = 99;
    assert_eq!(Envelope::decode(&k), Err(DecodeError::UnknownKind(99)));
    // A truncated payload is a frame that decodes but a payload that does not.
    let mut cut = bytes[..bytes.len() - 70].to_vec();
    cut.extend_from_slice(&[0u8; 64]);
    let e = Envelope::decode(&cut).unwrap();
    assert!(matches!(
        e.open::<MeterRecord>(),
        Err(DecodeError::Malformed {
            kind: Kind::MeterRecord,
            ..
        })
    ));
    // Wrong kind asked for.
    assert_eq!(
        env.open::<Ack>(),
        Err(DecodeError::WrongKind {
            expected: Kind::Ack,
            got: Kind::MeterRecord
        })
    );
}

#[test]
fn trailing_bytes_and_non_canonical_payloads_are_refused() {
    let dev = SampleDevice::new(3);
    let env = Envelope::seal(&four_channel_record(&dev), &dev.key);
    let payload = env.payload().to_vec();
    let mut trailing = vec![1, Kind::MeterRecord as u8];
    trailing.extend_from_slice(&payload);
    trailing.push(0);
    trailing.extend_from_slice(&[0; 64]);
    assert_eq!(
        Envelope::decode(&trailing).unwrap().open::<MeterRecord>(),
        Err(DecodeError::TrailingBytes {
            kind: Kind::MeterRecord,
            count: 1
        })
    );
    // The sequence number varint (after the 16-byte device id) padded with a redundant
    // continuation byte: same value, different bytes.
    let mut padded = vec![1, Kind::MeterRecord as u8];
    padded.extend_from_slice(&payload[..16]);
    let seq_len = payload[16..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let mut seq = payload[16..16 + seq_len].to_vec();
    *seq.last_mut().unwrap() |= 0x80;
    seq.push(0);
    padded.extend_from_slice(&seq);
    padded.extend_from_slice(&payload[16 + seq_len..]);
    padded.extend_from_slice(&[0; 64]);
    let r = Envelope::decode(&padded).unwrap().open::<MeterRecord>();
    assert!(
        matches!(
            r,
            Err(DecodeError::NonCanonical { .. }) | Err(DecodeError::Malformed { .. })
        ),
        "padded varint accepted: {r:?}"
    );
}

#[test]
fn protocol_limits_are_enforced_after_decoding() {
    let dev = SampleDevice::new(4);
    let mut rec = four_channel_record(&dev);
    rec.channels = (0..17)
        .map(|i| ChannelReading {
            channel: ChannelId(i),
            ..rec.channels[0]
        })
        .collect();
    let env = Envelope::seal(&rec, &dev.key);
    assert_eq!(
        env.open::<MeterRecord>(),
        Err(DecodeError::TooMany {
            what: "channels",
            count: 17,
            max: 16
        })
    );
    let mut dup = four_channel_record(&dev);
    dup.channels[1].channel = ChannelId(0);
    assert!(matches!(
        Envelope::seal(&dup, &dev.key).open::<MeterRecord>(),
        Err(DecodeError::Invalid { .. })
    ));
    let mut soc = four_channel_record(&dev);
    soc.channels[1].soc_permille = Some(1001);
    assert!(soc.validate().is_err());
    let cmd = Command {
        device: dev.key.device_id(),
        nonce: 1,
        issued: TimestampMs(10),
        expires: TimestampMs(5),
        body: CommandBody::Drain,
    };
    assert!(matches!(
        Envelope::seal(&cmd, &dev.key).open::<Command>(),
        Err(DecodeError::Invalid { .. })
    ));
    // A job must say how large each of its inputs is.
    let job = attest::msg::JobSpec {
        id: attest::msg::JobId([1; 16]),
        workload: attest::msg::Workload::Builtin {
            kernel: "sha256_batch".into(),
            params: vec![],
        },
        inputs: vec![Hash32::digest(b"a"), Hash32::digest(b"b")],
        input_sizes: vec![1],
        output_sizes: vec![],
        limits: attest::msg::JobLimits {
            max_energy: Millijoules(0),
            max_duration_ms: 0,
            deadline: TimestampMs(0),
        },
    };
    let cmd = Command {
        expires: TimestampMs(10),
        body: CommandBody::RunJob(job),
        ..cmd
    };
    assert_eq!(
        Envelope::seal(&cmd, &dev.key).open::<Command>(),
        Err(DecodeError::Invalid {
            what: "job input_sizes (one per input)"
        })
    );
}

/// A small deterministic generator so the test needs no RNG crate.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_inputs_never_panic_any_decoder() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let dev = SampleDevice::new(5);
    let mut d = dev.clone();
    let seeds: Vec<Vec<u8>> = vec![
        d.hello().into_bytes(),
        d.record_at(1_000).into_bytes(),
        Envelope::seal(&four_channel_record(&dev), &dev.key).into_bytes(),
    ];
    let mut decoded_ok = 0;
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 300) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if b.len() >= 2 {
                b[0] = 1;
                b[1] = (rng.next() % 9) as u8;
            }
            b
        } else {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..=(rng.next() % 4) {
                let at = (rng.next() as usize) % b.len();
                b[at] ^= 1 << (rng.next() % 8);
            }
            if rng.next().is_multiple_of(4) {
                b.truncate((rng.next() as usize) % b.len());
            }
            b
        };
        if Envelope::decode(&bytes).is_ok_and(|env| AnyMessage::open(&env).is_ok()) {
            decoded_ok += 1;
        }
        let _ = batch::decode(&bytes);
        let _ = attest::bundle::ProofBundle::decode(&bytes);
    }
    // Bit flips in the signature leave the payload decodable, so some must decode.
    assert!(
        decoded_ok > 100,
        "only {decoded_ok} inputs decoded: the generator is not reaching the decoders"
    );
}

#[test]
fn batches_split_back_into_their_envelopes_and_bad_framing_is_refused() {
    let mut dev = SampleDevice::new(6);
    let envs = dev.chain(50, 10_000);
    let payload = batch::encode(envs.iter().map(|e| e.as_bytes()));
    assert!(batch::is_batch(&payload));
    assert!(!batch::is_batch(envs[0].as_bytes()));
    let back: Vec<Envelope> = batch::decode(&payload)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, envs);
    // One damaged item costs only that item.
    let mut items: Vec<Vec<u8>> = envs.iter().map(|e| e.as_bytes().to_vec()).collect();
    items[3][0] = 7;
    let payload = batch::encode(items.iter().map(|v| v.as_slice()));
    let got = batch::decode(&payload).unwrap();
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(got[3], Err(DecodeError::UnsupportedVersion(7)));
    // Framing errors refuse the whole payload.
    assert!(matches!(
        batch::decode(&payload[..payload.len() - 1]),
        Err(batch::BatchError::Truncated { .. })
    ));
    let mut extra = payload.clone();
    extra.push(0);
    assert_eq!(
        batch::decode(&extra),
        Err(batch::BatchError::TrailingBytes { count: 1 })
    );
    assert_eq!(
        batch::decode(&[1, 0xB0, 0xff, 0xff, 0x7f]),
        Err(batch::BatchError::TooManyItems { count: 2_097_151 })
    );
    assert_eq!(batch::decode(&[1, 2, 3]), Err(batch::BatchError::NotABatch));
    // The builder keeps to the item limit.
    let mut b = batch::BatchBuilder::default();
    let mut n = 0;
    while b.push(envs[0].as_bytes()) {
        n += 1;
    }
    assert_eq!(n, batch::MAX_BATCH_ITEMS);
    assert_eq!(batch::decode(&b.finish()).unwrap().len(), n);
}

#[test]
fn the_smallest_frame_is_version_kind_and_signature() {
    let mut b = vec![1u8, Kind::Ack as u8];
    b.extend_from_slice(&[0; 64]);
    assert_eq!(b.len(), MIN_ENVELOPE_LEN);
    let env = Envelope::decode(&b).unwrap();
    assert!(env.payload().is_empty());
    assert!(matches!(
        env.open::<Ack>(),
        Err(DecodeError::Malformed { .. })
    ));
}
