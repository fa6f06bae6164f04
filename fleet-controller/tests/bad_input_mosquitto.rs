//! Bad input over a real broker: random bytes, oversize payloads, forged signatures,
//! replays, a fork, a record on another device's topic and clock skew, published with
//! `mosquitto_pub` to the real controller process. Each bad message is rejected and counted
//! once under its reason (the counts are asserted exactly), a replay is neither stored again
//! nor counted as a rejection but acknowledged again, and a good device's records keep being
//! stored, byte for byte.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use attest::Envelope;
use attest::msg::{Ack, MeterRecord};
use attest::sample::SampleDevice;
use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::{Mosquitto, Proc, TempDir, free_port, require};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

fn publish(port: u16, topic: &str, payload: &[u8], dir: &Path) {
    let f = dir.join("payload.bin");
    std::fs::write(&f, payload).unwrap();
    let ok = Command::new(require("mosquitto_pub", "mosquitto-clients"))
        .args(["-p", &port.to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(ok.success(), "mosquitto_pub to {topic}");
}

fn topic(dev: &SampleDevice, leaf: &str) -> String {
    format!("heliostat/v1/dev/{}/{leaf}", dev.key.device_id())
}

#[test]
fn garbage_forgeries_forks_and_skew_are_counted_exactly_replays_are_reacknowledged_and_good_records_flow()
 {
    let tmp = TempDir::new("bad-input");
    let broker = Mosquitto::start();
    let cfg = tmp.path().join("controller.toml");
    let mut config = ControllerConfig::new(
        tmp.path().join("data"),
        BrokerConfig {
            port: broker.port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    config.enrollment.auto_approve = true;
    config.api.listen = format!("127.0.0.1:{}", free_port());
    config.write_toml(&cfg).unwrap();
    let log = std::fs::File::create(tmp.path().join("controller.log")).unwrap();
    let _controller = Proc(
        Command::new(CONTROLLER)
            .args(["--config", cfg.to_str().unwrap(), "run"])
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700)); // subscribed

    // Records stamped near now, so that skew can be judged against the controller's clock.
    let now = attest::sample::SAMPLE_START.0.max(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let mut good = SampleDevice::new(21);
    let mut other = SampleDevice::new(22);
    let chain: Vec<Envelope> = (0..8)
        .map(|i| good.record_at(now - 60_000 + i * 5_000))
        .collect();
    let theirs = other.record_at(now - 50_000);
    let d = tmp.path();
    let p = broker.port;
    publish(p, &topic(&good, "hello"), good.hello().as_bytes(), d);
    publish(p, &topic(&other, "hello"), other.hello().as_bytes(), d);
    std::thread::sleep(Duration::from_millis(300));
    for e in &chain[..3] {
        publish(p, &topic(&good, "records"), e.as_bytes(), d);
    }
    // Garbage, oversize, forged, wrong topic, a fork, a replay, skew.
    publish(p, &topic(&good, "records"), b"\x01\x02 not an envelope", d);
    publish(p, &topic(&good, "records"), &vec![7u8; 300_000], d);
    let mut forged = chain[3].as_bytes().to_vec();
    let n = forged.len();
    forged[n - 2] ^= 0x40;
    publish(p, &topic(&good, "records"), &forged, d);
    publish(p, &topic(&good, "records"), theirs.as_bytes(), d);
    let mut fork: MeterRecord = chain[1].open().unwrap();
    fork.channels[0].energy.0 += 5;
    publish(
        p,
        &topic(&good, "records"),
        Envelope::seal(&fork, &good.key).as_bytes(),
        d,
    );
    publish(p, &topic(&good, "records"), chain[0].as_bytes(), d);
    let mut future = SampleDevice::new(23);
    let ahead = future.record_at(now + 3_600_000);
    publish(p, &topic(&future, "hello"), future.hello().as_bytes(), d);
    std::thread::sleep(Duration::from_millis(300));
    publish(p, &topic(&future, "records"), ahead.as_bytes(), d);
    // The good device goes on.
    for e in &chain[3..] {
        publish(p, &topic(&good, "records"), e.as_bytes(), d);
    }

    let store = SqliteStore::open(&tmp.path().join("data/controller.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.count_items(good.key.device_id()).unwrap() < 8 {
        assert!(Instant::now() < deadline, "good records stopped flowing");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A replay of a stored record once the chain has moved on: not stored again, not
    // counted as a rejection, but acknowledged again (up to the tip, with the tip's hash),
    // so an agent that missed the first ack stops resending.
    let ack_topic = topic(&good, "ack");
    let acks = Command::new(require("mosquitto_sub", "mosquitto-clients"))
        .args(["-p", &p.to_string(), "-q", "1", "-t", &ack_topic])
        .args(["-R", "-C", "1", "-W", "15", "-F", "%x"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // subscribed; the retained ack ignored (-R)
    publish(p, &topic(&good, "records"), chain[2].as_bytes(), d);
    let out = acks.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "no ack after replaying seq 2 ({})",
        out.status
    );
    let key = attest::keyfile::load_or_create(&tmp.path().join("data/controller.key"))
        .unwrap()
        .0;
    let ack_env = Envelope::decode(
        &attest::hex::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap(),
    )
    .unwrap();
    ack_env
        .verify(&key.public())
        .expect("an ack signed by the controller");
    let ack: Ack = ack_env.open().unwrap();
    assert_eq!(ack.up_to.0, 7, "the replay is acknowledged up to the tip");
    assert_eq!(ack.hash, chain[7].hash());

    std::thread::sleep(Duration::from_millis(300));
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("data/status.json")).unwrap())
            .unwrap();
    // Every bad message above counted once, under its reason, and nothing else: the two
    // replays (seq 0 mid-stream, seq 2 at the end) are duplicates, not rejections.
    assert_eq!(
        status["rejected"],
        serde_json::json!({
            "malformed": 2,
            "bad_signature": 1,
            "wrong_topic": 1,
            "fork": 1,
            "future_timestamp": 1,
        }),
        "{status}"
    );
    // The eight good records (hellos enrol, they are not chain items): nothing twice.
    assert_eq!(status["stored"], 8, "{status}");
    assert_eq!(
        store.count_items(good.key.device_id()).unwrap(),
        8,
        "exactly the good records"
    );
    assert_eq!(store.count_items(future.key.device_id()).unwrap(), 0);
    // The stored chain is the good one, byte for byte.
    for (i, (_, b)) in store
        .items(good.key.device_id(), attest::SeqNo(0), attest::SeqNo(7))
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(b.as_slice(), chain[i].as_bytes());
    }
}
