//! Enrollment: an operator makes, lists and revokes enrollment tokens (scope `operate`); a
//! device's first-boot provisioning redeems one with a hello it signed (no API token: the
//! enrollment token is the credential), which approves the device.

use attest::Envelope;
use attest::msg::Hello;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiState, AppError, blocking};
use crate::accounts::{Scope, Token};
use crate::broker_perimeter;
use crate::store::broker::BrokerStore;
use crate::store::enrollment::{EnrollError, Enrolled, EnrollmentStore};

/// Most enrollments one token allows.
pub const MAX_USES: u64 = 10_000;
/// Longest a token lives, seconds (a year).
pub const MAX_TTL_S: u64 = 365 * 86_400;
/// How far a redemption's hello may be from the controller's clock, ms.
pub const HELLO_SKEW_MS: u64 = 10 * 60_000;

/// Body of a new token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// What it is for.
    label: String,
    /// Enrollments it allows (1 unless said).
    uses: Option<u64>,
    /// How long it lives, seconds (7 days unless said).
    ttl_s: Option<u64>,
}

/// `POST /api/v1/enrollment-tokens`: a new token; 201 with its secret, shown once.
pub(super) async fn create(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    let uses = b.uses.unwrap_or(1);
    let ttl_s = b.ttl_s.unwrap_or(7 * 86_400);
    if !(1..=MAX_USES).contains(&uses) || !(1..=MAX_TTL_S).contains(&ttl_s) {
        return Err(AppError::BadBody(format!(
            "uses is 1 to {MAX_USES}, ttl_s 1 to {MAX_TTL_S}"
        )));
    }
    if b.label.trim().is_empty() || b.label.len() > 200 {
        return Err(AppError::BadBody("a label of 1 to 200 bytes".into()));
    }
    let token = Token::generate().map_err(|e| AppError::Internal(format!("random source: {e}")))?;
    blocking(move || {
        let now = crate::runtime::now_ms();
        let expires_ms = now + ttl_s * 1000;
        let id = s.store.get()?.create_enrollment_token(
            token.hash(),
            b.label.trim(),
            uses,
            expires_ms,
            now,
        )?;
        tracing::info!(token = id, uses, "enrollment token made");
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "id": id,
                "secret": token.reveal(),
                "label": b.label.trim(),
                "uses": uses,
                "expires_ms": expires_ms,
            })),
        ))
    })
    .await
}

/// `GET /api/v1/enrollment-tokens`: every token (never a secret), newest first.
pub(super) async fn list(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || Ok(Json(json!({"tokens": s.store.get()?.enrollment_tokens()?})))).await
}

/// `POST /api/v1/enrollment-tokens/{id}/revoke`: it enrols nobody from now on.
pub(super) async fn revoke(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::BadPath(format!("{id:?} is not a token number")))?;
    blocking(move || {
        if !s
            .store
            .get()?
            .revoke_enrollment_token(id, crate::runtime::now_ms())?
        {
            return Err(AppError::UnknownToken(id));
        }
        tracing::info!(token = id, "enrollment token revoked");
        Ok(Json(json!({"id": id, "revoked": true})))
    })
    .await
}

/// Body of a redemption.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The enrollment token (`hst_...`).
    token: String,
    /// A hello the device signed now, hex: proves it holds the key of the id it enrols.
    hello: String,
}

/// The hello's device, once its signature, its id and its time check.
fn proven_device(hex: &str, now: u64) -> Result<attest::DeviceId, AppError> {
    let bytes = attest::hex::decode(hex).map_err(|e| AppError::BadHello(format!("hex: {e}")))?;
    let env = Envelope::decode(&bytes).map_err(|e| AppError::BadHello(e.to_string()))?;
    let hello: Hello = env.open().map_err(|e| AppError::BadHello(e.to_string()))?;
    env.verify(&hello.public_key)
        .map_err(|e| AppError::BadHello(format!("signature: {e}")))?;
    if hello.public_key.device_id() != hello.device {
        return Err(AppError::BadHello(format!(
            "{} is not the id of the key that signed it",
            hello.device
        )));
    }
    if hello.timestamp.0.abs_diff(now) > HELLO_SKEW_MS {
        return Err(AppError::BadHello(format!(
            "signed at {} ms, {} ms from the controller's clock (at most {HELLO_SKEW_MS}): set the device's clock",
            hello.timestamp.0,
            hello.timestamp.0.abs_diff(now)
        )));
    }
    Ok(hello.device)
}

/// `POST /api/v1/enrollments`: a device redeems a token; 201 `approved` (it was pending),
/// `preapproved` (approved with its first hello), or 200 `enrolled` (a retry).
pub(super) async fn enroll(
    State(s): State<ApiState>,
    ApiJson(b): ApiJson<EnrollBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let now = crate::runtime::now_ms();
    let device = proven_device(&b.hello, now)?;
    let token = Token::parse(b.token.trim()).ok_or(AppError::Enroll(EnrollError::BadToken))?;
    blocking(move || {
        let mut store = s.store.get()?;
        let done = store.enroll(token.hash(), device, now)??;
        let (status, state) = match done {
            Enrolled::Approved => (StatusCode::CREATED, "approved"),
            Enrolled::Preapproved => (StatusCode::CREATED, "preapproved"),
            Enrolled::Already => (StatusCode::OK, "enrolled"),
        };
        // The device's broker login, shown this once (a retry gets a new one; the old one
        // stops working when the broker's files are written again).
        let internal = |e: std::io::Error| AppError::Internal(format!("random source: {e}"));
        let password = broker_perimeter::new_password().map_err(internal)?;
        let hash = broker_perimeter::mosquitto_hash(&password).map_err(internal)?;
        store.set_broker_credential(device, &hash, now)?;
        if let Some(tx) = &s.broker_cmd {
            let commands = broker_perimeter::enrol_commands(&device, &password);
            let _ = tx.send(crate::ingest::Outgoing {
                topic: broker_perimeter::DYNSEC_TOPIC.into(),
                payload: commands.to_string().into_bytes(),
                retain: false,
            });
        }
        tracing::info!(%device, state, "device enrolled with a token");
        Ok((
            status,
            Json(json!({
                "device": device.to_string(),
                "state": state,
                "broker": {"username": device.to_string(), "password": password},
            })),
        ))
    })
    .await
}
