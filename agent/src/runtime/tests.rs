use std::path::{Path, PathBuf};

use attest::msg::{Ack, Command, CommandBody, Hello, RestartReason};
use attest::{Envelope, KeyPair, SeqNo, TimestampMs};

use super::files::{running_job_path, save_state, state_path};
use super::*;
use crate::config::{AgentConfig, LinkConfig, SiteConfig};
use crate::jobs::desk::{Marker, ReceiptOrder};
use crate::power::SourceConfig;
use crate::power::simulator::SimulatorConfig;
use crate::power::vedirect::VeDirectConfig;

fn config(dir: &Path, sources: Vec<SourceConfig>) -> AgentConfig {
    let mut cfg = AgentConfig::new(
        dir,
        SiteConfig {
            battery_wh: 500,
            ..SiteConfig::new(10.0, 20.0)
        },
        LinkConfig::new("127.0.0.1", &KeyPair::from_seed(&[0xc0; 32]).public()),
        sources,
    );
    // This test binary is not the agent: it cannot be a job worker. The agent's own
    // binary runs jobs in workers in the tests that start it (mqtt_jobs, jobs_e2e).
    cfg.jobs.isolate = false;
    cfg.validate().unwrap();
    cfg
}

/// The one simulated source most tests here run.
fn simulator() -> Vec<SourceConfig> {
    vec![SourceConfig::Simulator(SimulatorConfig::default())]
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("runtime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn receipts_for(a: &Agent, job: attest::msg::JobId) -> Vec<attest::msg::JobReceipt> {
    a.outbox
        .pending()
        .filter_map(|s| a.outbox.read(s).ok().flatten())
        .filter_map(|b| {
            Envelope::decode(&b)
                .ok()?
                .open::<attest::msg::JobReceipt>()
                .ok()
        })
        .filter(|r| r.job == job)
        .collect()
}

#[test]
fn a_restart_closes_a_marked_job_once_whether_or_not_its_receipt_was_stored() {
    let dir = tmp("marker");
    let cfg = || config(&dir, simulator());
    let marker = |job| Marker {
        job,
        started_ms: now_ms(),
        start_counters: Vec::new(),
        chunks_done: 3,
        backend: attest::msg::Backend::Cpu,
        spec: None,
    };
    let (done, interrupted) = (attest::msg::JobId([1; 16]), attest::msg::JobId([2; 16]));

    // Killed after the receipt was stored, before the marker went: no second receipt.
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    a.tick_meter(now_ms());
    a.mark_job(&marker(done));
    a.jobs.desk.unmark(); // the removal that the kill prevented
    let t = now_ms() + 1;
    a.store_receipt(
        ReceiptOrder {
            job: done,
            outcome: attest::msg::JobOutcome::Completed,
            output_hash: attest::Hash32::ZERO,
            started_ms: t,
            start_counters: Vec::new(),
            chunks: 3,
            pauses: 0,
            backend: attest::msg::Backend::Cpu,
        },
        t,
    );
    assert!(running_job_path(&dir).exists());
    drop(a);
    let a = Agent::start(cfg(), now_ms()).unwrap();
    assert!(!running_job_path(&dir).exists());
    let r = receipts_for(&a, done);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, attest::msg::JobOutcome::Completed);

    // Killed while it ran: one Failed receipt at the restart.
    let mut a = a;
    a.mark_job(&marker(interrupted));
    drop(a);
    let a = Agent::start(cfg(), now_ms()).unwrap();
    let r = receipts_for(&a, interrupted);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].outcome,
        attest::msg::JobOutcome::Failed("interrupted: the agent restarted".into())
    );
    assert_eq!(r[0].chunks, 3);
    assert!(!running_job_path(&dir).exists());
    drop(a);
    assert_eq!(
        receipts_for(&Agent::start(cfg(), now_ms()).unwrap(), interrupted).len(),
        1
    );
}

#[test]
fn a_source_that_cannot_open_is_skipped_and_reported_while_the_others_run() {
    let dir = tmp("skip");
    let cfg = config(
        &dir,
        vec![
            SourceConfig::Vedirect(VeDirectConfig::new("/dev/does-not-exist")),
            SourceConfig::Simulator(SimulatorConfig::default()),
        ],
    );
    let mut a = Agent::start(cfg, now_ms()).unwrap();
    assert!(
        a.status.sources[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("/dev/does-not-exist"))
    );
    let t = now_ms();
    assert!(a.tick_meter(t), "the first tick records");
    assert!(!a.tick_meter(t + 1), "not a record boundary");
    assert!(a.tick_meter(t + 20_000), "a record boundary");
    assert_eq!(a.outbox.depth(), 2);
    assert_eq!(
        a.status.sources[1].errors, 0,
        "the simulator's status is its own"
    );
    let hello: Hello = a.hello(now_ms()).open().unwrap();
    assert_eq!(hello.channels.len(), 6, "only the simulator's channels");
    assert_eq!(hello.site.lat_microdeg, 10_000_000);
}

#[test]
fn lost_chain_state_restarts_the_chain_and_a_lagging_one_catches_up_from_the_outbox() {
    let dir = tmp("state");
    let cfg = || config(&dir, simulator());
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    let t = now_ms();
    for i in 0..3 {
        a.tick_meter(t + i * 10_000);
    }
    let next = a.meter.state().head.next_seq;
    assert_eq!(next, SeqNo(3));
    // A state file one record behind (a crash between append and save): catch up.
    let mut behind = a.meter.state().clone();
    behind.head.next_seq = SeqNo(2);
    drop(a);
    save_state(&dir, &behind).unwrap();
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    assert_eq!(a.meter.state().head.next_seq, SeqNo(3));
    let last = a.outbox.last_seq().unwrap();
    a.outbox.ack(last).unwrap();
    drop(a);
    // No state file at all, outbox acknowledged and emptied: a ChainRestart.
    std::fs::remove_file(state_path(&dir)).unwrap();
    let a = Agent::start(cfg(), now_ms()).unwrap();
    let restart_seq = a.outbox.last_seq().unwrap();
    assert!(
        restart_seq >= SeqNo(t),
        "a restart sequence above anything used before"
    );
    let env = Envelope::decode(&a.outbox.read(restart_seq).unwrap().unwrap()).unwrap();
    let r: attest::msg::ChainRestart = env.open().unwrap();
    assert_eq!(r.reason, RestartReason::StateLost);
}

/// Unacknowledged records destroyed on disk (the outbox's last segment cut into fsynced
/// entries, as media damage would): the chain cannot bridge them, so the next start seals
/// a `ChainRestart` (state corrupt) above everything used, instead of leaving the controller
/// waiting forever for records that no longer exist.
#[test]
fn records_destroyed_in_the_outbox_start_a_new_chain_instead_of_a_gap_forever() {
    let dir = tmp("destroyed");
    let cfg = || config(&dir, simulator());
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    let t = now_ms();
    for i in 0..5 {
        a.tick_meter(t + i * 10_000);
    }
    assert_eq!(a.meter.state().head.next_seq, SeqNo(5));
    drop(a);
    let outbox = dir.join("outbox");
    let mut segs: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let seg = segs.pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 40).unwrap(); // into the last record: it is gone
    drop(f);
    let a = Agent::start(cfg(), now_ms()).unwrap();
    let last = a.outbox.last_seq().unwrap();
    assert!(
        last >= SeqNo(t),
        "a new chain above everything used: {last:?}"
    );
    let env = Envelope::decode(&a.outbox.read(last).unwrap().unwrap()).unwrap();
    let r: attest::msg::ChainRestart = env.open().unwrap();
    assert_eq!(r.reason, RestartReason::StateCorrupt);
    // The records before the damage are still there to be delivered.
    assert_eq!(
        a.outbox.pending().take(4).map(|s| s.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    drop(a);
    // And a clean restart after that starts no further chain.
    let a = Agent::start(cfg(), now_ms()).unwrap();
    assert_eq!(a.outbox.last_seq(), Some(last));
}

#[test]
fn only_acks_signed_by_the_pinned_controller_for_stored_records_delete_anything() {
    let dir = tmp("acks");
    let mut a = Agent::start(config(&dir, simulator()), now_ms()).unwrap();
    let t = now_ms();
    for i in 0..5 {
        a.tick_meter(t + i * 10_000);
    }
    assert_eq!(a.outbox.depth(), 5);
    let hash = |s: u64| attest::Hash32::digest(&a.outbox.read(SeqNo(s)).unwrap().unwrap());
    let ack = |up_to: u64, hash: attest::Hash32, device| Ack {
        device,
        up_to: attest::SeqNo(up_to),
        hash,
        timestamp: TimestampMs(t),
    };
    let me = a.key.device_id();
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    let forger = KeyPair::from_seed(&[0x66; 32]);
    let h2 = hash(2);
    // Forged, for another device, beyond what is stored, wrong hash, garbage: refused.
    a.on_ack(Envelope::seal(&ack(2, h2, me), &forger).as_bytes());
    a.on_ack(
        Envelope::seal(
            &ack(2, h2, KeyPair::from_seed(&[1; 32]).device_id()),
            &controller,
        )
        .as_bytes(),
    );
    a.on_ack(Envelope::seal(&ack(99, h2, me), &controller).as_bytes());
    a.on_ack(Envelope::seal(&ack(3, h2, me), &controller).as_bytes());
    a.on_ack(b"\x01\x06garbage");
    assert_eq!(a.status.link.acks_rejected, 5);
    assert_eq!(a.outbox.depth(), 5, "nothing deleted");
    // The real one deletes what it covers.
    a.on_ack(Envelope::seal(&ack(2, h2, me), &controller).as_bytes());
    assert_eq!(
        a.outbox.pending().collect::<Vec<_>>(),
        vec![SeqNo(3), SeqNo(4)]
    );
    assert_eq!(a.status.link.acks_rejected, 5);
}

#[test]
fn forged_expired_and_replayed_commands_are_refused_and_a_valid_resend_is_obeyed() {
    let dir = tmp("cmds");
    let mut a = Agent::start(config(&dir, simulator()), now_ms()).unwrap();
    let t = now_ms();
    let me = a.key.device_id();
    let cmd = |nonce, expires| Command {
        device: me,
        nonce,
        issued: TimestampMs(t),
        expires: TimestampMs(expires),
        body: CommandBody::Resend {
            from: attest::SeqNo(0),
            to: attest::SeqNo(3),
        },
    };
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    a.on_command(
        Envelope::seal(&cmd(1, t + 60_000), &KeyPair::from_seed(&[0x66; 32])).as_bytes(),
        t,
    );
    a.on_command(Envelope::seal(&cmd(2, t - 1), &controller).as_bytes(), t);
    assert_eq!(a.status.link.commands_rejected, 2);
    let valid = Envelope::seal(&cmd(3, t + 60_000), &controller);
    a.on_command(valid.as_bytes(), t);
    assert_eq!(a.status.link.commands_rejected, 2);
    a.on_command(valid.as_bytes(), t);
    assert_eq!(
        a.status.link.commands_rejected, 3,
        "a replayed nonce is refused"
    );
}

#[test]
fn a_replayed_command_is_refused_after_a_restart_and_after_4096_newer_commands() {
    let dir = tmp("replay-window");
    let cfg = || config(&dir, simulator());
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    let t = now_ms();
    let me = a.key.device_id();
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    let cmd = |nonce: u64, expires: u64| {
        Envelope::seal(
            &Command {
                device: me,
                nonce,
                issued: TimestampMs(t),
                expires: TimestampMs(expires),
                body: CommandBody::Resend {
                    from: attest::SeqNo(0),
                    to: attest::SeqNo(0),
                },
            },
            &controller,
        )
    };
    let first = cmd(1, t + 600_000);
    a.on_command(first.as_bytes(), t);
    assert_eq!(a.status.link.commands_rejected, 0);
    drop(a);

    // A restart remembers it.
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    a.on_command(first.as_bytes(), t);
    assert_eq!(
        a.status.link.commands_rejected, 1,
        "replayed after a restart"
    );

    // 4,096 newer commands, each valid for longer, and a restart: still refused.
    for i in 0..4_096 {
        a.on_command(cmd(1_000 + i, t + 600_001 + i).as_bytes(), t);
    }
    assert_eq!(a.status.link.commands_rejected, 1, "the newer ones all ran");
    drop(a);
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    a.on_command(first.as_bytes(), t);
    // (The counter is the process's: it starts again at 0.)
    assert_eq!(
        a.status.link.commands_rejected, 1,
        "replayed after 4,096 newer commands"
    );
    // And a new command still runs.
    a.on_command(cmd(99_999, t + 900_000).as_bytes(), t);
    assert_eq!(a.status.link.commands_rejected, 1);
}

#[test]
fn a_restarted_agent_with_an_empty_outbox_accepts_the_retained_ack_of_its_last_record() {
    let dir = tmp("retained-ack");
    let cfg = || config(&dir, simulator());
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    let t = now_ms();
    for i in 0..3 {
        a.tick_meter(t + i * 10_000);
    }
    let last = a.outbox.last_seq().unwrap();
    let retained = Envelope::seal(
        &Ack {
            device: a.key.device_id(),
            up_to: last,
            hash: attest::Hash32::digest(&a.outbox.read(last).unwrap().unwrap()),
            timestamp: TimestampMs(t),
        },
        &KeyPair::from_seed(&[0xc0; 32]),
    );
    a.on_ack(retained.as_bytes());
    assert_eq!(a.outbox.depth(), 0);
    drop(a);

    // The broker hands the retained ack to the restarted agent, whose outbox is empty.
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    assert_eq!(a.outbox.depth(), 0);
    a.on_ack(retained.as_bytes());
    assert_eq!(
        a.status.link.acks_rejected, 0,
        "an ack of what was acknowledged before is no alarm"
    );
    assert_eq!(a.outbox.acked(), Some(last));
}

#[test]
fn an_unreadable_nonce_file_refuses_commands_instead_of_forgetting_them() {
    let dir = tmp("nonces-unreadable");
    let cfg = || config(&dir, simulator());
    drop(Agent::start(cfg(), now_ms()).unwrap());
    std::fs::write(dir.join("command-nonces.json"), b"{\"seen\": [tr").unwrap();
    let mut a = Agent::start(cfg(), now_ms()).unwrap();
    let t = now_ms();
    let cmd = Command {
        device: a.key.device_id(),
        nonce: 1,
        issued: TimestampMs(t),
        expires: TimestampMs(t + 60_000),
        body: CommandBody::Drain,
    };
    a.on_command(
        Envelope::seal(&cmd, &KeyPair::from_seed(&[0xc0; 32])).as_bytes(),
        t,
    );
    assert_eq!(a.status.jobs.commands_rejected["nonces_unreadable"], 1);
    assert!(!a.status.jobs.draining, "the command did not run");
    assert_eq!(
        std::fs::read(dir.join("command-nonces.json")).unwrap(),
        b"{\"seen\": [tr",
        "the file is left for repair"
    );
}

/// Collects what the agent logs on this thread (no colour codes) for assertions.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[test]
fn bad_vedirect_checksums_are_counted_in_the_status_file_and_the_mqtt_status_and_logged_once() {
    use crate::power::vedirect::encode_block;
    use serialport::SerialPort;
    use std::io::Write;

    let dir = tmp("vedirect-faults");
    let (mut controller, port) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
    let path = port.name().expect("pty name");
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let cfg = config(
            &dir,
            vec![SourceConfig::Vedirect(VeDirectConfig::new(path.clone()))],
        );
        let mut a = Agent::start(cfg, now_ms()).unwrap();
        // A charge controller on a noisy line: one block in seven arrives damaged (after
        // the first block, which only synchronises the parser).
        for i in 0..22u32 {
            let ppv = (100 + i).to_string();
            let mut block = encode_block(&[("V", "25600"), ("I", "1000"), ("PPV", &ppv)]);
            if i % 7 == 6 {
                block[8] ^= 0x04;
            }
            controller.write_all(&block).unwrap();
            controller.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let t0 = now_ms();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut t = t0;
        while a.status.sources[0].errors < 3 && std::time::Instant::now() < deadline {
            t += 100;
            a.tick_meter(t);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let source = &a.status.sources[0];
        assert_eq!(source.errors, 3, "three damaged blocks of 21: {source:?}");
        assert_eq!(source.errors_by_reason.get("bad_checksum"), Some(&3));
        assert!(a.outbox.depth() >= 1, "the good blocks still make records");

        // The status file (what `heliostat-agent status` prints) says the same.
        a.tick_meter(t + 20_000);
        let text = std::fs::read_to_string(status_path(&dir)).unwrap();
        let status: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["sources"][0]["errors"], 3, "{text}");
        assert_eq!(
            status["sources"][0]["errors_by_reason"]["bad_checksum"], 3,
            "{text}"
        );
        // And so does the retained MQTT status the fleet sees.
        let online = serde_json::to_value(attest::live::DeviceStatus::Online(a.online())).unwrap();
        assert_eq!(online["sources"][0]["errors"], 3, "{online}");
        assert_eq!(
            online["sources"][0]["errors_by_reason"]["bad_checksum"], 3,
            "{online}"
        );
        assert!(
            online["sources"][0]["source"]
                .as_str()
                .is_some_and(|s| s.contains("vedirect")),
            "{online}"
        );
    });
    let log = logs.text();
    assert_eq!(
        log.matches("source dropped bad input").count(),
        1,
        "logged once for its reason:\n{log}"
    );
    assert!(
        log.contains("reason=\"bad_checksum\"") || log.contains("reason=bad_checksum"),
        "{log}"
    );
    drop(port);
}

#[test]
fn a_checkpoint_file_reads_back_and_a_damaged_one_reads_as_none() {
    let dir = tmp("checkpoint");
    let job = attest::msg::JobId([5; 16]);
    let outputs = vec![vec![1u8, 2, 3], vec![], vec![9; 1000]];
    super::files::write_checkpoint(&dir, job, 12, &outputs).unwrap();
    assert_eq!(
        super::files::read_checkpoint(&dir, job),
        Some((12, outputs))
    );
    let path = super::files::checkpoint_path(&dir, job);
    let mut b = std::fs::read(&path).unwrap();
    b.truncate(b.len() - 1);
    std::fs::write(&path, b).unwrap();
    assert_eq!(super::files::read_checkpoint(&dir, job), None);
}
