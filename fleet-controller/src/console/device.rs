//! A device's page: power by channel and state of charge as charts over the chosen span,
//! energy per day by source against the period before, its chain, its state; and the power
//! history behind the chart as CSV.

use std::sync::Arc;

use attest::msg::{ChannelKind, Hello, MeterRecord};
use attest::{DeviceId, Envelope};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::charts::{self, Series};
use super::fleet::{ago, pct, rows};
use super::page::{self, Nav};
use super::session::Viewer;
use crate::api::{ApiState, AppError};
use crate::store::pool::SqlitePool;
use crate::store::{DeviceState, Store};

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

/// Power now through each leg of the rig, W, from its latest record: sun in, battery out (in
/// when negative), grid in, load out, and the battery's state of charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Flow {
    solar: f64,
    battery: f64,
    grid: f64,
    load: f64,
    soc: Option<f64>,
    at_ms: u64,
}

fn flow_of(r: &MeterRecord) -> Flow {
    let mut f = Flow {
        at_ms: r.link.timestamp.0,
        ..Flow::default()
    };
    for c in &r.channels {
        let w = c.power.0 as f64 / 1000.0;
        match c.kind {
            ChannelKind::Solar => f.solar += w,
            ChannelKind::BatteryDischarge => f.battery += w,
            ChannelKind::BatteryCharge => f.battery -= w,
            ChannelKind::GridImport => f.grid += w,
            ChannelKind::Load => f.load += w,
            _ => {}
        }
        if let Some(p) = c.soc_permille {
            f.soc = Some(f64::from(p) / 10.0);
        }
    }
    f
}

fn latest_flow(pool: &Arc<SqlitePool>, id: DeviceId) -> Result<Option<Flow>, AppError> {
    let st = pool.get()?;
    let Some((seq, _)) = st.last_item(id)? else {
        return Ok(None);
    };
    // The last message may be a receipt or a restart: the latest meter record among the
    // last few is the power now.
    Ok(st
        .items(id, attest::SeqNo(seq.0.saturating_sub(16)), seq)?
        .iter()
        .rev()
        .find_map(|(_, env)| Envelope::decode(env).ok()?.open::<MeterRecord>().ok())
        .map(|r| flow_of(&r)))
}

/// The power-flow diagram: the sun, the battery and the grid feeding the load, each leg's
/// width following its power now. Live: `console.js` updates the numbers from
/// `/devices/{id}/flow` (server-sent events).
fn flow_svg(f: &Flow, id: &str) -> maud::Markup {
    let width = |w: f64| (1.5 + w.abs().sqrt() * 0.8).min(14.0);
    let soc = f.soc.map_or("–".to_string(), |s| format!("{s:.0} %"));
    let battery_label = if f.battery >= 0.0 { "out" } else { "in" };
    html! {
        figure.flow data-flow=(format!("/devices/{id}/flow")) {
            svg.flow viewBox="0 0 600 220" role="img" aria-labelledby="flow-title" {
                title #flow-title { "Power now: sun, battery and grid feeding the load" }
                line.leg.s-solar x1="110" y1="50" x2="300" y2="110" stroke-width=(format!("{:.1}", width(f.solar))) {}
                line.leg.s-battery x1="110" y1="170" x2="300" y2="110" stroke-width=(format!("{:.1}", width(f.battery))) {}
                line.leg.s-grid x1="490" y1="170" x2="300" y2="110" stroke-width=(format!("{:.1}", width(f.grid))) {}
                line.leg.s-load x1="300" y1="110" x2="490" y2="50" stroke-width=(format!("{:.1}", width(f.load))) {}
                circle.node cx="300" cy="110" r="8" {}
                text.node x="20" y="45" { "☀ Sun" }
                text.value x="20" y="65" data-flow-leg="solar" { (format!("{:.0} W", f.solar)) }
                text.node x="20" y="165" { "Battery " tspan data-flow-leg="soc" { (soc) } }
                text.value x="20" y="185" data-flow-leg="battery" { (format!("{:.0} W {battery_label}", f.battery.abs())) }
                text.node x="500" y="45" { "Load" }
                text.value x="500" y="65" data-flow-leg="load" { (format!("{:.0} W", f.load)) }
                text.node x="500" y="165" { "Grid" }
                text.value x="500" y="185" data-flow-leg="grid" { (format!("{:.0} W", f.grid)) }
            }
        }
    }
}

/// `GET /devices/{id}/flow`: the device's power flow after each new record (server-sent
/// events, `event: flow`).
pub async fn flow_events(
    State(s): State<ApiState>,
    _viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use std::convert::Infallible;
    let Ok(id) = DeviceId::parse(&id) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such device").into_response();
    };
    let stream =
        futures_util::stream::unfold((s.store.clone(), 0u64), move |(pool, last)| async move {
            loop {
                let p = pool.clone();
                let f = tokio::task::spawn_blocking(move || latest_flow(&p, id)).await;
                if let Ok(Ok(Some(f))) = f
                    && f.at_ms != last
                {
                    let e = Event::default()
                        .event("flow")
                        .data(serde_json::json!(f).to_string());
                    return Some((Ok::<_, Infallible>(e), (pool, f.at_ms)));
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

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
        let flow = latest_flow(&pool, id)?;
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
            (power(&recs, from, now), flow),
            statement,
            row,
        ))
    })
    .await;
    let (dev, hello, count, last, (power, flow), statement, row) = match made {
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
    // Its rejections since the controller started, from the ingest's status file.
    let rejects: Vec<(String, u64)> = std::fs::read(&s.status)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["rejected_by_device"][id.to_string()]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
        })
        .unwrap_or_default();
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
            dt { "Rejected" } dd #rejects {
                @if rejects.is_empty() { "nothing since the controller started" } @else {
                    @for (i, (reason, n)) in rejects.iter().enumerate() { @if i > 0 { ", " } (n) " " code { (reason) } }
                    " since the controller started"
                }
            }
            dt { "Plausibility" } dd #flags {
                @match statement.as_ref().map(|s| &s.statement.flags) {
                    None => { "no counted records in the period" }
                    Some(f) if f.is_empty() => { "no flag raised over the last " (2 * days) " days" }
                    Some(f) => {
                        (f.len()) " flags over the last " (2 * days) " days (they lower the trust tier, never the energy):"
                        ul.flags {
                            @for flag in f.iter().take(10) {
                                li { code { (format!("{:?}", flag.code)) } " at record #" (flag.seq.0) ": " (flag.detail) }
                            }
                        }
                    }
                }
            }
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
        h2 { "Power now" }
        @if let Some(f) = &flow { (flow_svg(f, &ids)) } @else { p { "No record yet." } }
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
        p { a href={"/api/v1/devices/" (ids) "/hours?from=" (first_day * 86_400_000) "&to=" (now)} { "These hours as JSON" } " · " a href={"/devices/" (ids) "/hours.csv?days=" (days)} download { "as CSV" } " · " a href={"/api/v1/devices/" (ids) "/bundle?from=" (first_day * 86_400_000) "&to=" (now)} { "Proof bundle of the period" } }
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
