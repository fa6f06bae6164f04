//! The controller's key in a PKCS#11 token (SoftHSM2, a real PKCS#11 module; the key pair
//! made in it by OpenSC's pkcs11-tool, so the secret never exists outside the token): the
//! controller signs with it, an agent pinned to its public key has its records acked, a
//! bundle verifies under it, no key file is written, and a wrong PIN stops the controller
//! with its reason.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleet_controller::config::{BrokerConfig, ControllerConfig, Pkcs11Config};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::{
    Mosquitto, TempDir, free_port, require, spawn_controller, wait_for, workspace_binary,
};

mod support;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token labelled `heliostat` in `dir` with an Ed25519 pair labelled
/// `controller`: the SOFTHSM2_CONF to run with, and the public key (hex).
fn token(dir: &Path) -> (String, String) {
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\n", dir.join("tokens").display()),
    )
    .unwrap();
    let run = |tool: &str, package: &str, args: &[&str]| {
        let out = Command::new(require(tool, package))
            .env("SOFTHSM2_CONF", &conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(
        "softhsm2-util",
        "softhsm2",
        &[
            "--init-token",
            "--free",
            "--label",
            "heliostat",
            "--so-pin",
            "1234",
            "--pin",
            "5678",
        ],
    );
    let made = run(
        "pkcs11-tool",
        "opensc",
        &[
            "--module",
            MODULE,
            "--token-label",
            "heliostat",
            "--login",
            "--pin",
            "5678",
            "--keypairgen",
            "--key-type",
            "EC:edwards25519",
            "--label",
            "controller",
        ],
    );
    let point = made
        .lines()
        .find_map(|l| l.trim().strip_prefix("EC_POINT:"))
        .unwrap_or_else(|| panic!("no EC_POINT in {made}"))
        .trim()
        .to_string();
    let public = point.strip_prefix("0420").unwrap_or(&point).to_string();
    assert_eq!(public.len(), 64, "{point}");
    (conf.display().to_string(), public)
}

#[test]
fn the_controller_signs_with_a_key_that_never_leaves_its_pkcs11_token() {
    let tmp = TempDir::new("pkcs11");
    let (conf, public) = token(&tmp.path().join("hsm"));
    let broker = Mosquitto::start();
    let cdir = tmp.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let pin = cdir.join("pin");
    std::fs::write(&pin, "5678\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = ControllerConfig::new(
        cdir.join("data"),
        BrokerConfig {
            port: broker.port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = true;
    cfg.epochs.interval_ms = 500;
    cfg.api.listen = format!("127.0.0.1:{}", free_port());
    cfg.pkcs11 = Some(Pkcs11Config {
        module: MODULE.into(),
        token: "heliostat".into(),
        label: "controller".into(),
        pin_file: pin.clone(),
    });
    let ccfg = cdir.join("controller.toml");
    cfg.write_toml(&ccfg).unwrap();
    let cli = |args: &[&str]| {
        Command::new(CONTROLLER)
            .env("SOFTHSM2_CONF", &conf)
            .arg("--config")
            .arg(&ccfg)
            .args(args)
            .output()
            .unwrap()
    };
    let key = cli(&["key"]);
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&key.stdout).trim(),
        public,
        "the token's key"
    );

    // SOFTHSM2_CONF reaches the controller through the environment the test runs in.
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let _controller = spawn_controller(CONTROLLER, &ccfg, &cdir.join("controller.log"));
    let agent = support::simulated_agent(CONTROLLER, &tmp.path().join("rig"), broker.port, &public);
    let (id, data) = (agent.id, agent.data.clone());
    let db = cdir.join("data/controller.db");
    wait_for(
        "records stored and acknowledged under the token's key",
        Duration::from_secs(30),
        || {
            let stored = SqliteStore::open(&db).ok()?.count_items(id).ok()?;
            let status: serde_json::Value =
                serde_json::from_slice(&std::fs::read(data.join("status.json")).ok()?).ok()?;
            (stored >= 10
                && status["outbox"]["depth"].as_u64()? < 5
                && status["link"]["acks_rejected"] == 0)
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(1_200));
    let bundle = tmp.path().join("bundle.json");
    let made = cli(&[
        "bundle",
        "--device",
        &id.to_string(),
        "--json",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let verified = Command::new(workspace_binary(CONTROLLER, "attest", "attest"))
        .args(["verify", "--controller-key", &public])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    assert!(
        !cdir.join("data/controller.key").exists(),
        "no key file beside the token"
    );

    // A wrong PIN: refused, named.
    std::fs::write(&pin, "0000\n").unwrap();
    let refused = cli(&["key"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("logging in to the PKCS#11 token") && !said.contains("0000"),
        "{said}"
    );
    // A PIN file others may read: refused before it is read.
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = String::from_utf8_lossy(&cli(&["key"]).stderr).into_owned();
    assert!(said.contains("chmod 600"), "{said}");
}
