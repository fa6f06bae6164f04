//! The broker's perimeter (docs/security.md, docs/threat-model.md) against a real Mosquitto
//! running what `fleet-controller broker-files` writes (TLS listeners, the dynamic security
//! plugin), a real controller connected with its client certificate (`broker.dynsec`), and
//! real agents provisioned with the broker logins their enrollment gave them. Attacks come
//! from Mosquitto's own command-line clients holding a device's credentials:
//!
//! - a device publishing on another device's topic is refused, and the controller's side
//!   never sees the message (while the same client's message on its own topic arrives);
//! - a device joining the ingest share group is refused; so are anonymous clients, the
//!   controller's username on the devices' listener, and a client without a certificate on
//!   the controller's listener;
//! - taking another device's client id is impossible (wrong password: refused; own
//!   password: the broker renames the client to its own username) and the other device
//!   stays connected;
//! - a revoked device is dropped by the broker at once and refused afterwards, the others
//!   go on;
//! - no broker password, API token or enrollment token appears in any log of the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use hil_tests::api_call as call;
use hil_tests::{
    Mosquitto, TempDir, create_account, free_port, require, spawn_agent, spawn_controller,
    wait_for, workspace_binary,
};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");
const CONTROLLER_CN: &str = "heliostat-controller";

/// A device's broker login as provisioning wrote it into its configuration.
struct Login {
    id: attest::DeviceId,
    password: String,
    log: PathBuf,
}

/// Runs a Mosquitto command-line client (MQTT 5, TLS with the test CA): its output, both
/// streams.
fn mqtt(tool: &str, ca: &Path, args: &[&str]) -> (bool, String) {
    let bin = require(tool, "mosquitto-clients");
    let out: Output = Command::new(bin)
        .args(["-h", "127.0.0.1", "-V", "5", "--cafile"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running a Mosquitto client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The broker's "not authorised" (MQTT 5: "Not authorized"), at connection or publish.
fn refused(said: &str) -> bool {
    said.to_lowercase().contains("not authori")
}

fn count(path: &Path, what: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(what)
        .count()
}

#[test]
fn the_broker_holds_each_device_to_its_own_topics_and_cuts_a_revoked_one_off() {
    let tmp = TempDir::new("perimeter");
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    hil_tests::pki::make(&pki, "p", &[CONTROLLER_CN]);
    let ca = pki.join("p-ca.pem");
    let (dp, cp, api) = (free_port(), free_port(), free_port());

    // The controller's configuration: TLS with its client certificate to its own listener,
    // the plugin kept up to date, no auto-approval.
    let cdir = tmp.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut cfg = ControllerConfig::new(
        cdir.join("data"),
        BrokerConfig {
            port: cp,
            tls_ca_file: Some(ca.clone()),
            tls_client_cert: Some(pki.join(format!("p-{CONTROLLER_CN}.pem"))),
            tls_client_key: Some(pki.join(format!("p-{CONTROLLER_CN}.key"))),
            dynsec: true,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = false;
    cfg.api.listen = format!("127.0.0.1:{api}");
    let ccfg = cdir.join("controller.toml");
    cfg.write_toml(&ccfg).unwrap();

    // The broker's files, written by the controller's command, then the broker.
    let bdir = tmp.path().join("broker");
    let out = Command::new(CONTROLLER)
        .args(["--config", ccfg.to_str().unwrap(), "broker-files", "--out"])
        .arg(&bdir)
        .arg("--ca")
        .arg(&ca)
        .arg("--cert")
        .arg(pki.join("p-server.pem"))
        .arg("--key")
        .arg(pki.join("p-server.key"))
        .args(["--device-port", &dp.to_string()])
        .args(["--controller-port", &cp.to_string()])
        .args(["--bind", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        // Mosquitto, started as root, drops to its own user and rewrites the plugin's file.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&bdir, 0o777).unwrap();
        mode(&bdir.join("dynamic-security.json"), 0o666).unwrap();
    }
    let conf = std::fs::read_to_string(bdir.join("mosquitto.conf")).unwrap();
    assert!(
        conf.contains("allow_anonymous false") && conf.contains("use_username_as_clientid true")
    );
    let _broker = Mosquitto::start_config(dp, format!("{conf}persistence false\n"));
    assert!(hil_tests::wait_for_port(cp, Duration::from_secs(10)));

    let clog = cdir.join("controller.log");
    let _controller = spawn_controller(CONTROLLER, &ccfg, &clog);
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let operator = create_account(CONTROLLER, &ccfg, "operator", "ops");
    let (key, _) = attest::keyfile::load_or_create(&cdir.join("data/controller.key")).unwrap();
    let ckey = key.public().to_string();
    let (st, made) = call(
        api,
        "POST",
        "/api/v1/enrollment-tokens",
        &operator,
        br#"{"label": "perimeter test", "uses": 2}"#,
    );
    assert_eq!(st, 201, "{made}");
    let token = made["secret"].as_str().unwrap().to_string();

    // Two devices, provisioned through the real command: the broker login comes with the
    // enrollment; the broker learns it from the controller.
    let agent_bin = workspace_binary(CONTROLLER, "heliostat-agent", "heliostat-agent");
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let mut agents = Vec::new();
    let mut logins = Vec::new();
    for name in ["a", "b"] {
        let dev = tmp.path().join(name);
        std::fs::create_dir_all(&dev).unwrap();
        let file = dev.join("provision.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"{data}\"\n\
                 [provision]\napi_url = \"http://127.0.0.1:{api}\"\nenrollment_token = \"{token}\"\n\
                 ca_pem = \"\"\"\n{ca_pem}\"\"\"\n\
                 [site]\nlat = -1.29\nlon = 36.82\ngrid_region = \"KE\"\n\
                 [meter]\nsample_interval_ms = 50\nrecord_interval_ms = 200\n\
                 [link]\nhost = \"127.0.0.1\"\nport = {dp}\ncontroller_key = \"{ckey}\"\nbackoff_max_ms = 500\n\
                 [[source]]\ntype = \"simulator\"\n",
                data = dev.join("data").display(),
            ),
        )
        .unwrap();
        let config = dev.join("etc/agent.toml");
        let out = Command::new(&agent_bin)
            .arg("--config")
            .arg(&config)
            .arg("provision")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written: toml::Table =
            toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let id = hil_tests::agent_key(&dev.join("data")).device_id();
        assert_eq!(
            written["link"]["username"].as_str(),
            Some(id.to_string().as_str())
        );
        let log = dev.join("agent.log");
        agents.push(spawn_agent(agent_bin.to_str().unwrap(), &config, &log));
        logins.push(Login {
            id,
            password: written["link"]["password"].as_str().unwrap().to_string(),
            log,
        });
    }
    let (a, b) = (&logins[0], &logins[1]);
    let store = SqliteStore::open(&cdir.join("data/controller.db")).unwrap();
    let stored = |d: attest::DeviceId| store.count_items(d).unwrap_or(0);
    wait_for(
        "both devices' records stored",
        Duration::from_secs(30),
        || (stored(a.id) >= 3 && stored(b.id) >= 3).then_some(()),
    );
    let b_drops = count(&b.log, "connection down");
    // From here a's owner attacks with a's login (its agent stopped: a second connection
    // with a's login takes a's session, by design).
    agents[0].kill9();

    let dev = |who: &Login| -> Vec<String> {
        vec![
            "-p".into(),
            dp.to_string(),
            "-u".into(),
            who.id.to_string(),
            "-P".into(),
            who.password.clone(),
        ]
    };
    let run = |tool: &str, base: Vec<String>, more: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(more);
        mqtt(tool, &ca, &args)
    };

    // 1. Another device's topic: refused by the broker; the controller's side never sees it.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let watcher = Command::new(require("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-V", "5", "--cafile"])
        .arg(&ca)
        .args(["-p", &cp.to_string(), "--cert"])
        .arg(pki.join(format!("p-{CONTROLLER_CN}.pem")))
        .arg("--key")
        .arg(pki.join(format!("p-{CONTROLLER_CN}.key")))
        .args([
            "-i",
            "perimeter-watcher",
            "-t",
            "heliostat/v1/dev/+/records",
            "-W",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let b_records = attest::topics::device(&b.id, attest::topics::Leaf::Records);
    let a_records = attest::topics::device(&a.id, attest::topics::Leaf::Records);
    let forged = format!("forged-by-a-{nonce}");
    let (_, said) = run(
        "mosquitto_pub",
        dev(a),
        &["-t", &b_records, "-m", &forged, "-q", "1"],
    );
    assert!(
        said.contains("Not authorized"),
        "the broker refuses the publish: {said}"
    );
    let control = format!("own-topic-{nonce}");
    let (ok, said) = run(
        "mosquitto_pub",
        dev(a),
        &["-t", &a_records, "-m", &control, "-q", "1"],
    );
    assert!(ok && !said.contains("Not authorized"), "{said}");
    let seen = watcher.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(seen.contains(&control), "the watcher works: {seen:.300}");
    assert!(!seen.contains(&forged), "the forged message got through");

    // 2. The ingest share group, anonymity, the controller's name, a missing certificate.
    let share = format!(
        "$share/{}/heliostat/v1/dev/+/records",
        cfg.broker.share_group
    );
    let (_, said) = run(
        "mosquitto_sub",
        dev(a),
        &["-t", &share, "-W", "3", "-C", "1"],
    );
    assert!(
        said.contains("All subscription requests were denied") && !said.contains("heliostat/"),
        "a device joins the ingest group: {said}"
    );
    let (ok, said) = run(
        "mosquitto_sub",
        vec!["-p".into(), dp.to_string()],
        &["-t", &share, "-W", "3", "-C", "1"],
    );
    assert!(!ok && refused(&said), "anonymous: {said}");
    let (ok, said) = run(
        "mosquitto_pub",
        vec![
            "-p".into(),
            dp.to_string(),
            "-u".into(),
            CONTROLLER_CN.into(),
            "-P".into(),
            "guess".into(),
        ],
        &["-t", &a_records, "-m", "x"],
    );
    assert!(!ok && refused(&said), "the controller's name: {said}");
    let (ok, said) = run(
        "mosquitto_sub",
        vec!["-p".into(), cp.to_string()],
        &["-t", &share, "-W", "3", "-C", "1"],
    );
    assert!(!ok, "no certificate on the controller's listener: {said}");

    // 3. Another device's client id: with its name but not its password, refused; with
    // one's own login, renamed to one's own id; the device keeps its connection.
    let b_name = b.id.to_string();
    let (ok, said) = run(
        "mosquitto_sub",
        vec![
            "-p".into(),
            dp.to_string(),
            "-u".into(),
            b_name.clone(),
            "-P".into(),
            "wrong".into(),
        ],
        &["-i", &b_name, "-t", &a_records, "-W", "2"],
    );
    assert!(!ok && refused(&said), "{said}");
    let a_cmd = attest::topics::device(&a.id, attest::topics::Leaf::Cmd);
    let before = stored(b.id);
    let _ = run(
        "mosquitto_sub",
        dev(a),
        &["-i", &b_name, "-t", &a_cmd, "-W", "2"],
    );
    let _ = run(
        "mosquitto_sub",
        dev(a),
        &[
            "-i",
            &format!("heliostat-agent-{b_name}"),
            "-t",
            &a_cmd,
            "-W",
            "2",
        ],
    );
    wait_for("b's records go on", Duration::from_secs(10), || {
        (stored(b.id) > before + 3).then_some(())
    });
    assert_eq!(
        count(&b.log, "connection down"),
        b_drops,
        "b was never kicked off"
    );

    // 4. Revoked: the broker drops b at once and refuses it; a goes on.
    let (st, body) = call(
        api,
        "POST",
        &format!("/api/v1/devices/{b_name}/revoke"),
        &operator,
        b"",
    );
    assert_eq!(st, 200, "{body}");
    wait_for("b's connection dropped", Duration::from_secs(10), || {
        (count(&b.log, "connection down") > b_drops).then_some(())
    });
    let (ok, said) = run(
        "mosquitto_pub",
        dev(b),
        &["-t", &b_records, "-m", "after", "-q", "1"],
    );
    assert!(!ok && refused(&said), "a revoked login: {said}");
    agents[0] = spawn_agent(
        agent_bin.to_str().unwrap(),
        &tmp.path().join("a/etc/agent.toml"),
        &a.log,
    );
    let a_before = stored(a.id);
    wait_for("a's records go on", Duration::from_secs(15), || {
        (stored(a.id) > a_before + 3).then_some(())
    });

    // 5. No secret in any log of the run.
    drop(agents);
    let mut secrets = vec![operator.clone(), token.clone()];
    secrets.extend(logins.iter().map(|l| l.password.clone()));
    for log in [clog.clone(), a.log.clone(), b.log.clone()] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.is_empty() || log == clog,
            "{} is empty",
            log.display()
        );
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in {}", log.display());
        }
    }
}
