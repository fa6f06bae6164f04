//! A stand-in for the controller's ingest, for agent tests until the controller exists:
//! subscribes to every device's records over real MQTT, keeps one copy per sequence number
//! (noting any second content as a fork, and counting redeliveries of the same content),
//! and, while acking is on, publishes a
//! controller-signed retained `Ack` of the highest contiguous sequence (again after every
//! reconnect, since a broker without persistence forgets retained messages).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest::msg::Ack;
use attest::{Envelope, KeyPair, SeqNo, TimestampMs};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// What arrived.
#[derive(Default)]
pub struct Received {
    /// One envelope per sequence number.
    pub records: BTreeMap<u64, Vec<u8>>,
    /// MQTT messages on the records topics (single or batch).
    pub wire_messages: u64,
    /// Sequence numbers that arrived with two different contents.
    pub forks: Vec<u64>,
    /// Records that arrived again with the same content (at-least-once redelivery: a resend
    /// after a lost ack, a broker restart or an agent restart). Not kept twice.
    pub duplicates: u64,
    /// The device seen last.
    pub device: Option<attest::DeviceId>,
    /// Every device seen.
    pub devices: std::collections::BTreeSet<attest::DeviceId>,
    /// Every status message, as text.
    pub statuses: Vec<String>,
}

impl Received {
    /// The highest sequence number such that all from 0 arrived.
    pub fn contiguous(&self) -> Option<u64> {
        let mut next = 0;
        while self.records.contains_key(&next) {
            next += 1;
        }
        next.checked_sub(1)
    }
}

/// The collector: shared state plus an on/off switch for acks.
#[derive(Clone)]
pub struct Collector {
    /// What arrived.
    pub got: Arc<Mutex<Received>>,
    /// Whether acks are published.
    pub acking: Arc<AtomicBool>,
}

impl Collector {
    /// Starts collecting from the broker on `port`, acking as `controller`.
    pub fn start(port: u16, controller: KeyPair, acking: bool) -> Collector {
        let c = Collector {
            got: Default::default(),
            acking: Arc::new(AtomicBool::new(acking)),
        };
        let (got, ack_on) = (c.got.clone(), c.acking.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(collect(port, controller, got, ack_on));
        });
        c
    }

    /// The highest contiguous sequence number received.
    pub fn contiguous(&self) -> Option<u64> {
        self.got.lock().expect("lock").contiguous()
    }
}

async fn collect(
    port: u16,
    controller: KeyPair,
    got: Arc<Mutex<Received>>,
    ack_on: Arc<AtomicBool>,
) {
    let mut o = MqttOptions::new(format!("test-collector-{port}"), "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = AsyncClient::new(o, 1024);
    let mut acked: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = ev.poll() => match r {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    use attest::topics::{Leaf, every_device};
                    let _ = client.try_subscribe(every_device(Leaf::Records), QoS::AtLeastOnce);
                    let _ = client.try_subscribe(every_device(Leaf::Status), QoS::AtLeastOnce);
                    acked = None;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut g = got.lock().expect("lock");
                    if p.topic.ends_with("/status") {
                        g.statuses.push(String::from_utf8_lossy(&p.payload).into_owned());
                        continue;
                    }
                    let items: Vec<Envelope> = if attest::batch::is_batch(&p.payload) {
                        attest::batch::decode(&p.payload).expect("batch").into_iter().map(|r| r.expect("envelope")).collect()
                    } else {
                        vec![Envelope::decode(&p.payload).expect("envelope")]
                    };
                    g.wire_messages += 1;
                    for env in items {
                        let m = attest::msg::ChainMessage::open(&env).expect("chain message");
                        let seq = m.link().seq.0;
                        g.device = Some(m.link().device);
                        g.devices.insert(m.link().device);
                        match g.records.get(&seq) {
                            Some(old) if old != env.as_bytes() => g.forks.push(seq),
                            Some(_) => g.duplicates += 1,
                            None => {
                                g.records.insert(seq, env.into_bytes());
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = tick.tick() => {
                if !ack_on.load(Ordering::SeqCst) {
                    continue;
                }
                let g = got.lock().expect("lock");
                if let (Some(c), Some(dev)) = (g.contiguous(), g.device)
                    && acked != Some(c)
                {
                    let ack = Ack {
                        device: dev,
                        up_to: SeqNo(c),
                        hash: attest::Hash32::digest(&g.records[&c]),
                        timestamp: TimestampMs(0),
                    };
                    let env = Envelope::seal(&ack, &controller);
                    let topic = attest::topics::device(&dev, attest::topics::Leaf::Ack);
                    if client.try_publish(topic, QoS::AtLeastOnce, true, env.into_bytes()).is_ok() {
                        acked = Some(c);
                    }
                }
            }
        }
    }
}
