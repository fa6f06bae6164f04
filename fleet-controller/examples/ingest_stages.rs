//! The two ingest stages alone, no MQTT: 50 sample devices x 400 records in batches of
//! 500, decoded and signature-checked (`prepare`, every core), then chain-checked, stored
//! in one SQLite transaction and acknowledged (`handle_prepared`).
//! `cargo run --release -p fleet-controller --example ingest_stages`

use attest::sample::SampleDevice;
use fleet_controller::ingest::{Ingest, IngestConfig, PREFIX, prepare};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use std::time::Instant;

fn main() {
    let dir = std::env::temp_dir().join("stage-probe");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = attest::KeyPair::from_seed(&[0xc0; 32]);
    let mut ing = Ingest::new(
        SqliteStore::open(&dir.join("c.db")).unwrap(),
        key,
        IngestConfig::auto_approving(),
    );
    let mut fleet: Vec<SampleDevice> = (0..50).map(|i| SampleDevice::new(i + 1)).collect();
    let hellos: Vec<_> = fleet
        .iter()
        .map(|d| {
            (
                format!("{PREFIX}{}/hello", d.key.device_id()),
                d.hello().into_bytes(),
            )
        })
        .collect();
    ing.handle(&hellos, attest::sample::SAMPLE_START.0 + 1)
        .unwrap();
    let chains: Vec<Vec<attest::Envelope>> =
        fleet.iter_mut().map(|d| d.chain(400, 10_000)).collect();
    let mut batches = Vec::new();
    for (d, c) in fleet.iter().zip(&chains) {
        for chunk in c.chunks(500) {
            batches.push((
                format!("{PREFIX}{}/records", d.key.device_id()),
                attest::batch::encode(chunk.iter().map(|e| e.as_bytes())),
            ));
        }
    }
    let now = attest::sample::SAMPLE_START.0 + 86_400_000;
    let store = SqliteStore::open(&dir.join("c.db")).unwrap();
    let t = Instant::now();
    let p = prepare(&batches, |id| {
        store.device(id).ok().flatten().map(|d| d.public_key)
    });
    let t1 = t.elapsed();
    let t = Instant::now();
    ing.handle_prepared(p, now).unwrap();
    let t2 = t.elapsed();
    println!(
        "20000 records: prepare {:?} ({:.0}/s), handle_prepared {:?} ({:.0}/s)",
        t1,
        20000.0 / t1.as_secs_f64(),
        t2,
        20000.0 / t2.as_secs_f64()
    );
}
