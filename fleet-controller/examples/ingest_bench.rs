//! Ingest throughput through a real Mosquitto: N simulated devices' signed records published
//! as fast as one client can (one record per message, then batches of 500), stored by the
//! controller (in-process, SQLite on disk), timed until the last is stored; beside it,
//! Mosquitto's raw publish-to-subscribe rate with the same message size and client library.
//!
//! Then, at a steady paced load, ingest latency p50/p99 from publish to the signed ack that
//! covers the record.
//!
//! `cargo run --release -p fleet-controller --example ingest_bench [DEVICES] [RECORDS_PER_DEVICE] [PACE_PER_S]`

use std::time::{Duration, Instant};

use attest::Envelope;
use attest::sample::SampleDevice;
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::{Mosquitto, TempDir, free_port};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn client(port: u16, name: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(name, "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_inflight(1000);
    AsyncClient::new(o, 10_000)
}

/// Publishes every payload with QoS 1, driving the event loop until all are acknowledged.
async fn publish_all(port: u16, name: &str, msgs: Vec<(String, Vec<u8>)>) {
    let (c, mut ev) = client(port, name);
    let n = msgs.len();
    let pub_task = tokio::spawn(async move {
        for (t, p) in msgs {
            c.publish(t, QoS::AtLeastOnce, false, p).await.unwrap();
        }
        c
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.unwrap() {
            acked += 1;
        }
    }
    let _ = pub_task.await;
}

fn main() {
    let devices: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let per: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Mosquitto::start();
    let port = broker.port;

    // Signed material, made before any clock starts.
    let mut fleet: Vec<SampleDevice> = (0..devices)
        .map(|i| SampleDevice::new((i % 250) as u8 + 1))
        .collect();
    fleet.dedup_by_key(|d| d.key.device_id());
    let chains: Vec<Vec<Envelope>> = fleet.iter_mut().map(|d| d.chain(3 * per, 10_000)).collect();
    let size = chains[0][1].as_bytes().len();
    let topic =
        |d: &SampleDevice, leaf: &str| format!("heliostat/v1/dev/{}/{leaf}", d.key.device_id());

    // Mosquitto's raw rate: same size, same library, a counting subscriber.
    let raw_n = fleet.len() * per;
    let raw = rt.block_on(async {
        let (sub, mut sev) = client(port, "raw-sub");
        sub.subscribe("bench/raw", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sev.poll().await.unwrap() {
                break;
            }
        }
        let counter = tokio::spawn(async move {
            let mut got = 0;
            while got < raw_n {
                if let Event::Incoming(Packet::Publish(_)) = sev.poll().await.unwrap() {
                    got += 1;
                }
            }
        });
        let msgs: Vec<(String, Vec<u8>)> = (0..raw_n)
            .map(|_| ("bench/raw".to_string(), vec![7u8; size]))
            .collect();
        let t = Instant::now();
        publish_all(port, "raw-pub", msgs).await;
        counter.await.unwrap();
        t.elapsed()
    });

    // The physical bound of the batched path: decoding and the coalesced signature check
    // (`attest::sigbatch::verify_messages`, on every core) of the catch-up phase's records,
    // 1,000 at a time as one ingest batch, with nothing else running.
    let keys: Vec<attest::PublicKey> = fleet.iter().map(|d| d.key.public()).collect();
    let verify_n = fleet.len() * per;
    let verify = {
        let t = Instant::now();
        let mut items = Vec::with_capacity(1_000);
        let mut good = 0usize;
        let mut flush = |items: &mut Vec<_>| {
            good += attest::sigbatch::verify_messages(std::mem::take(items))
                .iter()
                .filter(|r| r.is_ok())
                .count();
        };
        for i in per..2 * per {
            for (c, key) in chains.iter().zip(&keys) {
                let env = Envelope::decode(c[i].as_bytes()).unwrap();
                let msg = attest::msg::ChainMessage::open(&env).unwrap();
                items.push((env, msg, key));
                if items.len() == 1_000 {
                    flush(&mut items);
                }
            }
        }
        flush(&mut items);
        assert_eq!(good, verify_n, "every sample signature verifies");
        t.elapsed()
    };

    // The controller, in-process, ingesting from the broker.
    let tmp = TempDir::new("ingest-bench");
    let mut cfg = fleet_controller::config::ControllerConfig::new(
        tmp.path().join("data"),
        fleet_controller::config::BrokerConfig {
            port,
            ..fleet_controller::config::BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = true;
    cfg.api.listen = format!("127.0.0.1:{}", free_port());
    cfg.validate().unwrap();
    let db = cfg.db_path();
    rt.spawn(fleet_controller::runtime::run(cfg, std::future::pending()));
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(publish_all(
        port,
        "hellos",
        fleet
            .iter()
            .map(|d| (topic(d, "hello"), d.hello().into_bytes()))
            .collect(),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let store = SqliteStore::open(&db).unwrap();
    let stored = |store: &SqliteStore| -> u64 {
        fleet
            .iter()
            .map(|d| store.count_items(d.key.device_id()).unwrap())
            .sum()
    };
    let wait_for = |target: u64| {
        let deadline = Instant::now() + Duration::from_secs(300);
        while stored(&store) < target {
            assert!(
                Instant::now() < deadline,
                "ingest stalled at {} of {target}",
                stored(&store)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // One record per message, round-robin over devices (as a live fleet sends).
    let mut singles = Vec::new();
    for i in 0..per {
        for (d, c) in fleet.iter().zip(&chains) {
            singles.push((topic(d, "records"), c[i].as_bytes().to_vec()));
        }
    }
    let n1 = singles.len() as u64;
    let t = Instant::now();
    rt.block_on(publish_all(port, "singles", singles));
    wait_for(n1);
    let single = t.elapsed();

    // The catch-up: batches of up to 500 records per message.
    let mut batches = Vec::new();
    for (d, c) in fleet.iter().zip(&chains) {
        for chunk in c[per..2 * per].chunks(500) {
            batches.push((
                topic(d, "records"),
                attest::batch::encode(chunk.iter().map(|e| e.as_bytes())),
            ));
        }
    }
    let t = Instant::now();
    rt.block_on(publish_all(port, "batches", batches));
    wait_for(2 * n1);
    let batched = t.elapsed();

    // Latency at a steady load: records paced at `pace` per second, one per message;
    // latency is publish to the signed ack that covers the record (stored, committed and
    // acknowledged: what the agent waits for).
    let pace: f64 = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000.0);
    let mut lat = rt.block_on(async {
        let (sub, mut sev) = client(port, "acks");
        sub.subscribe("heliostat/v1/dev/+/ack", QoS::AtLeastOnce)
            .await
            .unwrap();
        // The retained acks of the phases before arrive first; wait for them to settle.
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(ev) = tokio::time::timeout_at(settle, sev.poll()).await {
            ev.unwrap();
        }
        let devs: Vec<attest::DeviceId> = fleet.iter().map(|d| d.key.device_id()).collect();
        let mut order = Vec::new();
        for i in 2 * per..3 * per {
            for (d, c) in fleet.iter().zip(&chains) {
                order.push((
                    d.key.device_id(),
                    i as u64,
                    topic(d, "records"),
                    c[i].as_bytes().to_vec(),
                ));
            }
        }
        let n = order.len();
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(attest::DeviceId, u64, Instant)>();
        let publisher = tokio::spawn(async move {
            let (c, mut ev) = client(port, "paced");
            tokio::spawn(async move { while ev.poll().await.is_ok() {} });
            let start = Instant::now();
            for (k, (dev, seq, t, b)) in order.into_iter().enumerate() {
                let due = start + Duration::from_secs_f64(k as f64 / pace);
                tokio::time::sleep_until(due.into()).await;
                let _ = tx.send((dev, seq, Instant::now()));
                c.publish(t, QoS::AtLeastOnce, false, b).await.unwrap();
            }
        });
        let mut sent: std::collections::HashMap<
            attest::DeviceId,
            std::collections::VecDeque<(u64, Instant)>,
        > = devs.iter().map(|d| (*d, Default::default())).collect();
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            tokio::select! {
                Some((d, seq, t)) = rx.recv() => sent.get_mut(&d).unwrap().push_back((seq, t)),
                ev = sev.poll() => {
                    if let Event::Incoming(Packet::Publish(p)) = ev.unwrap() {
                        let now = Instant::now();
                        let Ok(env) = Envelope::decode(&p.payload) else { continue };
                        let Ok(ack) = env.open::<attest::msg::Ack>() else { continue };
                        let q = sent.get_mut(&ack.device).unwrap();
                        while q.front().is_some_and(|(s, _)| *s <= ack.up_to.0) {
                            let (_, t) = q.pop_front().unwrap();
                            lat.push(now - t);
                        }
                    }
                }
            }
        }
        publisher.await.unwrap();
        lat
    });
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{} devices x {per} records, {size}-byte signed records",
        fleet.len()
    );
    println!(
        "mosquitto raw publish->subscribe (QoS 1, {size} B): {:.0} msg/s",
        rate(raw_n as u64, raw)
    );
    println!(
        "ingest, one record per message: {:.0} records/s stored ({:.0} % of raw)",
        rate(n1, single),
        100.0 * rate(n1, single) / rate(raw_n as u64, raw)
    );
    println!(
        "decode + coalesced signature check on every core (the batched path's bound): {:.0} records/s",
        rate(verify_n as u64, verify)
    );
    println!(
        "ingest, batches of 500: {:.0} records/s stored ({:.0} % of that bound)",
        rate(n1, batched),
        100.0 * rate(n1, batched) / rate(verify_n as u64, verify)
    );
    println!(
        "ingest latency at {pace:.0} records/s (publish -> covering ack): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} records",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lat.len()
    );
    drop(broker);
}
