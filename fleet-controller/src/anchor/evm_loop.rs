//! The EVM anchor's thread: every `poll`, [`EvmAnchor::anchor_pending`] on its own
//! database connection; errors logged once per reason; stops with the controller's one
//! shutdown.

use std::time::Duration;

use super::evm::{EvmAnchor, EvmAnchorError};
use crate::config::EvmConfig;

/// Runs the anchor loop on its own thread (SQLite is blocking; it opens its own
/// connection): every `poll`, anchors what is pending. Errors are logged once per reason
/// and counted; the loop stops only when `stop` turns true (the controller's one shutdown).
pub fn spawn(
    cfg: EvmConfig,
    db: std::path::PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("evm-anchor".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "evm anchor: no runtime");
                    return;
                }
            };
            rt.block_on(run(cfg, db, stop));
        })
}

async fn run(cfg: EvmConfig, db: std::path::PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_reason = "";
    let mut anchor = None;
    // Opened once and kept (a failed database is opened again next round).
    let mut store = None;
    loop {
        let round = async {
            if anchor.is_none() {
                anchor = Some(EvmAnchor::connect(&cfg).await?);
            }
            if store.is_none() {
                store = Some(crate::store::sqlite::SqliteStore::open(&db)?);
            }
            let a = anchor.as_ref().expect("connected above");
            let st = store.as_mut().expect("opened above");
            a.anchor_pending(st).await
        };
        match round.await {
            Ok(_) => last_reason = "",
            Err(e) => {
                if e.reason() != last_reason {
                    tracing::warn!(error = %e, "evm anchor round failed; retrying");
                    last_reason = e.reason();
                }
                match e {
                    EvmAnchorError::Rpc(_) | EvmAnchorError::WrongChain { .. } => anchor = None,
                    EvmAnchorError::Store(_) => store = None,
                    _ => {}
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(cfg.poll_ms.max(100))) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
