//! A real Prometheus server (Debian's `prometheus`) scrapes the demo controller's
//! `/metrics` with the scrape configuration the README shows, and the numbers come back
//! through Prometheus's own query API: the exposition parses, and it says what the
//! controller stored.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hil_tests::{TempDir, free_port, require, wait_for_port};

const DEMO: &str = env!("CARGO_BIN_EXE_heliostat-demo");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a PromQL query; the first sample's value, if any.
fn query(http: &ureq::Agent, port: u16, q: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?,
    )
    .ok()?;
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_controller_and_answers_with_its_numbers() {
    let prometheus = require("prometheus", "prometheus");
    let tmp = TempDir::new("prometheus");
    let mut demo = Command::new(DEMO)
        .args(["--data-dir", tmp.path().join("demo").to_str().unwrap()])
        .args(["--port", "0", "--api-port", "0", "--agents", "2"])
        .args([
            "--record-ms",
            "500",
            "--epoch-ms",
            "2000",
            "--jobs-every-s",
            "0",
        ])
        .args(["--run-for-s", "300"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(demo.stdout.take().unwrap());
    let _demo = Killed(demo);
    let mut target = None;
    let mut lines = out.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.trim().strip_prefix("web console") {
            target = Some(
                u.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string(),
            );
            break;
        }
    }
    // The demo prints a status line every 10 s: keep reading, or it dies of a broken pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let target = target.expect("the demo printed its address");

    // The README's scrape configuration, with this test's target and a fast interval.
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: heliostat\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "prometheus did not listen on {port}"
    );
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();

    // The target is up, and the controller's counters arrive and grow.
    let end = Instant::now() + Duration::from_secs(90);
    let mut stored = None;
    while Instant::now() < end {
        if query(&http, port, "up{job=\"heliostat\"}") == Some(1.0)
            && let Some(n) =
                query(&http, port, "heliostat_ingest_stored_total").filter(|n| *n >= 10.0)
        {
            stored = Some(n);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let stored = stored.expect("prometheus never read heliostat_ingest_stored_total >= 10");
    assert_eq!(
        query(&http, port, "heliostat_devices{state=\"approved\"}"),
        Some(2.0)
    );
    assert_eq!(query(&http, port, "heliostat_devices_online"), Some(2.0));
    assert!(
        query(&http, port, "heliostat_fleet_power_watts{source=\"load\"}").is_some_and(|w| w > 0.0)
    );
    // Counters only grow: a later scrape reads at least as much.
    std::thread::sleep(Duration::from_secs(3));
    let later = query(&http, port, "heliostat_ingest_stored_total").unwrap();
    assert!(later >= stored, "{later} < {stored}");
    assert!(query(&http, port, "heliostat_epochs_closed_total").is_some_and(|n| n >= 1.0));
}
