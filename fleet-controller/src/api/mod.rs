//! The HTTP API (axum). Every error is JSON with a stable `reason` (`error.rs`). Reads go
//! to SQLite on blocking threads through pooled connections (WAL lets them run beside the
//! ingest writer). Every route's body is bounded: JSON bodies by `api.max_body_bytes`,
//! blob uploads (streamed to disk, never held in memory) by `api.max_blob_bytes` and the
//! account's quota.
//!
//! Public (no token): the fleet's evidence, which anyone may check.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/status` | messages stored, rejections by reason |
//! | `GET /api/v1/devices` | every device: state, last seen, messages, site, channels |
//! | `GET /api/v1/devices/{id}` | one device |
//! | `GET /api/v1/devices/{id}/bundle?from=MS&to=MS&format=json\|postcard` | a proof bundle (anchored messages) |
//! | `GET /api/v1/devices/{id}/jobs/{job}/bundle?format=json\|postcard` | a job's proof bundle (its receipt, the records over its hours) |
//! | `GET /api/v1/devices/{id}/hours?from=MS&to=MS` | hour-by-hour energy by source, renewable share, emissions |
//! | `GET /api/v1/fleet/hours?from=MS&to=MS` | the approved devices' hours summed per hour, with the device count (at most 31 days) |
//! | `GET /metrics` | Prometheus text (`metrics.rs`): ingest, devices, fleet power, epochs, jobs, console logins |
//! | `GET /api/v1/openapi.json` | this API as OpenAPI 3.1 (`openapi.rs`) |
//! | `GET /api/v1/epochs` | closed epochs with their roots, local anchor entries and EVM anchors (tx, block, gas) |
//!
//! With a token (`Authorization: Bearer hst_...`; `auth.rs`), each route naming the scope
//! it needs; an account sees only its own blobs and jobs, and another's is a 404:
//!
//! | route | scope | what |
//! |---|---|---|
//! | `PUT /api/v1/account/spend-cap` | submit | `{daily_micro}`: the most the caller's jobs may escrow over 24 h (`null`: none) |
//! | `GET /api/v1/account` | any | the caller's account, token scopes, blob usage (`admin.rs`) |
//! | `GET /api/v1/blobs` | read | the caller's blobs and quota (`blobs.rs`) |
//! | `PUT /api/v1/blobs/{sha256}` | submit | upload, streamed and hash-checked, within the quota |
//! | `GET /api/v1/blobs/{sha256}` | read | a blob the caller owns, an output of its jobs, or (provider) an input of an open job |
//! | `DELETE /api/v1/blobs/{sha256}` | submit | give a blob up (its bytes go back to the quota) |
//! | `POST /api/v1/jobs` | submit | submit a job (`jobs.rs`) |
//! | `POST /api/v1/jobs/estimate` | read | price and carbon at each fitting offer before submitting (`crate::estimate`) |
//! | `GET /api/v1/jobs` | read | the caller's jobs, newest first |
//! | `GET /api/v1/jobs/{id}` | read | a job, its order, its device spec and its state history |
//! | `POST /api/v1/jobs/{id}/cancel` | submit | cancel it (until it is validating) |
//! | `GET /api/v1/jobs/{id}/results` | read | its outputs by hash |
//! | `GET /api/v1/accounts`, `POST /api/v1/accounts` | operate | list and make accounts (`admin.rs`) |
//! | `POST /api/v1/accounts/{id}/tokens` | operate | another token for an account |
//! | `POST /api/v1/tokens/{id}/revoke` | operate | revoke a token |
//! | `POST /api/v1/devices/{id}/approve`, `/revoke` | operate | a device's state |
//! | `POST /api/v1/devices/bulk` | operate | `{devices, action: approve\|revoke\|tag\|untag, tag?}` on many devices |
//! | `GET /api/v1/alerts`, `POST /api/v1/alerts/silences[/{id}/end]` | operate | alerts and silences (`alerts.rs`) |
//! | `GET /api/v1/audit?before=&limit=` | operate | the audit log of operator actions, newest first (`guard.rs`) |

pub(crate) mod admin;
pub(crate) mod alerts;
mod auth;
pub(crate) mod blobs;
mod certificates;
mod enrollment;
mod error;
pub mod guard;
pub(crate) mod jobs;
pub(crate) mod ledger;
mod metrics;
pub mod openapi;
mod outputs;
mod proofs;
mod settlement;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use attest::msg::Hello;
use attest::{DeviceId, Envelope, EpochId, KeyPair};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounting::MAX_FLEET_PERIOD_MS;
use crate::intensity::IntensityResolver;
use crate::store::Store;
use crate::store::pool::SqlitePool;
use crate::store::sqlite::SqliteStore;

pub use auth::Auth;
pub use error::{ApiJson, ApiQuery, AppError};

/// What the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The controller database: a pool of connections shared by the requests.
    pub store: Arc<SqlitePool>,
    /// The ingest status file.
    pub status: PathBuf,
    /// The controller's key: it signs the statements in bundles (and its public half is
    /// named in their local anchors).
    pub controller: Arc<KeyPair>,
    /// Grid intensity by region and hour, for statements.
    pub intensity: Arc<IntensityResolver>,
    /// The blob store: job inputs, PTX modules and results by SHA-256 (file name = hex;
    /// uploads in flight in `.incoming/`).
    pub blobs: PathBuf,
    /// Body sizes and the default quota.
    pub limits: ApiLimits,
    /// Held while a blob's file is placed or removed together with its ownership rows.
    pub blob_lock: Arc<Mutex<()>>,
    /// How long a job that states no `max_duration_ms` is held in escrow for, ms
    /// (`market.default_run_ms`): its escrow is its price ceiling over this long.
    pub escrow_run_ms: u64,
    /// The settlement contract (`settlement.contract`), shown beside payouts.
    pub settlement_contract: Option<String>,
    /// `settlement.min_micro`; `None` when settlement is off.
    pub settlement_min_micro: Option<u64>,
    /// `market.spot_check_ppm`: a PTX job may run twice, so twice its ceiling is held.
    pub spot_check_ppm: u32,
    /// The web console's settings, login limiter and counts.
    pub console: Arc<crate::console::Console>,
    /// What a job is assumed to draw, W (`market.job_power_w`): estimates use it.
    pub job_power_w: f64,
    /// Commands to the broker's dynamic security plugin (`broker.dynsec`): an enrolled
    /// device's login goes there.
    pub broker_cmd: Option<tokio::sync::mpsc::UnboundedSender<crate::ingest::Outgoing>>,
    /// Rate limits on token use and failed authentication (`[api]`).
    pub guard: Arc<guard::Guard>,
}

impl ApiState {
    /// The state for a controller whose database, status file and blob folder are given,
    /// with the default [`ApiLimits`].
    pub fn new(
        store: Arc<SqlitePool>,
        status: PathBuf,
        controller: Arc<KeyPair>,
        intensity: Arc<IntensityResolver>,
        blobs: PathBuf,
    ) -> ApiState {
        ApiState {
            store,
            status,
            controller,
            intensity,
            blobs,
            limits: ApiLimits::default(),
            blob_lock: Arc::new(Mutex::new(())),
            escrow_run_ms: crate::config::MarketConfig::default().default_run_ms,
            settlement_contract: None,
            settlement_min_micro: None,
            spot_check_ppm: crate::config::MarketConfig::default().spot_check_ppm,
            console: Arc::new(crate::console::Console::default()),
            job_power_w: f64::from(crate::config::MarketConfig::default().job_power_w),
            broker_cmd: None,
            guard: Arc::new(guard::Guard::from(&crate::config::ApiConfig::default())),
        }
    }
}

/// How much a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest blob upload.
    pub max_blob_bytes: u64,
    /// Largest body of every other route (JSON).
    pub max_body_bytes: usize,
    /// Blob quota of an account made without one.
    pub default_quota_bytes: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        let cfg = crate::config::ApiConfig::default();
        ApiLimits::from(&cfg)
    }
}

impl From<&crate::config::ApiConfig> for ApiLimits {
    fn from(c: &crate::config::ApiConfig) -> Self {
        ApiLimits {
            max_blob_bytes: c.max_blob_bytes,
            max_body_bytes: c.max_body_bytes,
            default_quota_bytes: c.default_quota_bytes,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
}

fn parse_id(s: &str) -> Result<DeviceId, AppError> {
    DeviceId::parse(s).map_err(|e| AppError::BadDeviceId(format!("{s}: {e}")))
}

fn device_json(
    store: &SqliteStore,
    d: &crate::store::DeviceRow,
    tags: &std::collections::BTreeMap<DeviceId, Vec<String>>,
) -> Result<Value, AppError> {
    let hello: Option<Hello> = Envelope::decode(&d.hello).ok().and_then(|e| e.open().ok());
    let version = hello.as_ref().map(|h| h.version_parts());
    Ok(json!({
        "id": d.id.to_string(),
        "state": d.state.as_str(),
        "agent_version": version.map(|v| v.0),
        "image": version.and_then(|v| v.1),
        "first_seen_ms": d.first_seen_ms,
        "last_seen_ms": d.last_seen_ms,
        "messages": store.count_items(d.id)?,
        "site": hello.as_ref().map(|h| &h.site),
        "channels": hello.as_ref().map(|h| &h.channels),
        "hardware": hello.as_ref().map(|h| &h.hardware),
        "tags": tags.get(&d.id).cloned().unwrap_or_default(),
    }))
}

async fn devices(State(s): State<ApiState>) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let store = s.store.get()?;
        let tags = crate::store::tags::TagStore::all_tags(&*store)?;
        let list = store
            .devices()?
            .iter()
            .map(|d| device_json(&store, d, &tags))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Json(Value::Array(list)))
    })
    .await
}

async fn device(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let store = s.store.get()?;
        let d = store.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        let tags = crate::store::tags::TagStore::all_tags(&*store)?;
        Ok(Json(device_json(&store, &d, &tags)?))
    })
    .await
}

/// Query of the market route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketQuery {
    gpu: Option<String>,
    vram_min_mib: Option<u32>,
    renewable_now_min: Option<f64>,
    online: Option<bool>,
    sort: Option<String>,
    load_w: Option<f64>,
    /// The search language (`crate::offer_query`): `gpu:orin price<=0.5 runway>=4 ...`;
    /// with it, the other fields are not read.
    q: Option<String>,
}

/// `GET /api/v1/market`: the approved devices' offers with their live state and runway.
async fn market(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<MarketQuery>,
) -> Result<Json<Value>, AppError> {
    if let Some(sort) = q.sort.as_deref()
        && !["price", "renewable", "runway"].contains(&sort)
    {
        return Err(AppError::BadQuery(format!(
            "sort={sort}: price, renewable or runway"
        )));
    }
    let load_w = q.load_w.unwrap_or(60.0).max(0.0);
    let query = match q.q.as_deref() {
        Some(text) => {
            let mut parsed = crate::offer_query::parse(text).map_err(AppError::BadQuery)?;
            parsed.search.job_load_w = load_w;
            parsed
        }
        None => crate::offer_query::OfferQuery {
            search: crate::market_view::Search {
                gpu: q.gpu,
                vram_min_mib: q.vram_min_mib,
                renewable_now_min: q.renewable_now_min,
                online_only: q.online.unwrap_or(false),
                job_load_w: load_w,
                sort: q.sort,
            },
            ..Default::default()
        },
    };
    blocking(move || {
        let store = s.store.get()?;
        let listings =
            crate::market_view::view(&*store, &query.search, crate::runtime::now_ms(), 60_000)?;
        Ok(Json(json!(query.apply(listings))))
    })
    .await
}

/// Query of the epochs listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochsQuery {
    /// Only epochs numbered above this (the previous page's `X-Next-Cursor`).
    pub after: Option<u64>,
    /// Most epochs (default and at most 1000).
    pub limit: Option<usize>,
    /// The newest `limit` epochs instead of the oldest after `after`.
    pub newest: Option<bool>,
}

/// `GET /api/v1/epochs`: closed epochs, oldest first, a page at a time; `X-Next-Cursor`
/// names the next page's `after` while more are closed.
pub(crate) async fn epochs(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<EpochsQuery>,
) -> Result<(axum::http::HeaderMap, Json<Value>), AppError> {
    let limit = q.limit.unwrap_or(1_000).clamp(1, 1_000) as u64;
    blocking(move || {
        let store = s.store.get()?;
        let mut out = Vec::new();
        let last = store.last_epoch()?.map_or(0, |e| e.epoch.next().0);
        let first = if q.newest == Some(true) {
            last.saturating_sub(limit)
        } else {
            q.after.map_or(0, |a| a.saturating_add(1))
        };
        let end = first.saturating_add(limit).min(last);
        let mut headers = axum::http::HeaderMap::new();
        if end < last && q.newest != Some(true) && end > 0 {
            headers.insert(jobs::NEXT_CURSOR, (end - 1).into());
        }
        for n in (first..end).map(EpochId) {
            if let Some(e) = store.epoch(n)? {
                out.push(json!({
                    "epoch": e.epoch,
                    "tree_size": e.tree_size,
                    "root": e.root.to_hex(),
                    "closed_ms": e.closed_ms,
                    "anchor": {
                        "backend": "local",
                        "index": e.anchor_index,
                        "entry_hash": attest::Hash32::digest(&e.anchor_entry).to_hex(),
                        "entry": attest::hex::encode(&e.anchor_entry),
                    },
                    "evm": store.evm_anchor(n)?.map(|a| json!({
                        "chain_id": a.chain_id,
                        "contract": format!("0x{}", attest::hex::encode(&a.contract)),
                        "nonce": a.nonce,
                        "tx_hash": format!("0x{}", a.tx_hash.to_hex()),
                        "block_number": a.block_number,
                        "gas_used": a.gas_used,
                        "confirmed": a.block_number.is_some(),
                    })),
                }));
            }
        }
        Ok((headers, Json(Value::Array(out))))
    })
    .await
}

async fn status(State(s): State<ApiState>) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let v = std::fs::read(&s.status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"stored": 0, "rejected": {}}));
        Ok(Json(v))
    })
    .await
}

/// Query of the accounting route.
#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// Hour-by-hour accounting of a device over stored records (anchored or not), computed
/// with `attest`'s arithmetic: energy by source, hourly-matched renewable energy, emissions.
async fn hours(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let store = s.store.get()?;
        let dev = store.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        let made = crate::accounting::device_hours(
            &*store,
            &dev,
            &s.intensity,
            q.from.unwrap_or(0),
            q.to.unwrap_or(u64::MAX / 2),
        )?;
        let statement = &made.statement;
        Ok(Json(json!({
            "device": id.to_string(),
            "from": statement.from.0,
            "to": statement.to.0,
            "intensity_source": made.intensity_source,
            "battery_initial": statement.battery_initial,
            "totals": {
                "energy_mj": statement.energy,
                "renewable_mj": statement.renewable.0,
                "renewable_share_ppm": statement.renewable_share_ppm,
                "co2e_mg": statement.co2e_mg,
            },
            "hours": statement.hours,
            "tier": statement.tier,
            "flags": statement.flags,
        })))
    })
    .await
}

/// The approved devices' hour-by-hour accounting summed per hour (each device's hours as
/// the device route gives them), with the number of devices in each hour. `from` and `to`
/// are required and at most 31 days apart.
async fn fleet_hours(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> Result<Json<Value>, AppError> {
    let (Some(from), Some(to)) = (q.from, q.to) else {
        return Err(AppError::BadPeriod(
            "from and to (ms since the Unix epoch) are required".into(),
        ));
    };
    if to < from {
        return Err(AppError::BadPeriod(format!(
            "to ({to}) is before from ({from})"
        )));
    }
    if to - from > MAX_FLEET_PERIOD_MS {
        return Err(AppError::PeriodTooLong(format!(
            "{} ms asked; at most {MAX_FLEET_PERIOD_MS} ms (31 days) at a time",
            to - from
        )));
    }
    blocking(move || {
        let store = s.store.get()?;
        let report = crate::accounting::fleet_hours(&*store, &s.intensity, from, to)?;
        let totals = report.hours.totals();
        Ok(Json(json!({
            "from": from,
            "to": to,
            "devices": report.hours.devices(),
            "intensity_sources": report.hours.sources().collect::<Vec<_>>(),
            "totals": {
                "energy_mj": totals.energy,
                "renewable_mj": totals.renewable.0,
                "renewable_share_ppm": totals.renewable_share_ppm,
                "co2e_mg": totals.co2e_mg,
            },
            "hours": report.hours.hours(),
            "skipped": report.skipped,
        })))
    })
    .await
}

async fn not_found() -> AppError {
    AppError::NoRoute
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// The API router.
pub fn app(state: ApiState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let console = if state.console.enabled {
        crate::console::routes(state.console.max_upload_bytes)
    } else {
        Router::new()
    };
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/bundle", get(proofs::bundle))
        .route(
            "/api/v1/devices/{id}/jobs/{job}/bundle",
            get(proofs::job_bundle),
        )
        .route("/api/v1/devices/{id}/hours", get(hours))
        .route("/api/v1/devices/bulk", post(admin::bulk))
        .route("/api/v1/devices/{id}/approve", post(admin::approve))
        .route("/api/v1/devices/{id}/revoke", post(admin::revoke))
        .route("/api/v1/devices/{id}/provider", post(admin::set_provider))
        .route("/api/v1/fleet/hours", get(fleet_hours))
        .route("/api/v1/epochs", get(epochs))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/account", get(admin::whoami))
        .route("/api/v1/account/balance", get(ledger::balance))
        .route("/api/v1/account/ledger", get(ledger::history))
        .route("/api/v1/account/statement", get(ledger::statement))
        .route("/api/v1/account/stake", post(ledger::stake))
        .route("/api/v1/account/spend-cap", put(ledger::set_spend_cap))
        .route(
            "/api/v1/account/payout-address",
            put(settlement::set_address),
        )
        .route("/api/v1/account/settlements", get(settlement::mine))
        .route(
            "/api/v1/settlements",
            get(settlement::rounds).post(settlement::settle_now),
        )
        .route("/api/v1/accounts/{id}/credits", post(ledger::deposit))
        .route("/api/v1/accounts", get(admin::list).post(admin::create))
        .route("/api/v1/audit", get(admin::audit))
        .route("/api/v1/accounts/{id}/tokens", post(admin::create_token))
        .route("/api/v1/tokens/{id}/revoke", post(admin::revoke_token))
        .route(
            "/api/v1/enrollment-tokens",
            get(enrollment::list).post(enrollment::create),
        )
        .route(
            "/api/v1/enrollment-tokens/{id}/revoke",
            post(enrollment::revoke),
        )
        .route("/api/v1/enrollments", post(enrollment::enroll))
        .route("/api/v1/blobs", get(blobs::list))
        .route(
            "/api/v1/blobs/{sha256}",
            get(blobs::get).put(blobs::put).delete(blobs::delete),
        )
        .route("/api/v1/market", get(market))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/silences", post(alerts::silence))
        .route(
            "/api/v1/alerts/silences/{id}/end",
            post(alerts::end_silence),
        )
        .route("/api/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/api/v1/jobs/estimate", post(jobs::estimate))
        .route("/api/v1/jobs/{id}", get(jobs::show))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/events", get(jobs::events))
        .route("/api/v1/jobs/{id}/results", get(jobs::results))
        .route("/api/v1/jobs/{id}/outputs/{index}", put(outputs::put))
        .route(
            "/api/v1/jobs/{id}/retirements",
            post(certificates::retire_certificate),
        )
        .route(
            "/api/v1/jobs/{id}/emissions",
            get(certificates::job_emissions),
        )
        .route(
            "/api/v1/certificates",
            get(certificates::list).post(certificates::import_certificates),
        )
        // Every body an extractor reads (the JSON routes, the console's forms) is bounded;
        // the blob upload streams its own body against `max_blob_bytes` and the quota, and
        // the console's job form has `console.max_upload_bytes`.
        .merge(console)
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Operator actions are recorded; every answer carries the security headers.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::audit,
        ))
        .layer(axum::middleware::map_response(guard::security_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchor::local::close_epoch;
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use attest::KeyPair;
    use attest::sample::{SAMPLE_START, SampleDevice};
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn setup(name: &str) -> (ApiState, SampleDevice) {
        let dir = std::env::temp_dir().join(format!("api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("c.db");
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let cfg = IngestConfig::auto_approving();
        let mut ing = Ingest::new(SqliteStore::open(&db).unwrap(), key.clone(), cfg);
        let mut dev = SampleDevice::new(9);
        let topic = |leaf: &str| format!("{PREFIX}{}/{leaf}", dev.key.device_id());
        let mut batch = vec![(topic("hello"), dev.hello().into_bytes())];
        batch.extend(
            dev.clone()
                .chain(12, 60_000)
                .iter()
                .map(|e| (topic("records"), e.as_bytes().to_vec())),
        );
        ing.handle(&batch, SAMPLE_START.0 + 86_400_000).unwrap();
        close_epoch(ing.store_mut(), &key, SAMPLE_START.0 + 86_400_000).unwrap();
        let state = ApiState::new(
            Arc::new(SqlitePool::new(db)),
            dir.join("status.json"),
            Arc::new(key.clone()),
            Arc::new(IntensityResolver::bundled(None).unwrap()),
            dir.join("blobs"),
        );
        let _ = dev.chain(0, 1);
        (state, dev)
    }

    async fn get_json(app: Router, uri: &str) -> (StatusCode, Value) {
        let r = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = to_bytes(r.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn the_market_lists_offers_with_their_state_and_filters_them() {
        let (state, dev) = setup("market");
        let id = dev.key.device_id().to_string();
        let (s, v) = get_json(app(state.clone()), "/api/v1/market?sort=price").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v[0]["device"], id);
        assert_eq!(v[0]["gpu"], "Orin (nvgpu)");
        assert_eq!(v[0]["cuda"], "8.7");
        assert_eq!(v[0]["vram_mib"], 65_536);
        assert_eq!(v[0]["cpu"], "ARM Cortex-A78AE (12 cores)");
        assert_eq!(v[0]["price_micro_per_gpu_hour"], 250_000);
        assert!(v[0]["runway_h"].as_f64().unwrap() >= 0.0, "{v}");
        assert!(v[0]["battery"].as_f64().is_some(), "{v}");
        // Filters: a GPU it does not have, more memory than it has, only online devices
        // (its records are from the sample's June day, long ago).
        for q in ["gpu=h100", "vram_min_mib=100000", "online=true"] {
            let (s, v) = get_json(app(state.clone()), &format!("/api/v1/market?{q}")).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(v, json!([]), "{q}");
        }
        let (s, v) = get_json(
            app(state.clone()),
            "/api/v1/market?gpu=orin&vram_min_mib=8192",
        )
        .await;
        assert_eq!(
            (s, v.as_array().map(|a| a.len())),
            (StatusCode::OK, Some(1))
        );
        let (s, v) = get_json(app(state), "/api/v1/market?sort=colour").await;
        assert_eq!(
            (s, &v["reason"]),
            (StatusCode::BAD_REQUEST, &json!("bad_query"))
        );
    }

    #[tokio::test]
    async fn devices_epochs_and_bundles_are_served_and_errors_are_json_with_a_reason() {
        let (state, dev) = setup("routes");
        let id = dev.key.device_id().to_string();
        let (s, v) = get_json(app(state.clone()), "/api/v1/devices").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["id"], id);
        assert_eq!(v[0]["state"], "approved");
        assert_eq!(v[0]["messages"], 12);
        assert_eq!(v[0]["site"]["grid_region"], "DE");
        let (s, v) = get_json(app(state.clone()), "/api/v1/epochs").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["tree_size"], 12);
        let (s, v) = get_json(app(state.clone()), &format!("/api/v1/devices/{id}/bundle")).await;
        assert_eq!(s, StatusCode::OK);
        let b: attest::bundle::ProofBundle = serde_json::from_value(v).unwrap();
        let opts = attest::bundle::VerifyOptions::pinned(
            state.controller.public(),
            attest::TimestampMs(u64::MAX / 2),
        );
        assert_eq!(attest::bundle::verify(&b, &opts).unwrap().records, 12);
        let (s, v) = get_json(app(state.clone()), &format!("/api/v1/devices/{id}/hours")).await;
        assert_eq!(s, StatusCode::OK);
        // 12 records a minute apart from midnight: 11 minutes, all in the first hour.
        assert_eq!(v["hours"].as_array().map(|h| h.len()), Some(1), "{v}");
        let load: u64 = v["totals"]["energy_mj"]["load"].as_u64().unwrap();
        assert_eq!(v["hours"][0]["energy"]["load"].as_u64().unwrap(), load);
        assert!(load > 0);
        let r = app(state.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text =
            String::from_utf8(to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        for line in [
            "heliostat_devices{state=\"approved\"} 1",
            "heliostat_devices{state=\"pending\"} 0",
            "heliostat_epochs_closed_total 1",
            "heliostat_epochs_not_on_chain 1",
            "# TYPE heliostat_ingest_stored_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Blobs are an account's: without a token, a 401 with a reason (tests/market_api.rs
        // covers the routes with tokens).
        let (s, v) = get_json(
            app(state.clone()),
            &format!("/api/v1/blobs/{}", "0".repeat(64)),
        )
        .await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("missing_token"))
        );
        let (s, v) = get_json(app(state.clone()), "/api/v1/devices/hs-nope").await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_device_id"))
        );
        let other = SampleDevice::new(10).key.device_id();
        let (s, v) = get_json(app(state.clone()), &format!("/api/v1/devices/{other}")).await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_device"))
        );
        let (s, v) = get_json(
            app(state.clone()),
            &format!("/api/v1/devices/{other}/bundle"),
        )
        .await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_device"))
        );
        let (s, v) = get_json(app(state), "/api/v1/nothing").await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("no_such_route"))
        );
    }

    /// Two approved devices (DE and an unknown region) with 4 h of records each from
    /// midnight, anchored, served with the bundled table and an hourly CSV for DE's third
    /// hour (02:00, when the sample battery reaches its reserve and the grid takes over).
    fn fleet_setup(name: &str) -> (ApiState, [DeviceId; 2]) {
        let dir = std::env::temp_dir().join(format!("api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("c.db");
        let key = KeyPair::from_seed(&[0xc0; 32]);
        let mut ing = Ingest::new(
            SqliteStore::open(&db).unwrap(),
            key.clone(),
            IngestConfig::auto_approving(),
        );
        let mut ids = Vec::new();
        let mut batch = Vec::new();
        for (seed, region) in [(31, "DE"), (32, "unknown")] {
            let mut dev = SampleDevice::new(seed);
            let id = dev.key.device_id();
            let mut hello: Hello = dev.hello().open().unwrap();
            hello.site.grid_region = region.into();
            let hello = Envelope::seal(&hello, &dev.key);
            batch.push((format!("{PREFIX}{id}/hello"), hello.into_bytes()));
            for e in dev.chain(4 * 60 + 1, 60_000) {
                batch.push((format!("{PREFIX}{id}/records"), e.as_bytes().to_vec()));
            }
            ids.push(id);
        }
        let now = SAMPLE_START.0 + 86_400_000;
        ing.handle(&batch, now).unwrap();
        close_epoch(ing.store_mut(), &key, now).unwrap();
        let csv = crate::intensity::HourlySeries::parse(
            "grid.csv",
            "grid.csv",
            "region,hour_start_utc,g_co2e_per_kwh\nDE,2026-06-21T02:00:00Z,50.5\n",
        )
        .unwrap();
        let state = ApiState::new(
            Arc::new(SqlitePool::new(db)),
            dir.join("status.json"),
            Arc::new(key.clone()),
            Arc::new(IntensityResolver::bundled(Some(csv)).unwrap()),
            dir.join("blobs"),
        );
        (state, [ids[0], ids[1]])
    }

    #[tokio::test]
    async fn fleet_hours_sum_the_device_hours_and_refuse_unbounded_periods() {
        let (state, ids) = fleet_setup("fleet");
        let (from, to) = (SAMPLE_START.0, SAMPLE_START.0 + 4 * 3_600_000);
        let q = format!("from={from}&to={to}");
        let (s, fleet) = get_json(app(state.clone()), &format!("/api/v1/fleet/hours?{q}")).await;
        assert_eq!(s, StatusCode::OK, "{fleet}");
        assert_eq!(fleet["devices"], 2);
        let mut devices = Vec::new();
        for id in ids {
            let (s, v) = get_json(
                app(state.clone()),
                &format!("/api/v1/devices/{id}/hours?{q}"),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            devices.push(v);
        }
        let hours = fleet["hours"].as_array().unwrap();
        assert_eq!(hours.len(), 4, "{fleet}");
        for (i, h) in hours.iter().enumerate() {
            assert_eq!(h["devices"], 2);
            for field in ["load", "solar", "grid_import", "battery_discharge"] {
                let sum: u64 = devices
                    .iter()
                    .map(|d| d["hours"][i]["energy"][field].as_u64().unwrap())
                    .sum();
                assert_eq!(h["energy"][field].as_u64(), Some(sum), "hour {i} {field}");
            }
            let co2: u64 = devices
                .iter()
                .map(|d| d["hours"][i]["co2e_mg"].as_u64().unwrap())
                .sum();
            let ren: u64 = devices
                .iter()
                .map(|d| d["hours"][i]["renewable"].as_u64().unwrap())
                .sum();
            assert_eq!(
                (h["co2e_mg"].as_u64(), h["renewable"].as_u64()),
                (Some(co2), Some(ren))
            );
        }
        let total: u64 = devices
            .iter()
            .map(|d| d["totals"]["co2e_mg"].as_u64().unwrap())
            .sum();
        assert_eq!(fleet["totals"]["co2e_mg"].as_u64(), Some(total));
        assert!(total > 0, "night hours draw from the grid: {fleet}");
        // DE's third hour is charged at the CSV figure, its others and the other device's
        // at the table's.
        let intensities = |d: &Value| -> Vec<u64> {
            d["hours"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["intensity_mg_per_kwh"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(
            intensities(&devices[0]),
            vec![342_060, 342_060, 50_500, 342_060]
        );
        assert_eq!(intensities(&devices[1]), vec![472_940; 4]);
        assert_eq!(
            devices[0]["intensity_source"],
            "mixed: ember-2024:DE (yearly average) for 3 h; operator-csv:grid.csv (hourly) for 1 h"
        );
        assert!(hours[2]["energy"]["grid_import"].as_u64().unwrap() > 0);
        // Unbounded, inverted, too long and malformed periods: JSON errors with a reason.
        for (uri, status, reason) in [
            ("/api/v1/fleet/hours", StatusCode::BAD_REQUEST, "bad_period"),
            (
                "/api/v1/fleet/hours?from=5&to=4",
                StatusCode::BAD_REQUEST,
                "bad_period",
            ),
            (
                "/api/v1/fleet/hours?from=0&to=2678400001",
                StatusCode::BAD_REQUEST,
                "period_too_long",
            ),
            (
                "/api/v1/fleet/hours?from=x&to=1",
                StatusCode::BAD_REQUEST,
                "bad_query",
            ),
        ] {
            let (s, v) = get_json(app(state.clone()), uri).await;
            assert_eq!(
                (s, v["reason"].as_str()),
                (status, Some(reason)),
                "{uri}: {v}"
            );
        }
        let (s, v) = get_json(
            app(state.clone()),
            "/api/v1/fleet/hours?from=0&to=2678400000",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "exactly 31 days is allowed: {v}");
        assert_eq!(
            v["hours"].as_array().map(Vec::len),
            Some(0),
            "nothing in 1970"
        );
    }

    #[tokio::test]
    async fn a_bundle_charged_at_hourly_csv_figures_verifies() {
        let (state, ids) = fleet_setup("csv-bundle");
        let (s, v) = get_json(
            app(state.clone()),
            &format!("/api/v1/devices/{}/bundle", ids[0]),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let b: attest::bundle::ProofBundle = serde_json::from_value(v).unwrap();
        let statement = b.statement().unwrap();
        let stated: Vec<u32> = statement
            .hours
            .iter()
            .map(|h| h.intensity_mg_per_kwh)
            .collect();
        assert_eq!(stated, vec![342_060, 342_060, 50_500, 342_060]);
        // The CSV's DE rows of that year travel in the bundle, named by their digest.
        assert_eq!(b.datasets.len(), 1);
        let csv = b.datasets[0].digest();
        assert_eq!(statement.hours[2].dataset, csv);
        assert_eq!(
            statement.hours[0].dataset,
            attest::intensity::bundled_digest()
        );
        assert!(b.datasets[0].name().starts_with("operator-csv:grid.csv"));
        // A verifier does not take the operator's series on its word: it must accept it.
        let mut opts = attest::bundle::VerifyOptions::pinned(
            state.controller.public(),
            attest::TimestampMs(u64::MAX / 2),
        );
        let e = attest::bundle::verify(&b, &opts).unwrap_err();
        assert_eq!(e.check, attest::bundle::Check::Intensity, "{e}");
        opts.accepted_datasets.push(csv);
        let report = attest::bundle::verify(&b, &opts).unwrap();
        assert_eq!(report.records, 241);
        assert_eq!(report.datasets.len(), 2);
        // The carried dataset's figure is checked: a changed one is caught even when the
        // controller re-signs its statement.
        let mut bad = b.clone();
        let mut forged = statement.clone();
        forged.hours[2].intensity_mg_per_kwh = 342_060;
        bad.statement = attest::bundle::ProofBundle::sign_statement(&forged, &state.controller);
        assert_eq!(
            attest::bundle::verify(&bad, &opts).unwrap_err().check,
            attest::bundle::Check::Intensity
        );
    }

    #[tokio::test]
    async fn the_api_answers_over_a_real_socket() {
        let (state, _) = setup("socket");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
        let text = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"stored\""), "{text}");
    }

    async fn send(app: Router, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
        let r = app.oneshot(req).await.unwrap();
        let status = r.status();
        let ctype = r
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = to_bytes(r.into_body(), 1 << 24).await.unwrap();
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{status}: not JSON: {:?}",
                String::from_utf8_lossy(&body).into_owned()
            )
        });
        (status, ctype, v)
    }

    /// A buyer account in the state's database; its token.
    fn buyer(state: &ApiState, quota_bytes: u64) -> String {
        let mut st = state.store.get().unwrap();
        crate::accounts::create(
            &mut *st,
            crate::accounts::AccountKind::Buyer,
            "buyer",
            quota_bytes,
            None,
            "",
            crate::accounts::Token::from_secret([0xb0; 32]),
            1,
        )
        .unwrap()
        .token
        .reveal()
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_is_refused_with_a_json_reason_not_plain_text() {
        let (mut state, _) = setup("oversize");
        state.limits.max_blob_bytes = 1024;
        let token = buyer(&state, 1 << 20);
        let put = |body: Vec<u8>| {
            let hex = attest::Hash32::digest(&body).to_hex();
            Request::put(format!("/api/v1/blobs/{hex}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(body))
                .unwrap()
        };
        let (s, ctype, v) = send(app(state.clone()), put(vec![7u8; 1025])).await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
            "{v}"
        );
        assert_eq!(ctype.as_deref(), Some("application/json"));
        let stored = || {
            std::fs::read_dir(&state.blobs)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.path().is_file())
                        .count()
                })
                .unwrap_or(0)
        };
        assert_eq!(stored(), 0);
        // At the limit it is stored, under its hash.
        let (s, _, v) = send(app(state.clone()), put(vec![7u8; 1024])).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let hex = attest::Hash32::digest(&[7u8; 1024]).to_hex();
        assert_eq!(
            (
                v["sha256"].as_str(),
                v["bytes"].as_u64(),
                v["new"].as_bool()
            ),
            (Some(hex.as_str()), Some(1024), Some(true))
        );
        assert_eq!(
            std::fs::read(state.blobs.join(&hex)).unwrap(),
            vec![7u8; 1024]
        );
        // A JSON route's body is bounded too: past `max_body_bytes`, a 413 with a reason.
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(state.limits.max_body_bytes));
        let req = Request::post("/api/v1/jobs")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(big))
            .unwrap();
        let (s, _, v) = send(app(state.clone()), req).await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
            "{v}"
        );
    }

    #[tokio::test]
    async fn an_endless_upload_stops_at_the_quota_while_it_streams_and_leaves_nothing() {
        let (state, _) = setup("endless");
        let token = buyer(&state, 1000);
        // A body with no length that never ends: only a check made while streaming stops it.
        let endless = Body::from_stream(tokio_util::io::ReaderStream::new(tokio::io::repeat(7)));
        let req = Request::put(format!("/api/v1/blobs/{}", "ab".repeat(32)))
            .header("authorization", format!("Bearer {token}"))
            .body(endless)
            .unwrap();
        let (s, _, v) = send(app(state.clone()), req).await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("quota_exceeded")),
            "{v}"
        );
        let incoming = std::fs::read_dir(state.blobs.join(".incoming"))
            .unwrap()
            .count();
        assert_eq!(incoming, 0, "the partial upload is removed");
    }

    #[tokio::test]
    async fn a_route_asked_with_another_method_answers_405_with_a_json_reason() {
        let (state, _) = setup("method");
        for (method, uri) in [("POST", "/api/v1/status"), ("DELETE", "/api/v1/blobs")] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let (s, ctype, v) = send(app(state.clone()), req).await;
            assert_eq!(
                (s, v["reason"].as_str()),
                (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
                "{method} {uri}: {v}"
            );
            assert_eq!(ctype.as_deref(), Some("application/json"));
        }
    }

    #[tokio::test]
    async fn a_bundle_over_a_period_with_nothing_anchored_is_a_409_with_a_reason() {
        let (state, dev) = setup("conflict");
        let id = dev.key.device_id();
        // A day that ended long before the device's first record.
        let uri = format!("/api/v1/devices/{id}/bundle?from=0&to=86400000");
        let (s, v) = get_json(app(state), &uri).await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (StatusCode::CONFLICT, Some("nothing_to_prove")),
            "{v}"
        );
        assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{v}");
    }

    #[tokio::test]
    async fn requests_share_a_few_open_connections_instead_of_opening_one_each() {
        let (state, _) = setup("pool");
        for _ in 0..20 {
            let (s, _) = get_json(app(state.clone()), "/api/v1/devices").await;
            assert_eq!(s, StatusCode::OK);
        }
        assert_eq!(state.store.idle(), 1, "one connection, reused twenty times");
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_opened_is_a_503_with_a_reason() {
        let (mut state, dev) = setup("unavailable");
        // A database path whose folder does not exist: SQLite cannot open it.
        let missing = std::env::temp_dir()
            .join(format!("api-missing-{}", std::process::id()))
            .join("c.db");
        state.store = Arc::new(SqlitePool::new(missing));
        let id = dev.key.device_id();
        for uri in [
            "/api/v1/devices".to_string(),
            format!("/api/v1/devices/{id}"),
            format!("/api/v1/devices/{id}/bundle"),
            "/api/v1/epochs".to_string(),
        ] {
            let (s, v) = get_json(app(state.clone()), &uri).await;
            assert_eq!(
                (s, v["reason"].as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
                "{uri}: {v}"
            );
        }
    }
}
