//! Jobs through real MQTT: a real agent process (simulated rig, CPU backend) takes signed
//! commands from a real Mosquitto. Forged, expired, replayed, misaddressed commands and
//! controls for unknown jobs are rejected and counted by reason; a valid `RunJob` runs,
//! pauses and resumes on command, and its signed receipt arrives through the durable
//! outbox with the output hash and counters of the records around it; after `Drain` a new
//! job is refused with a receipt saying why. Jobs run in worker processes: one whose worker
//! aborts or hangs fails alone, and the agent and the next job go on.

use std::path::Path;
use std::time::{Duration, Instant};

use attest::msg::{
    ChannelKind, Command, CommandBody, JobId, JobLimits, JobOutcome, JobReceipt, JobSpec,
    MeterRecord,
};
use attest::{DeviceId, Envelope, Hash32, KeyPair, Millijoules, TimestampMs};
use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::jobs::Builtin;
use heliostat_agent::jobs::kernel::Sha256Batch;
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, TempDir};
use rumqttc::{Client, MqttOptions, QoS};
use sha2::Digest;

use hil_tests::test_controller as controller;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    write_config_with(dir, port, |_| {})
}

fn write_config_with(
    dir: &Path,
    port: u16,
    change: impl FnOnce(&mut AgentConfig),
) -> std::path::PathBuf {
    let mut cfg = AgentConfig::new(
        dir.join("data"),
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            ..SiteConfig::new(52.52, 13.405)
        },
        LinkConfig {
            port,
            resend_after_ms: 1500,
            backoff_max_ms: 400,
            ..LinkConfig::new("127.0.0.1", &controller().public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 5,
            initial_soc: 1.0,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 500,
    };
    cfg.jobs.prefer_gpu = false;
    change(&mut cfg);
    let p = dir.join("agent.toml");
    cfg.write_toml(&p).unwrap();
    p
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn command(
    device: DeviceId,
    nonce: u64,
    expires_in: i64,
    body: CommandBody,
    key: &KeyPair,
) -> Vec<u8> {
    // An expired command was issued a while before it expired.
    let t = now();
    let expires = (t as i64 + expires_in) as u64;
    Envelope::seal(
        &Command {
            device,
            nonce,
            issued: TimestampMs(t.min(expires - 60_000)),
            expires: TimestampMs(expires),
            body,
        },
        key,
    )
    .into_bytes()
}

/// A SHA-256 batch job over `count` items of 64 bytes, with its input stored as a blob.
fn job(data: &Path, id: u8, count: i64) -> (JobSpec, Vec<u8>) {
    let input: Vec<u8> = (0..count as usize * 64)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let hash = Hash32::digest(&input);
    let blobs = data.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(hash.to_hex()), &input).unwrap();
    let mut expected = Vec::new();
    for item in input.chunks(64) {
        expected.extend_from_slice(&sha2::Sha256::digest(item));
    }
    let spec = JobSpec {
        id: JobId([id; 16]),
        workload: Builtin::Sha256Batch(Sha256Batch::new(count, 64).unwrap()).to_workload(),
        inputs: vec![hash],
        input_sizes: vec![count as u64 * 64],
        output_sizes: vec![count as u64 * 32],
        limits: JobLimits {
            max_energy: Millijoules(0),
            max_duration_ms: 0,
            deadline: TimestampMs(now() + 3_600_000),
        },
    };
    (spec, expected)
}

fn status(data: &Path) -> serde_json::Value {
    std::fs::read(data.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn receipts(c: &Collector) -> Vec<JobReceipt> {
    let g = c.got.lock().unwrap();
    g.records
        .values()
        .filter_map(|b| Envelope::decode(b).ok()?.open::<JobReceipt>().ok())
        .collect()
}

#[test]
fn signed_commands_run_pause_and_drain_jobs_and_everything_else_is_rejected() {
    let tmp = TempDir::new("mqtt-jobs");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
    let config = write_config(tmp.path(), broker.port);
    let data = tmp.path().join("data");
    let log = tmp.path().join("agent.log");
    let mut agent = hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &config, &log);
    wait_for("the agent online", Duration::from_secs(20), || {
        status(&data)["link"]["connected"] == true
    });
    let device = hil_tests::agent_key(&data).device_id();

    let mut o = MqttOptions::new("test-commander", "127.0.0.1", broker.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 64);
    // Job progress events, as an operator's dashboard would see them.
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let ev = events.clone();
    std::thread::spawn(move || {
        for n in conn.iter().flatten() {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = n
                && let Ok(v) = serde_json::from_slice(&p.payload)
            {
                ev.lock().unwrap().push(v);
            }
        }
    });
    client
        .subscribe(format!("heliostat/v1/dev/{device}/jobs"), QoS::AtMostOnce)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let topic = format!("heliostat/v1/dev/{device}/cmd");
    let send = |bytes: Vec<u8>| {
        client
            .publish(&topic, QoS::AtLeastOnce, false, bytes)
            .unwrap()
    };
    let ctl = controller();

    // A valid job, long enough to be paused (about a second of CPU in a debug build).
    let (spec, expected) = job(&data, 1, 200_000);
    let run = command(device, 1, 60_000, CommandBody::RunJob(spec.clone()), &ctl);
    send(run.clone());
    send(command(
        device,
        2,
        60_000,
        CommandBody::Pause { job: spec.id },
        &ctl,
    ));
    wait_for("the job paused", Duration::from_secs(20), || {
        status(&data)["jobs"]["running"]["paused"] == true
    });
    let done_while_paused = status(&data)["jobs"]["running"]["chunks_done"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        status(&data)["jobs"]["running"]["chunks_done"].as_u64(),
        Some(done_while_paused),
        "chunks ran while paused"
    );

    // Everything that must be refused, while the job is paused.
    let intruder = KeyPair::from_seed(&[0x66; 32]);
    send(command(device, 3, 60_000, CommandBody::Drain, &intruder)); // forged
    send(command(device, 4, -1_000, CommandBody::Drain, &ctl)); // expired
    send(run); // replayed
    let other = KeyPair::from_seed(&[0x77; 32]).device_id();
    send(command(other, 5, 60_000, CommandBody::Drain, &ctl)); // another device's
    send(command(
        device,
        6,
        60_000,
        CommandBody::Cancel {
            job: JobId([9; 16]),
        },
        &ctl,
    ));
    send(b"\x01\x05garbage".to_vec());
    wait_for("six rejections", Duration::from_secs(20), || {
        status(&data)["link"]["commands_rejected"] == 6
    });
    let by_reason = status(&data)["jobs"]["commands_rejected"].clone();
    for (reason, n) in [
        ("bad_signature", 1),
        ("expired", 1),
        ("replayed", 1),
        ("other_device", 1),
        ("no_such_job", 1),
        ("malformed", 1),
    ] {
        assert_eq!(by_reason[reason], n, "{reason}: {by_reason}");
    }

    // Resume: it completes, and its receipt arrives through the outbox.
    send(command(
        device,
        7,
        60_000,
        CommandBody::Resume { job: spec.id },
        &ctl,
    ));
    wait_for("the receipt", Duration::from_secs(60), || {
        receipts(&collector).iter().any(|r| r.job == spec.id)
    });
    let r = receipts(&collector)
        .into_iter()
        .find(|r| r.job == spec.id)
        .unwrap();
    assert_eq!(r.outcome, JobOutcome::Completed, "{r:?}");
    assert!(r.pauses >= 1, "{r:?}");
    let mut h = sha2::Sha256::new();
    h.update(&expected);
    assert_eq!(r.output_hash, Hash32(h.finalize().into()));
    assert_eq!(
        std::fs::read(data.join("jobs").join(spec.id.to_string()).join("out0.bin")).unwrap(),
        expected
    );
    // Its counters are those of the signed records sealed at its start and end.
    let records: Vec<MeterRecord> = {
        let g = collector.got.lock().unwrap();
        g.records
            .values()
            .filter_map(|b| Envelope::decode(b).ok()?.open().ok())
            .collect()
    };
    let gpu_at = |t: u64| {
        records
            .iter()
            .find(|m| m.link.timestamp.0 == t)
            .and_then(|m| m.channels.iter().find(|c| c.kind == ChannelKind::Gpu))
            .map(|c| c.energy.0)
            .unwrap_or_else(|| panic!("no record at {t}"))
    };
    let delta = gpu_at(r.ended.0) - gpu_at(r.started.0);
    assert_eq!(r.energy(ChannelKind::Gpu), Some(Millijoules(delta)));
    assert!(delta > 0, "the simulated GPU drew nothing");

    // The progress events told the same story: started, paused, progress, resumed,
    // finished with the receipt's outcome.
    wait_for("the finished event", Duration::from_secs(10), || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "finished")
    });
    {
        let ev = events.lock().unwrap();
        let kinds: Vec<&str> = ev.iter().filter_map(|e| e["event"].as_str()).collect();
        for k in ["started", "pause", "progress", "resume", "finished"] {
            assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
        }
        let fin = ev.iter().find(|e| e["event"] == "finished").unwrap();
        assert_eq!(fin["job"], spec.id.to_string());
        assert_eq!(fin["outcome"], "completed");
        assert!(
            ev.iter()
                .any(|e| e["event"] == "progress" && e["paused"] == true)
        );
    }

    // Drain: the next job is refused, with a receipt that says why.
    send(command(device, 8, 60_000, CommandBody::Drain, &ctl));
    let (spec2, _) = job(&data, 2, 10);
    send(command(
        device,
        9,
        60_000,
        CommandBody::RunJob(spec2.clone()),
        &ctl,
    ));
    wait_for("the refusal", Duration::from_secs(20), || {
        receipts(&collector).iter().any(|r| r.job == spec2.id)
    });
    let r2 = receipts(&collector)
        .into_iter()
        .find(|r| r.job == spec2.id)
        .unwrap();
    assert_eq!(
        r2.outcome,
        JobOutcome::Refused("the device is draining".into())
    );
    let s = status(&data);
    assert_eq!(
        (
            s["jobs"]["completed"].as_u64(),
            s["jobs"]["refused"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // The chain with the receipts in it verifies from genesis. A record resent after a lost
    // ack may still be on its way while a later one has arrived: wait until the collector
    // holds no hole, then check what it holds up to there.
    wait_for("no hole at the collector", Duration::from_secs(20), || {
        let g = collector.got.lock().unwrap();
        g.contiguous().is_some() && g.contiguous() == g.records.keys().last().copied()
    });
    agent.terminate(Duration::from_secs(5));
    let g = collector.got.lock().unwrap();
    assert!(g.forks.is_empty());
    let upto = g.contiguous().expect("records arrived");
    assert!(
        upto >= r2.link.seq.0,
        "the last receipt is in the checked chain"
    );
    hil_tests::assert_chain_from_genesis(
        &hil_tests::agent_key(&data).public(),
        g.records
            .range(..=upto)
            .map(|(s, b)| (attest::SeqNo(*s), b.as_slice())),
    );
}

/// Paused before its first checkpoint: nothing to resume from, so the restart closes it.
#[test]
fn a_job_interrupted_by_kill_9_gets_a_failed_receipt_after_the_restart() {
    let tmp = TempDir::new("mqtt-jobs-kill");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
    let config = write_config(tmp.path(), broker.port);
    let data = tmp.path().join("data");
    let log = tmp.path().join("agent.log");
    let bin = env!("CARGO_BIN_EXE_heliostat-agent");
    let mut agent = hil_tests::spawn_agent(bin, &config, &log);
    wait_for("the agent online", Duration::from_secs(20), || {
        status(&data)["link"]["connected"] == true
    });
    let device = hil_tests::agent_key(&data).device_id();
    let (client, mut conn) = Client::new(
        MqttOptions::new("test-killer", "127.0.0.1", broker.port),
        16,
    );
    std::thread::spawn(move || for _ in conn.iter() {});
    let topic = format!("heliostat/v1/dev/{device}/cmd");
    let ctl = controller();
    let (spec, _) = job(&data, 3, 200_000);
    for (nonce, body) in [
        (1, CommandBody::RunJob(spec.clone())),
        (2, CommandBody::Pause { job: spec.id }),
    ] {
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                command(device, nonce, 60_000, body, &ctl),
            )
            .unwrap();
    }
    wait_for("the job paused", Duration::from_secs(20), || {
        status(&data)["jobs"]["running"]["paused"] == true
    });
    assert!(data.join("running-job.json").exists());
    agent.kill9();
    let _agent = hil_tests::spawn_agent(bin, &config, &log);
    wait_for(
        "the interrupted job's receipt",
        Duration::from_secs(30),
        || receipts(&collector).iter().any(|r| r.job == spec.id),
    );
    let r = receipts(&collector)
        .into_iter()
        .find(|r| r.job == spec.id)
        .unwrap();
    assert_eq!(
        r.outcome,
        JobOutcome::Failed("interrupted: the agent restarted".into()),
        "{r:?}"
    );
    assert!(r.ended.0 >= r.started.0);
    assert!(!data.join("running-job.json").exists());
    let g = collector.got.lock().unwrap();
    assert!(g.forks.is_empty());
    hil_tests::assert_chain_from_genesis(
        &hil_tests::agent_key(&data).public(),
        g.records
            .iter()
            .filter(|(s, _)| **s <= g.contiguous().unwrap())
            .map(|(s, b)| (attest::SeqNo(*s), b.as_slice())),
    );
}

#[test]
fn a_job_whose_worker_aborts_or_hangs_fails_alone_and_the_next_job_runs() {
    let tmp = TempDir::new("job-worker");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
    let config = write_config_with(tmp.path(), broker.port, |cfg| {
        cfg.jobs.chunk_timeout_ms = 1_500;
    });
    let data = tmp.path().join("data");
    let log = tmp.path().join("agent.log");
    // The worker may run as another user (`nobody` when the test runs as root): it must be
    // able to take the fault file away.
    let faults = tmp.path().join("faults");
    std::fs::create_dir_all(&faults).unwrap();
    std::fs::set_permissions(&faults, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let fault = faults.join("fault");
    let fault_env = format!("once:{}", fault.display());
    let mut agent = hil_tests::spawn_agent_with_env(
        env!("CARGO_BIN_EXE_heliostat-agent"),
        &config,
        &log,
        &[("HELIOSTAT_WORKER_FAULT", &fault_env)],
    );
    wait_for("the agent online", Duration::from_secs(20), || {
        status(&data)["link"]["connected"] == true
    });
    let device = hil_tests::agent_key(&data).device_id();
    let o = MqttOptions::new("test-worker-commander", "127.0.0.1", broker.port);
    let (client, mut conn) = Client::new(o, 64);
    std::thread::spawn(move || for _ in conn.iter() {});
    let topic = format!("heliostat/v1/dev/{device}/cmd");
    let ctl = controller();
    let run = |nonce: u64, spec: &JobSpec| {
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                command(
                    device,
                    nonce,
                    60_000,
                    CommandBody::RunJob(spec.clone()),
                    &ctl,
                ),
            )
            .unwrap();
        wait_for("the receipt", Duration::from_secs(30), || {
            receipts(&collector).iter().any(|r| r.job == spec.id)
        });
        receipts(&collector)
            .into_iter()
            .find(|r| r.job == spec.id)
            .unwrap()
    };

    // A kernel that faults: its worker dies, the job fails with the signal.
    std::fs::write(&fault, "abort").unwrap();
    let (aborts, _) = job(&data, 1, 5_000);
    let r = run(1, &aborts);
    match &r.outcome {
        JobOutcome::Failed(why) => assert!(why.contains("SIGABRT"), "{why}"),
        other => panic!(
            "{other:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    }
    assert!(!fault.exists(), "the worker took the fault");
    // A kernel that never ends: killed when its chunk outlives `jobs.chunk_timeout_ms`.
    std::fs::write(&fault, "hang").unwrap();
    let (hangs, _) = job(&data, 2, 5_000);
    let r = run(2, &hangs);
    match &r.outcome {
        JobOutcome::Failed(why) => assert!(why.contains("the worker was killed"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The next job runs, in a worker of its own, to the right output.
    let (fine, expected) = job(&data, 3, 5_000);
    let r = run(3, &fine);
    assert_eq!(r.outcome, JobOutcome::Completed);
    let mut h = sha2::Sha256::new();
    h.update(&expected);
    assert_eq!(r.output_hash, Hash32(h.finalize().into()));
    // The agent itself kept sealing records through it all, and never ran the kernels.
    let records_before = collector.got.lock().unwrap().records.len();
    wait_for("more records", Duration::from_secs(10), || {
        collector.got.lock().unwrap().records.len() > records_before + 2
    });
    agent.terminate(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("jobs run in a worker process"), "{text}");
}

#[test]
fn a_job_interrupted_by_kill_9_resumes_from_its_checkpoint_and_its_output_is_right() {
    let tmp = TempDir::new("mqtt-jobs-resume");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
    let config = write_config_with(tmp.path(), broker.port, |cfg| {
        cfg.jobs.checkpoint_every_ms = 100;
    });
    let data = tmp.path().join("data");
    let log = tmp.path().join("agent.log");
    let bin = env!("CARGO_BIN_EXE_heliostat-agent");
    let mut agent = hil_tests::spawn_agent(bin, &config, &log);
    wait_for("the agent online", Duration::from_secs(20), || {
        status(&data)["link"]["connected"] == true
    });
    let device = hil_tests::agent_key(&data).device_id();
    let (client, mut conn) = Client::new(
        MqttOptions::new("test-resumer", "127.0.0.1", broker.port),
        16,
    );
    std::thread::spawn(move || for _ in conn.iter() {});
    let (spec, expected) = job(&data, 4, 1_000_000);
    client
        .publish(
            format!("heliostat/v1/dev/{device}/cmd"),
            QoS::AtLeastOnce,
            false,
            command(
                device,
                1,
                60_000,
                CommandBody::RunJob(spec.clone()),
                &controller(),
            ),
        )
        .unwrap();
    // Killed once a checkpoint holds some chunks and before the last one.
    let checkpoint = data
        .join("jobs")
        .join(spec.id.to_string())
        .join("checkpoint.bin");
    wait_for("a checkpoint", Duration::from_secs(60), || {
        let running = &status(&data)["jobs"]["running"];
        checkpoint.exists()
            && running["chunks_done"].as_u64().unwrap_or(0) >= 1
            && running["chunks_done"].as_u64() < running["chunks"].as_u64()
    });
    agent.kill9();
    let _agent = hil_tests::spawn_agent(bin, &config, &log);
    wait_for("the resumed job's receipt", Duration::from_secs(90), || {
        receipts(&collector).iter().any(|r| r.job == spec.id)
    });
    let r = receipts(&collector)
        .into_iter()
        .find(|r| r.job == spec.id)
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(r.outcome, JobOutcome::Completed, "{r:?}\n{text}");
    // The chunks before the checkpoint were not run again: their output comes from it,
    // and the whole output is the right one.
    let resumed = text
        .lines()
        .find(|l| l.contains("resuming it from its checkpoint"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{text}"));
    assert!(!resumed.contains("chunks_done=0"), "{resumed}");
    let mut h = sha2::Sha256::new();
    h.update(&expected);
    assert_eq!(r.output_hash, Hash32(h.finalize().into()));
    assert_eq!(
        receipts(&collector)
            .iter()
            .filter(|x| x.job == spec.id)
            .count(),
        1,
        "one receipt"
    );
    assert!(!data.join("running-job.json").exists());
}

/// A job's worker cannot reach the agent's data folder (its key) nor open a TCP connection
/// in the sandbox, while the same job without it can: the worker reads a file there and
/// connects to the broker in every chunk and fails if it gets through. (The file is world-readable, standing in for the key as a worker running as
/// the agent's own user would see it.)
#[test]
fn a_jobs_worker_cannot_read_the_agents_data_folder_nor_connect_out_in_its_sandbox() {
    let ctl = controller();
    let mut outcomes = Vec::new();
    for (sandbox, faults) in [(true, "read;connect"), (false, "read"), (false, "connect")] {
        // A broker and a collector each: the collector follows one device's chain.
        let broker = Mosquitto::start();
        let collector = Collector::start(broker.port, controller(), true);
        let tmp = TempDir::new("job-sandbox");
        let config = write_config_with(tmp.path(), broker.port, |cfg| {
            cfg.jobs.sandbox = sandbox;
        });
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let probe = data.join("probe");
        std::fs::write(&probe, "secret").unwrap();
        std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let log = tmp.path().join("agent.log");
        // The broker listens: a connection there would succeed.
        let fault = faults
            .split(';')
            .map(|f| match f {
                "read" => format!("read:{}", probe.display()),
                _ => format!("connect:127.0.0.1:{}", broker.port),
            })
            .collect::<Vec<_>>()
            .join(";");
        let mut agent = hil_tests::spawn_agent_with_env(
            env!("CARGO_BIN_EXE_heliostat-agent"),
            &config,
            &log,
            &[("HELIOSTAT_WORKER_FAULT", &fault)],
        );
        wait_for("the agent online", Duration::from_secs(20), || {
            status(&data)["link"]["connected"] == true
        });
        let device = hil_tests::agent_key(&data).device_id();
        // Open to the worker's user (`nobody` when the test runs as root) but for the
        // sandbox.
        for dir in [tmp.path(), data.as_path()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let o = MqttOptions::new(
            format!("test-sandbox-{sandbox}-{faults}"),
            "127.0.0.1",
            broker.port,
        );
        let (client, mut conn) = Client::new(o, 64);
        std::thread::spawn(move || for _ in conn.iter() {});
        let (spec, _) = job(&data, 7, 2_000);
        client
            .publish(
                format!("heliostat/v1/dev/{device}/cmd"),
                QoS::AtLeastOnce,
                false,
                command(device, 1, 60_000, CommandBody::RunJob(spec.clone()), &ctl),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !receipts(&collector)
            .iter()
            .any(|r| r.job == spec.id && r.link.device == device)
        {
            assert!(
                Instant::now() < deadline,
                "no receipt (sandbox {sandbox}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = receipts(&collector)
            .into_iter()
            .find(|r| r.job == spec.id && r.link.device == device)
            .unwrap();
        outcomes.push(r.outcome);
        agent.terminate(Duration::from_secs(5));
    }
    assert_eq!(
        outcomes[0],
        JobOutcome::Completed,
        "sandboxed: {outcomes:?}"
    );
    match &outcomes[1] {
        JobOutcome::Failed(why) => assert!(why.contains("the job read"), "{why}"),
        other => panic!("without the sandbox the job read the file: {other:?}"),
    }
    match &outcomes[2] {
        JobOutcome::Failed(why) => assert!(why.contains("the job connected"), "{why}"),
        other => panic!("without the sandbox the job connected: {other:?}"),
    }
}

/// The worker processes whose parent is `pid`.
fn workers_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: the fields after the last ')'.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            ppid == Some(pid) && cmdline.split(|b| *b == 0).any(|a| a == b"worker")
        })
        .collect()
}

/// A job paused for long lets its worker go (checkpointed first) and, resumed, is prepared
/// again from that checkpoint and finishes with the right output.
#[test]
fn a_job_paused_for_long_lets_its_worker_go_and_resumes_from_its_checkpoint() {
    let tmp = TempDir::new("job-release");
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port, controller(), true);
    let config = write_config_with(tmp.path(), broker.port, |cfg| {
        cfg.jobs.checkpoint_every_ms = 50;
        cfg.jobs.release_after_pause_ms = 3_000;
    });
    let data = tmp.path().join("data");
    let log = tmp.path().join("agent.log");
    let agent = hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &config, &log);
    let pid = agent.0.id();
    wait_for("the agent online", Duration::from_secs(20), || {
        status(&data)["link"]["connected"] == true
    });
    let device = hil_tests::agent_key(&data).device_id();
    let (client, mut conn) = Client::new(
        MqttOptions::new("test-releaser", "127.0.0.1", broker.port),
        16,
    );
    std::thread::spawn(move || for _ in conn.iter() {});
    let topic = format!("heliostat/v1/dev/{device}/cmd");
    let ctl = controller();
    let send = |nonce: u64, body: CommandBody| {
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                command(device, nonce, 60_000, body, &ctl),
            )
            .unwrap();
    };
    let (spec, expected) = job(&data, 9, 200_000);
    // Paused as it starts: its worker is up, waiting.
    send(1, CommandBody::RunJob(spec.clone()));
    send(2, CommandBody::Pause { job: spec.id });
    wait_for(
        "the job paused in its worker",
        Duration::from_secs(30),
        || {
            let running = &status(&data)["jobs"]["running"];
            running["paused"] == true && running["released"] == false && !workers_of(pid).is_empty()
        },
    );
    wait_for("the paused job released", Duration::from_secs(20), || {
        let running = &status(&data)["jobs"]["running"];
        running["paused"] == true && running["released"] == true
    });
    assert!(
        workers_of(pid).is_empty(),
        "a released job keeps no worker: {:?}",
        workers_of(pid)
    );
    let done_at_release = status(&data)["jobs"]["running"]["chunks_done"]
        .as_u64()
        .unwrap();
    send(3, CommandBody::Resume { job: spec.id });
    wait_for("the receipt", Duration::from_secs(60), || {
        receipts(&collector).iter().any(|r| r.job == spec.id)
    });
    let r = receipts(&collector)
        .into_iter()
        .find(|r| r.job == spec.id)
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(r.outcome, JobOutcome::Completed, "{r:?}\n{text}");
    assert!(r.pauses >= 1, "{r:?}");
    assert!(
        done_at_release < u64::from(r.chunks),
        "released before the end: {done_at_release} of {}",
        r.chunks
    );
    let mut h = sha2::Sha256::new();
    h.update(&expected);
    assert_eq!(r.output_hash, Hash32(h.finalize().into()));
    assert!(
        text.contains("taken over again from its checkpoint"),
        "{text}"
    );
    let mut agent = agent;
    agent.terminate(Duration::from_secs(5));
}
