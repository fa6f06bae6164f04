//! The operator's solar forecasts (`market.solar_forecast_csv`): for the devices and hours
//! it lists, the scheduler plans on them instead of the site's clear-sky curve (a weather
//! service's output, or the operator's own knowledge of a cloudy week).
//!
//! ```text
//! # comments and blank lines are skipped
//! device,hour_start_utc,solar_wh
//! hs-5xgcc9nq4vfvcjpwrg89531bp1yx2,2026-06-21T10:00:00Z,310
//! hs-5xgcc9nq4vfvcjpwrg89531bp1yx2,1782039600,295.5
//! ```
//!
//! `hour_start_utc` is an RFC 3339 date-time or Unix seconds on a whole hour; `solar_wh` the
//! energy the device's panels are expected to give in that hour, 0 or more. A (device,
//! hour) given twice is refused; hours a device's lines skip fall back to the clear-sky
//! curve. The file is read at start (a bad one stops the controller, naming its line) and
//! again whenever it changes (a bad one then is logged and the last good one kept).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use attest::DeviceId;

use crate::intensity::hourly::parse_hour_start;
use crate::market::SolarForecast;

/// The header line.
pub const HEADER: [&str; 3] = ["device", "hour_start_utc", "solar_wh"];

/// Most hours one device's forecast may span (a year).
const MAX_SPAN_HOURS: u64 = 24 * 366;

/// Parses a forecast file's text; errors name `file` and the line.
pub fn parse_solar_forecasts(
    file: &str,
    text: &str,
) -> Result<HashMap<DeviceId, SolarForecast>, String> {
    let mut by_device: HashMap<DeviceId, BTreeMap<u64, f32>> = HashMap::new();
    let mut header = false;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.split(',').map(str::trim).collect();
        if !header {
            if f != HEADER {
                return Err(format!(
                    "{file}: line {line}: expected the header `device,hour_start_utc,solar_wh`"
                ));
            }
            header = true;
            continue;
        }
        let [device, when, wh] = f[..] else {
            return Err(format!(
                "{file}: line {line}: {} fields, expected 3 (device,hour_start_utc,solar_wh)",
                f.len()
            ));
        };
        let device = DeviceId::parse(device)
            .map_err(|e| format!("{file}: line {line}, field `device`: {device:?}: {e}"))?;
        let ms = parse_hour_start(when)
            .map_err(|e| format!("{file}: line {line}, field `hour_start_utc`: {when:?}: {e}"))?;
        if ms % 3_600_000 != 0 {
            return Err(format!(
                "{file}: line {line}, field `hour_start_utc`: {when:?} does not start an hour"
            ));
        }
        let value: f32 = wh
            .parse()
            .ok()
            .filter(|w: &f32| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| {
                format!(
                    "{file}: line {line}, field `solar_wh`: {wh:?}: not a number of Wh, 0 or more"
                )
            })?;
        let hours = by_device.entry(device).or_default();
        if hours.insert(ms / 3_600_000, value).is_some() {
            return Err(format!(
                "{file}: line {line}: {device} at {when} is given twice"
            ));
        }
    }
    if !header {
        return Err(format!(
            "{file}: no header line `device,hour_start_utc,solar_wh`"
        ));
    }
    by_device
        .into_iter()
        .map(|(device, hours)| {
            let (Some((&first, _)), Some((&last, _))) =
                (hours.first_key_value(), hours.last_key_value())
            else {
                unreachable!("a device is entered with an hour");
            };
            if last - first >= MAX_SPAN_HOURS {
                return Err(format!(
                    "{file}: {device}: its hours span more than a year ({} hours)",
                    last - first + 1
                ));
            }
            let mut wh = vec![f32::NAN; (last - first + 1) as usize];
            for (h, w) in hours {
                wh[(h - first) as usize] = w;
            }
            Ok((
                device,
                SolarForecast {
                    first_hour: first,
                    wh,
                },
            ))
        })
        .collect()
}

/// The forecast file, read again when it changes.
#[derive(Debug)]
pub struct ForecastFile {
    path: PathBuf,
    seen: Option<SystemTime>,
}

impl ForecastFile {
    /// The file at `path`, not yet read.
    pub fn new(path: &Path) -> ForecastFile {
        ForecastFile {
            path: path.to_path_buf(),
            seen: None,
        }
    }

    /// The forecasts when the file is new or changed since the last call, else `None`;
    /// an error names the file (and the line).
    pub fn changed(&mut self) -> Option<Result<HashMap<DeviceId, SolarForecast>, String>> {
        let file = self.path.display().to_string();
        let modified = match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) => return Some(Err(format!("{file}: {e}"))),
        };
        if self.seen == Some(modified) {
            return None;
        }
        self.seen = Some(modified);
        Some(
            std::fs::read_to_string(&self.path)
                .map_err(|e| format!("{file}: {e}"))
                .and_then(|text| parse_solar_forecasts(&file, &text)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "hs-5xgcc9nq4vfvcjpwrg89531bp1yx2";

    #[test]
    fn hours_by_device_with_gaps_left_to_the_clear_sky() {
        let text = format!(
            "# a cloudy morning\n{}\n{DEV},2026-06-21T10:00:00Z,310\n{DEV},1782043200,12.5\n",
            HEADER.join(",")
        );
        let f = parse_solar_forecasts("sun.csv", &text).unwrap();
        let d = DeviceId::parse(DEV).unwrap();
        let fc = &f[&d];
        assert_eq!(fc.first_hour, 1_782_036_000 / 3_600);
        assert_eq!(fc.wh.len(), 3);
        assert_eq!(fc.wh[0], 310.0);
        assert!(fc.wh[1].is_nan(), "11:00 not given");
        assert_eq!(fc.wh[2], 12.5);
    }

    #[test]
    fn bad_lines_are_refused_naming_file_line_and_field() {
        let head = HEADER.join(",");
        for (body, want) in [
            (
                format!("{DEV},2026-06-21T10:30:00Z,1"),
                "line 2, field `hour_start_utc`",
            ),
            (
                format!("{DEV},2026-06-21T10:00:00Z,-1"),
                "line 2, field `solar_wh`",
            ),
            (
                format!("{DEV},2026-06-21T10:00:00Z,NaN"),
                "line 2, field `solar_wh`",
            ),
            (
                "hs-nope,2026-06-21T10:00:00Z,1".to_string(),
                "line 2, field `device`",
            ),
            (format!("{DEV},2026-06-21T10:00:00Z"), "line 2: 2 fields"),
            (
                format!("{DEV},2026-06-21T10:00:00Z,1\n{DEV},1782036000,2"),
                "line 3: hs-",
            ),
        ] {
            let e = parse_solar_forecasts("sun.csv", &format!("{head}\n{body}\n")).unwrap_err();
            assert!(e.starts_with("sun.csv: ") && e.contains(want), "{e}");
        }
        assert!(
            parse_solar_forecasts("sun.csv", "")
                .unwrap_err()
                .contains("no header")
        );
    }
}
