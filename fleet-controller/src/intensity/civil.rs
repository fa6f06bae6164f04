//! Calendar arithmetic for the intensity inputs: RFC 3339 timestamps (the operator CSV);
//! the UTC year of an hour (to pick a table row) comes from attest. Proleptic Gregorian, UTC; the day
//! algorithms are Howard Hinnant's `days_from_civil` / `civil_from_days`.

/// Days since 1970-01-01 of a civil date (`month` 1..=12, `day` 1..=31).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1..=12, day 1..=31) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as an RFC 3339 UTC date-time to the second (`2026-06-21T13:00:00Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1_000);
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

/// The UTC calendar year that contains an hour: attest's, so the controller and the
/// verifier pick the same table row.
pub use attest::intensity::year_of_hour;

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &str, what: &'static str) -> Result<u32, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(what);
    }
    s.parse().map_err(|_| what)
}

/// Parses an RFC 3339 date-time (section 5.6: `2026-06-21T13:00:00Z`,
/// `2026-06-21T15:00:00+02:00`, `t`/`z`/space accepted as RFC 3339 allows, fractional
/// seconds allowed) into Unix milliseconds. Leap seconds (`:60`) are refused: no hour
/// starts on one.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err("not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SSZ)");
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("not an RFC 3339 date-time: no 'T' between date and time");
    }
    let year = digits(&s[0..4], "bad year")?;
    let month = digits(&s[5..7], "bad month")?;
    let day = digits(&s[8..10], "bad day")?;
    let hour = digits(&s[11..13], "bad hour")?;
    let minute = digits(&s[14..16], "bad minute")?;
    let second = digits(&s[17..19], "bad second")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("no such time of day");
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err("bad fraction of a second");
        }
        // Milliseconds, truncated: the caller only accepts whole hours anyway.
        let ms: String = f[..n].chars().chain("000".chars()).take(3).collect();
        frac_ms = i64::from(digits(&ms, "bad fraction of a second")?);
        rest = &f[n..];
    }
    let offset_min: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return Err("bad UTC offset (Z or +HH:MM)");
            }
            let oh = i64::from(digits(&rest[1..3], "bad UTC offset")?);
            let om = i64::from(digits(&rest[4..6], "bad UTC offset")?);
            if oh > 23 || om > 59 {
                return Err("bad UTC offset");
            }
            let m = oh * 60 + om;
            if ob[0] == b'-' { -m } else { m }
        }
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second)
        - offset_min * 60;
    Ok(secs * 1_000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_times_parse_back_to_the_same_second() {
        for ms in [
            0i64,
            951_782_400_000,
            1_782_046_800_000,
            4_107_542_399_000,
            -86_400_000,
        ] {
            let s = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&s), Ok(ms), "{s}");
        }
        assert_eq!(format_rfc3339_ms(1_782_046_800_999), "2026-06-21T13:00:00Z");
        assert_eq!(format_rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rfc3339_times_give_unix_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        // attest's sample chains start at 2026-06-21T00:00:00Z.
        assert_eq!(
            parse_rfc3339_ms("2026-06-21T00:00:00Z"),
            Ok(attest::sample::SAMPLE_START.0 as i64)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-06-21T02:00:00+02:00"),
            Ok(attest::sample::SAMPLE_START.0 as i64)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29t12:30:00.250z"),
            Ok(1_709_209_800_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-02-29T00:00:00Z"),
            Err("no such date")
        );
        assert!(parse_rfc3339_ms("2026-06-21 00:00").is_err());
        assert!(
            parse_rfc3339_ms("2026-06-21T00:00:00").is_err(),
            "an offset is required"
        );
    }

    #[test]
    fn the_year_of_an_hour_turns_at_midnight_utc_on_new_year() {
        let h = |s: &str| (parse_rfc3339_ms(s).unwrap() / 3_600_000) as u64;
        assert_eq!(year_of_hour(0), 1970);
        assert_eq!(year_of_hour(h("2024-12-31T23:00:00Z")), 2024);
        assert_eq!(year_of_hour(h("2025-01-01T00:00:00Z")), 2025);
        assert_eq!(year_of_hour(h("2024-02-29T05:00:00Z")), 2024);
        assert_eq!(year_of_hour(h("2000-03-01T00:00:00Z")), 2000);
    }
}
