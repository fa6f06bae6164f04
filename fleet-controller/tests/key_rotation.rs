//! Rotating the controller's key with real processes (docs/security.md, "Keys"): a
//! controller and an agent over a real Mosquitto; the controller stopped,
//! `fleet-controller rotate-key`, started again. The agent follows the rotation it reads
//! from the broker (signed by the old key and the new), its acks keep being accepted, a
//! command signed by the old key is refused from then on while one signed by the new key
//! is obeyed, and bundles made before and after the rotation both verify (the later one
//! whichever of the two keys the verifier pins, and under no other).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use attest::msg::{Command as Order, CommandBody};
use attest::units::{SeqNo, TimestampMs};
use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::{Mosquitto, TempDir, free_port, spawn_controller, wait_for, workspace_binary};

mod support;
use support::agent_status;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

fn controller_cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(CONTROLLER)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fleet-controller {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `attest verify` pinned at `key`: whether it passed, and what it said.
fn verify(bundle: &Path, key: &str) -> (bool, String) {
    let attest = workspace_binary(CONTROLLER, "attest", "attest");
    let out = Command::new(attest)
        .args(["verify", "--controller-key", key])
        .arg(bundle)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn after_a_rotation_devices_believe_only_the_new_key_and_bundles_on_both_sides_verify() {
    let tmp = TempDir::new("key-rotation");
    let broker = Mosquitto::start();
    let cdir = tmp.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
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
    let ccfg = cdir.join("controller.toml");
    cfg.write_toml(&ccfg).unwrap();
    let old_key = controller_cli(&ccfg, &["key"]).trim().to_string();
    let clog = cdir.join("controller.log");
    let mut controller = spawn_controller(CONTROLLER, &ccfg, &clog);

    // One agent, provisioned with the old key.
    let agent =
        support::simulated_agent(CONTROLLER, &tmp.path().join("rig"), broker.port, &old_key);
    let (id, data, alog) = (agent.id, agent.data.clone(), agent.log.clone());
    let db = cdir.join("data/controller.db");
    let stored = || {
        SqliteStore::open(&db)
            .ok()
            .and_then(|s| s.count_items(id).ok())
            .unwrap_or(0)
    };
    wait_for("records stored", Duration::from_secs(20), || {
        (stored() >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1_200));
    let before = tmp.path().join("before.json");
    let id_text = id.to_string();
    controller_cli(
        &ccfg,
        &[
            "bundle",
            "--device",
            &id_text,
            "--json",
            "--out",
            before.to_str().unwrap(),
        ],
    );

    // The rotation, with the controller stopped.
    controller.terminate(Duration::from_secs(10));
    let new_key = controller_cli(&ccfg, &["rotate-key"]).trim().to_string();
    assert_ne!(new_key, old_key);
    assert_eq!(controller_cli(&ccfg, &["key"]).trim(), new_key);
    let retired = cdir.join(format!("data/controller.key.retired-{old_key}"));
    assert!(retired.exists(), "the old key is kept aside");
    let _controller = spawn_controller(CONTROLLER, &ccfg, &cdir.join("controller-after.log"));

    // The agent follows, and the new key's acks are believed.
    wait_for(
        "the agent follows the rotation",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&alog)
                .unwrap_or_default()
                .contains("controller key rotated")
                .then_some(())
        },
    );
    let after_rotation = stored();
    wait_for(
        "records acknowledged under the new key",
        Duration::from_secs(20),
        || {
            let s = agent_status(&data);
            (stored() > after_rotation + 10
                && s["outbox"]["depth"].as_u64().is_some_and(|d| d < 10))
            .then_some(())
        },
    );
    assert_eq!(
        agent_status(&data)["link"]["acks_rejected"],
        0,
        "{}",
        agent_status(&data)
    );
    assert!(
        data.join("controller-keys.bin").exists(),
        "the rotation is kept for restarts"
    );

    // Commands: the old key's refused, the new key's obeyed.
    let old = attest::KeyPair::from_seed(
        &attest::hex::decode_array(std::fs::read_to_string(&retired).unwrap().trim()).unwrap(),
    );
    let new = attest::KeyPair::from_seed(
        &attest::hex::decode_array(
            std::fs::read_to_string(cdir.join("data/controller.key"))
                .unwrap()
                .trim(),
        )
        .unwrap(),
    );
    let now = fleet_controller::runtime::now_ms();
    let order = |nonce| Order {
        device: id,
        nonce,
        issued: TimestampMs(now),
        expires: TimestampMs(now + 60_000),
        body: CommandBody::Resend {
            from: SeqNo(0),
            to: SeqNo(0),
        },
    };
    let cmd_topic = attest::topics::device(&id, attest::topics::Leaf::Cmd);
    let publish = |bytes: Vec<u8>| {
        let f = tmp.path().join("cmd.bin");
        std::fs::write(&f, bytes).unwrap();
        let ok = Command::new(hil_tests::require("mosquitto_pub", "mosquitto-clients"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-q",
                "1",
                "-t",
                &cmd_topic,
                "-f",
            ])
            .arg(&f)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    publish(attest::Envelope::seal(&order(7_001), &old).into_bytes());
    wait_for(
        "the old key's command refused",
        Duration::from_secs(10),
        || (agent_status(&data)["jobs"]["commands_rejected"]["bad_signature"] == 1).then_some(()),
    );
    publish(attest::Envelope::seal(&order(7_002), &new).into_bytes());
    std::thread::sleep(Duration::from_millis(1_000));
    let s = agent_status(&data);
    assert_eq!(
        s["link"]["commands_rejected"], 1,
        "the new key's command obeyed: {s}"
    );

    // Bundles: the one made before verifies under the old key; the one made after, whose
    // evidence spans the rotation, under either key, and not under a stranger's.
    std::thread::sleep(Duration::from_millis(1_200));
    let after = tmp.path().join("after.json");
    controller_cli(
        &ccfg,
        &[
            "bundle",
            "--device",
            &id_text,
            "--json",
            "--out",
            after.to_str().unwrap(),
        ],
    );
    let (ok, said) = verify(&before, &old_key);
    assert!(ok, "the bundle made before, under the old key: {said}");
    for key in [&old_key, &new_key] {
        let (ok, said) = verify(&after, key);
        assert!(ok, "the bundle made after, pinned {key}: {said}");
    }
    let stranger = attest::KeyPair::from_seed(&[0x5a; 32]).public().to_string();
    let (ok, said) = verify(&after, &stranger);
    assert!(!ok && said.contains("not in the line"), "{said}");
}
