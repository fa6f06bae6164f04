//! The EVM anchor beyond the happy path, on a real local chain (anvil, from `hil_tests`):
//! confirmations above one, a root on chain that the database disagrees with, an epoch that
//! an earlier (lost) transaction already anchored, a second anchor of an epoch already in
//! flight, and our nonce taken by another transaction. Each test deploys its own contract on its own anvil; where a test must hold
//! a transaction in the mempool it turns anvil's automine off and mines by hand.

use std::path::Path;

use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use attest::{EpochId, Hash32, KeyPair};
use fleet_controller::anchor::evm::{EvmAnchor, EvmAnchorError};
use fleet_controller::config::EvmConfig;
use fleet_controller::store::sqlite::SqliteStore;
use fleet_controller::store::{EpochRow, Store};
use hil_tests::{Anvil, TempDir};
use serde_json::{Value, json};

/// A fresh chain with the anchor contract deployed by anvil's first account.
struct Chain {
    anvil: Anvil,
    cfg: EvmConfig,
    rpc: DynProvider,
}

impl Chain {
    async fn start(dir: &Path, confirmations: u64, receipt_timeout_ms: u64) -> Chain {
        let anvil = Anvil::start();
        let key_file = Anvil::key_file(dir);
        let (contract, _) = EvmAnchor::deploy(&anvil.url(), &key_file).await.unwrap();
        let cfg = EvmConfig {
            rpc_url: anvil.url(),
            contract: format!("{contract:#x}"),
            key_file,
            chain_id: 31337,
            confirmations,
            poll_ms: 20,
            receipt_timeout_ms,
            max_fee_gwei: 500,
        };
        let rpc = ProviderBuilder::new()
            .connect_http(anvil.url().parse().unwrap())
            .erased();
        Chain { anvil, cfg, rpc }
    }

    async fn anchor(&self) -> EvmAnchor {
        EvmAnchor::connect(&self.cfg).await.unwrap()
    }

    async fn call(&self, method: &'static str, params: Value) -> Value {
        self.rpc
            .raw_request::<_, Value>(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method} on anvil {}: {e}", self.anvil.port))
    }

    async fn mine(&self, blocks: u64) {
        self.call("anvil_mine", json!([format!("{blocks:#x}")]))
            .await;
    }

    async fn automine(&self, on: bool) {
        self.call("evm_setAutomine", json!([on])).await;
    }

    async fn head(&self) -> u64 {
        self.rpc.get_block_number().await.unwrap()
    }

    /// Transactions the sender has had mined.
    async fn mined_nonce(&self, a: &EvmAnchor) -> u64 {
        self.rpc.get_transaction_count(a.sender()).await.unwrap()
    }
}

/// A database holding one closed epoch `epoch` with `root` over `size` leaves.
fn store_with_epoch(path: &Path, epoch: EpochId, root: Hash32, size: u64) -> SqliteStore {
    let mut store = SqliteStore::open(path).unwrap();
    let key = KeyPair::from_seed(&[0xc0; 32]);
    let entry = attest::msg::AnchorEntry {
        index: 0,
        prev: Hash32::ZERO,
        epoch,
        tree_size: size,
        root,
        timestamp: attest::TimestampMs(0),
    };
    store
        .commit_epoch(
            &EpochRow {
                epoch,
                tree_size: size,
                root,
                closed_ms: 0,
                anchor_entry: attest::Envelope::seal(&entry, &key).into_bytes(),
                anchor_index: 0,
            },
            &[],
            &[],
            &[],
        )
        .unwrap();
    store
}

fn root(name: &str) -> Hash32 {
    Hash32::digest(name.as_bytes())
}

#[tokio::test]
async fn an_anchor_is_recorded_only_after_the_configured_confirmations() {
    let tmp = TempDir::new("evm-confirmations");
    let chain = Chain::start(tmp.path(), 3, 400).await;
    let mut store = store_with_epoch(&tmp.path().join("c.db"), EpochId(0), root("a"), 10);
    let a = chain.anchor().await;

    // Mined at once (automine) in block `b`, but the head is `b`: one confirmation of three.
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    assert!(
        matches!(
            e,
            EvmAnchorError::Pending {
                epoch: EpochId(0),
                ..
            }
        ),
        "{e}"
    );
    let row = store
        .evm_anchor(EpochId(0))
        .unwrap()
        .expect("signed and stored");
    assert_eq!(row.block_number, None, "not confirmed yet");
    let b = chain.head().await;
    let on_chain = a
        .on_chain(EpochId(0))
        .await
        .unwrap()
        .expect("anchored on chain");
    assert_eq!((on_chain.0, on_chain.1, on_chain.2), (root("a"), 10, b));
    assert_eq!(store.epochs_not_on_chain().unwrap().len(), 1);

    // Two confirmations: still waiting.
    chain.mine(1).await;
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    assert!(
        matches!(
            e,
            EvmAnchorError::Pending {
                epoch: EpochId(0),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        store.evm_anchor(EpochId(0)).unwrap().unwrap().block_number,
        None
    );

    // Three: recorded, with the block it was mined in, and the same transaction.
    chain.mine(1).await;
    let done = a.anchor_pending(&mut store).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].block_number, Some(b));
    assert_eq!(done[0].tx_hash, row.tx_hash, "not sent twice");
    assert_eq!(chain.mined_nonce(&a).await, row.nonce + 1);
    assert!(store.epochs_not_on_chain().unwrap().is_empty());
}

#[tokio::test]
async fn a_root_on_chain_that_differs_from_the_database_is_a_conflict_and_nothing_is_sent() {
    let tmp = TempDir::new("evm-conflict");
    let chain = Chain::start(tmp.path(), 1, 5_000).await;
    let a = chain.anchor().await;
    // Another database (a restored backup that closed epoch 0 differently) anchored first.
    let mut other = store_with_epoch(&tmp.path().join("other.db"), EpochId(0), root("other"), 7);
    a.anchor_pending(&mut other).await.unwrap();
    let sent = chain.mined_nonce(&a).await;

    let mut store = store_with_epoch(&tmp.path().join("c.db"), EpochId(0), root("ours"), 10);
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    match e {
        EvmAnchorError::Conflict {
            epoch,
            on_chain,
            local,
        } => assert_eq!(
            (epoch, on_chain, local),
            (EpochId(0), root("other"), root("ours"))
        ),
        e => panic!("expected a conflict, got {e}"),
    }
    assert_eq!(e_reason(&a, &mut store).await, "conflict", "every round");
    assert_eq!(chain.mined_nonce(&a).await, sent, "no transaction was sent");
    assert!(
        store.evm_anchor(EpochId(0)).unwrap().is_none(),
        "nothing recorded"
    );
    assert_eq!(
        a.on_chain(EpochId(0))
            .await
            .unwrap()
            .map(|(r, n, _)| (r, n)),
        Some((root("other"), 7)),
        "the contract keeps the first root"
    );
}

#[tokio::test]
async fn fees_above_the_configured_cap_hold_the_anchor_back_unsigned() {
    let tmp = TempDir::new("evm-fee-cap");
    let mut chain = Chain::start(tmp.path(), 1, 5_000).await;
    // anvil's base fee is about a gwei: a cap of 0 gwei is below anything it asks.
    chain.cfg.max_fee_gwei = 0;
    let a = chain.anchor().await;
    let mut store = store_with_epoch(&tmp.path().join("c.db"), EpochId(0), root("capped"), 3);
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    assert!(
        matches!(e, EvmAnchorError::FeeAboveCap { cap_gwei: 0, .. }),
        "{e}"
    );
    assert_eq!(e.reason(), "fee_above_cap");
    assert!(
        store.evm_anchor(EpochId(0)).unwrap().is_none(),
        "nothing signed or stored"
    );
    assert_eq!(a.on_chain(EpochId(0)).await.unwrap(), None, "nothing sent");
    // With a cap above the network's fee it goes through.
    chain.cfg.max_fee_gwei = 500;
    chain
        .anchor()
        .await
        .anchor_pending(&mut store)
        .await
        .unwrap();
    assert!(store.evm_anchor(EpochId(0)).unwrap().is_some());
}

#[tokio::test]
async fn a_sender_key_readable_by_others_is_refused_and_an_rpc_url_never_reaches_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("evm-key-mode");
    let chain = Chain::start(tmp.path(), 1, 5_000).await;
    std::fs::set_permissions(&chain.cfg.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = EvmAnchor::connect(&chain.cfg).await.err().expect("refused");
    assert_eq!(e.reason(), "key", "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&chain.cfg.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A node that is not there, at a URL with a token in it: the error names the host only.
    let mut cfg = chain.cfg.clone();
    cfg.rpc_url = "http://user:secret@127.0.0.1:9/v3/TOKEN123?key=TOKEN456".into();
    let e = EvmAnchor::connect(&cfg).await.err().expect("no node there");
    let text = e.to_string();
    assert!(
        !text.contains("secret") && !text.contains("TOKEN"),
        "{text}"
    );
}

async fn e_reason(a: &EvmAnchor, store: &mut SqliteStore) -> &'static str {
    a.anchor_pending(store).await.unwrap_err().reason()
}

#[tokio::test]
async fn an_epoch_a_lost_transaction_anchored_is_recorded_from_the_chain_not_sent_again() {
    let tmp = TempDir::new("evm-found");
    let chain = Chain::start(tmp.path(), 1, 5_000).await;
    let a = chain.anchor().await;
    // An earlier run anchored epoch 0 and its row was lost (say, a restore from backup).
    let mut earlier = store_with_epoch(&tmp.path().join("earlier.db"), EpochId(0), root("a"), 10);
    let first = a.anchor_pending(&mut earlier).await.unwrap().remove(0);
    let sent = chain.mined_nonce(&a).await;

    let mut store = store_with_epoch(&tmp.path().join("c.db"), EpochId(0), root("a"), 10);
    let found = a.anchor_pending(&mut store).await.unwrap().remove(0);
    assert_eq!(found.tx_hash, first.tx_hash, "the earlier transaction");
    assert_eq!(found.block_number, first.block_number);
    assert_eq!(found.gas_used, first.gas_used);
    assert_eq!(
        found.nonce, first.nonce,
        "the slot it used, read from the chain"
    );
    assert_eq!(chain.mined_nonce(&a).await, sent, "nothing sent again");
    assert_eq!(
        store.evm_anchor(EpochId(0)).unwrap().unwrap().tx_hash,
        first.tx_hash
    );
}

#[tokio::test]
async fn a_transaction_whose_nonce_another_one_took_is_dropped_and_the_epoch_signed_anew() {
    let tmp = TempDir::new("evm-nonce");
    let chain = Chain::start(tmp.path(), 1, 300).await;
    let a = chain.anchor().await;
    let mut store = store_with_epoch(&tmp.path().join("c.db"), EpochId(0), root("a"), 10);

    // Signed, stored and sent, but not mined.
    chain.automine(false).await;
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    assert!(
        matches!(
            e,
            EvmAnchorError::Pending {
                epoch: EpochId(0),
                ..
            }
        ),
        "{e}"
    );
    let lost = store
        .evm_anchor(EpochId(0))
        .unwrap()
        .expect("stored before sending");
    // Someone else uses the key: their transaction takes our nonce and is mined; ours is
    // gone from the mempool.
    chain
        .call(
            "anvil_dropTransaction",
            json!([format!("{:#x}", B256::from(lost.tx_hash.0))]),
        )
        .await;
    let from = format!("{:#x}", a.sender());
    chain
        .call(
            "eth_sendTransaction",
            json!([{"from": from, "to": from, "value": "0x0", "nonce": format!("{:#x}", lost.nonce)}]),
        )
        .await;
    chain.mine(1).await;
    assert_eq!(chain.mined_nonce(&a).await, lost.nonce + 1);

    // The anchor notices, forgets its dead transaction and reports the epoch pending...
    let e = a.anchor_pending(&mut store).await.unwrap_err();
    assert!(
        matches!(
            e,
            EvmAnchorError::Pending {
                epoch: EpochId(0),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        store.evm_anchor(EpochId(0)).unwrap().is_none(),
        "the dead row is dropped"
    );
    assert_eq!(a.on_chain(EpochId(0)).await.unwrap(), None);

    // ...and the next round signs it anew with the next nonce, which is mined.
    chain.automine(true).await;
    let row = a.anchor_pending(&mut store).await.unwrap().remove(0);
    assert_eq!(row.nonce, lost.nonce + 1, "{row:?}\nlost: {lost:?}");
    assert_ne!(row.tx_hash, lost.tx_hash);
    assert!(row.block_number.is_some());
    assert_eq!(
        a.on_chain(EpochId(0))
            .await
            .unwrap()
            .map(|(r, n, _)| (r, n)),
        Some((root("a"), 10))
    );
}

#[tokio::test]
async fn a_second_anchor_of_an_epoch_in_flight_is_refused_unsent_and_the_first_is_recorded() {
    let tmp = TempDir::new("evm-in-flight");
    let chain = Chain::start(tmp.path(), 1, 300).await;
    let a = chain.anchor().await;
    // Two databases with the same epoch (a controller and its restored backup); the first
    // sends while nothing is mined.
    let mut first = store_with_epoch(&tmp.path().join("first.db"), EpochId(0), root("a"), 10);
    let mut second = store_with_epoch(&tmp.path().join("second.db"), EpochId(0), root("a"), 10);
    chain.automine(false).await;
    let e = a.anchor_pending(&mut first).await.unwrap_err();
    assert!(
        matches!(
            e,
            EvmAnchorError::Pending {
                epoch: EpochId(0),
                ..
            }
        ),
        "{e}"
    );
    let t1 = first.evm_anchor(EpochId(0)).unwrap().unwrap();
    // The second would revert (AlreadyAnchored, selector 0xc1d04bb3) against the pending
    // state: the node's gas estimate refuses it, so it is never signed into the database
    // or sent, and pays no gas.
    let e = a.anchor_pending(&mut second).await.unwrap_err();
    assert!(
        matches!(&e, EvmAnchorError::Rpc(m) if m.contains("0xc1d04bb3")),
        "{e}"
    );
    assert!(second.evm_anchor(EpochId(0)).unwrap().is_none());
    let pending = chain
        .rpc
        .get_transaction_count(a.sender())
        .pending()
        .await
        .unwrap();
    assert_eq!(pending, t1.nonce + 1, "only the first is in flight");

    // Mined: the second database records the first's transaction, the first confirms it.
    chain.mine(1).await;
    let found = a.anchor_pending(&mut second).await.unwrap().remove(0);
    assert_eq!((found.tx_hash, found.nonce), (t1.tx_hash, t1.nonce));
    let confirmed = a.anchor_pending(&mut first).await.unwrap().remove(0);
    assert_eq!(confirmed.tx_hash, t1.tx_hash);
    assert_eq!(confirmed.block_number, found.block_number);
    assert_eq!(
        chain.mined_nonce(&a).await,
        t1.nonce + 1,
        "one transaction in all"
    );
}
