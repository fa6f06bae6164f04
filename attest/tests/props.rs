//! Property tests: every message round-trips through its encoding, and any single-bit flip
//! in a signed message is refused.

use attest::msg::*;
use attest::{ChannelId, Envelope, Hash32, KeyPair, Millijoules, Milliwatts, SeqNo, TimestampMs};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = ChannelKind> {
    prop_oneof![
        Just(ChannelKind::Solar),
        Just(ChannelKind::BatteryCharge),
        Just(ChannelKind::BatteryDischarge),
        Just(ChannelKind::GridImport),
        Just(ChannelKind::GridExport),
        Just(ChannelKind::Load),
        Just(ChannelKind::Gpu),
    ]
}

fn link() -> impl Strategy<Value = Link> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(d, s, t, p)| Link {
            device: attest::DeviceId(d),
            seq: SeqNo(s),
            timestamp: TimestampMs(t),
            prev: Hash32(p),
        })
}

fn record() -> impl Strategy<Value = MeterRecord> {
    let reading = (
        kind(),
        any::<u64>(),
        any::<u32>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(0u16..=1000),
    )
        .prop_map(|(kind, e, p, v, soc)| ChannelReading {
            channel: ChannelId(0),
            kind,
            energy: Millijoules(e),
            power: Milliwatts(p),
            voltage_mv: v,
            soc_permille: soc,
        });
    (link(), proptest::collection::vec(reading, 0..=16)).prop_map(|(link, mut channels)| {
        for (i, c) in channels.iter_mut().enumerate() {
            c.channel = ChannelId(i as u8);
        }
        MeterRecord {
            link,
            channels,
            unmetered: vec![],
        }
    })
}

fn command() -> impl Strategy<Value = Command> {
    let body = prop_oneof![
        Just(CommandBody::Drain),
        any::<[u8; 16]>().prop_map(|j| CommandBody::Pause { job: JobId(j) }),
        any::<[u8; 16]>().prop_map(|j| CommandBody::Cancel { job: JobId(j) }),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| CommandBody::Resend {
            from: SeqNo(a.min(b)),
            to: SeqNo(a.max(b))
        }),
        (
            any::<[u8; 16]>(),
            "[a-z_]{1,20}",
            any::<i64>(),
            any::<[u8; 32]>(),
            any::<u64>()
        )
            .prop_map(|(id, k, v, h, e)| {
                CommandBody::RunJob(JobSpec {
                    id: JobId(id),
                    workload: Workload::Builtin {
                        kernel: k.clone(),
                        params: vec![Param { name: k, value: v }],
                    },
                    inputs: vec![Hash32(h)],
                    input_sizes: vec![e % 4096],
                    output_sizes: vec![32],
                    limits: JobLimits {
                        max_energy: Millijoules(e),
                        max_duration_ms: 1,
                        deadline: TimestampMs(e),
                    },
                })
            }),
    ];
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        body,
    )
        .prop_map(|(d, n, t, dt, body)| Command {
            device: attest::DeviceId(d),
            nonce: n,
            issued: TimestampMs(t / 2),
            expires: TimestampMs(t / 2 + dt as u64),
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn meter_records_round_trip(rec in record(), seed in any::<[u8; 32]>()) {
        let key = KeyPair::from_seed(&seed);
        let env = Envelope::seal(&rec, &key);
        let back = Envelope::decode(env.as_bytes()).unwrap();
        prop_assert_eq!(back.open::<MeterRecord>().unwrap(), rec);
        prop_assert!(back.verify(&key.public()).is_ok());
    }

    #[test]
    fn commands_round_trip(cmd in command(), seed in any::<[u8; 32]>()) {
        let key = KeyPair::from_seed(&seed);
        let env = Envelope::seal(&cmd, &key);
        prop_assert_eq!(Envelope::decode(env.as_bytes()).unwrap().open::<Command>().unwrap(), cmd);
    }

    #[test]
    fn acks_and_anchor_entries_round_trip(l in link(), n in any::<u64>(), h in any::<[u8; 32]>()) {
        let key = KeyPair::from_seed(&[3; 32]);
        let ack = Ack { device: l.device, up_to: l.seq, hash: Hash32(h), timestamp: l.timestamp };
        prop_assert_eq!(Envelope::seal(&ack, &key).open::<Ack>().unwrap(), ack);
        let a = AnchorEntry { index: n, prev: l.prev, epoch: attest::EpochId(n / 3), tree_size: l.seq.0, root: Hash32(h), timestamp: l.timestamp };
        prop_assert_eq!(Envelope::seal(&a, &key).open::<AnchorEntry>().unwrap(), a);
    }

    #[test]
    fn any_single_bit_flip_in_a_signed_record_is_refused(rec in record(), bit in any::<proptest::sample::Index>()) {
        let key = KeyPair::from_seed(&[7; 32]);
        let env = Envelope::seal(&rec, &key);
        let mut bytes = env.into_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        // Refused at the frame, at the signature, or (never) accepted.
        let accepted = Envelope::decode(&bytes).is_ok_and(|e| e.verify(&key.public()).is_ok());
        prop_assert!(!accepted, "flip of bit {} accepted", i);
    }

    #[test]
    fn the_json_rendering_round_trips_too(rec in record()) {
        let json = serde_json::to_string(&rec).unwrap();
        prop_assert_eq!(serde_json::from_str::<MeterRecord>(&json).unwrap(), rec);
    }
}
