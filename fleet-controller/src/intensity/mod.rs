//! Grid carbon intensity for statements: which figure a device's grid energy is charged at
//! in a given hour, where that figure comes from, and the dataset that proves it.
//!
//! - the bundled yearly averages per region: `attest::intensity` (Ember, cited in the data
//!   file), named by the file's SHA-256, known to every verifier;
//! - [`hourly`]: the operator's hourly CSV series, which overrides the table for the
//!   regions and hours it lists. Each (region, UTC year) of it is one carried dataset
//!   (`attest::intensity::Dataset::Hourly`, every row of that region and year), named by
//!   its digest and put into the bundles that use it;
//! - `accounting.intensity_mg_per_kwh`: one flat figure (`Dataset::Flat`), carried too;
//! - [`civil`]: the calendar arithmetic the CSV needs.
//!
//! [`IntensityResolver`] puts them together. For a device's region (`site.grid_region` of
//! its stored hello) and an hour it gives mg CO2e/kWh, the dataset's digest and a label, in
//! this order:
//! 1. the flat figure, when configured (no hourly CSV beside it);
//! 2. the hourly CSV's value for exactly that region and hour;
//! 3. the bundled table (`attest::intensity::RegionTable::figure`).
//!
//! Statements carry each hour's figure and dataset digest; a verifier checks each figure
//! against the bundled table or the carried dataset, and accepts a carried one only when its
//! user does. The label ([`RegionIntensity::describe`]) is for people reading the API.

pub mod civil;
pub mod hourly;

use std::collections::{BTreeMap, HashMap};

use attest::Hash32;
use attest::intensity::{Dataset, HourFigure, RegionMatch, RegionTable, bundled_digest};
use serde::Serialize;

use crate::config::AccountingConfig;
pub use attest::intensity::{TableError, csv_fields, grams_to_mg, normalize_region};
pub use hourly::{HourlyCsvError, HourlySeries};

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

/// One hour's intensity, its dataset and a label for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourIntensity {
    /// mg CO2e per kWh.
    pub mg_per_kwh: u32,
    /// The dataset's digest (the bundled table's, or a carried dataset's).
    pub dataset: Hash32,
    /// Where it comes from, in words.
    pub source: String,
}

impl HourIntensity {
    /// The figure as attest's arithmetic takes it.
    pub fn figure(&self) -> attest::intensity::Figure {
        attest::intensity::Figure {
            mg_per_kwh: self.mg_per_kwh,
            dataset: self.dataset,
        }
    }
}

/// A carried dataset with its digest, computed once, and its label for people.
#[derive(Debug, Clone)]
struct Named {
    dataset: Dataset,
    digest: Hash32,
    label: String,
}

impl Named {
    fn new(dataset: Dataset, label: String) -> Named {
        Named {
            digest: dataset.digest(),
            dataset,
            label,
        }
    }
}

#[derive(Debug, Clone)]
enum Inputs {
    Flat(Named),
    Series {
        table: RegionTable,
        hourly: Option<HourlySeries>,
        /// The hourly series cut into datasets by (region, UTC year).
        hourly_sets: HashMap<(String, i64), Named>,
    },
}

/// Resolves (region, hour) to an intensity; see the module documentation for the order.
#[derive(Debug, Clone)]
pub struct IntensityResolver {
    inputs: Inputs,
    bundled: Hash32,
}

impl IntensityResolver {
    /// One flat figure for every region and hour, named `source`.
    pub fn flat(mg_per_kwh: u32, source: impl Into<String>) -> IntensityResolver {
        let name: String = source.into();
        IntensityResolver {
            inputs: Inputs::Flat(Named::new(
                Dataset::Flat {
                    name: name.clone(),
                    mg_per_kwh,
                },
                name,
            )),
            bundled: bundled_digest(),
        }
    }

    /// The bundled table, overridden by `hourly` where it has a value.
    pub fn bundled(hourly: Option<HourlySeries>) -> Result<IntensityResolver, TableError> {
        let mut hourly_sets = HashMap::new();
        if let Some(h) = &hourly {
            for (region, hours) in h.regions() {
                let mut by_year: BTreeMap<i64, Vec<HourFigure>> = BTreeMap::new();
                for (&hour, &mg_per_kwh) in hours {
                    by_year
                        .entry(civil::year_of_hour(hour))
                        .or_default()
                        .push(HourFigure { hour, mg_per_kwh });
                }
                for (year, rows) in by_year {
                    let set = Dataset::Hourly {
                        name: format!("operator-csv:{} {year}", h.name()),
                        region: region.clone(),
                        rows,
                    };
                    let label = format!("operator-csv:{} (hourly)", h.name());
                    hourly_sets.insert((region.clone(), year), Named::new(set, label));
                }
            }
        }
        Ok(IntensityResolver {
            inputs: Inputs::Series {
                table: RegionTable::bundled()?,
                hourly,
                hourly_sets,
            },
            bundled: bundled_digest(),
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
        let rows = match &self.inputs {
            Inputs::Flat(_) => Rows::Flat,
            Inputs::Series { table, .. } => {
                let shown = shown_region(&key);
                let (rows, how) = table.rows_for_region(&key);
                let note = match how {
                    RegionMatch::Exact => String::new(),
                    RegionMatch::Parent => format!(", for region {shown}"),
                    RegionMatch::World => format!("; region {shown} not in the table"),
                };
                Rows::Table { rows, note }
            }
        };
        RegionIntensity {
            resolver: self,
            key,
            rows,
        }
    }

    /// The intensity of `region` in `hour` (hours since the Unix epoch).
    pub fn at(&self, region: &str, hour: u64) -> HourIntensity {
        self.for_region(region).at(hour)
    }
}

#[derive(Debug)]
enum Rows<'a> {
    /// A flat figure: every hour comes from the carried dataset.
    Flat,
    Table {
        rows: &'a [attest::intensity::TableRow],
        note: String,
    },
}

/// One region's intensities, looked up once for many hours.
#[derive(Debug)]
pub struct RegionIntensity<'a> {
    resolver: &'a IntensityResolver,
    key: String,
    rows: Rows<'a>,
}

impl RegionIntensity<'_> {
    /// The carried dataset an hour's figure comes from, if any (`None`: the bundled table).
    fn carried(&self, hour: u64) -> Option<&Named> {
        match &self.resolver.inputs {
            Inputs::Flat(named) => Some(named),
            Inputs::Series {
                hourly,
                hourly_sets,
                ..
            } => hourly
                .as_ref()
                .and_then(|h| h.region(&self.key))
                .filter(|r| r.contains_key(&hour))
                .and_then(|_| hourly_sets.get(&(self.key.clone(), civil::year_of_hour(hour)))),
        }
    }

    /// The intensity in `hour`.
    pub fn at(&self, hour: u64) -> HourIntensity {
        if let Some(named) = self.carried(hour) {
            return HourIntensity {
                mg_per_kwh: named
                    .dataset
                    .figure(&self.key, hour)
                    .expect("a carried dataset is chosen only for hours it has"),
                dataset: named.digest,
                source: named.label.clone(),
            };
        }
        let Rows::Table { rows, note } = &self.rows else {
            unreachable!("a flat resolver always has its carried dataset")
        };
        match attest::intensity::row_for_year(rows, civil::year_of_hour(hour)) {
            Some(r) => HourIntensity {
                mg_per_kwh: r.mg_per_kwh,
                dataset: self.resolver.bundled,
                source: format!(
                    "{}-{}:{} (yearly average{note})",
                    r.source, r.year, r.region
                ),
            },
            // Unreachable: a table parses only with a WORLD row.
            None => HourIntensity {
                mg_per_kwh: 0,
                dataset: self.resolver.bundled,
                source: "none".into(),
            },
        }
    }

    /// The carried datasets (not the bundled table) that `hours` take figures from, each
    /// once: what a bundle over those hours must carry.
    pub fn datasets(&self, hours: impl IntoIterator<Item = u64>) -> Vec<Dataset> {
        let mut seen: BTreeMap<Hash32, Dataset> = BTreeMap::new();
        for h in hours {
            if let Some(named) = self.carried(h) {
                seen.entry(named.digest)
                    .or_insert_with(|| named.dataset.clone());
            }
        }
        seen.into_values().collect()
    }

    /// A label for people of the sources used over `hours`: the one source used, or
    /// `mixed: A for N h; B for M h` in order of first use, at most
    /// [`attest::msg::MAX_TEXT`] bytes (the last sources counted together).
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

/// A device-supplied region as labels show it: short, printable, never empty.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(rfc3339: &str) -> u64 {
        (civil::parse_rfc3339_ms(rfc3339).unwrap() / 3_600_000) as u64
    }

    #[test]
    fn known_regions_take_their_table_row_and_others_fall_back_to_world() {
        let r = IntensityResolver::bundled(None).unwrap();
        let h = hour("2026-06-21T12:00:00Z");
        assert_eq!(
            r.at("DE", h),
            HourIntensity {
                mg_per_kwh: 342_060,
                dataset: bundled_digest(),
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
                dataset: bundled_digest(),
                source: "ember-2024:US (yearly average, for region US-CAL-CISO)".into()
            }
        );
        // The agent's default region, and garbage, take the world average, named as such.
        assert_eq!(
            r.at("unknown", h),
            HourIntensity {
                mg_per_kwh: 472_940,
                dataset: bundled_digest(),
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
        // The CSV's DE rows of 2026 are one dataset, named by its digest.
        let set = Dataset::Hourly {
            name: "operator-csv:grid.csv 2026".into(),
            region: "DE".into(),
            rows: vec![HourFigure {
                hour: h1,
                mg_per_kwh: 120_500,
            }],
        };
        assert_eq!(
            de.at(h1),
            HourIntensity {
                mg_per_kwh: 120_500,
                dataset: set.digest(),
                source: "operator-csv:grid.csv (hourly)".into()
            }
        );
        assert_eq!(de.datasets([h1 - 1, h1, h1 + 1]), vec![set]);
        assert!(
            de.datasets([h1 - 1, h1 + 1]).is_empty(),
            "table hours carry nothing"
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
        let set = Dataset::Flat {
            name: "config:flat-480g".into(),
            mg_per_kwh: 480_000,
        };
        assert_eq!(f.dataset, set.digest());
        assert_eq!(r.for_region("XX").datasets([1, 2]), vec![set]);
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
