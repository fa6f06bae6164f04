//! Builds carbon statements from a device's chain messages.
//!
//! The controller uses [`compute_statement`] to make a statement and the verifier uses the
//! very same function to recompute it from the signed records in a bundle, so the two can
//! only disagree when the data or the claim was altered. Every input is signed, named or
//! derived: the records and the hello are signed by the device; each hour's intensity names
//! its dataset ([`crate::intensity`]); the battery's content at the start is derived from the
//! records before the period; the plausibility flags are recomputed
//! ([`crate::plausibility`]); a job's counters are tied to the records around it and its
//! embodied share comes from the hello.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::carbon::{
    self, BatteryState, CarbonError, EnergyBySource, HourInput, bucket_by_hour,
    effective_intensity, hour_of, match_hours_with_resets, pro_rata, share_ppm, spread_over_hours,
    totals,
};
use crate::hash::Hash32;
use crate::intensity::Figure;
use crate::msg::{
    ChainMessage, ChannelKind, CounterSnapshot, Hello, JobAccount, JobId, JobReceipt, MeterRecord,
    Statement, Subject, TrustTier, hello_at,
};
use crate::units::{MS_PER_HOUR, Millijoules, TimestampMs};

/// Why a statement cannot be computed from the chain messages given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The arithmetic refused the records.
    #[error(transparent)]
    Carbon(#[from] CarbonError),
    /// No meter records for the device in the period.
    #[error("no meter records for the subject device in the period")]
    NoRecords,
    /// No hello for the device.
    #[error("no hello for the subject device")]
    NoHello,
    /// A job statement without that job's receipt.
    #[error("no receipt for job {0}")]
    NoReceipt(JobId),
    /// The receipt has no load or GPU counters at both ends.
    #[error("receipt for job {0} has no load or GPU counters")]
    ReceiptWithoutCounters(JobId),
    /// The records do not cover the job's run.
    #[error("records span {from}..{to} ms but job ran {started}..{ended} ms")]
    JobOutsideRecords {
        from: u64,
        to: u64,
        started: u64,
        ended: u64,
    },
    /// A receipt counter differs from the record sealed at that end of the job.
    #[error(
        "job {job}: {end} counter of channel {channel} is {stated} mJ in the receipt, {recorded:?} mJ in the record at or before {at} ms"
    )]
    ReceiptCounterMismatch {
        job: JobId,
        end: &'static str,
        channel: u8,
        stated: u64,
        recorded: Option<u64>,
        at: u64,
    },
}

/// What a statement is computed from.
pub struct StatementInput<'a> {
    /// The subject.
    pub subject: Subject,
    /// The device's hellos (channel tiers, site, embodied emissions), every version in
    /// ascending `timestamp`; each record is judged by the one valid at its time
    /// ([`hello_at`]). At least one.
    pub hellos: &'a [Hello],
    /// The device's chain messages in sequence order (already verified), from the start of
    /// its chain (genesis or a restart) to the end of the period: the messages before the
    /// period give the battery's content at its start.
    pub chain: &'a [ChainMessage],
    /// The period starts at the first meter record at or after this time.
    pub from: TimestampMs,
    /// Grid intensity for an hour index, with the dataset it comes from.
    pub intensity: &'a dyn Fn(u64) -> Figure,
}

/// Computes a statement; see `docs/protocol.md`, "Carbon arithmetic", for every rule.
pub fn compute_statement(input: &StatementInput<'_>) -> Result<Statement, AccountError> {
    let device = input.subject.device();
    let msgs: Vec<&ChainMessage> = input
        .chain
        .iter()
        .filter(|m| m.link().device == device)
        .collect();
    // The period starts at its first record; the messages before it, with that record as
    // their shared end (so no interval is lost or counted twice), only carry the battery.
    let start = msgs
        .iter()
        .position(|m| {
            m.as_record()
                .is_some_and(|r| r.link.timestamp >= input.from)
        })
        .ok_or(AccountError::NoRecords)?;
    let (prior, period) = (&msgs[..=start], &msgs[start..]);
    let hello = |t: TimestampMs| hello_at(input.hellos, t).ok_or(AccountError::NoHello);
    // The worst case where the battery's content is unknown, per the hello valid at the
    // chain's start (the same capacity is used at every restart after it: the pool is one).
    let unknown = unknown_battery(hello(msgs[0].link().timestamp)?);
    let battery_initial = if start == 0 {
        unknown
    } else {
        let inputs: Vec<HourInput> = hourly_energy(prior, input.hellos)?
            .into_iter()
            .map(|(hour, energy)| HourInput {
                hour,
                energy,
                intensity_mg_per_kwh: 0,
                dataset: Hash32::ZERO,
            })
            .collect();
        match_hours_with_resets(&inputs, unknown, &restart_hours(prior), unknown).1
    };

    let records: Vec<&MeterRecord> = period.iter().filter_map(|m| m.as_record()).collect();
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(AccountError::NoRecords);
    };
    let inputs: Vec<HourInput> = hourly_energy(period, input.hellos)?
        .into_iter()
        .map(|(hour, energy)| {
            let f = (input.intensity)(hour);
            HourInput {
                hour,
                energy,
                intensity_mg_per_kwh: f.mg_per_kwh,
                dataset: f.dataset,
            }
        })
        .collect();
    let (hours, battery_final) =
        match_hours_with_resets(&inputs, battery_initial, &restart_hours(period), unknown);
    let (energy, renewable, co2e_mg) = totals(&hours);

    let first_hello = hello(first.link.timestamp)?;
    let flags = crate::plausibility::check_chain(
        |t| &hello_at(input.hellos, t).unwrap_or(first_hello).site,
        period.iter().copied(),
    );
    let mut tier = TrustTier::AttestedAgent;
    for r in &records {
        let h = hello(r.link.timestamp)?;
        for c in &r.channels {
            tier = tier.min(
                h.channel_tier(c.channel)
                    .unwrap_or(TrustTier::SoftwareEstimate),
            );
        }
    }
    if !flags.is_empty() {
        tier = tier.lowered();
    }

    let (job, sci) = match input.subject {
        Subject::DevicePeriod { .. } => (None, None),
        Subject::Job { job, .. } => {
            let receipt = period
                .iter()
                .find_map(|m| match m {
                    ChainMessage::JobReceipt(r) if r.job == job => Some(r),
                    _ => None,
                })
                .ok_or(AccountError::NoReceipt(job))?;
            let (from, to) = (first.link.timestamp.0, last.link.timestamp.0);
            if receipt.started.0 < from || receipt.ended.0 > to {
                return Err(AccountError::JobOutsideRecords {
                    from,
                    to,
                    started: receipt.started.0,
                    ended: receipt.ended.0,
                });
            }
            check_receipt_counters(receipt, &records)?;
            let account = job_account(receipt, energy.load, renewable, co2e_mg, &hours)?;
            let sci = carbon::sci_from_operational(
                account.energy,
                effective_intensity(account.co2e_mg, account.energy),
                account.co2e_mg,
                embodied_mg(hello(receipt.started)?, receipt),
                1,
            );
            (Some(account), Some(sci))
        }
    };

    Ok(Statement {
        subject: input.subject,
        from: first.link.timestamp,
        to: last.link.timestamp,
        energy,
        renewable,
        renewable_share_ppm: share_ppm(renewable, energy.load),
        co2e_mg,
        battery_initial,
        battery_final,
        hours,
        tier,
        flags,
        job,
        sci,
    })
}

/// The battery's content where the accounting cannot know it (at the chain's start and at
/// every restart): full, per the device's signed hello, and none of it renewable. The worst
/// case for a claim: it dilutes the renewable share of everything charged later, and
/// emissions (grid import only) do not depend on it.
fn unknown_battery(hello: &Hello) -> BatteryState {
    BatteryState {
        stored: Millijoules(u64::from(hello.site.battery_wh) * 3_600_000),
        renewable: Millijoules(0),
    }
}

/// The hours in which the chain restarted (the battery's content is reset before them).
fn restart_hours(msgs: &[&ChainMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            ChainMessage::ChainRestart(r) => Some(hour_of(r.link.timestamp)),
            _ => None,
        })
        .collect()
}

/// Counter deltas of chain messages spread over UTC hours; no energy is counted across a
/// chain restart (each run of records between restarts is bucketed on its own).
///
/// A record whose grid-import channel missed part of its interval (`unmetered`) adds the
/// worst case for that time to `unmetered`: the hello's `max_draw_w` for the longest such
/// time, spread over the record's interval like a counter delta.
fn hourly_energy(
    msgs: &[&ChainMessage],
    hellos: &[Hello],
) -> Result<BTreeMap<u64, EnergyBySource>, CarbonError> {
    let mut segments: Vec<Vec<&MeterRecord>> = alloc::vec![Vec::new()];
    for m in msgs {
        match m {
            ChainMessage::MeterRecord(r) => segments.last_mut().expect("one segment").push(r),
            ChainMessage::ChainRestart(_) => segments.push(Vec::new()),
            ChainMessage::JobReceipt(_) => {}
        }
    }
    let mut hourly: BTreeMap<u64, EnergyBySource> = BTreeMap::new();
    for seg in &segments {
        for (hour, e) in bucket_by_hour(seg)? {
            hourly.entry(hour).or_default().accumulate(&e);
        }
        for pair in seg.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let grid_ms = b
                .unmetered
                .iter()
                .filter(|u| {
                    b.channel(u.channel)
                        .is_some_and(|c| c.kind == ChannelKind::GridImport)
                })
                .map(|u| u64::from(u.ms))
                .max()
                .unwrap_or(0);
            let draw_w = hello_at(hellos, b.link.timestamp).map_or(0, |h| h.hardware.max_draw_w);
            let worst = u64::from(draw_w).saturating_mul(grid_ms);
            if worst > 0 {
                spread_over_hours(a.link.timestamp.0, b.link.timestamp.0, worst, |h, share| {
                    let e = hourly.entry(h).or_default();
                    e.unmetered = e.unmetered.saturating_add(Millijoules(share));
                });
            }
        }
    }
    Ok(hourly)
}

/// The record a receipt's counters at time `t` were taken from: the agent seals a record
/// when a job starts and when it ends and snapshots that record's counters, so it is the
/// last record (highest sequence) with a timestamp at or before `t`.
fn record_at<'r>(records: &[&'r MeterRecord], t: TimestampMs) -> Option<&'r MeterRecord> {
    records
        .iter()
        .rev()
        .find(|r| r.link.timestamp <= t)
        .copied()
}

/// Every counter in the receipt equals the counter of the same channel (and kind) in the
/// record sealed at that end of the job.
fn check_receipt_counters(
    receipt: &JobReceipt,
    records: &[&MeterRecord],
) -> Result<(), AccountError> {
    let ends: [(&'static str, TimestampMs, &[CounterSnapshot]); 2] = [
        ("start", receipt.started, &receipt.start_counters),
        ("end", receipt.ended, &receipt.end_counters),
    ];
    for (end, at, counters) in ends {
        let rec = record_at(records, at);
        for c in counters {
            let recorded = rec
                .and_then(|r| r.channel(c.channel))
                .filter(|r| r.kind == c.kind)
                .map(|r| r.energy.0);
            if recorded != Some(c.energy.0) {
                return Err(AccountError::ReceiptCounterMismatch {
                    job: receipt.job,
                    end,
                    channel: c.channel.0,
                    stated: c.energy.0,
                    recorded,
                    at: at.0,
                });
            }
        }
    }
    Ok(())
}

/// A job's embodied share `M = TE x TiR / EL` (SCI; `RR / ToR` = 1: a job has the whole
/// device): `TE` and `EL` from the device's signed hello, `TiR` the job's run from its
/// receipt. Floor, mg; 0 when the hello states no embodied emissions or no life.
fn embodied_mg(hello: &Hello, receipt: &JobReceipt) -> u64 {
    carbon::embodied_share_mg(
        hello.hardware.embodied_g_co2e.saturating_mul(1_000),
        receipt.ended.0 - receipt.started.0,
        u64::from(hello.hardware.expected_life_hours) * MS_PER_HOUR,
        1,
        1,
    )
}

/// A job's share: its energy from the receipt's counters (GPU channel if present, else
/// load); renewable and emissions pro rata of the period's load. With no load in the period,
/// the job's energy counts as grid energy at the period's first hour's intensity.
fn job_account(
    receipt: &JobReceipt,
    load: Millijoules,
    renewable: Millijoules,
    co2e_mg: u64,
    hours: &[carbon::HourLine],
) -> Result<JobAccount, AccountError> {
    let energy = receipt
        .energy(ChannelKind::Gpu)
        .or_else(|| receipt.energy(ChannelKind::Load))
        .ok_or(AccountError::ReceiptWithoutCounters(receipt.job))?;
    if load.0 == 0 {
        let intensity = hours.first().map_or(0, |h| h.intensity_mg_per_kwh);
        return Ok(JobAccount {
            energy,
            renewable: Millijoules(0),
            co2e_mg: carbon::emissions_mg(energy, intensity),
        });
    }
    Ok(JobAccount {
        energy,
        renewable: Millijoules(pro_rata(renewable.0, energy, load).min(energy.0)),
        co2e_mg: pro_rata(co2e_mg, energy, load),
    })
}
