//! The operator's hourly intensity series (`accounting.hourly_csv`): for the regions and
//! hours it lists, it overrides the bundled yearly table.
//!
//! ```text
//! # comments and blank lines are skipped
//! region,hour_start_utc,g_co2e_per_kwh
//! DE,2026-06-21T00:00:00Z,312.5
//! DE,1782003600,298
//! ```
//!
//! `region` is matched against a device's `site.grid_region` exactly (upper-cased);
//! `hour_start_utc` is an RFC 3339 date-time or Unix seconds, and must start an hour;
//! `g_co2e_per_kwh` is a decimal with at most three places. A (region, hour) given twice is
//! refused. Fields are split on commas (no quoting).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{civil, csv_fields, grams_to_mg, normalize_region};

/// The header line, exactly (surrounding spaces aside).
pub const HEADER: [&str; 3] = ["region", "hour_start_utc", "g_co2e_per_kwh"];

/// Why an hourly series was refused. Every variant names the file, and the line where
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum HourlyCsvError {
    /// The file could not be read.
    #[error("{file}: {error}")]
    Read { file: String, error: std::io::Error },
    /// No header line.
    #[error("{file}: no header line `region,hour_start_utc,g_co2e_per_kwh`")]
    NoHeader { file: String },
    /// The first line is not the header.
    #[error(
        "{file}: line {line}: expected the header `region,hour_start_utc,g_co2e_per_kwh`, found `{found}`"
    )]
    Header {
        file: String,
        line: usize,
        found: String,
    },
    /// A line without three fields.
    #[error("{file}: line {line}: {got} fields, expected 3 (region,hour_start_utc,g_co2e_per_kwh)")]
    Fields {
        file: String,
        line: usize,
        got: usize,
    },
    /// A field that does not parse.
    #[error("{file}: line {line}, field `{field}`: {value:?}: {reason}")]
    Field {
        file: String,
        line: usize,
        field: &'static str,
        value: String,
        reason: String,
    },
    /// An hour start that is not on a whole UTC hour.
    #[error(
        "{file}: line {line}, field `hour_start_utc`: {value:?} does not start an hour (minutes and seconds must be 0)"
    )]
    Unaligned {
        file: String,
        line: usize,
        value: String,
    },
    /// A (region, hour) given twice.
    #[error("{file}: line {line}: {region} at {value} is already given on line {first_line}")]
    Duplicate {
        file: String,
        line: usize,
        first_line: usize,
        region: String,
        value: String,
    },
}

impl HourlyCsvError {
    /// The line the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            HourlyCsvError::Read { .. } | HourlyCsvError::NoHeader { .. } => None,
            HourlyCsvError::Header { line, .. }
            | HourlyCsvError::Fields { line, .. }
            | HourlyCsvError::Field { line, .. }
            | HourlyCsvError::Unaligned { line, .. }
            | HourlyCsvError::Duplicate { line, .. } => Some(*line),
        }
    }
}

/// A validated hourly series: mg CO2e/kWh by region and hour (hours since the Unix epoch).
#[derive(Debug, Clone)]
pub struct HourlySeries {
    name: String,
    by_region: HashMap<String, BTreeMap<u64, u32>>,
    len: usize,
}

impl HourlySeries {
    /// Reads and validates `path`; statements name it by its file name.
    pub fn load(path: &Path) -> Result<HourlySeries, HourlyCsvError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| HourlyCsvError::Read {
            file: file.clone(),
            error,
        })?;
        let name = path
            .file_name()
            .map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
        HourlySeries::parse(&file, &name, &text)
    }

    /// Validates a series' text. `file` names it in errors, `name` in statements.
    pub fn parse(file: &str, name: &str, text: &str) -> Result<HourlySeries, HourlyCsvError> {
        let file = file.to_string();
        let mut by_region: HashMap<String, BTreeMap<u64, u32>> = HashMap::new();
        let mut first_seen: HashMap<(String, u64), usize> = HashMap::new();
        let mut header_seen = false;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let f = csv_fields(t);
            if !header_seen {
                if f != HEADER {
                    return Err(HourlyCsvError::Header {
                        file,
                        line,
                        found: t.chars().take(80).collect(),
                    });
                }
                header_seen = true;
                continue;
            }
            let [region, when, grams] = f[..] else {
                return Err(HourlyCsvError::Fields {
                    file,
                    line,
                    got: f.len(),
                });
            };
            let field = |field: &'static str, value: &str, reason: &str| HourlyCsvError::Field {
                file: file.clone(),
                line,
                field,
                value: value.chars().take(80).collect(),
                reason: reason.to_string(),
            };
            let region_key = normalize_region(region);
            if region_key.is_empty() {
                return Err(field("region", region, "empty"));
            }
            if region_key.len() > attest::msg::MAX_TEXT {
                return Err(field("region", region, "longer than any device's region"));
            }
            let ms = parse_hour_start(when).map_err(|r| field("hour_start_utc", when, r))?;
            if ms % 3_600_000 != 0 {
                return Err(HourlyCsvError::Unaligned {
                    file,
                    line,
                    value: when.to_string(),
                });
            }
            let hour = ms / 3_600_000;
            let mg = grams_to_mg(grams).map_err(|r| field("g_co2e_per_kwh", grams, r))?;
            if let Some(&first_line) = first_seen.get(&(region_key.clone(), hour)) {
                return Err(HourlyCsvError::Duplicate {
                    file,
                    line,
                    first_line,
                    region: region_key,
                    value: when.to_string(),
                });
            }
            first_seen.insert((region_key.clone(), hour), line);
            by_region.entry(region_key).or_default().insert(hour, mg);
        }
        if !header_seen {
            return Err(HourlyCsvError::NoHeader { file });
        }
        Ok(HourlySeries {
            name: name.to_string(),
            by_region,
            len: first_seen.len(),
        })
    }

    /// The name statements give it (the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many (region, hour) values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every region with its hours.
    pub fn regions(&self) -> impl Iterator<Item = (&String, &BTreeMap<u64, u32>)> {
        self.by_region.iter()
    }

    /// One region's hours (upper-case code).
    pub fn region(&self, region: &str) -> Option<&BTreeMap<u64, u32>> {
        self.by_region.get(region)
    }
}

/// Unix milliseconds of an `hour_start_utc` field: Unix seconds (digits only) or RFC 3339.
pub fn parse_hour_start(s: &str) -> Result<u64, &'static str> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| "too large")?;
        return secs.checked_mul(1_000).ok_or("too large");
    }
    let ms = civil::parse_rfc3339_ms(s)?;
    u64::try_from(ms).map_err(|_| "before 1970")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "region,hour_start_utc,g_co2e_per_kwh\n";

    fn parse(body: &str) -> Result<HourlySeries, HourlyCsvError> {
        HourlySeries::parse("grid.csv", "grid.csv", &format!("{HEAD}{body}"))
    }

    #[test]
    fn rfc3339_and_unix_seconds_give_the_same_hours() {
        let s = HourlySeries::parse(
            "/etc/heliostat/grid.csv",
            "grid.csv",
            "# DE from the TSO\n\nregion , hour_start_utc , g_co2e_per_kwh\r\n\
             de,2026-06-21T00:00:00Z,312.5\r\n\
             DE,1782003600,298\n\
             DE,2026-06-21T04:00:00+02:00,0.001\n",
        )
        .unwrap();
        let h0 = attest::sample::SAMPLE_START.0 / 3_600_000;
        let de = s.region("DE").unwrap();
        assert_eq!(de.get(&h0), Some(&312_500));
        assert_eq!(de.get(&(h0 + 1)), Some(&298_000));
        assert_eq!(de.get(&(h0 + 2)), Some(&1));
        assert_eq!((s.len(), s.name()), (3, "grid.csv"));
    }

    #[test]
    fn a_bad_line_is_refused_naming_file_line_and_field() {
        let e = parse("DE,2026-06-21T00:00:00Z,312\nDE,2026-06-21T01:00:00Z,lots\n").unwrap_err();
        assert_eq!(e.line(), Some(3));
        assert!(
            matches!(
                &e,
                HourlyCsvError::Field {
                    field: "g_co2e_per_kwh",
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("grid.csv: line 3, field `g_co2e_per_kwh`: \"lots\""),
            "{msg}"
        );
        let e = parse("DE,yesterday,312\n").unwrap_err();
        assert!(
            matches!(
                &e,
                HourlyCsvError::Field {
                    line: 2,
                    field: "hour_start_utc",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("DE,2026-06-21T00:00:00Z\n").unwrap_err();
        assert!(
            matches!(
                &e,
                HourlyCsvError::Fields {
                    line: 2,
                    got: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse(",2026-06-21T00:00:00Z,1\n").unwrap_err();
        assert!(
            matches!(
                &e,
                HourlyCsvError::Field {
                    field: "region",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("DE,2026-06-21T00:00:00Z,-5\n").unwrap_err();
        assert!(
            matches!(
                &e,
                HourlyCsvError::Field {
                    field: "g_co2e_per_kwh",
                    ..
                }
            ),
            "{e}"
        );
        let e = HourlySeries::parse("g.csv", "g.csv", "zone,time,value\n").unwrap_err();
        assert!(matches!(&e, HourlyCsvError::Header { line: 1, .. }), "{e}");
        let e = HourlySeries::parse("g.csv", "g.csv", "# nothing\n").unwrap_err();
        assert!(matches!(&e, HourlyCsvError::NoHeader { .. }), "{e}");
    }

    #[test]
    fn an_hour_start_off_the_hour_is_refused_with_its_line() {
        let e = parse("DE,2026-06-21T00:00:00Z,300\nDE,2026-06-21T01:30:00Z,300\n").unwrap_err();
        assert!(
            matches!(&e, HourlyCsvError::Unaligned { line: 3, .. }),
            "{e}"
        );
        let e = parse("DE,1782000001,300\n").unwrap_err();
        assert!(
            matches!(&e, HourlyCsvError::Unaligned { line: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("does not start an hour"), "{e}");
    }

    #[test]
    fn a_duplicate_hour_is_refused_naming_both_lines() {
        // The same hour written two ways, and the region in another case.
        let e =
            parse("DE,2026-06-21T00:00:00Z,300\nFR,2026-06-21T00:00:00Z,40\nde,1782000000,310\n")
                .unwrap_err();
        assert!(
            matches!(
                &e,
                HourlyCsvError::Duplicate {
                    line: 4,
                    first_line: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("line 4"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = HourlySeries::load(Path::new("/nonexistent/grid.csv")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/grid.csv: "), "{e}");
    }
}
