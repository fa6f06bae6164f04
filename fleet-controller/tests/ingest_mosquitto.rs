//! End to end through a real Mosquitto: real agent processes publish, the real controller
//! process stores in SQLite, acknowledges, and anchors its epochs on a real local EVM node
//! (anvil). The controller is kill -9'd mid-stream and aborted at each named crash point
//! (after a batch's commit before its acks, right after an epoch closes, after an anchoring
//! transaction is signed and stored, after it is sent); an agent is kill -9'd too and the
//! broker restarted. Afterwards every sequence number each agent produced is stored
//! exactly once, every chain verifies from genesis, every epoch is anchored on chain
//! exactly once, and a bundle verifies against the chain with `attest verify --rpc`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attest::{Envelope, EpochId, SeqNo};
use fleet_controller::anchor::evm::EvmAnchor;
use fleet_controller::config::{
    AnchorBackend, BrokerConfig, ControllerConfig, EpochConfig, EvmConfig,
};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{Anvil, Mosquitto, Proc, TempDir, spawn_agent, workspace_binary};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

/// The operator's hourly intensity for the agents' region (DE): 123.456 g in every hour
/// from two hours ago to six hours ahead, so the whole run is charged at it.
const CSV_MG_PER_KWH: u32 = 123_456;

fn hourly_csv(dir: &Path) -> PathBuf {
    let now_h = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3_600) as i64;
    let mut text = String::from("# test series\nregion,hour_start_utc,g_co2e_per_kwh\n");
    for h in now_h - 2..=now_h + 6 {
        text.push_str(&format!("DE,{},123.456\n", h * 3_600));
    }
    let p = dir.join("grid.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn controller_config(dir: &Path, port: u16, evm: &EvmConfig) -> PathBuf {
    let mut cfg = ControllerConfig::new(
        dir.join("data"),
        BrokerConfig {
            port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = true;
    cfg.ingest.resend_after_ms = 2000;
    cfg.epochs = EpochConfig {
        interval_ms: 300,
        anchor: AnchorBackend::Evm,
        // The chain the test deployed to, polled often; the rest at the controller's defaults.
        evm: Some(EvmConfig {
            poll_ms: 100,
            ..EvmConfig::new(
                evm.rpc_url.clone(),
                evm.contract.clone(),
                evm.key_file.clone(),
                evm.chain_id,
            )
        }),
    };
    cfg.accounting.hourly_csv = Some(hourly_csv(dir));
    cfg.api.listen = format!("127.0.0.1:{}", api_port(dir));
    let p = dir.join("controller.toml");
    cfg.write_toml(&p).unwrap();
    p
}

/// Starts anvil and deploys the anchor contract with the controller's CLI.
fn chain(dir: &Path) -> (Anvil, EvmConfig) {
    let anvil = Anvil::start();
    let key_file = Anvil::key_file(dir);
    let out = std::process::Command::new(CONTROLLER)
        .args(["deploy-anchor", "--rpc", &anvil.url(), "--key-file"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy-anchor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let contract = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        contract.starts_with("0x") && contract.len() == 42,
        "{contract}"
    );
    let cfg = EvmConfig {
        poll_ms: 100,
        receipt_timeout_ms: 10_000,
        ..EvmConfig::new(anvil.url(), contract, key_file, 31337)
    };
    (anvil, cfg)
}

/// Runs the controller with `HELIOSTAT_CRASH_AT=point` and waits for it to abort there: it
/// must die of SIGABRT (any other failure, a panic or an error exit, is not the crash point)
/// and its log must name the point (crash.rs prints it just before aborting).
fn crash_at(config: &Path, log: &Path, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let logged_before = std::fs::metadata(log).map_or(0, |m| m.len() as usize);
    let mut p = spawn_controller_env(config, log, Some(point));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never reached crash point {point}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read(log).unwrap_or_default();
    let this_run = String::from_utf8_lossy(&text[logged_before.min(text.len())..]);
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{point}: the controller did not abort at the crash point but ended with {status}\n{this_run}"
    );
    let line = format!("heliostat: crash point {point} reached; aborting");
    assert!(
        this_run.contains(&line),
        "{point}: the controller aborted without naming the point\n{this_run}"
    );
}

/// SIGABRT's number (6 on every Linux architecture), what `std::process::abort` dies of.
const SIGABRT: i32 = 6;

/// The API port chosen for this test's controller (kept in a file beside its config).
fn api_port(dir: &Path) -> u16 {
    let f = dir.join("api.port");
    if let Ok(p) = std::fs::read_to_string(&f) {
        return p.trim().parse().unwrap();
    }
    let p = hil_tests::free_port();
    std::fs::write(&f, p.to_string()).unwrap();
    p
}

/// `GET path` on the controller's API over a plain socket: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn controller_key(config: &Path) -> String {
    let out = std::process::Command::new(CONTROLLER)
        .args(["--config", config.to_str().unwrap(), "key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn agent_config(dir: &Path, port: u16, key: &str, seed: u64) -> PathBuf {
    let key = attest::PublicKey(attest::hex::decode_array(key).unwrap());
    let mut cfg = AgentConfig::new(
        dir.join("data"),
        SiteConfig {
            battery_wh: 800,
            grid_region: "DE".into(),
            ..SiteConfig::new(48.1, 11.6)
        },
        LinkConfig {
            port,
            resend_after_ms: 1500,
            backoff_max_ms: 400,
            ..LinkConfig::new("127.0.0.1", &key)
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 20,
        record_interval_ms: 100,
    };
    // As a device image would say which build it is.
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("image-release"),
        format!("heliostat-test {seed}\n"),
    )
    .unwrap();
    cfg.image_release_file = dir.join("image-release");
    let p = dir.join("agent.toml");
    cfg.write_toml(&p).unwrap();
    p
}

use hil_tests::agent_next_seq as next_seq;

#[test]
fn every_produced_record_is_stored_once_through_controller_agent_and_broker_crashes() {
    let agent_bin = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    let agent_bin = agent_bin.to_str().unwrap();
    let tmp = TempDir::new("e2e-ingest");
    let mut broker = Mosquitto::start();
    let cdir = tmp.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let (anvil, evm) = chain(&cdir);
    let ccfg = controller_config(&cdir, broker.port, &evm);
    let key = controller_key(&ccfg);
    let clog = cdir.join("controller.log");
    let mut controller = spawn_controller(&ccfg, &clog);
    // A fleet normally finds its controller running; the start-up race (agents first) is
    // the demo test's and the ingest unit tests' subject.
    std::thread::sleep(Duration::from_millis(500));

    let agents: Vec<(PathBuf, PathBuf)> = (0..2)
        .map(|i| {
            let d = tmp.path().join(format!("agent{i}"));
            std::fs::create_dir_all(&d).unwrap();
            (agent_config(&d, broker.port, &key, i), d)
        })
        .collect();
    let mut procs: Vec<Proc> = agents
        .iter()
        .map(|(c, d)| spawn_agent(agent_bin, c, &d.join("agent.log")))
        .collect();

    std::thread::sleep(Duration::from_millis(2_500));
    controller.kill9();
    std::thread::sleep(Duration::from_millis(800));
    // Abort at each crash point in turn while the agents keep publishing.
    for point in ["ingest-committed", "epoch-closed", "evm-signed", "evm-sent"] {
        crash_at(&ccfg, &clog, point);
    }
    controller = spawn_controller(&ccfg, &clog);
    std::thread::sleep(Duration::from_millis(1_500));
    procs[0].kill9();
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    procs[0] = spawn_agent(agent_bin, &agents[0].0, &agents[0].1.join("agent.log"));
    std::thread::sleep(Duration::from_millis(2_000));
    for p in procs.iter_mut() {
        p.terminate(Duration::from_secs(5));
    }
    let produced: Vec<(attest::KeyPair, u64)> = agents
        .iter()
        .map(|(_, d)| {
            (
                hil_tests::agent_key(&d.join("data")),
                next_seq(&d.join("data")),
            )
        })
        .collect();
    // Restart the agents so whatever is unacknowledged drains.
    let _procs: Vec<Proc> = agents
        .iter()
        .map(|(c, d)| spawn_agent(agent_bin, c, &d.join("agent.log")))
        .collect();

    let store = SqliteStore::open(&cdir.join("data/controller.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, n) in &produced {
        assert!(*n > 20, "only {n} records produced");
        let id = key.device_id();
        loop {
            let have = store.items(id, SeqNo(0), SeqNo(n - 1)).unwrap().len() as u64;
            if have == *n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: {have} of {n} stored\ncontroller log:\n{}",
                std::fs::read_to_string(&clog).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let items = store.items(id, SeqNo(0), SeqNo(n - 1)).unwrap();
        hil_tests::assert_chain_from_genesis(
            &key.public(),
            items.iter().map(|(s, b)| (*s, b.as_slice())),
        );
        assert_eq!(
            store.device(id).unwrap().unwrap().state,
            fleet_controller::store::DeviceState::Approved
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cdir.join("data/status.json")).unwrap()).unwrap();
    for bad in ["bad_signature", "fork", "malformed"] {
        assert!(
            status["rejected"].get(bad).is_none(),
            "{bad} rejections: {status}"
        );
    }

    // A proof bundle for the first agent's records, exported by the controller's CLI and
    // verified offline by the attest tool with the controller's key pinned.
    let (k0, n0) = &produced[0];
    let last_ts = {
        let (_, b) = store
            .items(k0.device_id(), SeqNo(n0 - 1), SeqNo(n0 - 1))
            .unwrap()
            .remove(0);
        attest::msg::ChainMessage::open(&Envelope::decode(&b).unwrap())
            .unwrap()
            .link()
            .timestamp
            .0
    };
    let out = tmp.path().join("agent0.bundle");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = std::process::Command::new(CONTROLLER)
            .args([
                "--config",
                ccfg.to_str().unwrap(),
                "bundle",
                "--device",
                &k0.device_id().to_string(),
            ])
            .args(["--to", &last_ts.to_string(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        if r.status.success() {
            break;
        }
        // The last records may wait for their epoch to close.
        assert!(
            Instant::now() < deadline,
            "bundle export failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The HTTP API of the running controller lists both devices, approved.
    let (status_line, body) = http_get(api_port(&cdir), "/api/v1/devices");
    assert!(status_line.contains("200"), "{status_line}");
    let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices.as_array().map(|a| a.len()), Some(2), "{body}");
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "approved"),
        "{body}"
    );
    // Each with the agent's version and its image's build, from its hello.
    let mut images: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["agent_version"], env!("CARGO_PKG_VERSION"), "{d}");
            d["image"].as_str().unwrap()
        })
        .collect();
    images.sort();
    assert!(
        images.iter().all(|i| i.starts_with("heliostat-test-")) && images[0] != images[1],
        "{images:?}"
    );
    // The fleet view sums both devices' hours, charged at the operator's hourly figure.
    let (status_line, body) = http_get(
        api_port(&cdir),
        &format!("/api/v1/fleet/hours?from=0&to={}", 40 * 86_400_000u64),
    );
    assert!(status_line.contains("400"), "{status_line}: {body}");
    assert!(body.contains("period_too_long"), "{body}");
    let now_ms = last_ts + 60_000;
    let (status_line, body) = http_get(
        api_port(&cdir),
        &format!(
            "/api/v1/fleet/hours?from={}&to={now_ms}",
            now_ms - 3_600_000
        ),
    );
    assert!(status_line.contains("200"), "{status_line}: {body}");
    let fleet: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fleet["devices"], 2, "{body}");
    assert_eq!(
        fleet["intensity_sources"],
        serde_json::json!(["operator-csv:grid.csv (hourly)"]),
        "{body}"
    );
    assert!(
        fleet["totals"]["energy_mj"]["load"].as_u64().unwrap() > 0,
        "{body}"
    );
    // The bundle's statement carries the CSV's figure in every hour, named by the digest of
    // the dataset the bundle carries (the file's rows for the region and year); attest
    // verify checks each figure against it and recomputes the carbon.
    let bundle = attest::bundle::ProofBundle::decode(&std::fs::read(&out).unwrap()).unwrap();
    let statement = bundle.statement().unwrap();
    assert!(!statement.hours.is_empty());
    assert!(
        statement
            .hours
            .iter()
            .all(|h| h.intensity_mg_per_kwh == CSV_MG_PER_KWH),
        "{:?}",
        statement.hours
    );
    assert_eq!(bundle.datasets.len(), 1);
    assert!(
        bundle.datasets[0]
            .name()
            .starts_with("operator-csv:grid.csv")
    );
    let csv_digest = bundle.datasets[0].digest().to_hex();
    let attest_bin = workspace_binary(CONTROLLER, "attest", "attest");
    let chain_id = evm.chain_id.to_string();
    let pinned = [
        "verify",
        "--controller-key",
        &key,
        "--chain-id",
        &chain_id,
        "--contract",
        &evm.contract,
    ];
    // The operator's series is not bundled with the verifier: refused until accepted.
    let v = std::process::Command::new(&attest_bin)
        .args(pinned)
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    assert!(text.contains("check `intensity` failed"), "{text}");
    let v = std::process::Command::new(&attest_bin)
        .args(pinned)
        .args(["--accept-dataset", &csv_digest, "--rpc", &evm.rpc_url])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "attest verify: {text}");
    assert!(text.contains("operator-csv:grid.csv"), "{text}");
    assert!(text.contains(&format!("{n0} meter records")), "{text}");
    assert!(
        text.contains("EVM chain 31337") && text.contains("(checked on chain)"),
        "the bundle's epochs are proven on chain: {text}"
    );
    // The same bundle against another chain (a fresh anvil: same chain id, no contract,
    // no transactions) is refused at the anchor check.
    let other = Anvil::start();
    let v = std::process::Command::new(&attest_bin)
        .args(pinned)
        .args(["--accept-dataset", &csv_digest, "--rpc", &other.url()])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        !v.status.success(),
        "verified against an empty chain: {text}"
    );
    assert!(text.contains("check `anchor` failed"), "{text}");
    drop(other);

    // Epochs closed while the controller was being killed: numbered without holes, each
    // anchored once, the anchor log chained and signed, every root recomputed from its
    // leaves, and no message placed in two epochs.
    let ckey = attest::PublicKey(attest::hex::decode_array(&key).unwrap());
    let last = store
        .last_epoch()
        .unwrap()
        .expect("epochs were closed")
        .epoch
        .0;
    assert!(
        last >= 3,
        "only {} epochs\n{}",
        last + 1,
        std::fs::read_to_string(&clog).unwrap_or_default()
    );
    let mut prev = attest::Hash32::ZERO;
    let mut leaves_seen = std::collections::HashSet::new();
    for n in 0..=last {
        let e = store
            .epoch(EpochId(n))
            .unwrap()
            .unwrap_or_else(|| panic!("epoch {n} missing"));
        assert_eq!(e.anchor_index, n, "one anchor entry per epoch, in order");
        let env = Envelope::decode(&e.anchor_entry).unwrap();
        env.verify(&ckey).unwrap();
        let entry: attest::msg::AnchorEntry = env.open().unwrap();
        assert_eq!(
            (entry.epoch.0, entry.prev, entry.root, entry.tree_size),
            (n, prev, e.root, e.tree_size)
        );
        prev = env.hash();
        let leaves = store.epoch_leaves(EpochId(n)).unwrap();
        assert_eq!(
            attest::merkle::MerkleTree::from_leaves(&leaves).head().root,
            e.root,
            "epoch {n}"
        );
        for l in leaves {
            assert!(leaves_seen.insert(l), "a message in two epochs");
        }
    }

    // With the agents gone, the controller anchors what is left; then the chain holds
    // exactly one anchor per epoch, each with the database's root, and each epoch's
    // recorded transaction is the one that put it there.
    drop(_procs);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    let mut last_seen = None;
    loop {
        let last = store.last_epoch().unwrap().map(|e| e.epoch);
        if last != last_seen {
            last_seen = last;
            quiet_since = Instant::now();
        }
        let pending = store.epochs_not_on_chain().unwrap();
        if pending.is_empty() && quiet_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "epochs {:?} not anchored on chain\n{}",
            pending.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            std::fs::read_to_string(&clog).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    controller.kill9();
    let epochs = store.last_epoch().unwrap().unwrap().epoch.next().0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = EvmAnchor::connect(&evm).await.unwrap();
        assert_eq!(
            a.anchored_count().await.unwrap(),
            epochs,
            "one anchor per epoch on chain"
        );
        for n in (0..epochs).map(EpochId) {
            let e = store.epoch(n).unwrap().unwrap();
            let row = store.evm_anchor(n).unwrap().unwrap();
            let (root, size, block) = a.on_chain(n).await.unwrap().expect("anchored");
            assert_eq!((root, size), (e.root, e.tree_size), "epoch {n}");
            assert_eq!(row.block_number, Some(block), "epoch {n}");
            assert!(row.gas_used.unwrap() > 21_000, "epoch {n}");
        }
    });
    drop(anvil);
}

fn spawn_controller(config: &Path, log: &Path) -> Proc {
    spawn_controller_env(config, log, None)
}

fn spawn_controller_env(config: &Path, log: &Path, crash_at: Option<&str>) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = std::process::Command::new(CONTROLLER);
    cmd.args(["--config", config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    match crash_at {
        Some(p) => cmd.env("HELIOSTAT_CRASH_AT", p),
        None => cmd.env_remove("HELIOSTAT_CRASH_AT"),
    };
    Proc(cmd.spawn().unwrap())
}
