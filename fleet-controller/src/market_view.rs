//! The market view: each approved device's offer (from its signed hello: GPUs, CPU,
//! board, price, site) joined with its live state (online, battery, sun and load from its
//! latest record, today's renewable share from its counters) and an energy runway: how
//! long the rig can run a given load on its battery above the reserve plus forecast sun
//! (the clear-sky model scaled by a typical sky). Filtered and sorted like a marketplace
//! search. The arithmetic is pure; [`view`] reads the store.

use attest::msg::{ChannelKind, Hello, MeterRecord, Site};
use attest::{DeviceId, Envelope};
use serde::Serialize;

use crate::store::{DeviceState, Store, StoreError};

/// Forecast sun is the clear-sky figure times this (a typical sky; the scheduler scales by
/// each site's measured ratio).
const TYPICAL_SKY: f64 = 0.7;
/// The runway is looked at this far ahead, hours.
pub const RUNWAY_HORIZON_H: u64 = 48;

/// One device in the market.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// The device.
    pub device: String,
    /// Its board.
    pub board: String,
    /// Its first GPU's model, memory and compute capability (`sm_87`); none for a CPU-only
    /// device.
    pub gpu: Option<String>,
    /// GPU memory, MiB (0 without a GPU).
    pub vram_mib: u32,
    /// CUDA compute capability, `major.minor` (none without a GPU).
    pub cuda: Option<String>,
    /// CPU model and cores.
    pub cpu: String,
    /// Asking price, micro-credits per GPU-hour.
    pub price_micro_per_gpu_hour: u64,
    /// Grid region.
    pub region: String,
    /// Heard from within the online window.
    pub online: bool,
    /// When last heard from (controller clock, ms).
    pub last_seen_ms: u64,
    /// Battery state of charge from its latest record, 0..1 (none without a battery).
    pub battery: Option<f64>,
    /// Solar power now, W.
    pub solar_w: f64,
    /// Load now, W.
    pub load_w: f64,
    /// Share of the load not drawn from the grid now, 0..1.
    pub renewable_now: f64,
    /// The same over today (UTC) from its counters, 0..1 (none before two records today).
    pub renewable_today: Option<f64>,
    /// How long it could run the asked load on battery and forecast sun, hours (capped at
    /// [`RUNWAY_HORIZON_H`]).
    pub runway_h: f64,
    /// Its reputation, 0..1 ([`crate::reputation`]): 0.5 for a device never seen; below
    /// [`crate::reputation::MIN_SCORE`] it gets no work.
    pub reputation: f64,
    /// What its latest right probe measured (throughput, energy an item, where it ran),
    /// beside the GPU it claims; none before one.
    pub measured: Option<crate::store::probes::ProbeResult>,
}

/// A market search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    /// Only devices whose GPU model contains this (any case).
    pub gpu: Option<String>,
    /// At least this much GPU memory, MiB.
    pub vram_min_mib: Option<u32>,
    /// At least this renewable share now, 0..1.
    pub renewable_now_min: Option<f64>,
    /// Only online devices.
    pub online_only: bool,
    /// The load a runway is for, W (on top of the rig's own).
    pub job_load_w: f64,
    /// `price` (cheapest first), `renewable` (greenest now first) or `runway` (longest
    /// first); otherwise by device id.
    pub sort: Option<String>,
}

/// Hours a rig can run `load_w` from `now_ms` on `stored_wh` above its reserve (at most
/// `span_wh`) and forecast sun on `panel_wp` at its site, stepping a quarter hour; capped
/// at [`RUNWAY_HORIZON_H`].
pub fn runway_hours(site: &Site, stored_wh: f64, span_wh: f64, load_w: f64, now_ms: u64) -> f64 {
    let (lat, lon) = (
        f64::from(site.lat_microdeg) / 1e6,
        f64::from(site.lon_microdeg) / 1e6,
    );
    let step_ms = 15 * 60_000u64;
    let mut energy = stored_wh.clamp(0.0, span_wh.max(0.0));
    let steps = RUNWAY_HORIZON_H * 4;
    for i in 0..steps {
        let t = now_ms + i * step_ms + step_ms / 2;
        let sun = f64::from(site.panel_watts_peak)
            * attest::solar::clear_sky_fraction(attest::solar::sun_elevation(lat, lon, t))
            * TYPICAL_SKY;
        energy = (energy + (sun - load_w) * 0.25).min(span_wh.max(0.0));
        if energy < 0.0 {
            // Ran out within this step: the part of it the energy lasted.
            let deficit_w = (load_w - sun).max(f64::EPSILON);
            let lasted = 0.25 + energy / deficit_w;
            return i as f64 * 0.25 + lasted.clamp(0.0, 0.25);
        }
    }
    RUNWAY_HORIZON_H as f64
}

/// The approved devices matching `search`, sorted.
pub fn view<S: Store + crate::store::marks::MarkStore + crate::store::probes::ProbeStore>(
    store: &S,
    search: &Search,
    now_ms: u64,
    online_within_ms: u64,
) -> Result<Vec<Listing>, StoreError> {
    let mut out = Vec::new();
    for d in store.devices()? {
        if d.state != DeviceState::Approved {
            continue;
        }
        let Some(hello) = Envelope::decode(&d.hello)
            .ok()
            .and_then(|e| e.open::<Hello>().ok())
        else {
            continue;
        };
        let last = crate::dispatch::last_record(store, d.id)?;
        let power = |kind: ChannelKind| {
            last.as_ref().map_or(0.0, |r| {
                r.channels
                    .iter()
                    .filter(|c| c.kind == kind)
                    .map(|c| f64::from(c.power.0) / 1000.0)
                    .sum()
            })
        };
        let (solar_w, load_w, grid_w) = (
            power(ChannelKind::Solar),
            power(ChannelKind::Load),
            power(ChannelKind::GridImport),
        );
        let renewable_now = if load_w > 0.0 {
            (1.0 - grid_w / load_w).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let soc = last
            .as_ref()
            .and_then(|r| r.channels.iter().find_map(|c| c.soc_permille))
            .map(|p| f64::from(p.min(1000)) / 1000.0);
        let site = &hello.site;
        let stored_wh = soc.map_or(0.0, |s| s * f64::from(site.battery_wh))
            - f64::from(site.battery_reserve_wh);
        let span_wh = f64::from(site.battery_wh.saturating_sub(site.battery_reserve_wh));
        let gpu = hello.hardware.gpus.first();
        let listing = Listing {
            device: d.id.to_string(),
            board: hello.hardware.board.clone(),
            gpu: gpu.map(|g| g.model.clone()),
            vram_mib: gpu.map_or(0, |g| g.vram_mib),
            cuda: gpu
                .and_then(|g| g.compute_capability())
                .map(|(a, b)| format!("{a}.{b}")),
            cpu: format!(
                "{} ({} cores)",
                hello.hardware.cpu_model, hello.hardware.cpu_cores
            ),
            price_micro_per_gpu_hour: hello.price_micro_per_gpu_hour,
            region: site.grid_region.clone(),
            online: now_ms.saturating_sub(d.last_seen_ms) <= online_within_ms,
            last_seen_ms: d.last_seen_ms,
            battery: (site.battery_wh > 0).then_some(soc).flatten(),
            solar_w,
            load_w,
            renewable_now,
            renewable_today: renewable_today(store, d.id, now_ms)?,
            runway_h: runway_hours(site, stored_wh, span_wh, load_w + search.job_load_w, now_ms),
            reputation: crate::reputation::device_score(store, d.id, now_ms)?,
            measured: store.last_good_probe(d.id)?.and_then(|p| p.result),
        };
        if matches(&listing, search) {
            out.push(listing);
        }
    }
    let key = |a: &Listing, b: &Listing| match search.sort.as_deref() {
        Some("price") => a.price_micro_per_gpu_hour.cmp(&b.price_micro_per_gpu_hour),
        Some("renewable") => b.renewable_now.total_cmp(&a.renewable_now),
        Some("runway") => b.runway_h.total_cmp(&a.runway_h),
        _ => std::cmp::Ordering::Equal,
    };
    out.sort_by(|a, b| key(a, b).then_with(|| a.device.cmp(&b.device)));
    Ok(out)
}

fn matches(l: &Listing, s: &Search) -> bool {
    s.gpu.as_deref().is_none_or(|want| {
        l.gpu
            .as_deref()
            .is_some_and(|m| m.to_lowercase().contains(&want.to_lowercase()))
    }) && s.vram_min_mib.is_none_or(|v| l.vram_mib >= v)
        && s.renewable_now_min.is_none_or(|r| l.renewable_now >= r)
        && (!s.online_only || l.online)
}

/// `1 - grid import / load` over today's (UTC) records, from the first and last record's
/// counters.
fn renewable_today<S: Store>(
    store: &S,
    device: DeviceId,
    now_ms: u64,
) -> Result<Option<f64>, StoreError> {
    let day_start = now_ms - now_ms % 86_400_000;
    let records: Vec<MeterRecord> = store
        .items_between(device, day_start, now_ms)?
        .iter()
        .filter_map(|it| Envelope::decode(&it.envelope).ok()?.open().ok())
        .collect();
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(None);
    };
    let energy = |r: &MeterRecord, kind: ChannelKind| -> u64 {
        r.channels
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.energy.0)
            .sum()
    };
    let load = energy(last, ChannelKind::Load).saturating_sub(energy(first, ChannelKind::Load));
    let grid = energy(last, ChannelKind::GridImport)
        .saturating_sub(energy(first, ChannelKind::GridImport));
    Ok((load > 0).then(|| (1.0 - grid as f64 / load as f64).clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(lat: f64, lon: f64) -> Site {
        Site {
            lat_microdeg: (lat * 1e6) as i32,
            lon_microdeg: (lon * 1e6) as i32,
            panel_watts_peak: 400,
            battery_wh: 1_000,
            battery_reserve_wh: 200,
            grid_region: "DE".into(),
        }
    }

    /// 2026-06-21 00:00 UTC.
    const JUNE_21: u64 = 1_782_000_000_000;

    #[test]
    fn a_battery_alone_lasts_its_energy_over_the_load_and_the_sun_stretches_it() {
        // Berlin at midnight UTC: no sun before about 02:45; 200 Wh above the reserve at
        // 100 W: 2 h.
        let night = runway_hours(&site(52.52, 13.4), 200.0, 800.0, 100.0, JUNE_21);
        assert!((night - 2.0).abs() < 0.01, "{night}");
        // The same at noon: the sun carries the load into the evening, past 4 h.
        let noon = runway_hours(
            &site(52.52, 13.4),
            400.0,
            800.0,
            100.0,
            JUNE_21 + 12 * 3_600_000,
        );
        assert!(noon > 8.0, "{noon}");
        // A small load the sun more than pays by day: the horizon.
        let small = runway_hours(
            &site(52.52, 13.4),
            800.0,
            800.0,
            10.0,
            JUNE_21 + 12 * 3_600_000,
        );
        assert_eq!(small, RUNWAY_HORIZON_H as f64);
        // No battery at night: nothing.
        assert_eq!(
            runway_hours(&site(52.52, 13.4), 0.0, 0.0, 50.0, JUNE_21),
            0.0
        );
    }
}
