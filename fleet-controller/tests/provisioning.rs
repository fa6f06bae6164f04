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
use hil_tests::api_call as call;
use hil_tests::{
    Mosquitto, Proc, TempDir, create_account, free_port, http_with, spawn_agent, spawn_controller,
    wait_for, workspace_binary,
};
use serde_json::Value;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

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
    let proc = spawn_controller(CONTROLLER, &ccfg, &cdir.join("controller.log"));
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let operator = create_account(CONTROLLER, &ccfg, "operator", "ops");
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
         username = \"rig\"\npassword = \"s3cret-mqtt\"\ninsecure_plaintext_password = true\n\
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
    assert!(!written.contains("enrollment_token"), "{written}");
    // The broker login is the one the controller issued (username = the device id), not the
    // file's; the controller keeps only its hash.
    let link: toml::Table = toml::from_str::<toml::Table>(&written).unwrap()["link"]
        .as_table()
        .unwrap()
        .clone();
    assert_eq!(link["username"].as_str(), Some(id.to_string().as_str()));
    let password = link["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 64, "{password}");
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
    // Approved: its broker login is one the broker's password file will hold.
    {
        use fleet_controller::store::broker::BrokerStore;
        let hashes = store.broker_credentials().unwrap();
        assert_eq!(hashes.len(), 1, "{hashes:?}");
        assert_eq!(hashes[0].0, id);
        assert!(fleet_controller::broker_perimeter::hash_matches(
            &password,
            &hashes[0].1
        ));
        assert!(!hashes[0].1.contains(&password));
    }

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
    let file = provisioning(&dir, dead, &key, &section);
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
    let file = provisioning(&dir, dead, "not-a-key", &section);
    let config = dir.join("etc/agent.toml");
    let (code, _, stderr) = provision(&agent, &config, &file);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("controller_key"), "{stderr}");
    assert!(!config.exists());

    // A token without the API to redeem it at.
    let dir = tmp.path().join("no-api");
    let file = provisioning(&dir, dead, &key, &format!("enrollment_token = \"{token}\""));
    let (code, _, stderr) = provision(&agent, &dir.join("etc/agent.toml"), &file);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("api_url"), "{stderr}");

    // The controller cannot be reached: try again later (75), the token kept; the
    // configuration and key are whole, and a retry keeps the same key.
    let dir = tmp.path().join("unreachable");
    let file = provisioning(&dir, dead, &key, &section);
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

/// The arm64 image (built by `images/arm64/build` if `target/image` has none) booted in
/// QEMU with a provisioning file on its boot partition: its first boot provisions it,
/// the controller on this machine's loopback (reached only through QEMU's forwards: no
/// traffic leaves the machine) approves it by its token and stores its signed records.
/// Then the power is cut mid-stream (QEMU killed) and it boots again: its chain goes on
/// from genesis with nothing lost.
#[test]
fn image_boots_in_qemu_provisions_itself_and_survives_a_power_cut() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let built = repo.join("target/image/heliostat-arm64.img");
    if !built.exists() {
        let st = Command::new(repo.join("images/arm64/build"))
            .args(["--out", repo.join("target/image").to_str().unwrap()])
            .status()
            .expect("running images/arm64/build (as root, with mmdebstrap: scripts/setup)");
        assert!(st.success(), "images/arm64/build failed");
    }
    let tmp = TempDir::new("image-boot");
    let broker = Mosquitto::start();
    let (api, ckey, db, operator, _controller) = controller(tmp.path(), broker.port);
    let (st, made) = call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        &operator,
        br#"{"label": "QEMU rig"}"#,
    );
    assert_eq!(st, 201, "{made}");
    let token = made["secret"].as_str().unwrap();

    // The device's disk, with the operator's provisioning file on its boot partition
    // (the FAT file system 1 MiB in).
    let disk = tmp.path().join("disk.img");
    let cp = Command::new("cp")
        .args(["--sparse=always"])
        .arg(&built)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(cp.success());
    let file = tmp.path().join("heliostat-provision.toml");
    std::fs::write(
        &file,
        format!(
            "[provision]\napi_url = \"http://10.0.2.100:8080\"\nenrollment_token = \"{token}\"\n\
             [site]\nlat = -1.29\nlon = 36.82\ngrid_region = \"KE\"\n\
             [meter]\nsample_interval_ms = 250\nrecord_interval_ms = 1000\n\
             [link]\nhost = \"10.0.2.100\"\nport = 1883\ncontroller_key = \"{ckey}\"\n\
             [[source]]\ntype = \"simulator\"\n"
        ),
    )
    .unwrap();
    let put = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1048576", disk.display()))
        .arg(&file)
        .arg("::/heliostat-provision.toml")
        .status()
        .expect("mcopy (mtools)");
    assert!(put.success());

    let boot_disk = |n: u32, disk: &Path, extra: &[String]| -> Proc {
        let console = std::fs::File::create(tmp.path().join(format!("console-{n}.log"))).unwrap();
        Proc(
            Command::new("qemu-system-aarch64")
                .args([
                    "-M",
                    "virt",
                    "-cpu",
                    "cortex-a57",
                    "-smp",
                    "2",
                    "-m",
                    "1024",
                ])
                .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
                .args(["-bios", "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"])
                .arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()))
                .args(extra)
                // Only the broker and the API, on this machine's loopback, are reachable.
                .arg("-netdev")
                .arg(format!(
                    "user,id=n0,restrict=on,\
                     guestfwd=tcp:10.0.2.100:1883-cmd:nc 127.0.0.1 {},\
                     guestfwd=tcp:10.0.2.100:8080-cmd:nc 127.0.0.1 {api}",
                    broker.port
                ))
                .args(["-device", "virtio-net-pci,netdev=n0"])
                .stdin(std::process::Stdio::null())
                .stdout(console)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("qemu-system-aarch64 (qemu-system-arm)"),
        )
    };
    let boot = |n: u32| boot_disk(n, &disk, &[]);
    let store = SqliteStore::open(&db).unwrap();
    let console = |n: u32| {
        let text = std::fs::read_to_string(tmp.path().join(format!("console-{n}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let started = Instant::now();
    let vm = boot(1);
    let device = {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let approved = store.devices().unwrap().into_iter().find(|d| {
                d.state == fleet_controller::store::DeviceState::Approved
                    && store.count_items(d.id).unwrap_or(0) >= 5
            });
            if let Some(d) = approved {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "no approved device with records after 300 s; console:\n{}",
                console(1)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    eprintln!(
        "first boot to 5 stored records: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The power is cut mid-stream.
    drop(vm);
    let before = store.count_items(device.id).unwrap();
    let vm2 = boot(2);
    wait_for(
        "records after the power cut",
        Duration::from_secs(300),
        || (store.count_items(device.id).unwrap_or(0) >= before + 5).then_some(()),
    );
    // One chain from genesis, every message in it: nothing lost, nothing forked.
    let items = store.items_between(device.id, 0, u64::MAX / 2).unwrap();
    assert!(items.len() as u64 >= before + 5);
    for (i, it) in items.iter().enumerate() {
        assert_eq!(it.seq.0, i as u64, "a gap in the stored chain at {i}");
    }
    hil_tests::assert_chain_from_genesis(
        &device.public_key,
        items.iter().map(|it| (it.seq, it.envelope.as_slice())),
    );
    let listed = http_with(api, "GET", "/api/v1/devices", &[], None);
    let v: Value = serde_json::from_slice(&listed.body).unwrap();
    let image = v[0]["image"].as_str().unwrap_or_default();
    assert!(image.starts_with("heliostat-arm64."), "{v}");
    drop(vm2);

    // A second device, provisioned from a USB stick labelled HSPROVISION (its boot
    // partition holds no file), with a token of its own.
    let (st, made) = call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        &operator,
        br#"{"label": "QEMU rig 2"}"#,
    );
    assert_eq!(st, 201, "{made}");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(token, made["secret"].as_str().unwrap());
    std::fs::write(&file, text).unwrap();
    let stick = tmp.path().join("stick.img");
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    run(Command::new("truncate").args(["-s", "16M"]).arg(&stick));
    run(Command::new("mkfs.vfat")
        .args(["-n", "HSPROVISION"])
        .arg(&stick));
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&stick)
        .arg(&file)
        .arg("::/heliostat-provision.toml"));
    let disk2 = tmp.path().join("disk2.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&built)
        .arg(&disk2));
    let usb = [
        "-device".to_string(),
        "qemu-xhci,id=xhci".to_string(),
        "-drive".to_string(),
        format!("if=none,id=stick,format=raw,file={}", stick.display()),
        "-device".to_string(),
        "usb-storage,bus=xhci.0,drive=stick".to_string(),
    ];
    let _vm3 = boot_disk(3, &disk2, &usb);
    let second = wait_for(
        "the USB-provisioned device",
        Duration::from_secs(300),
        || {
            store.devices().unwrap().into_iter().find(|d| {
                d.id != device.id
                    && d.state == fleet_controller::store::DeviceState::Approved
                    && store.count_items(d.id).unwrap_or(0) >= 3
            })
        },
    );
    assert_ne!(second.public_key, device.public_key);
}
