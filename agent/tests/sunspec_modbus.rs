//! The SunSpec source against a Modbus TCP server simulator speaking real Modbus TCP
//! (tokio-modbus's server): discovery, scale factors, counters, exceptions and timeouts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heliostat_agent::power::PowerSource;
use heliostat_agent::power::sunspec::{Measures, SunSpec, SunSpecConfig, meter_image};

/// Serves `image` on a free loopback port (the HIL harness's SunSpec simulator, fed a
/// fixed register image).
fn serve(image: Arc<Mutex<HashMap<u16, u16>>>) -> SocketAddr {
    hil_tests::sim::sunspec::SunSpecSim::serve_image(image).address
}

fn config(address: SocketAddr) -> SunSpecConfig {
    SunSpecConfig {
        address,
        unit_id: 1,
        measures: Measures::Grid,
        poll_ms: 50,
        timeout_ms: 300,
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_meter_is_discovered_and_read_over_modbus_tcp() {
    let image = Arc::new(Mutex::new(meter_image(40_000, 12_345, -1, 1_000, 20)));
    let addr = serve(image.clone());
    let mut src = SunSpec::open(&config(addr)).unwrap();
    let s = wait_for("a reading", || src.sample(0).ok());
    assert_eq!(s[0].unwrap().power_mw, 1_234_500, "import: 12345 x 10^-1 W");
    assert_eq!(s[0].unwrap().energy_mj, Some(1_000 * 3_600_000));
    assert_eq!(s[1].unwrap().power_mw, 0);
    assert_eq!(s[1].unwrap().energy_mj, Some(20 * 3_600_000));
    assert_eq!(s[0].unwrap().voltage_mv, Some(230_100));
    assert_eq!(
        src.description().as_deref(),
        Some("Heliostat Labs HL-3P-100 (serial SN0042)")
    );
    // The meter starts exporting: the values follow.
    *image.lock().unwrap() = meter_image(40_000, -300, 0, 1_000, 21);
    let s = wait_for("export", || {
        src.sample(0)
            .ok()
            .filter(|s| s[1].unwrap().power_mw == 300_000)
    });
    assert_eq!(s[0].unwrap().power_mw, 0);
}

#[test]
fn a_meter_at_base_zero_is_found_after_an_exception_at_40000() {
    let addr = serve(Arc::new(Mutex::new(meter_image(0, 100, 0, 5, 0))));
    let mut src = SunSpec::open(&config(addr)).unwrap();
    let s = wait_for("a reading", || src.sample(0).ok());
    assert_eq!(s[0].unwrap().power_mw, 100_000);
}

#[test]
fn a_device_without_sunspec_or_without_a_meter_model_is_a_clear_error() {
    let addr = serve(Arc::new(Mutex::new(HashMap::new())));
    let mut src = SunSpec::open(&config(addr)).unwrap();
    let e = wait_for("an error", || {
        src.sample(0)
            .err()
            .filter(|e| e.to_string().contains("SunS"))
    });
    assert!(e.to_string().contains("no SunS marker"), "{e}");

    let addr = serve(Arc::new(Mutex::new(meter_image(40_000, 1, 0, 0, 0))));
    let mut src = SunSpec::open(&SunSpecConfig {
        measures: Measures::Solar,
        ..config(addr)
    })
    .unwrap();
    let e = wait_for("an error", || {
        src.sample(0)
            .err()
            .filter(|e| e.to_string().contains("model"))
    });
    assert!(e.to_string().contains("no SunSpec model 101-103"), "{e}");
}

#[test]
fn a_device_that_never_answers_times_out_without_blocking_the_caller() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let mut src = SunSpec::open(&config(addr)).unwrap();
    let t = Instant::now();
    let e = wait_for("a timeout", || {
        src.sample(0)
            .err()
            .filter(|e| e.to_string().contains("timeout"))
    });
    assert!(e.to_string().contains("timeout"), "{e}");
    // Sampling itself never waited on the network.
    let t2 = Instant::now();
    let _ = src.sample(0);
    assert!(t2.elapsed() < Duration::from_millis(500));
    assert!(t.elapsed() < Duration::from_secs(5));
    // No device at all: connection refused, said so.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut src = SunSpec::open(&config(gone)).unwrap();
    let e = wait_for("refusal", || {
        src.sample(0)
            .err()
            .filter(|e| e.to_string().contains("connecting"))
    });
    assert!(e.to_string().contains(&gone.to_string()), "{e}");
}

#[test]
fn a_meters_records_carry_its_w_register_as_power_and_its_wh_counter_as_energy() {
    use attest::KeyPair;
    use attest::msg::{ChannelKind, TrustTier};
    use heliostat_agent::meter::Meter;

    // A meter importing a steady 1,234.0 W (W = 12340, W_SF = -1) whose TotWhImp counts
    // whole watt-hours, as real meters do: the counter steps by 1 Wh about every 2.9 s.
    let image = Arc::new(Mutex::new(meter_image(40_000, 12_340, -1, 5_000, 0)));
    let addr = serve(image.clone());
    let mut src = SunSpec::open(&config(addr)).unwrap();
    let key = KeyPair::from_seed(&[7; 32]);
    let mut meter = Meter::new(
        &[
            (ChannelKind::GridImport, TrustTier::HardwareMeter),
            (ChannelKind::GridExport, TrustTier::HardwareMeter),
        ],
        None,
    );
    // Simulated time: one sample a second, a record every two seconds, for a minute. The
    // meter's register image follows the simulated clock; each sample waits until the
    // source has polled the image of its second.
    let t0 = 1_782_000_000_000u64;
    let mut records = Vec::new();
    for s in 0..=60u64 {
        let imported_wh = 5_000 + (1_234 * s / 3_600) as u32;
        *image.lock().unwrap() = meter_image(40_000, 12_340, -1, imported_wh, 0);
        let sample = wait_for("the second's counter", || {
            src.sample(0)
                .ok()
                .filter(|x| x[0].unwrap().energy_mj == Some(imported_wh as u64 * 3_600_000))
        });
        let t = t0 + s * 1_000;
        for (c, x) in sample.into_iter().enumerate() {
            meter.feed(c, t, x);
        }
        if s % 2 == 0 {
            let (rec, env) = meter.seal(t, &key);
            meter.commit(&rec, &env);
            records.push(rec);
        }
    }
    for rec in &records {
        assert_eq!(
            rec.channels[0].power.0, 1_234_000,
            "record {} says the meter's 1,234 W, whatever its counter did",
            rec.link.seq.0
        );
        assert_eq!(rec.channels[1].power.0, 0, "nothing exported");
    }
    // The energy is the counter's: 60 s at 1,234 W is 20.6 Wh, of which the counter has
    // shown 20 whole watt-hours.
    let first = records.first().unwrap().channels[0].energy.0;
    let last = records.last().unwrap().channels[0].energy.0;
    assert_eq!(last - first, 20 * 3_600_000);
}
