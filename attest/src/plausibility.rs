//! Plausibility: flags (never drops) records that are physically implausible. Flags travel
//! into statements and lower the trust tier there. Sans-IO: two consecutive records and the
//! site in, flags out. The controller raises them and the verifier recomputes them with this
//! very code (a bundle whose flags differ fails), so they cannot be dropped or invented.
//!
//! | flag | raised when |
//! |---|---|
//! | `solar_at_night` | a solar channel averaged more than max(2 % of peak, 2 W) while the sun stayed more than 4 degrees below the horizon |
//! | `solar_above_clear_sky` | a solar channel averaged more than the panels can give facing the sun under a clear sky (x 1.2, + 5 % of peak + 10 W for diffuse light and rounding) |
//! | `power_counter_mismatch` | over a window of at least ten minutes of records, a channel's stated power integrated differs from its counter delta by more than 10 % and 1 W (a window, because a source's own counter moves in whole steps) |
//! | `counter_jump` | a counter grew faster than 50 kW, or a solar counter faster than twice the array's peak |
//! | `unmetered` | the record says part of its interval was not metered on some channel (after an agent restart) |

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::f64::consts::PI;

use crate::msg::{ChainMessage, ChannelKind, Flag, FlagCode, MeterRecord, Site};
use crate::solar::{clear_sky_max_fraction, sun_elevation};

/// Most any channel may plausibly average, mW.
const MAX_ANY_MW: u64 = 50_000_000;

/// Flags for the interval between two consecutive records of one chain.
pub fn check_interval(site: &Site, prev: &MeterRecord, cur: &MeterRecord) -> Vec<Flag> {
    let mut flags = Vec::new();
    let (t0, t1) = (prev.link.timestamp.0, cur.link.timestamp.0);
    if t1 <= t0 {
        return flags;
    }
    let dt = t1 - t0;
    if !cur.unmetered.is_empty() {
        let parts: Vec<String> = cur
            .unmetered
            .iter()
            .map(|u| format!("channel {} for {} ms", u.channel, u.ms))
            .collect();
        flags.push(Flag {
            code: FlagCode::Unmetered,
            seq: cur.link.seq,
            detail: format!("not metered: {}", parts.join(", ")),
        });
    }
    let (lat, lon) = (
        site.lat_microdeg as f64 / 1e6,
        site.lon_microdeg as f64 / 1e6,
    );
    let elevations = [t0, t0 + dt / 2, t1].map(|t| sun_elevation(lat, lon, t));
    let max_elevation = elevations.iter().copied().fold(f64::MIN, f64::max);
    let peak_mw = site.panel_watts_peak as u64 * 1000;
    let seq = cur.link.seq;
    let mut flag = |code, detail: String| flags.push(Flag { code, seq, detail });
    for c in &cur.channels {
        let Some(p) = prev.channel(c.channel).filter(|p| p.kind == c.kind) else {
            continue;
        };
        let Some(delta) = c.energy.0.checked_sub(p.energy.0) else {
            continue;
        };
        let mean_mw = (delta as u128 * 1000 / dt as u128).min(u64::MAX as u128) as u64;
        let jump_limit = if c.kind == ChannelKind::Solar {
            (2 * peak_mw).max(50_000)
        } else {
            MAX_ANY_MW
        };
        if mean_mw > jump_limit {
            flag(
                FlagCode::CounterJump,
                format!("channel {}: {mean_mw} mW over {dt} ms", c.channel),
            );
            continue;
        }
        if c.kind != ChannelKind::Solar {
            continue;
        }
        if max_elevation < -4.0 * (PI / 180.0) && mean_mw > (peak_mw / 50).max(2_000) {
            flag(
                FlagCode::SolarAtNight,
                format!(
                    "channel {}: {mean_mw} mW with the sun below the horizon",
                    c.channel
                ),
            );
        } else {
            let fraction = elevations
                .iter()
                .map(|e| clear_sky_max_fraction(*e))
                .fold(0.0, f64::max);
            let bound = (peak_mw as f64 * (fraction * 1.2 + 0.05)) as u64 + 10_000;
            if mean_mw > bound {
                flag(
                    FlagCode::SolarAboveClearSky,
                    format!(
                        "channel {}: {mean_mw} mW, a clear sky gives at most {bound} mW",
                        c.channel
                    ),
                );
            }
        }
    }
    flags
}

/// The span over which stated power must agree with the counters: ten minutes.
pub const POWER_WINDOW_MS: u64 = 600_000;

/// Per channel: stated power integrated over a window of records against the counter's
/// delta over the same window. A window, not each interval, because a source's own counter
/// moves in whole steps (a SunSpec meter's `TotWh` in watt-hours: one step in a 10 s
/// interval is 360 W) while the stated power is what the meter reports; over ten minutes a
/// step is small against the energy, and a device whose stated power does not integrate
/// to its counters still shows.
#[derive(Default)]
struct PowerWindows {
    /// channel -> (window start ms, counter at the start, stated energy so far in mJ)
    open: alloc::collections::BTreeMap<u8, (u64, u64, u128)>,
}

impl PowerWindows {
    fn feed(&mut self, prev: &MeterRecord, cur: &MeterRecord) -> Vec<Flag> {
        let mut flags = Vec::new();
        let (t0, t1) = (prev.link.timestamp.0, cur.link.timestamp.0);
        if t1 <= t0 {
            return flags;
        }
        for c in &cur.channels {
            let Some(p) = prev.channel(c.channel).filter(|p| p.kind == c.kind) else {
                self.open.remove(&c.channel.0);
                continue;
            };
            if c.energy.0 < p.energy.0 {
                self.open.remove(&c.channel.0);
                continue;
            }
            let w = self.open.entry(c.channel.0).or_insert((t0, p.energy.0, 0));
            // mW x ms / 1000 = mJ.
            w.2 += c.power.0 as u128 * (t1 - t0) as u128 / 1000;
            let span = t1 - w.0;
            if span < POWER_WINDOW_MS {
                continue;
            }
            let counted = (c.energy.0 - w.1) as u128;
            let stated = w.2;
            // 10 % of the larger, and at least 1 W over the window (1 W x ms = 1 mJ/ms).
            let slack = (counted.max(stated) / 10).max(span as u128);
            if counted.abs_diff(stated) > slack {
                flags.push(Flag {
                    code: FlagCode::PowerCounterMismatch,
                    seq: cur.link.seq,
                    detail: format!(
                        "channel {}: stated power gives {stated} mJ over {span} ms, the counter {counted} mJ",
                        c.channel
                    ),
                });
            }
            *w = (t1, c.energy.0, 0);
        }
        flags
    }
}

/// Flags for every consecutive pair of records in a device's chain messages (restarts
/// break the pairs: no interval spans one), each pair judged by the site valid at its later
/// record (`site_at`: from the hello valid then).
pub fn check_chain<'a, 's>(
    site_at: impl Fn(crate::units::TimestampMs) -> &'s Site,
    chain: impl IntoIterator<Item = &'a ChainMessage>,
) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut prev: Option<&MeterRecord> = None;
    let mut windows = PowerWindows::default();
    for m in chain {
        match m {
            ChainMessage::MeterRecord(r) => {
                if let Some(p) = prev {
                    flags.extend(check_interval(site_at(r.link.timestamp), p, r));
                    flags.extend(windows.feed(p, r));
                }
                prev = Some(r);
            }
            ChainMessage::ChainRestart(_) => {
                prev = None;
                windows = PowerWindows::default();
            }
            ChainMessage::JobReceipt(_) => {}
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ChannelReading, Link};
    use crate::{ChannelId, DeviceId, Hash32, Millijoules, Milliwatts, SeqNo, TimestampMs};
    use alloc::vec;

    fn site() -> Site {
        Site {
            lat_microdeg: 52_520_000,
            lon_microdeg: 13_405_000,
            panel_watts_peak: 400,
            battery_wh: 1000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
        }
    }

    fn rec(
        seq: u64,
        t: u64,
        solar_mj: u64,
        solar_mw: u32,
        load_mj: u64,
        load_mw: u32,
    ) -> MeterRecord {
        let ch = |id, kind, e, p| ChannelReading {
            channel: ChannelId(id),
            kind,
            energy: Millijoules(e),
            power: Milliwatts(p),
            voltage_mv: None,
            soc_permille: None,
        };
        MeterRecord {
            link: Link {
                device: DeviceId([1; 16]),
                seq: SeqNo(seq),
                timestamp: TimestampMs(t),
                prev: Hash32::ZERO,
            },
            channels: vec![
                ch(0, ChannelKind::Solar, solar_mj, solar_mw),
                ch(1, ChannelKind::Load, load_mj, load_mw),
            ],
            unmetered: vec![],
        }
    }

    const MIDNIGHT: u64 = 1_782_000_000_000; // 2026-06-21T00:00Z
    const NOON: u64 = MIDNIGHT + 11 * 3_600_000; // about solar noon in Berlin

    fn codes(f: &[Flag]) -> Vec<FlagCode> {
        f.iter().map(|f| f.code).collect()
    }

    #[test]
    fn plausible_intervals_raise_nothing() {
        // 10 s at noon: 300 W solar (of 400 Wp), 80 W load.
        let a = rec(1, NOON, 1_000_000, 0, 500_000, 0);
        let b = rec(2, NOON + 10_000, 4_000_000, 300_000, 1_300_000, 80_000);
        assert!(
            check_interval(&site(), &a, &b).is_empty(),
            "{:?}",
            check_interval(&site(), &a, &b)
        );
        // Night, no solar.
        let a = rec(1, MIDNIGHT, 0, 0, 0, 0);
        let b = rec(2, MIDNIGHT + 10_000, 0, 0, 400_000, 40_000);
        assert!(check_interval(&site(), &a, &b).is_empty());
    }

    #[test]
    fn solar_at_night_above_clear_sky_mismatches_and_jumps_are_flagged() {
        let night = check_interval(
            &site(),
            &rec(1, MIDNIGHT, 0, 0, 0, 0),
            &rec(2, MIDNIGHT + 10_000, 1_000_000, 100_000, 0, 0),
        );
        assert_eq!(codes(&night), vec![FlagCode::SolarAtNight]);
        // 700 W from a 400 Wp array at noon.
        let bright = check_interval(
            &site(),
            &rec(1, NOON, 0, 0, 0, 0),
            &rec(2, NOON + 10_000, 7_000_000, 700_000, 0, 0),
        );
        assert_eq!(codes(&bright), vec![FlagCode::SolarAboveClearSky]);
        // Load says 80 W but the counter moves 400 W worth, for ten minutes.
        let lie: Vec<ChainMessage> = (0..=60u64)
            .map(|i| {
                ChainMessage::MeterRecord(rec(i, NOON + i * 10_000, 0, 0, i * 4_000_000, 80_000))
            })
            .collect();
        let s = site();
        let flags = check_chain(|_| &s, &lie);
        assert_eq!(codes(&flags), vec![FlagCode::PowerCounterMismatch]);
        assert_eq!(flags[0].seq, SeqNo(60), "raised where the window closes");
        // A meter whose own counter steps in whole watt-hours, with its true 1,234 W stated:
        // each 10 s interval is off by up to 360 W, ten minutes are not.
        let stepped: Vec<ChainMessage> = (0..=60u64)
            .map(|i| {
                let wh = i * 10 * 1_234 / 3_600; // whole Wh, floor
                ChainMessage::MeterRecord(rec(
                    i,
                    NOON + i * 10_000,
                    0,
                    0,
                    wh * 3_600_000,
                    1_234_000,
                ))
            })
            .collect();
        assert!(check_chain(|_| &s, &stepped).is_empty());
        // A load counter that jumped by a megawatt-second in 10 s.
        let jump = check_interval(
            &site(),
            &rec(1, NOON, 0, 0, 0, 0),
            &rec(2, NOON + 10_000, 0, 0, 1_000_000_000, 100_000_000),
        );
        assert_eq!(codes(&jump), vec![FlagCode::CounterJump]);
        assert_eq!(jump[0].seq, SeqNo(2));
    }
}
