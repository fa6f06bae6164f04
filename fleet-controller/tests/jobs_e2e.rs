//! A job through the real parts: an operator made with `fleet-controller account create`
//! makes a buyer and a provider over the API; the buyer uploads an input to the
//! controller's blob store and submits the job over HTTP; the controller's scheduler places
//! it and its dispatch sends the device a `RunJob` signed with the controller's key through
//! a real Mosquitto; a real agent process fetches the input from the controller with the
//! provider's token, runs the job in its keyless worker under its governor (simulated rig,
//! CPU backend) and sends its signed receipt through its outbox; the real controller
//! process stores it once, in the device's chain, the job's state follows (queued,
//! scheduled, running, done), and a proof bundle over the period and the job's own proof
//! verify with `attest verify`.

use std::time::{Duration, Instant};

use attest::msg::{JobOutcome, JobReceipt, JobSpec};
use attest::{Envelope, Hash32, SeqNo};
use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{
    Mosquitto, Proc, TempDir, free_port, http_with, spawn_agent, wait_for, workspace_binary,
};
use sha2::Digest;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_job_runs_from_the_controllers_blob_store_and_its_receipt_is_stored_and_proven() {
    let tmp = TempDir::new("jobs-e2e");
    let broker = Mosquitto::start();
    let api = free_port();
    let cdir = tmp.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let ccfg = cdir.join("controller.toml");
    let mut controller_cfg = ControllerConfig::new(
        cdir.join("data"),
        BrokerConfig {
            port: broker.port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    controller_cfg.enrollment.auto_approve = true;
    controller_cfg.epochs.interval_ms = 300;
    controller_cfg.api.listen = format!("127.0.0.1:{api}");
    controller_cfg.market.tick_ms = 200;
    // No performance probes here: the test counts this device's receipts.
    controller_cfg.market.probe_every_ms = 0;
    controller_cfg.write_toml(&ccfg).unwrap();
    let clog = std::fs::File::create(cdir.join("controller.log")).unwrap();
    let _controller = Proc(
        std::process::Command::new(CONTROLLER)
            .args(["--config", ccfg.to_str().unwrap(), "run"])
            .stdout(std::process::Stdio::null())
            .stderr(clog)
            .spawn()
            .unwrap(),
    );
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let (ckey, _) = attest::keyfile::load_or_create(&cdir.join("data/controller.key")).unwrap();
    // The first operator, from the command line; a buyer and a provider from it, over HTTP.
    let out = std::process::Command::new(CONTROLLER)
        .args(["--config", ccfg.to_str().unwrap()])
        .args(["account", "create", "--kind", "operator", "--name", "ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let operator = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let account = |kind: &str, name: &str| -> String {
        let body = serde_json::json!({"kind": kind, "name": name}).to_string();
        let r = call(api, "POST", "/api/v1/accounts", &operator, body.as_bytes());
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        if kind == "buyer" {
            credit(api, &operator, v["id"].as_u64().unwrap(), BUYER_CREDITS);
        }
        v["token"]["secret"].as_str().unwrap().to_string()
    };
    let buyer = account("buyer", "buyer");
    let provider = account("provider", "rigs");

    let adir = tmp.path().join("agent");
    std::fs::create_dir_all(&adir).unwrap();
    let acfg = adir.join("agent.toml");
    let mut agent_cfg = AgentConfig::new(
        adir.join("data"),
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
            // Under the buyer's ceiling (1000000): a quarter credit a second.
            price_micro_per_gpu_hour: 900_000,
            ..SiteConfig::new(48.1, 11.6)
        },
        LinkConfig {
            port: broker.port,
            resend_after_ms: 1500,
            backoff_max_ms: 400,
            ..LinkConfig::new("127.0.0.1", &ckey.public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 3,
            initial_soc: 1.0,
            ..Default::default()
        })],
    );
    agent_cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 200,
    };
    agent_cfg.jobs.prefer_gpu = false;
    agent_cfg.jobs.blob_url = Some(format!("http://127.0.0.1:{api}/api/v1/blobs/"));
    let token_file = adir.join("blob.token");
    std::fs::write(&token_file, format!("{provider}\n")).unwrap();
    agent_cfg.jobs.blob_token_file = Some(token_file);
    agent_cfg.write_toml(&acfg).unwrap();
    let agent_bin = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    let mut agent = spawn_agent(agent_bin.to_str().unwrap(), &acfg, &adir.join("agent.log"));
    let store = SqliteStore::open(&cdir.join("data/controller.db")).unwrap();
    let device = wait_for(
        "the agent's hello at the controller",
        Duration::from_secs(30),
        || store.devices().unwrap().first().map(|d| d.id),
    );

    // The device is the provider's: only its token serves jobs placed there.
    let r = call(
        api,
        "POST",
        &format!("/api/v1/devices/{device}/provider"),
        &operator,
        br#"{"provider": "rigs"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let stranger = account("provider", "other-rigs");

    // The input, into the controller's blob store over HTTP, and the job, submitted.
    let count = 50_000usize;
    let input: Vec<u8> = (0..count * 64).map(|i| (i * 13 % 251) as u8).collect();
    let hash = Hash32::digest(&input);
    let r = call(
        api,
        "PUT",
        &format!("/api/v1/blobs/{}", hash.to_hex()),
        &buyer,
        &input,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut expected = sha2::Sha256::new();
    for item in input.chunks(64) {
        expected.update(sha2::Sha256::digest(item));
    }
    let job = serde_json::json!({
        "workload": heliostat_agent_workload(count),
        "inputs": [hash],
        "deadline_ms": now() + 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        &buyer,
        job.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let submitted = r.json();
    assert_eq!(submitted["state"], "queued");
    assert_eq!(
        submitted["order"]["output_sizes"],
        serde_json::json!([count * 32])
    );
    let spec: JobSpec = serde_json::from_value(submitted["spec"].clone()).unwrap();
    assert_eq!(spec.inputs, vec![hash]);
    assert_eq!(spec.input_sizes, vec![input.len() as u64]);
    // The controller's scheduler places it on the only device (inflexible, the battery
    // full) and sends it a signed `RunJob`: no one else signs anything.
    // The receipt, stored by the controller in the device's chain, exactly once.
    let receipt = wait_for(
        "the receipt at the controller",
        Duration::from_secs(60),
        || {
            store
                .items(device, SeqNo(0), SeqNo(u64::MAX / 2))
                .unwrap()
                .into_iter()
                .filter_map(|(_, b)| Envelope::decode(&b).ok()?.open::<JobReceipt>().ok())
                .find(|r| r.job == spec.id)
        },
    );
    assert_eq!(receipt.outcome, JobOutcome::Completed, "{receipt:?}");
    assert_eq!(receipt.output_hash, Hash32(expected.finalize().into()));
    assert!(receipt.energy(attest::msg::ChannelKind::Gpu).unwrap().0 > 0);
    let items = store.items(device, SeqNo(0), SeqNo(u64::MAX / 2)).unwrap();
    let receipts = items
        .iter()
        .filter(|(_, b)| {
            Envelope::decode(b)
                .ok()
                .and_then(|e| e.open::<JobReceipt>().ok())
                .is_some()
        })
        .count();
    assert_eq!(receipts, 1);
    // The job's state followed: placed, run, done; its history says where and why.
    let job_id = spec.id.to_string();
    let states = wait_for("the job done", Duration::from_secs(30), || {
        let v = call(api, "GET", &format!("/api/v1/jobs/{job_id}"), &buyer, b"").json();
        (v["state"] == "done").then(|| {
            v["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["state"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    });
    // A hash batch is checked (sampled digests recomputed) once its output is uploaded.
    assert_eq!(
        states,
        vec!["queued", "scheduled", "running", "validating", "done"]
    );
    // The agent's job events reached dispatch (its `started` and `finished` at least,
    // whichever came first of them and the receipt), and none was refused.
    let metrics = wait_for("the job events counted", Duration::from_secs(20), || {
        let m = String::from_utf8(hil_tests::http(api, "GET", "/metrics", b"").1).unwrap();
        let taken: u64 = m
            .lines()
            .filter(|l| l.starts_with("heliostat_job_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        (taken >= 2).then_some(m)
    });
    assert!(!metrics.contains("effect=\"malformed\""), "{metrics}");
    // `fleetctl logs`: the history, one line each, in text and as JSON lines.
    let buyer_file = tmp.path().join("buyer.token");
    std::fs::write(&buyer_file, &buyer).unwrap();
    let logs = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"));
        c.args(["--url", &format!("http://127.0.0.1:{api}")])
            .args(["--token-file", buyer_file.to_str().unwrap()]);
        if json {
            c.args(["--output", "json"]);
        }
        let out = c.args(["logs", &job_id, "--follow"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = logs(false);
    let logged: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|s| *s != "progress")
        .collect();
    assert_eq!(
        logged,
        ["queued", "scheduled", "running", "validating", "done"],
        "{text}"
    );
    let events: Vec<serde_json::Value> = logs(true)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("event").is_some())
        .collect();
    assert_eq!(events.len(), 5);
    assert_eq!(events[4]["event"]["state"], "done");
    assert_eq!(events[4]["event"]["seq"], 4);
    // The agent uploaded the output; the controller kept it because it hashes to what the
    // receipt says, and the buyer downloads it.
    let results = wait_for("the job's output", Duration::from_secs(30), || {
        let v = call(
            api,
            "GET",
            &format!("/api/v1/jobs/{job_id}/results"),
            &buyer,
            b"",
        )
        .json();
        (v["outputs"].as_array().is_some_and(|a| a.len() == 1)).then_some(v)
    });
    let out_hash = results["outputs"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let got = call(
        api,
        "GET",
        &format!("/api/v1/blobs/{out_hash}"),
        &buyer,
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), count * 32);
    assert_eq!(Hash32::digest(&got.body).to_hex(), out_hash);
    assert_eq!(
        Hash32::digest(&got.body),
        receipt.output_hash,
        "one output: its hash is the receipt's"
    );
    // Paid once, on its receipt: the device's price over the time it ran, less the 5 %
    // fee, to its provider; the rest of the escrow back to the buyer.
    let balance = |token: &str| call(api, "GET", "/api/v1/account/balance", token, b"").json();
    let (b, p) = (balance(&buyer), balance(&provider));
    assert_eq!(b["escrowed"], 0, "{b}");
    let price = BUYER_CREDITS - b["available"].as_u64().unwrap();
    let ran_ms = receipt.ended.0 - receipt.started.0;
    assert_eq!(price, (900_000 * ran_ms).div_ceil(3_600_000), "{b}");
    assert!(price > 0);
    assert_eq!(
        p["available"].as_u64().unwrap(),
        price - price * 50_000 / 1_000_000,
        "{p}"
    );
    // The buyer's statement of account, once the next epoch holds the payout: every
    // posting signed and anchored, verified by fleetctl and by attest against the pinned
    // controller key, its balance the API's.
    let statement = tmp.path().join("statement.json");
    let verified = wait_for("the payout anchored", Duration::from_secs(20), || {
        let r = call(api, "GET", "/api/v1/account/statement", &buyer, b"");
        (r.status == 200 && !r.body.is_empty()).then_some(())?;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .args(["--url", &format!("http://127.0.0.1:{api}")])
            .args(["--token-file", buyer_file.to_str().unwrap()])
            .args(["statement", "--controller-key", &ckey.public().to_string()])
            .args(["--out", statement.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("after 3 postings")).then_some(text)
    });
    assert!(
        verified.contains(&format!("holds {} micro-credits", b["available"])),
        "{verified}"
    );
    let v = std::process::Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .args([
            "verify-account",
            "--controller-key",
            &ckey.public().to_string(),
        ])
        .arg(&statement)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // A statement with a posting taken out fails.
    let mut doctored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&statement).unwrap()).unwrap();
    doctored["entries"].as_array_mut().unwrap().remove(1);
    std::fs::write(&statement, doctored.to_string()).unwrap();
    let v = std::process::Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .args([
            "verify-account",
            "--controller-key",
            &ckey.public().to_string(),
        ])
        .arg(&statement)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Another provider cannot upload for a device it does not run: the job is not there.
    let r = call(
        api,
        "PUT",
        &format!("/api/v1/jobs/{job_id}/outputs/0"),
        &stranger,
        &got.body,
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // Another upload of that output with other bytes is refused.
    let provider_again = call(
        api,
        "PUT",
        &format!("/api/v1/jobs/{job_id}/outputs/0"),
        &provider,
        &vec![0u8; count * 32],
    );
    assert_eq!(
        provider_again.status,
        409,
        "{}",
        String::from_utf8_lossy(&provider_again.body)
    );
    hil_tests::assert_chain_from_genesis(
        &hil_tests::agent_key(&adir.join("data")).public(),
        items.iter().map(|(s, b)| (*s, b.as_slice())),
    );
    // The agent kept the fetched input, under its hash.
    assert_eq!(
        std::fs::read(adir.join("data/blobs").join(hash.to_hex())).unwrap(),
        input
    );

    // A bundle over the period with the receipt in it verifies.
    let out = tmp.path().join("job.bundle");
    let to = receipt.ended.0.to_string();
    wait_for("an anchored bundle", Duration::from_secs(20), || {
        std::process::Command::new(CONTROLLER)
            .args(["--config", ccfg.to_str().unwrap(), "bundle", "--device"])
            .arg(device.to_string())
            .args(["--to", &to, "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
            .then_some(())
    });
    let v = std::process::Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .args(["verify", "--controller-key", &ckey.public().to_string()])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "attest verify: {}",
        String::from_utf8_lossy(&v.stdout)
    );

    // And the job's own proof: its receipt and the records over its hours.
    let job_out = tmp.path().join("job-only.bundle");
    let made = std::process::Command::new(CONTROLLER)
        .args(["--config", ccfg.to_str().unwrap(), "bundle", "--device"])
        .arg(device.to_string())
        .args([
            "--job",
            &spec.id.to_string(),
            "--out",
            job_out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "bundle --job: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let v = std::process::Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .args(["verify", "--controller-key", &ckey.public().to_string()])
        .arg(&job_out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "attest verify of the job: {text}");
    assert!(text.contains("  job: "), "a job account: {text}");
    // The buyer's side: fleetctl finds the device the job ran on and verifies its proof
    // against the controller key the buyer pins.
    let proof = tmp.path().join("fleetctl.bundle");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["--url", &format!("http://127.0.0.1:{api}")])
        .args(["--token-file", buyer_file.to_str().unwrap()])
        .args(["proof", &spec.id.to_string(), "--controller-key"])
        .arg(ckey.public().to_string())
        .args(["--out", proof.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fleetctl proof: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("verified") && text.contains("job: "),
        "{text}"
    );
    agent.terminate(Duration::from_secs(5));
}

/// Micro-credits each buyer gets.
const BUYER_CREDITS: u64 = 1_000_000_000;

/// An operator's deposit of `amount` micro-credits for account `id`.
fn credit(api: u16, operator: &str, id: u64, amount: u64) {
    let body = serde_json::json!({"amount": amount}).to_string();
    let r = call(
        api,
        "POST",
        &format!("/api/v1/accounts/{id}/credits"),
        operator,
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// One request to the controller's API with a token.
fn call(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> hil_tests::HttpResponse {
    let auth = format!("Bearer {token}");
    http_with(port, method, path, &[("Authorization", &auth)], Some(body))
}

/// The agent's built-in `sha256_batch` over `count` items of 64 bytes, as a workload.
fn heliostat_agent_workload(count: usize) -> attest::msg::Workload {
    attest::msg::Workload::Builtin {
        kernel: "sha256_batch".into(),
        params: vec![
            attest::msg::Param {
                name: "count".into(),
                value: count as i64,
            },
            attest::msg::Param {
                name: "item_len".into(),
                value: 64,
            },
        ],
    }
}

/// The controller, its operator and a buyer and a provider made over the API: `(api port,
/// controller key, buyer token, provider token, the process)`.
fn market(tmp: &std::path::Path, broker: u16) -> (u16, attest::KeyPair, String, String, Proc) {
    market_with(tmp, broker, |_| {})
}

/// [`market_with`], and the operator's token.
fn market_ops(
    tmp: &std::path::Path,
    broker: u16,
    tune: impl FnOnce(&mut ControllerConfig),
) -> (u16, attest::KeyPair, String, String, Proc, String) {
    let (api, key, buyer, provider, proc) = market_with(tmp, broker, tune);
    let operator = std::fs::read_to_string(tmp.join("controller/operator.token")).unwrap();
    (api, key, buyer, provider, proc, operator)
}

/// [`market`] with the controller's configuration adjusted by `tune`.
fn market_with(
    tmp: &std::path::Path,
    broker: u16,
    tune: impl FnOnce(&mut ControllerConfig),
) -> (u16, attest::KeyPair, String, String, Proc) {
    market_env(tmp, broker, &[], tune)
}

/// [`market_with`], the controller run with extra environment variables.
fn market_env(
    tmp: &std::path::Path,
    broker: u16,
    env: &[(&str, &str)],
    tune: impl FnOnce(&mut ControllerConfig),
) -> (u16, attest::KeyPair, String, String, Proc) {
    let api = free_port();
    let cdir = tmp.join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let ccfg = cdir.join("controller.toml");
    let mut cfg = ControllerConfig::new(
        cdir.join("data"),
        BrokerConfig {
            port: broker,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = true;
    cfg.epochs.interval_ms = 500;
    cfg.api.listen = format!("127.0.0.1:{api}");
    cfg.market.tick_ms = 200;
    // No performance probes unless a test asks (they would take the rigs' first minutes).
    cfg.market.probe_every_ms = 0;
    tune(&mut cfg);
    cfg.write_toml(&ccfg).unwrap();
    let log = std::fs::File::create(cdir.join("controller.log")).unwrap();
    let proc = Proc(
        std::process::Command::new(CONTROLLER)
            .args(["--config", ccfg.to_str().unwrap(), "run"])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let (ckey, _) = attest::keyfile::load_or_create(&cdir.join("data/controller.key")).unwrap();
    let out = std::process::Command::new(CONTROLLER)
        .args(["--config", ccfg.to_str().unwrap()])
        .args(["account", "create", "--kind", "operator", "--name", "ops"])
        .output()
        .unwrap();
    let operator = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::write(cdir.join("operator.token"), &operator).unwrap();
    let account = |kind: &str| -> String {
        let body = serde_json::json!({"kind": kind, "name": kind}).to_string();
        let r = call(api, "POST", "/api/v1/accounts", &operator, body.as_bytes());
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        if kind == "buyer" {
            credit(api, &operator, v["id"].as_u64().unwrap(), BUYER_CREDITS);
        }
        v["token"]["secret"].as_str().unwrap().to_string()
    };
    (api, ckey, account("buyer"), account("provider"), proc)
}

/// A simulated rig at longitude `lon` on the equator whose panels give `sun_w` all day
/// (a trace), its battery at `soc` (its reserve is 0.2).
#[allow(clippy::too_many_arguments)]
fn rig(
    dir: &std::path::Path,
    lon: f64,
    sun_w: u32,
    broker: u16,
    api: u16,
    ckey: &attest::KeyPair,
    provider: &str,
    seed: u64,
    soc: f64,
) -> Proc {
    rig_env(
        dir,
        lon,
        sun_w,
        broker,
        api,
        ckey,
        provider,
        seed,
        soc,
        &[],
        |_| {},
    )
}

/// [`rig`] with extra environment variables for its agent (a test fault) and its
/// configuration adjusted by `tune`.
#[allow(clippy::too_many_arguments)]
fn rig_env(
    dir: &std::path::Path,
    lon: f64,
    sun_w: u32,
    broker: u16,
    api: u16,
    ckey: &attest::KeyPair,
    provider: &str,
    seed: u64,
    soc: f64,
    env: &[(&str, &str)],
    tune: impl FnOnce(&mut AgentConfig),
) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let trace = dir.join("sun.csv");
    std::fs::write(&trace, format!("0,{sun_w}\n86399,{sun_w}\n")).unwrap();
    let mut cfg = AgentConfig::new(
        dir.join("data"),
        SiteConfig {
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "KE".into(),
            price_micro_per_gpu_hour: 500_000,
            ..SiteConfig::new(0.0, lon)
        },
        LinkConfig {
            port: broker,
            resend_after_ms: 1500,
            backoff_max_ms: 400,
            ..LinkConfig::new("127.0.0.1", &ckey.public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed,
            initial_soc: soc,
            trace_csv: Some(trace),
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 200,
    };
    cfg.jobs.prefer_gpu = false;
    cfg.jobs.blob_url = Some(format!("http://127.0.0.1:{api}/api/v1/blobs/"));
    let token = dir.join("provider.token");
    std::fs::write(&token, provider).unwrap();
    cfg.jobs.blob_token_file = Some(token);
    tune(&mut cfg);
    let path = dir.join("agent.toml");
    cfg.write_toml(&path).unwrap();
    let bin = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    hil_tests::spawn_agent_with_env(bin.to_str().unwrap(), &path, &dir.join("agent.log"), env)
}

/// Submits a `sha256_batch` job of `count` items; its id.
fn submit(api: u16, buyer: &str, count: usize, flexible: bool, n: u8) -> String {
    let input: Vec<u8> = (0..count * 64)
        .map(|i| (i * 7 + n as usize) as u8)
        .collect();
    let hash = Hash32::digest(&input);
    let r = call(
        api,
        "PUT",
        &format!("/api/v1/blobs/{}", hash.to_hex()),
        buyer,
        &input,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let job = serde_json::json!({
        "workload": heliostat_agent_workload(count),
        "inputs": [hash],
        "deadline_ms": now() + 12 * 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
        "flexible": flexible,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        buyer,
        job.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

/// Two rigs on the equator, one where it is noon now and one where it is midnight with its
/// battery at its reserve: a flexible job goes to the sunlit one (the dark one could only
/// run it on the grid, which it does not offer) and its proof shows its energy renewable;
/// an inflexible one runs at once.
#[test]
fn a_flexible_job_submitted_at_night_runs_at_a_sunlit_site_and_its_proof_says_so() {
    let tmp = TempDir::new("market-e2e");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, provider, _controller) = market(tmp.path(), broker.port);
    // The longitude where it is solar noon now (and the one where it is midnight).
    let (noon_lon, night_lon) = noon_and_midnight();
    let _sunny = rig(
        &tmp.path().join("sunny"),
        noon_lon,
        350,
        broker.port,
        api,
        &ckey,
        &provider,
        1,
        0.25,
    );
    let _dark = rig(
        &tmp.path().join("dark"),
        night_lon,
        0,
        broker.port,
        api,
        &ckey,
        &provider,
        2,
        0.2,
    );
    let store = SqliteStore::open(&tmp.path().join("controller/data/controller.db")).unwrap();
    wait_for(
        "both rigs and their records",
        Duration::from_secs(30),
        || {
            let devices = store.devices().unwrap();
            (devices.len() == 2
                && devices
                    .iter()
                    .all(|d| store.count_items(d.id).unwrap_or(0) >= 3))
            .then_some(())
        },
    );
    let sunny_id = hil_tests::agent_key(&tmp.path().join("sunny/data")).device_id();

    let flexible = submit(api, &buyer, 5_000, true, 1);
    let job = wait_for("the flexible job done", Duration::from_secs(60), || {
        let v = call(api, "GET", &format!("/api/v1/jobs/{flexible}"), &buyer, b"").json();
        (v["state"] == "done").then_some(v)
    });
    assert_eq!(job["device"], sunny_id.to_string(), "{job}");
    let placed = job["history"][1]["reason"].as_str().unwrap();
    assert!(placed.contains("100 % renewable"), "{placed}");
    // Its proof, from the sunny rig, once anchored: the job's energy came from the sun.
    let proof = wait_for("the job's proof", Duration::from_secs(30), || {
        let r = http_with(
            api,
            "GET",
            &format!("/api/v1/devices/{sunny_id}/jobs/{flexible}/bundle"),
            &[],
            None,
        );
        (r.status == 200).then_some(r.body)
    });
    let bundle = attest::bundle::ProofBundle::decode(&proof).unwrap();
    let report = attest::bundle::verify(
        &bundle,
        &attest::bundle::VerifyOptions::pinned(ckey.public(), attest::TimestampMs(now())),
    )
    .unwrap();
    let account = report.statement.job.expect("a job account");
    assert!(account.energy.0 > 0, "{account:?}");
    assert!(
        account.renewable.0 * 10 >= account.energy.0 * 9,
        "at least 90 % renewable: {account:?}"
    );

    // An inflexible job is placed at once, wherever there is room.
    let urgent = submit(api, &buyer, 2_000, false, 2);
    wait_for("the urgent job done", Duration::from_secs(60), || {
        let v = call(api, "GET", &format!("/api/v1/jobs/{urgent}"), &buyer, b"").json();
        (v["state"] == "done").then_some(())
    });
}

/// The longitudes where it is solar noon now and where it is midnight.
fn noon_and_midnight() -> (f64, f64) {
    let hours = (now() % 86_400_000) as f64 / 3_600_000.0;
    let noon = ((12.0 - hours) * 15.0 + 540.0) % 360.0 - 180.0;
    (noon, (noon + 360.0) % 360.0 - 180.0)
}

/// A rig dies (kill -9) while it runs a job and stays gone: past the lease grace the
/// controller cancels the job there and places it on another rig, where it runs to the
/// end once: one receipt in all, one output, the history saying why it moved.
#[test]
fn a_job_whose_rig_dies_past_the_grace_runs_again_elsewhere_and_finishes_once() {
    let tmp = TempDir::new("market-regrace");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, provider, _controller) = market_with(tmp.path(), broker.port, |c| {
        c.market.online_within_ms = 1_500;
        c.market.lease_grace_ms = 3_000;
    });
    let (noon_lon, _) = noon_and_midnight();
    let rig_at = |name: &str, seed: u64| {
        rig(
            &tmp.path().join(name),
            noon_lon,
            350,
            broker.port,
            api,
            &ckey,
            &provider,
            seed,
            0.9,
        )
    };
    let mut first = rig_at("first", 1);
    let store = SqliteStore::open(&tmp.path().join("controller/data/controller.db")).unwrap();
    let key_of = |name: &str| {
        let data = tmp.path().join(name).join("data");
        wait_for("the rig's key", Duration::from_secs(20), || {
            data.join("device.key")
                .exists()
                .then(|| hil_tests::agent_key(&data).device_id())
        })
    };
    let first_id = key_of("first");
    wait_for("the first rig's records", Duration::from_secs(30), || {
        (store.count_items(first_id).unwrap_or(0) >= 3).then_some(())
    });
    // A Mandelbrot tile inside the main cardioid: every pixel runs to `max_iter`, seconds
    // of work, no input.
    const ONE: i64 = 1 << 56;
    let param = |name: &str, value: i64| serde_json::json!({"name": name, "value": value});
    let order = serde_json::json!({
        "workload": {"builtin": {"kernel": "mandelbrot", "params": [
            param("width", 256), param("height", 256),
            param("x0", -3 * ONE / 10), param("y0", -3 * ONE / 100),
            param("step", ONE / 4096), param("max_iter", 20_000),
        ]}},
        "inputs": [],
        "deadline_ms": now() + 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        &buyer,
        order.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["id"].as_str().unwrap().to_string();
    let get = || call(api, "GET", &format!("/api/v1/jobs/{job}"), &buyer, b"").json();
    // Running there (its device's `started` event), then the rig dies.
    let running = wait_for(
        "the job running on the first rig",
        Duration::from_secs(30),
        || {
            let v = get();
            (v["state"] == "running").then_some(v)
        },
    );
    assert_eq!(running["device"], first_id.to_string());
    first.kill9();
    let killed_at = now();
    let _second = rig_at("second", 2);
    let second_id = key_of("second");
    let done = wait_for("the job done elsewhere", Duration::from_secs(120), || {
        let v = get();
        assert!(
            !["failed", "expired", "cancelled"].contains(&v["state"].as_str().unwrap()),
            "{v}"
        );
        (v["state"] == "done").then_some(v)
    });
    assert_eq!(done["device"], second_id.to_string(), "{done}");
    let history = done["history"].as_array().unwrap();
    let states: Vec<&str> = history
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "queued",
            "scheduled",
            "running",
            "queued",
            "scheduled",
            "running",
            "validating",
            "done"
        ],
        "{done}"
    );
    let moved = &history[3];
    assert!(
        moved["reason"].as_str().unwrap().contains("silent"),
        "{moved}"
    );
    assert!(
        moved["at_ms"].as_u64().unwrap() >= killed_at + 3_000 - 1_000,
        "moved before the grace: {moved} (killed at {killed_at})"
    );
    // One receipt in all, from the second rig, completed; the first rig never sealed one.
    let receipts = |device| -> Vec<JobReceipt> {
        store
            .items(device, SeqNo(0), SeqNo(u64::MAX / 2))
            .unwrap()
            .into_iter()
            .filter_map(|(_, b)| Envelope::decode(&b).ok()?.open::<JobReceipt>().ok())
            .filter(|r| r.job.to_string() == job)
            .collect()
    };
    assert!(receipts(first_id).is_empty());
    let second_receipts = receipts(second_id);
    assert_eq!(second_receipts.len(), 1, "{second_receipts:?}");
    assert_eq!(second_receipts[0].outcome, JobOutcome::Completed);
    // Paid once: one escrow, one payout, whatever the moves.
    use fleet_controller::store::ledger::LedgerStore;
    let job_id = fleet_controller::jobs::parse_job_id(&job).unwrap();
    let kinds: Vec<&str> = store
        .job_transactions(job_id)
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["escrow", "payout"]);
    let results = wait_for("the job's output", Duration::from_secs(30), || {
        let v = call(
            api,
            "GET",
            &format!("/api/v1/jobs/{job}/results"),
            &buyer,
            b"",
        )
        .json();
        (v["outputs"].as_array().is_some_and(|a| a.len() == 1)).then_some(v)
    });
    assert_eq!(results["outputs"][0]["bytes"], 4 * 256 * 256);
}

/// A rig that returns wrong matrix products (a test fault in its worker) is caught by
/// Freivalds' check: marked with the evidence, its provider unpaid, its reputation gone;
/// the job runs again on an honest rig, is validated there and paid once, to that rig's
/// provider.
#[test]
fn a_rig_returning_a_wrong_product_is_caught_and_the_honest_rig_is_paid() {
    let tmp = TempDir::new("market-liar");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, _, _controller, operator) = market_ops(tmp.path(), broker.port, |_| {});
    let (liar_p, liar_account) = provider_account(api, &operator, "liar-rigs");
    let (honest_p, _) = provider_account(api, &operator, "honest-rigs");
    let r = call(
        api,
        "POST",
        "/api/v1/account/stake",
        &liar_p,
        br#"{"amount": 1000000}"#,
    );
    assert_eq!(r.status, 403, "the agents' token cannot stake");
    // The liar's provider has staked a million micro-credits (issued by the operator).
    stake(api, &operator, liar_account, 1_000_000);
    let (noon_lon, _) = noon_and_midnight();
    let start = |name: &str, token: &str, seed: u64, env: &[(&str, &str)]| {
        rig_env(
            &tmp.path().join(name),
            noon_lon,
            350,
            broker.port,
            api,
            &ckey,
            token,
            seed,
            0.9,
            env,
            |_| {},
        )
    };
    let key_of = |name: &str| rig_key(&tmp.path().join(name));
    let assign = |device: attest::DeviceId, name: &str| assign(api, &operator, device, name);
    let _liar = start("liar", &liar_p, 1, &[("HELIOSTAT_WORKER_FAULT", "corrupt")]);
    let liar = key_of("liar");
    assign(liar, "liar-rigs");
    let store = SqliteStore::open(&tmp.path().join("controller/data/controller.db")).unwrap();
    wait_for("the liar's records", Duration::from_secs(30), || {
        (store.count_items(liar).unwrap_or(0) >= 3).then_some(())
    });
    // A 48 x 40 by 40 x 56 product.
    let (m, n, k) = (48usize, 56usize, 40usize);
    let f32s = |len: usize, mul: usize| -> Vec<u8> {
        (0..len)
            .flat_map(|i| (((i * mul) % 211) as f32 / 50.0 - 2.0).to_le_bytes())
            .collect()
    };
    let (a, b) = (f32s(m * k, 37), f32s(k * n, 53));
    for blob in [&a, &b] {
        let r = call(
            api,
            "PUT",
            &format!("/api/v1/blobs/{}", Hash32::digest(blob).to_hex()),
            &buyer,
            blob,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let param = |name: &str, value: usize| serde_json::json!({"name": name, "value": value});
    let order = serde_json::json!({
        "workload": {"builtin": {"kernel": "matmul_f32",
            "params": [param("m", m), param("n", n), param("k", k)]}},
        "inputs": [Hash32::digest(&a), Hash32::digest(&b)],
        "deadline_ms": now() + 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        &buyer,
        order.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["id"].as_str().unwrap().to_string();
    let get = || call(api, "GET", &format!("/api/v1/jobs/{job}"), &buyer, b"").json();
    // The liar runs it, its receipt says completed, its upload matches its receipt, and
    // the check finds the product wrong: queued again.
    // On a timeout: the job, and what the controller and the rigs logged.
    let logs = || -> String {
        [
            "controller/controller.log",
            "liar/agent.log",
            "honest/agent.log",
        ]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(tmp.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text
                .lines()
                .rev()
                .filter(|l| !l.contains("epoch anchored"))
                .take(40)
                .collect();
            format!(
                "--- {f}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
    };
    let until = |what: &str, secs: u64, f: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = get();
            if f(&v) {
                return v;
            }
            assert!(
                !["failed", "expired", "cancelled"].contains(&v["state"].as_str().unwrap()),
                "{v}\n{}",
                logs()
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let caught = until("the wrong result caught", 120, &|v| {
        v["history"].as_array().unwrap().iter().any(|h| {
            h["reason"]
                .as_str()
                .unwrap()
                .contains("its result is wrong")
        })
    });
    assert_ne!(caught["state"], "done", "{caught}");
    let _honest = start("honest", &honest_p, 2, &[]);
    let honest = key_of("honest");
    assign(honest, "honest-rigs");
    let done = until("the job done on the honest rig", 120, &|v| {
        v["state"] == "done"
    });
    assert_eq!(done["device"], honest.to_string(), "{done}");
    let states: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"done"));
    assert!(
        done["history"].as_array().unwrap().last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("result validated (Freivalds"),
        "{done}"
    );
    // The honest rig's provider is paid, once; the liar's nothing.
    let balance = |token: &str| {
        call(api, "GET", "/api/v1/account/balance", token, b"").json()["available"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(balance(&liar_p), 0);
    assert!(balance(&honest_p) > 0);
    // Its stake was slashed by a tenth for the wrong result: half to the buyer, half to the
    // platform.
    let liar_b = call(api, "GET", "/api/v1/account/balance", &liar_p, b"").json();
    assert_eq!(liar_b["staked"], 900_000, "{liar_b}");
    use fleet_controller::store::ledger::LedgerStore;
    let id = fleet_controller::jobs::parse_job_id(&job).unwrap();
    let kinds: Vec<&str> = store
        .job_transactions(id)
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, ["escrow", "slash", "payout"]);
    let slash = &store.job_transactions(id).unwrap()[1];
    assert!(slash.memo.contains("a wrong result"), "{slash:?}");
    assert!(
        slash
            .postings
            .contains(&(format!("stake:{liar_account}"), -100_000)),
        "{slash:?}"
    );
    // The evidence is kept, and the market lists the liar far below the honest rig.
    use fleet_controller::store::marks::MarkStore;
    let marks = store.device_marks(liar, 0).unwrap();
    let wrong = marks
        .iter()
        .find(|m| m.kind == fleet_controller::reputation::MarkKind::Wrong)
        .expect("a wrong mark");
    assert!(wrong.detail.contains("freivalds"), "{}", wrong.detail);
    let market = call(api, "GET", "/api/v1/market", &buyer, b"").json();
    let rep = |d: attest::DeviceId| {
        market
            .as_array()
            .or_else(|| market["devices"].as_array())
            .unwrap()
            .iter()
            .find(|l| l["device"] == d.to_string())
            .unwrap()["reputation"]
            .as_f64()
            .unwrap()
    };
    assert!(
        rep(liar) < fleet_controller::reputation::MIN_SCORE,
        "{market}"
    );
    assert!(rep(honest) > 0.5, "{market}");
}

/// A certificate of the Kenyan grid (the rigs' region) as a registry issues it.
fn certificate(id: &str, hour: u64, region: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "scheme": "granular",
        "start": hour * 3_600_000,
        "end": (hour + 1) * 3_600_000,
        "source": "hydro",
        "technology": "run-of-river",
        "producer": "KE-HYDRO-0007",
        "region": region,
        "volume_wh": 1,
        "issuer": "Test granular registry",
    })
}

/// A rig at midnight with its battery at its reserve and a grid allowance runs a job on
/// grid energy. Its buyer covers the job's emissions with a granular certificate of the
/// job's hour and region: the retirement covers what the job emitted in that hour (never
/// more); the same certificate again, one of another hour or region, or a second one for a
/// covered hour are refused with their reasons. The job's proof carries the signed
/// retirement, anchored; `attest verify` checks it and reports measured and covered apart,
/// the SCI unchanged.
#[test]
fn a_jobs_grid_emissions_are_covered_by_a_certificate_retired_once_and_its_proof_shows_both() {
    let tmp = TempDir::new("certificates-e2e");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, provider, _controller, operator) =
        market_ops(tmp.path(), broker.port, |_| {});
    let (_, night_lon) = noon_and_midnight();
    let _rig = rig_env(
        &tmp.path().join("night"),
        night_lon,
        0,
        broker.port,
        api,
        &ckey,
        &provider,
        3,
        0.2,
        &[],
        |cfg| {
            // A rig whose GPU draws 300 W from the grid.
            cfg.jobs.simulated_gpu_w = 300.0;
            cfg.jobs.grid_allowance_w = 400.0;
        },
    );
    let store = SqliteStore::open(&tmp.path().join("controller/data/controller.db")).unwrap();
    wait_for("the rig and its records", Duration::from_secs(30), || {
        let devices = store.devices().unwrap();
        (devices.len() == 1 && store.count_items(devices[0].id).unwrap_or(0) >= 3).then_some(())
    });
    let rig_id = hil_tests::agent_key(&tmp.path().join("night/data")).device_id();
    // A Mandelbrot tile inside the set: every point runs to `max_iter`, some seconds of
    // work, so the job's share of the grid's emissions is whole milligrams.
    let q = |x: f64| (x * (1u64 << 56) as f64) as i64;
    let tile = serde_json::json!({
        "workload": {"builtin": {"kernel": "mandelbrot", "params": [
            {"name": "width", "value": 256}, {"name": "height", "value": 256},
            {"name": "x0", "value": q(-0.5)}, {"name": "y0", "value": q(-0.3)},
            {"name": "step", "value": q(1.0 / 512.0)}, {"name": "max_iter", "value": 8_000},
        ]}},
        "inputs": [],
        "deadline_ms": now() + 12 * 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
        "flexible": false,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        &buyer,
        tile.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    wait_for("the job done", Duration::from_secs(180), || {
        let v = call(api, "GET", &format!("/api/v1/jobs/{job}"), &buyer, b"").json();
        (v["state"] == "done").then_some(())
    });

    // Its emissions, measured, before any certificate.
    let e = call(
        api,
        "GET",
        &format!("/api/v1/jobs/{job}/emissions"),
        &buyer,
        b"",
    )
    .json();
    assert_eq!(e["device"], rig_id.to_string(), "{e}");
    let measured = e["coverage"]["measured_mg"].as_u64().unwrap();
    eprintln!("job done in {:?}: {e}", started.elapsed());
    assert!(measured > 0, "the job ran on the grid: {e}");
    let line = e["coverage"]["hours"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|h| h["measured_mg"].as_u64())
        .unwrap()
        .clone();
    let hour = line["hour"].as_u64().unwrap();
    let in_hour = line["measured_mg"].as_u64().unwrap();
    assert_eq!(e["coverage"]["granular_mg"], 0);

    // The operator imports the buyer's certificates: this hour's, the next hour's and a
    // Tanzanian one. An id imported twice is refused, and so is a malformed one.
    let me = call(api, "GET", "/api/v1/account", &buyer, b"").json();
    let account = me["id"].as_u64().unwrap();
    let certs = serde_json::json!({
        "account": account,
        "certificates": [
            certificate("GC-KE-1", hour, "KE"),
            certificate("GC-KE-2", hour, "KE"),
            certificate("GC-KE-LATER", hour + 1, "KE"),
            certificate("GC-TZ-1", hour, "TZ"),
        ],
    });
    let r = call(
        api,
        "POST",
        "/api/v1/certificates",
        &operator,
        certs.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["imported"], 4);
    let again = serde_json::json!({"account": account, "certificates": [certificate("GC-KE-1", hour, "KE")]});
    let r = call(
        api,
        "POST",
        "/api/v1/certificates",
        &operator,
        again.to_string().as_bytes(),
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (409, "certificate_exists".into())
    );
    let mut bad = certificate("GC-KE-BAD", hour, "KE");
    bad["end"] = serde_json::json!((hour + 2) * 3_600_000);
    let bad = serde_json::json!({"account": account, "certificates": [bad]});
    let r = call(
        api,
        "POST",
        "/api/v1/certificates",
        &operator,
        bad.to_string().as_bytes(),
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (422, "bad_certificate".into())
    );
    // A buyer cannot import its own.
    let r = call(
        api,
        "POST",
        "/api/v1/certificates",
        &buyer,
        certs.to_string().as_bytes(),
    );
    assert_eq!(r.status, 403);

    let retire = |cert: &str, hour: u64| {
        let body = serde_json::json!({"certificate": cert, "hour": hour}).to_string();
        call(
            api,
            "POST",
            &format!("/api/v1/jobs/{job}/retirements"),
            &buyer,
            body.as_bytes(),
        )
    };
    let r = retire("GC-KE-1", hour);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let covered = r.json()["covered_mg"].as_u64().unwrap();
    // 1 Wh at Kenya's intensity is more than a small job's share of the hour: it covers
    // all of the hour and no more.
    assert_eq!(covered, in_hour);
    for (cert, hour, status, reason) in [
        ("GC-KE-1", hour, 409, "already_retired"),
        ("GC-KE-LATER", hour, 422, "wrong_hour"),
        ("GC-TZ-1", hour, 422, "wrong_region"),
        ("GC-KE-2", hour, 422, "covered_already"),
        ("GC-NONE", hour, 404, "unknown_certificate"),
    ] {
        let r = retire(cert, hour);
        let v = r.json();
        assert_eq!(
            (r.status, v["reason"].as_str().unwrap()),
            (status, reason),
            "{cert}: {v}"
        );
    }
    let held = call(api, "GET", "/api/v1/certificates", &buyer, b"").json();
    let retired: Vec<&str> = held["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["retired"].is_null())
        .map(|c| c["certificate"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(retired, ["GC-KE-1"]);

    // Measured and covered, apart.
    let e = call(
        api,
        "GET",
        &format!("/api/v1/jobs/{job}/emissions"),
        &buyer,
        b"",
    )
    .json();
    assert_eq!(e["coverage"]["measured_mg"].as_u64(), Some(measured));
    assert_eq!(e["coverage"]["granular_mg"].as_u64(), Some(covered));
    assert_eq!(e["retirements"].as_array().unwrap().len(), 1);

    // The job's proof, once the retirement's epoch closed: verified offline, retirement
    // leaf included; SCI is the measured one.
    let path = format!("/api/v1/devices/{rig_id}/jobs/{job}/bundle");
    let bundle = wait_for(
        "the proof with its retirement",
        Duration::from_secs(30),
        || {
            let r = http_with(api, "GET", &path, &[], None);
            let b = attest::bundle::ProofBundle::decode(&r.body).ok()?;
            (b.retirements.len() == 1).then_some(b)
        },
    );
    let report = attest::bundle::verify(
        &bundle,
        &attest::bundle::VerifyOptions::pinned(ckey.public(), attest::TimestampMs(now())),
    )
    .unwrap();
    let c = report.coverage.unwrap();
    assert_eq!(
        (c.measured_mg, c.granular_mg, c.rec_mg),
        (measured, covered, 0)
    );
    let sci = report.statement.sci.unwrap();
    assert_eq!(sci.operational_mg, measured, "never netted");
    // The same with the CLI verifier, which says both.
    let file = tmp.path().join("covered.bundle");
    std::fs::write(&file, bundle.to_json()).unwrap();
    let out = std::process::Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .arg("verify")
        .arg(&file)
        .args(["--controller-key", &ckey.public().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 retired"), "{text}");
}

/// A provider account made by the operator: its agents' token (scope `read`) and its number.
fn provider_account(api: u16, operator: &str, name: &str) -> (String, u64) {
    let body = serde_json::json!({"kind": "provider", "name": name}).to_string();
    let r = call(api, "POST", "/api/v1/accounts", operator, body.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["token"]["secret"].as_str().unwrap().to_string(),
        v["id"].as_u64().unwrap(),
    )
}

/// Provider `account` stakes `amount` micro-credits the operator issues it (staking takes a
/// token with `submit`, asked for: the agents' token reads only).
fn stake(api: u16, operator: &str, account: u64, amount: u64) {
    credit(api, operator, account, amount);
    let r = call(
        api,
        "POST",
        &format!("/api/v1/accounts/{account}/tokens"),
        operator,
        br#"{"scopes": ["read", "submit"], "label": "owner"}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let owner = r.json()["token"]["secret"].as_str().unwrap().to_string();
    let body = serde_json::json!({ "amount": amount }).to_string();
    let r = call(
        api,
        "POST",
        "/api/v1/account/stake",
        &owner,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// The device id of the rig in `dir`, once its agent made its key.
fn rig_key(dir: &std::path::Path) -> attest::DeviceId {
    let data = dir.join("data");
    wait_for("the rig's key", Duration::from_secs(20), || {
        data.join("device.key")
            .exists()
            .then(|| hil_tests::agent_key(&data).device_id())
    })
}

/// The operator says which provider runs `device`.
fn assign(api: u16, operator: &str, device: attest::DeviceId, provider: &str) {
    let body = serde_json::json!({ "provider": provider }).to_string();
    let r = call(
        api,
        "POST",
        &format!("/api/v1/devices/{device}/provider"),
        operator,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// A job with redundancy 2 runs on a lying rig (a test fault corrupts its output) and an
/// honest one, of different providers: their receipts' output hashes differ, a tie, so it
/// waits for a third provider's rig; once one joins, the two honest runs are the majority.
/// The liar is marked wrong with every run as evidence and its stake slashed; both honest
/// providers are paid, each its run, out of the one escrow; the ledger sums to zero.
#[test]
fn a_lying_rig_is_outvoted_by_redundant_runs_and_slashed_and_the_honest_runs_are_paid() {
    let tmp = TempDir::new("market-redundancy");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, _, _controller, operator) = market_ops(tmp.path(), broker.port, |_| {});
    let (liar_p, liar_account) = provider_account(api, &operator, "liar-rigs");
    let (first_p, _) = provider_account(api, &operator, "first-rigs");
    let (second_p, _) = provider_account(api, &operator, "second-rigs");
    stake(api, &operator, liar_account, 1_000_000);
    let (noon_lon, _) = noon_and_midnight();
    let start = |name: &str, token: &str, seed: u64, env: &[(&str, &str)]| {
        let dir = tmp.path().join(name);
        let rig = rig_env(
            &dir,
            noon_lon,
            350,
            broker.port,
            api,
            &ckey,
            token,
            seed,
            0.9,
            env,
            |_| {},
        );
        let device = rig_key(&dir);
        assign(api, &operator, device, name);
        (rig, device)
    };
    let (_liar, liar) = start(
        "liar-rigs",
        &liar_p,
        1,
        &[("HELIOSTAT_WORKER_FAULT", "corrupt")],
    );
    let (_first, first) = start("first-rigs", &first_p, 2, &[]);
    let store = SqliteStore::open(&tmp.path().join("controller/data/controller.db")).unwrap();
    wait_for("both rigs' records", Duration::from_secs(30), || {
        [liar, first]
            .iter()
            .all(|d| store.count_items(*d).unwrap_or(0) >= 3)
            .then_some(())
    });
    // A batch of 64 hashes, asked to run twice.
    let input: Vec<u8> = (0..64 * 64).map(|i| (i * 13 % 251) as u8).collect();
    let hash = Hash32::digest(&input);
    let r = call(
        api,
        "PUT",
        &format!("/api/v1/blobs/{}", hash.to_hex()),
        &buyer,
        &input,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let order = serde_json::json!({
        "workload": heliostat_agent_workload(64),
        "inputs": [hash],
        "deadline_ms": now() + 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
        "redundancy": 2,
    });
    let r = call(
        api,
        "POST",
        "/api/v1/jobs",
        &buyer,
        order.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["id"].as_str().unwrap().to_string();
    let id = fleet_controller::jobs::parse_job_id(&job).unwrap();
    let get = || call(api, "GET", &format!("/api/v1/jobs/{job}"), &buyer, b"").json();
    use fleet_controller::store::runs::RunStore;
    // Both rigs ran it and disagree: a tie, and no third provider yet.
    let tie = wait_for("the tie", Duration::from_secs(90), || {
        let v = get();
        let said = v["history"].as_array()?.iter().any(|h| {
            h["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no output has a majority"))
        });
        said.then_some(v)
    });
    let runs = store.job_runs(id).unwrap();
    assert_eq!(runs.len(), 2, "{tie}");
    assert_ne!(runs[0].output_hash, runs[1].output_hash);
    let mut ran: Vec<_> = runs.iter().map(|r| r.device).collect();
    ran.sort();
    let mut both = vec![liar, first];
    both.sort();
    assert_eq!(ran, both);
    assert_ne!(tie["state"], "done", "{tie}");

    let (_second, second) = start("second-rigs", &second_p, 3, &[]);
    let done = wait_for("the job done", Duration::from_secs(120), || {
        let v = get();
        assert!(
            !["failed", "expired", "cancelled"].contains(&v["state"].as_str().unwrap()),
            "{v}"
        );
        (v["state"] == "done").then_some(v)
    });
    assert_eq!(done["device"], second.to_string(), "{done}");
    let runs = store.job_runs(id).unwrap();
    assert_eq!(runs.len(), 3);
    // The liar: marked wrong with the evidence, slashed; the honest providers: each paid.
    use fleet_controller::store::marks::MarkStore;
    let marks = store.device_marks(liar, 0).unwrap();
    let wrong = marks
        .iter()
        .find(|m| m.kind == fleet_controller::reputation::MarkKind::Wrong)
        .expect("a wrong mark");
    for r in &runs {
        assert!(
            wrong.detail.contains(&r.output_hash.to_hex()),
            "{}",
            wrong.detail
        );
    }
    let balance = |token: &str| call(api, "GET", "/api/v1/account/balance", token, b"").json();
    assert_eq!(balance(&liar_p)["available"], 0);
    assert!(balance(&liar_p)["staked"].as_i64().unwrap() < 1_000_000);
    assert!(balance(&first_p)["available"].as_i64().unwrap() > 0);
    assert!(balance(&second_p)["available"].as_i64().unwrap() > 0);
    use fleet_controller::store::ledger::LedgerStore;
    let kinds: Vec<&str> = store
        .job_transactions(id)
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .collect();
    assert!(
        kinds.contains(&"slash") && kinds.contains(&"payout"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "payout").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(store.ledger_sum().unwrap(), 0);
}

/// One trace spans a job's life across two processes, exported over OTLP/HTTP to a receiver
/// that decodes the official protobuf: the controller's submit, schedule, dispatch, receipt,
/// validation and settlement, and the agent's run, all under the trace whose id is the job's
/// id and the root span derived from it.
#[test]
fn one_trace_spans_a_jobs_life_across_the_controller_and_its_agent_over_otlp() {
    let otlp = hil_tests::otlp::OtlpReceiver::start();
    let endpoint = otlp.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ];
    let tmp = TempDir::new("otlp-e2e");
    let broker = Mosquitto::start();
    let (api, ckey, buyer, provider, _controller) =
        market_env(tmp.path(), broker.port, &env, |_| {});
    let (noon_lon, _) = noon_and_midnight();
    let _rig = rig_env(
        &tmp.path().join("rig"),
        noon_lon,
        350,
        broker.port,
        api,
        &ckey,
        &provider,
        1,
        0.5,
        &env,
        |_| {},
    );
    let job = submit(api, &buyer, 500, false, 1);
    wait_for("the job done", Duration::from_secs(90), || {
        let v = call(api, "GET", &format!("/api/v1/jobs/{job}"), &buyer, b"").json();
        (v["state"] == "done").then_some(())
    });
    let trace: Vec<u8> = attest::hex::decode(&job).unwrap();
    let want = [
        ("heliostat-controller", "job.submit"),
        ("heliostat-controller", "job.schedule"),
        ("heliostat-controller", "job.dispatch"),
        ("heliostat-controller", "job.event"),
        ("heliostat-controller", "job.receipt"),
        ("heliostat-controller", "job.validate"),
        ("heliostat-controller", "job.settle"),
        ("heliostat-agent", "job.run"),
        ("heliostat-agent", "job.receipt"),
    ];
    let spans = wait_for(
        "the job's spans from both processes",
        Duration::from_secs(30),
        || {
            let spans: Vec<_> = otlp
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect();
            want.iter()
                .all(|(svc, name)| spans.iter().any(|s| s.service == *svc && s.name == *name))
                .then_some(spans)
        },
    );
    // Every span of the trace hangs from the job's root or from another span of the trace.
    let mut id = [0u8; 16];
    id.copy_from_slice(&trace);
    let root = heliostat_telemetry::job_root_span(&id).to_bytes().to_vec();
    for s in &spans {
        assert!(
            s.parent_span_id == root || spans.iter().any(|p| p.span_id == s.parent_span_id),
            "{s:?} hangs from nothing in the trace"
        );
        assert!(
            s.attributes.iter().any(|(k, v)| k == "job" && *v == job),
            "{s:?} does not name the job"
        );
    }
    // The agent's receipt is a child of its run.
    let run = spans
        .iter()
        .find(|s| s.service == "heliostat-agent" && s.name == "job.run")
        .unwrap();
    let receipt = spans
        .iter()
        .find(|s| s.service == "heliostat-agent" && s.name == "job.receipt")
        .unwrap();
    assert_eq!(receipt.parent_span_id, run.span_id);
    assert!(
        run.attributes
            .iter()
            .any(|(k, v)| k == "outcome" && v.contains("Completed")),
        "{run:?}"
    );
    // Metrics the same way: the controller's ingest counter and verify time, the agent's
    // outbox depth and power by source.
    let points = wait_for(
        "metrics from both processes",
        Duration::from_secs(30),
        || {
            let p = otlp.points();
            let has = |svc: &str, name: &str| p.iter().any(|x| x.service == svc && x.name == name);
            (has("heliostat-controller", "heliostat.ingest.stored")
                && has("heliostat-controller", "heliostat.ingest.verify.duration")
                && has("heliostat-agent", "heliostat.agent.outbox.depth")
                && has("heliostat-agent", "heliostat.agent.power"))
            .then_some(p)
        },
    );
    let stored = points
        .iter()
        .filter(|p| p.name == "heliostat.ingest.stored")
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!(stored >= 3.0, "{stored}");
    assert!(
        points.iter().any(|p| p.name == "heliostat.agent.power"
            && p.attributes
                .iter()
                .any(|(k, v)| k == "source" && v == "solar")
            && p.value > 0.0),
        "no solar power point"
    );
    // Ingest and anchoring are traced too (not in the job's trace).
    let all = otlp.spans();
    assert!(
        all.iter()
            .any(|s| s.name == "ingest.batch" && s.service == "heliostat-controller")
    );
    assert!(all.iter().any(|s| s.name == "anchor.epoch"));
}

/// Alerts through the real parts: a rig whose battery sits below the rule's level fires
/// `battery low` after the rule's delay; the webhook is down at first, so the firing waits
/// and is delivered once the receiver is back; a silence keeps the rig's `device offline`
/// (it is killed) from being sent, though it is recorded.
#[test]
fn a_low_battery_alert_reaches_the_webhook_once_it_is_back_and_a_silenced_one_never_does() {
    use fleet_controller::config::alerts::{AlertKind, AlertRule};
    let sink = hil_tests::sink::HttpSink::start();
    sink.answer("503 Service Unavailable");
    let tmp = TempDir::new("alerts-e2e");
    let broker = Mosquitto::start();
    let webhook = sink.url("/hook");
    let (api, ckey, _buyer, provider, _controller, operator) =
        market_ops(tmp.path(), broker.port, |c| {
            c.alerts.every_ms = 200;
            c.alerts.webhook_url = Some(webhook.clone());
            c.alerts.rules = vec![
                AlertRule {
                    name: "battery low".into(),
                    kind: AlertKind::LowBattery,
                    threshold: 0.4,
                    clear: Some(0.5),
                    for_s: 1,
                },
                AlertRule {
                    name: "device offline".into(),
                    kind: AlertKind::Offline,
                    threshold: 3.0,
                    clear: Some(1.0),
                    for_s: 0,
                },
            ];
        });
    let (_, night_lon) = noon_and_midnight();
    let mut rig = rig(
        &tmp.path().join("rig"),
        night_lon,
        0,
        broker.port,
        api,
        &ckey,
        &provider,
        4,
        0.3,
    );
    let device = rig_key(&tmp.path().join("rig"));
    let alerts = || call(api, "GET", "/api/v1/alerts", &operator, b"").json();
    // Fired (after its second of delay), tried, not taken.
    let fired = wait_for(
        "the battery alert tried at the webhook",
        Duration::from_secs(60),
        || {
            let v = alerts();
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    e["rule"] == "battery low"
                        && e["status"] == "firing"
                        && e["attempts"].as_u64() >= Some(1)
                })
                .cloned()
        },
    );
    assert_eq!(fired["subject"], format!("device:{device}"));
    assert!(fired["delivered_ms"].is_null(), "{fired}");
    assert!(fired["value"].as_f64().unwrap() <= 0.4, "{fired}");
    assert!(sink.received().is_empty());
    assert!(
        alerts()["states"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["rule"] == "battery low" && s["state"] == "firing")
    );
    // The receiver is back: delivered once, with its id.
    sink.answer("200 OK");
    let got = wait_for("the webhook's delivery", Duration::from_secs(30), || {
        let r = sink.received();
        (!r.is_empty()).then_some(r)
    });
    let body: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(got[0].0, "/hook");
    assert_eq!(
        (
            body["status"].as_str(),
            body["rule"].as_str(),
            body["kind"].as_str()
        ),
        (Some("firing"), Some("battery low"), Some("low_battery"))
    );
    assert_eq!(body["id"], fired["id"]);
    // Silence the rig's offline alert, then kill it: recorded as silenced, never sent.
    let silence = serde_json::json!({"rule": "device offline", "subject": format!("device:{device}"), "hours": 1, "reason": "moving the rig"});
    let r = call(
        api,
        "POST",
        "/api/v1/alerts/silences",
        &operator,
        silence.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    rig.kill9();
    wait_for(
        "the silenced offline alert",
        Duration::from_secs(30),
        || {
            alerts()["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["rule"] == "device offline"
                        && e["status"] == "firing"
                        && e["silenced"] == true
                })
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(800));
    let sent: Vec<serde_json::Value> = sink
        .received()
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    assert!(
        sent.iter().all(|e| e["rule"] != "device offline"),
        "{sent:?}"
    );
    // A buyer's token cannot read alerts.
    assert_eq!(call(api, "GET", "/api/v1/alerts", &_buyer, b"").status, 403);
}
