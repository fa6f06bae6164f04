//! Statements and accounting over stored records: the statement builder every view uses
//! ([`device_statement`]: bundles, the API's device hours, fleet hours), the period that
//! counts ([`counted_period`]), device-hour and fleet-hour accounting for the API.
//!
//! A device's hours are its statement's hour lines ([`device_statement`]:
//! `attest`'s arithmetic with its region's intensities). A fleet hour is the approved
//! devices' lines of that hour added up with `attest::carbon::totals`, the same sum a
//! statement's totals use, so the fleet view is the device views added, to the milligram.
//! [`FleetHours`] is the sum (plain values in and out); [`fleet_hours`] reads the store.

use std::collections::{BTreeMap, BTreeSet};

use attest::account::{AccountError, StatementInput, compute_statement};
use attest::carbon::{self, EnergyBySource, HourLine};
use attest::intensity::Dataset;
use attest::msg::{ChainMessage, Hello, Statement, Subject, hello_at};
use attest::units::Millijoules;
use attest::{DeviceId, Envelope, TimestampMs};
use serde::Serialize;

use crate::intensity::IntensityResolver;
use crate::store::{DeviceRow, DeviceState, PlacedItem, Store, StoreError};

/// The longest period the fleet view sums over: 31 days (a statement's hour limit too).
pub const MAX_FLEET_PERIOD_MS: u64 = 31 * 24 * 3_600_000;

/// Why a device's hours could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HoursError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored hello does not decode.
    #[error("stored hello does not decode")]
    BadHello,
    /// The arithmetic refused the records (or there are none in the period).
    #[error(transparent)]
    Account(#[from] attest::account::AccountError),
}

/// Where a statement's period starts and ends among a device's items from its chain's
/// start (ascending): at the first counted item at or after `from_ms`, and before the first
/// uncounted one after that (a device revoked again). Items before the start stay in the
/// evidence, uncounted or not (they only give the battery's content); items after the end
/// are cut. `None` when no item from `from_ms` on counts.
pub fn counted_period(items: &[PlacedItem], from_ms: u64) -> Option<(TimestampMs, usize)> {
    let start = items
        .iter()
        .position(|i| i.timestamp_ms >= from_ms && i.counted)?;
    let end = items[start..]
        .iter()
        .position(|i| !i.counted)
        .map_or(items.len(), |n| start + n);
    Some((TimestampMs(items[start].timestamp_ms), end))
}

/// A device's statement, with what goes beside it.
#[derive(Debug, Clone)]
pub struct DeviceStatement {
    /// The statement (unsigned).
    pub statement: Statement,
    /// A label of the intensity sources used, for people (not part of the statement: each
    /// hour line names its dataset by digest).
    pub intensity_source: String,
    /// The carried datasets its hours name (a bundle must hold them).
    pub datasets: Vec<Dataset>,
}

/// The statement for a device over its chain messages, the period starting at the first
/// record at or after `from` (earlier messages give the battery's content at the start):
/// `attest`'s arithmetic with, hour by hour, the intensity of the device's region in the
/// hello valid at the hour's start (`hellos`: every version, oldest first). Shared by
/// bundles, the API's hour views and fleet accounting.
pub fn device_statement(
    hellos: &[Hello],
    chain: &[ChainMessage],
    from: TimestampMs,
    intensity: &IntensityResolver,
) -> Result<DeviceStatement, AccountError> {
    let first = hellos.first().ok_or(AccountError::NoHello)?;
    let subject = Subject::DevicePeriod {
        device: first.device,
    };
    statement_for(subject, hellos, chain, from, intensity)
}

/// [`device_statement`] for any subject: a device's period, or one job on it (the receipt
/// must be in `chain`, inside its records).
pub fn statement_for(
    subject: Subject,
    hellos: &[Hello],
    chain: &[ChainMessage],
    from: TimestampMs,
    intensity: &IntensityResolver,
) -> Result<DeviceStatement, AccountError> {
    let first = hellos.first().ok_or(AccountError::NoHello)?;
    let region_at = |hour: u64| {
        let t = TimestampMs(hour.saturating_mul(attest::units::MS_PER_HOUR));
        &hello_at(hellos, t).unwrap_or(first).site.grid_region
    };
    let statement = compute_statement(&StatementInput {
        subject,
        hellos,
        chain,
        from,
        intensity: &|hour| intensity.at(region_at(hour), hour).figure(),
    })?;
    // Label and datasets region by region, in the order the hours used them.
    let mut by_region: Vec<(&String, Vec<u64>)> = Vec::new();
    for h in statement.hours.iter().map(|h| h.hour) {
        let r = region_at(h);
        match by_region.iter_mut().find(|(x, _)| *x == r) {
            Some((_, hours)) => hours.push(h),
            None => by_region.push((r, vec![h])),
        }
    }
    let mut datasets: Vec<Dataset> = Vec::new();
    let mut labels = Vec::new();
    for (region, hours) in &by_region {
        let ri = intensity.for_region(region);
        for d in ri.datasets(hours.iter().copied()) {
            if !datasets.contains(&d) {
                datasets.push(d);
            }
        }
        labels.push(ri.describe(hours.iter().copied()));
    }
    Ok(DeviceStatement {
        intensity_source: labels.join("; then "),
        datasets,
        statement,
    })
}

/// Every version of a stored device's hello, decoded, oldest first.
pub fn stored_hellos<S: Store>(store: &S, device: DeviceId) -> Result<Vec<Hello>, StoreError> {
    store
        .hellos(device)?
        .iter()
        .map(|b| {
            Envelope::decode(b)
                .and_then(|e| e.open())
                .map_err(|e| StoreError::Corrupt(format!("stored hello: {e}")))
        })
        .collect()
}

/// A device's statement over its stored messages (anchored or not) with timestamps in
/// `from_ms..=to_ms` that count (stored while it was approved: the period is
/// [`counted_period`]), the battery's content at the start derived from the
/// messages before (from the chain's start, as a bundle does). Messages that do not decode
/// are left out.
pub fn device_hours<S: Store>(
    store: &S,
    dev: &DeviceRow,
    intensity: &IntensityResolver,
    from_ms: u64,
    to_ms: u64,
) -> Result<DeviceStatement, HoursError> {
    let hellos = stored_hellos(store, dev.id).map_err(|_| HoursError::BadHello)?;
    let mut items = store.items_between(dev.id, 0, to_ms)?;
    let Some((from, end)) = counted_period(&items, from_ms) else {
        return Err(HoursError::Account(
            attest::account::AccountError::NoRecords,
        ));
    };
    items.truncate(end);
    let chain: Vec<ChainMessage> = items
        .iter()
        .filter_map(|i| {
            Envelope::decode(&i.envelope)
                .ok()
                .and_then(|e| ChainMessage::open(&e).ok())
        })
        .collect();
    Ok(device_statement(&hellos, &chain, from, intensity)?)
}

/// One fleet hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetHour {
    /// Hours since the Unix epoch, UTC.
    pub hour: u64,
    /// Devices with energy accounted in the hour.
    pub devices: u32,
    /// Energy by source, summed.
    pub energy: EnergyBySource,
    /// Load energy matched to renewable supply in the same hour, summed.
    pub renewable: Millijoules,
    /// `renewable / load`, parts per million.
    pub renewable_share_ppm: u32,
    /// Emissions of the grid import, summed.
    pub co2e_mg: u64,
    /// The grid import's effective intensity (`co2e / grid import`), mg CO2e/kWh.
    pub grid_intensity_mg_per_kwh: u32,
}

/// Fleet totals over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetTotals {
    /// Energy by source.
    pub energy: EnergyBySource,
    /// Renewable-matched load energy.
    pub renewable: Millijoules,
    /// `renewable / load`, parts per million.
    pub renewable_share_ppm: u32,
    /// Emissions.
    pub co2e_mg: u64,
}

/// The sum of device statements, hour by hour.
#[derive(Debug, Default)]
pub struct FleetHours {
    lines: BTreeMap<u64, Vec<HourLine>>,
    sources: BTreeSet<String>,
    devices: u32,
}

impl FleetHours {
    /// Nothing summed yet.
    pub fn new() -> FleetHours {
        FleetHours::default()
    }

    /// Adds one device's statement (each device once: a statement has one line per hour).
    pub fn add(&mut self, device: &DeviceStatement) {
        for line in &device.statement.hours {
            self.lines.entry(line.hour).or_default().push(*line);
        }
        self.sources.insert(device.intensity_source.clone());
        self.devices += 1;
    }

    /// Statements added.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// The intensity sources the statements named.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(String::as_str)
    }

    /// The fleet hours, ascending.
    pub fn hours(&self) -> Vec<FleetHour> {
        self.lines
            .iter()
            .map(|(&hour, lines)| {
                let (energy, renewable, co2e_mg) = carbon::totals(lines);
                FleetHour {
                    hour,
                    devices: lines.len() as u32,
                    energy,
                    renewable,
                    renewable_share_ppm: carbon::share_ppm(renewable, energy.load),
                    co2e_mg,
                    grid_intensity_mg_per_kwh: carbon::effective_intensity(
                        co2e_mg,
                        energy.grid_import,
                    ),
                }
            })
            .collect()
    }

    /// Totals over every hour.
    pub fn totals(&self) -> FleetTotals {
        let all: Vec<HourLine> = self.lines.values().flatten().copied().collect();
        let (energy, renewable, co2e_mg) = carbon::totals(&all);
        FleetTotals {
            energy,
            renewable,
            renewable_share_ppm: carbon::share_ppm(renewable, energy.load),
            co2e_mg,
        }
    }
}

/// A device left out of the fleet view, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The device (`hs-...`).
    pub device: String,
    /// Why.
    pub reason: String,
}

/// The fleet view of a period.
#[derive(Debug)]
pub struct FleetReport {
    /// The sum.
    pub hours: FleetHours,
    /// Approved devices with records in the period that could not be accounted.
    pub skipped: Vec<Skipped>,
}

/// Sums the approved devices' hours over `from_ms..=to_ms` (the caller bounds the period).
/// A device without records in the period adds nothing; one whose records the arithmetic
/// refuses is listed in `skipped` rather than hiding the rest of the fleet.
pub fn fleet_hours<S: Store>(
    store: &S,
    intensity: &IntensityResolver,
    from_ms: u64,
    to_ms: u64,
) -> Result<FleetReport, StoreError> {
    let mut hours = FleetHours::new();
    let mut skipped = Vec::new();
    for dev in store.devices()? {
        if dev.state != DeviceState::Approved {
            continue;
        }
        match device_hours(store, &dev, intensity, from_ms, to_ms) {
            Ok(s) => hours.add(&s),
            Err(HoursError::Store(e)) => return Err(e),
            Err(HoursError::Account(attest::account::AccountError::NoRecords)) => {}
            Err(e) => skipped.push(Skipped {
                device: dev.id.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(FleetReport { hours, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use crate::store::sqlite::SqliteStore;
    use attest::KeyPair;
    use attest::sample::{SAMPLE_START, SampleDevice};

    /// A sample device's hello moved to another grid region (re-signed with its key).
    pub(crate) fn hello_in(dev: &SampleDevice, region: &str) -> Envelope {
        let mut h: attest::msg::Hello = dev.hello().open().unwrap();
        h.site.grid_region = region.into();
        Envelope::seal(&h, &dev.key)
    }

    #[test]
    fn fleet_hours_are_the_sum_of_the_device_hours() {
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let mut ing = Ingest::new(
            SqliteStore::in_memory().unwrap(),
            key,
            IngestConfig::auto_approving(),
        );
        // Two devices in different regions with 20 h of records from midnight (night on
        // battery and grid, then sun), and a third that is revoked and must not count.
        let devs = [
            (SampleDevice::new(21), "DE"),
            (SampleDevice::new(22), "unknown"),
            (SampleDevice::new(23), "FR"),
        ];
        let mut batch = Vec::new();
        for (d, region) in &devs {
            let mut d = d.clone();
            let id = d.key.device_id();
            batch.push((
                format!("{PREFIX}{id}/hello"),
                hello_in(&d, region).into_bytes(),
            ));
            for e in d.chain(20 * 60, 60_000) {
                batch.push((format!("{PREFIX}{id}/records"), e.as_bytes().to_vec()));
            }
        }
        ing.handle(&batch, SAMPLE_START.0 + 86_400_000).unwrap();
        let revoked = devs[2].0.key.device_id();
        ing.store_mut()
            .set_state(revoked, DeviceState::Revoked)
            .unwrap();

        let csv = crate::intensity::HourlySeries::parse(
            "grid.csv",
            "grid.csv",
            "region,hour_start_utc,g_co2e_per_kwh\nDE,2026-06-21T03:00:00Z,100\n",
        )
        .unwrap();
        let r = IntensityResolver::bundled(Some(csv)).unwrap();
        let (from, to) = (SAMPLE_START.0, SAMPLE_START.0 + 20 * 3_600_000);
        let report = fleet_hours(ing.store(), &r, from, to).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let fleet = report.hours.hours();
        assert_eq!(
            report.hours.devices(),
            2,
            "the revoked device is not counted"
        );

        let mut per_device = Vec::new();
        for (d, _) in &devs[..2] {
            let row = ing.store().device(d.key.device_id()).unwrap().unwrap();
            per_device.push(
                device_hours(ing.store(), &row, &r, from, to)
                    .unwrap()
                    .statement,
            );
        }
        assert_eq!(fleet.len(), 20, "20 hours of records");
        for fh in &fleet {
            let lines: Vec<&HourLine> = per_device
                .iter()
                .filter_map(|s| s.hours.iter().find(|l| l.hour == fh.hour))
                .collect();
            assert_eq!(fh.devices as usize, lines.len());
            let load: u64 = lines.iter().map(|l| l.energy.load.0).sum();
            let grid: u64 = lines.iter().map(|l| l.energy.grid_import.0).sum();
            let solar: u64 = lines.iter().map(|l| l.energy.solar.0).sum();
            let ren: u64 = lines.iter().map(|l| l.renewable.0).sum();
            let co2: u64 = lines.iter().map(|l| l.co2e_mg).sum();
            assert_eq!(
                (fh.energy.load.0, fh.energy.grid_import.0, fh.energy.solar.0),
                (load, grid, solar),
                "hour {}",
                fh.hour
            );
            assert_eq!((fh.renewable.0, fh.co2e_mg), (ren, co2), "hour {}", fh.hour);
        }
        let totals = report.hours.totals();
        assert_eq!(
            totals.co2e_mg,
            per_device.iter().map(|s| s.co2e_mg).sum::<u64>()
        );
        assert_eq!(
            totals.energy.load.0,
            per_device.iter().map(|s| s.energy.load.0).sum::<u64>()
        );
        assert!(totals.co2e_mg > 0 && totals.renewable.0 > 0, "{totals:?}");
        // The CSV hour (03:00, on the grid: the battery is at its reserve) is charged at
        // 100 g for the DE device only.
        let h3 = SAMPLE_START.0 / 3_600_000 + 3;
        let de3 = per_device[0].hours.iter().find(|l| l.hour == h3).unwrap();
        let un3 = per_device[1].hours.iter().find(|l| l.hour == h3).unwrap();
        assert_eq!(
            (de3.intensity_mg_per_kwh, un3.intensity_mg_per_kwh),
            (100_000, 472_940)
        );
        assert!(de3.energy.grid_import.0 > 0);
        assert_eq!(
            de3.co2e_mg,
            attest::carbon::emissions_mg(de3.energy.grid_import, 100_000)
        );
        let sources: Vec<&str> = report.hours.sources().collect();
        assert_eq!(
            sources,
            vec![
                "ember-2024:WORLD (yearly average; region UNKNOWN not in the table)",
                "mixed: ember-2024:DE (yearly average) for 19 h; operator-csv:grid.csv (hourly) for 1 h",
            ]
        );
    }
}
