//! Charts drawn on the server as SVG: no script, nothing fetched, readable by a screen
//! reader through their title and the table beside them. Colours come from the stylesheet
//! by class (`s-solar`, `s-load`...), so the page's palette and the charts' agree.

use std::fmt::Write;

use maud::{Markup, PreEscaped, html};

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub name: &'static str,
    /// Its class (`s-solar`): the stylesheet colours it.
    pub class: &'static str,
    /// (time ms, value) in time order.
    pub points: Vec<(u64, f64)>,
}

/// A round step near `span / 4` (1, 2 or 5 times a power of ten).
fn nice_step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract() == 0.0 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `HH:MM` (UTC) of a time, or `MM-DD` when the chart spans days.
fn fmt_time(ms: u64, span_ms: u64) -> String {
    let s = ms / 1000;
    if span_ms > 2 * 86_400_000 {
        let (_, m, d) = civil(s / 86_400);
        format!("{m:02}-{d:02}")
    } else {
        format!("{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60)
    }
}

/// Year, month, day of a day number since 1970-01-01 (Howard Hinnant's civil_from_days).
pub fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A line chart of `series` over `from..to` (ms), values in `unit`.
pub fn lines(title: &str, unit: &str, from: u64, to: u64, series: &[Series]) -> Markup {
    let span = to.saturating_sub(from).max(1);
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for p in series.iter().flat_map(|s| &s.points) {
        lo = lo.min(p.1);
        hi = hi.max(p.1);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let step = nice_step(hi - lo);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let x = |t: u64| LEFT + (t.saturating_sub(from) as f64 / span as f64) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let mut svg = frame(title, unit, lo, hi, step);
    for i in 0..=4u64 {
        let t = from + span * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            x(t),
            H - 8.0,
            fmt_time(t, span)
        );
    }
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (i, (t, v)) in s.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                x(*t),
                y(*v)
            );
        }
        let _ = write!(svg, r#"<path class="line {}" d="{d}"/>"#, s.class);
    }
    svg.push_str("</svg>");
    html! {
        figure.chart {
            (PreEscaped(svg))
            figcaption {
                @for s in series {
                    span.key { span class={"swatch " (s.class)} {} (s.name) }
                }
            }
        }
    }
}

/// A bar chart of stacked parts per label (`(label, [(series index, value)])`).
pub fn stacked_bars(
    title: &str,
    unit: &str,
    names: &[(&'static str, &'static str)],
    bars: &[(String, Vec<f64>)],
) -> Markup {
    let hi_raw = bars
        .iter()
        .map(|(_, parts)| parts.iter().sum::<f64>())
        .fold(0.0f64, f64::max);
    let step = nice_step(if hi_raw > 0.0 { hi_raw } else { 1.0 });
    let hi = ((hi_raw / step).ceil() * step).max(step);
    let y = |v: f64| TOP + (hi - v) / hi * (H - TOP - BOTTOM);
    let n = bars.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    let bar_w = (slot * 0.7).max(1.0);
    let mut svg = frame(title, unit, 0.0, hi, step);
    for (i, (label, parts)) in bars.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let mut base = 0.0;
        for (k, part) in parts.iter().enumerate() {
            if *part <= 0.0 {
                continue;
            }
            let class = names.get(k).map_or("", |n| n.1);
            let _ = write!(
                svg,
                r#"<rect class="bar {class}" x="{x0:.1}" y="{:.1}" width="{bar_w:.1}" height="{:.1}"/>"#,
                y(base + part),
                y(base) - y(base + part)
            );
            base += part;
        }
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + bar_w / 2.0,
            H - 8.0,
            maud::html! { (label) }.into_string()
        );
    }
    svg.push_str("</svg>");
    html! {
        figure.chart {
            (PreEscaped(svg))
            figcaption {
                @for (name, class) in names {
                    span.key { span class={"swatch " (class)} {} (name) }
                }
            }
        }
    }
}

/// The chart's opening: the SVG element with its title, the value grid from `lo` to `hi`
/// every `step` with its labels, and the unit.
fn frame(title: &str, unit: &str, lo: f64, hi: f64, step: f64) -> String {
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="c-{id}"><title id="c-{id}">{t}</title>"#,
        id = title_id(title),
        t = maud::html! { (title) }.into_string(),
    );
    let mut v = lo;
    while v <= hi + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = yy + 4.0,
            label = fmt_value(v),
        );
        v += step;
    }
    let _ = write!(
        svg,
        r#"<text class="unit" x="4" y="{:.1}">{}</text>"#,
        TOP + 8.0,
        maud::html! { (unit) }.into_string()
    );
    svg
}

fn title_id(title: &str) -> String {
    title
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// At most `max` points: the mean of each of `max` equal slices of `from..to` that has any.
pub fn downsample(points: &[(u64, f64)], from: u64, to: u64, max: usize) -> Vec<(u64, f64)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    let span = to.saturating_sub(from).max(1);
    let mut sums = vec![(0u128, 0.0f64, 0u32); max];
    for &(t, v) in points {
        let i = ((t.saturating_sub(from) as u128 * max as u128) / span as u128).min(max as u128 - 1)
            as usize;
        sums[i].0 += u128::from(t);
        sums[i].1 += v;
        sums[i].2 += 1;
    }
    sums.into_iter()
        .filter(|s| s.2 > 0)
        .map(|(t, v, n)| ((t / u128::from(n)) as u64, v / f64::from(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(100.0), 50.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(4000.0), 1000.0);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_422), (2025, 11, 30));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_line_chart_places_its_points_and_escapes_its_text() {
        let s = Series {
            name: "solar",
            class: "s-solar",
            points: vec![(0, 0.0), (50, 100.0), (100, 50.0)],
        };
        let m = lines("Power <now>", "W", 0, 100, &[s]).into_string();
        assert!(m.contains("Power &lt;now&gt;"), "{m}");
        assert!(!m.contains("<now>"));
        // First point at the left edge and the bottom (0 W), second at the middle and top.
        assert!(
            m.contains(r#"d="M56.0,192.0L402.0,12.0L748.0,102.0""#),
            "{m}"
        );
        assert!(m.contains("s-solar"));
    }

    #[test]
    fn bars_stack() {
        let m = stacked_bars(
            "Energy",
            "kWh",
            &[("solar", "s-solar"), ("grid", "s-grid")],
            &[
                ("11-29".into(), vec![2.0, 2.0]),
                ("11-30".into(), vec![1.0, 0.0]),
            ],
        )
        .into_string();
        assert_eq!(m.matches("<rect").count(), 3, "{m}");
        assert!(m.contains("11-29") && m.contains("s-grid"));
    }

    #[test]
    fn downsampling_keeps_means() {
        let pts: Vec<(u64, f64)> = (0..100).map(|i| (i, i as f64)).collect();
        let d = downsample(&pts, 0, 100, 10);
        assert_eq!(d.len(), 10);
        assert_eq!(d[0], (4, 4.5));
        assert_eq!(d[9], (94, 94.5));
        assert_eq!(downsample(&pts[..5], 0, 100, 10).len(), 5);
    }
}
