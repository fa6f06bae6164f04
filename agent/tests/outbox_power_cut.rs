//! The outbox under storage faults (docs/hil.md, "Storage faults"): the power cut after every
//! disk operation of a long workload (dropping what was not fsynced, keeping everything,
//! and keeping random prefixes of the unsynced writes with the last one torn), full disks,
//! a segment truncated at every byte offset and random bit flips. Nothing stored may be
//! lost, invented or altered, no acknowledgement invented, and the outbox must take the
//! next record after every recovery.

use heliostat_agent::config::FsyncPolicy;
use heliostat_agent::outbox::campaign::{CampaignOptions, campaign};

#[test]
fn power_cuts_at_every_disk_operation_truncations_and_bit_flips_lose_nothing() {
    let started = std::time::Instant::now();
    let r = campaign(CampaignOptions {
        seed: 7,
        ..CampaignOptions::default()
    });
    eprintln!("{}took {:.1} s", r.text(), started.elapsed().as_secs_f64());
    assert!(r.clean(), "{}\n{}", r.text(), r.problems.join("\n"));
    assert!(
        r.power_cuts >= 10_000,
        "only {} power cuts tried",
        r.power_cuts
    );
    assert!(r.crash_points >= 2_500, "{}", r.crash_points);
    assert!(
        r.refused_enospc > 10 && r.restarts > 3 && r.acks > 100,
        "{}",
        r.text()
    );
    assert!(
        r.truncations > 4_000 && r.bit_flips == 2_000 && r.quarantined >= 2_000,
        "{}",
        r.text()
    );
}

/// The checks can fail: the same workload without fsync (the records' bytes only in the
/// page cache when the append returns) loses records at power cuts, and the campaign says so.
#[test]
fn without_fsync_the_campaign_finds_stored_records_lost_at_a_power_cut() {
    let r = campaign(CampaignOptions {
        seed: 7,
        appends: 200,
        flips: 0,
        fsync: FsyncPolicy::Never,
        ..CampaignOptions::default()
    });
    assert!(!r.clean());
    assert!(r.lost > 0, "{}", r.text());
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("DropUnsynced") && p.contains("lost")),
        "{:?}",
        r.problems
    );
}
