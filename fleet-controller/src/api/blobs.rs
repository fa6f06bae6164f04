//! Blobs (job inputs, PTX modules, results), named by their SHA-256.
//!
//! An upload (`PUT /api/v1/blobs/{sha256}`, scope `submit`) is streamed to a temporary file
//! while it is hashed and counted; past the blob limit or the account's quota it stops at
//! once (413), and a body that does not hash to its name is refused (422). Only then is it
//! fsynced, renamed into `blobs/{hex}` and charged to the account, under one lock with the
//! quota check. On any error the temporary file goes (its guard removes it even when the
//! client hangs up mid-body) and the account is charged nothing.
//!
//! A download (`GET /api/v1/blobs/{sha256}`, scope `read`) is streamed from the file, for
//! a blob the caller owns, an output of one of its jobs, or (a provider) an input of a job
//! not yet finished; every other blob is a 404, as if it did not exist.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use attest::Hash32;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::auth::Auth;
use super::{ApiState, AppError, blocking};
use crate::accounts::Scope;
use crate::store::blobs::{BlobGrant, BlobStore, BlobUsage, Release};

/// Parses a path's hash (64 hex digits) into its canonical form.
pub(super) fn parse_hash(s: &str) -> Result<Hash32, AppError> {
    if s.len() != 64 {
        return Err(AppError::BadHash(format!(
            "{s:?}: a SHA-256 is 64 hex digits"
        )));
    }
    attest::hex::decode_array::<32>(s)
        .map(Hash32)
        .map_err(|e| AppError::BadHash(format!("{s:?}: {e}")))
}

fn usage_json(u: BlobUsage) -> Value {
    json!({"used_bytes": u.used_bytes, "quota_bytes": u.quota_bytes})
}

fn over_quota(bytes: u64, u: BlobUsage) -> AppError {
    AppError::QuotaExceeded(format!(
        "{bytes} bytes would take the account past its quota: {} of {} bytes used",
        u.used_bytes, u.quota_bytes
    ))
}

fn too_large(bytes: u64, max: u64) -> AppError {
    AppError::TooLarge(format!(
        "{bytes} bytes or more; a blob is at most {max} bytes"
    ))
}

/// A temporary upload file that is removed when dropped, unless it was renamed away: every
/// error path (and a client that hangs up, which drops the handler) leaves nothing behind.
pub(super) struct Incoming(PathBuf);

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Names temporary files apart within this process (the folder is the controller's own).
static NEXT_UPLOAD: AtomicU64 = AtomicU64::new(0);

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io(what: &str, e: std::io::Error) -> AppError {
    AppError::Internal(format!("{what}: {e}"))
}

/// Streams `body` into `blobs/.incoming/` while it is hashed and counted, stopping at the
/// first length `refuse` says no to; fsynced. The file goes when the [`Incoming`] is
/// dropped, unless it was renamed into place.
pub(super) async fn receive(
    blobs: &FsPath,
    hex: &str,
    mut body: Body,
    refuse: impl Fn(u64) -> Option<AppError>,
) -> Result<(Incoming, Hash32, u64), AppError> {
    let incoming_dir = blobs.join(".incoming");
    tokio::fs::create_dir_all(&incoming_dir)
        .await
        .map_err(|e| io("creating the upload folder", e))?;
    let n = NEXT_UPLOAD.fetch_add(1, Ordering::Relaxed);
    let tmp = Incoming(incoming_dir.join(format!("{hex}.{}.{n}", std::process::id())));
    let mut file = tokio::fs::File::create(&tmp.0)
        .await
        .map_err(|e| io("creating the upload file", e))?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::BadBody(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry no bytes of the blob
        };
        len += data.len() as u64;
        if let Some(e) = refuse(len) {
            return Err(e);
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io("writing the upload", e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| io("syncing the upload", e))?;
    Ok((tmp, Hash32(hasher.finalize().into()), len))
}

/// Puts a received file in place as `blobs/{hex}` (unless a file of that name, the same
/// bytes, is there already); whether it was there.
pub(super) fn place(dir: &FsPath, tmp: &Incoming, hex: &str) -> Result<bool, AppError> {
    let path = dir.join(hex);
    let existed = path.exists();
    if !existed {
        std::fs::rename(&tmp.0, &path).map_err(|e| io("keeping the upload", e))?;
        sync_dir(dir).map_err(|e| io("syncing the blob folder", e))?;
    }
    Ok(existed)
}

/// `PUT /api/v1/blobs/{sha256}`: streams the body to disk under its hash (see the module
/// comment). Idempotent: a blob the account owns already is not read again.
pub(crate) async fn put(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Submit)?;
    let hash = parse_hash(&name)?;
    let hex = hash.to_hex();
    let account = caller.account;
    let pool = s.store.clone();
    let (usage, owned) = blocking(move || {
        let st = pool.get()?;
        Ok((st.blob_usage(account)?, st.owned_blob(account, hash)?))
    })
    .await?;
    let usage = usage.ok_or(AppError::BadToken)?;
    if let Some(o) = owned {
        return Ok(Json(json!({
            "sha256": hex, "bytes": o.bytes, "new": false, "usage": usage_json(usage),
        })));
    }
    let max = s.limits.max_blob_bytes;
    let room = usage.remaining();
    // A declared length over either bound is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > max {
            return Err(too_large(len, max));
        }
        if len > room {
            return Err(over_quota(len, usage));
        }
    }
    let (tmp, got, len) = receive(&s.blobs, &hex, body, |len| {
        if len > max {
            Some(too_large(len, max))
        } else if len > room {
            Some(over_quota(len, usage))
        } else {
            None
        }
    })
    .await?;
    if got != hash {
        return Err(AppError::HashMismatch {
            named: hex,
            got: got.to_hex(),
        });
    }
    let (pool, dir, lock) = (s.store.clone(), s.blobs.clone(), s.blob_lock.clone());
    blocking(move || {
        // One upload at a time from here: the file's placing and the quota's charge are
        // decided together, so a refused upload removes only a file nobody else holds.
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = dir.join(&hex);
        let existed = place(&dir, &tmp, &hex)?;
        let mut st = pool.get()?;
        let granted = st.grant_blob(account, hash, len, crate::runtime::now_ms());
        let refusal = match granted {
            Ok(BlobGrant::Added | BlobGrant::AlreadyOwned) => None,
            Ok(BlobGrant::OverQuota(u)) => Some(over_quota(len, u)),
            Ok(BlobGrant::UnknownAccount) => Some(AppError::BadToken),
            Err(e) => Some(AppError::Store(e)),
        };
        if let Some(e) = refusal {
            if !existed && !st.blob_held(hash).unwrap_or(true) {
                let _ = std::fs::remove_file(&path);
            }
            return Err(e);
        }
        let usage = st.blob_usage(account)?.ok_or(AppError::BadToken)?;
        Ok(Json(json!({
            "sha256": hex, "bytes": len, "new": true, "usage": usage_json(usage),
        })))
    })
    .await
}

/// `GET /api/v1/blobs/{sha256}`: the blob, streamed from its file, to a caller that may
/// read it.
pub(crate) async fn get(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let caller = auth.require(Scope::Read)?;
    let hash = parse_hash(&name)?;
    let hex = hash.to_hex();
    let pool = s.store.clone();
    if !blocking(move || Ok(pool.get()?.can_read_blob(&caller, hash)?)).await? {
        return Err(AppError::NoSuchBlob(hex));
    }
    let file = tokio::fs::File::open(s.blobs.join(&hex))
        .await
        .map_err(|_| AppError::NoSuchBlob(hex.clone()))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| io("reading the blob", e))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// `GET /api/v1/blobs`: the caller's blobs and its usage against its quota.
pub(super) async fn list(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    blocking(move || {
        let st = s.store.get()?;
        let usage = st.blob_usage(caller.account)?.ok_or(AppError::BadToken)?;
        let blobs: Vec<Value> = st
            .owned_blobs(caller.account)?
            .iter()
            .map(|b| json!({"sha256": b.hash.to_hex(), "bytes": b.bytes, "created_ms": b.created_ms}))
            .collect();
        Ok(Json(json!({"usage": usage_json(usage), "blobs": blobs})))
    })
    .await
}

/// `DELETE /api/v1/blobs/{sha256}`: gives up the caller's ownership (the quota gets the
/// bytes back) unless one of its unfinished jobs needs it; the file goes when nobody
/// holds the blob any more.
pub(super) async fn delete(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Submit)?;
    let hash = parse_hash(&name)?;
    let hex = hash.to_hex();
    blocking(move || {
        let _held = s.blob_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = s.store.get()?;
        match st.release_blob(caller.account, hash)? {
            Release::NotOwned => return Err(AppError::NoSuchBlob(hex)),
            Release::InUse => {
                return Err(AppError::BlobInUse(format!(
                    "blob {hex} is an input of a job of yours that is not finished"
                )));
            }
            Release::Released { orphaned: true } => {
                let _ = std::fs::remove_file(s.blobs.join(&hex));
            }
            Release::Released { orphaned: false } => {}
        }
        let usage = st.blob_usage(caller.account)?.ok_or(AppError::BadToken)?;
        Ok(Json(
            json!({"sha256": hex, "released": true, "usage": usage_json(usage)}),
        ))
    })
    .await
}
