//! The `attest` binary, run as a user would.

use std::path::PathBuf;
use std::process::Command;

use attest::sample::SAMPLE_START;

fn attest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attest"))
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The key of the controller that signed the shipped vectors (seed 0xc0 x 32).
fn controller_key() -> String {
    attest::KeyPair::from_seed(&[0xc0; 32]).public().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("attest-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn verify_accepts_the_shipped_bundles_with_the_pinned_key_and_exits_zero() {
    for file in ["bundle.json", "bundle.postcard"] {
        let out = attest()
            .args(["verify", "--controller-key", &controller_key()])
            .arg(vectors().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("OK:"), "{stdout}");
        assert!(stdout.contains("49 meter records"), "{stdout}");
        assert!(stdout.contains("bundled grid-intensity table"), "{stdout}");
        assert!(stdout.contains("embodied (from the hello)"), "{stdout}");
    }
}

#[test]
fn verify_without_a_pinned_controller_key_says_unpinned_and_exits_non_zero() {
    let out = attest()
        .arg("verify")
        .arg(vectors().join("bundle.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.starts_with("UNPINNED"), "{stdout}");
}

#[test]
fn verify_names_the_failing_check_and_exits_one() {
    let d = tmp("tamper");
    let mut b =
        attest::bundle::ProofBundle::decode(&std::fs::read(vectors().join("bundle.json")).unwrap())
            .unwrap();
    b.evidence[4].proof.path[0].0[3] ^= 1;
    let path = d.join("bad.bundle");
    std::fs::write(&path, b.to_postcard()).unwrap();
    let out = attest()
        .args(["verify", "--controller-key", &controller_key()])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("check `inclusion` failed"), "{stdout}");
    // A pinned controller key that differs fails at the statement's signature.
    let other = attest::KeyPair::from_seed(&[0x11; 32]).public().to_string();
    let out = attest()
        .args(["verify", "--controller-key", &other])
        .arg(vectors().join("bundle.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("check `statement` failed"));
}

#[test]
fn verify_with_an_unreachable_rpc_fails_rather_than_passing() {
    // The shipped bundle is anchored locally, so build one with an EVM anchor reference.
    let d = tmp("rpc");
    let mut b =
        attest::bundle::ProofBundle::decode(&std::fs::read(vectors().join("bundle.json")).unwrap())
            .unwrap();
    b.epochs[0].anchor = attest::bundle::AnchorRef::Evm {
        chain_id: 31337,
        contract: attest::bundle::Address([0x55; 20]),
        tx_hash: attest::Hash32([1; 32]),
        block_number: 7,
    };
    let path = d.join("evm.json");
    std::fs::write(&path, b.to_json()).unwrap();
    let pinned = [
        "verify",
        "--controller-key",
        &controller_key(),
        "--chain-id",
        "31337",
        "--contract",
        &format!("0x{}", "55".repeat(20)),
    ];
    // Without the chain and contract pinned, an EVM anchor proves nothing.
    let out = attest()
        .args(["verify", "--controller-key", &controller_key()])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("UNPINNED"), "{stdout}");
    let out = attest().args(pinned).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("not checked on chain"), "{stdout}");
    // Port 9 on loopback: nothing listens; the check must fail, naming the anchor.
    let out = attest()
        .args(pinned)
        .args(["--rpc", "http://127.0.0.1:9"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("check `anchor` failed"));
}

#[test]
fn keygen_writes_a_private_seed_and_inspect_decodes_what_it_signs() {
    let d = tmp("keygen");
    let key = d.join("device.key");
    let out = attest()
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = info["device_id"].as_str().unwrap();
    assert!(attest::DeviceId::parse(id).is_ok(), "{id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // It refuses to overwrite an existing key.
    assert_eq!(
        attest()
            .arg("keygen")
            .arg("--out")
            .arg(&key)
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );

    let seed =
        attest::hex::decode_array::<32>(std::fs::read_to_string(&key).unwrap().trim()).unwrap();
    let kp = attest::KeyPair::from_seed(&seed);
    assert_eq!(kp.device_id().to_string(), id);
    let mut dev = attest::sample::SampleDevice::new(1);
    dev.key = kp;
    let env = dev.record_at(SAMPLE_START.0);
    let file = d.join("record.hex");
    std::fs::write(&file, attest::hex::encode(env.as_bytes())).unwrap();
    let out = attest().arg("inspect").arg(&file).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "meter_record");
    assert_eq!(v["decoded"]["message"]["link"]["device"], id);
    // Garbage is refused with a reason and exit code 2.
    std::fs::write(&file, b"\x01\x02garbage").unwrap();
    let out = attest().arg("inspect").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an envelope"));
}
