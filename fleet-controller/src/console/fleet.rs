//! The fleet page (every device, live), a device's page (power charts, daily energy, its
//! chain, its state) and the power history as CSV.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use attest::msg::Hello;
use attest::{DeviceId, Envelope};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::{Deserialize, Serialize};

use super::page::{self, Nav};
use super::session::{CsrfForm, Viewer};
use crate::api::{ApiState, AppError, Auth};
use crate::market_view::{Listing, Search};
use crate::store::Store;
use crate::store::jobs::JobStore;
use crate::store::pool::SqlitePool;

/// A device is online when heard from within this long (the market's window).
const ONLINE_MS: u64 = 60_000;

/// One row of the fleet table.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) state: &'static str,
    pub(super) region: String,
    pub(super) board: String,
    pub(super) agent: String,
    pub(super) online: bool,
    pub(super) solar_w: Option<f64>,
    pub(super) load_w: Option<f64>,
    pub(super) battery: Option<f64>,
    pub(super) renewable_now: Option<f64>,
    pub(super) renewable_today: Option<f64>,
    pub(super) runway_h: Option<f64>,
    pub(super) reputation: Option<f64>,
    pub(super) job: Option<String>,
    pub(super) last_seen_ms: u64,
    pub(super) tags: Vec<String>,
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.0} %", v * 100.0))
}

fn watts(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} W"))
}

pub(super) fn ago(now: u64, then: u64) -> String {
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

pub(super) fn rows(
    pool: &Arc<SqlitePool>,
    viewer: &Viewer,
    now: u64,
) -> Result<Vec<Row>, AppError> {
    let st = pool.get()?;
    let search = Search {
        job_load_w: 60.0,
        ..Search::default()
    };
    let mut tags = crate::store::tags::TagStore::all_tags(&*st)?;
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
            tags: tags.remove(&d.id).unwrap_or_default(),
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
    /// Only devices with this tag.
    tag: Option<String>,
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
                || r.tags.iter().any(|t| t.contains(&text))
        })
        .filter(|r| {
            q.tag
                .as_deref()
                .filter(|t| !t.is_empty())
                .is_none_or(|t| r.tags.iter().any(|x| x == t))
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
            label for="tag" { "Tag" }
            input #tag type="text" name="tag" value=(q.tag.clone().unwrap_or_default()) size="12";
            @if let Some(sort) = &q.sort { input type="hidden" name="sort" value=(sort); }
            @if let Some(dir) = &q.dir { input type="hidden" name="dir" value=(dir); }
            button type="submit" { "Filter" }
        }
        form #bulk method="post" action="/fleet/bulk" {
        table.fleet data-live="/events/fleet" {
            caption { "Devices (" (shown.len()) " shown). Power is the mean over each device's last record; live." }
            thead { tr {
                @if viewer.operator() { th scope="col" { span.visually-hidden { "Select" } } }
                @for (key, label, sortable) in COLUMNS {
                    th scope="col" aria-sort=[(q.sort.as_deref() == Some(key)).then(|| if q.dir.as_deref() == Some("desc") { "descending" } else { "ascending" })] {
                        @if sortable { a href=(sort_link(&q, key)) { (label) } } @else { (label) }
                    }
                }
            } }
            tbody {
                @for r in &shown {
                    tr data-device=(r.id) {
                        @if viewer.operator() {
                            td { input type="checkbox" name="device" value=(r.id) aria-label={"Select " (r.id)}; }
                        }
                        td {
                            a href={"/devices/" (r.id)} { code { (r.id) } } br; small { (r.board) " · " (r.agent) }
                            @for t in &r.tags { " " a.tag href={"/?tag=" (super::url_encode(t))} { (t) } }
                        }
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
        @if viewer.operator() && !shown.is_empty() {
            div.actions {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="bulk-action" { "With the selected devices" }
                select #bulk-action name="action" {
                    option value="tag" { "add the tag" }
                    option value="untag" { "remove the tag" }
                    option value="approve" { "approve" }
                    option value="revoke" { "revoke" }
                }
                label for="bulk-tag" { "Tag" }
                input #bulk-tag type="text" name="tag" size="14" placeholder="site-nairobi";
                button type="submit" { "Apply" }
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

async fn set_state(
    s: ApiState,
    viewer: Viewer,
    headers: HeaderMap,
    id: String,
    csrf: &str,
    approve: bool,
) -> Response {
    if let Err(r) = viewer.check_form(&headers, csrf) {
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

/// Decodes an `application/x-www-form-urlencoded` body into its pairs, keeping repeated
/// names (`device=a&device=b`), which serde's form decoding cannot.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `POST /fleet/bulk` (operators): one action on the selected devices, through the API's
/// bulk route.
pub async fn bulk(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let pairs = form_pairs(&body);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Err(r) = viewer.check_form(&headers, &get("csrf").unwrap_or_default()) {
        return r.into_response();
    }
    let devices: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == "device")
        .map(|(_, v)| v.clone())
        .collect();
    if devices.is_empty() {
        return page::problem(
            &viewer,
            Nav::Fleet,
            "Nothing done",
            "Select at least one device.",
        )
        .into_response();
    }
    let b = crate::api::admin::BulkBody {
        devices,
        action: get("action").unwrap_or_default(),
        tag: get("tag").filter(|t| !t.trim().is_empty()),
    };
    match crate::api::admin::bulk(State(s), Auth(viewer.caller), crate::api::ApiJson(b)).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => page::failed(&viewer, Nav::Fleet, "Nothing done", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_form_fields_are_kept_and_decoded() {
        let p = form_pairs(b"csrf=ab&device=hs-1&device=hs-2&tag=site+nairobi%2D3&x=%zz");
        assert_eq!(
            p,
            [
                ("csrf".to_string(), "ab".to_string()),
                ("device".into(), "hs-1".into()),
                ("device".into(), "hs-2".into()),
                ("tag".into(), "site nairobi-3".into()),
                ("x".into(), "%zz".into()),
            ]
        );
    }
}
