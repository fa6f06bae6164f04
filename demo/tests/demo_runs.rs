//! The main job runs as documented: the demo binary with its embedded broker, controller and
//! simulated agents stores signed records from every agent and anchors epochs, and a bundle
//! exported afterwards verifies with the attest tool.

use std::process::Command;

use hil_tests::{TempDir, workspace_binary};

const DEMO: &str = env!("CARGO_BIN_EXE_heliostat-demo");

#[test]
fn the_demo_stores_every_agents_records_against_the_embedded_broker_and_its_bundles_verify() {
    let tmp = TempDir::new("demo");
    let out = Command::new(DEMO)
        .args([
            "--data-dir",
            tmp.path().to_str().unwrap(),
            "--port",
            "0",
            "--api-port",
            "0",
        ])
        .args([
            "--agents",
            "3",
            "--record-ms",
            "300",
            "--epoch-ms",
            "1000",
            "--run-for-s",
            "12",
            "--jobs-every-s",
            "2",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("embedded MQTT broker"), "{stdout}");
    // A buyer and an operator, their tokens printed once at start.
    for (line, scopes) in [
        ("operator token", "demo-operator: read,submit,operate"),
        ("buyer token", "demo-buyer: read,submit"),
    ] {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("no {line} line:\n{stdout}"));
        let token = row.split_whitespace().nth(2).unwrap();
        assert!(token.starts_with("hst_") && token.len() == 68, "{row}");
        assert!(row.contains(scopes), "{row}");
    }
    // A normal start logs no error, and no colour codes into a file.
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");

    let controller = workspace_binary(DEMO, "fleet-controller", "fleet-controller");
    let config = tmp.path().join("controller.toml");
    let devices = Command::new(&controller)
        .args(["--config", config.to_str().unwrap(), "devices"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&devices.stdout).to_string();
    let rows: Vec<&str> = listing.lines().collect();
    assert_eq!(rows.len(), 3, "{listing}");
    for row in &rows {
        assert!(row.contains("approved"), "{row}");
        let n: u64 = row
            .split('\t')
            .nth(2)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(n >= 10, "too few records stored: {row}");
    }
    let id = rows[0].split('\t').next().unwrap();
    let bundle = tmp.path().join("b.json");
    let b = Command::new(&controller)
        .args([
            "--config",
            config.to_str().unwrap(),
            "bundle",
            "--device",
            id,
            "--json",
            "--out",
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    // The controller key, pinned by the verifier (as a buyer would, from the operator).
    let key = Command::new(&controller)
        .args(["--config", config.to_str().unwrap(), "key"])
        .output()
        .unwrap();
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let attest = workspace_binary(DEMO, "attest", "attest");
    let v = Command::new(attest)
        .args(["verify", "--controller-key", &key])
        .arg(&bundle)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}");
    assert!(text.contains("bundled grid-intensity table"), "{text}");
    // The accounts whose tokens it printed are in the controller's database.
    let list = Command::new(&controller)
        .args(["--config", config.to_str().unwrap(), "account", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("\toperator\tdemo-operator\t"), "{list}");
    assert!(list.contains("\tbuyer\tdemo-buyer\t"), "{list}");
    // The demo buyer's jobs went through the market: placed by the scheduler, run by an
    // agent in its worker, done once its uploaded result was checked.
    use fleet_controller::store::accounts::AccountStore;
    use fleet_controller::store::jobs::JobStore;
    let store = fleet_controller::store::sqlite::SqliteStore::open(
        &tmp.path().join("controller/controller.db"),
    )
    .unwrap();
    let buyer = store.account_by_name("demo-buyer").unwrap().unwrap();
    let jobs = store.jobs_of(buyer.id, 100).unwrap();
    assert!(jobs.len() >= 3, "{} jobs submitted", jobs.len());
    let done: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == fleet_controller::jobs::JobState::Done)
        .collect();
    assert!(!done.is_empty(), "no job done: {stdout}");
    let states: Vec<String> = store
        .job_history(done[0].id)
        .unwrap()
        .iter()
        .map(|e| e.state.as_str().to_string())
        .collect();
    // The demo's built-in jobs are checked (sampled or Freivalds) before they are done.
    assert_eq!(
        states,
        ["queued", "scheduled", "running", "validating", "done"]
    );
}

#[test]
fn a_taken_api_port_stops_the_demo_naming_the_address_before_it_claims_to_run() {
    let tmp = TempDir::new("demo-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(DEMO)
        .args(["--data-dir", tmp.path().to_str().unwrap(), "--port", "0"])
        .args(["--api-port", &port.to_string(), "--agents", "1"])
        .args(["--run-for-s", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("running"), "{stdout}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );
}
