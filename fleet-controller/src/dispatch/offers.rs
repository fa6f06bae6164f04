//! What dispatch offers the scheduler: each approved device's hello (site, GPU, price),
//! its last-seen time, its latest record (battery, sun, load), its leases and its
//! reputation.

use attest::msg::{ChannelKind, Hello, JobId, MeterRecord};
use attest::{DeviceId, Envelope, Milliwatts, SeqNo, TimestampMs};

use super::{DispatchStore, Dispatcher};
use crate::market::{ComputeCapability, DeviceOffer, GpuClass, GpuOffer, LeasedJob, MicroCredits};
use crate::store::jobs::JobLease;
use crate::store::{DeviceState, Store, StoreError};

impl Dispatcher {
    /// Every approved device's offer now.
    pub(super) fn offers<S: DispatchStore>(
        &self,
        store: &S,
        now: u64,
    ) -> Result<Vec<DeviceOffer>, StoreError> {
        let leases: Vec<(JobId, JobLease)> = store
            .open_jobs()?
            .iter()
            .filter_map(|j| Some((j.id, store.job_lease(j.id).ok()??)))
            .collect();
        let mut offers = Vec::new();
        for d in store.devices()? {
            if d.state != DeviceState::Approved {
                continue;
            }
            let Some(hello) = Envelope::decode(&d.hello)
                .ok()
                .and_then(|e| e.open::<Hello>().ok())
            else {
                continue;
            };
            let last = last_record(store, d.id)?;
            let power_of = |kind: ChannelKind| {
                last.as_ref().map_or(0, |r| {
                    r.channels
                        .iter()
                        .filter(|c| c.kind == kind)
                        .map(|c| c.power.0)
                        .sum::<u32>()
                })
            };
            offers.push(DeviceOffer {
                device: d.id,
                gpu: gpu_offer(&hello),
                price_per_gpu_hour: MicroCredits(hello.price_micro_per_gpu_hour),
                reliability: self.reputation(store, d.id, now)?,
                online: now.saturating_sub(d.last_seen_ms) <= self.cfg.online_within_ms,
                job_power: Milliwatts(self.cfg.job_power_w * 1000),
                base_load: Milliwatts(power_of(ChannelKind::Load)),
                grid_allowance: Milliwatts(0),
                battery_soc_permille: last
                    .as_ref()
                    .and_then(|r| r.channels.iter().find_map(|c| c.soc_permille))
                    .unwrap_or(0),
                solar_now: Milliwatts(power_of(ChannelKind::Solar)),
                sky_ratio: None,
                leased: leases
                    .iter()
                    .filter(|(_, l)| l.device == d.id)
                    .map(|(job, l)| LeasedJob {
                        job: *job,
                        until: TimestampMs(l.expected_end_ms),
                    })
                    .collect(),
                site: hello.site,
            });
        }
        Ok(offers)
    }
}

/// The scheduler's GPU classes by name (`gpu_class = "embedded"`); other names are GPU
/// models, checked at placement.
pub(super) fn class_named(name: &str) -> Option<GpuClass> {
    match name {
        "embedded" => Some(GpuClass::Embedded),
        "consumer" => Some(GpuClass::Consumer),
        "datacenter" => Some(GpuClass::Datacenter),
        _ => None,
    }
}

/// A device's GPU as the scheduler compares it; a device without one offers no memory and
/// capability 0.0 (only jobs with no GPU needs run there, on its CPU).
fn gpu_offer(hello: &Hello) -> GpuOffer {
    let Some(g) = hello.hardware.gpus.first() else {
        return GpuOffer {
            class: GpuClass::Embedded,
            vram_mib: 0,
            capability: ComputeCapability::new(0, 0),
        };
    };
    let m = g.model.to_lowercase();
    let class = if ["orin", "xavier", "nvgpu", "tegra", "jetson", "nano"]
        .iter()
        .any(|k| m.contains(k))
    {
        GpuClass::Embedded
    } else if [
        "h100", "h200", "a100", "a30", "a40", "l40", "v100", "t4", "b200", "gh200",
    ]
    .iter()
    .any(|k| m.contains(k))
    {
        GpuClass::Datacenter
    } else {
        GpuClass::Consumer
    };
    let (major, minor) = g.compute_capability().unwrap_or((0, 0));
    GpuOffer {
        class,
        vram_mib: g.vram_mib,
        capability: ComputeCapability::new(major, minor),
    }
}

pub(super) fn gpu_model<S: Store>(
    store: &S,
    device: DeviceId,
) -> Result<Option<String>, StoreError> {
    Ok(store.device(device)?.and_then(|d| {
        let hello: Hello = Envelope::decode(&d.hello).ok()?.open().ok()?;
        hello.hardware.gpus.first().map(|g| g.model.clone())
    }))
}

/// The device's latest meter record.
pub fn last_record<S: Store>(
    store: &S,
    device: DeviceId,
) -> Result<Option<MeterRecord>, StoreError> {
    let Some((seq, _)) = store.last_item(device)? else {
        return Ok(None);
    };
    let items = store.items(device, SeqNo(seq.0.saturating_sub(8)), seq)?;
    Ok(items
        .iter()
        .rev()
        .find_map(|(_, b)| Envelope::decode(b).ok()?.open::<MeterRecord>().ok()))
}
