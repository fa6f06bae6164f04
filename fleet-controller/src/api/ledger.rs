//! Credits: an account's balance and history (scope `read`), an operator's deposit
//! (scope `operate`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiQuery, ApiState, AppError, blocking};
use crate::accounts::{AccountId, Scope};
use crate::ledger::Book;
use crate::store::accounts::AccountStore;
use crate::store::ledger::LedgerStore;

/// `GET /api/v1/account/balance`: what the caller may spend (or has earned) and what its
/// open jobs hold in escrow, micro-credits.
pub(crate) async fn balance(
    State(s): State<ApiState>,
    auth: Auth,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    blocking(move || {
        let st = s.store.get()?;
        Ok(Json(json!({
            "account": caller.account,
            "available": st.balance(Book::Wallet(caller.account))?,
            "escrowed": st.escrowed(caller.account)?,
            "staked": st.balance(Book::Stake(caller.account))?,
            "spend_cap_micro_per_day": crate::store::accounts::AccountStore::spend_cap(&*st, caller.account)?,
        })))
    })
    .await
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Most transactions, newest first (default 100, at most 1000).
    limit: Option<usize>,
    /// A cursor: only transactions numbered below this (the previous page's
    /// `X-Next-Cursor`).
    before: Option<u64>,
}

/// `GET /api/v1/account/ledger`: the transactions that touch the caller's wallet or its
/// jobs' escrows, newest first, each with all its postings.
pub(crate) async fn history(
    State(s): State<ApiState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<(axum::http::HeaderMap, Json<Value>), AppError> {
    let caller = auth.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let before = q.before.unwrap_or(i64::MAX as u64);
    blocking(move || {
        let rows = s
            .store
            .get()?
            .account_history_before(caller.account, limit, before)?;
        let mut headers = axum::http::HeaderMap::new();
        if rows.len() == limit
            && let Some(last) = rows.last()
        {
            headers.insert(super::jobs::NEXT_CURSOR, last.id.into());
        }
        Ok((
            headers,
            Json(json!({"account": caller.account, "transactions": rows})),
        ))
    })
    .await
}

/// `GET /api/v1/account/statement`: the caller's statement of account, every anchored
/// posting of its wallet with its proof (`attest verify-account` checks it offline);
/// `X-Heliostat-Pending` says how many more wait for the next epoch.
pub(super) async fn statement(
    State(s): State<ApiState>,
    auth: Auth,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let caller = auth.require(Scope::Read)?;
    blocking(move || {
        let st = s.store.get()?;
        let (proof, pending) =
            crate::ledger::statement(&*st, &s.controller, Book::Wallet(caller.account))?;
        Ok((
            [("x-heliostat-pending", pending.to_string())],
            Json(serde_json::to_value(&proof).map_err(|e| AppError::Internal(e.to_string()))?),
        )
            .into_response())
    })
    .await
}

/// Body of a stake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StakeBody {
    /// Micro-credits from the wallet into the stake; negative: back out of it.
    amount: i64,
}

/// `POST /api/v1/account/stake`: a provider moves credits between its wallet and its stake
/// (held against wrong results: a proven one takes `market.slash_ppm` of it). Withdrawing
/// waits until none of its devices holds a job.
pub(super) async fn stake(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<StakeBody>,
) -> Result<Json<Value>, AppError> {
    use crate::store::jobs::JobStore;
    let caller = auth.require(Scope::Submit)?;
    if caller.kind != crate::accounts::AccountKind::Provider {
        return Err(AppError::BadBody("only a provider stakes".into()));
    }
    blocking(move || {
        let mut st = s.store.get()?;
        if b.amount < 0 {
            for job in st.open_jobs()? {
                if let Some(l) = st.job_lease(job.id)?
                    && st.device_provider(l.device)? == Some(caller.account)
                {
                    return Err(AppError::IllegalState(format!(
                        "job {} runs on your device {}: the stake is withdrawn once it ends",
                        job.id, l.device
                    )));
                }
            }
        }
        let tx = crate::ledger::stake(caller.account, b.amount)
            .map_err(|e| AppError::BadBody(e.to_string()))?;
        st.post(&tx, crate::runtime::now_ms())?;
        Ok(Json(json!({
            "account": caller.account,
            "available": st.balance(Book::Wallet(caller.account))?,
            "staked": st.balance(Book::Stake(caller.account))?,
        })))
    })
    .await
}

/// Body of a deposit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositBody {
    /// Micro-credits, above zero.
    amount: u64,
    /// Why (a payment's reference), at most 200 characters kept.
    #[serde(default)]
    memo: String,
}

/// `POST /api/v1/accounts/{id}/credits`: an operator issues credits to an account (paid
/// for outside the platform); 201 with the transaction and the new balance.
pub(super) async fn deposit(
    State(s): State<ApiState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<DepositBody>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    let account = AccountId(
        id.parse()
            .map_err(|_| AppError::BadPath(format!("{id:?} is not an account number")))?,
    );
    blocking(move || {
        let mut st = s.store.get()?;
        if st.account(account)?.is_none() {
            return Err(AppError::Account(
                crate::accounts::AccountError::UnknownAccount(account),
            ));
        }
        let tx = crate::ledger::deposit(account, b.amount, &b.memo)
            .map_err(|e| AppError::BadBody(e.to_string()))?;
        let n = st.post(&tx, crate::runtime::now_ms())?;
        tracing::info!(
            account = account.0,
            amount = b.amount,
            tx = n,
            "credits deposited"
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "transaction": n,
                "account": account,
                "available": st.balance(Book::Wallet(account))?,
            })),
        ))
    })
    .await
}

/// A spend cap to set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendCapBody {
    /// Most micro-credits the caller's jobs may hold in escrow over any 24 hours; `null`
    /// removes the cap.
    pub daily_micro: Option<u64>,
}

/// `PUT /api/v1/account/spend-cap` (scope `submit`): the caller's own spend cap. A job whose
/// ceiling would pass it is refused at submission (402 `spend_cap`), nothing held.
pub(crate) async fn set_spend_cap(
    State(s): State<ApiState>,
    auth: Auth,
    super::ApiJson(b): super::ApiJson<SpendCapBody>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Submit)?;
    if b.daily_micro.is_some_and(|c| c > i64::MAX as u64) {
        return Err(AppError::BadQuery("daily_micro is too large".into()));
    }
    blocking(move || {
        crate::store::accounts::AccountStore::set_spend_cap(
            &mut *s.store.get()?,
            caller.account,
            b.daily_micro,
        )?;
        tracing::info!(account = caller.account.0, cap = ?b.daily_micro, "spend cap set");
        Ok(Json(
            json!({"account": caller.account, "spend_cap_micro_per_day": b.daily_micro}),
        ))
    })
    .await
}
