//! The caller's own account, and the operator's routes (scope `operate`): accounts and
//! their tokens, device approval.
//!
//! The first operator is made outside the API, on the controller's machine:
//! `fleet-controller --config FILE account create --kind operator --name ops` prints its
//! token once. With it, an operator makes every other account here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiState, AppError, blocking, parse_id};
use crate::accounts::{self, AccountError, AccountId, AccountKind, Scope, Token, TokenId};
use crate::store::accounts::{AccountRow, AccountStore, TokenRow};
use crate::store::blobs::BlobStore;
use crate::store::{DeviceState, Store};

fn account_json(a: &AccountRow, used_bytes: u64) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "name": a.name,
        "quota_bytes": a.quota_bytes,
        "used_bytes": used_bytes,
        "created_ms": a.created_ms,
    })
}

fn token_json(t: &TokenRow) -> Value {
    json!({
        "id": t.id,
        "scopes": t.scopes,
        "label": t.label,
        "created_ms": t.created_ms,
        "revoked_ms": t.revoked_ms,
    })
}

fn number(s: &str, what: &str) -> Result<u64, AppError> {
    s.parse()
        .map_err(|_| AppError::BadPath(format!("{s:?} is not {what} number")))
}

fn new_token() -> Result<Token, AppError> {
    Token::generate().map_err(|e| AppError::Account(AccountError::Random(e.to_string())))
}

/// `GET /api/v1/account`: the caller's account, its token's scopes and its blob usage
/// (any valid token).
pub(super) async fn whoami(
    State(s): State<ApiState>,
    Auth(caller): Auth,
) -> Result<Json<Value>, AppError> {
    blocking(move || {
        let st = s.store.get()?;
        let a = st.account(caller.account)?.ok_or(AppError::BadToken)?;
        let used = st.blob_usage(a.id)?.map_or(0, |u| u.used_bytes);
        let mut v = account_json(&a, used);
        v["token"] = json!({"id": caller.token, "scopes": caller.scopes});
        Ok(Json(v))
    })
    .await
}

/// `GET /api/v1/accounts`: every account with its usage and tokens (never their secrets).
pub(super) async fn list(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || {
        let st = s.store.get()?;
        let mut out = Vec::new();
        for a in st.accounts()? {
            let used = st.blob_usage(a.id)?.map_or(0, |u| u.used_bytes);
            let mut v = account_json(&a, used);
            v["tokens"] = st.tokens(a.id)?.iter().map(token_json).collect();
            out.push(v);
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// Body of `POST /api/v1/accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccountBody {
    /// `buyer`, `provider` or `operator`.
    kind: String,
    /// A unique name.
    name: String,
    /// Its blob quota (default `api.default_quota_bytes`).
    #[serde(default)]
    quota_bytes: Option<u64>,
    /// Its first token's scopes (default: all its kind may hold).
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Its first token's label.
    #[serde(default)]
    label: String,
}

/// `POST /api/v1/accounts`: makes an account and its first token; 201 with the token,
/// shown this once.
pub(super) async fn create(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<NewAccountBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    let kind = AccountKind::parse_named(&b.kind)?;
    let token = new_token()?;
    blocking(move || {
        let mut st = s.store.get()?;
        let made = accounts::create(
            &mut *st,
            kind,
            &b.name,
            b.quota_bytes.unwrap_or(s.limits.default_quota_bytes),
            b.scopes.as_deref(),
            &b.label,
            token,
            crate::runtime::now_ms(),
        )?;
        tracing::info!(account = %made.account.id, kind = %kind, name = %made.account.name, "account created");
        let mut v = account_json(&made.account, 0);
        v["token"] = json!({
            "id": made.token_id,
            "scopes": made.scopes,
            "secret": made.token.reveal(),
        });
        Ok((StatusCode::CREATED, Json(v)))
    })
    .await
}

/// Body of `POST /api/v1/accounts/{id}/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// Its scopes (default: all the account's kind may hold).
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Its label.
    #[serde(default)]
    label: String,
}

/// `POST /api/v1/accounts/{id}/tokens`: another token for an account; 201 with it, shown
/// this once.
pub(super) async fn create_token(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    let id = number(&id, "an account")?;
    let token = new_token()?;
    blocking(move || {
        let mut st = s.store.get()?;
        let (tid, token, scopes) = accounts::issue(
            &mut *st,
            AccountId(id),
            b.scopes.as_deref(),
            &b.label,
            token,
            crate::runtime::now_ms(),
        )?;
        tracing::info!(account = id, token = %tid, "token created");
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "account": id,
                "token": {"id": tid, "scopes": scopes, "secret": token.reveal()},
            })),
        ))
    })
    .await
}

/// `POST /api/v1/tokens/{id}/revoke`: the token stops working at once.
pub(super) async fn revoke_token(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    let id = number(&id, "a token")?;
    blocking(move || {
        if !s
            .store
            .get()?
            .revoke_token(TokenId(id), crate::runtime::now_ms())?
        {
            return Err(AppError::UnknownToken(id));
        }
        tracing::info!(token = id, "token revoked");
        Ok(Json(json!({"id": id, "revoked": true})))
    })
    .await
}

async fn set_state(s: ApiState, id: String, state: DeviceState) -> Result<Json<Value>, AppError> {
    let id = parse_id(&id)?;
    blocking(move || {
        if !s.store.get()?.set_state(id, state)? {
            return Err(AppError::UnknownDevice(id));
        }
        tracing::info!(device = %id, state = state.as_str(), "device state set over the API");
        Ok(Json(json!({"id": id.to_string(), "state": state.as_str()})))
    })
    .await
}

/// `POST /api/v1/devices/{id}/approve`: the device's records count from now on.
pub(crate) async fn approve(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    set_state(s, id, DeviceState::Approved).await
}

/// `POST /api/v1/devices/{id}/revoke`: the device's records are kept apart, never counted.
pub(crate) async fn revoke(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    set_state(s, id, DeviceState::Revoked).await
}

/// Body of `POST /api/v1/devices/{id}/provider`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// The provider account's name; null: no one (any provider's token serves the device).
    provider: Option<String>,
}

/// `POST /api/v1/devices/{id}/provider`: which provider runs the device (known yet or
/// not). Only that provider's token then fetches the inputs of jobs placed there and
/// uploads their outputs.
pub(super) async fn set_provider(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ProviderBody>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    let device = parse_id(&id)?;
    blocking(move || {
        // A device may be assigned before its first hello (provisioned with its key).
        let mut st = s.store.get()?;
        let provider = match &b.provider {
            None => None,
            Some(name) => {
                let a = st
                    .account_by_name(name)?
                    .ok_or_else(|| AppError::BadBody(format!("no account named {name:?}")))?;
                if a.kind != AccountKind::Provider {
                    return Err(AppError::BadBody(format!(
                        "account {name:?} is a {}, not a provider",
                        a.kind.as_str()
                    )));
                }
                Some(a.id)
            }
        };
        st.set_device_provider(device, provider, crate::runtime::now_ms())?;
        tracing::info!(%device, provider = ?b.provider, "device provider set over the API");
        Ok(Json(
            json!({"id": device.to_string(), "provider": b.provider}),
        ))
    })
    .await
}

/// A bulk action on devices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The devices.
    pub devices: Vec<String>,
    /// `approve`, `revoke`, `tag` or `untag`.
    pub action: String,
    /// The tag (`tag`, `untag`).
    #[serde(default)]
    pub tag: Option<String>,
}

/// Most devices one bulk action takes.
pub const MAX_BULK: usize = 1_000;

/// `POST /api/v1/devices/bulk` (scope `operate`): one action on many devices; how many it
/// changed and which it could not (unknown ids).
pub(crate) async fn bulk(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<BulkBody>,
) -> Result<Json<Value>, AppError> {
    use crate::store::tags::{TagStore, valid_tag};
    let caller = auth.require(Scope::Operate)?;
    if b.devices.is_empty() || b.devices.len() > MAX_BULK {
        return Err(AppError::BadQuery(format!("devices: 1 to {MAX_BULK}")));
    }
    let ids = b
        .devices
        .iter()
        .map(|d| parse_id(d))
        .collect::<Result<Vec<_>, _>>()?;
    let tag = match (b.action.as_str(), b.tag.as_deref().map(str::trim)) {
        ("tag" | "untag", Some(t)) if valid_tag(t) => Some(t.to_string()),
        ("tag" | "untag", t) => {
            return Err(AppError::BadQuery(format!(
                "tag {t:?}: 1 to 32 of a-z 0-9 - _ ."
            )));
        }
        ("approve" | "revoke", _) => None,
        (other, _) => {
            return Err(AppError::BadQuery(format!(
                "action {other:?}: approve, revoke, tag or untag"
            )));
        }
    };
    blocking(move || {
        let mut st = s.store.get()?;
        let (changed, unknown) = match (b.action.as_str(), tag) {
            ("tag", Some(t)) => (st.add_tag(&ids, &t)?, Vec::new()),
            ("untag", Some(t)) => (st.remove_tag(&ids, &t)?, Vec::new()),
            (action, _) => {
                let state = if action == "approve" { DeviceState::Approved } else { DeviceState::Revoked };
                let mut n = 0;
                let mut unknown = Vec::new();
                for id in &ids {
                    if st.set_state(*id, state)? {
                        n += 1;
                    } else {
                        unknown.push(id.to_string());
                    }
                }
                (n, unknown)
            }
        };
        tracing::info!(account = caller.account.0, action = %b.action, devices = ids.len(), changed, "bulk device action");
        Ok(Json(json!({"action": b.action, "changed": changed, "unknown": unknown})))
    })
    .await
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries numbered below this one (the `next` of the page before).
    before: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: operator actions, newest first; `next` pages back.
pub(crate) async fn audit(
    State(s): State<ApiState>,
    auth: Auth,
    super::ApiQuery(q): super::ApiQuery<AuditQuery>,
) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    blocking(move || {
        use crate::store::audit::AuditStore;
        let rows = s.store.get()?.audit_before(q.before, limit)?;
        let next = (rows.len() == limit).then(|| rows.last().map(|(id, _)| *id)).flatten();
        let entries: Vec<Value> = rows
            .into_iter()
            .map(|(id, e)| json!({"id": id, "at_ms": e.at_ms, "account": e.account, "token": e.token, "method": e.method, "path": e.path, "status": e.status}))
            .collect();
        Ok(Json(json!({"entries": entries, "next": next})))
    })
    .await
}
