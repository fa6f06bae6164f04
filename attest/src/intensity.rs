//! Grid carbon intensity datasets: where every figure a statement charges grid energy at
//! comes from, named by content hash so that a verifier can check each figure.
//!
//! - The bundled table, [`BUNDLED_TABLE`] (`attest/data/grid-intensity.csv`: Ember's yearly
//!   averages per region, cited in the file), ships with attest. It is named by the SHA-256
//!   of the file's bytes, [`bundled_digest`]; a verifier built from this crate knows it.
//! - Any other dataset travels inside the bundle as a [`Dataset`] (an operator's hourly
//!   series for one region, or one flat figure) and is named by [`Dataset::digest`]. The
//!   verifier checks each hour's figure against it, but cannot know whether the dataset
//!   itself is true: it reports it as unknown and accepts it only when told to.
//!
//! A figure for a (region, hour) from the bundled table ([`RegionTable::figure`]): the
//! row of the region (ASCII upper case, trimmed), else of its part before the first `-`
//! (`US-CAL-CISO` takes `US`), else the `WORLD` row; among that region's rows, the latest
//! data year not after the hour's UTC year, else the earliest.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::hash::Hash32;
use crate::msg::{MAX_TEXT, check_text};

/// The bundled table's text, as shipped.
pub const BUNDLED_TABLE: &str = include_str!("../data/grid-intensity.csv");

/// The row every unknown region falls back to.
pub const WORLD: &str = "WORLD";

/// At most this many rows in one carried dataset (a leap year of hours, and some).
pub const MAX_DATASET_ROWS: usize = 24 * 366 + 24;

/// The name of the bundled table: SHA-256 of [`BUNDLED_TABLE`]'s bytes.
pub fn bundled_digest() -> Hash32 {
    Hash32::digest(BUNDLED_TABLE.as_bytes())
}

/// One hour's figure and the dataset it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figure {
    /// mg CO2e per kWh.
    pub mg_per_kwh: u32,
    /// The dataset's digest ([`bundled_digest`] or [`Dataset::digest`]).
    pub dataset: Hash32,
}

/// One hour of an hourly series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourFigure {
    /// Hours since the Unix epoch, UTC.
    pub hour: u64,
    /// mg CO2e per kWh.
    pub mg_per_kwh: u32,
}

/// A dataset carried in a bundle (anything other than the bundled table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// One figure for every region and hour (an operator's configured value).
    Flat {
        /// What the operator called it.
        name: String,
        /// mg CO2e per kWh.
        mg_per_kwh: u32,
    },
    /// An hourly series for one region (every row the operator gave for that region).
    Hourly {
        /// What the operator called it (its file name).
        name: String,
        /// The region it is for, as looked up (trimmed, upper case).
        region: String,
        /// Hours in strictly ascending order.
        rows: Vec<HourFigure>,
    },
}

/// Why a carried dataset is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatasetError {
    /// A name or region longer than the protocol's text limit.
    #[error("dataset {what} is longer than {MAX_TEXT} bytes")]
    TextTooLong { what: &'static str },
    /// Too many rows.
    #[error("dataset has {0} rows, at most {MAX_DATASET_ROWS}")]
    TooManyRows(usize),
    /// Hours not strictly ascending.
    #[error("dataset rows are not in strictly ascending hours at hour {0}")]
    Unordered(u64),
}

impl Dataset {
    /// The content hash that names it: SHA-256 over a domain tag and its postcard encoding.
    pub fn digest(&self) -> Hash32 {
        let body = postcard::to_allocvec(self).expect("datasets serialise to postcard");
        Hash32::digest_parts(&[b"heliostat/intensity-dataset/v1\0", &body])
    }

    /// The name the operator gave it.
    pub fn name(&self) -> &str {
        match self {
            Dataset::Flat { name, .. } | Dataset::Hourly { name, .. } => name,
        }
    }

    /// Bounds and order.
    pub fn validate(&self) -> Result<(), DatasetError> {
        let text =
            |what, s: &str| check_text(what, s).map_err(|_| DatasetError::TextTooLong { what });
        text("name", self.name())?;
        if let Dataset::Hourly { region, rows, .. } = self {
            text("region", region)?;
            if rows.len() > MAX_DATASET_ROWS {
                return Err(DatasetError::TooManyRows(rows.len()));
            }
            if let Some(w) = rows.windows(2).find(|w| w[1].hour <= w[0].hour) {
                return Err(DatasetError::Unordered(w[1].hour));
            }
        }
        Ok(())
    }

    /// Its figure for a region (as given by the device) and hour, if it has one.
    pub fn figure(&self, region: &str, hour: u64) -> Option<u32> {
        match self {
            Dataset::Flat { mg_per_kwh, .. } => Some(*mg_per_kwh),
            Dataset::Hourly {
                region: r, rows, ..
            } => {
                if *r != normalize_region(region) {
                    return None;
                }
                rows.binary_search_by_key(&hour, |f| f.hour)
                    .ok()
                    .map(|i| rows[i].mg_per_kwh)
            }
        }
    }
}

/// A region code as looked up: trimmed, ASCII upper case.
pub fn normalize_region(region: &str) -> String {
    region.trim().to_ascii_uppercase()
}

/// One region's yearly average.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    /// Region code (ISO 3166-1 alpha-2, or `WORLD`), upper case.
    pub region: String,
    /// The data year.
    pub year: i64,
    /// mg CO2e per kWh.
    pub mg_per_kwh: u32,
    /// Short source name (`ember`).
    pub source: String,
}

/// Why a table does not parse (for the bundled one, a build defect: a test checks it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A line is not `region,year,g_co2e_per_kwh,source`.
    #[error("grid-intensity table, line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    /// No `WORLD` row to fall back to.
    #[error("grid-intensity table: no WORLD row")]
    NoWorld,
}

/// Yearly averages by region, each region's rows in ascending year.
#[derive(Debug, Clone)]
pub struct RegionTable {
    rows: BTreeMap<String, Vec<TableRow>>,
}

const HEADER: [&str; 4] = ["region", "year", "g_co2e_per_kwh", "source"];

/// Which rows a region's figures come from, and how they were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionMatch {
    /// The region's own rows.
    Exact,
    /// The rows of its part before the first `-`.
    Parent,
    /// Not in the table: the `WORLD` rows.
    World,
}

impl RegionTable {
    /// The table shipped in this crate.
    pub fn bundled() -> Result<RegionTable, TableError> {
        RegionTable::parse(BUNDLED_TABLE)
    }

    /// Parses a table: `#` comments, a header line, then `region,year,g_co2e_per_kwh,source`.
    pub fn parse(text: &str) -> Result<RegionTable, TableError> {
        let mut rows: BTreeMap<String, Vec<TableRow>> = BTreeMap::new();
        let mut header_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: String| TableError::BadLine { line, reason };
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let f = csv_fields(t);
            if !header_seen {
                if f != HEADER {
                    return Err(bad(format!("expected the header `{}`", HEADER.join(","))));
                }
                header_seen = true;
                continue;
            }
            let [region, year, grams, source] = f[..] else {
                return Err(bad(format!("{} fields, expected 4", f.len())));
            };
            let region = region.to_ascii_uppercase();
            if region.is_empty() {
                return Err(bad("empty region".into()));
            }
            let year: i64 = year.parse().map_err(|_| bad(format!("year {year:?}")))?;
            let mg_per_kwh = grams_to_mg(grams).map_err(|r| bad(format!("{grams:?}: {r}")))?;
            let list = rows.entry(region.clone()).or_default();
            if list.iter().any(|r| r.year == year) {
                return Err(bad(format!("{region} {year} given twice")));
            }
            list.push(TableRow {
                region,
                year,
                mg_per_kwh,
                source: source.to_string(),
            });
            list.sort_by_key(|r| r.year);
        }
        if !rows.contains_key(WORLD) {
            return Err(TableError::NoWorld);
        }
        Ok(RegionTable { rows })
    }

    /// A region's rows (upper-case code), ascending by year; `None` if it has none.
    pub fn rows(&self, region: &str) -> Option<&[TableRow]> {
        self.rows.get(region).map(Vec::as_slice)
    }

    /// How many regions the table covers (WORLD included).
    pub fn regions(&self) -> usize {
        self.rows.len()
    }

    /// The rows a device region takes its figures from, and how they were chosen.
    pub fn rows_for_region(&self, region: &str) -> (&[TableRow], RegionMatch) {
        let key = normalize_region(region);
        if let Some(rows) = self.rows(&key) {
            (rows, RegionMatch::Exact)
        } else if let Some(rows) = key.split_once('-').and_then(|(p, _)| self.rows(p)) {
            (rows, RegionMatch::Parent)
        } else {
            (self.rows(WORLD).unwrap_or_default(), RegionMatch::World)
        }
    }

    /// The row a device region's figure for `hour` comes from (see the module docs).
    pub fn row(&self, region: &str, hour: u64) -> Option<&TableRow> {
        row_for_year(self.rows_for_region(region).0, year_of_hour(hour))
    }

    /// The figure for a device region and hour (0 only for a table without rows, which
    /// does not parse).
    pub fn figure(&self, region: &str, hour: u64) -> u32 {
        self.row(region, hour).map_or(0, |r| r.mg_per_kwh)
    }
}

/// The row for `year` among one region's rows (ascending): the latest data year not after
/// it, else the earliest (a figure is never extrapolated, only carried to later years and
/// back to earlier ones).
pub fn row_for_year(rows: &[TableRow], year: i64) -> Option<&TableRow> {
    rows.iter()
        .rev()
        .find(|r| r.year <= year)
        .or_else(|| rows.first())
}

/// The comma-separated fields of a CSV line, trimmed (no quoting).
pub fn csv_fields(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// Grams CO2e per kWh written as a decimal (`342.06`, at most three places) to mg, exactly.
pub fn grams_to_mg(s: &str) -> Result<u32, &'static str> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number of grams (e.g. 342.06)");
    }
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) || s.ends_with('.') {
        return Err("at most three decimal places (milligrams)");
    }
    let int: u64 = int.parse().map_err(|_| "too large")?;
    let frac_mg: u64 = format!("{frac:0<3}").parse().map_err(|_| "bad decimals")?;
    let mg = int
        .checked_mul(1_000)
        .and_then(|g| g.checked_add(frac_mg))
        .ok_or("too large")?;
    u32::try_from(mg).map_err(|_| "too large (at most 4294967.295 g)")
}

/// The civil year of a day number (days since 1970-01-01), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn year_of_day(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_from_march = mp; // 0 = March ... 11 = February
    yoe + era * 400 + i64::from(month_from_march >= 10)
}

/// The UTC calendar year that contains `hour` (hours since the Unix epoch).
pub fn year_of_hour(hour: u64) -> i64 {
    year_of_day((hour / 24) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_table_parses_and_covers_the_regions_the_fleet_uses() {
        let t = RegionTable::bundled().unwrap();
        assert!(t.regions() >= 30, "{} regions", t.regions());
        for r in [
            "WORLD", "DE", "FR", "GB", "US", "CN", "IN", "JP", "AU", "BR", "ZA", "KE", "NG", "CL",
            "MX", "CA", "NO", "SE", "PL", "ES", "IT", "NL",
        ] {
            assert!(t.rows(r).is_some(), "{r} missing");
        }
        // The figures as published (Ember, data year 2024), to the milligram.
        assert_eq!(t.rows("DE").unwrap()[0].mg_per_kwh, 342_060);
        assert_eq!(t.rows("DE").unwrap()[0].year, 2024);
        assert_eq!(t.rows("FR").unwrap()[0].mg_per_kwh, 44_180);
        assert_eq!(t.rows("WORLD").unwrap()[0].mg_per_kwh, 472_940);
        // Sub-national zones take their country's row, unknown regions the world's.
        assert_eq!(t.figure("US-CAL-CISO", 500_000), 383_550);
        assert_eq!(t.figure(" fr ", 500_000), 44_180);
        assert_eq!(t.figure("nowhere", 500_000), 472_940);
    }

    #[test]
    fn a_year_takes_the_latest_row_not_after_it() {
        let t = RegionTable::parse(
            "region,year,g_co2e_per_kwh,source\nWORLD,2022,500,x\nWORLD,2024,480,x\n",
        )
        .unwrap();
        let w = t.rows("WORLD").unwrap();
        assert_eq!(row_for_year(w, 2021).unwrap().year, 2022);
        assert_eq!(row_for_year(w, 2023).unwrap().year, 2022);
        assert_eq!(row_for_year(w, 2026).unwrap().year, 2024);
    }

    #[test]
    fn a_bad_table_line_is_named() {
        let e = RegionTable::parse("region,year,g_co2e_per_kwh,source\nWORLD,2024,lots,x\n")
            .unwrap_err();
        assert!(matches!(e, TableError::BadLine { line: 2, .. }), "{e}");
        let e =
            RegionTable::parse("region,year,g_co2e_per_kwh,source\nDE,2024,300,x\n").unwrap_err();
        assert!(matches!(e, TableError::NoWorld), "{e}");
    }

    #[test]
    fn grams_convert_to_milligrams_exactly() {
        assert_eq!(grams_to_mg("342.06"), Ok(342_060));
        assert_eq!(grams_to_mg("0"), Ok(0));
        assert_eq!(grams_to_mg("1000.001"), Ok(1_000_001));
        assert!(grams_to_mg("1.2345").is_err());
        assert!(grams_to_mg("-1").is_err());
        assert!(grams_to_mg("1e3").is_err());
        assert!(grams_to_mg("5.").is_err());
        assert!(grams_to_mg("").is_err());
        assert!(grams_to_mg("4294968").is_err());
    }

    #[test]
    fn the_year_of_an_hour_turns_at_midnight_utc_on_new_year() {
        // 2026-01-01T00:00:00Z is 1_767_225_600 s.
        let h = 1_767_225_600 / 3_600;
        assert_eq!(year_of_hour(h - 1), 2025);
        assert_eq!(year_of_hour(h), 2026);
        assert_eq!(year_of_hour(0), 1970);
    }

    #[test]
    fn a_dataset_is_named_by_its_content_and_answers_only_for_its_region_and_hours() {
        let d = Dataset::Hourly {
            name: "grid.csv".into(),
            region: "DE".into(),
            rows: alloc::vec![
                HourFigure {
                    hour: 10,
                    mg_per_kwh: 100
                },
                HourFigure {
                    hour: 12,
                    mg_per_kwh: 120
                },
            ],
        };
        assert_eq!(d.figure("de", 12), Some(120));
        assert_eq!(d.figure("DE", 11), None);
        assert_eq!(d.figure("FR", 10), None);
        let mut other = d.clone();
        if let Dataset::Hourly { rows, .. } = &mut other {
            rows[0].mg_per_kwh = 1;
        }
        assert_ne!(
            d.digest(),
            other.digest(),
            "one figure changed, another name"
        );
        assert_ne!(d.digest(), bundled_digest());
        assert!(d.validate().is_ok());
        if let Dataset::Hourly { rows, .. } = &mut other {
            rows.swap(0, 1);
        }
        assert_eq!(other.validate(), Err(DatasetError::Unordered(10)));
    }
}
