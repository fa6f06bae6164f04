//! Disk full: the agent's data directory sits on a small tmpfs that the test fills. The
//! agent must say so (log and MQTT status), evict nothing the controller has not
//! acknowledged, keep its cumulative counters exact, and resume by itself when space returns.
//! Needs root (to mount tmpfs), as CI has.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attest::chain::{ChainPolicy, ChainVerifier, Outcome};
use attest::msg::{ChannelKind, MeterRecord};
use attest::{Envelope, TimestampMs};
use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, TempDir, Tmpfs};

use hil_tests::test_controller as controller;

fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 4096];
    use std::io::Write;
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    p
}

/// Writes the agent's configuration: a 40 W constant load, records every 100 ms into an
/// outbox of small segments, sent to the broker on `port`.
fn write_config(path: &Path, data: &Path, port: u16) {
    let mut cfg = AgentConfig::new(
        data,
        SiteConfig {
            battery_wh: 1000,
            ..SiteConfig::new(52.52, 13.405)
        },
        LinkConfig {
            port,
            backoff_max_ms: 400,
            ..LinkConfig::new("127.0.0.1", &controller().public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            base_load_w: 40.0,
            gpu_w: 0.0,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 20,
        record_interval_ms: 100,
    };
    cfg.outbox.segment_bytes = 4096;
    cfg.write_toml(path).unwrap();
}

#[test]
fn a_full_disk_pauses_records_loses_no_energy_and_recovers_by_itself() {
    let tmp = TempDir::new("disk-full");
    let data = tmp.path().join("data");
    let _fs = Tmpfs::mount(&data, "512k");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), false);
    let config = tmp.path().join("agent.toml");
    write_config(&config, &data, broker.port);
    let log = tmp.path().join("agent.log");
    let mut agent = hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &config, &log);
    // Long enough for the outbox to span two segments, so that a lost one would show.
    std::thread::sleep(Duration::from_millis(3_000));
    let filler = fill(&data);
    // The active segment's last page may still take a few records: the disk is full for the
    // agent once it says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("OUTBOX CANNOT STORE RECORDS")
    {
        assert!(
            Instant::now() < deadline,
            "no loud log line on a full disk:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let newest = || {
        collector
            .got
            .lock()
            .unwrap()
            .records
            .keys()
            .last()
            .copied()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = newest();
    std::thread::sleep(Duration::from_millis(2_000));
    let during = newest();
    assert_eq!(before, during, "records kept coming on a full disk");
    assert!(
        collector
            .got
            .lock()
            .unwrap()
            .statuses
            .iter()
            .any(|s| s.contains("records paused")),
        "the MQTT status never said records were paused"
    );

    // Space returns: the agent resumes by itself.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest() < during + 10 {
        assert!(
            Instant::now() < deadline,
            "records did not resume after space returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing was ever acknowledged, so the outbox must still hold every record the agent
    // produced. The first collector got most of them before the disk filled, so what it
    // holds proves nothing about the outbox: stop the agent and let it start over against a
    // fresh broker and a fresh collector that acknowledges. Everything it receives now was
    // read back from the outbox.
    agent.terminate(Duration::from_secs(5));
    let produced = hil_tests::agent_next_seq(&data);
    let first = std::mem::take(&mut *collector.got.lock().unwrap());
    drop(broker);
    let broker = Mosquitto::start();
    let fresh = Collector::start(broker.port, controller(), true);
    write_config(&config, &data, broker.port);
    let mut agent = hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &config, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fresh.contiguous().is_none_or(|c| c + 1 < produced) {
        assert!(
            Instant::now() < deadline,
            "the outbox lost records: of 0..{produced} a fresh collector got {:?} contiguously, \
             missing {:?}",
            fresh.contiguous(),
            (0..produced)
                .filter(|s| !fresh.got.lock().unwrap().records.contains_key(s))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.terminate(Duration::from_secs(5));
    let g = fresh.got.lock().unwrap();
    assert!(
        g.forks.is_empty(),
        "different contents for seqs {:?}",
        g.forks
    );
    for (seq, bytes) in first.records.range(..produced) {
        assert_eq!(
            g.records.get(seq),
            Some(bytes),
            "seq {seq} came back from the outbox with other contents"
        );
    }

    // The chain verifies, and across the outage the load counter grew by exactly what a
    // constant 40 W load used in that time (within one sample interval).
    let key = hil_tests::agent_key(&data);
    let mut v = ChainVerifier::new(&key.public(), ChainPolicy::default()).unwrap();
    let mut widest = (0u64, 0u64, 0u64);
    let mut prev: Option<MeterRecord> = None;
    for (seq, bytes) in g.records.range(..produced) {
        let env = Envelope::decode(bytes).unwrap();
        assert!(
            matches!(
                v.feed(&env, TimestampMs(u64::MAX / 2)),
                Ok(Outcome::Accepted(_))
            ),
            "seq {seq}"
        );
        let rec: MeterRecord = env.open().unwrap();
        if let Some(p) = &prev {
            let dt = rec.link.timestamp.0 - p.link.timestamp.0;
            let load = |r: &MeterRecord| {
                r.channels
                    .iter()
                    .find(|c| c.kind == ChannelKind::Load)
                    .unwrap()
                    .energy
                    .0
            };
            if dt > widest.0 {
                widest = (dt, load(p), load(&rec));
            }
        }
        prev = Some(rec);
    }
    let (dt, e0, e1) = widest;
    assert!(
        dt >= 1_500,
        "no outage visible in the chain (widest gap {dt} ms)"
    );
    let expected = 40 * dt; // 40 W x ms = mJ
    let got = e1 - e0;
    assert!(
        got.abs_diff(expected) <= 40 * 60,
        "load energy across a {dt} ms outage: {got} mJ, expected {expected} mJ"
    );
}
