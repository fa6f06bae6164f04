//! Every HIL scenario, each a named test (real controller, agents, Mosquitto and anvil
//! processes; network namespaces and tmpfs need root, as CI has). They run one at a time:
//! each is timing-sensitive in the way a field fault is, and two fleets at once on a small
//! machine would only slow each other. Each fails unless every property of its report holds
//! (`Report::check`) and its own assertions held while its faults lasted.

use std::sync::Mutex;
use std::time::Duration;

use hil_scenarios::fleet::Bins;
use hil_scenarios::scenarios::{Break, Timing, run};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn bins() -> Bins {
    Bins::beside(env!("CARGO_BIN_EXE_hil"))
}

/// Runs `name` (seed 7) and fails with its report unless every property held.
fn scenario(name: &str, timing: Timing) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = run(name, bins(), 7, timing, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    eprintln!("{}", report.text());
    if let Err(e) = report.check() {
        panic!("{name}: {e:#}");
    }
    assert!(report.produced > 0 && report.stored + report.destroyed == report.produced);
}

#[test]
fn hil_broker_restarts_under_load() {
    scenario("broker-restarts", Timing::default());
}

#[test]
fn hil_agent_crash_loop() {
    scenario("agent-crash-loop", Timing::default());
}

#[test]
fn hil_controller_crash_mid_epoch() {
    scenario("controller-crash-mid-epoch", Timing::default());
}

#[test]
fn hil_controller_crash_mid_anchor() {
    scenario("controller-crash-mid-anchor", Timing::default());
}

/// 15 crashes of the controller's commit-then-ack (`hil run controller-crash-campaign` does
/// 100 by default).
#[test]
fn hil_controller_crash_campaign() {
    scenario(
        "controller-crash-campaign",
        Timing {
            controller_kills: 15,
            ..Timing::default()
        },
    );
}

/// The partition lasts 10 minutes (`hil run partition`); here 20 s, enough for
/// keepalives to lapse and a backlog to build.
#[test]
fn hil_partition_of_a_third_of_the_fleet() {
    scenario(
        "partition",
        Timing {
            partition: Duration::from_secs(20),
            ..Timing::default()
        },
    );
}

#[test]
fn hil_lossy_links() {
    scenario("lossy-links", Timing::default());
}

#[test]
fn hil_disk_full_device() {
    scenario("disk-full", Timing::default());
}

#[test]
fn hil_outbox_torn_and_damaged() {
    scenario("outbox-damage", Timing::default());
}

#[test]
fn hil_clock_skew_beyond_the_window() {
    scenario("clock-skew", Timing::default());
}

#[test]
fn hil_lying_device() {
    scenario("lying-device", Timing::default());
}

/// The counting can fail: one stored record deleted behind the controller's back before
/// the count is reported lost, and the run fails.
#[test]
fn hil_a_broken_property_fails_the_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = run(
        "lying-device",
        bins(),
        7,
        Timing::default(),
        Some(Break::DeleteStoredRecord),
    )
    .unwrap();
    assert_eq!(report.lost, 1, "{}", report.text());
    let e = report.check().unwrap_err().to_string();
    assert!(e.contains("1 records lost"), "{e}");
}
