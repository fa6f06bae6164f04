//! The market (offers, filtered and sorted), the evidence (epochs, roots, anchors) and the
//! viewer's ledger (balances, escrow, history).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::page::{self, Nav};
use super::session::Viewer;
use crate::api::{ApiQuery, ApiState, Auth};
use crate::market_view::Listing;

fn credits(micro: i64) -> String {
    format!("{:.6}", micro as f64 / 1e6)
}

/// The market page's query: the search language of [`crate::offer_query`].
#[derive(Debug, Default, Deserialize)]
pub struct MarketQuery {
    q: Option<String>,
}

/// `GET /market`: the approved devices' offers, as a buyer looks for one.
pub async fn market(
    State(s): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<MarketQuery>,
) -> Response {
    let text = q.q.clone().unwrap_or_default();
    let parsed = crate::offer_query::parse(&text);
    let pool = s.store.clone();
    let query = parsed.clone().unwrap_or_default();
    let made =
        tokio::task::spawn_blocking(move || -> Result<Vec<Listing>, crate::api::AppError> {
            let st = pool.get()?;
            let mut search = query.search.clone();
            search.job_load_w = 60.0;
            let listings =
                crate::market_view::view(&*st, &search, crate::runtime::now_ms(), 60_000)?;
            Ok(query.apply(listings))
        })
        .await;
    let offers = match made {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return page::failed(&viewer, Nav::Market, "Market", e),
        Err(e) => {
            return page::failed(
                &viewer,
                Nav::Market,
                "Market",
                crate::api::AppError::Internal(e.to_string()),
            );
        }
    };
    let body = html! {
        h1 { "Market" }
        form.filters method="get" action="/market" role="search" {
            label for="offer-q" { "Search" }
            input #offer-q type="search" name="q" value=(text) size="60" placeholder="gpu:orin price<=0.5 renewable>=80 runway>=4 online sort:price" aria-describedby="offer-q-help";
            button type="submit" { "Search" }
        }
        p.note #offer-q-help {
            "Terms, all of which an offer meets: " code { "gpu:orin" } ", " code { "vram>=8000" } " (MiB), " code { "cuda>=8.7" } ", "
            code { "price<=0.5" } " (credits per GPU-hour), " code { "renewable>=80" } " (% now), " code { "runway>=4" } " (hours on battery and sun), "
            code { "reputation>=0.6" } ", " code { "region:DE" } ", " code { "online" } ", " code { "sort:price" } " (or renewable, runway, reputation, performance)."
        }
        @if let Err(e) = &parsed { p.error role="alert" { (e) } }
        table.market {
            caption { (offers.len()) " offers. Runway: how long the rig could run a 60 W job on its battery and forecast sun." }
            thead { tr {
                th scope="col" { "Device" } th scope="col" { "GPU" } th scope="col" { "CUDA" } th scope="col" { "Price / GPU-hour" }
                th scope="col" { "Region" } th scope="col" { "Online" } th scope="col" { "Renewable now" } th scope="col" { "Runway" }
                th scope="col" { "Reputation" } th scope="col" { "Measured" }
            } }
            tbody {
                @for o in &offers {
                    tr {
                        td { a href={"/devices/" (o.device)} { code { (o.device) } } br; small { (o.board) } }
                        td { (o.gpu.clone().unwrap_or_else(|| "CPU only".into())) }
                        td { (o.cuda.clone().unwrap_or_else(|| "–".into())) }
                        td.num { (credits(o.price_micro_per_gpu_hour as i64)) }
                        td { (o.region) }
                        td { (if o.online { "yes" } else { "no" }) }
                        td.num { (format!("{:.0} %", o.renewable_now * 100.0)) }
                        td.num { (format!("{:.1} h", o.runway_h)) }
                        td.num { (format!("{:.2}", o.reputation)) }
                        td { @if let Some(m) = &o.measured { (json!(m).to_string()) } @else { "–" } }
                    }
                }
            }
        }
    };
    page::page("Market", &viewer, Nav::Market, body).into_response()
}

/// `GET /evidence`: closed epochs with their roots and anchors, newest first.
pub async fn evidence(State(s): State<ApiState>, viewer: Viewer) -> Response {
    let q = crate::api::EpochsQuery {
        limit: Some(200),
        newest: Some(true),
        ..Default::default()
    };
    let epochs = match crate::api::epochs(State(s), ApiQuery(q)).await {
        Ok(e) => e.1.0,
        Err(e) => {
            return page::failed(
                &viewer,
                Nav::Evidence,
                "Evidence",
                crate::api::AppError::Internal(e.to_string()),
            );
        }
    };
    let empty = Vec::new();
    let list = epochs.as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Evidence" }
        p {
            "Every stored record, ledger entry and certificate retirement is a leaf of one epoch's Merkle tree; each epoch's root is signed into the controller's local anchor log and, where configured, written on an EVM chain. A proof bundle (from a device's or a job's page) carries the records, their inclusion proofs and these anchors; "
            code { "attest verify" } " checks one offline against the controller's key, and "
            a href="/verify" { "this browser can too" } "."
        }
        table.epochs {
            caption { "The latest " (list.len()) " closed epochs, newest first (all of them: " code { "GET /api/v1/epochs" } ")" }
            thead { tr { th scope="col" { "Epoch" } th scope="col" { "Leaves" } th scope="col" { "Root" } th scope="col" { "Closed" } th scope="col" { "Local anchor" } th scope="col" { "On chain" } } }
            tbody {
                @for e in list.iter().rev().take(200) {
                    tr {
                        td.num { (e["epoch"]) }
                        td.num { (e["tree_size"]) }
                        td { code.hash { (e["root"].as_str().unwrap_or_default()) } }
                        td { (super::when(e["closed_ms"].as_u64().unwrap_or(0))) }
                        td { "#" (e["anchor"]["index"]) }
                        td {
                            @if e["evm"].is_null() { "–" } @else {
                                "chain " (e["evm"]["chain_id"]) ", tx " code.hash { (e["evm"]["tx_hash"].as_str().unwrap_or_default()) }
                                @if let Some(b) = e["evm"]["block_number"].as_u64() { ", block " (b) } @else { " (unconfirmed)" }
                            }
                        }
                    }
                }
            }
        }
    };
    page::page("Evidence", &viewer, Nav::Evidence, body).into_response()
}

/// `GET /ledger`: the viewer's balances and its latest transactions.
pub async fn ledger(State(s): State<ApiState>, viewer: Viewer) -> Response {
    let balance = crate::api::ledger::balance(State(s.clone()), Auth(viewer.caller)).await;
    let history = match serde_json::from_value(json!({"limit": 200})) {
        Ok(q) => crate::api::ledger::history(State(s), Auth(viewer.caller), ApiQuery(q)).await,
        Err(e) => Err(crate::api::AppError::Internal(e.to_string())),
    };
    let (balance, history) = match (balance, history) {
        (Ok(b), Ok(h)) => (b.0, h.1.0),
        (Err(e), _) | (_, Err(e)) => {
            return page::failed(&viewer, Nav::Ledger, "Ledger", e);
        }
    };
    let empty = Vec::new();
    let txs = history["transactions"].as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Ledger" }
        dl.facts {
            dt { "Available" } dd #available { (credits(balance["available"].as_i64().unwrap_or(0))) " credits" }
            dt { "In escrow" } dd { (credits(balance["escrowed"].as_i64().unwrap_or(0))) " credits" }
            dt { "Staked" } dd { (credits(balance["staked"].as_i64().unwrap_or(0))) " credits" }
            dt { "Spend cap" } dd #spend-cap {
                @if let Some(c) = balance["spend_cap_micro_per_day"].as_i64() { (credits(c)) " credits a day" } @else { "none" }
            }
        }
        @if viewer.caller.scopes.has(crate::accounts::Scope::Submit) {
            form.filters method="post" action="/ledger/spend-cap" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="cap" { "Most my jobs may hold in 24 h (credits; empty: no cap)" }
                input #cap type="number" name="credits" min="0" step="0.000001";
                button type="submit" { "Set" }
            }
        }
        p { a href="/ledger.csv" download { "This history as CSV" } " · " a href="/api/v1/account/statement" { "Statement of account" } " (JSON; needs an API token; " code { "attest verify-account" } " checks it offline)." }
        table.ledger {
            caption { "Transactions touching your wallet or your jobs' escrow, newest first" }
            thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Job" } th scope="col" { "Postings (credits)" } th scope="col" { "Memo" } } }
            tbody {
                @for t in txs {
                    tr {
                        td.num { (t["id"]) }
                        td { (super::when(t["at_ms"].as_u64().unwrap_or(0))) }
                        td { (t["kind"].as_str().unwrap_or_default()) }
                        td { @if let Some(j) = t["job"].as_str() { a href={"/jobs/" (j)} { code { (&j[..j.len().min(8)]) } } } @else { "–" } }
                        td {
                            ul.postings {
                                @for p in t["postings"].as_array().into_iter().flatten() {
                                    li { (p[0].as_str().unwrap_or_default()) ": " (credits(p[1].as_i64().unwrap_or(0))) }
                                }
                            }
                        }
                        td { (t["memo"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
        @if txs.is_empty() { p { "No transactions yet." } }
    };
    page::page("Ledger", &viewer, Nav::Ledger, body).into_response()
}

/// The spend cap form.
#[derive(Debug, Deserialize)]
pub struct CapForm {
    csrf: String,
    credits: String,
}

/// `POST /ledger/spend-cap`: the viewer's own spend cap, through the API.
pub async fn spend_cap(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
    axum::Form(f): axum::Form<CapForm>,
) -> Response {
    use axum::response::Redirect;
    if let Err(r) = viewer.check_form(&headers, &f.csrf) {
        return r.into_response();
    }
    let daily_micro = match f.credits.trim() {
        "" => None,
        t => match t.parse::<f64>() {
            Ok(c) if c >= 0.0 && c.is_finite() => Some((c * 1e6).round() as u64),
            _ => {
                return page::problem(
                    &viewer,
                    Nav::Ledger,
                    "Not set",
                    "The cap is a number of credits.",
                )
                .into_response();
            }
        },
    };
    let body = crate::api::ledger::SpendCapBody { daily_micro };
    match crate::api::ledger::set_spend_cap(
        State(s),
        Auth(viewer.caller),
        crate::api::ApiJson(body),
    )
    .await
    {
        Ok(_) => Redirect::to("/ledger").into_response(),
        Err(e) => page::failed(&viewer, Nav::Ledger, "Not set", e),
    }
}
