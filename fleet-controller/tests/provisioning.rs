//! First-boot provisioning through the real parts: an operator makes an enrollment token
//! over the API of a real controller process (no auto-approval); `heliostat-agent
//! provision` turns a provisioning file into the agent's configuration and key and redeems
//! the token; the agent then runs over a real Mosquitto and its records are stored,
//! approved, without an operator's click. A used-up token, a file with a missing key or a
//! bad controller key, and an unreachable controller each stop provisioning with their
//! reason and exit code, and write no configuration (or keep the token for a retry).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::{Mosquitto, Proc, TempDir, free_port, http_with, spawn_agent, workspace_binary};
use serde_json::Value;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

fn call(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = http_with(port, method, path, &[("Authorization", &auth)], Some(body));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A controller without auto-approval: its API port, its key (hex), its database, the
/// operator's token.
fn controller(dir: &Path, broker: u16) -> (u16, String, PathBuf, String, Proc) {
    let api = free_port();
    let cdir = dir.join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut cfg = ControllerConfig::new(
        cdir.join("data"),
        BrokerConfig {
            port: broker,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = false;
    cfg.api.listen = format!("127.0.0.1:{api}");
    let ccfg = cdir.join("controller.toml");
    cfg.write_toml(&ccfg).unwrap();
    let log = std::fs::File::create(cdir.join("controller.log")).unwrap();
    let proc = Proc(
        Command::new(CONTROLLER)
            .args(["--config", ccfg.to_str().unwrap(), "run"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let out = Command::new(CONTROLLER)
        .args(["--config", ccfg.to_str().unwrap()])
        .args(["account", "create", "--kind", "operator", "--name", "ops"])
        .output()
        .unwrap();
    let operator = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (key, _) = attest::keyfile::load_or_create(&cdir.join("data/controller.key")).unwrap();
    (
        api,
        key.public().to_string(),
        cdir.join("data/controller.db"),
        operator,
        proc,
    )
}

/// A provisioning file as an installer writes it.
fn provisioning(dir: &Path, broker: u16, controller_key: &str, provision: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "data_dir = \"{data}\"\n\
         [provision]\n{provision}\n\
         [site]\nlat = -1.29\nlon = 36.82\ngrid_region = \"KE\"\n\
         [meter]\nsample_interval_ms = 50\nrecord_interval_ms = 200\n\
         [link]\nhost = \"127.0.0.1\"\nport = {broker}\ncontroller_key = \"{controller_key}\"\n\
         username = \"rig\"\npassword = \"s3cret-mqtt\"\n\
         [[source]]\ntype = \"simulator\"\n",
        data = dir.join("data").display(),
    );
    let file = dir.join("heliostat-provision.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// `heliostat-agent --config CONFIG provision FILE`: exit code, stdout, stderr.
fn provision(agent: &Path, config: &Path, file: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(agent)
        .arg("--config")
        .arg(config)
        .arg("provision")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_provisioned_device_enrols_with_its_token_and_its_records_count_without_a_click() {
    let tmp = TempDir::new("provisioning");
    let broker = Mosquitto::start();
    let (api, ckey, db, operator, _controller) = controller(tmp.path(), broker.port);
    let agent = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    let (st, made) = call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        &operator,
        br#"{"label": "Nairobi rooftop, batch 1", "uses": 1}"#,
    );
    assert_eq!(st, 201, "{made}");
    let token = made["secret"].as_str().unwrap().to_string();
    let api_url = format!("http://127.0.0.1:{api}");
    let section = format!("api_url = \"{api_url}\"\nenrollment_token = \"{token}\"");

    // The device: configuration, key and enrollment from its provisioning file.
    let dev = tmp.path().join("rig");
    let file = provisioning(&dev, broker.port, &ckey, &section);
    let config = dev.join("etc/agent.toml");
    let (code, stdout, stderr) = provision(&agent, &config, &file);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("preapproved"), "{stdout}");
    let id = hil_tests::agent_key(&dev.join("data")).device_id();
    assert!(stdout.contains(&id.to_string()), "{stdout}");
    // The secrets left the provisioning file, which names the device; the configuration
    // holds the MQTT credentials and is not world-readable.
    let left = std::fs::read_to_string(&file).unwrap();
    assert!(
        !left.contains(&token) && !left.contains("s3cret-mqtt"),
        "{left}"
    );
    assert!(left.contains(&id.to_string()), "{left}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("s3cret-mqtt") && !written.contains("enrollment_token"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let (st, listed) = call(api, "GET", "/api/v1/enrollment-tokens", &operator, b"");
    assert_eq!(st, 200);
    assert_eq!(listed["tokens"][0]["uses_left"], 0, "{listed}");
    assert_eq!(listed["tokens"][0]["enrolled"], 1, "{listed}");

    // The agent runs: approved on its first hello, its records stored and counted.
    let _rig = spawn_agent(agent.to_str().unwrap(), &config, &dev.join("agent.log"));
    let store = SqliteStore::open(&db).unwrap();
    wait_for(
        "the device approved with records",
        Duration::from_secs(30),
        || {
            let d = store.device(id).ok()??;
            (d.state == fleet_controller::store::DeviceState::Approved
                && store.count_items(id).unwrap_or(0) >= 3)
                .then_some(())
        },
    );

    // A second device with the used-up token: refused, its token kept for a retry (the
    // configuration it wrote is whole: it would run as a pending device).
    let other = tmp.path().join("other");
    let file2 = provisioning(&other, broker.port, &ckey, &section);
    let (code, _, stderr) = provision(&agent, &other.join("etc/agent.toml"), &file2);
    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("bad_enrollment_token"), "{stderr}");
    assert!(std::fs::read_to_string(&file2).unwrap().contains(&token));
}

#[test]
fn a_bad_provisioning_file_or_an_unreachable_controller_stops_with_its_reason() {
    let tmp = TempDir::new("provisioning-bad");
    let agent = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    let key = attest::KeyPair::from_seed(&[0xc0; 32]).public().to_string();
    let token = "hst_".to_string() + &"ab".repeat(32);
    let dead = free_port();
    let section = format!("api_url = \"http://127.0.0.1:{dead}\"\nenrollment_token = \"{token}\"");

    // A missing [link]: nothing written.
    let dir = tmp.path().join("no-link");
    let file = provisioning(&dir, 1883, &key, &section);
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = text.replace("[link]", "[unused]");
    std::fs::write(&file, cut).unwrap();
    let config = dir.join("etc/agent.toml");
    let (code, _, stderr) = provision(&agent, &config, &file);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("link") || stderr.contains("unused"),
        "{stderr}"
    );
    assert!(
        !config.exists(),
        "a configuration was written from a bad file"
    );
    assert!(!dir.join("data/device.key").exists());

    // A controller key that is not one: named, nothing written.
    let dir = tmp.path().join("bad-key");
    let file = provisioning(&dir, 1883, "not-a-key", &section);
    let config = dir.join("etc/agent.toml");
    let (code, _, stderr) = provision(&agent, &config, &file);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("controller_key"), "{stderr}");
    assert!(!config.exists());

    // A token without the API to redeem it at.
    let dir = tmp.path().join("no-api");
    let file = provisioning(&dir, 1883, &key, &format!("enrollment_token = \"{token}\""));
    let (code, _, stderr) = provision(&agent, &dir.join("etc/agent.toml"), &file);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("api_url"), "{stderr}");

    // The controller cannot be reached: try again later (75), the token kept; the
    // configuration and key are whole, and a retry keeps the same key.
    let dir = tmp.path().join("unreachable");
    let file = provisioning(&dir, 1883, &key, &section);
    let config = dir.join("etc/agent.toml");
    let (code, _, stderr) = provision(&agent, &config, &file);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("could not be reached"), "{stderr}");
    assert!(std::fs::read_to_string(&file).unwrap().contains(&token));
    let first = hil_tests::agent_key(&dir.join("data")).device_id();
    heliostat_agent::config::AgentConfig::load(&config).expect("a whole configuration");
    let (code, _, _) = provision(&agent, &config, &file);
    assert_eq!(code, Some(75));
    assert_eq!(hil_tests::agent_key(&dir.join("data")).device_id(), first);
}
