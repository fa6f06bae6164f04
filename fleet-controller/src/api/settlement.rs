//! Settlement on chain: a provider's payout address (scope `submit`: a read token cannot
//! redirect payouts) and its payouts with their Merkle proofs (scope `read`); the
//! operator's rounds (scope `operate`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::{ApiJson, ApiState, AppError, blocking};
use crate::accounts::{AccountKind, Scope};
use crate::settlement::{Line, parse_address, proof};
use crate::store::settlement::SettlementStore;

/// Body of a payout address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    /// `0x` and 40 hex digits.
    address: String,
}

/// `PUT /api/v1/account/payout-address`: where a provider's earnings go in the next
/// settlement rounds (registering one opts in).
pub(super) async fn set_address(
    State(s): State<ApiState>,
    auth: Auth,
    ApiJson(b): ApiJson<AddressBody>,
) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Submit)?;
    if caller.kind != AccountKind::Provider {
        return Err(AppError::BadBody("only a provider is paid out".into()));
    }
    let address = parse_address(&b.address).map_err(AppError::BadBody)?;
    let text = format!("{address:#x}");
    blocking(move || {
        let taken =
            s.store
                .get()?
                .set_payout_address(caller.account, &text, crate::runtime::now_ms())?;
        if taken.is_some() {
            return Err(AppError::IllegalState(format!(
                "{text} is another provider's payout address (a round pays an address once)"
            )));
        }
        Ok(Json(json!({"account": caller.account, "address": text})))
    })
    .await
}

/// `GET /api/v1/account/settlements`: the caller's payouts, newest first, each with its
/// round's root, where the round was published, and the proof a claim sends.
pub(super) async fn mine(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    let caller = auth.require(Scope::Read)?;
    blocking(move || {
        let st = s.store.get()?;
        let rounds = st.rounds(false)?;
        let mut out = Vec::new();
        for line in st.account_lines(caller.account)? {
            let all = st.round_lines(line.round)?;
            let leaves: Vec<Line> = all
                .iter()
                .map(|l| {
                    Ok(Line {
                        address: parse_address(&l.address).map_err(AppError::Internal)?,
                        amount: l.amount,
                    })
                })
                .collect::<Result<_, AppError>>()?;
            let round = rounds.iter().find(|r| r.round == line.round);
            let p: Vec<String> = proof(line.round, &leaves, line.index as usize)
                .iter()
                .map(|h| format!("{h:#x}"))
                .collect();
            out.push(json!({
                "round": line.round,
                "index": line.index,
                "address": line.address,
                "amount": line.amount,
                "ledger_tx": line.ledger_tx,
                "root": round.map(|r| r.root.clone()),
                "published": round.and_then(|r| r.published.clone()),
                "proof": p,
            }));
        }
        Ok(Json(json!({
            "account": caller.account,
            "address": st.payout_address(caller.account)?,
            "contract": s.settlement_contract,
            "payouts": out,
        })))
    })
    .await
}

/// `GET /api/v1/settlements`: every round, newest first.
pub(super) async fn rounds(State(s): State<ApiState>, auth: Auth) -> Result<Json<Value>, AppError> {
    auth.require(Scope::Operate)?;
    blocking(move || {
        let rounds = s.store.get()?.rounds(false)?;
        Ok(Json(
            json!({"contract": s.settlement_contract, "rounds": rounds}),
        ))
    })
    .await
}

/// `POST /api/v1/settlements`: makes a round now (the settlement loop publishes it); 201
/// with the round, or 200 with `round: null` when no provider is due.
pub(super) async fn settle_now(
    State(s): State<ApiState>,
    auth: Auth,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require(Scope::Operate)?;
    let Some(min) = s.settlement_min_micro else {
        return Err(AppError::IllegalState(
            "settlement is not configured ([settlement] in the controller's config)".into(),
        ));
    };
    blocking(move || {
        let made = s
            .store
            .get()?
            .settle_round(min, crate::runtime::now_ms())?;
        Ok(match made {
            Some(r) => (StatusCode::CREATED, Json(json!({"round": r}))),
            None => (
                StatusCode::OK,
                Json(json!({"round": null, "reason": format!("no provider with a payout address holds {min} micro-credits")})),
            ),
        })
    })
    .await
}
