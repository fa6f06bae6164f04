//! Nothing is lost: a real agent process publishes to a real Mosquitto while the test kills
//! the broker (with messages in flight that it never delivers) and kill -9s the agent,
//! several times each. A subscriber in the test plays the controller: it collects records,
//! and acknowledges the highest contiguous sequence with a signed, retained `Ack`. Every
//! sequence number the agent produced must arrive, exactly one content per number, and the
//! chain must verify with `attest`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::chain::{ChainPolicy, ChainVerifier, Outcome};
use attest::msg::Ack;
use attest::{Envelope, KeyPair, SeqNo, TimestampMs};
use hil_tests::{Mosquitto, Proc, TempDir};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Default)]
struct Received {
    records: BTreeMap<u64, Vec<u8>>,
    wire_messages: u64,
    forks: Vec<u64>,
    device: Option<attest::DeviceId>,
}

impl Received {
    fn contiguous(&self) -> Option<u64> {
        let mut next = 0;
        while self.records.contains_key(&next) {
            next += 1;
        }
        next.checked_sub(1)
    }
}

fn controller() -> KeyPair {
    KeyPair::from_seed(&[0xc0; 32])
}

/// The controller's part: collect, dedup, ack (retained, re-published on every reconnect).
fn start_subscriber(port: u16, got: Arc<Mutex<Received>>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut o = MqttOptions::new("test-controller", "127.0.0.1", port);
            o.set_max_packet_size(4 << 20, 4 << 20);
            o.set_keep_alive(Duration::from_secs(5));
            let (client, mut ev) = AsyncClient::new(o, 1024);
            let mut acked: Option<u64> = None;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ =
                            client.try_subscribe("heliostat/v1/dev/+/records", QoS::AtLeastOnce);
                        acked = None; // the broker lost the retained ack: publish it again
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let items: Vec<Envelope> = if attest::batch::is_batch(&p.payload) {
                            attest::batch::decode(&p.payload)
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap)
                                .collect()
                        } else {
                            vec![Envelope::decode(&p.payload).unwrap()]
                        };
                        let mut g = got.lock().unwrap();
                        g.wire_messages += 1;
                        for env in items {
                            let m = attest::msg::ChainMessage::open(&env).unwrap();
                            let seq = m.link().seq.0;
                            g.device = Some(m.link().device);
                            match g.records.get(&seq) {
                                Some(old) if old != env.as_bytes() => g.forks.push(seq),
                                Some(_) => {}
                                None => {
                                    g.records.insert(seq, env.into_bytes());
                                }
                            }
                        }
                        if let (Some(c), Some(dev)) = (g.contiguous(), g.device)
                            && acked != Some(c)
                        {
                            let ack = Ack {
                                device: dev,
                                up_to: SeqNo(c),
                                hash: attest::Hash32::digest(&g.records[&c]),
                                timestamp: TimestampMs(0),
                            };
                            let env = Envelope::seal(&ack, &controller());
                            let topic = format!("heliostat/v1/dev/{dev}/ack");
                            if client
                                .try_publish(topic, QoS::AtLeastOnce, true, env.into_bytes())
                                .is_ok()
                            {
                                acked = Some(c);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    });
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let cfg = format!(
        r#"data_dir = "{data}"
[site]
lat = 52.52
lon = 13.405
panel_watts_peak = 400
battery_wh = 1000
battery_reserve_wh = 200
grid_region = "DE"
[meter]
sample_interval_ms = 20
record_interval_ms = 100
[outbox]
segment_bytes = 8192
[link]
host = "127.0.0.1"
port = {port}
controller_key = "{key}"
resend_after_ms = 1500
backoff_max_ms = 400
keepalive_s = 5
batch_max = 200
[[source]]
type = "simulator"
seed = 3
"#,
        data = dir.join("data").display(),
        key = controller().public(),
    );
    let p = dir.join("agent.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn start_agent(config: &Path, log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_heliostat-agent"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn next_seq(data: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("chain-state.json")).unwrap()).unwrap();
    v["next_seq"].as_u64().unwrap()
}

#[test]
fn every_record_arrives_exactly_once_through_broker_restarts_and_agent_kill_9() {
    let tmp = TempDir::new("nothing-lost");
    let mut broker = Mosquitto::start();
    let got = Arc::new(Mutex::new(Received::default()));
    start_subscriber(broker.port, got.clone());
    let config = write_config(tmp.path(), broker.port);
    let log = tmp.path().join("agent.log");
    let mut agent = start_agent(&config, &log);

    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(1_500));
        broker.kill(); // in-flight messages die with it
        std::thread::sleep(Duration::from_millis(700));
        broker.restart();
        std::thread::sleep(Duration::from_millis(1_200));
        agent.kill9();
        std::thread::sleep(Duration::from_millis(200 + 100 * round));
        agent = start_agent(&config, &log);
    }
    std::thread::sleep(Duration::from_millis(1_000));
    agent.terminate(Duration::from_secs(5));
    let produced = next_seq(&tmp.path().join("data"));
    assert!(produced > 60, "only {produced} records produced");

    // Run again so that whatever was not acknowledged drains.
    let _agent = start_agent(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = got.lock().unwrap().contiguous();
        if c.is_some_and(|c| c + 1 >= produced) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "records 0..{produced} did not all arrive: contiguous up to {c:?}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let g = got.lock().unwrap();
    assert!(
        g.forks.is_empty(),
        "different contents for seqs {:?}",
        g.forks
    );
    for s in 0..produced {
        assert!(g.records.contains_key(&s), "seq {s} missing");
    }
    // The chain verifies from genesis with the device's key.
    let seed = std::fs::read_to_string(tmp.path().join("data/device.key")).unwrap();
    let key = KeyPair::from_seed(&attest::hex::decode_array(seed.trim()).unwrap());
    let mut v = ChainVerifier::new(&key.public(), ChainPolicy::default()).unwrap();
    for (seq, bytes) in g.records.range(..produced) {
        let env = Envelope::decode(bytes).unwrap();
        match v.feed(&env, TimestampMs(u64::MAX / 2)) {
            Ok(Outcome::Accepted(_)) => {}
            other => panic!("seq {seq}: {other:?}"),
        }
    }
    eprintln!(
        "produced {produced}, stored {} distinct, {} MQTT messages on the wire",
        g.records.len(),
        g.wire_messages
    );
}
