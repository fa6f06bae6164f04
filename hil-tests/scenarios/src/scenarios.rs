//! The named scenarios. Each starts a fleet of real processes, injects its faults, checks
//! what must hold while they last, and ends with [`Fleet::finish`]: both ends counted.
//! `Scenario::run` returns the report; the caller decides (the tests and `hil run` fail
//! unless [`Report::check`] passes and the scenario's own assertions held).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use attest::msg::ChainMessage;
use attest::topics::{Leaf, device as topic};
use attest::units::SeqNo;
use fleet_controller::store::Store;

use crate::faults::Fault;
use crate::fleet::{Bins, Fleet, FleetOptions};
use crate::netns::Impairment;
use crate::report::{Report, until};
use crate::rng::Rng;

/// How long the long parts of a scenario last.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The partition scenario's partition (the 10 minutes by default; the tests
    /// use a shorter one).
    pub partition: Duration,
    /// The controller crash campaign's kills.
    pub controller_kills: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            partition: Duration::from_secs(600),
            controller_kills: 100,
        }
    }
}

/// A deliberate break of a property, to show a scenario fails when it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Delete one stored record from the controller's database before counting.
    DeleteStoredRecord,
}

/// The scenarios, by name.
pub const SCENARIOS: [&str; 11] = [
    "broker-restarts",
    "agent-crash-loop",
    "controller-crash-mid-epoch",
    "controller-crash-campaign",
    "controller-crash-mid-anchor",
    "partition",
    "lossy-links",
    "disk-full",
    "outbox-damage",
    "clock-skew",
    "lying-device",
];

/// Runs scenario `name` with `seed`.
pub fn run(
    name: &str,
    bins: Bins,
    seed: u64,
    timing: Timing,
    brk: Option<Break>,
) -> Result<Report> {
    let mut rng = Rng::new(seed);
    let mut fleet = match name {
        "broker-restarts" => broker_restarts(bins, &mut rng)?,
        "agent-crash-loop" => agent_crash_loop(bins, &mut rng)?,
        "controller-crash-mid-epoch" => controller_crash_mid_epoch(bins, &mut rng)?,
        "controller-crash-campaign" => {
            controller_crash_campaign(bins, &mut rng, timing.controller_kills)?
        }
        "controller-crash-mid-anchor" => controller_crash_mid_anchor(bins, &mut rng)?,
        "partition" => partition(bins, &mut rng, timing.partition)?,
        "lossy-links" => lossy_links(bins, &mut rng)?,
        "disk-full" => disk_full(bins, &mut rng)?,
        "outbox-damage" => outbox_damage(bins, &mut rng)?,
        "clock-skew" => clock_skew(bins, &mut rng)?,
        "lying-device" => lying_device(bins, &mut rng)?,
        other => {
            return Err(anyhow!(
                "no scenario {other:?}; there are: {}",
                SCENARIOS.join(", ")
            ));
        }
    };
    if brk == Some(Break::DeleteStoredRecord) {
        fleet.event("BREAK: one stored record will be deleted before counting");
    }
    let mut report = fleet.finish_with(name, seed, brk)?;
    report.scenario = name.into();
    Ok(report)
}

fn sleep_ms(rng: &mut Rng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.range(lo, hi)));
}

/// Records stored for agent `i` right now.
fn stored(fleet: &Fleet, i: usize) -> u64 {
    fleet.stored_counts()[i]
}

/// Broker restarts under load: four agents recording every 100 ms, the broker killed (its
/// in-flight messages gone: persistence off) and started again four times.
fn broker_restarts(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let mut fleet = Fleet::start(
        "hil-broker-restarts",
        bins,
        FleetOptions {
            agents: 4,
            hardware_agents: 2,
            ..FleetOptions::default()
        },
    )?;
    for _ in 0..4 {
        sleep_ms(rng, 800, 2_000);
        let down = Duration::from_millis(rng.range(200, 1_500));
        fleet.inject(Fault::BrokerRestart { down })?;
    }
    sleep_ms(rng, 1_000, 2_000);
    Ok(fleet)
}

/// An agent in a crash loop: kill -9 every few hundred milliseconds, a dozen times, beside
/// two healthy agents.
fn agent_crash_loop(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let mut fleet = Fleet::start("hil-crash-loop", bins, FleetOptions::default())?;
    for _ in 0..12 {
        let down = Duration::from_millis(rng.range(0, 300));
        fleet.inject(Fault::AgentKill9 { agent: 0, down })?;
        sleep_ms(rng, 150, 900);
    }
    Ok(fleet)
}

/// The controller killed mid-epoch: aborted right after a batch is committed and before its
/// acks go out, right after an epoch is committed, and by plain kill -9 at random moments.
fn controller_crash_mid_epoch(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let mut fleet = Fleet::start("hil-controller-crash", bins, FleetOptions::default())?;
    for point in ["ingest-committed", "epoch-closed", "ingest-committed"] {
        sleep_ms(rng, 500, 1_500);
        fleet.inject(Fault::ControllerCrashAt(point))?;
    }
    for _ in 0..3 {
        sleep_ms(rng, 300, 1_500);
        let down = Duration::from_millis(rng.range(0, 800));
        fleet.inject(Fault::ControllerKill9 { down })?;
    }
    sleep_ms(rng, 1_000, 2_000);
    Ok(fleet)
}

/// The controller's commit-then-ack crashed into again and again under load: each round
/// picks (seeded) an abort right after a batch is committed and before its acks go out, an
/// abort right after an epoch is committed, or a kill -9 at a random moment, `kills` times.
fn controller_crash_campaign(bins: Bins, rng: &mut Rng, kills: u64) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 4,
        epoch_ms: 500,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-controller-campaign", bins, opts)?;
    for _ in 0..kills {
        match rng.range(0, 3) {
            0 => fleet.inject(Fault::ControllerCrashAt("ingest-committed"))?,
            1 => fleet.inject(Fault::ControllerCrashAt("epoch-closed"))?,
            _ => {
                sleep_ms(rng, 50, 700);
                let down = Duration::from_millis(rng.range(0, 300));
                fleet.inject(Fault::ControllerKill9 { down })?;
            }
        }
    }
    sleep_ms(rng, 500, 1_000);
    Ok(fleet)
}

/// The controller killed mid-anchor on anvil: after signing an anchoring transaction and
/// before sending it, and after sending it before its receipt. No epoch may be anchored
/// twice, none skipped.
fn controller_crash_mid_anchor(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let opts = FleetOptions {
        evm: true,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-anchor-crash", bins, opts)?;
    for point in ["evm-signed", "evm-sent", "evm-signed"] {
        sleep_ms(rng, 500, 1_500);
        fleet.inject(Fault::ControllerCrashAt(point))?;
    }
    sleep_ms(rng, 1_000, 2_000);
    Ok(fleet)
}

/// A third of the fleet partitioned from the broker (their namespaces' links drop
/// everything) for `length`, then healed: the others keep being stored throughout, the
/// partitioned ones store nothing while cut and drain their backlog afterwards.
fn partition(bins: Bins, rng: &mut Rng, length: Duration) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 6,
        netns_agents: 2,
        hardware_agents: 2,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-partition", bins, opts)?;
    sleep_ms(rng, 500, 1_000);
    fleet.inject(Fault::Partition(0))?;
    fleet.inject(Fault::Partition(1))?;
    // Whatever was in flight settles; from then on nothing of theirs arrives.
    std::thread::sleep(Duration::from_secs(2));
    let cut_at = fleet.stored_counts();
    let started = Instant::now();
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_secs(1).min(length));
    }
    let during = fleet.stored_counts();
    for a in 0..2 {
        let dropped = fleet.agents[a].netns.as_ref().map_or(0, |n| n.dropped());
        ensure!(dropped > 0, "agent {a}'s cut link dropped nothing");
        fleet.event(format!("agent {a}'s cut link dropped {dropped} packets"));
    }
    ensure!(
        during[0] == cut_at[0] && during[1] == cut_at[1],
        "partitioned devices kept storing: {cut_at:?} -> {during:?}"
    );
    for i in 2..6 {
        ensure!(
            during[i] > cut_at[i] + 5,
            "agent {i} stalled during the partition: {cut_at:?} -> {during:?}"
        );
    }
    fleet.inject(Fault::Heal(0))?;
    fleet.inject(Fault::Heal(1))?;
    let target = during[0] + 10;
    until(
        "the partitioned devices' backlog to arrive",
        Duration::from_secs(120),
        || stored(&fleet, 0) > target && stored(&fleet, 1) > during[1] + 10,
    )?;
    fleet.event(format!(
        "healed: agent 0 stored {} -> {}, agent 1 {} -> {}",
        during[0],
        stored(&fleet, 0),
        during[1],
        stored(&fleet, 1)
    ));
    Ok(fleet)
}

/// Bad links: one device loses a tenth of its packets each way, another a quarter and is
/// capped at 64 kbit/s (delay and reordering too where the kernel has netem), while the
/// broker restarts once.
fn lossy_links(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 3,
        netns_agents: 2,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-lossy", bins, opts)?;
    fleet.inject(Fault::Impair {
        agent: 0,
        impairment: Impairment {
            loss_pct: 10,
            delay_ms: 120,
            jitter_ms: 60,
            reorder_pct: 25,
            rate_kbit: None,
        },
    })?;
    fleet.inject(Fault::Impair {
        agent: 1,
        impairment: Impairment {
            loss_pct: 25,
            rate_kbit: Some(64),
            ..Impairment::default()
        },
    })?;
    sleep_ms(rng, 3_000, 5_000);
    fleet.inject(Fault::BrokerRestart {
        down: Duration::from_millis(rng.range(200, 800)),
    })?;
    sleep_ms(rng, 3_000, 5_000);
    for a in 0..2 {
        let dropped = fleet.agents[a].netns.as_ref().map_or(0, |n| n.dropped());
        ensure!(dropped > 0, "agent {a}'s link dropped nothing");
        fleet.event(format!("agent {a}'s link dropped {dropped} packets"));
    }
    Ok(fleet)
}

/// A device's disk fills (its data directory is on a 2 MiB tmpfs): it seals nothing while
/// full, its counters keep running, and it resumes by itself when space returns; the
/// energy the controller ends with is still the device's.
fn disk_full(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 2,
        tmpfs_agents: 1,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-disk-full", bins, opts)?;
    sleep_ms(rng, 500, 1_000);
    fleet.inject(Fault::FillDisk(0))?;
    std::thread::sleep(Duration::from_secs(1));
    let full_at = stored(&fleet, 0);
    sleep_ms(rng, 3_000, 4_000);
    let still = stored(&fleet, 0);
    ensure!(
        still <= full_at + 12,
        "the full device kept storing records: {full_at} -> {still}"
    );
    fleet.inject(Fault::FreeDisk(0))?;
    until("the device to resume", Duration::from_secs(30), || {
        stored(&fleet, 0) > still + 10
    })?;
    Ok(fleet)
}

/// A power cut mid-append on one device (a torn entry at its outbox's tail: nothing it had
/// stored may be lost) and media damage on another (fsynced records destroyed: the device
/// must declare them with a `ChainRestart` and go on being stored, not stall on the gap).
fn outbox_damage(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 3,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-outbox-damage", bins, opts)?;
    // Unacknowledged records to damage: the broker away for a while.
    fleet.inject(Fault::BrokerKill)?;
    sleep_ms(rng, 1_500, 2_500);
    fleet.inject(Fault::TornOutboxTail(0))?;
    fleet.inject(Fault::DamageOutbox {
        agent: 1,
        cut: rng.range(60, 200),
    })?;
    fleet.inject(Fault::BrokerStart)?;
    ensure!(
        !fleet.agents[1].destroyed.is_empty(),
        "the damage destroyed no record"
    );
    // Its new chain starts above every number used (a ChainRestart's number is the clock
    // in ms) and goes on being stored.
    let restarted = |f: &Fleet| f.last_stored()[1].filter(|l| *l > 1_000_000_000_000);
    until(
        "the damaged device's ChainRestart to be stored",
        Duration::from_secs(30),
        || restarted(&fleet).is_some(),
    )?;
    let at = restarted(&fleet).unwrap_or(0);
    until(
        "the damaged device's new chain to go on",
        Duration::from_secs(30),
        || restarted(&fleet).is_some_and(|l| l > at + 10),
    )?;
    Ok(fleet)
}

/// A device's clock runs 15 s ahead, beyond the controller's 5 s window: its records are
/// refused as `future_timestamp` (counted) and held by the device until their time comes,
/// so they are stored late, never lost; the other devices are not held up.
fn clock_skew(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let opts = FleetOptions {
        agents: 2,
        max_future_skew_ms: 5_000,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start("hil-clock-skew", bins, opts)?;
    sleep_ms(rng, 300, 800);
    fleet.inject(Fault::ClockSkew {
        agent: 0,
        seconds: 15,
    })?;
    until(
        "future_timestamp rejections",
        Duration::from_secs(20),
        || {
            fleet
                .rejected()
                .get("future_timestamp")
                .copied()
                .unwrap_or(0)
                > 0
        },
    )?;
    let (skewed, other) = (stored(&fleet, 0), stored(&fleet, 1));
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        stored(&fleet, 1) > other + 10,
        "the device with a true clock was held up"
    );
    // 15 s ahead with a 5 s window: each record is accepted about 10 s after it was sealed.
    until(
        "the skewed device's records to be accepted late",
        Duration::from_secs(40),
        || stored(&fleet, 0) > skewed + 10,
    )?;
    Ok(fleet)
}

/// A device that lies, with its own key and with others': a record forged under a stranger's
/// key, a replay of a stored record, and a fork (a second, different record for a stored
/// sequence number, signed with the device's real key). Each is refused and counted by
/// reason; the device's chain stays as it was. Then a device whose own signed records carry
/// an implausible counter jump: stored, and flagged in its proof bundle.
fn lying_device(bins: Bins, rng: &mut Rng) -> Result<Fleet> {
    let mut fleet = Fleet::start(
        "hil-lying",
        bins,
        FleetOptions {
            agents: 2,
            ..FleetOptions::default()
        },
    )?;
    sleep_ms(rng, 500, 1_000);
    let victim = fleet.agents[0].id;
    let key = hil_tests::agent_key(&fleet.agents[0].data);
    let (seq, bytes) = fleet
        .store()?
        .items(victim, SeqNo(2), SeqNo(2))
        .map_err(|e| anyhow!("{e}"))?
        .pop()
        .ok_or_else(|| anyhow!("seq 2 not stored"))?;
    let env = attest::Envelope::decode(&bytes)?;
    let ChainMessage::MeterRecord(mut rec) = ChainMessage::open(&env)? else {
        return Err(anyhow!("seq {} is not a meter record", seq.0));
    };
    rec.channels[0].energy.0 += 3_600_000_000; // a kilowatt-hour that never was
    let stranger = attest::KeyPair::from_seed(&[0x5a; 32]);
    let forged = attest::Envelope::seal(&rec, &stranger);
    let fork = attest::Envelope::seal(&rec, &key);
    let records = topic(&victim, Leaf::Records);
    let dir = fleet.dir.path().join("liar");
    std::fs::create_dir_all(&dir)?;
    for (what, payload) in [
        ("forged", forged.as_bytes()),
        ("replay", &bytes[..]),
        ("fork", fork.as_bytes()),
    ] {
        fleet.event(format!(
            "published a {what} record for seq {} of agent-000",
            seq.0
        ));
        crate::publish(fleet.broker.port, &records, payload, &dir)?;
    }
    until(
        "the forgery and the fork to be refused",
        Duration::from_secs(10),
        || {
            let r = fleet.rejected();
            r.get("bad_signature").copied().unwrap_or(0) >= 1
                && r.get("fork").copied().unwrap_or(0) >= 1
        },
    )?;
    let kept = fleet
        .store()?
        .items(victim, seq, seq)
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(
        kept.len() == 1 && kept[0].1 == bytes,
        "the stored record changed"
    );

    // A device lying with its own key: its counter jumps by a megawatt-hour its power never
    // explains. Signed and chained, so it is stored; flagged, so its statement says so, and
    // the verifier recomputes the flag (it cannot be dropped).
    let mut liar = attest::sample::SampleDevice::new(0x66);
    let liar_id = liar.key.device_id();
    let hello = liar.hello();
    crate::publish(
        fleet.broker.port,
        &topic(&liar_id, Leaf::Hello),
        hello.as_bytes(),
        &dir,
    )?;
    let mut chain = liar.chain(3, 10_000);
    liar.bump_counter(0, 3_600_000_000_000);
    chain.push(liar.record_at(attest::sample::SAMPLE_START.0 + 30_000));
    let batch = attest::batch::encode(chain.iter().map(|e| e.as_bytes()));
    fleet.event("published a device's own records with a 1 MWh counter jump");
    crate::publish(
        fleet.broker.port,
        &topic(&liar_id, Leaf::Records),
        &batch,
        &dir,
    )?;
    until(
        "the liar's records to be stored and placed in an epoch",
        Duration::from_secs(20),
        || {
            fleet.store().is_ok_and(|s| {
                s.count_items(liar_id).unwrap_or(0) == 4 && s.unplaced().is_ok_and(|u| u.is_empty())
            })
        },
    )?;
    let out = dir.join("liar.json");
    let id = liar_id.to_string();
    let made = fleet.controller_cli(&[
        "bundle",
        "--device",
        &id,
        "--json",
        "--out",
        out.to_str().unwrap(),
    ])?;
    ensure!(
        made.status.success(),
        "bundle: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let verified = fleet.verify(&out, true)?;
    let report = String::from_utf8_lossy(&verified.stdout);
    ensure!(
        verified.status.success(),
        "the flagged bundle does not verify: {report}"
    );
    ensure!(
        report.contains("counter_jump") || report.contains("CounterJump"),
        "the liar's verified bundle shows no counter_jump flag: {report}"
    );
    fleet.event("the liar's bundle carries counter_jump and verifies (the flag recomputed)");
    Ok(fleet)
}
