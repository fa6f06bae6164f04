//! Nothing is lost: a real agent process publishes to a real Mosquitto while the test kills
//! the broker (with messages in flight that it never delivers) and kill -9s the agent,
//! several times each. A subscriber in the test plays the controller: it collects records,
//! and acknowledges the highest contiguous sequence with a signed, retained `Ack`. Every
//! sequence number the agent produced must arrive at least once, always with the same
//! content (one content per number), and the chain must verify with `attest`.
//!
//! Delivery is at-least-once by design (QoS 1, resends until acknowledged): a record whose
//! ack was lost with a killed agent or broker arrives again, and the receiver keeps one copy
//! per sequence number. Exactly-once is a property of what the controller stores
//! (`fleet-controller/tests/ingest_mosquitto.rs`), not of the wire; this test counts the
//! redeliveries and prints them (0 to a few per run: whether a kill lands between a
//! delivery and its ack is a matter of timing, so their number is not asserted).

use std::path::Path;
use std::time::{Duration, Instant};

use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, Proc, TempDir};

use hil_tests::test_controller as controller;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let mut cfg = AgentConfig::new(
        dir.join("data"),
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
            ..SiteConfig::new(52.52, 13.405)
        },
        LinkConfig {
            port,
            resend_after_ms: 1500,
            backoff_max_ms: 400,
            keepalive_s: 5,
            batch_max: 200,
            ..LinkConfig::new("127.0.0.1", &controller().public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 3,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 20,
        record_interval_ms: 100,
    };
    cfg.outbox.segment_bytes = 8192;
    let p = dir.join("agent.toml");
    cfg.write_toml(&p).unwrap();
    p
}

fn start_agent(config: &Path, log: &Path) -> Proc {
    hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), config, log)
}

use hil_tests::agent_next_seq as next_seq;

#[test]
fn every_record_arrives_at_least_once_with_one_content_per_sequence_through_broker_restarts_and_agent_kill_9()
 {
    let tmp = TempDir::new("nothing-lost");
    let mut broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
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
        let c = collector.contiguous();
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

    let g = collector.got.lock().unwrap();
    assert!(
        g.forks.is_empty(),
        "different contents for seqs {:?}",
        g.forks
    );
    for s in 0..produced {
        assert!(g.records.contains_key(&s), "seq {s} missing");
    }
    // The chain verifies from genesis with the device's key.
    let key = hil_tests::agent_key(&tmp.path().join("data"));
    hil_tests::assert_chain_from_genesis(
        &key.public(),
        g.records
            .range(..produced)
            .map(|(s, b)| (attest::SeqNo(*s), b.as_slice())),
    );
    eprintln!(
        "produced {produced}, received {} distinct and {} again, {} MQTT messages on the wire",
        g.records.len(),
        g.duplicates,
        g.wire_messages
    );
}
