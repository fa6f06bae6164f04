//! The EVM anchor: one transaction per closed epoch to the `HeliostatAnchor` contract
//! (`contracts/HeliostatAnchor.sol`, compiled to the committed `HeliostatAnchor.bin` by
//! `scripts/build-contract`), sent over JSON-RPC with alloy.
//!
//! Crash safety, in order:
//! 1. the transaction is signed locally and stored with its nonce and hash *before* it is
//!    sent, so a controller killed anywhere after that re-broadcasts the very same
//!    transaction on restart (a node answers "already known" or has mined it);
//! 2. before signing a new one, the contract is asked whether the epoch is already
//!    anchored (say, the database was restored from a backup): if so, the anchoring
//!    transaction is found through the contract's `Anchored` event and recorded instead;
//! 3. the contract itself refuses a second anchor for an epoch (`AlreadyAnchored`), so
//!    even a bug here cannot anchor an epoch twice or overwrite its root.
//!
//! The local, signed anchor log is always written too: it is what the evm anchor anchors.

use std::path::Path;
use std::time::Duration;

use alloy::network::eip2718::Encodable2718;
use alloy::network::{
    EthereumWallet, NetworkTransactionBuilder, ReceiptResponse, TransactionBuilder,
};
use alloy::primitives::{Address, B256, Bytes, FixedBytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use attest::{EpochId, Hash32};

use crate::config::EvmConfig;
use crate::store::{EpochRow, EvmAnchorRow, Store, StoreError};

alloy::sol! {
    /// The anchor contract's interface (the source is `contracts/HeliostatAnchor.sol`).
    #[sol(rpc)]
    contract HeliostatAnchor {
        function anchor(uint64 epoch, bytes32 root, uint64 leafCount) external;
        function getAnchor(uint64 epoch) external view returns (bytes32 root, uint64 leafCount, uint64 blockNumber);
        function anchoredCount() external view returns (uint64);
        function controller() external view returns (address);
        event Anchored(uint64 indexed epoch, bytes32 root, uint64 leafCount);
        error NotController();
        error AlreadyAnchored(uint64 epoch);
        error EmptyEpoch();
    }
}

/// The contract's creation bytecode (hex), as `scripts/build-contract` compiled it.
pub const BYTECODE_HEX: &str = include_str!("../../contracts/HeliostatAnchor.bin");

/// Why anchoring an epoch on chain did not (yet) succeed.
#[derive(Debug, thiserror::Error)]
pub enum EvmAnchorError {
    /// The node could not be reached or refused a request (any URL in the message is cut to
    /// its scheme and host: RPC URLs often carry an access token).
    #[error("RPC: {0}")]
    Rpc(String),
    /// The network asks more per gas than `epochs.evm.max_fee_gwei` allows.
    #[error("fees of {asked_gwei} gwei per gas are above the cap of {cap_gwei} gwei")]
    FeeAboveCap { asked_gwei: u128, cap_gwei: u64 },
    /// The node is on another chain than configured.
    #[error("node is on chain {got}, config says {expected}")]
    WrongChain { expected: u64, got: u64 },
    /// The key file is missing or not a secp256k1 key.
    #[error("key file {path}: {detail}")]
    Key { path: String, detail: String },
    /// The transaction was mined and reverted.
    #[error("epoch {epoch}: transaction {tx} reverted")]
    Reverted { epoch: EpochId, tx: Hash32 },
    /// The contract holds another root for the epoch: the chain and the database disagree.
    /// This needs an operator; nothing is sent for this epoch again.
    #[error("epoch {epoch}: the contract holds root {on_chain}, the database {local}")]
    Conflict {
        epoch: EpochId,
        on_chain: Hash32,
        local: Hash32,
    },
    /// No receipt within the timeout; the transaction is re-broadcast next round.
    #[error("epoch {epoch}: no receipt for {tx} yet")]
    Pending { epoch: EpochId, tx: Hash32 },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EvmAnchorError {
    /// A short, stable name for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            EvmAnchorError::Rpc(_) => "rpc",
            EvmAnchorError::FeeAboveCap { .. } => "fee_above_cap",
            EvmAnchorError::WrongChain { .. } => "wrong_chain",
            EvmAnchorError::Key { .. } => "key",
            EvmAnchorError::Reverted { .. } => "reverted",
            EvmAnchorError::Conflict { .. } => "conflict",
            EvmAnchorError::Pending { .. } => "pending",
            EvmAnchorError::Store(_) => "store",
        }
    }
}

fn rpc_err(e: impl std::fmt::Display) -> EvmAnchorError {
    EvmAnchorError::Rpc(redact_urls(&e.to_string()))
}

/// `text` with every `http://` or `https://` URL cut to its scheme, host and port: user
/// names, passwords, paths and queries (where providers put access tokens) never reach a
/// log line.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        let (before, url) = rest.split_at(at);
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(url.len());
        let (whole, after) = url.split_at(end);
        let scheme_end = whole.find("://").map_or(0, |i| i + 3);
        let (scheme, tail) = whole.split_at(scheme_end);
        let authority = tail.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        out.push_str(scheme);
        out.push_str(host);
        if authority.len() < tail.len() || authority.contains('@') {
            out.push_str("/…");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Parses a `0x` + 40 hex digit address.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let hex = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s} does not start with 0x"))?;
    if hex.len() != 40 {
        return Err(format!("{s} is not 20 bytes of hex"));
    }
    s.parse::<Address>().map_err(|e| format!("{s}: {e}"))
}

/// Reads a hex secp256k1 private key (with or without `0x`, surrounding whitespace ignored).
pub fn load_signer(path: &Path) -> Result<PrivateKeySigner, EvmAnchorError> {
    let err = |detail: String| EvmAnchorError::Key {
        path: path.display().to_string(),
        detail,
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:o}: the sender's key must not be readable by group or others (chmod 600)"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.trim()
        .trim_start_matches("0x")
        .parse::<PrivateKeySigner>()
        .map_err(|e| err(format!("not a hex secp256k1 key: {e}")))
}

/// A connection to the chain with the sender's key.
pub struct EvmAnchor {
    provider: DynProvider,
    wallet: EthereumWallet,
    from: Address,
    chain_id: u64,
    contract: Address,
    confirmations: u64,
    poll: Duration,
    receipt_timeout: Duration,
    max_fee_gwei: u64,
}

impl EvmAnchor {
    /// Connects as configured and checks the node's chain id.
    pub async fn connect(cfg: &EvmConfig) -> Result<EvmAnchor, EvmAnchorError> {
        let contract = parse_address(&cfg.contract).map_err(EvmAnchorError::Rpc)?;
        let mut a = Self::connect_raw(&cfg.rpc_url, &cfg.key_file, contract).await?;
        if a.chain_id != cfg.chain_id {
            return Err(EvmAnchorError::WrongChain {
                expected: cfg.chain_id,
                got: a.chain_id,
            });
        }
        a.confirmations = cfg.confirmations.max(1);
        a.poll = Duration::from_millis(cfg.poll_ms.max(10));
        a.receipt_timeout = Duration::from_millis(cfg.receipt_timeout_ms);
        a.max_fee_gwei = cfg.max_fee_gwei;
        Ok(a)
    }

    async fn connect_raw(
        url: &str,
        key_file: &Path,
        contract: Address,
    ) -> Result<EvmAnchor, EvmAnchorError> {
        let signer = load_signer(key_file)?;
        let from = signer.address();
        let url = url
            .parse()
            .map_err(|e| EvmAnchorError::Rpc(format!("bad RPC URL {}: {e}", redact_urls(url))))?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url)
            .erased();
        let chain_id = provider.get_chain_id().await.map_err(rpc_err)?;
        Ok(EvmAnchor {
            provider,
            wallet: EthereumWallet::from(signer),
            from,
            chain_id,
            contract,
            confirmations: 1,
            poll: Duration::from_millis(500),
            receipt_timeout: Duration::from_secs(120),
            max_fee_gwei: crate::config::DEFAULT_MAX_FEE_GWEI,
        })
    }

    /// The chain id the node reports.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The sender's address.
    pub fn sender(&self) -> Address {
        self.from
    }

    /// Signs a transaction to `to` (or a contract creation) with the given nonce; returns
    /// its EIP-2718 bytes and hash. Nothing is sent.
    async fn sign(
        &self,
        to: Option<Address>,
        input: Vec<u8>,
        nonce: u64,
    ) -> Result<(Vec<u8>, Hash32), EvmAnchorError> {
        let mut tx = TransactionRequest::default()
            .with_from(self.from)
            .with_chain_id(self.chain_id)
            .with_nonce(nonce);
        tx = match to {
            Some(to) => tx.with_to(to).with_input(Bytes::from(input)),
            None => tx.with_deploy_code(Bytes::from(input)),
        };
        let gas = self
            .provider
            .estimate_gas(tx.clone())
            .await
            .map_err(rpc_err)?;
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(rpc_err)?;
        let cap_wei = u128::from(self.max_fee_gwei) * 1_000_000_000;
        if fees.max_fee_per_gas > cap_wei {
            return Err(EvmAnchorError::FeeAboveCap {
                asked_gwei: fees.max_fee_per_gas.div_ceil(1_000_000_000),
                cap_gwei: self.max_fee_gwei,
            });
        }
        // A margin over the estimate: storage writes are priced exactly, but the estimate
        // is taken against the pending state.
        let tx = tx
            .with_gas_limit(gas + gas / 4)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = tx.build(&self.wallet).await.map_err(rpc_err)?;
        Ok((envelope.encoded_2718(), Hash32(envelope.tx_hash().0)))
    }

    /// Deploys the anchor contract from this key; returns its address. Used once per
    /// deployment by `fleet-controller deploy-anchor` (and by tests).
    pub async fn deploy(url: &str, key_file: &Path) -> Result<(Address, u64), EvmAnchorError> {
        let a = Self::connect_raw(url, key_file, Address::ZERO).await?;
        let code = attest::hex::decode(BYTECODE_HEX.trim())
            .map_err(|e| EvmAnchorError::Rpc(format!("bad committed bytecode: {e}")))?;
        let nonce = a.nonce().await?;
        let (raw, hash) = a.sign(None, code, nonce).await?;
        let _pending = a
            .provider
            .send_raw_transaction(&raw)
            .await
            .map_err(rpc_err)?;
        let deadline = tokio::time::Instant::now() + a.receipt_timeout;
        loop {
            if let Some(r) = a
                .provider
                .get_transaction_receipt(B256::from(hash.0))
                .await
                .map_err(rpc_err)?
            {
                if !r.status() {
                    return Err(EvmAnchorError::Reverted {
                        epoch: EpochId(0),
                        tx: hash,
                    });
                }
                let addr = r
                    .contract_address()
                    .ok_or_else(|| EvmAnchorError::Rpc("receipt has no contract address".into()))?;
                return Ok((addr, r.gas_used()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EvmAnchorError::Pending {
                    epoch: EpochId(0),
                    tx: hash,
                });
            }
            tokio::time::sleep(a.poll).await;
        }
    }

    async fn nonce(&self) -> Result<u64, EvmAnchorError> {
        self.provider
            .get_transaction_count(self.from)
            .pending()
            .await
            .map_err(rpc_err)
    }

    /// What the contract holds for an epoch (`None`: never anchored).
    pub async fn on_chain(
        &self,
        epoch: EpochId,
    ) -> Result<Option<(Hash32, u64, u64)>, EvmAnchorError> {
        let c = HeliostatAnchor::new(self.contract, &self.provider);
        let r = c.getAnchor(epoch.0).call().await.map_err(rpc_err)?;
        if r.leafCount == 0 {
            return Ok(None);
        }
        Ok(Some((Hash32(r.root.0), r.leafCount, r.blockNumber)))
    }

    /// How many epochs the contract holds.
    pub async fn anchored_count(&self) -> Result<u64, EvmAnchorError> {
        let c = HeliostatAnchor::new(self.contract, &self.provider);
        c.anchoredCount().call().await.map_err(rpc_err)
    }

    /// When the contract already holds `ep`, the transaction that put it there (found
    /// through the `Anchored` event in the block the contract recorded).
    async fn find_on_chain(&self, ep: &EpochRow) -> Result<Option<EvmAnchorRow>, EvmAnchorError> {
        let Some((root, size, block)) = self.on_chain(ep.epoch).await? else {
            return Ok(None);
        };
        if root != ep.root || size != ep.tree_size {
            return Err(EvmAnchorError::Conflict {
                epoch: ep.epoch,
                on_chain: root,
                local: ep.root,
            });
        }
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(HeliostatAnchor::Anchored::SIGNATURE_HASH)
            .topic1(B256::from(FixedBytes::<32>::left_padding_from(
                &ep.epoch.0.to_be_bytes(),
            )))
            .from_block(block)
            .to_block(block);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc_err)?;
        let Some(tx) = logs.iter().find_map(|l| l.transaction_hash) else {
            return Err(EvmAnchorError::Rpc(format!(
                "epoch {} is anchored in block {block} but its Anchored event is not there",
                ep.epoch
            )));
        };
        let gas = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(rpc_err)?
            .map(|r| r.gas_used());
        // The transaction's own nonce, so that the row says which of the sender's slots it
        // used (0 when the node no longer serves the transaction).
        let nonce = self
            .provider
            .get_transaction_by_hash(tx)
            .await
            .map_err(rpc_err)?
            .map_or(0, |t| alloy::consensus::Transaction::nonce(&t));
        Ok(Some(EvmAnchorRow {
            epoch: ep.epoch,
            chain_id: self.chain_id,
            contract: self.contract.0.0,
            nonce,
            tx_hash: Hash32(tx.0),
            raw_tx: Vec::new(),
            block_number: Some(block),
            gas_used: gas,
            signed_ms: crate::runtime::now_ms(),
        }))
    }

    /// Anchors every closed epoch that is not confirmed on chain yet, oldest first; stops
    /// at the first that does not confirm (the next round goes on from there). Returns the
    /// epochs confirmed in this round.
    pub async fn anchor_pending<S: Store>(
        &self,
        store: &mut S,
    ) -> Result<Vec<EvmAnchorRow>, EvmAnchorError> {
        let mut done = Vec::new();
        for ep in store.epochs_not_on_chain()? {
            done.push(self.anchor_epoch(store, &ep).await?);
        }
        Ok(done)
    }

    /// An anchor found on chain (sent by an earlier run, or ours whose receipt the node had
    /// not served yet) counts once it has the configured confirmations, like one this run
    /// saw mined; before that the epoch is still pending (and is found again next round).
    async fn take_found<S: Store>(
        &self,
        store: &mut S,
        found: EvmAnchorRow,
    ) -> Result<EvmAnchorRow, EvmAnchorError> {
        let head = self.provider.get_block_number().await.map_err(rpc_err)?;
        let block = found.block_number.unwrap_or(u64::MAX / 2);
        if head + 1 < block + self.confirmations {
            return Err(EvmAnchorError::Pending {
                epoch: found.epoch,
                tx: found.tx_hash,
            });
        }
        store.put_evm_anchor(&found)?;
        Ok(found)
    }

    /// Anchors one epoch, resuming whatever an earlier run left.
    pub async fn anchor_epoch<S: Store>(
        &self,
        store: &mut S,
        ep: &EpochRow,
    ) -> Result<EvmAnchorRow, EvmAnchorError> {
        let mut row = match store.evm_anchor(ep.epoch)? {
            Some(r) if r.block_number.is_some() => return Ok(r),
            Some(r) => r,
            None => {
                if let Some(found) = self.find_on_chain(ep).await? {
                    tracing::warn!(
                        epoch = ep.epoch.0,
                        tx = %found.tx_hash,
                        "epoch was already anchored on chain; recording that transaction"
                    );
                    return self.take_found(store, found).await;
                }
                let call = HeliostatAnchor::anchorCall {
                    epoch: ep.epoch.0,
                    root: FixedBytes(ep.root.0),
                    leafCount: ep.tree_size,
                };
                let nonce = self.nonce().await?;
                let (raw, hash) = self
                    .sign(Some(self.contract), call.abi_encode(), nonce)
                    .await?;
                let row = EvmAnchorRow {
                    epoch: ep.epoch,
                    chain_id: self.chain_id,
                    contract: self.contract.0.0,
                    nonce,
                    tx_hash: hash,
                    raw_tx: raw,
                    block_number: None,
                    gas_used: None,
                    signed_ms: crate::runtime::now_ms(),
                };
                // Durable before it leaves: a crash from here on re-sends this very
                // transaction.
                store.put_evm_anchor(&row)?;
                crate::crash::point("evm-signed");
                row
            }
        };
        // (Re)broadcast. A node that has it answers "already known"; one that mined it,
        // "nonce too low": neither is an error here, the receipt decides.
        if let Err(e) = self.provider.send_raw_transaction(&row.raw_tx).await {
            tracing::debug!(epoch = ep.epoch.0, error = %e, "broadcast answered with an error");
        }
        crate::crash::point("evm-sent");
        let hash = B256::from(row.tx_hash.0);
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
        loop {
            let receipt = self
                .provider
                .get_transaction_receipt(hash)
                .await
                .map_err(rpc_err)?;
            if let Some(r) = receipt {
                let block = r.block_number().unwrap_or_default();
                if !r.status() {
                    // Perhaps an earlier transaction of ours anchored it and its row was
                    // lost; otherwise this needs a look.
                    if let Some(found) = self.find_on_chain(ep).await? {
                        store.drop_unconfirmed_evm_anchor(ep.epoch)?;
                        return self.take_found(store, found).await;
                    }
                    return Err(EvmAnchorError::Reverted {
                        epoch: ep.epoch,
                        tx: row.tx_hash,
                    });
                }
                let head = self.provider.get_block_number().await.map_err(rpc_err)?;
                if head + 1 >= block + self.confirmations {
                    row.block_number = Some(block);
                    row.gas_used = Some(r.gas_used());
                    store.put_evm_anchor(&row)?;
                    tracing::info!(
                        epoch = ep.epoch.0,
                        tx = %row.tx_hash,
                        block,
                        gas = r.gas_used(),
                        "epoch anchored on chain"
                    );
                    return Ok(row);
                }
            } else {
                // Not mined. If our nonce went to another transaction, this one is dead:
                // forget it (unless the epoch made it on chain anyway) and sign anew next
                // round.
                let mined = self
                    .provider
                    .get_transaction_count(self.from)
                    .latest()
                    .await
                    .map_err(rpc_err)?;
                if mined > row.nonce {
                    // Mined between the two questions? Then the nonce is ours: look again.
                    let again = self
                        .provider
                        .get_transaction_receipt(hash)
                        .await
                        .map_err(rpc_err)?;
                    if again.is_some() {
                        continue;
                    }
                    store.drop_unconfirmed_evm_anchor(ep.epoch)?;
                    if let Some(found) = self.find_on_chain(ep).await? {
                        return self.take_found(store, found).await;
                    }
                    return Err(EvmAnchorError::Pending {
                        epoch: ep.epoch,
                        tx: row.tx_hash,
                    });
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EvmAnchorError::Pending {
                    epoch: ep.epoch,
                    tx: row.tx_hash,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

pub use super::evm_loop::spawn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_keep_only_their_scheme_and_host() {
        assert_eq!(
            redact_urls(
                "error sending request for url (https://user:pw@rpc.example.net:8545/v3/abc?key=x): refused"
            ),
            "error sending request for url (https://rpc.example.net:8545/…): refused"
        );
        assert_eq!(
            redact_urls("to http://127.0.0.1:8545 and http://a/b"),
            "to http://127.0.0.1:8545 and http://a/…"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
