//! One shutdown for every part: a controller run in-process (as the demo runs it) against a
//! real Mosquitto and a real anvil, asked to stop, returns only once its two ingest threads, its
//! EVM anchor thread and its HTTP API have stopped.

use std::time::{Duration, Instant};

use fleet_controller::config::{
    AnchorBackend, BrokerConfig, ControllerConfig, EpochConfig, EvmConfig,
};
use hil_tests::{Anvil, Mosquitto, TempDir};

#[test]
fn run_returns_only_after_every_part_has_stopped() {
    let tmp = TempDir::new("shutdown");
    let broker = Mosquitto::start();
    let anvil = Anvil::start();
    let key_file = Anvil::key_file(tmp.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (contract, _) = rt
        .block_on(fleet_controller::anchor::evm::EvmAnchor::deploy(
            &anvil.url(),
            &key_file,
        ))
        .unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_addr = api.local_addr().unwrap();
    let mut cfg = ControllerConfig::new(
        tmp.path().join("data"),
        BrokerConfig {
            port: broker.port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.epochs = EpochConfig {
        interval_ms: 200,
        anchor: AnchorBackend::Evm,
        evm: Some(EvmConfig {
            poll_ms: 50,
            ..EvmConfig::new(anvil.url(), format!("{contract:#x}"), key_file, 31337)
        }),
    };
    cfg.api.listen = api_addr.to_string();
    cfg.validate().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let run = rt.spawn(async move {
        fleet_controller::runtime::run_with_api_listener(
            cfg,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            Some(api),
        )
        .await
    });
    // Up: the API answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(api_addr).is_err() {
        assert!(Instant::now() < deadline, "the API never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each thread names itself as it starts.
    while threads_named(&["ingest-sig", "ingest", "evm-anchor", "dispatch"]) < 4 {
        assert!(
            Instant::now() < deadline,
            "the two ingest stages, the EVM anchor and dispatch threads never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let _ = stop_tx.send(true);
    let started = Instant::now();
    rt.block_on(run).unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Returned: the API no longer listens and no controller thread is left behind.
    assert!(
        std::net::TcpStream::connect(api_addr).is_err(),
        "the API still answers"
    );
    assert_eq!(
        threads_named(&["ingest-sig", "ingest", "evm-anchor", "dispatch"]),
        0,
        "a thread outlived run"
    );
}

/// How many threads of this process carry one of `names` (Linux: /proc/self/task).
fn threads_named(names: &[&str]) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| names.contains(&comm.trim()))
        .count()
}
