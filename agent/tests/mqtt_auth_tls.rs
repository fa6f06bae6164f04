//! The link's security settings against a real Mosquitto: username/password, and TLS with
//! client certificates (certificates made by openssl for the test). A wrong password or a
//! broker certificate from another CA must keep the agent out (and say why in its log).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, Proc, TempDir, free_port, require};

use hil_tests::test_controller as controller;

/// The link every agent here starts from: the broker's secured listener on `port`.
fn link(port: u16) -> LinkConfig {
    LinkConfig {
        port,
        backoff_max_ms: 300,
        ..LinkConfig::new("127.0.0.1", &controller().public())
    }
}

fn agent(dir: &Path, link: LinkConfig) -> (Proc, PathBuf) {
    let cfg = dir.join("agent.toml");
    let mut config = AgentConfig::new(
        dir.join("data"),
        SiteConfig::new(1.0, 2.0),
        link,
        vec![SourceConfig::Simulator(SimulatorConfig::default())],
    );
    config.meter = MeterConfig {
        sample_interval_ms: 50,
        record_interval_ms: 100,
    };
    config.write_toml(&cfg).unwrap();
    let log = dir.join("agent.log");
    (
        hil_tests::spawn_agent(env!("CARGO_BIN_EXE_heliostat-agent"), &cfg, &log),
        log,
    )
}

fn arrives(c: &Collector, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if c.got.lock().unwrap().records.len() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn username_and_password_let_the_agent_in_and_a_wrong_password_does_not() {
    let tmp = TempDir::new("auth");
    let passwd = tmp.path().join("passwd");
    let ok = Command::new(require("mosquitto_passwd", "mosquitto"))
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["rig-17", "s3cret"])
        .status()
        .unwrap();
    assert!(ok.success());
    let (port, open) = (free_port(), free_port());
    let _broker = Mosquitto::start_config(
        port,
        format!(
            "per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             listener {open} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n",
            passwd.display()
        ),
    );
    let collector = Collector::start(open, controller(), true);

    let bad_dir = TempDir::new("auth-bad");
    let (_bad, bad_log) = agent(
        bad_dir.path(),
        LinkConfig {
            username: Some("rig-17".into()),
            password: Some("wrong".into()),
            insecure_plaintext_password: true,
            ..link(port)
        },
    );
    let good_dir = TempDir::new("auth-good");
    let (_good, _) = agent(
        good_dir.path(),
        LinkConfig {
            username: Some("rig-17".into()),
            password: Some("s3cret".into()),
            insecure_plaintext_password: true,
            ..link(port)
        },
    );
    assert!(
        arrives(&collector, 10, Duration::from_secs(10)),
        "no records with the right password"
    );
    let g = collector.got.lock().unwrap();
    let good = hil_tests::agent_key(&good_dir.path().join("data")).device_id();
    assert_eq!(
        g.devices.iter().copied().collect::<Vec<_>>(),
        vec![good],
        "only the agent with the right password got through"
    );
    drop(g);
    let log = std::fs::read_to_string(bad_log).unwrap();
    assert!(
        log.contains("connection down"),
        "the refused agent says so:\n{log}"
    );
}

#[test]
fn tls_with_client_certificates_connects_and_a_foreign_ca_is_refused() {
    let tmp = TempDir::new("tls");
    let d = tmp.path();
    hil_tests::pki::make(d, "good", &["client"]);
    hil_tests::pki::make(d, "other", &["client"]);
    let (port, open) = (free_port(), free_port());
    let _broker = Mosquitto::start_config(
        port,
        format!(
            "per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
             cafile {d}/good-ca.pem\ncertfile {d}/good-server.pem\nkeyfile {d}/good-server.key\n\
             require_certificate true\nlistener {open} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n",
            d = d.display()
        ),
    );
    let collector = Collector::start(open, controller(), true);
    let tls = |ca: &str, client: &str| LinkConfig {
        tls_ca_file: Some(d.join(format!("{ca}-ca.pem"))),
        tls_client_cert: Some(d.join(format!("{client}-client.pem"))),
        tls_client_key: Some(d.join(format!("{client}-client.key"))),
        ..link(port)
    };
    // Trusts another CA: must not connect.
    let wrong = TempDir::new("tls-wrong");
    let (_w, wrong_log) = agent(wrong.path(), tls("other", "good"));
    // Right CA, but a client certificate the broker does not trust: refused by the broker.
    let stranger = TempDir::new("tls-stranger");
    let (_s, _) = agent(stranger.path(), tls("good", "other"));
    let right = TempDir::new("tls-right");
    let (_r, _) = agent(right.path(), tls("good", "good"));
    assert!(
        arrives(&collector, 10, Duration::from_secs(10)),
        "no records over TLS"
    );
    let id = hil_tests::agent_key(&right.path().join("data")).device_id();
    let seen: Vec<_> = collector
        .got
        .lock()
        .unwrap()
        .devices
        .iter()
        .copied()
        .collect();
    assert_eq!(seen, vec![id], "only the well-configured agent got through");
    let log = std::fs::read_to_string(wrong_log).unwrap();
    assert!(log.contains("connection down"), "{log}");
    assert!(
        log.contains("TLS: 127.0.0.1") && log.contains("certificate"),
        "the refused agent names the TLS failure:\n{log}"
    );
}

#[test]
fn a_password_over_plain_tcp_is_refused_by_the_agent_before_it_connects() {
    let port = free_port();
    let _broker = Mosquitto::start_config(
        port,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
        ),
    );
    let collector = Collector::start(port, controller(), true);
    let dir = TempDir::new("plain-password");
    let (mut agent, log) = agent(
        dir.path(),
        LinkConfig {
            username: Some("rig-17".into()),
            password: Some("s3cret-never-sent".into()),
            ..link(port)
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "refused configuration, failed start");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("link.password") && log.contains("in clear"),
        "the agent names the key:\n{log}"
    );
    assert!(
        !log.contains("s3cret-never-sent"),
        "the secret is not logged"
    );
    assert!(
        collector.got.lock().unwrap().devices.is_empty(),
        "nothing reached the broker"
    );
}
