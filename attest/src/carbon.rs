//! Carbon arithmetic as pure functions over integers.
//!
//! Everything here is integer arithmetic with floor rounding so that any verifier, in any
//! language, gets the same numbers to the millijoule and the milligram (the rules are
//! written out in `docs/protocol.md`, section "Carbon arithmetic").
//!
//! - [`channel_deltas`]: energy per channel between two records from their counters.
//! - [`bucket_by_hour`]: counter deltas of a chain segment spread over UTC hours, pro rata.
//! - [`match_hours`]: hourly matching of load against solar and battery, keeping the
//!   battery's renewable share (energy stored from the sun and used later stays renewable).
//! - [`emissions_mg`]: grid energy x intensity.
//! - [`sci`]: Software Carbon Intensity, (E x I + M) per R, with its parts.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::hash::Hash32;
use crate::msg::{ChannelKind, MeterRecord};
use crate::units::{ChannelId, MJ_PER_KWH, MS_PER_HOUR, Millijoules, SeqNo, TimestampMs};

/// Why two records cannot be subtracted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarbonError {
    /// A counter is lower in the later record.
    #[error("channel {channel} counter went backwards at seq {seq}: {before} -> {after}")]
    CounterBackwards {
        channel: ChannelId,
        seq: SeqNo,
        before: Millijoules,
        after: Millijoules,
    },
    /// A channel changed kind between records.
    #[error("channel {channel} changed kind at seq {seq}")]
    KindChanged { channel: ChannelId, seq: SeqNo },
    /// The later record is older than the earlier one.
    #[error("timestamps out of order at seq {seq}")]
    TimeBackwards { seq: SeqNo },
}

/// Energy by source over some span. `load` is everything the device consumed; `gpu` is
/// the part of it the GPU took (reported for jobs, not added again). `unmetered` is not
/// measured: the grid energy assumed, at its worst, for intervals a grid channel did not
/// meter (after an agent restart); it is charged like grid import, never hidden in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyBySource {
    pub solar: Millijoules,
    pub battery_charge: Millijoules,
    pub battery_discharge: Millijoules,
    pub grid_import: Millijoules,
    pub grid_export: Millijoules,
    pub load: Millijoules,
    pub gpu: Millijoules,
    pub unmetered: Millijoules,
}

impl EnergyBySource {
    fn slot(&mut self, kind: ChannelKind) -> &mut Millijoules {
        match kind {
            ChannelKind::Solar => &mut self.solar,
            ChannelKind::BatteryCharge => &mut self.battery_charge,
            ChannelKind::BatteryDischarge => &mut self.battery_discharge,
            ChannelKind::GridImport => &mut self.grid_import,
            ChannelKind::GridExport => &mut self.grid_export,
            ChannelKind::Load => &mut self.load,
            ChannelKind::Gpu => &mut self.gpu,
        }
    }

    /// Adds energy of one kind.
    pub fn add(&mut self, kind: ChannelKind, e: Millijoules) {
        let s = self.slot(kind);
        *s = s.saturating_add(e);
    }

    /// Adds another span's energy, kind by kind.
    pub fn accumulate(&mut self, o: &EnergyBySource) {
        for k in ALL_KINDS {
            self.add(k, o.get(k));
        }
        self.unmetered = self.unmetered.saturating_add(o.unmetered);
    }

    /// Energy of one kind.
    pub fn get(&self, kind: ChannelKind) -> Millijoules {
        let mut c = *self;
        *c.slot(kind)
    }
}

const ALL_KINDS: [ChannelKind; 7] = [
    ChannelKind::Solar,
    ChannelKind::BatteryCharge,
    ChannelKind::BatteryDischarge,
    ChannelKind::GridImport,
    ChannelKind::GridExport,
    ChannelKind::Load,
    ChannelKind::Gpu,
];

/// Energy per channel between two records of one chain (`b` later than `a`). A channel
/// missing from `a` has no baseline and is left out; a counter going down is an error.
pub fn channel_deltas(
    a: &MeterRecord,
    b: &MeterRecord,
) -> Result<Vec<(ChannelId, ChannelKind, Millijoules)>, CarbonError> {
    let mut out = Vec::with_capacity(b.channels.len());
    for cb in &b.channels {
        let Some(ca) = a.channel(cb.channel) else {
            continue;
        };
        if ca.kind != cb.kind {
            return Err(CarbonError::KindChanged {
                channel: cb.channel,
                seq: b.link.seq,
            });
        }
        let d = cb
            .energy
            .0
            .checked_sub(ca.energy.0)
            .ok_or(CarbonError::CounterBackwards {
                channel: cb.channel,
                seq: b.link.seq,
                before: ca.energy,
                after: cb.energy,
            })?;
        out.push((cb.channel, cb.kind, Millijoules(d)));
    }
    Ok(out)
}

/// Energy by source between two records.
pub fn energy_between(a: &MeterRecord, b: &MeterRecord) -> Result<EnergyBySource, CarbonError> {
    let mut e = EnergyBySource::default();
    for (_, kind, d) in channel_deltas(a, b)? {
        e.add(kind, d);
    }
    Ok(e)
}

/// The UTC hour (hours since the Unix epoch) that contains `t`.
pub fn hour_of(t: TimestampMs) -> u64 {
    t.0 / MS_PER_HOUR
}

/// Spreads the counter deltas of consecutive records of one chain segment over UTC hours.
///
/// A delta over the interval `(t0, t1]` goes to each hour it touches in proportion to the
/// milliseconds of the interval inside that hour (floor), and what floor rounding leaves goes
/// to the last hour, so the hours sum exactly to the delta. An interval ending exactly on
/// an hour boundary belongs wholly to the hour before; a delta with `t1 == t0` goes wholly to
/// `t1`'s hour.
/// Returns hours in ascending order.
pub fn bucket_by_hour(records: &[&MeterRecord]) -> Result<Vec<(u64, EnergyBySource)>, CarbonError> {
    let mut hours: BTreeMap<u64, EnergyBySource> = BTreeMap::new();
    for pair in records.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (t0, t1) = (a.link.timestamp.0, b.link.timestamp.0);
        if t1 < t0 {
            return Err(CarbonError::TimeBackwards { seq: b.link.seq });
        }
        for (_, kind, d) in channel_deltas(a, b)? {
            spread_over_hours(t0, t1, d.0, |h, share| {
                hours.entry(h).or_default().add(kind, Millijoules(share));
            });
        }
    }
    Ok(hours.into_iter().collect())
}

/// Spreads `amount` over the UTC hours of the interval `(t0, t1]` (`t0 <= t1`) as
/// [`bucket_by_hour`] does a delta: pro rata of the milliseconds in each hour (floor), the
/// rest to the last hour; an interval ending exactly on an hour belongs to the hour before;
/// `t1 == t0` gives it all to `t1`'s hour.
pub fn spread_over_hours(t0: u64, t1: u64, amount: u64, mut add: impl FnMut(u64, u64)) {
    let (h0, h1) = (t0 / MS_PER_HOUR, t1.saturating_sub(1) / MS_PER_HOUR);
    if t1 <= t0 || h0 >= h1 {
        add(if t1 <= t0 { t1 / MS_PER_HOUR } else { h0 }, amount);
        return;
    }
    let span = (t1 - t0) as u128;
    let mut given = 0u64;
    for h in h0..=h1 {
        let share = if h == h1 {
            amount - given
        } else {
            let lo = t0.max(h * MS_PER_HOUR);
            let hi = t1.min((h + 1) * MS_PER_HOUR);
            (amount as u128 * (hi - lo) as u128 / span) as u64
        };
        given += share;
        add(h, share);
    }
}

/// The battery's content as far as the accounting knows it: how much is stored, and how
/// much of that came from renewable sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryState {
    /// Energy attributed to the battery's content.
    pub stored: Millijoules,
    /// The renewable part of `stored` (never more than `stored`).
    pub renewable: Millijoules,
}

/// One hour's flows and the grid's intensity in that hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourInput {
    /// Hours since the Unix epoch, UTC.
    pub hour: u64,
    /// Energy by source in the hour.
    pub energy: EnergyBySource,
    /// Grid carbon intensity for the hour, milligrams CO2e per kWh.
    pub intensity_mg_per_kwh: u32,
    /// The dataset that figure comes from ([`crate::intensity`]).
    pub dataset: Hash32,
}

/// One hour's accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourLine {
    /// Hours since the Unix epoch, UTC.
    pub hour: u64,
    /// Grid carbon intensity used, mg CO2e per kWh.
    pub intensity_mg_per_kwh: u32,
    /// The dataset that figure comes from, by content hash ([`crate::intensity`]).
    pub dataset: Hash32,
    /// Energy by source in the hour.
    pub energy: EnergyBySource,
    /// Load energy matched to renewable supply in the same hour (solar, or battery energy
    /// that came from the sun).
    pub renewable: Millijoules,
    /// Emissions of the hour's grid import.
    pub co2e_mg: u64,
}

/// Emissions of grid energy at an intensity: `floor(mJ x mg/kWh / 3.6e9)` milligrams.
pub fn emissions_mg(grid: Millijoules, intensity_mg_per_kwh: u32) -> u64 {
    (grid.0 as u128 * intensity_mg_per_kwh as u128 / MJ_PER_KWH as u128) as u64
}

/// `part / whole` in parts per million (floor); 0 when `whole` is 0.
pub fn share_ppm(part: Millijoules, whole: Millijoules) -> u32 {
    if whole.0 == 0 {
        return 0;
    }
    (part.0.min(whole.0) as u128 * 1_000_000 / whole.0 as u128) as u32
}

fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        0
    } else {
        (a as u128 * b as u128 / c as u128) as u64
    }
}

/// Hourly matching.
///
/// In each hour, in this order:
/// 1. Battery discharge takes the battery's current renewable fraction:
///    `known = min(discharge, stored)`, `renewable_out = floor(known x renewable / stored)`;
///    discharge beyond what the accounting knows was stored counts as non-renewable.
/// 2. Renewable supply = solar + renewable_out. It serves the load first:
///    `renewable = min(load, supply)`; what is left charges the battery:
///    `charge_renewable = min(charge, supply - renewable)`.
/// 3. The battery becomes `stored - known + charge`, `renewable - renewable_out + charge_renewable`.
/// 4. Emissions = (grid import + unmetered) x the hour's intensity (location-based, counted
///    when imported; `unmetered` is the worst case of intervals nobody metered).
///
/// Returns the hour lines and the battery state after the last hour.
pub fn match_hours(inputs: &[HourInput], initial: BatteryState) -> (Vec<HourLine>, BatteryState) {
    match_hours_with_resets(inputs, initial, &[], initial)
}

/// [`match_hours`] where the battery's content becomes `reset_to` before each hour listed
/// in `resets` is matched (the hours of chain restarts: what happened to the battery while
/// nothing was metered is unknown, so it is taken at its worst for the claim).
pub fn match_hours_with_resets(
    inputs: &[HourInput],
    initial: BatteryState,
    resets: &[u64],
    reset_to: BatteryState,
) -> (Vec<HourLine>, BatteryState) {
    let capped = |b: BatteryState| BatteryState {
        stored: b.stored,
        renewable: b.renewable.min(b.stored),
    };
    let mut bat = capped(initial);
    let mut lines = Vec::with_capacity(inputs.len());
    for h in inputs {
        if resets.contains(&h.hour) {
            bat = capped(reset_to);
        }
        let e = &h.energy;
        let known = e.battery_discharge.0.min(bat.stored.0);
        let ren_out = mul_div(known, bat.renewable.0, bat.stored.0);
        let supply = e.solar.0.saturating_add(ren_out);
        let renewable = e.load.0.min(supply);
        let charge_ren = e.battery_charge.0.min(supply - renewable);
        bat.stored = Millijoules(bat.stored.0 - known + e.battery_charge.0);
        bat.renewable = Millijoules(bat.renewable.0 - ren_out + charge_ren);
        lines.push(HourLine {
            hour: h.hour,
            intensity_mg_per_kwh: h.intensity_mg_per_kwh,
            dataset: h.dataset,
            energy: *e,
            renewable: Millijoules(renewable),
            co2e_mg: emissions_mg(
                e.grid_import.saturating_add(e.unmetered),
                h.intensity_mg_per_kwh,
            ),
        });
    }
    (lines, bat)
}

/// Totals over hour lines: energy by source, renewable load energy, emissions.
pub fn totals(lines: &[HourLine]) -> (EnergyBySource, Millijoules, u64) {
    let mut e = EnergyBySource::default();
    let mut ren = Millijoules(0);
    let mut co2 = 0u64;
    for l in lines {
        e.accumulate(&l.energy);
        ren = ren.saturating_add(l.renewable);
        co2 = co2.saturating_add(l.co2e_mg);
    }
    (e, ren, co2)
}

/// Software Carbon Intensity (Green Software Foundation SCI v1.1, ISO/IEC 21031:2024):
/// `SCI = (E x I + M) / R`, with its parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sci {
    /// E: energy.
    pub energy: Millijoules,
    /// I: intensity applied to E (for a job: its effective intensity, emissions over energy).
    pub intensity_mg_per_kwh: u32,
    /// O = E x I.
    pub operational_mg: u64,
    /// M: the embodied emissions share.
    pub embodied_mg: u64,
    /// R: functional units.
    pub functional_units: u64,
    /// (O + M) / R, floor.
    pub per_unit_mg: u64,
}

/// SCI from energy, intensity, embodied share and functional units (R = 0 is taken as 1).
pub fn sci(
    energy: Millijoules,
    intensity_mg_per_kwh: u32,
    embodied_mg: u64,
    functional_units: u64,
) -> Sci {
    let operational_mg = emissions_mg(energy, intensity_mg_per_kwh);
    sci_from_operational(
        energy,
        intensity_mg_per_kwh,
        operational_mg,
        embodied_mg,
        functional_units,
    )
}

/// SCI where O is already known (for a job: its share of the period's emissions).
pub fn sci_from_operational(
    energy: Millijoules,
    intensity_mg_per_kwh: u32,
    operational_mg: u64,
    embodied_mg: u64,
    functional_units: u64,
) -> Sci {
    let r = functional_units.max(1);
    Sci {
        energy,
        intensity_mg_per_kwh,
        operational_mg,
        embodied_mg,
        functional_units: r,
        per_unit_mg: operational_mg.saturating_add(embodied_mg) / r,
    }
}

/// SCI's embodied share: `M = TE x (TiR / EL) x (RR / ToR)`, floor.
/// `TE` total embodied emissions (mg), `TiR` time reserved and `EL` expected life (same
/// unit), `RR` resources reserved of `ToR` total resources.
pub fn embodied_share_mg(
    total_mg: u64,
    time_reserved: u64,
    expected_life: u64,
    reserved: u64,
    total: u64,
) -> u64 {
    if expected_life == 0 || total == 0 {
        return 0;
    }
    (total_mg as u128 * time_reserved as u128 * reserved as u128
        / (expected_life as u128 * total as u128)) as u64
}

/// The effective intensity of energy that caused `co2e_mg`: `floor(mg x 3.6e9 / mJ)`.
pub fn effective_intensity(co2e_mg: u64, energy: Millijoules) -> u32 {
    if energy.0 == 0 {
        return 0;
    }
    (co2e_mg as u128 * MJ_PER_KWH as u128 / energy.0 as u128).min(u32::MAX as u128) as u32
}

/// Scales `value` by `part / whole` (floor); 0 when `whole` is 0.
pub fn pro_rata(value: u64, part: Millijoules, whole: Millijoules) -> u64 {
    mul_div(value, part.0.min(whole.0), whole.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::DeviceId;
    use crate::msg::{ChannelReading, Link};
    use crate::units::{Milliwatts, SeqNo};
    use alloc::vec;

    fn rec(seq: u64, t: u64, counters: &[(u8, ChannelKind, u64)]) -> MeterRecord {
        MeterRecord {
            link: Link {
                device: DeviceId([1; 16]),
                seq: SeqNo(seq),
                timestamp: TimestampMs(t),
                prev: Hash32::ZERO,
            },
            channels: counters
                .iter()
                .map(|&(c, kind, e)| ChannelReading {
                    channel: ChannelId(c),
                    kind,
                    energy: Millijoules(e),
                    power: Milliwatts(0),
                    voltage_mv: None,
                    soc_permille: None,
                })
                .collect(),
            unmetered: vec![],
        }
    }

    #[test]
    fn energy_between_two_records_is_the_counter_difference() {
        let a = rec(
            1,
            0,
            &[(0, ChannelKind::Solar, 100), (1, ChannelKind::Load, 50)],
        );
        let b = rec(
            2,
            10_000,
            &[
                (0, ChannelKind::Solar, 350),
                (1, ChannelKind::Load, 80),
                (2, ChannelKind::Gpu, 9),
            ],
        );
        let e = energy_between(&a, &b).unwrap();
        assert_eq!(e.solar, Millijoules(250));
        assert_eq!(e.load, Millijoules(30));
        assert_eq!(
            e.gpu,
            Millijoules(0),
            "a channel without a baseline is left out"
        );
        let back = rec(3, 20_000, &[(0, ChannelKind::Solar, 349)]);
        assert!(matches!(
            energy_between(&b, &back),
            Err(CarbonError::CounterBackwards { .. })
        ));
    }

    #[test]
    fn an_interval_across_an_hour_boundary_is_split_pro_rata_and_sums_exactly() {
        let h = MS_PER_HOUR;
        let a = rec(1, h - 1_000, &[(0, ChannelKind::Load, 0)]);
        let b = rec(2, h + 2_000, &[(0, ChannelKind::Load, 1_000)]);
        let buckets = bucket_by_hour(&[&a, &b]).unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(
            buckets[0],
            (
                0,
                EnergyBySource {
                    load: Millijoules(333),
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            buckets[1],
            (
                1,
                EnergyBySource {
                    load: Millijoules(667),
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn solar_stored_in_the_battery_stays_renewable_when_used_at_night() {
        let day = HourInput {
            hour: 10,
            dataset: Hash32::ZERO,
            energy: EnergyBySource {
                solar: Millijoules(1_000),
                load: Millijoules(400),
                battery_charge: Millijoules(600),
                ..Default::default()
            },
            intensity_mg_per_kwh: 400_000,
        };
        let night = HourInput {
            hour: 22,
            dataset: Hash32::ZERO,
            energy: EnergyBySource {
                battery_discharge: Millijoules(300),
                grid_import: Millijoules(100),
                load: Millijoules(400),
                ..Default::default()
            },
            intensity_mg_per_kwh: 400_000,
        };
        let (lines, bat) = match_hours(&[day, night], BatteryState::default());
        assert_eq!(lines[0].renewable, Millijoules(400));
        assert_eq!(
            lines[1].renewable,
            Millijoules(300),
            "battery energy from the sun is renewable"
        );
        assert_eq!(
            bat,
            BatteryState {
                stored: Millijoules(300),
                renewable: Millijoules(300)
            }
        );
        assert_eq!(lines[1].co2e_mg, emissions_mg(Millijoules(100), 400_000));
    }

    #[test]
    fn grid_charged_battery_energy_is_not_renewable() {
        let charge = HourInput {
            hour: 1,
            dataset: Hash32::ZERO,
            energy: EnergyBySource {
                grid_import: Millijoules(1_000),
                battery_charge: Millijoules(1_000),
                ..Default::default()
            },
            intensity_mg_per_kwh: 300_000,
        };
        let use_it = HourInput {
            hour: 2,
            dataset: Hash32::ZERO,
            energy: EnergyBySource {
                battery_discharge: Millijoules(500),
                load: Millijoules(500),
                ..Default::default()
            },
            intensity_mg_per_kwh: 300_000,
        };
        let (lines, bat) = match_hours(&[charge, use_it], BatteryState::default());
        assert_eq!(lines[1].renewable, Millijoules(0));
        assert_eq!(bat.stored, Millijoules(500));
        assert_eq!(bat.renewable, Millijoules(0));
        // Discharge beyond what the accounting knows was stored counts as non-renewable.
        let (lines, _) = match_hours(
            &[use_it],
            BatteryState {
                stored: Millijoules(100),
                renewable: Millijoules(100),
            },
        );
        assert_eq!(lines[0].renewable, Millijoules(100));
    }

    #[test]
    fn emissions_are_grid_energy_times_intensity() {
        // 1 kWh at 400 g/kWh = 400 g.
        assert_eq!(emissions_mg(Millijoules(MJ_PER_KWH), 400_000), 400_000);
        assert_eq!(emissions_mg(Millijoules(MJ_PER_KWH / 2), 123_456), 61_728);
        assert_eq!(share_ppm(Millijoules(1), Millijoules(3)), 333_333);
        assert_eq!(share_ppm(Millijoules(1), Millijoules(0)), 0);
    }

    #[test]
    fn sci_is_operational_plus_embodied_per_unit() {
        let s = sci(Millijoules(MJ_PER_KWH), 500_000, 100_000, 4);
        assert_eq!(s.operational_mg, 500_000);
        assert_eq!(s.per_unit_mg, 150_000);
        // A GPU with 100 kg embodied, 4-year life, used for 1 hour, whole device reserved.
        let m = embodied_share_mg(100_000_000, 3_600, 4 * 365 * 24 * 3_600, 1, 1);
        assert_eq!(m, 2_853);
        assert_eq!(vec![s.functional_units], vec![4]);
    }
}
