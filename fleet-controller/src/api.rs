//! The HTTP API (axum): devices, epochs and anchors, ingest status, and bundle download.
//! Every error is JSON with a stable `reason`. Reads go to SQLite on blocking threads through
//! their own connections (WAL lets them run beside the ingest writer).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/status` | messages stored, rejections by reason |
//! | `GET /api/v1/devices` | every device: state, last seen, messages, site, channels |
//! | `GET /api/v1/devices/{id}` | one device |
//! | `GET /api/v1/devices/{id}/bundle?from=MS&to=MS&format=json\|postcard` | a proof bundle (anchored messages) |
//! | `GET /api/v1/devices/{id}/hours?from=MS&to=MS` | hour-by-hour energy by source, renewable share, emissions |
//! | `GET /api/v1/epochs` | closed epochs with their roots, local anchor entries and EVM anchors (tx, block, gas) |

use std::path::PathBuf;

use attest::msg::Hello;
use attest::{DeviceId, Envelope, PublicKey};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bundles::{BundleError, Intensity};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// What the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The controller database.
    pub db: PathBuf,
    /// The ingest status file.
    pub status: PathBuf,
    /// The controller's public key (named in bundles' local anchors).
    pub controller: PublicKey,
    /// The intensity used in statements.
    pub intensity: Intensity,
}

/// Every error the API returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not a device id.
    #[error("{0}")]
    BadDeviceId(String),
    /// No such device.
    #[error("no device {0}")]
    UnknownDevice(DeviceId),
    /// Nothing to put in a bundle.
    #[error("{0}")]
    NothingToProve(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Something else went wrong inside.
    #[error("{0}")]
    Internal(String),
    /// No such route.
    #[error("no such route")]
    NoRoute,
}

impl AppError {
    fn reason(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadDeviceId(_) => (StatusCode::BAD_REQUEST, "bad_device_id"),
            AppError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "unknown_device"),
            AppError::NothingToProve(_) => (StatusCode::CONFLICT, "nothing_to_prove"),
            AppError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            AppError::NoRoute => (StatusCode::NOT_FOUND, "no_such_route"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, reason) = self.reason();
        (
            status,
            Json(json!({"reason": reason, "message": self.to_string()})),
        )
            .into_response()
    }
}

impl From<BundleError> for AppError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Store(s) => AppError::Store(s),
            BundleError::UnknownDevice(d) => AppError::UnknownDevice(d),
            other => AppError::NothingToProve(other.to_string()),
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

fn device_json(store: &SqliteStore, d: &crate::store::DeviceRow) -> Result<Value, AppError> {
    let hello: Option<Hello> = Envelope::decode(&d.hello).ok().and_then(|e| e.open().ok());
    Ok(json!({
        "id": d.id.to_string(),
        "state": d.state.as_str(),
        "first_seen_ms": d.first_seen_ms,
        "last_seen_ms": d.last_seen_ms,
        "messages": store.count_items(d.id)?,
        "site": hello.as_ref().map(|h| &h.site),
        "channels": hello.as_ref().map(|h| &h.channels),
        "hardware": hello.as_ref().map(|h| &h.hardware),
    }))
}

async fn devices(State(s): State<ApiState>) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let store = SqliteStore::open(&s.db)?;
        let list = store
            .devices()?
            .iter()
            .map(|d| device_json(&store, d))
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
        let store = SqliteStore::open(&s.db)?;
        let d = store.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        Ok(Json(device_json(&store, &d)?))
    })
    .await
}

async fn epochs(State(s): State<ApiState>) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let store = SqliteStore::open(&s.db)?;
        let mut out = Vec::new();
        let last = store.last_epoch()?.map_or(0, |e| e.epoch + 1);
        for n in 0..last {
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
        Ok(Json(Value::Array(out)))
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

/// Query of the bundle route.
#[derive(Debug, Deserialize)]
pub struct BundleQuery {
    from: Option<u64>,
    to: Option<u64>,
    format: Option<String>,
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
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let store = SqliteStore::open(&s.db)?;
        let dev = store.device(id)?.ok_or(AppError::UnknownDevice(id))?;
        let hello: Hello = Envelope::decode(&dev.hello)
            .ok()
            .and_then(|e| e.open().ok())
            .ok_or_else(|| AppError::Internal("stored hello does not decode".into()))?;
        let items = store.items_between(id, q.from.unwrap_or(0), q.to.unwrap_or(u64::MAX / 2))?;
        let chain: Vec<attest::msg::ChainMessage> = items
            .iter()
            .filter_map(|i| {
                Envelope::decode(&i.envelope)
                    .ok()
                    .and_then(|e| attest::msg::ChainMessage::open(&e).ok())
            })
            .collect();
        let statement = crate::bundles::device_statement(&hello, &chain, &s.intensity)
            .map_err(|e| AppError::NothingToProve(e.to_string()))?;
        Ok(Json(json!({
            "device": id.to_string(),
            "from": statement.from.0,
            "to": statement.to.0,
            "intensity_source": statement.intensity_source,
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

async fn bundle(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<BundleQuery>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let store = SqliteStore::open(&s.db)?;
        let b = crate::bundles::device_period(
            &store,
            s.controller,
            id,
            q.from.unwrap_or(0),
            q.to.unwrap_or(u64::MAX / 2),
            &s.intensity,
            q.to.is_none(),
        )?;
        Ok(match q.format.as_deref() {
            Some("postcard") => (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                b.to_postcard(),
            )
                .into_response(),
            _ => ([(header::CONTENT_TYPE, "application/json")], b.to_json()).into_response(),
        })
    })
    .await
}

async fn not_found() -> AppError {
    AppError::NoRoute
}

/// The API router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/bundle", get(bundle))
        .route("/api/v1/devices/{id}/hours", get(hours))
        .route("/api/v1/epochs", get(epochs))
        .fallback(not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epochs::close_epoch;
    use crate::ingest::{Ingest, IngestConfig, PREFIX};
    use attest::KeyPair;
    use attest::sample::{SAMPLE_START, SampleDevice};
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
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
        let state = ApiState {
            db,
            status: dir.join("status.json"),
            controller: key.public(),
            intensity: Intensity {
                mg_per_kwh: 400_000,
                source: "test".into(),
            },
        };
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
        let opts = attest::bundle::VerifyOptions {
            controller_key: Some(state.controller),
            now: attest::TimestampMs(u64::MAX / 2),
        };
        assert_eq!(attest::bundle::verify(&b, &opts).unwrap().records, 12);
        let (s, v) = get_json(app(state.clone()), &format!("/api/v1/devices/{id}/hours")).await;
        assert_eq!(s, StatusCode::OK);
        // 12 records a minute apart from midnight: 11 minutes, all in the first hour.
        assert_eq!(v["hours"].as_array().map(|h| h.len()), Some(1), "{v}");
        let load: u64 = v["totals"]["energy_mj"]["load"].as_u64().unwrap();
        assert_eq!(v["hours"][0]["energy"]["load"].as_u64().unwrap(), load);
        assert!(load > 0);
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
}
