//! Settlement on chain from a shell: a provider's payout address and payouts (with the
//! proofs a wallet sends to `claim(round, account, amount, proof)`, in `--output json`), and
//! an operator's rounds.

use anyhow::Result;
use serde_json::{Value, json};

use crate::api::Api;
use crate::{Output, print};

/// Where a round was published, in a few words.
fn published(p: &Value) -> String {
    if p.is_null() {
        return "not yet published".into();
    }
    match (p["block"].as_u64(), p["tx"].as_str()) {
        (Some(block), Some(tx)) => format!("published in block {block} (tx {tx})"),
        // Found on chain after a crash: the controller did not see its transaction.
        _ => "published".into(),
    }
}

/// `fleetctl payout-address` (a provider's token with the `submit` scope).
pub fn set_address(api: &Api, out: Output, address: &str) -> Result<()> {
    let body = json!({ "address": address }).to_string().into_bytes();
    let v = api.send("PUT", "/api/v1/account/payout-address", body)?;
    print(out, &v, |v| {
        format!(
            "account {}: payouts go to {}",
            v["account"],
            v["address"].as_str().unwrap_or("?")
        )
    });
    Ok(())
}

/// `fleetctl settlements`: the caller's payouts, newest first.
pub fn payouts(api: &Api, out: Output) -> Result<()> {
    let v = api.json("/api/v1/account/settlements", true)?;
    print(out, &v, |v| {
        let mut t = format!(
            "payout address {}, contract {}",
            v["address"]
                .as_str()
                .unwrap_or("(none: fleetctl payout-address 0x...)"),
            v["contract"].as_str().unwrap_or("(settlement off)")
        );
        let payouts = v["payouts"].as_array().map_or(&[][..], |a| a.as_slice());
        if payouts.is_empty() {
            t.push_str("\nno payouts yet");
        }
        for p in payouts {
            t.push_str(&format!(
                "\nround {:<5} {:>14} micro-credits to {}  {}",
                p["round"],
                p["amount"],
                p["address"].as_str().unwrap_or("?"),
                published(&p["published"])
            ));
        }
        t
    });
    Ok(())
}

/// `fleetctl settle` (an operator's token): makes a round now.
pub fn settle(api: &Api, out: Output) -> Result<()> {
    let v = api.send("POST", "/api/v1/settlements", b"{}".to_vec())?;
    print(out, &v, |v| {
        let r = &v["round"];
        if r.is_null() {
            return format!(
                "no round: {}",
                v["reason"].as_str().unwrap_or("nobody is due")
            );
        }
        format!(
            "round {}: {} lines, {} micro-credits (the settlement loop publishes it)",
            r["round"], r["lines"], r["total"]
        )
    });
    Ok(())
}

/// `fleetctl rounds` (an operator's token): every round, newest first.
pub fn rounds(api: &Api, out: Output) -> Result<()> {
    let v = api.json("/api/v1/settlements", true)?;
    print(out, &v, |v| {
        let mut t = format!(
            "contract {}",
            v["contract"].as_str().unwrap_or("(settlement off)")
        );
        for r in v["rounds"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "\nround {:<5} {:>6} lines {:>16} micro-credits  root {}  {}",
                r["round"],
                r["lines"],
                r["total"],
                r["root"].as_str().unwrap_or("?"),
                published(&r["published"])
            ));
        }
        t
    });
    Ok(())
}
