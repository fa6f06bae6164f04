//! Credits from a shell: balance, history, statement of account (verified here), and an
//! operator's deposit.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::api::Api;
use crate::{Output, print};

/// `fleetctl balance`.
pub fn balance(api: &Api, out: Output) -> Result<()> {
    let v = api.json("/api/v1/account/balance", true)?;
    print(out, &v, |v| {
        format!(
            "available {} micro-credits, {} held in escrow, {} staked",
            v["available"], v["escrowed"], v["staked"]
        )
    });
    Ok(())
}

/// `fleetctl history`.
pub fn history(api: &Api, out: Output, limit: usize) -> Result<()> {
    let v = api.json(&format!("/api/v1/account/ledger?limit={limit}"), true)?;
    print(out, &v, |v| {
        v["transactions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let lines: Vec<String> = t["postings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{} {:+}", p[0].as_str().unwrap_or("?"), p[1]))
                    .collect();
                format!(
                    "{}  #{:<5} {:<8} {}  [{}]",
                    t["at_ms"].as_i64().map_or_else(
                        || "?".into(),
                        fleet_controller::intensity::civil::format_rfc3339_ms
                    ),
                    t["id"],
                    t["kind"].as_str().unwrap_or("?"),
                    t["memo"].as_str().unwrap_or(""),
                    lines.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `fleetctl statement`: downloads the caller's statement of account to `file` and
/// verifies it against the pinned controller key.
pub fn statement(api: &Api, out: Output, controller_key: &str, file: &Path) -> Result<()> {
    let bytes = api.get("/api/v1/account/statement", true)?;
    std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    let key = attest::hex::decode_array::<32>(controller_key)
        .map(attest::PublicKey)
        .context("--controller-key")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let opts = attest::bundle::VerifyOptions::pinned(key, attest::TimestampMs(now));
    let report = attest::bundle::AccountProof::decode(&bytes)
        .and_then(|p| attest::bundle::verify_account(&p, &opts))
        .map_err(|e| anyhow::anyhow!("the statement does not verify: {e}"))?;
    print(out, &json!(report), |v| {
        format!(
            "verified: {} holds {} micro-credits after {} postings, all accounted for",
            v["book"].as_str().unwrap_or("?"),
            v["balance"],
            v["postings"]
        )
    });
    Ok(())
}

/// `fleetctl credit` (an operator's token).
pub fn credit(api: &Api, out: Output, account: u64, amount: u64, memo: &str) -> Result<()> {
    let body = json!({"amount": amount, "memo": memo})
        .to_string()
        .into_bytes();
    let v = api.send("POST", &format!("/api/v1/accounts/{account}/credits"), body)?;
    print(out, &v, |v| {
        format!(
            "account {account}: {} micro-credits available",
            v["available"]
        )
    });
    Ok(())
}

/// `fleetctl stake` (a provider's token).
pub fn stake(api: &Api, out: Output, amount: i64) -> Result<()> {
    let body = json!({ "amount": amount }).to_string().into_bytes();
    let v = api.send("POST", "/api/v1/account/stake", body)?;
    print(out, &v, |v| {
        format!(
            "{} micro-credits staked, {} available",
            v["staked"], v["available"]
        )
    });
    Ok(())
}
