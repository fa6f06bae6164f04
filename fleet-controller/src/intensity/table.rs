//! The bundled yearly-average table, `fleet-controller/data/grid-intensity.csv` (Ember's
//! Yearly Electricity Data; the file's header cites it), compiled into the binary.

use std::collections::BTreeMap;

use super::{csv_fields, grams_to_mg};

/// The table's text as shipped.
pub const BUNDLED: &str = include_str!("../../data/grid-intensity.csv");

/// The row every unknown region falls back to.
pub const WORLD: &str = "WORLD";

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

/// Why the table does not parse (a build defect: the bundled file is checked by a test).
#[derive(Debug, thiserror::Error)]
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

impl RegionTable {
    /// The table shipped in the binary.
    pub fn bundled() -> Result<RegionTable, TableError> {
        RegionTable::parse(BUNDLED)
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
}
