//! Settlement of provider earnings on a real local chain (anvil): the controller process
//! (real SQLite, real Mosquitto for its ingest) makes a round over its ledger, its
//! settlement loop publishes the root to the `HeliostatSettlement` contract with the demo
//! token, and providers claim with the proofs the API gives them: once, and never with a
//! wrong proof. The same again through `fleetctl`.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use fleet_controller::config::{BrokerConfig, ControllerConfig, EvmConfig};
use fleet_controller::settlement::SettlementConfig;
use fleet_controller::settlement::chain::{SettlementChain, SettlementError};
use hil_tests::{ANVIL_KEYS_MORE, Anvil, Mosquitto, Proc, TempDir, free_port, http_with};
use serde_json::Value;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

fn call(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = http_with(port, method, path, &[("Authorization", &auth)], Some(body));
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A provider account with a token that may set its payout address; its id and token.
fn provider(api: u16, operator: &str, name: &str) -> (u64, String) {
    let body = serde_json::json!({"kind": "provider", "name": name}).to_string();
    let (st, v) = call(api, "POST", "/api/v1/accounts", operator, body.as_bytes());
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let (st, v) = call(
        api,
        "POST",
        &format!("/api/v1/accounts/{id}/tokens"),
        operator,
        br#"{"scopes": ["read", "submit"], "label": "owner"}"#,
    );
    assert_eq!(st, 201, "{v}");
    (id, v["token"]["secret"].as_str().unwrap().to_string())
}

/// A controller process (real SQLite, its own Mosquitto) that settles on `anvil` through the
/// settlement contract `contract` from `treasury_key`, with the first operator's token from
/// its CLI; killed on drop.
struct Controller {
    /// Its API port.
    api: u16,
    /// The operator's token.
    operator: String,
    _proc: Proc,
    _broker: Mosquitto,
}

impl Controller {
    fn start(dir: &Path, anvil: &Anvil, contract: Address, treasury_key: &Path) -> Controller {
        let broker = Mosquitto::start();
        let api = free_port();
        let cdir = dir.join("controller");
        std::fs::create_dir_all(&cdir).unwrap();
        let mut cfg = ControllerConfig::new(
            cdir.join("data"),
            BrokerConfig {
                port: broker.port,
                ..BrokerConfig::new("127.0.0.1")
            },
        );
        cfg.api.listen = format!("127.0.0.1:{api}");
        cfg.epochs.interval_ms = 500;
        // The chain settled on is the one `epochs.evm` names (anchoring stays local here).
        cfg.epochs.evm = Some(EvmConfig::new(
            anvil.url(),
            format!("{:#x}", Address::ZERO),
            Anvil::key_file(dir),
            31337,
        ));
        cfg.settlement = Some(SettlementConfig {
            contract: format!("{contract:#x}"),
            key_file: treasury_key.to_path_buf(),
            every_ms: 86_400_000,
            min_micro: 1_000_000,
            poll_ms: 200,
        });
        let ccfg = cdir.join("controller.toml");
        cfg.write_toml(&ccfg).unwrap();
        let log = std::fs::File::create(cdir.join("controller.log")).unwrap();
        let proc = Proc(
            std::process::Command::new(CONTROLLER)
                .args(["--config", ccfg.to_str().unwrap(), "run"])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
        let out = std::process::Command::new(CONTROLLER)
            .args(["--config", ccfg.to_str().unwrap()])
            .args(["account", "create", "--kind", "operator", "--name", "ops"])
            .output()
            .unwrap();
        let operator = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Controller {
            api,
            operator,
            _proc: proc,
            _broker: broker,
        }
    }
}

#[test]
fn a_provider_claims_its_settlement_once_with_its_proof_and_a_wrong_proof_reverts() {
    let tmp = TempDir::new("settlement");
    let anvil = Anvil::start();
    let treasury_key = Anvil::write_key(tmp.path(), "treasury.key", ANVIL_KEYS_MORE[0]);
    let claimant_key = Anvil::write_key(tmp.path(), "claimant.key", ANVIL_KEYS_MORE[1]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let supply = 1_000_000_000_000u64;
    let (contract, token, _, _) = rt
        .block_on(SettlementChain::deploy(
            &anvil.url(),
            &treasury_key,
            None,
            supply,
        ))
        .unwrap();

    let controller = Controller::start(tmp.path(), &anvil, contract, &treasury_key);
    let (api, operator) = (controller.api, controller.operator.clone());

    // Two providers register payout addresses (a bad one is refused); a third has none.
    let (p1, t1) = provider(api, &operator, "rigs-one");
    let (p2, t2) = provider(api, &operator, "rigs-two");
    let (p3, _) = provider(api, &operator, "rigs-three");
    let (st, v) = call(
        api,
        "PUT",
        "/api/v1/account/payout-address",
        &t2,
        br#"{"address": "0x1234"}"#,
    );
    assert_eq!(st, 400, "{v}");
    let (a1, a2) = (Address::from([0x11; 20]), Address::from([0x22; 20]));
    for (t, a) in [(&t1, a1), (&t2, a2)] {
        let body = serde_json::json!({"address": format!("{a:#x}")}).to_string();
        let (st, v) = call(
            api,
            "PUT",
            "/api/v1/account/payout-address",
            t,
            body.as_bytes(),
        );
        assert_eq!(st, 200, "{v}");
    }
    // One address, one provider: a round pays an address once.
    let body = serde_json::json!({"address": format!("{a1:#x}")}).to_string();
    let (st, v) = call(
        api,
        "PUT",
        "/api/v1/account/payout-address",
        &t2,
        body.as_bytes(),
    );
    assert_eq!(
        (st, v["reason"].as_str()),
        (409, Some("illegal_state")),
        "{v}"
    );
    // Their earnings (credited by the operator here; payouts of jobs land the same way).
    for (id, amount) in [(p1, 5_000_000u64), (p2, 2_500_000), (p3, 9_000_000)] {
        let body = serde_json::json!({"amount": amount}).to_string();
        let (st, v) = call(
            api,
            "POST",
            &format!("/api/v1/accounts/{id}/credits"),
            &operator,
            body.as_bytes(),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = call(api, "POST", "/api/v1/settlements", &operator, b"");
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["round"]["round"], 1);
    assert_eq!(v["round"]["total"], 7_500_000);
    assert_eq!(v["round"]["lines"], 2);
    // Out of the ledger: the wallets of the paid providers are empty, the third's kept.
    let (_, b) = call(api, "GET", "/api/v1/account/balance", &t1, b"");
    assert_eq!(b["available"], 0, "{b}");
    let (_, h) = call(api, "GET", "/api/v1/account/ledger", &t1, b"");
    assert_eq!(h["transactions"][0]["kind"], "settlement", "{h}");

    // The loop publishes it: the contract holds the root and the tokens.
    let round = wait_for("round 1 published", Duration::from_secs(30), || {
        let (_, v) = call(api, "GET", "/api/v1/settlements", &operator, b"");
        let r = v["rounds"][0].clone();
        (!r["published"].is_null()).then_some(r)
    });
    let root: B256 = round["root"].as_str().unwrap().parse().unwrap();
    let claimant = rt
        .block_on(SettlementChain::connect(
            &anvil.url(),
            &claimant_key,
            contract,
            Some(31337),
        ))
        .unwrap();
    let (on_chain, total, _) = rt.block_on(claimant.round(1)).unwrap();
    assert_eq!((on_chain, total.to::<u64>()), (root, 7_500_000));
    assert_eq!(rt.block_on(claimant.token()).unwrap(), token);
    assert_eq!(
        rt.block_on(claimant.token_balance(contract))
            .unwrap()
            .to::<u64>(),
        7_500_000
    );
    assert!(
        round["published"]["gas"].as_u64().unwrap() > 21_000,
        "{round}"
    );

    // Each provider's proof, from the API.
    let payout = |t: &str| {
        let (st, v) = call(api, "GET", "/api/v1/account/settlements", t, b"");
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["contract"], format!("{contract:#x}"));
        let p = v["payouts"][0].clone();
        let proof: Vec<B256> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().parse().unwrap())
            .collect();
        (p["amount"].as_u64().unwrap(), proof)
    };
    let (amount1, proof1) = payout(&t1);
    let (amount2, proof2) = payout(&t2);
    assert_eq!((amount1, amount2), (5_000_000, 2_500_000));

    // Anyone may send a claim; the tokens go to the provider's address, once.
    rt.block_on(claimant.claim(1, a1, amount1, proof1.clone()))
        .unwrap();
    assert_eq!(
        rt.block_on(claimant.token_balance(a1)).unwrap().to::<u64>(),
        5_000_000
    );
    assert!(rt.block_on(claimant.is_claimed(1, a1)).unwrap());
    let again = rt
        .block_on(claimant.claim(1, a1, amount1, proof1.clone()))
        .unwrap_err();
    assert!(again.to_string().contains("AlreadyClaimed"), "{again}");
    // A wrong proof: a larger amount, another line's proof, another round.
    for (round, amount, proof) in [
        (1, amount2 + 1, proof2.clone()),
        (1, amount2, proof1.clone()),
        (2, amount2, proof2.clone()),
    ] {
        let e = rt
            .block_on(claimant.claim(round, a2, amount, proof))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("BadProof") || (round == 2 && text.contains("UnknownRound")),
            "{text}"
        );
    }
    assert_eq!(
        rt.block_on(claimant.token_balance(a2)).unwrap().to::<u64>(),
        0
    );
    rt.block_on(claimant.claim(1, a2, amount2, proof2)).unwrap();
    assert_eq!(
        rt.block_on(claimant.token_balance(a2)).unwrap().to::<u64>(),
        2_500_000
    );
    // The treasury paid exactly the round; the contract holds nothing more.
    let treasury = rt
        .block_on(SettlementChain::connect(
            &anvil.url(),
            &treasury_key,
            contract,
            None,
        ))
        .unwrap();
    assert_eq!(
        rt.block_on(treasury.token_balance(treasury.from()))
            .unwrap()
            .to::<u64>(),
        supply - 7_500_000
    );
    assert_eq!(
        rt.block_on(claimant.token_balance(contract))
            .unwrap()
            .to::<u64>(),
        0
    );
    // Nothing is due now: no empty round.
    let (st, v) = call(api, "POST", "/api/v1/settlements", &operator, b"");
    assert_eq!((st, v["round"].clone()), (200, Value::Null), "{v}");
}

/// `fleetctl` for settlement against the real controller: a provider registers its payout
/// address (a bad one is a 400), an operator makes a round and lists it until the loop has
/// published it, and the proof `fleetctl --output json settlements` prints claims the
/// provider's tokens on chain; a provider's token cannot make a round.
#[test]
fn fleetctl_sets_a_payout_address_settles_lists_rounds_and_prints_a_proof_that_claims() {
    let fleetctl = env!("CARGO_BIN_EXE_fleetctl");
    let tmp = TempDir::new("settlement-fleetctl");
    let anvil = Anvil::start();
    let treasury_key = Anvil::write_key(tmp.path(), "treasury.key", ANVIL_KEYS_MORE[0]);
    let claimant_key = Anvil::write_key(tmp.path(), "claimant.key", ANVIL_KEYS_MORE[1]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (contract, _, _, _) = rt
        .block_on(SettlementChain::deploy(
            &anvil.url(),
            &treasury_key,
            None,
            1_000_000_000_000,
        ))
        .unwrap();
    let controller = Controller::start(tmp.path(), &anvil, contract, &treasury_key);
    let api = controller.api;
    let url = format!("http://127.0.0.1:{api}");
    let run = |token: &str, args: &[&str]| {
        let out = std::process::Command::new(fleetctl)
            .args(["--url", &url])
            .env("FLEETCTL_TOKEN", token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let operator = controller.operator.as_str();
    let (p1, t1) = provider(api, operator, "rigs-one");
    let (p2, t2) = provider(api, operator, "rigs-two");

    // The payout address: a bad one is the API's 400, a good one is echoed back.
    let (code, stdout, stderr) = run(&t1, &["payout-address", "0x1234"]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("400 bad_body"), "{stderr}");
    let (a1, a2) = (Address::from([0x31; 20]), Address::from([0x32; 20]));
    let (code, stdout, stderr) = run(&t1, &["payout-address", &format!("{a1:#x}")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("{a1:#x}")), "{stdout}");
    let (code, _, stderr) = run(&t2, &["payout-address", &format!("{a2:#x}")]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = run(&t1, &["settlements"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("no payouts yet"), "{stdout}");

    // Earnings, then a round by the operator (not by a provider); nothing more is due then.
    for (id, amount) in [(p1, 4_000_000u64), (p2, 3_000_000)] {
        let (code, _, stderr) = run(operator, &["credit", &id.to_string(), &amount.to_string()]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    let (code, _, stderr) = run(&t1, &["settle"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("403 missing_scope"), "{stderr}");
    let (code, stdout, stderr) = run(operator, &["settle"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("round 1: 2 lines, 7000000 micro-credits"),
        "{stdout}"
    );
    let (code, stdout, _) = run(operator, &["settle"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("no round"), "{stdout}");

    // The rounds, until the loop has published round 1.
    let round = wait_for("round 1 published", Duration::from_secs(30), || {
        let (code, stdout, _) = run(operator, &["--output", "json", "rounds"]);
        assert_eq!(code, Some(0));
        let v: Value = serde_json::from_str(&stdout).unwrap();
        let r = v["rounds"][0].clone();
        (!r["published"].is_null()).then_some(r)
    });
    assert_eq!(
        (round["round"].as_u64(), round["total"].as_u64()),
        (Some(1), Some(7_000_000))
    );
    let (code, stdout, _) = run(operator, &["rounds"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(&format!("contract {contract:#x}"))
            && stdout.contains("published in block"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&t1, &["settlements"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains(&format!("4000000 micro-credits to {a1:#x}"))
            && stdout.contains("published in block"),
        "{stdout}"
    );

    // What a wallet needs to claim, from `--output json`: round, address, amount, proof.
    let (code, stdout, _) = run(&t1, &["--output", "json", "settlements"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["contract"], format!("{contract:#x}"));
    let p = &v["payouts"][0];
    let proof: Vec<B256> = p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(proof.len(), 1, "two lines: one sibling");
    let account: Address = p["address"].as_str().unwrap().parse().unwrap();
    let claimant = rt
        .block_on(SettlementChain::connect(
            &anvil.url(),
            &claimant_key,
            contract,
            Some(31337),
        ))
        .unwrap();
    rt.block_on(claimant.claim(
        p["round"].as_u64().unwrap(),
        account,
        p["amount"].as_u64().unwrap(),
        proof,
    ))
    .unwrap();
    assert_eq!(
        rt.block_on(claimant.token_balance(a1)).unwrap().to::<u64>(),
        4_000_000
    );
}

/// While the network asks more per gas than the cap, a round is not sent (nothing is spent
/// and the contract holds nothing for it); under the cap it is published.
#[test]
fn a_round_waits_while_gas_costs_more_than_the_cap() {
    let tmp = TempDir::new("settlement-fee-cap");
    let anvil = Anvil::start();
    let treasury_key = Anvil::write_key(tmp.path(), "treasury.key", ANVIL_KEYS_MORE[0]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (contract, _, _, _) =
            SettlementChain::deploy(&anvil.url(), &treasury_key, None, 1_000_000)
                .await
                .unwrap();
        let url = anvil.url();
        let connect = || SettlementChain::connect(&url, &treasury_key, contract, None);
        let root = B256::from([0x5a; 32]);
        // Anvil asks about a gwei; a cap of 0 refuses.
        let capped = connect().await.unwrap().with_fee_cap(0);
        let err = capped.publish(1, root, 500).await.unwrap_err();
        assert!(
            matches!(err, SettlementError::FeeAboveCap { cap_gwei: 0, asked_gwei } if asked_gwei >= 1),
            "{err}"
        );
        let (on_chain, _, _) = capped.round(1).await.unwrap();
        assert_eq!(on_chain, B256::ZERO);
        let open = connect().await.unwrap().with_fee_cap(100);
        assert!(open.publish(1, root, 500).await.unwrap().is_some());
        assert_eq!(open.round(1).await.unwrap().0, root);
    });
}
