//! Builds carbon statements from a device's chain messages.
//!
//! The controller uses [`compute_statement`] to make a statement and the verifier uses the
//! very same function to recompute it from the signed records in a bundle, so the two can
//! only disagree when the data or the claim was altered.

use alloc::string::String;
use alloc::vec::Vec;

use crate::carbon::{
    self, BatteryState, CarbonError, HourInput, bucket_by_hour, effective_intensity, match_hours,
    pro_rata, share_ppm, totals,
};
use crate::msg::{
    ChainMessage, ChannelKind, Flag, Hello, JobAccount, JobId, JobReceipt, MeterRecord, Statement,
    Subject, TrustTier,
};
use crate::units::Millijoules;

/// Why a statement cannot be computed from the chain messages given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The arithmetic refused the records.
    #[error(transparent)]
    Carbon(#[from] CarbonError),
    /// No meter records for the device.
    #[error("no meter records for the subject device")]
    NoRecords,
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
}

/// What a statement is computed from.
pub struct StatementInput<'a> {
    /// The subject.
    pub subject: Subject,
    /// The device's hello (channel tiers).
    pub hello: &'a Hello,
    /// The device's chain messages in sequence order (already verified).
    pub chain: &'a [ChainMessage],
    /// Grid intensity (mg CO2e/kWh) for an hour index.
    pub intensity: &'a dyn Fn(u64) -> u32,
    /// Where the intensities come from.
    pub intensity_source: String,
    /// The battery's content assumed at the start.
    pub battery_initial: BatteryState,
    /// Plausibility flags raised by the controller.
    pub flags: Vec<Flag>,
    /// For a job: the embodied emissions share (mg) and functional units of its SCI.
    pub embodied_mg: u64,
    /// For a job: functional units R of its SCI (0 is taken as 1).
    pub functional_units: u64,
}

/// Computes a statement; see `docs/protocol.md`, "Carbon arithmetic", for every rule.
pub fn compute_statement(input: &StatementInput<'_>) -> Result<Statement, AccountError> {
    let device = input.subject.device();
    // Split the records into segments at chain restarts: no energy is counted across one.
    let mut segments: Vec<Vec<&MeterRecord>> = alloc::vec![Vec::new()];
    for m in input.chain {
        if m.link().device != device {
            continue;
        }
        match m {
            ChainMessage::MeterRecord(r) => segments.last_mut().expect("one segment").push(r),
            ChainMessage::ChainRestart(_) => segments.push(Vec::new()),
            ChainMessage::JobReceipt(_) => {}
        }
    }
    let records: Vec<&MeterRecord> = segments.iter().flatten().copied().collect();
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(AccountError::NoRecords);
    };
    let mut hourly: alloc::collections::BTreeMap<u64, carbon::EnergyBySource> = Default::default();
    for seg in &segments {
        for (hour, e) in bucket_by_hour(seg)? {
            hourly.entry(hour).or_default().accumulate(&e);
        }
    }
    let inputs: Vec<HourInput> = hourly
        .into_iter()
        .map(|(hour, energy)| HourInput {
            hour,
            energy,
            intensity_mg_per_kwh: (input.intensity)(hour),
        })
        .collect();
    let (hours, battery_final) = match_hours(&inputs, input.battery_initial);
    let (energy, renewable, co2e_mg) = totals(&hours);

    let mut tier = TrustTier::AttestedAgent;
    for r in &records {
        for c in &r.channels {
            tier = tier.min(
                input
                    .hello
                    .channel_tier(c.channel)
                    .unwrap_or(TrustTier::SoftwareEstimate),
            );
        }
    }
    if !input.flags.is_empty() {
        tier = tier.lowered();
    }

    let (job, sci) = match input.subject {
        Subject::DevicePeriod { .. } => (None, None),
        Subject::Job { job, .. } => {
            let receipt = input
                .chain
                .iter()
                .find_map(|m| match m {
                    ChainMessage::JobReceipt(r) if r.job == job && r.link.device == device => {
                        Some(r)
                    }
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
            let account = job_account(receipt, energy.load, renewable, co2e_mg, &hours)?;
            let sci = carbon::sci_from_operational(
                account.energy,
                effective_intensity(account.co2e_mg, account.energy),
                account.co2e_mg,
                input.embodied_mg,
                input.functional_units,
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
        intensity_source: input.intensity_source.clone(),
        battery_initial: input.battery_initial,
        battery_final,
        hours,
        tier,
        flags: input.flags.clone(),
        job,
        sci,
    })
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
