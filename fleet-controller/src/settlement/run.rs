//! The settlement thread: every `poll_ms`, makes a round when one is due (every
//! `every_ms`) and publishes the rounds not yet on chain, oldest first; errors logged once
//! per reason; stops with the controller's one shutdown.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chain::{SettlementChain, SettlementError};
use crate::config::EvmConfig;
use crate::store::StoreError;
use crate::store::settlement::{Published, SettlementStore};
use crate::store::sqlite::SqliteStore;

/// `[settlement]`: providers' earnings paid out on chain, on the chain of `epochs.evm`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// The settlement contract (`0x` + 40 hex digits), as `fleet-controller
    /// deploy-settlement` printed it.
    pub contract: String,
    /// The treasury's key (hex secp256k1, mode 0600): the account that deployed the
    /// contract and holds the tokens paid out. Not the anchor's key (the two loops would
    /// race for nonces).
    pub key_file: PathBuf,
    /// How often a round is made, milliseconds (a day).
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// The least a provider's wallet must hold to be paid out in a round, micro-credits (one
    /// credit): smaller sums wait for a later round (each claim costs the provider gas).
    #[serde(default = "default_min_micro")]
    pub min_micro: u64,
    /// How often rounds not yet on chain are published, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_every_ms() -> u64 {
    86_400_000
}

fn default_min_micro() -> u64 {
    1_000_000
}

fn default_poll_ms() -> u64 {
    5_000
}

impl SettlementConfig {
    /// The rules between keys.
    pub fn validate(&self, evm: Option<&EvmConfig>) -> anyhow::Result<()> {
        crate::anchor::evm::parse_address(&self.contract)
            .map_err(|m| anyhow::anyhow!("config key `settlement.contract`: {m}"))?;
        if evm.is_none() {
            anyhow::bail!(
                "config key `settlement`: needs `epochs.evm` (its rpc_url and chain_id are the chain settled on)"
            );
        }
        if evm.is_some_and(|e| e.key_file == self.key_file) {
            anyhow::bail!(
                "config key `settlement.key_file`: must not be the anchor's key (`epochs.evm.key_file`): the two would race for nonces"
            );
        }
        if self.every_ms < 1_000 {
            anyhow::bail!("config key `settlement.every_ms`: must be at least 1000");
        }
        if self.poll_ms == 0 {
            anyhow::bail!("config key `settlement.poll_ms`: must be above 0");
        }
        Ok(())
    }
}

/// Why a settlement round did not go through (yet).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Chain(#[from] SettlementError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the settlement loop on its own thread (its own database connection).
pub fn spawn(
    cfg: SettlementConfig,
    evm: EvmConfig,
    db: PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("settlement".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "settlement: no runtime");
                    return;
                }
            };
            rt.block_on(run(cfg, evm, db, stop));
        })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run(
    cfg: SettlementConfig,
    evm: EvmConfig,
    db: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_reason = String::new();
    let mut chain = None;
    let mut store = None;
    let started = now_ms();
    loop {
        let round = async {
            if store.is_none() {
                store = Some(SqliteStore::open(&db)?);
            }
            let st = store.as_mut().expect("opened above");
            // A round is due every_ms after the last one (or after the start).
            let last = st.rounds(false)?.first().map_or(started, |r| r.created_ms);
            let now = now_ms();
            if now >= last + cfg.every_ms
                && let Some(r) = st.settle_round(cfg.min_micro, now)?
            {
                tracing::info!(
                    round = r.round,
                    total = r.total,
                    lines = r.lines,
                    "settlement round made"
                );
            }
            let mut due = st.rounds(true)?;
            if due.is_empty() {
                return Ok::<_, RoundError>(());
            }
            if chain.is_none() {
                let contract = crate::anchor::evm::parse_address(&cfg.contract)
                    .map_err(SettlementError::Rpc)?;
                chain = Some(
                    SettlementChain::connect(
                        &evm.rpc_url,
                        &cfg.key_file,
                        contract,
                        Some(evm.chain_id),
                    )
                    .await?
                    .with_fee_cap(evm.max_fee_gwei),
                );
            }
            let c = chain.as_ref().expect("connected above");
            due.reverse();
            for r in due {
                let root = r
                    .root
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("round {} root: {e}", r.round)))?;
                let published = match c.publish(r.round, root, r.total).await? {
                    Some((approval, publish)) => Published {
                        tx: Some(format!("{:#x}", publish.tx)),
                        block: Some(publish.block),
                        gas: Some(publish.gas + approval.map_or(0, |a| a.gas)),
                        at_ms: now_ms(),
                    },
                    None => Published {
                        tx: None,
                        block: None,
                        gas: None,
                        at_ms: now_ms(),
                    },
                };
                st.mark_published(r.round, &published)?;
                tracing::info!(round = r.round, tx = ?published.tx, gas = ?published.gas, "settlement round published");
            }
            Ok(())
        };
        match round.await {
            Ok(()) => last_reason.clear(),
            Err(e) => {
                let reason = match &e {
                    RoundError::Chain(c) => c.reason(),
                    RoundError::Store(_) => "store",
                };
                if reason != last_reason {
                    tracing::warn!(error = %e, "settlement round failed; retrying");
                    last_reason = reason.to_string();
                }
                match e {
                    RoundError::Chain(
                        SettlementError::Rpc(_) | SettlementError::WrongChain { .. },
                    ) => chain = None,
                    RoundError::Store(_) => store = None,
                    _ => {}
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(cfg.poll_ms)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
