//! The fleet page (every device, live), a device's page (power charts, daily energy, its
//! chain, its state) and the power history as CSV.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use attest::msg::{ChannelKind, Hello, MeterRecord};
use attest::{DeviceId, Envelope};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::{Deserialize, Serialize};

use super::charts::{self, Series};
use super::page::{self, Nav};
use super::session::{CsrfForm, Viewer, same_origin};
use crate::api::{ApiState, AppError, Auth};
use crate::market_view::{Listing, Search};
use crate::store::jobs::JobStore;
use crate::store::pool::SqlitePool;
use crate::store::{DeviceState, Store};

/// A device is online when heard from within this long (the market's window).
const ONLINE_MS: u64 = 60_000;

/// One row of the fleet table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    id: String,
    state: &'static str,
    region: String,
    board: String,
    agent: String,
    online: bool,
    solar_w: Option<f64>,
    load_w: Option<f64>,
    battery: Option<f64>,
    renewable_now: Option<f64>,
    renewable_today: Option<f64>,
    runway_h: Option<f64>,
    reputation: Option<f64>,
    job: Option<String>,
    last_seen_ms: u64,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.0} %", v * 100.0))
}

fn watts(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} W"))
}

fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..=89 => format!("{s} s ago"),
        90..=5399 => format!("{} min ago", s / 60),
        5400..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

impl Row {
    /// The cells live updates replace, by column, as the table shows them.
    fn cells(&self, now: u64) -> Vec<(&'static str, String)> {
        vec![
            (
                "online",
                if self.online { "online" } else { "offline" }.into(),
            ),
            ("solar", watts(self.solar_w)),
            ("load", watts(self.load_w)),
            ("battery", pct(self.battery)),
            ("renewable_now", pct(self.renewable_now)),
            ("renewable_today", pct(self.renewable_today)),
            (
                "runway",
                self.runway_h.map_or("–".into(), |h| format!("{h:.1} h")),
            ),
            ("job", self.job.clone().unwrap_or_else(|| "–".into())),
            ("seen", ago(now, self.last_seen_ms)),
        ]
    }
}

fn rows(pool: &Arc<SqlitePool>, viewer: &Viewer, now: u64) -> Result<Vec<Row>, AppError> {
    let st = pool.get()?;
    let search = Search {
        job_load_w: 60.0,
        ..Search::default()
    };
    let listings: HashMap<String, Listing> =
        crate::market_view::view(&*st, &search, now, ONLINE_MS)?
            .into_iter()
            .map(|l| (l.device.clone(), l))
            .collect();
    let mut running: HashMap<DeviceId, String> = HashMap::new();
    for job in st.open_jobs()? {
        if let Some(lease) = st.job_lease(job.id)? {
            // Another buyer's job id is not shown (ids are the buyers' own business).
            let shown = if job.owner == viewer.caller.account || viewer.operator() {
                job.id.to_string()[..8].to_string()
            } else {
                "busy".into()
            };
            running.insert(lease.device, shown);
        }
    }
    let mut out = Vec::new();
    for d in st.devices()? {
        let id = d.id.to_string();
        let hello: Option<Hello> = Envelope::decode(&d.hello).ok().and_then(|e| e.open().ok());
        let l = listings.get(&id);
        out.push(Row {
            state: d.state.as_str(),
            region: hello
                .as_ref()
                .map(|h| h.site.grid_region.clone())
                .unwrap_or_default(),
            board: hello
                .as_ref()
                .map(|h| h.hardware.board.clone())
                .unwrap_or_default(),
            agent: hello
                .as_ref()
                .map(|h| h.version_parts().0.to_string())
                .unwrap_or_default(),
            online: now.saturating_sub(d.last_seen_ms) <= ONLINE_MS,
            solar_w: l.map(|l| l.solar_w),
            load_w: l.map(|l| l.load_w),
            battery: l.and_then(|l| l.battery),
            renewable_now: l.map(|l| l.renewable_now),
            renewable_today: l.and_then(|l| l.renewable_today),
            runway_h: l.map(|l| l.runway_h),
            reputation: l.map(|l| l.reputation),
            job: running.remove(&d.id),
            last_seen_ms: d.last_seen_ms,
            id,
        });
    }
    Ok(out)
}

/// The fleet table's query: a filter and a sort.
#[derive(Debug, Default, Deserialize)]
pub struct FleetQuery {
    /// Text the id, region, board or agent version contains.
    q: Option<String>,
    /// Only this state (`pending`, `approved`, `revoked`) or `online`/`offline`.
    show: Option<String>,
    /// The column to sort by.
    sort: Option<String>,
    /// `desc` for descending.
    dir: Option<String>,
}

fn sort_rows(rows: &mut [Row], key: &str, desc: bool) {
    let num = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
    rows.sort_by(|a, b| {
        let o = match key {
            "state" => a.state.cmp(b.state),
            "region" => a.region.cmp(&b.region),
            "solar" => num(a.solar_w).total_cmp(&num(b.solar_w)),
            "load" => num(a.load_w).total_cmp(&num(b.load_w)),
            "battery" => num(a.battery).total_cmp(&num(b.battery)),
            "renewable_today" => num(a.renewable_today).total_cmp(&num(b.renewable_today)),
            "runway" => num(a.runway_h).total_cmp(&num(b.runway_h)),
            "seen" => a.last_seen_ms.cmp(&b.last_seen_ms),
            _ => a.id.cmp(&b.id),
        };
        if desc { o.reverse() } else { o }
    });
}

const COLUMNS: [(&str, &str, bool); 12] = [
    ("id", "Device", true),
    ("state", "State", true),
    ("online", "Link", false),
    ("region", "Region", true),
    ("solar", "Solar", true),
    ("load", "Load", true),
    ("battery", "Battery", true),
    ("renewable_now", "Renewable now", false),
    ("renewable_today", "Renewable today", true),
    ("runway", "Runway", true),
    ("job", "Job", false),
    ("seen", "Last heard", true),
];

fn sort_link(q: &FleetQuery, col: &str) -> String {
    let desc = q.sort.as_deref() == Some(col) && q.dir.as_deref() != Some("desc");
    let mut s = format!("/?sort={col}&dir={}", if desc { "desc" } else { "asc" });
    if let Some(t) = &q.q {
        s.push_str(&format!("&q={}", super::url_encode(t)));
    }
    if let Some(t) = &q.show {
        s.push_str(&format!("&show={}", super::url_encode(t)));
    }
    s
}

/// `GET /`: the fleet.
pub async fn fleet(
    State(s): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<FleetQuery>,
) -> Response {
    let v2 = viewer.clone();
    let pool = s.store.clone();
    let now = crate::runtime::now_ms();
    let all = match tokio::task::spawn_blocking(move || rows(&pool, &v2, now)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return page::failed(&viewer, Nav::Fleet, "Fleet", e);
        }
        Err(e) => {
            return page::failed(
                &viewer,
                Nav::Fleet,
                "Fleet",
                crate::api::AppError::Internal(e.to_string()),
            );
        }
    };
    let total = all.len();
    let online = all.iter().filter(|r| r.online).count();
    let text = q.q.clone().unwrap_or_default().to_ascii_lowercase();
    let mut shown: Vec<Row> = all
        .into_iter()
        .filter(|r| {
            text.is_empty()
                || [&r.id, &r.region, &r.board, &r.agent]
                    .iter()
                    .any(|f| f.to_ascii_lowercase().contains(&text))
        })
        .filter(|r| match q.show.as_deref() {
            None | Some("") | Some("all") => true,
            Some("online") => r.online,
            Some("offline") => !r.online,
            Some(state) => r.state == state,
        })
        .collect();
    sort_rows(
        &mut shown,
        q.sort.as_deref().unwrap_or("id"),
        q.dir.as_deref() == Some("desc"),
    );
    let solar: f64 = shown.iter().filter_map(|r| r.solar_w).sum();
    let load: f64 = shown.iter().filter_map(|r| r.load_w).sum();
    let body = html! {
        h1 { "Fleet" }
        p.summary #fleet-summary {
            (total) " devices, " span #online-count { (online) } " online. Now: "
            strong { (format!("{solar:.0} W")) } " of sun, " strong { (format!("{load:.0} W")) } " of load."
        }
        form.filters method="get" action="/" role="search" {
            label for="q" { "Find" }
            input #q type="search" name="q" value=(q.q.clone().unwrap_or_default()) placeholder="id, region, board, version";
            label for="show" { "Show" }
            select #show name="show" {
                @for (v, l) in [("all", "all devices"), ("online", "online"), ("offline", "offline"), ("approved", "approved"), ("pending", "pending"), ("revoked", "revoked")] {
                    option value=(v) selected[q.show.as_deref() == Some(v)] { (l) }
                }
            }
            @if let Some(sort) = &q.sort { input type="hidden" name="sort" value=(sort); }
            @if let Some(dir) = &q.dir { input type="hidden" name="dir" value=(dir); }
            button type="submit" { "Filter" }
        }
        table.fleet data-live="/events/fleet" {
            caption { "Devices (" (shown.len()) " shown). Power is the mean over each device's last record; live." }
            thead { tr {
                @for (key, label, sortable) in COLUMNS {
                    th scope="col" aria-sort=[(q.sort.as_deref() == Some(key)).then(|| if q.dir.as_deref() == Some("desc") { "descending" } else { "ascending" })] {
                        @if sortable { a href=(sort_link(&q, key)) { (label) } } @else { (label) }
                    }
                }
            } }
            tbody {
                @for r in &shown {
                    tr data-device=(r.id) {
                        td { a href={"/devices/" (r.id)} { code { (r.id) } } br; small { (r.board) " · " (r.agent) } }
                        td { span class={"state " (r.state)} { (r.state) } }
                        @for (col, text) in r.cells(now).into_iter().take(1) {
                            td data-col=(col) class=(if r.online { "online" } else { "offline" }) { (text) }
                        }
                        td { (r.region) }
                        @for (col, text) in r.cells(now).into_iter().skip(1) {
                            td.num data-col=(col) { (text) }
                        }
                    }
                }
            }
        }
        @if shown.is_empty() { p { "No device matches." } }
    };
    page::page("Fleet", &viewer, Nav::Fleet, body).into_response()
}

/// `GET /events/fleet`: every 5 s, the fleet table's live cells as JSON (`event: fleet`).
pub async fn fleet_events(State(s): State<ApiState>, viewer: Viewer) -> Response {
    let stream = futures_util::stream::unfold(
        (s.store.clone(), viewer, true),
        |(pool, viewer, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let (p, v) = (pool.clone(), viewer.clone());
            let now = crate::runtime::now_ms();
            let data = match tokio::task::spawn_blocking(move || rows(&p, &v, now)).await {
                Ok(Ok(rows)) => serde_json::json!({
                    "online": rows.iter().filter(|r| r.online).count(),
                    "rows": rows.iter().map(|r| serde_json::json!({
                        "id": r.id,
                        "online": r.online,
                        "cells": r.cells(now).into_iter().collect::<HashMap<_, _>>(),
                    })).collect::<Vec<_>>(),
                }),
                _ => serde_json::json!({"error": "the store could not be read"}),
            };
            let event = Event::default().event("fleet").data(data.to_string());
            Some((Ok::<_, Infallible>(event), (pool, viewer, false)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A device page's query: how far back its charts go.
#[derive(Debug, Default, Deserialize)]
pub struct DeviceQuery {
    /// Power chart span: 6, 24, 72 or 168 hours (24 by default).
    hours: Option<u64>,
    /// Daily energy: this many days (1 to 31, 7 by default), and as many before compared.
    days: Option<u64>,
}

struct Power {
    series: Vec<Series>,
    soc: Vec<(u64, f64)>,
    records: usize,
}

const KINDS: [(ChannelKind, &str, &str); 5] = [
    (ChannelKind::Solar, "solar", "s-solar"),
    (ChannelKind::Load, "load", "s-load"),
    (ChannelKind::GridImport, "grid import", "s-grid"),
    (ChannelKind::Gpu, "GPU", "s-gpu"),
    (
        ChannelKind::BatteryDischarge,
        "battery (+ out, − in)",
        "s-battery",
    ),
];

fn records(
    pool: &Arc<SqlitePool>,
    id: DeviceId,
    from: u64,
    to: u64,
) -> Result<Vec<MeterRecord>, AppError> {
    let st = pool.get()?;
    Ok(st
        .items_between(id, from, to)?
        .into_iter()
        .filter_map(|i| {
            Envelope::decode(&i.envelope)
                .ok()
                .and_then(|e| e.open::<MeterRecord>().ok())
        })
        .collect())
}

fn power(recs: &[MeterRecord], from: u64, to: u64) -> Power {
    let mut by: Vec<Vec<(u64, f64)>> = vec![Vec::new(); KINDS.len()];
    let mut soc = Vec::new();
    for r in recs {
        let t = r.link.timestamp.0;
        let mut battery = None::<f64>;
        for c in &r.channels {
            let w = c.power.0 as f64 / 1000.0;
            match c.kind {
                ChannelKind::BatteryDischarge => *battery.get_or_insert(0.0) += w,
                ChannelKind::BatteryCharge => *battery.get_or_insert(0.0) -= w,
                kind => {
                    if let Some(i) = KINDS.iter().position(|k| k.0 == kind) {
                        by[i].push((t, w));
                    }
                }
            }
            if let Some(p) = c.soc_permille {
                soc.push((t, f64::from(p) / 10.0));
            }
        }
        if let Some(b) = battery {
            by[4].push((t, b));
        }
    }
    Power {
        series: KINDS
            .iter()
            .zip(by)
            .filter(|(_, pts)| !pts.is_empty())
            .map(|(k, pts)| Series {
                name: k.1,
                class: k.2,
                points: charts::downsample(&pts, from, to, 360),
            })
            .collect(),
        soc: charts::downsample(&soc, from, to, 360),
        records: recs.len(),
    }
}

/// Energy supplied per UTC day, kWh: (day, [solar, battery, grid]), and the renewable kWh.
fn daily(
    hours: &[attest::carbon::HourLine],
    from_day: u64,
    days: u64,
) -> Vec<(u64, [f64; 3], f64)> {
    let mut out: Vec<(u64, [f64; 3], f64)> = (from_day..from_day + days)
        .map(|d| (d, [0.0; 3], 0.0))
        .collect();
    for h in hours {
        let day = h.hour / 24;
        if let Some(slot) = day
            .checked_sub(from_day)
            .and_then(|i| out.get_mut(i as usize))
        {
            let kwh = |mj: u64| mj as f64 / 3.6e9;
            slot.1[0] += kwh(h.energy.solar.0);
            slot.1[1] += kwh(h.energy.battery_discharge.0);
            slot.1[2] += kwh(h.energy.grid_import.0);
            slot.2 += kwh(h.renewable.0);
        }
    }
    out
}

/// `GET /devices/{id}`.
pub async fn device(
    State(s): State<ApiState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DeviceQuery>,
) -> Response {
    let Ok(id) = DeviceId::parse(&id) else {
        return page::problem(
            &viewer,
            Nav::Fleet,
            "No such device",
            "That is not a device id.",
        )
        .into_response();
    };
    let hours = q
        .hours
        .filter(|h| [6, 24, 72, 168].contains(h))
        .unwrap_or(24);
    let days = q.days.unwrap_or(7).clamp(1, 31);
    let now = crate::runtime::now_ms();
    let from = now.saturating_sub(hours * 3_600_000);
    let today = now / 86_400_000;
    let first_day = (today + 1).saturating_sub(days);
    let prev_day = first_day.saturating_sub(days);
    let pool = s.store.clone();
    let v2 = viewer.clone();
    let intensity = s.intensity.clone();
    let made = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let st = pool.get()?;
        let dev = st.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        let hello: Option<Hello> = Envelope::decode(&dev.hello)
            .ok()
            .and_then(|e| e.open().ok());
        let count = st.count_items(id)?;
        let last = st.last_item(id)?.map(|(seq, _)| seq.0);
        drop(st);
        let recs = records(&pool, id, from, now)?;
        let st = pool.get()?;
        let statement =
            crate::accounting::device_hours(&*st, &dev, &intensity, prev_day * 86_400_000, now)
                .ok();
        let row = rows(&pool, &v2, now)?
            .into_iter()
            .find(|r| r.id == id.to_string());
        Ok((
            dev,
            hello,
            count,
            last,
            power(&recs, from, now),
            statement,
            row,
        ))
    })
    .await;
    let (dev, hello, count, last, power, statement, row) = match made {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return page::failed(&viewer, Nav::Fleet, "Device", e);
        }
        Err(e) => {
            return page::failed(
                &viewer,
                Nav::Fleet,
                "Device",
                crate::api::AppError::Internal(e.to_string()),
            );
        }
    };
    let hours_lines = statement
        .as_ref()
        .map(|s| s.statement.hours.clone())
        .unwrap_or_default();
    let this = daily(&hours_lines, first_day, days);
    let before = daily(&hours_lines, prev_day, days);
    let total = |d: &[(u64, [f64; 3], f64)]| {
        let e: f64 = d.iter().map(|x| x.1.iter().sum::<f64>()).sum();
        let r: f64 = d.iter().map(|x| x.2).sum();
        (e, r)
    };
    let (e_now, r_now) = total(&this);
    let (e_before, r_before) = total(&before);
    let share = |r: f64, e: f64| {
        if e > 0.0 {
            format!("{:.0} %", r / e * 100.0)
        } else {
            "–".into()
        }
    };
    let ids = id.to_string();
    let body = html! {
        h1 { "Device " code { (ids) } }
        dl.facts {
            dt { "State" } dd { span class={"state " (dev.state.as_str())} { (dev.state.as_str()) } }
            @if let Some(r) = &row {
                dt { "Link" } dd { (if r.online { "online" } else { "offline" }) ", last heard " (ago(now, r.last_seen_ms)) }
                dt { "Battery" } dd { (pct(r.battery)) }
                dt { "Renewable today" } dd { (pct(r.renewable_today)) }
                dt { "Reputation" } dd { (r.reputation.map_or("–".into(), |v| format!("{v:.2}"))) }
                dt { "Job" } dd { (r.job.clone().unwrap_or_else(|| "none".into())) }
            }
            @if let Some(h) = &hello {
                dt { "Board" } dd { (h.hardware.board) }
                dt { "GPUs" } dd { @if h.hardware.gpus.is_empty() { "none (CPU)" } @else { @for g in &h.hardware.gpus { (g.model) " " } } }
                dt { "Agent" } dd { (h.agent_version) }
                dt { "Site" } dd { (format!("{:.2}°, {:.2}°", f64::from(h.site.lat_microdeg) / 1e6, f64::from(h.site.lon_microdeg) / 1e6)) ", region " (h.site.grid_region) ", " (h.site.panel_watts_peak) " Wp, " (h.site.battery_wh) " Wh battery" }
            }
            dt { "Chain" } dd { (count) " messages stored" @if let Some(l) = last { ", latest #" (l) } }
        }
        @if viewer.operator() {
            div.actions {
                @if dev.state != DeviceState::Approved {
                    form method="post" action={"/devices/" (ids) "/approve"} {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Approve" }
                    }
                }
                @if dev.state != DeviceState::Revoked {
                    form method="post" action={"/devices/" (ids) "/revoke"} {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button.danger type="submit" { "Revoke" }
                    }
                }
            }
        }
        h2 { "Power" }
        nav.range aria-label="Chart span" {
            @for h in [6u64, 24, 72, 168] {
                @if h == hours { strong { (h) " h" } } @else { a href={"/devices/" (ids) "?hours=" (h) "&days=" (days)} { (h) " h" } }
            }
            " · " a href={"/devices/" (ids) "/power.csv?hours=" (hours)} download { "CSV" }
        }
        @if power.records == 0 {
            p { "No records in the last " (hours) " hours." }
        } @else {
            (charts::lines(&format!("Power by channel, last {hours} hours (UTC)"), "W", from, now, &power.series))
            @if !power.soc.is_empty() {
                (charts::lines("Battery state of charge", "%", from, now, &[Series { name: "state of charge", class: "s-soc", points: power.soc.clone() }]))
            }
            p.note { (power.records) " signed records drawn." }
        }
        h2 { "Energy by day" }
        form.filters method="get" action={"/devices/" (ids)} {
            input type="hidden" name="hours" value=(hours);
            label for="days" { "Days" }
            input #days type="number" name="days" min="1" max="31" value=(days);
            button type="submit" { "Show" }
        }
        (charts::stacked_bars(
            "Energy supplied per UTC day, by source",
            "kWh",
            &[("solar", "s-solar"), ("battery", "s-battery"), ("grid", "s-grid")],
            &this.iter().map(|(d, parts, _)| { let (_, m, dd) = charts::civil(*d); (format!("{m:02}-{dd:02}"), parts.to_vec()) }).collect::<Vec<_>>(),
        ))
        table.compare {
            caption { "This period against the one before (hourly matched renewable share)" }
            thead { tr { th scope="col" { "Period" } th scope="col" { "Energy" } th scope="col" { "Renewable" } } }
            tbody {
                tr { th scope="row" { "Last " (days) " days" } td.num { (format!("{e_now:.2} kWh")) } td.num { (share(r_now, e_now)) } }
                tr { th scope="row" { "The " (days) " before" } td.num { (format!("{e_before:.2} kWh")) } td.num { (share(r_before, e_before)) } }
            }
        }
        p { a href={"/api/v1/devices/" (ids) "/hours?from=" (first_day * 86_400_000) "&to=" (now)} { "These hours as JSON" } " · " a href={"/api/v1/devices/" (ids) "/bundle?from=" (first_day * 86_400_000) "&to=" (now)} { "Proof bundle of the period" } }
    };
    page::page(&format!("Device {ids}"), &viewer, Nav::Fleet, body).into_response()
}

/// `GET /devices/{id}/power.csv`: every channel reading of the span, one a line.
pub async fn power_csv(
    State(s): State<ApiState>,
    _viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, AppError> {
    let id = DeviceId::parse(&id).map_err(|e| AppError::BadDeviceId(format!("{id}: {e}")))?;
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 31);
    let now = crate::runtime::now_ms();
    let from = now.saturating_sub(hours * 3_600_000);
    let pool = s.store.clone();
    let recs = tokio::task::spawn_blocking(move || records(&pool, id, from, now))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
    let mut out =
        String::from("timestamp_ms,seq,channel,kind,power_w,energy_j,voltage_v,soc_percent\n");
    for r in &recs {
        for c in &r.channels {
            out.push_str(&format!(
                "{},{},{},{},{:.3},{:.3},{},{}\n",
                r.link.timestamp.0,
                r.link.seq.0,
                c.channel.0,
                serde_json::to_value(c.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                c.power.0 as f64 / 1000.0,
                c.energy.0 as f64 / 1000.0,
                c.voltage_mv
                    .map_or(String::new(), |v| format!("{:.3}", f64::from(v) / 1000.0)),
                c.soc_permille
                    .map_or(String::new(), |p| format!("{:.1}", f64::from(p) / 10.0)),
            ));
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-power-{hours}h.csv\""),
            ),
        ],
        out,
    )
        .into_response())
}

async fn set_state(
    s: ApiState,
    viewer: Viewer,
    headers: HeaderMap,
    id: String,
    csrf: &str,
    approve: bool,
) -> Response {
    if let Err(r) = same_origin(&headers).and_then(|()| viewer.check_csrf(csrf)) {
        return r.into_response();
    }
    let auth = Auth(viewer.caller);
    let done = if approve {
        crate::api::admin::approve(State(s), auth, Path(id.clone())).await
    } else {
        crate::api::admin::revoke(State(s), auth, Path(id.clone())).await
    };
    match done {
        Ok(_) => Redirect::to(&format!("/devices/{id}")).into_response(),
        Err(e) => page::failed(&viewer, Nav::Fleet, "Not done", e),
    }
}

/// `POST /devices/{id}/approve` (operators).
pub async fn approve(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    set_state(s, viewer, headers, id, &f.csrf, true).await
}

/// `POST /devices/{id}/revoke` (operators).
pub async fn revoke(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    set_state(s, viewer, headers, id, &f.csrf, false).await
}
