//! What a job pays, and whether a device's provider has staked enough to get work.

use attest::msg::{Hello, JobReceipt};
use attest::{DeviceId, Envelope};

use super::{DispatchStore, Dispatcher};
use crate::store::accounts::AccountStore;
use crate::store::{Store, StoreError};

impl Dispatcher {
    /// What a job that ran on `device` for what its receipt `r` says pays.
    pub(super) fn payout<S: Store + AccountStore>(
        &self,
        store: &S,
        device: DeviceId,
        r: &JobReceipt,
    ) -> Result<crate::ledger::Payout, StoreError> {
        let price_per_hour = store
            .device(device)?
            .and_then(|d| Envelope::decode(&d.hello).ok()?.open::<Hello>().ok())
            .map_or(0, |h| h.price_micro_per_gpu_hour);
        let ran_ms = r.ended.0.saturating_sub(r.started.0);
        let _span = crate::jobs::traced(
            tracing::info_span!("job.settle", job = %r.job, device = %device, ran_ms, price_micro_per_hour = price_per_hour),
            r.job,
        )
        .entered();
        Ok(crate::ledger::Payout {
            provider: store.device_provider(device)?,
            price: crate::ledger::price_of(price_per_hour, ran_ms),
            fee_ppm: self.cfg.fee_ppm,
        })
    }

    /// Whether the device's provider holds the stake `min_stake` asks for.
    pub(super) fn staked_enough<S: DispatchStore>(
        &self,
        store: &S,
        device: DeviceId,
    ) -> Result<bool, StoreError> {
        if self.cfg.min_stake == 0 {
            return Ok(true);
        }
        let staked = match store.device_provider(device)? {
            Some(p) => store.balance(crate::ledger::Book::Stake(p))?,
            None => 0,
        };
        Ok(staked >= 0 && staked as u64 >= self.cfg.min_stake)
    }
}
