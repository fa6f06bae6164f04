//! Backlog drain rate after a 24-hour outage: fills an outbox with a day of 10-second
//! records (8,640), then starts the agent against a real Mosquitto with a collector that
//! acknowledges, and times until every record has arrived. Prints the figure for
//! BENCHMARKS.md.
//!
//! `cargo run --release -p heliostat-agent --example drain_bench [RECORDS] [--tls]`
//!
//! `--tls`: the agent reaches Mosquitto over TLS through `heliostat-mqtt-tls` (certificates
//! made by openssl for the run), the collector over a plain listener beside it: the cost of
//! the TLS bridge on the drain.

use std::time::{Duration, Instant};

use attest::KeyPair;
use attest::msg::{ChannelKind, TrustTier};
use heliostat_agent::config::{AgentConfig, FsyncPolicy, LinkConfig, OutboxConfig, SiteConfig};
use heliostat_agent::meter::Meter;
use heliostat_agent::outbox::Outbox;
use heliostat_agent::power::simulator::SimulatorConfig;
use heliostat_agent::power::{Sample, SourceConfig};
use hil_tests::collector::Collector;
use hil_tests::{Mosquitto, TempDir};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tls = args.iter().any(|a| a == "--tls");
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(8_640);
    let tmp = TempDir::new("drain-bench");
    let data = tmp.path().join("data");
    let controller = KeyPair::from_seed(&[0xc0; 32]);
    // With --tls: the agent's listener takes TLS, the collector's (the controller's side)
    // stays plain.
    let (broker, agent_port) = if tls {
        let pki = tmp.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        hil_tests::pki::make(&pki, "bench", &[]);
        let (open, secured) = (hil_tests::free_port(), hil_tests::free_port());
        let broker = Mosquitto::start_config(
            open,
            format!(
                "per_listener_settings true\nlistener {open} 127.0.0.1\nallow_anonymous true\n\
                 listener {secured} 127.0.0.1\nallow_anonymous true\ncafile {d}/bench-ca.pem\n\
                 certfile {d}/bench-server.pem\nkeyfile {d}/bench-server.key\n\
                 persistence false\nmax_queued_messages 200000\nmax_inflight_messages 200\n\
                 message_size_limit 0\nlog_dest none\n",
                d = pki.display()
            ),
        );
        assert!(hil_tests::wait_for_port(secured, Duration::from_secs(10)));
        (broker, secured)
    } else {
        let broker = Mosquitto::start();
        let port = broker.port;
        (broker, port)
    };
    let mut cfg = AgentConfig::new(
        &data,
        SiteConfig {
            battery_wh: 1000,
            ..SiteConfig::new(52.5, 13.4)
        },
        LinkConfig {
            port: agent_port,
            tls_ca_file: tls.then(|| tmp.path().join("pki/bench-ca.pem")),
            ..LinkConfig::new("127.0.0.1", &controller.public())
        },
        vec![SourceConfig::Simulator(SimulatorConfig::default())],
    );
    cfg.outbox.fsync = FsyncPolicy::Always;
    cfg.validate().unwrap();

    // A day of records as the agent would have stored them during an outage.
    std::fs::create_dir_all(&data).unwrap();
    let (key, _) = heliostat_agent::identity::load_or_create(&data.join("device.key")).unwrap();
    let kinds: Vec<(ChannelKind, TrustTier)> = heliostat_agent::power::simulator::CHANNELS
        .iter()
        .map(|(_, k)| (*k, TrustTier::SoftwareEstimate))
        .collect();
    let mut meter = Meter::new(&kinds, None);
    let mut outbox = Outbox::open(
        &data.join("outbox"),
        OutboxConfig {
            fsync: FsyncPolicy::Never,
            ..cfg.outbox.clone()
        },
    )
    .unwrap();
    let start = heliostat_agent::runtime::now_ms() - n * 10_000;
    let t0 = Instant::now();
    for i in 0..n {
        let t = start + i * 10_000;
        for c in 0..kinds.len() {
            meter.feed(
                c,
                t,
                Some(Sample {
                    power_mw: 50_000 + c as u64,
                    ..Sample::default()
                }),
            );
        }
        let (rec, env) = meter.seal(t, &key);
        outbox.append(rec.link.seq, env.as_bytes()).unwrap();
        meter.commit(&rec, &env);
    }
    let fill = t0.elapsed();
    std::fs::write(
        data.join("chain-state.json"),
        serde_json::to_vec(meter.state()).unwrap(),
    )
    .unwrap();
    drop(outbox);

    let collector = Collector::start(broker.port, controller, true);
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t1 = Instant::now();
    let target = n - 1;
    let c2 = collector.clone();
    rt.block_on(heliostat_agent::runtime::run(cfg, async move {
        while c2.contiguous().is_none_or(|c| c < target) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }))
    .unwrap();
    let drain = t1.elapsed();
    let g = collector.got.lock().unwrap();
    println!(
        "link: {}",
        if tls {
            "TLS (heliostat-mqtt-tls bridge)"
        } else {
            "plain TCP"
        }
    );
    println!(
        "backlog: {n} records ({} bytes each on average)",
        g.records.values().map(|v| v.len()).sum::<usize>() / g.records.len()
    );
    println!(
        "filled the outbox in {:.2} s (signing + append, fsync off)",
        fill.as_secs_f64()
    );
    println!(
        "drained in {:.2} s: {:.0} records/s, {} MQTT messages",
        drain.as_secs_f64(),
        n as f64 / drain.as_secs_f64(),
        g.wire_messages
    );
}
