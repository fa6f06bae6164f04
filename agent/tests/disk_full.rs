//! Disk full: the agent's data directory sits on a small tmpfs that the test fills. The
//! agent must say so (log and MQTT status), evict nothing the controller has not
//! acknowledged, keep its cumulative counters exact, and resume by itself when space returns.
//! Needs root (to mount tmpfs), as CI has.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use attest::chain::{ChainPolicy, ChainVerifier, Outcome};
use attest::msg::{ChannelKind, MeterRecord};
use attest::{Envelope, TimestampMs};
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, TempDir};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

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

#[test]
fn a_full_disk_pauses_records_loses_no_energy_and_recovers_by_itself() {
    let tmp = TempDir::new("disk-full");
    let data = tmp.path().join("data");
    let _fs = Tmpfs::mount(&data, "512k");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), false);
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[site]
lat = 52.52
lon = 13.405
battery_wh = 1000
[meter]
sample_interval_ms = 20
record_interval_ms = 100
[outbox]
segment_bytes = 4096
[link]
host = "127.0.0.1"
port = {port}
controller_key = "{key}"
backoff_max_ms = 400
[[source]]
type = "simulator"
base_load_w = 40.0
gpu_w = 0.0
"#,
            data = data.display(),
            port = broker.port,
            key = controller().public()
        ),
    )
    .unwrap();
    let log = tmp.path().join("agent.log");
    let mut agent = hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &config, &log);
    std::thread::sleep(Duration::from_millis(1_500));
    let filler = fill(&data);
    std::thread::sleep(Duration::from_millis(300));
    let before = collector
        .got
        .lock()
        .unwrap()
        .records
        .keys()
        .last()
        .copied()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    let during = collector
        .got
        .lock()
        .unwrap()
        .records
        .keys()
        .last()
        .copied()
        .unwrap();
    assert!(
        during <= before + 2,
        "records kept coming on a full disk: {before} -> {during}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("OUTBOX CANNOT STORE RECORDS"),
        "no loud log line:\n{text}"
    );
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
    while collector
        .got
        .lock()
        .unwrap()
        .records
        .keys()
        .last()
        .copied()
        .unwrap()
        < during + 10
    {
        assert!(
            Instant::now() < deadline,
            "records did not resume after space returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Now acknowledge: everything stored arrives, nothing was evicted.
    collector
        .acking
        .store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1_000));
    agent.terminate(Duration::from_secs(5));
    let g = collector.got.lock().unwrap();
    let last = *g.records.keys().last().unwrap();
    assert_eq!(g.contiguous(), Some(last), "a gap: something was evicted");
    assert!(g.forks.is_empty());

    // The chain verifies, and across the outage the load counter grew by exactly what a
    // constant 40 W load used in that time (within one sample interval).
    let key = hil_tests::agent_key(&data);
    let mut v = ChainVerifier::new(&key.public(), ChainPolicy::default()).unwrap();
    let mut widest = (0u64, 0u64, 0u64);
    let mut prev: Option<MeterRecord> = None;
    for (seq, bytes) in g.records.iter() {
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
