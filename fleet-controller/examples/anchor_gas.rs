//! Gas per anchored epoch on a real local EVM node (anvil): one `anchor` transaction per
//! epoch, whatever the epoch's leaf count (the contract stores a root and two numbers).
//!
//! `cargo run --release -p fleet-controller --example anchor_gas`

use attest::{Hash32, KeyPair};
use fleet_controller::anchor::evm::EvmAnchor;
use fleet_controller::config::EvmConfig;
use fleet_controller::store::sqlite::SqliteStore;
use fleet_controller::store::{EpochRow, Store};
use hil_tests::{Anvil, TempDir};

fn main() {
    let tmp = TempDir::new("anchor-gas");
    let anvil = Anvil::start();
    let key_file = Anvil::key_file(tmp.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (contract, deploy_gas) = rt
        .block_on(EvmAnchor::deploy(&anvil.url(), &key_file))
        .unwrap();
    let cfg = EvmConfig {
        rpc_url: anvil.url(),
        contract: format!("{contract:#x}"),
        key_file,
        chain_id: 31337,
        confirmations: 1,
        poll_ms: 20,
        receipt_timeout_ms: 10_000,
        max_fee_gwei: 500,
    };
    let mut store = SqliteStore::open(&tmp.path().join("gas.db")).unwrap();
    let key = KeyPair::from_seed(&[0xc0; 32]);
    let sizes = [1u64, 1_000, 100_000, 10_000_000, 1 << 40];
    for (n, size) in sizes.iter().enumerate() {
        let row = EpochRow {
            epoch: attest::EpochId(n as u64),
            tree_size: *size,
            root: Hash32::digest(&size.to_be_bytes()),
            closed_ms: 0,
            anchor_entry: attest::Envelope::seal(
                &attest::msg::AnchorEntry {
                    index: n as u64,
                    prev: Hash32::ZERO,
                    epoch: attest::EpochId(n as u64),
                    tree_size: *size,
                    root: Hash32::digest(&size.to_be_bytes()),
                    timestamp: attest::TimestampMs(0),
                },
                &key,
            )
            .into_bytes(),
            anchor_index: n as u64,
        };
        store.commit_epoch(&row, &[], &[], &[]).unwrap();
    }
    let done = rt.block_on(async {
        let a = EvmAnchor::connect(&cfg).await.unwrap();
        a.anchor_pending(&mut store).await.unwrap()
    });
    println!("anchor contract deployment: {deploy_gas} gas");
    for (row, size) in done.iter().zip(sizes) {
        println!(
            "epoch {} ({size} leaves): {} gas",
            row.epoch,
            row.gas_used.unwrap()
        );
    }
}
