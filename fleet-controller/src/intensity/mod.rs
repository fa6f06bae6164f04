//! Grid carbon intensity for statements: which figure a device's grid energy is charged at
//! in a given hour, and where that figure comes from.
//!
//! - [`table`]: the bundled yearly averages per region (Ember, cited in the data file).
//! - [`hourly`]: the operator's hourly CSV series, which overrides the table for the
//!   regions and hours it lists.
//! - [`civil`]: the calendar arithmetic both need.
//!
//! [`IntensityResolver`] puts them together. For a device's region (`site.grid_region` of
//! its stored hello) and an hour it gives mg CO2e/kWh and a source text, in this order:
//! 1. `accounting.intensity_mg_per_kwh`, when configured: one flat figure for every device
//!    and hour, named by `accounting.intensity_source` (no hourly CSV beside it);
//! 2. the hourly CSV's value for exactly that region and hour;
//! 3. the table's row for the region, else for its part before the first `-`
//!    (`US-CAL-CISO` takes `US`), else the `WORLD` row; the row of the latest data year
//!    not after the hour's year (else the earliest).
//!
//! Statements carry each hour's figure (the verifier takes them from there) and one
//! `intensity_source` that names every source used in the period, with hour counts when
//! there are several ([`RegionIntensity::describe`]).

pub mod civil;
pub mod hourly;
pub mod table;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::AccountingConfig;
pub use hourly::{HourlyCsvError, HourlySeries};
pub use table::{RegionTable, TableError};

/// Why the intensity inputs could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IntensityError {
    /// The bundled table is broken (a build defect).
    #[error(transparent)]
    Table(#[from] TableError),
    /// The operator's hourly CSV was refused. (Not a `source`: the message already holds
    /// it, and error chains would print it twice.)
    #[error("config key `accounting.hourly_csv`: {0}")]
    Hourly(HourlyCsvError),
}

/// One hour's intensity and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourIntensity {
    /// mg CO2e per kWh.
    pub mg_per_kwh: u32,
    /// The source, as statements name it.
    pub source: String,
}

#[derive(Debug, Clone)]
enum Inputs {
    Flat {
        mg_per_kwh: u32,
        source: String,
    },
    Series {
        table: RegionTable,
        hourly: Option<HourlySeries>,
    },
}

/// Resolves (region, hour) to an intensity; see the module documentation for the order.
#[derive(Debug, Clone)]
pub struct IntensityResolver {
    inputs: Inputs,
}

impl IntensityResolver {
    /// One flat figure for every region and hour, named `source`.
    pub fn flat(mg_per_kwh: u32, source: impl Into<String>) -> IntensityResolver {
        IntensityResolver {
            inputs: Inputs::Flat {
                mg_per_kwh,
                source: source.into(),
            },
        }
    }

    /// The bundled table, overridden by `hourly` where it has a value.
    pub fn bundled(hourly: Option<HourlySeries>) -> Result<IntensityResolver, TableError> {
        Ok(IntensityResolver {
            inputs: Inputs::Series {
                table: RegionTable::bundled()?,
                hourly,
            },
        })
    }

    /// As configured: the flat figure if `intensity_mg_per_kwh` is set, else the table and
    /// the hourly CSV (read and validated here, so a bad file stops the controller at
    /// start with its line named).
    pub fn from_config(cfg: &AccountingConfig) -> Result<IntensityResolver, IntensityError> {
        if let Some(mg) = cfg.intensity_mg_per_kwh {
            return Ok(IntensityResolver::flat(mg, cfg.flat_source()));
        }
        let hourly = cfg
            .hourly_csv
            .as_deref()
            .map(HourlySeries::load)
            .transpose()
            .map_err(IntensityError::Hourly)?;
        Ok(IntensityResolver::bundled(hourly)?)
    }

    /// The intensities of one region (a device's `site.grid_region`).
    pub fn for_region(&self, region: &str) -> RegionIntensity<'_> {
        let key = normalize_region(region);
        match &self.inputs {
            Inputs::Flat { mg_per_kwh, source } => RegionIntensity {
                hourly: None,
                hourly_source: String::new(),
                rows: Rows::Flat(HourIntensity {
                    mg_per_kwh: *mg_per_kwh,
                    source: source.clone(),
                }),
            },
            Inputs::Series { table, hourly } => {
                let shown = shown_region(&key);
                let (rows, note) = if let Some(rows) = table.rows(&key) {
                    (rows, String::new())
                } else if let Some(rows) = key.split_once('-').and_then(|(p, _)| table.rows(p)) {
                    (rows, format!(", for region {shown}"))
                } else {
                    let rows = table.rows(table::WORLD).unwrap_or_default();
                    (rows, format!("; region {shown} not in the table"))
                };
                RegionIntensity {
                    hourly: hourly.as_ref().and_then(|h| h.region(&key)),
                    hourly_source: hourly
                        .as_ref()
                        .map(|h| format!("operator-csv:{} (hourly)", h.name()))
                        .unwrap_or_default(),
                    rows: Rows::Table { rows, note },
                }
            }
        }
    }

    /// The intensity of `region` in `hour` (hours since the Unix epoch).
    pub fn at(&self, region: &str, hour: u64) -> HourIntensity {
        self.for_region(region).at(hour)
    }
}

#[derive(Debug)]
enum Rows<'a> {
    Flat(HourIntensity),
    Table {
        rows: &'a [table::TableRow],
        note: String,
    },
}

/// One region's intensities, looked up once for many hours.
#[derive(Debug)]
pub struct RegionIntensity<'a> {
    hourly: Option<&'a BTreeMap<u64, u32>>,
    hourly_source: String,
    rows: Rows<'a>,
}

impl RegionIntensity<'_> {
    /// The intensity in `hour`.
    pub fn at(&self, hour: u64) -> HourIntensity {
        if let Some(&mg) = self.hourly.and_then(|h| h.get(&hour)) {
            return HourIntensity {
                mg_per_kwh: mg,
                source: self.hourly_source.clone(),
            };
        }
        match &self.rows {
            Rows::Flat(f) => f.clone(),
            Rows::Table { rows, note } => {
                match table::row_for_year(rows, civil::year_of_hour(hour)) {
                    Some(r) => HourIntensity {
                        mg_per_kwh: r.mg_per_kwh,
                        source: format!(
                            "{}-{}:{} (yearly average{note})",
                            r.source, r.year, r.region
                        ),
                    },
                    // Unreachable: a table parses only with a WORLD row.
                    None => HourIntensity {
                        mg_per_kwh: 0,
                        source: "none".into(),
                    },
                }
            }
        }
    }

    /// The `intensity_source` text of a statement over `hours`: the one source used, or
    /// `mixed: A for N h; B for M h` in order of first use. Kept within a statement's text
    /// limit ([`attest::msg::MAX_TEXT`] bytes) by counting the last sources together.
    pub fn describe(&self, hours: impl IntoIterator<Item = u64>) -> String {
        let mut used: Vec<(String, usize)> = Vec::new();
        for h in hours {
            let s = self.at(h).source;
            match used.iter_mut().find(|(u, _)| *u == s) {
                Some((_, n)) => *n += 1,
                None => used.push((s, 1)),
            }
        }
        let text = match used.len() {
            0 => self.at(0).source,
            1 => used.swap_remove(0).0,
            _ => {
                let part = |(s, n): &(String, usize)| format!("{s} for {n} h");
                let mut keep = used.len();
                loop {
                    let mut t = String::from("mixed: ");
                    t.push_str(&used[..keep].iter().map(part).collect::<Vec<_>>().join("; "));
                    if keep < used.len() {
                        let rest: usize = used[keep..].iter().map(|(_, n)| n).sum();
                        t.push_str(&format!(
                            "; {} more source(s) for {rest} h",
                            used.len() - keep
                        ));
                    }
                    if t.len() <= attest::msg::MAX_TEXT || keep <= 1 {
                        break t;
                    }
                    keep -= 1;
                }
            }
        };
        truncate_to(text, attest::msg::MAX_TEXT)
    }
}

/// A region code as looked up: trimmed, ASCII upper case.
pub(crate) fn normalize_region(region: &str) -> String {
    region.trim().to_ascii_uppercase()
}

/// A device-supplied region as statements show it: short, printable, never empty.
fn shown_region(key: &str) -> String {
    let s: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if s.is_empty() { "(none)".into() } else { s }
}

fn truncate_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The comma-separated fields of a CSV line, trimmed (no quoting).
pub(crate) fn csv_fields(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

/// Grams CO2e per kWh written as a decimal (`342.06`, at most three places) to mg, exactly.
pub(crate) fn grams_to_mg(s: &str) -> Result<u32, &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(rfc3339: &str) -> u64 {
        (civil::parse_rfc3339_ms(rfc3339).unwrap() / 3_600_000) as u64
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
    fn known_regions_take_their_table_row_and_others_fall_back_to_world() {
        let r = IntensityResolver::bundled(None).unwrap();
        let h = hour("2026-06-21T12:00:00Z");
        assert_eq!(
            r.at("DE", h),
            HourIntensity {
                mg_per_kwh: 342_060,
                source: "ember-2024:DE (yearly average)".into()
            }
        );
        assert_eq!(r.at(" fr ", h).mg_per_kwh, 44_180);
        assert_eq!(r.at("PL", h).mg_per_kwh, 614_980);
        assert_eq!(r.at("IN", h).mg_per_kwh, 708_960);
        // A sub-national zone takes its country's row, and says so.
        assert_eq!(
            r.at("US-CAL-CISO", h),
            HourIntensity {
                mg_per_kwh: 383_550,
                source: "ember-2024:US (yearly average, for region US-CAL-CISO)".into()
            }
        );
        // The agent's default region, and garbage, take the world average, named as such.
        assert_eq!(
            r.at("unknown", h),
            HourIntensity {
                mg_per_kwh: 472_940,
                source: "ember-2024:WORLD (yearly average; region UNKNOWN not in the table)".into()
            }
        );
        let odd = r.at("\u{1b}[31m", h);
        assert_eq!(odd.mg_per_kwh, 472_940);
        assert!(odd.source.contains("region 31M not in"), "{}", odd.source);
        assert!(r.at("", h).source.contains("region (none)"));
    }

    #[test]
    fn the_hourly_csv_overrides_the_table_for_its_region_and_hours_only() {
        let csv = HourlySeries::parse(
            "grid.csv",
            "grid.csv",
            "region,hour_start_utc,g_co2e_per_kwh\nDE,2026-06-21T01:00:00Z,120.5\n",
        )
        .unwrap();
        let r = IntensityResolver::bundled(Some(csv)).unwrap();
        let de = r.for_region("de");
        let h1 = hour("2026-06-21T01:00:00Z");
        assert_eq!(
            de.at(h1),
            HourIntensity {
                mg_per_kwh: 120_500,
                source: "operator-csv:grid.csv (hourly)".into()
            }
        );
        assert_eq!(de.at(h1 - 1).mg_per_kwh, 342_060, "the hour before: table");
        assert_eq!(de.at(h1 + 1).mg_per_kwh, 342_060, "the hour after: table");
        assert_eq!(r.at("FR", h1).mg_per_kwh, 44_180, "another region: table");
        // A period across both names both, with their hours.
        assert_eq!(
            de.describe([h1 - 1, h1, h1 + 1]),
            "mixed: ember-2024:DE (yearly average) for 2 h; operator-csv:grid.csv (hourly) for 1 h"
        );
        assert_eq!(de.describe([h1]), "operator-csv:grid.csv (hourly)");
    }

    #[test]
    fn a_flat_figure_applies_everywhere_under_its_own_name() {
        let r = IntensityResolver::flat(480_000, "config:flat-480g");
        let f = r.at("DE", 1);
        assert_eq!(
            (f.mg_per_kwh, f.source.as_str()),
            (480_000, "config:flat-480g")
        );
        assert_eq!(r.for_region("XX").describe([1, 2, 3]), "config:flat-480g");
    }

    #[test]
    fn a_description_of_many_sources_stays_within_the_statement_text_limit() {
        let mut body = String::from("region,hour_start_utc,g_co2e_per_kwh\n");
        // Alternate hours: CSV, table, CSV, ... with a long CSV name.
        for i in 0..40u64 {
            body.push_str(&format!("DE,{},1\n", i * 2 * 3_600));
        }
        let csv = HourlySeries::parse("x", &"long-name-".repeat(20), &body).unwrap();
        let r = IntensityResolver::bundled(Some(csv)).unwrap();
        let d = r.for_region("DE").describe(0..80);
        assert!(d.len() <= attest::msg::MAX_TEXT, "{} bytes", d.len());
        assert!(d.starts_with("mixed: "), "{d}");
    }
}
